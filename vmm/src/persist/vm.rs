//! The VM's own KVM state: the in-kernel interrupt controllers (PIC master and slave,
//! IOAPIC), the PIT and the guest's clock (kvmclock's base).

use kvm_bindings::{
    KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE, kvm_clock_data, kvm_irqchip,
    kvm_pit_state2,
};
use kvm_ioctls::VmFd;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VmState {
    pub pic_master: kvm_irqchip,
    pub pic_slave: kvm_irqchip,
    pub ioapic: kvm_irqchip,
    pub pit: kvm_pit_state2,
    pub clock: kvm_clock_data,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot {what} of the VM")]
pub struct VmStateError {
    what: &'static str,
    #[source]
    source: kvm_ioctls::Error,
}

fn kvm_error(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmStateError {
    move |source| VmStateError { what, source }
}

fn irqchip(vm: &VmFd, chip_id: u32, what: &'static str) -> Result<kvm_irqchip, VmStateError> {
    let mut chip = kvm_irqchip { chip_id, ..Default::default() };
    vm.get_irqchip(&mut chip).map_err(kvm_error(what))?;
    Ok(chip)
}

/// Saves the VM's state; its vCPUs are not running.
pub fn save(vm: &VmFd) -> Result<VmState, VmStateError> {
    Ok(VmState {
        pit: vm.get_pit2().map_err(kvm_error("read the PIT"))?,
        clock: vm.get_clock().map_err(kvm_error("read the clock"))?,
        pic_master: irqchip(vm, KVM_IRQCHIP_PIC_MASTER, "read the master PIC")?,
        pic_slave: irqchip(vm, KVM_IRQCHIP_PIC_SLAVE, "read the slave PIC")?,
        ioapic: irqchip(vm, KVM_IRQCHIP_IOAPIC, "read the IOAPIC")?,
    })
}

/// Restores `state` into a VM built as the one it was saved from (irqchip and PIT made),
/// before its vCPUs run.
pub fn restore(vm: &VmFd, state: &VmState) -> Result<(), VmStateError> {
    vm.set_pit2(&state.pit).map_err(kvm_error("set the PIT"))?;
    // The clock goes on from where it was saved: the guest sees the time it spent saved as
    // a pause, not a jump. KVM_SET_CLOCK takes only the REALTIME flag (with its
    // `realtime`); what GET_CLOCK reports of the host's TSC is not set back.
    let clock = kvm_clock_data { clock: state.clock.clock, flags: 0, ..Default::default() };
    vm.set_clock(&clock).map_err(kvm_error("set the clock"))?;
    vm.set_irqchip(&state.pic_master).map_err(kvm_error("set the master PIC"))?;
    vm.set_irqchip(&state.pic_slave).map_err(kvm_error("set the slave PIC"))?;
    vm.set_irqchip(&state.ioapic).map_err(kvm_error("set the IOAPIC"))?;
    Ok(())
}
