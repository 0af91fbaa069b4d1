//! Port-I/O and MMIO buses: address ranges mapped to device models, dispatched from the
//! vCPU threads on KVM exits.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};

use super::log_limit::{LogLimit, held_back};
use crate::sync::lock;

/// A device model reachable through a bus. `base` is the start of the range the access hit
/// (a device may be mapped at several), `offset` the distance into it. The bus never
/// passes an empty `data`, and the access lies wholly inside the device's range.
pub trait BusDevice: Send {
    fn read(&mut self, base: u64, offset: u64, data: &mut [u8]);
    fn write(&mut self, base: u64, offset: u64, data: &[u8]);
}

pub type SharedDevice = Arc<Mutex<dyn BusDevice>>;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BusError {
    #[error("bus range {base:#x}+{len:#x} overlaps another device")]
    Overlap { base: u64, len: u64 },
    #[error("bus range {base:#x}+{len:#x} is empty or wraps around")]
    BadRange { base: u64, len: u64 },
}

struct Range {
    len: u64,
    device: SharedDevice,
}

/// A set of non-overlapping address ranges. Ranges can move while the machine runs (a
/// guest reprogramming a PCI BAR), so the map sits behind a read-write lock that vCPUs
/// only ever take for reading.
pub struct Bus {
    name: &'static str,
    ranges: RwLock<BTreeMap<u64, Range>>,
    unhandled: LogLimit,
}

impl Bus {
    pub fn new(name: &'static str) -> Self {
        Bus { name, ranges: RwLock::new(BTreeMap::new()), unhandled: LogLimit::default() }
    }

    pub fn insert(&self, base: u64, len: u64, device: SharedDevice) -> Result<(), BusError> {
        let end =
            base.checked_add(len).filter(|_| len > 0).ok_or(BusError::BadRange { base, len })?;
        let mut ranges = self.ranges.write().unwrap_or_else(|p| p.into_inner());
        if let Some((other_base, other)) = ranges.range(..end).next_back()
            && other_base + other.len > base
        {
            return Err(BusError::Overlap { base, len });
        }
        ranges.insert(base, Range { len, device });
        Ok(())
    }

    /// Removes the range starting at `base`; returns whether there was one.
    pub fn remove(&self, base: u64) -> bool {
        self.ranges.write().unwrap_or_else(|p| p.into_inner()).remove(&base).is_some()
    }

    fn find(&self, addr: u64, size: usize) -> Option<(u64, SharedDevice)> {
        let ranges = self.ranges.read().unwrap_or_else(|p| p.into_inner());
        let (base, range) = ranges.range(..=addr).next_back()?;
        let end = addr.checked_add(size as u64)?;
        (end <= base + range.len).then(|| (*base, range.device.clone()))
    }

    /// Reads from the device at `addr`; unclaimed addresses read as all ones, like an
    /// ISA bus with nothing driving it.
    pub fn read(&self, addr: u64, data: &mut [u8]) {
        if data.is_empty() {
            return;
        }
        match self.find(addr, data.len()) {
            Some((base, device)) => lock(&device).read(base, addr - base, data),
            None => {
                data.fill(0xff);
                self.note_unhandled("read", addr, data.len());
            }
        }
    }

    /// Writes to the device at `addr`; writes to unclaimed addresses are dropped.
    pub fn write(&self, addr: u64, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        match self.find(addr, data.len()) {
            Some((base, device)) => lock(&device).write(base, addr - base, data),
            None => self.note_unhandled("write", addr, data.len()),
        }
    }

    /// A guest probing hardware is normal; one hammering an empty port must not flood
    /// the log.
    fn note_unhandled(&self, what: &str, addr: u64, len: usize) {
        if let Some(n) = self.unhandled.allow() {
            log::debug!(
                "{} {what} of {len} bytes at unclaimed {addr:#x}{}",
                self.name,
                held_back(n)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Echo(u8);
    impl BusDevice for Echo {
        fn read(&mut self, _base: u64, offset: u64, data: &mut [u8]) {
            data.fill(self.0.wrapping_add(offset as u8));
        }
        fn write(&mut self, _base: u64, _offset: u64, data: &[u8]) {
            self.0 = data[0];
        }
    }

    #[test]
    fn dispatch_and_overlap() {
        let bus = Bus::new("test");
        let dev: SharedDevice = Arc::new(Mutex::new(Echo(10)));
        bus.insert(0x100, 8, dev.clone()).unwrap();
        assert_eq!(
            bus.insert(0x104, 8, dev.clone()),
            Err(BusError::Overlap { base: 0x104, len: 8 })
        );
        assert_eq!(bus.insert(0xfc, 8, dev.clone()), Err(BusError::Overlap { base: 0xfc, len: 8 }));
        bus.insert(0x108, 1, dev.clone()).unwrap();
        assert!(bus.insert(u64::MAX, 2, dev.clone()).is_err());
        assert!(bus.insert(0x200, 0, dev).is_err());
        let mut b = [0u8; 1];
        bus.read(0x102, &mut b);
        assert_eq!(b[0], 12);
        bus.write(0x100, &[20]);
        bus.read(0x100, &mut b);
        assert_eq!(b[0], 20);
        let mut w = [0u8; 2];
        bus.read(0x107, &mut w); // straddles the end of the range
        assert_eq!(w, [0xff, 0xff]);
        bus.read(0x50, &mut b);
        assert_eq!(b[0], 0xff);
        assert!(bus.remove(0x100));
        assert!(!bus.remove(0x100));
        bus.read(0x100, &mut b);
        assert_eq!(b[0], 0xff);
    }
}
