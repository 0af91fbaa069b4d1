//! What can go wrong building or driving a machine.

#[derive(Debug, thiserror::Error)]
pub enum MachineError {
    #[error(transparent)]
    OpenKvm(#[from] crate::vstate::kvm::KvmError),
    #[error("cannot {what}")]
    Kvm {
        what: &'static str,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error(transparent)]
    Memory(#[from] crate::vstate::memory::MemoryError),
    #[error(transparent)]
    Boot(#[from] crate::arch::x86_64::boot::BootError),
    #[error(transparent)]
    Firmware(#[from] crate::firmware::image::ImageError),
    #[error(transparent)]
    FwCfg(#[from] crate::firmware::fw_cfg::FwCfgError),
    #[error(transparent)]
    Acpi(#[from] crate::arch::x86_64::acpi::AcpiError),
    #[error(transparent)]
    Regs(#[from] crate::arch::x86_64::regs::RegsError),
    #[error("device layout")]
    Bus(#[from] crate::devices::bus::BusError),
    #[error("PCI")]
    Pci(#[from] crate::devices::pci::root::PciError),
    #[error(transparent)]
    Block(#[from] crate::devices::virtio::block::BlockError),
    #[error(transparent)]
    Net(crate::devices::net::passt::PasstError),
    #[error(transparent)]
    Framebuffer(crate::display::boot_fb::FramebufferError),
    #[error(transparent)]
    Vga(#[from] crate::devices::vga::VgaError),
    #[error(transparent)]
    Cd(#[from] crate::devices::storage::mmc::MediaError),
    #[error("this machine has no CD drive")]
    NoCdDrive,
    #[error("interrupt routing")]
    Irq(#[from] crate::vstate::irq::IrqError),
    #[error("invalid machine configuration: {0}")]
    InvalidConfig(String),
    #[error("cannot {command} a machine that is {state}")]
    InvalidState { command: &'static str, state: &'static str },
    #[error("cannot start a machine thread")]
    Thread(#[source] std::io::Error),
    #[error("cannot create an eventfd")]
    EventFd(#[source] std::io::Error),
    #[error("cannot install the vCPU kick signal handler")]
    Signal(#[source] std::io::Error),
    #[error("cannot press the ACPI power button")]
    PowerButton(#[source] std::io::Error),

    #[error("cannot save the machine's state: {0}")]
    SaveState(String),
    #[error("cannot restore the machine's saved state: {0}")]
    RestoreState(String),
    #[error("cannot migrate the machine: {0}")]
    Migration(String),
    #[error("the machine's controller thread has exited")]
    Gone,
    #[error("{0}")]
    NotStopped(String),
}

/// An error with its causes, "what: why: why" (a cause its error already quotes is not
/// said twice).
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let next = cause.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = cause.source();
    }
    text
}
