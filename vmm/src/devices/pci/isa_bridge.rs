//! The PIIX3's PCI-to-ISA bridge (8086:7000, function 0 of a PC's slot 1, with the IDE
//! controller as function 1): what firmware finds there. Its PIRQ route control registers
//! (0x60-0x63, one per PCI interrupt line A-D: bit 7 disables the route, bits 3:0 name
//! the ISA IRQ) keep what firmware writes and read it back; the ELCR (ports 0x4D0/0x4D1)
//! is the in-kernel PIC's. PCI interrupts reach guests through the IOAPIC inputs ACPI's
//! _PRT names, so these routes are recorded, not yet wired to the PIC.

use super::PciDevice;
use super::config::{HEADER_TYPE, PciConfig, PciIds};

/// PIRQA-D route control.
pub const PIRQ: usize = 0x60;
/// Routes as the PIIX3 resets them: disabled.
const PIRQ_RESET: u8 = 0x80;
/// Top of memory (82371SB §2.2.11), which firmware may write.
const TOP_OF_MEMORY: usize = 0x69;

pub struct IsaBridge {
    config: PciConfig,
}

impl IsaBridge {
    pub fn new() -> Self {
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
        IsaBridge { config }
    }
}

impl Default for IsaBridge {
    fn default() -> Self {
        Self::new()
    }
}

impl PciDevice for IsaBridge {
    fn config(&self) -> &PciConfig {
        &self.config
    }
    fn config_mut(&mut self) -> &mut PciConfig {
        &mut self.config
    }
    fn bar_read(&mut self, _: usize, _: u64, data: &mut [u8]) {
        data.fill(0xff);
    }
    fn bar_write(&mut self, _: usize, _: u64, _: &[u8]) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pirq_routes_read_back_within_their_bits() {
        let mut b = IsaBridge::new();
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
