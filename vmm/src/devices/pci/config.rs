//! A type-0 PCI configuration space (PCI Local Bus 3.0 §6; PCIe 4.0 §7 for the 4 KiB
//! extended space ECAM reaches): registers with per-bit write masks, BARs with sizing,
//! and a capability list.

/// Bytes of configuration space per function reachable through ECAM.
pub const CONFIG_SPACE_SIZE: usize = 4096;

pub const VENDOR_ID: usize = 0x00;
pub const COMMAND: usize = 0x04;
pub const STATUS: usize = 0x06;
pub const REVISION_ID: usize = 0x08;
pub const CLASS_CODE: usize = 0x09;
pub const HEADER_TYPE: usize = 0x0e;
pub const BAR0: usize = 0x10;
pub const SUBSYSTEM_VENDOR_ID: usize = 0x2c;
pub const CAPABILITIES_POINTER: usize = 0x34;
pub const INTERRUPT_LINE: usize = 0x3c;
pub const INTERRUPT_PIN: usize = 0x3d;

pub const COMMAND_IO: u16 = 1 << 0;
pub const COMMAND_MEMORY: u16 = 1 << 1;
pub const COMMAND_BUS_MASTER: u16 = 1 << 2;
pub const COMMAND_INTX_DISABLE: u16 = 1 << 10;
const STATUS_CAPABILITIES: u16 = 1 << 4;
/// Status: the function's INTx is asserted (set by the device, not the guest).
pub const STATUS_INTERRUPT: u16 = 1 << 3;
const FIRST_CAPABILITY: usize = 0x40;
const CAPABILITY_END: usize = 0x100;

/// What a BAR decodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BarKind {
    Io,
    Mem32 { prefetchable: bool },
    Mem64 { prefetchable: bool },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BarInfo {
    pub kind: BarKind,
    /// Power of two, at least 16 bytes (memory) or 4 (I/O).
    pub size: u64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("BAR {0} is taken or out of range")]
    BarSlot(usize),
    #[error("BAR size {0:#x} is not a power of two of at least 16 bytes")]
    BarSize(u64),
    #[error("no room for a {0}-byte capability")]
    CapabilitySpace(usize),
}

#[derive(Clone)]
pub struct PciConfig {
    bytes: [u8; CONFIG_SPACE_SIZE],
    wmask: [u8; CONFIG_SPACE_SIZE],
    bars: [Option<BarInfo>; 6],
    last_capability: Option<usize>,
    next_capability: usize,
}

/// Identity of a PCI function.
#[derive(Clone, Copy, Debug)]
pub struct PciIds {
    pub vendor: u16,
    pub device: u16,
    /// Base class, subclass, programming interface.
    pub class: u32,
    pub revision: u8,
    pub subsystem_vendor: u16,
    pub subsystem: u16,
}

impl PciConfig {
    pub fn new(ids: PciIds) -> Self {
        let mut c = PciConfig {
            bytes: [0; CONFIG_SPACE_SIZE],
            wmask: [0; CONFIG_SPACE_SIZE],
            bars: [None; 6],
            last_capability: None,
            next_capability: FIRST_CAPABILITY,
        };
        c.put16(VENDOR_ID, ids.vendor);
        c.put16(VENDOR_ID + 2, ids.device);
        c.bytes[REVISION_ID] = ids.revision;
        c.bytes[CLASS_CODE..CLASS_CODE + 3].copy_from_slice(&ids.class.to_le_bytes()[..3]);
        c.put16(SUBSYSTEM_VENDOR_ID, ids.subsystem_vendor);
        c.put16(SUBSYSTEM_VENDOR_ID + 2, ids.subsystem);
        let command_mask = COMMAND_IO
            | COMMAND_MEMORY
            | COMMAND_BUS_MASTER
            | COMMAND_INTX_DISABLE
            | (1 << 6)
            | (1 << 8);
        c.wmask[COMMAND..COMMAND + 2].copy_from_slice(&command_mask.to_le_bytes());
        c.wmask[INTERRUPT_LINE] = 0xff;
        c
    }

    fn put16(&mut self, offset: usize, v: u16) {
        self.bytes[offset..offset + 2].copy_from_slice(&v.to_le_bytes());
    }

    pub fn read16(&self, offset: usize) -> u16 {
        u16::from_le_bytes([self.bytes[offset], self.bytes[offset + 1]])
    }

    pub fn read32(&self, offset: usize) -> u32 {
        u32::from_le_bytes(self.bytes[offset..offset + 4].try_into().expect("4 bytes"))
    }

    /// Device-side update of a register, ignoring the guest write mask.
    pub fn set_bytes(&mut self, offset: usize, value: &[u8]) {
        self.bytes[offset..offset + value.len()].copy_from_slice(value);
    }

    /// Makes bits of `len` bytes at `offset` writable by the guest.
    pub fn set_wmask(&mut self, offset: usize, mask: &[u8]) {
        self.wmask[offset..offset + mask.len()].copy_from_slice(mask);
    }

    pub fn command(&self) -> u16 {
        self.read16(COMMAND)
    }

    pub fn set_interrupt_pin(&mut self, pin: u8) {
        self.bytes[INTERRUPT_PIN] = pin;
    }

    /// Declares BAR `index` (a 64-bit BAR also takes `index + 1`).
    pub fn add_bar(&mut self, index: usize, info: BarInfo) -> Result<(), ConfigError> {
        let wide = matches!(info.kind, BarKind::Mem64 { .. });
        let last = index + usize::from(wide);
        let upper_half_of_previous = index > 0
            && matches!(self.bars[index - 1], Some(BarInfo { kind: BarKind::Mem64 { .. }, .. }));
        if last >= 6
            || self.bars[index].is_some()
            || upper_half_of_previous
            || (wide && self.bars[index + 1].is_some())
        {
            return Err(ConfigError::BarSlot(index));
        }
        let min = if info.kind == BarKind::Io { 4 } else { 16 };
        if !info.size.is_power_of_two() || info.size < min || (!wide && info.size > 1 << 31) {
            return Err(ConfigError::BarSize(info.size));
        }
        let flags: u32 = match info.kind {
            BarKind::Io => 0x1,
            BarKind::Mem32 { prefetchable } => {
                if prefetchable {
                    0x8
                } else {
                    0
                }
            }
            BarKind::Mem64 { prefetchable } => 0x4 | if prefetchable { 0x8 } else { 0 },
        };
        let mask = !(info.size - 1);
        let low_mask = (mask as u32) & if info.kind == BarKind::Io { !0x3 } else { !0xf };
        let reg = BAR0 + 4 * index;
        self.bytes[reg..reg + 4].copy_from_slice(&flags.to_le_bytes());
        self.wmask[reg..reg + 4].copy_from_slice(&low_mask.to_le_bytes());
        if wide {
            self.wmask[reg + 4..reg + 8].copy_from_slice(&((mask >> 32) as u32).to_le_bytes());
        }
        self.bars[index] = Some(info);
        Ok(())
    }

    pub fn bar(&self, index: usize) -> Option<BarInfo> {
        self.bars.get(index).copied().flatten()
    }

    /// The address BAR `index` holds (whether or not decoding is on).
    pub fn bar_address(&self, index: usize) -> Option<u64> {
        let info = self.bar(index)?;
        let reg = BAR0 + 4 * index;
        let low = u64::from(self.read32(reg));
        Some(match info.kind {
            BarKind::Io => low & !0x3,
            BarKind::Mem32 { .. } => low & !0xf,
            BarKind::Mem64 { .. } => (low & !0xf) | (u64::from(self.read32(reg + 4)) << 32),
        })
    }

    /// Sets BAR `index` to `addr` (the VMM assigning it, as firmware would).
    pub fn set_bar_address(&mut self, index: usize, addr: u64) {
        let Some(info) = self.bar(index) else { return };
        let reg = BAR0 + 4 * index;
        let low = self.read32(reg) & if info.kind == BarKind::Io { 0x3 } else { 0xf };
        self.set_bytes(reg, &(low | (addr as u32 & !0xf)).to_le_bytes());
        if matches!(info.kind, BarKind::Mem64 { .. }) {
            self.set_bytes(reg + 4, &((addr >> 32) as u32).to_le_bytes());
        }
    }

    /// Appends a capability (`body` excludes the id and next-pointer bytes); returns its
    /// offset.
    pub fn add_capability(&mut self, id: u8, body: &[u8]) -> Result<usize, ConfigError> {
        let len = body.len() + 2;
        let offset = self.next_capability;
        if offset + len > CAPABILITY_END {
            return Err(ConfigError::CapabilitySpace(len));
        }
        self.bytes[offset] = id;
        self.bytes[offset + 1] = 0;
        self.bytes[offset + 2..offset + len].copy_from_slice(body);
        match self.last_capability {
            Some(prev) => self.bytes[prev + 1] = offset as u8,
            None => {
                self.bytes[CAPABILITIES_POINTER] = offset as u8;
                let status = self.read16(STATUS) | STATUS_CAPABILITIES;
                self.put16(STATUS, status);
            }
        }
        self.last_capability = Some(offset);
        self.next_capability = (offset + len + 3) & !3;
        Ok(offset)
    }

    /// A guest read of `data.len()` bytes at `offset`; out-of-range bytes read as ones.
    pub fn read(&self, offset: usize, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            *b = offset.checked_add(i).and_then(|o| self.bytes.get(o)).copied().unwrap_or(0xff);
        }
    }

    /// The configuration space as it is (saved with its device).
    pub fn save_state(&self) -> Vec<u8> {
        self.bytes.to_vec()
    }

    /// Takes the guest-writable bits of a saved configuration space (command, BARs,
    /// interrupt line, capabilities' control bits) and the interrupt status the device
    /// set; the rest (identity, capability list, BAR kinds) stays as this device was
    /// built. A space saved from another kind of device is refused.
    pub fn restore_state(&mut self, saved: &[u8]) -> Result<(), String> {
        let saved: &[u8; CONFIG_SPACE_SIZE] = saved
            .try_into()
            .map_err(|_| format!("{} bytes of configuration space (it has 4096)", saved.len()))?;
        let identity =
            [VENDOR_ID..COMMAND, REVISION_ID..0x0c, HEADER_TYPE..0x0f, SUBSYSTEM_VENDOR_ID..0x30];
        if identity.iter().any(|r| saved[r.clone()] != self.bytes[r.clone()]) {
            return Err(format!(
                "it was saved from PCI device {:04x}:{:04x}, this one is {:04x}:{:04x}",
                u16::from_le_bytes([saved[0], saved[1]]),
                u16::from_le_bytes([saved[2], saved[3]]),
                self.read16(VENDOR_ID),
                self.read16(VENDOR_ID + 2)
            ));
        }
        for (i, &v) in saved.iter().enumerate() {
            self.bytes[i] = (self.bytes[i] & !self.wmask[i]) | (v & self.wmask[i]);
        }
        let status = (self.read16(STATUS) & !STATUS_INTERRUPT)
            | (u16::from_le_bytes([saved[STATUS], saved[STATUS + 1]]) & STATUS_INTERRUPT);
        self.set_bytes(STATUS, &status.to_le_bytes());
        Ok(())
    }

    /// A guest write through the write masks; out-of-range bytes are dropped.
    pub fn write(&mut self, offset: usize, data: &[u8]) {
        for (i, v) in data.iter().enumerate() {
            let Some(o) = offset.checked_add(i).filter(|o| *o < CONFIG_SPACE_SIZE) else { return };
            self.bytes[o] = (self.bytes[o] & !self.wmask[o]) | (v & self.wmask[o]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> PciIds {
        PciIds {
            vendor: 0x1af4,
            device: 0x1044,
            class: 0x00ff00,
            revision: 1,
            subsystem_vendor: 0x1af4,
            subsystem: 0x40,
        }
    }

    #[test]
    fn a_saved_space_brings_back_what_the_guest_set_and_nothing_else() {
        let mut c = PciConfig::new(ids());
        c.add_bar(0, BarInfo { kind: BarKind::Mem64 { prefetchable: false }, size: 0x4000 })
            .unwrap();
        c.write(COMMAND, &(COMMAND_MEMORY | COMMAND_BUS_MASTER).to_le_bytes());
        c.write(BAR0, &0xfebf_0000u32.to_le_bytes());
        c.write(INTERRUPT_LINE, &[11]);
        c.set_bytes(STATUS, &(c.read16(STATUS) | STATUS_INTERRUPT).to_le_bytes());
        let mut saved = c.save_state();
        let mut fresh = PciConfig::new(ids());
        fresh
            .add_bar(0, BarInfo { kind: BarKind::Mem64 { prefetchable: false }, size: 0x4000 })
            .unwrap();
        // A crafted byte in a read-only place (the capability pointer) is not taken.
        saved[CAPABILITIES_POINTER] = 0xf0;
        fresh.restore_state(&saved).unwrap();
        assert_eq!(fresh.command(), COMMAND_MEMORY | COMMAND_BUS_MASTER);
        assert_eq!(fresh.bar_address(0), Some(0xfebf_0000));
        assert_eq!(fresh.read32(INTERRUPT_LINE) & 0xff, 11);
        assert_ne!(fresh.read16(STATUS) & STATUS_INTERRUPT, 0);
        assert_eq!(fresh.bytes[CAPABILITIES_POINTER], c.bytes[CAPABILITIES_POINTER]);
        // Another device's space, or one of the wrong size: refused.
        let other = PciConfig::new(PciIds { device: 0x1041, ..ids() });
        let other_space = other.save_state();
        assert!(fresh.restore_state(&other_space).unwrap_err().contains("1af4:1041"));
        assert!(fresh.restore_state(&[0; 256]).is_err());
    }

    #[test]
    fn identity_is_read_only() {
        let mut c = PciConfig::new(ids());
        c.write(0, &[0, 0, 0, 0]);
        assert_eq!(c.read32(0), 0x1044_1af4);
        let mut class = [0u8; 4];
        c.read(8, &mut class);
        assert_eq!(class, [1, 0x00, 0xff, 0x00]);
    }

    #[test]
    fn bar_sizing_and_assignment() {
        let mut c = PciConfig::new(ids());
        c.add_bar(0, BarInfo { kind: BarKind::Mem64 { prefetchable: true }, size: 0x10000 })
            .unwrap();
        c.add_bar(2, BarInfo { kind: BarKind::Io, size: 0x20 }).unwrap();
        assert_eq!(
            c.add_bar(1, BarInfo { kind: BarKind::Mem32 { prefetchable: false }, size: 16 }),
            Err(ConfigError::BarSlot(1))
        );
        assert!(
            c.add_bar(3, BarInfo { kind: BarKind::Mem32 { prefetchable: true }, size: 24 })
                .is_err()
        );
        c.add_bar(4, BarInfo { kind: BarKind::Mem32 { prefetchable: true }, size: 32 }).unwrap();
        assert_eq!(c.read32(BAR0 + 16), 0x8, "32-bit, prefetchable");
        // Sizing: all ones reads back the size mask plus the type bits.
        c.write(BAR0, &[0xff; 4]);
        c.write(BAR0 + 4, &[0xff; 4]);
        assert_eq!(c.read32(BAR0), 0xffff_0000 | 0xc);
        assert_eq!(c.read32(BAR0 + 4), 0xffff_ffff);
        c.write(BAR0 + 8, &[0xff; 4]);
        assert_eq!(c.read32(BAR0 + 8), 0xffff_ffe0 | 1);
        c.set_bar_address(0, 0x1_2345_0000);
        assert_eq!(c.bar_address(0), Some(0x1_2345_0000));
        c.write(BAR0, &0xabcd_0000u32.to_le_bytes());
        assert_eq!(c.bar_address(0), Some(0x1_abcd_0000));
        assert_eq!(c.bar_address(5), None);
    }

    #[test]
    fn capabilities_chain() {
        let mut c = PciConfig::new(ids());
        let a = c.add_capability(0x09, &[1, 2, 3]).unwrap();
        let b = c.add_capability(0x11, &[0; 10]).unwrap();
        assert_eq!(a, 0x40);
        assert_eq!(c.read16(STATUS) & STATUS_CAPABILITIES, STATUS_CAPABILITIES);
        assert_eq!(c.bytes[CAPABILITIES_POINTER] as usize, a);
        assert_eq!(c.bytes[a + 1] as usize, b);
        assert_eq!(c.bytes[b + 1], 0);
        assert!(c.add_capability(0x09, &[0; 250]).is_err());
    }

    #[test]
    fn hostile_offsets_do_not_panic() {
        let mut c = PciConfig::new(ids());
        c.write(4094, &[1, 2, 3, 4]);
        let mut d = [0u8; 4];
        c.read(4094, &mut d);
        assert_eq!(&d[2..], &[0xff, 0xff]);
        c.write(usize::MAX - 1, &[1, 2, 3]);
        c.read(usize::MAX - 1, &mut d);
        assert_eq!(d, [0xff; 4]);
    }
}
