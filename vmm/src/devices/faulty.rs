//! A device with faults on command, for the tests that prove a faulty device model cannot
//! hang or take down the VMM (built only with the `test-devices` feature, which the
//! integration tests turn on; no configuration a user writes can name it).
//!
//! One port: writing 1 panics (a bug in a device model), writing 2 blocks the writing vCPU
//! for `HANG` (a device stuck in a blocking call).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::devices::bus::BusDevice;

/// Where the faulty device sits.
pub const FAULTY_PORT: u16 = 0xea;
/// How long a "hang" command blocks.
pub const HANG: Duration = Duration::from_secs(5);

/// How many vCPU threads are inside a "hang" command right now (in this process), so that
/// a test can act while one is stuck rather than guess when the guest got there.
pub static HANGING: AtomicUsize = AtomicUsize::new(0);

#[derive(Default)]
pub struct Faulty;

impl BusDevice for Faulty {
    fn read(&mut self, _base: u64, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, _base: u64, _offset: u64, data: &[u8]) {
        match data[0] {
            1 => panic!("the faulty test device panics on command"),
            2 => {
                HANGING.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(HANG);
                HANGING.fetch_sub(1, Ordering::SeqCst);
            }
            _ => {}
        }
    }
}
