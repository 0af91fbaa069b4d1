//! The debug port: each byte the guest writes is a boot milestone, timestamped on arrival
//! (Firecracker's boot timer does the same with an MMIO write). Reads return the port
//! number, as Bochs' and QEMU's debugcon do, so a guest can detect it.

use std::time::Instant;

use crate::arch::x86_64::layout::DEBUG_PORT;
use crate::devices::bus::BusDevice;

/// Receives (milestone code, when it was written).
pub type MarkerSink = Box<dyn Fn(u8, Instant) + Send>;

/// Milestones delivered per boot; a guest writing the port in a loop gets no more events
/// (each is queued for the machine's owner, and the queue must not grow without bound).
pub const MARKER_LIMIT: u32 = 4096;

/// Bytes of the firmware's log (port 0x402) delivered per boot: SeaBIOS with its VGA BIOS
/// writes some 10 KiB of it; the rest of a longer one is dropped, as quietly as the log's
/// reader expects.
pub const FIRMWARE_LOG_LIMIT: u32 = 64 << 10;

pub struct DebugPort {
    sink: MarkerSink,
    delivered: u32,
    limit: u32,
    /// The firmware's log port: reaching the limit is worth no warning.
    firmware_log: bool,
}

impl DebugPort {
    pub fn new(sink: MarkerSink) -> Self {
        DebugPort { sink, delivered: 0, limit: MARKER_LIMIT, firmware_log: false }
    }

    /// The firmware's log port (QEMU's debug console at 0x402), each byte an event too.
    pub fn firmware_log(sink: MarkerSink) -> Self {
        DebugPort { sink, delivered: 0, limit: FIRMWARE_LOG_LIMIT, firmware_log: true }
    }
}

impl crate::persist::Persist for DebugPort {
    /// Events delivered so far this boot (their budget goes on after a restore).
    type State = u32;

    fn save_state(&self) -> u32 {
        self.delivered
    }

    fn restore_state(&mut self, delivered: &u32) -> Result<(), crate::persist::DeviceStateError> {
        self.delivered = (*delivered).min(self.limit);
        Ok(())
    }
}

impl BusDevice for DebugPort {
    fn read(&mut self, _base: u64, _offset: u64, data: &mut [u8]) {
        data.fill(0);
        data[0] = DEBUG_PORT as u8;
    }

    fn write(&mut self, _base: u64, _offset: u64, data: &[u8]) {
        if self.delivered >= self.limit {
            return;
        }
        self.delivered += 1;
        if self.delivered == self.limit {
            if self.firmware_log {
                log::info!("firmware log: {} bytes this boot; dropping the rest", self.limit);
            } else {
                log::warn!("debug port: {} milestones this boot; ignoring the rest", self.limit);
            }
        }
        (self.sink)(data[0], Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn markers_are_delivered_and_bounded() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        let mut port = DebugPort::new(Box::new(move |code, _| sink.lock().unwrap().push(code)));
        let mut b = [0u8];
        port.read(0xe9, 0, &mut b);
        assert_eq!(b[0], 0xe9);
        port.write(0xe9, 0, &[1]);
        port.write(0xe9, 0, &[4, 5]);
        assert_eq!(*seen.lock().unwrap(), vec![1, 4]);
        for _ in 0..10 * MARKER_LIMIT {
            port.write(0xe9, 0, &[7]);
        }
        assert_eq!(seen.lock().unwrap().len(), MARKER_LIMIT as usize);
        // The firmware's log takes more.
        let count = Arc::new(Mutex::new(0u32));
        let sink = count.clone();
        let mut log = DebugPort::firmware_log(Box::new(move |_, _| *sink.lock().unwrap() += 1));
        for _ in 0..2 * FIRMWARE_LOG_LIMIT {
            log.write(0x402, 0, b"x");
        }
        assert_eq!(*count.lock().unwrap(), FIRMWARE_LOG_LIMIT);
    }

    #[test]
    fn the_budget_goes_on_after_a_restore() {
        use crate::persist::Persist;
        let seen = Arc::new(Mutex::new(0u32));
        let sink = seen.clone();
        let mut port = DebugPort::new(Box::new(move |_, _| *sink.lock().unwrap() += 1));
        port.restore_state(&u32::MAX).unwrap(); // beyond the limit: the limit
        assert_eq!(port.save_state(), MARKER_LIMIT);
        port.restore_state(&(MARKER_LIMIT - 2)).unwrap();
        for _ in 0..5 {
            port.write(0xe9, 0, &[1]);
        }
        assert_eq!(*seen.lock().unwrap(), 2);
    }
}
