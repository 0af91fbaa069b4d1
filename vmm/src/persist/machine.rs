//! A whole machine's saved state, as the state file holds it (guest memory is in a file
//! of its own, `memory`): the VM's and each vCPU's KVM state, and every device's.

use serde::{Deserialize, Serialize};

use super::memory::MemoryLayout;
use super::vcpu::VcpuState;
use super::vm::VmState;
use crate::devices::legacy::cmos::CmosState;
use crate::devices::legacy::i8042::I8042State;
use crate::devices::legacy::serial::SerialPortState;

#[derive(Debug, Serialize, Deserialize)]
pub struct MachineState {
    /// Where guest RAM lies (the memory file holds it in this order).
    pub memory: MemoryLayout,
    pub vm: VmState,
    pub vcpus: Vec<VcpuState>,
    pub devices: DeviceStates,
}

/// The devices every machine has, then the PCI bus (each function's own state).
#[derive(Debug, Serialize, Deserialize)]
pub struct DeviceStates {
    pub serial: SerialPortState,
    pub i8042: I8042State,
    pub cmos: CmosState,
    pub acpi_pm: u8,
    pub debug_port: u32,
    pub ged: u32,
    pub pci_config_address: u32,
    pub pci: Vec<(u16, Vec<u8>)>,
    /// What the guest drew on its boot framebuffer, if it has one.
    pub boot_fb: Option<crate::display::boot_fb::BootFramebufferState>,
    /// A firmware machine's fw_cfg device.
    pub fw_cfg: Option<crate::firmware::fw_cfg::FwCfgState>,
}
