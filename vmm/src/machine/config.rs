//! What a machine is made of. The VM library's persisted config is translated into this at
//! power-on; later device issues extend it.

use std::path::PathBuf;

use crate::arch::x86_64::boot::BootSource;

/// How the machine starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Boot {
    /// A Linux kernel the VMM loads (bzImage or PVH ELF), with its initrd and command line.
    Kernel(BootSource),
    /// A PC firmware image (SeaBIOS) run from the reset vector, told about the machine
    /// through fw_cfg.
    Firmware(FirmwareBoot),
}

impl From<BootSource> for Boot {
    fn from(source: BootSource) -> Self {
        Boot::Kernel(source)
    }
}

/// A device the firmware may boot from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootDevice {
    /// The machine's `n`th `DeviceConfig::Block` disk (from 0).
    Disk(usize),
    /// The CD drive.
    Cd,
}

/// A firmware boot: the image and what the firmware is told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FirmwareBoot {
    /// The firmware image (Debian's `/usr/share/seabios/bios-256k.bin`), mapped read-only
    /// just below 4 GiB.
    pub image: PathBuf,
    /// The machine's UUID (SMBIOS, fw_cfg), RFC 4122 byte order.
    pub uuid: [u8; 16],
    /// The devices to boot from, in order; the firmware tries the others after them.
    pub boot_order: Vec<BootDevice>,
    /// The order for the first power-on of this machine only ("boot from the CD next
    /// time"); reboots and later starts use `boot_order`.
    pub first_boot_order: Option<Vec<BootDevice>>,
    /// Show the firmware's boot menu for this many milliseconds.
    pub boot_menu_ms: Option<u16>,
    /// Mirror the firmware's text screen to COM1 (SeaBIOS's serial console).
    pub serial_console: bool,
}

/// What happens when the guest reboots itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RebootPolicy {
    /// Restart the machine in the same process, like a PC (and Cloud Hypervisor).
    #[default]
    Restart,
    /// Stop with `StopReason::Reset` (QEMU's `-no-reboot`), for tests and one-shot runs.
    Stop,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MachineConfig {
    /// Number of vCPUs (1..=254).
    pub vcpus: u8,
    /// Guest RAM in bytes (a multiple of 4 KiB, at least 16 MiB).
    pub memory_bytes: u64,
    /// A kernel to boot directly, or firmware.
    pub boot: Boot,
    pub on_guest_reboot: RebootPolicy,
    /// PCI devices, in slot order after the host bridge.
    pub devices: Vec<DeviceConfig>,
    /// A boot framebuffer in this mode, described to Linux in boot_params.screen_info
    /// and shown on the `Display` until a GPU driver takes over.
    pub boot_framebuffer: Option<crate::display::boot_fb::FramebufferMode>,
}

/// A device on the machine's PCI bus.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceConfig {
    /// virtio-rng fed from the host's getrandom.
    Rng,
    /// A virtio-blk disk backed by a raw or qcow2 image, opened as the spec says.
    Block { image: crate::devices::storage::image::ImageSpec, read_only: bool },
    /// A virtio-net card on user-mode NAT (passt), with host → guest port forwards; with
    /// `host_access` the guest reaches the host's loopback services through the gateway.
    Net { mac: [u8; 6], forwards: Vec<crate::devices::net::passt::PortForward>, host_access: bool },
    /// A virtio-gpu (2D) showing on the handle's `Display`.
    Gpu(crate::devices::virtio::gpu::GpuConfig),
    /// The CD drive: an IDE controller with an ATAPI CD-ROM on its secondary master, with
    /// this ISO image in it (or empty). A machine has at most one.
    CdRom { iso: Option<std::path::PathBuf> },
    /// A virtio-input keyboard, tablet or mouse, fed from the handle's `InputSink`.
    Input(crate::input::InputKind),
    /// The standard VGA (QEMU's `-vga std`), showing on the handle's `Display` until a GPU
    /// driver sets a scanout. Firmware machines only (its memory window sits where a
    /// directly booted kernel's RAM is); at most one.
    Vga(crate::devices::vga::VgaConfig),
    /// The faulty test device (devices/faulty.rs) on its port; tests only.
    #[cfg(feature = "test-devices")]
    Faulty,
}

/// Most vCPUs a machine may have: APIC ids are 8 bits, 0xff is broadcast and the IOAPIC
/// takes the id after the last vCPU.
pub const MAX_VCPUS: u8 = 254;

impl MachineConfig {
    pub fn new(boot: impl Into<Boot>) -> Self {
        MachineConfig {
            vcpus: 1,
            memory_bytes: 512 << 20,
            boot: boot.into(),
            on_guest_reboot: RebootPolicy::Restart,
            devices: vec![DeviceConfig::Rng],
            boot_framebuffer: None,
        }
    }

    /// Checks the parts that need no host resources.
    pub fn validate(&self) -> Result<(), String> {
        if self.vcpus == 0 || self.vcpus > MAX_VCPUS {
            return Err(format!("{} vCPUs requested; a machine has 1 to {MAX_VCPUS}", self.vcpus));
        }
        let cd_drives =
            self.devices.iter().filter(|d| matches!(d, DeviceConfig::CdRom { .. })).count();
        if cd_drives > 1 {
            return Err(format!("{cd_drives} CD drives requested; a machine has one"));
        }
        let vgas = self.devices.iter().filter(|d| matches!(d, DeviceConfig::Vga(_))).count();
        if vgas > 1 {
            return Err(format!("{vgas} VGAs requested; a machine has one"));
        }
        if vgas == 1 && !matches!(self.boot, Boot::Firmware(_)) {
            return Err("a VGA needs a firmware boot (a directly booted kernel draws into the                         boot framebuffer)"
                .into());
        }
        if let Some(fb) = self.boot_framebuffer {
            fb.check().map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

/// The test devices a test process asked its VM processes for (`VESSEL_TEST_DEVICES=faulty`),
/// in builds with the `test-devices` feature (the integration tests' builds); none in any
/// other build, whatever the environment says.
pub fn test_devices_from_env() -> Vec<DeviceConfig> {
    #[cfg(feature = "test-devices")]
    if std::env::var("VESSEL_TEST_DEVICES").is_ok_and(|v| v.split(',').any(|d| d == "faulty")) {
        return vec![DeviceConfig::Faulty];
    }
    Vec::new()
}
