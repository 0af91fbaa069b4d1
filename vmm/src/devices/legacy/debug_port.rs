//! The debug port: each byte the guest writes is a boot milestone, timestamped on arrival
//! (Firecracker's boot timer does the same with an MMIO write). Reads return the port
//! number, as Bochs' and QEMU's debugcon do, so a guest can detect it.

use std::time::Instant;

use crate::arch::x86_64::layout::DEBUG_PORT;
use crate::devices::bus::BusDevice;

/// Receives (milestone code, when it was written).
pub type MarkerSink = Box<dyn Fn(u8, Instant) + Send>;

pub struct DebugPort {
    sink: MarkerSink,
}

impl DebugPort {
    pub fn new(sink: MarkerSink) -> Self {
        DebugPort { sink }
    }
}

impl BusDevice for DebugPort {
    fn read(&mut self, _base: u64, _offset: u64, data: &mut [u8]) {
        data.fill(0);
        data[0] = DEBUG_PORT as u8;
    }

    fn write(&mut self, _base: u64, _offset: u64, data: &[u8]) {
        let now = Instant::now();
        for &code in data.iter().take(1) {
            (self.sink)(code, now);
        }
    }
}
