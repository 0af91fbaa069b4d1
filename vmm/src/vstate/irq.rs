//! Interrupt routing: KVM's GSI routing table (the default PIC/IOAPIC routes plus one MSI
//! route per MSI-X vector) and the irqfds that inject through it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use kvm_bindings::{
    KVM_IRQ_ROUTING_IRQCHIP, KVM_IRQ_ROUTING_MSI, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER,
    KVM_IRQCHIP_PIC_SLAVE, KvmIrqRouting, kvm_irq_routing_entry,
};
use kvm_ioctls::VmFd;
use vmm_sys_util::eventfd::EventFd;

use crate::sync::lock;

/// IOAPIC pins; GSIs from here on are free for MSI routes.
pub const IOAPIC_PINS: u32 = 24;
/// KVM's limit on routing entries is 4096; leave room for the defaults.
const MAX_MSI_ROUTES: u32 = 2048;

#[derive(Debug, thiserror::Error)]
pub enum IrqError {
    #[error("out of interrupt routes")]
    Exhausted,
    #[error("KVM refused the interrupt routing table")]
    Routing(#[source] kvm_ioctls::Error),
    #[error("cannot create an interrupt eventfd")]
    EventFd(#[source] std::io::Error),
    #[error("KVM refused an irqfd")]
    Irqfd(#[source] kvm_ioctls::Error),
}

/// The VM's GSI routing table. KVM_SET_GSI_ROUTING replaces the whole table, so the
/// default irqchip routes are kept here too.
pub struct GsiRouter {
    vm: Arc<VmFd>,
    msi_routes: Mutex<BTreeMap<u32, (u64, u32)>>,
    next_gsi: Mutex<u32>,
}

fn irqchip_entry(gsi: u32, chip: u32, pin: u32) -> kvm_irq_routing_entry {
    let mut e = kvm_irq_routing_entry { gsi, type_: KVM_IRQ_ROUTING_IRQCHIP, ..Default::default() };
    e.u.irqchip.irqchip = chip;
    e.u.irqchip.pin = pin;
    e
}

impl GsiRouter {
    /// Installs the default routes at once, so ISA IRQ 0 reaches IOAPIC pin 2 as the MADT's
    /// override says, whether or not any MSI route is ever added.
    pub fn new(vm: Arc<VmFd>) -> Result<Self, IrqError> {
        let router = GsiRouter {
            vm,
            msi_routes: Mutex::new(BTreeMap::new()),
            next_gsi: Mutex::new(IOAPIC_PINS),
        };
        router.commit(&BTreeMap::new())?;
        Ok(router)
    }

    /// A fresh MSI vector: a GSI of its own and an irqfd bound to it.
    pub fn new_vector(&self) -> Result<MsiVector, IrqError> {
        let gsi = {
            let mut next = lock(&self.next_gsi);
            if *next >= IOAPIC_PINS + MAX_MSI_ROUTES {
                return Err(IrqError::Exhausted);
            }
            *next += 1;
            *next - 1
        };
        let irqfd = EventFd::new(libc::EFD_NONBLOCK).map_err(IrqError::EventFd)?;
        self.vm.register_irqfd(&irqfd, gsi).map_err(IrqError::Irqfd)?;
        Ok(MsiVector { gsi, irqfd })
    }

    /// Routes `gsi` to the MSI message (`address`, `data`), or removes its route.
    pub fn set_msi(&self, gsi: u32, message: Option<(u64, u32)>) -> Result<(), IrqError> {
        let mut routes = lock(&self.msi_routes);
        let changed = match message {
            Some(m) => routes.insert(gsi, m) != Some(m),
            None => routes.remove(&gsi).is_some(),
        };
        if changed { self.commit(&routes) } else { Ok(()) }
    }

    fn commit(&self, routes: &BTreeMap<u32, (u64, u32)>) -> Result<(), IrqError> {
        let mut entries = Vec::with_capacity(routes.len() + 40);
        // KVM's defaults (arch/x86/kvm/irq_comm.c): PIC pins for ISA IRQs 0-15 (bar the
        // cascade), IOAPIC pins for GSIs 0-23 with ISA IRQ 0 on pin 2.
        for gsi in 0..16 {
            if gsi != 2 {
                let (chip, pin) = if gsi < 8 {
                    (KVM_IRQCHIP_PIC_MASTER, gsi)
                } else {
                    (KVM_IRQCHIP_PIC_SLAVE, gsi - 8)
                };
                entries.push(irqchip_entry(gsi, chip, pin));
            }
        }
        for gsi in 0..IOAPIC_PINS {
            let pin = if gsi == 0 { 2 } else { gsi };
            entries.push(irqchip_entry(gsi, KVM_IRQCHIP_IOAPIC, pin));
        }
        for (&gsi, &(address, data)) in routes {
            let mut e =
                kvm_irq_routing_entry { gsi, type_: KVM_IRQ_ROUTING_MSI, ..Default::default() };
            e.u.msi.address_lo = address as u32;
            e.u.msi.address_hi = (address >> 32) as u32;
            e.u.msi.data = data;
            entries.push(e);
        }
        let table = KvmIrqRouting::from_entries(&entries).map_err(|_| IrqError::Exhausted)?;
        self.vm.set_gsi_routing(&table).map_err(IrqError::Routing)
    }
}

/// A level-triggered line (PCI INTx) into the IOAPIC: an irqfd with a resample eventfd.
/// Writing the irqfd asserts the line; KVM deasserts it when the guest EOIs and signals
/// the resample fd, and the device asserts again if it still has something pending.
/// On a PC (a firmware machine) the line also goes through the PIIX3's PIRQ routes
/// (`PirqRoutes::connect`): a second irqfd on the ISA IRQ they name, with the same
/// resample fd, so an EOI on either path has the device look again.
pub struct IntxLine {
    pub gsi: u32,
    irqfd: EventFd,
    resample: EventFd,
    routed: Option<EventFd>,
}

impl IntxLine {
    pub fn new(vm: &VmFd, gsi: u32) -> Result<Self, IrqError> {
        let irqfd = EventFd::new(libc::EFD_NONBLOCK).map_err(IrqError::EventFd)?;
        let resample = EventFd::new(libc::EFD_NONBLOCK).map_err(IrqError::EventFd)?;
        vm.register_irqfd_with_resample(&irqfd, &resample, gsi).map_err(IrqError::Irqfd)?;
        Ok(IntxLine { gsi, irqfd, resample, routed: None })
    }

    pub fn assert(&self) {
        for fd in std::iter::once(&self.irqfd).chain(&self.routed) {
            if let Err(e) = fd.write(1) {
                log::warn!("INTx on GSI {}: {e}", self.gsi);
            }
        }
    }

    /// The fd KVM signals on EOI; read it with `take_resample`.
    pub fn resample_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.resample.as_raw_fd()
    }

    pub fn take_resample(&self) {
        let _ = self.resample.read();
    }
}

/// PCI interrupt lines A-D of a PC's slots (PIRQA-D).
pub const PIRQS: usize = 4;

/// The PIIX3's PIRQ routes: each PCI interrupt line also raises the ISA IRQ that its
/// route register (0x60-0x63) names, on the 8259 PIC and on the IOAPIC's pin of that
/// number (GSI = ISA IRQ), which is where PIC-mode guests and the firmware's MP table
/// expect PCI interrupts (82371SB §2.2.9; QEMU's i440FX does the same). ACPI-mode guests
/// take the IOAPIC pins of the _PRT instead (`IntxLine::gsi`); each path's EOI resamples.
/// Every line routed to one ISA IRQ shares its GSI, so KVM's one resampler for that GSI
/// tells each of them of the EOI, as a shared level-triggered line needs.
pub struct PirqRoutes {
    vm: Arc<VmFd>,
    state: Mutex<PirqState>,
}

#[derive(Default)]
struct PirqState {
    /// The ISA IRQ each PIRQ is routed to, if it is.
    targets: [Option<u32>; PIRQS],
    lines: Vec<PirqLine>,
}

/// A device's line on `pirq`: its second irqfd and its resample fd.
struct PirqLine {
    pirq: usize,
    irqfd: EventFd,
    resample: EventFd,
}

impl PirqRoutes {
    /// All routes disabled, as the PIIX3 resets.
    pub fn new(vm: Arc<VmFd>) -> Self {
        PirqRoutes { vm, state: Mutex::new(PirqState::default()) }
    }

    /// Puts `line` on PIRQ `pirq` (0 = PIRQA; taken modulo 4).
    pub fn connect(&self, line: &mut IntxLine, pirq: usize) -> Result<(), IrqError> {
        let pirq = pirq % PIRQS;
        let irqfd = EventFd::new(libc::EFD_NONBLOCK).map_err(IrqError::EventFd)?;
        let dup = |fd: &EventFd| fd.try_clone().map_err(IrqError::EventFd);
        let wired = PirqLine { pirq, irqfd: dup(&irqfd)?, resample: dup(&line.resample)? };
        let mut state = lock(&self.state);
        if let Some(gsi) = state.targets[pirq] {
            self.vm
                .register_irqfd_with_resample(&wired.irqfd, &wired.resample, gsi)
                .map_err(IrqError::Irqfd)?;
        }
        state.lines.push(wired);
        line.routed = Some(irqfd);
        Ok(())
    }

    /// The guest wrote PIRQ `pirq`'s route register: bit 7 disables the route, bits 3:0
    /// name the ISA IRQ, of which 0-2, 8 and 13 are reserved (82371SB §2.2.9) and route
    /// nowhere. The lines move to the new IRQ; each device then looks whether it has
    /// something pending, to raise the new line.
    pub fn set(&self, pirq: usize, register: u8) -> Result<(), IrqError> {
        let irq = u32::from(register & 0x0f);
        let target = (register & 0x80 == 0 && !matches!(irq, 0..=2 | 8 | 13)).then_some(irq);
        let mut state = lock(&self.state);
        let Some(old) = state.targets.get_mut(pirq) else { return Ok(()) };
        if *old == target {
            return Ok(());
        }
        let old = std::mem::replace(old, target);
        let mut result = Ok(());
        for line in state.lines.iter().filter(|l| l.pirq == pirq) {
            let unwired = old.map(|gsi| self.vm.unregister_irqfd(&line.irqfd, gsi));
            let wired = target
                .map(|gsi| self.vm.register_irqfd_with_resample(&line.irqfd, &line.resample, gsi));
            for e in [unwired, wired].into_iter().flatten().filter_map(Result::err) {
                result = Err(IrqError::Irqfd(e));
            }
            if target.is_some() {
                let _ = line.resample.write(1);
            }
        }
        result
    }

    /// The ISA IRQ PIRQ `pirq` goes to now.
    pub fn target(&self, pirq: usize) -> Option<u32> {
        lock(&self.state).targets.get(pirq).copied().flatten()
    }
}

/// One MSI vector's injection path.
pub struct MsiVector {
    pub gsi: u32,
    irqfd: EventFd,
}

impl MsiVector {
    pub fn fire(&self) {
        if let Err(e) = self.irqfd.write(1) {
            log::warn!("MSI on GSI {}: {e}", self.gsi);
        }
    }
}
