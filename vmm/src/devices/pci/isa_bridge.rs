//! The PIIX3's PCI-to-ISA bridge (8086:7000, function 0 of a PC's slot 1, with the IDE
//! controller as function 1): what firmware finds there. Its PIRQ route control registers
//! (0x60-0x63, one per PCI interrupt line A-D: bit 7 disables the route, bits 3:0 name
//! the ISA IRQ) steer the PCI interrupts to the ISA IRQs they name (`PirqRoutes`), on the
//! 8259 PIC and the IOAPIC's ISA pins, for PIC-mode guests and the firmware's MP table;
//! ACPI-mode guests take the IOAPIC pins the _PRT names. The ELCR (ports 0x4D0/0x4D1),
//! which makes the routed IRQs level-triggered on the PIC, is the in-kernel PIC's.

use std::sync::Arc;

use super::PciDevice;
use super::config::{HEADER_TYPE, PciConfig, PciIds};
use crate::devices::log_limit::{LogLimit, held_back};
use crate::vstate::irq::{PIRQS, PirqRoutes};

/// PIRQA-D route control.
pub const PIRQ: usize = 0x60;
/// Routes as the PIIX3 resets them: disabled.
const PIRQ_RESET: u8 = 0x80;
/// Top of memory (82371SB §2.2.11), which firmware may write.
const TOP_OF_MEMORY: usize = 0x69;

/// The PIRQ (0 = PIRQA) that interrupt pin `pin` (0 = INTA) of the device in `slot` is
/// wired to on a PC's board: rotated by slot, starting from slot 1 (the wiring SeaBIOS's
/// `piix_pci_slot_get_irq` and QEMU's i440FX assume).
pub fn pirq_of(slot: usize, pin: u8) -> usize {
    (slot + usize::from(pin) + PIRQS - 1) % PIRQS
}

pub struct IsaBridge {
    config: PciConfig,
    /// Where the PIRQ registers take effect (None: only kept, as in unit tests).
    routes: Option<Arc<PirqRoutes>>,
    log: LogLimit,
}

impl IsaBridge {
    pub fn new(routes: Option<Arc<PirqRoutes>>) -> Self {
        let mut config = PciConfig::new(PciIds {
            vendor: 0x8086,
            device: 0x7000,
            class: 0x06_01_00, // bridge, ISA
            revision: 0,
            subsystem_vendor: 0x1af4,
            subsystem: 0x1100,
        });
        // A multi-function device: the IDE controller is its function 1.
        config.set_bytes(HEADER_TYPE, &[0x80]);
        config.set_bytes(PIRQ, &[PIRQ_RESET; 4]);
        config.set_wmask(PIRQ, &[0x8f; 4]);
        config.set_bytes(TOP_OF_MEMORY, &[0x02]);
        config.set_wmask(TOP_OF_MEMORY, &[0xfe]);
        IsaBridge { config, routes, log: LogLimit::default() }
    }
}

impl PciDevice for IsaBridge {
    fn config(&self) -> &PciConfig {
        &self.config
    }
    fn config_mut(&mut self) -> &mut PciConfig {
        &mut self.config
    }
    fn config_write(&mut self, offset: usize, data: &[u8]) {
        self.config.write(offset, data);
        let Some(routes) = &self.routes else { return };
        let end = offset.saturating_add(data.len());
        for pirq in (0..PIRQS).filter(|p| (offset..end).contains(&(PIRQ + p))) {
            let register = self.config.read32(PIRQ).to_le_bytes()[pirq];
            if let Err(e) = routes.set(pirq, register)
                && let Some(n) = self.log.allow()
            {
                let name = char::from(b'A' + pirq as u8);
                log::warn!("routing PIRQ{name} to {register:#04x}: {e}{}", held_back(n));
            }
        }
    }
    fn bar_read(&mut self, _: usize, _: u64, data: &mut [u8]) {
        data.fill(0xff);
    }
    fn bar_write(&mut self, _: usize, _: u64, _: &[u8]) {}
    fn save_state(&self) -> Result<Vec<u8>, String> {
        Ok(super::save_config_only(&self.config))
    }
    /// The PIRQ routes as saved, steering the PCI interrupts again.
    fn restore_state(&mut self, state: &[u8]) -> Result<(), String> {
        super::restore_config_only(&mut self.config, state)?;
        let Some(routes) = &self.routes else { return Ok(()) };
        let registers = self.config.read32(PIRQ).to_le_bytes();
        for (pirq, register) in registers.into_iter().enumerate() {
            // As for the guest's own write of it: a route KVM refuses is said, not fatal.
            if let Err(e) = routes.set(pirq, register) {
                let name = char::from(b'A' + pirq as u8);
                log::warn!("routing PIRQ{name} to {register:#04x}: {e}");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vstate::irq::IntxLine;
    use crate::vstate::kvm::open_kvm;
    use kvm_bindings::{KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE, kvm_irqchip};

    /// The 8259s' interrupt request registers, slave's in the high byte, once `want` bits
    /// are all set (irqfds inject from a kernel worker) or after 2 s.
    fn pic_irr(vm: &kvm_ioctls::VmFd, want: u16) -> u16 {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        loop {
            let mut irr = 0;
            for (chip, shift) in [(KVM_IRQCHIP_PIC_MASTER, 0), (KVM_IRQCHIP_PIC_SLAVE, 8)] {
                let mut state = kvm_irqchip { chip_id: chip, ..Default::default() };
                vm.get_irqchip(&mut state).unwrap();
                // SAFETY: a PIC's chip_id makes `pic` the member KVM filled in.
                irr |= u16::from(unsafe { state.chip.pic }.irr) << shift;
            }
            if irr & want == want || std::time::Instant::now() > deadline {
                return irr;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    #[test]
    fn a_pci_interrupt_reaches_the_pic_pin_its_pirq_route_names() {
        let vm = Arc::new(open_kvm().unwrap().create_vm().unwrap());
        vm.create_irq_chip().unwrap();
        let routes = Arc::new(PirqRoutes::new(vm.clone()));
        let mut bridge = IsaBridge::new(Some(routes.clone()));
        // INTA of slot 2 is PIRQB, as SeaBIOS and QEMU wire a PC's slots.
        assert_eq!(pirq_of(2, 0), 1);
        assert_eq!(pirq_of(1, 0), 0);
        assert_eq!(pirq_of(0, 0), 3);
        let mut line = IntxLine::new(&vm, 18).unwrap();
        routes.connect(&mut line, pirq_of(2, 0)).unwrap();
        // SeaBIOS's routes (A, B to 10, C, D to 11) in one dword write.
        bridge.config_write(PIRQ, &[0x0a, 0x0a, 0x0b, 0x0b]);
        assert_eq!(
            (0..4).map(|p| routes.target(p)).collect::<Vec<_>>(),
            [Some(10), Some(10), Some(11), Some(11)]
        );
        let mut resampled =
            libc::pollfd { fd: line.resample_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd.
        assert_eq!(unsafe { libc::poll(&mut resampled, 1, 0) }, 1, "the device looks again");
        line.take_resample();
        line.assert();
        assert_eq!(pic_irr(&vm, 1 << 10) & (1 << 10), 1 << 10, "IRQ 10 raised");
        // Moved to IRQ 5, one byte written: the next interrupt arrives there.
        bridge.config_write(PIRQ + 1, &[0x05]);
        assert_eq!(routes.target(1), Some(5));
        line.assert();
        assert_eq!(pic_irr(&vm, 1 << 5) & (1 << 5), 1 << 5, "IRQ 5 raised");
        // Disabled (bit 7), or to a reserved IRQ (13 is the FPU's): nowhere.
        bridge.config_write(PIRQ + 1, &[0x85]);
        assert_eq!(routes.target(1), None);
        bridge.config_write(PIRQ + 1, &[0x0d]);
        assert_eq!(routes.target(1), None);
        bridge.config_write(PIRQ + 1, &[0x02]);
        assert_eq!(routes.target(1), None, "IRQ 2 is the cascade");
        // Only the route registers move lines: a write next to them does not.
        bridge.config_write(PIRQ - 4, &[0xff; 4]);
        assert_eq!(routes.target(0), Some(10));
    }

    #[test]
    fn saved_routes_steer_the_interrupts_again() {
        let Ok(kvm) = open_kvm() else { return };
        let mut bridge = IsaBridge::new(None);
        bridge.config_write(PIRQ, &[0x0a, 0x05, 0x8b, 0x0b]);
        let state = bridge.save_state().unwrap();
        let vm = Arc::new(kvm.create_vm().unwrap());
        vm.create_irq_chip().unwrap();
        let routes = Arc::new(PirqRoutes::new(vm.clone()));
        let mut restored = IsaBridge::new(Some(routes.clone()));
        restored.restore_state(&state).unwrap();
        assert_eq!(
            (0..4).map(|p| routes.target(p)).collect::<Vec<_>>(),
            [Some(10), Some(5), None, Some(11)]
        );
        let mut line = IntxLine::new(&vm, 18).unwrap();
        routes.connect(&mut line, 1).unwrap();
        line.assert();
        assert_eq!(pic_irr(&vm, 1 << 5) & (1 << 5), 1 << 5, "PIRQB's interrupt on IRQ 5");
        assert!(restored.restore_state(&[1, 2, 3]).is_err(), "not a configuration space");
    }

    #[test]
    fn pirq_routes_read_back_within_their_bits() {
        let mut b = IsaBridge::new(None);
        let mut v = [0u8; 4];
        b.config_read(PIRQ, &mut v);
        assert_eq!(v, [0x80; 4], "disabled at reset");
        b.config_write(PIRQ, &[0x0a, 0x0b, 0xff, 0x8b]);
        b.config_read(PIRQ, &mut v);
        assert_eq!(v, [0x0a, 0x0b, 0x8f, 0x8b], "bits 6:4 reserved");
        let mut header = [0u8];
        b.config_read(HEADER_TYPE, &mut header);
        assert_eq!(header, [0x80], "multi-function");
    }
}
