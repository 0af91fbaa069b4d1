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

pub struct DebugPort {
    sink: MarkerSink,
    delivered: u32,
}

impl DebugPort {
    pub fn new(sink: MarkerSink) -> Self {
        DebugPort { sink, delivered: 0 }
    }
}

impl BusDevice for DebugPort {
    fn read(&mut self, _base: u64, _offset: u64, data: &mut [u8]) {
        data.fill(0);
        data[0] = DEBUG_PORT as u8;
    }

    fn write(&mut self, _base: u64, _offset: u64, data: &[u8]) {
        if self.delivered >= MARKER_LIMIT {
            return;
        }
        self.delivered += 1;
        if self.delivered == MARKER_LIMIT {
            log::warn!("debug port: {MARKER_LIMIT} milestones this boot; ignoring the rest");
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
    }
}
