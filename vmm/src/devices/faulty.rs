//! A device with faults on command, for the tests that prove a faulty device model cannot
//! hang or take down the VMM (built only with the `test-devices` feature, which the
//! integration tests turn on; no configuration a user writes can name it).
//!
//! One port: writing 1 panics (a bug in a device model), writing 2 blocks the writing vCPU
//! for `HANG` (a device stuck in a blocking call).

use std::time::Duration;

use crate::devices::bus::BusDevice;

/// Where the faulty device sits.
pub const FAULTY_PORT: u16 = 0xea;
/// How long a "hang" command blocks.
pub const HANG: Duration = Duration::from_secs(5);

#[derive(Default)]
pub struct Faulty;

impl BusDevice for Faulty {
    fn read(&mut self, _base: u64, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, _base: u64, _offset: u64, data: &[u8]) {
        match data[0] {
            1 => panic!("the faulty test device panics on command"),
            2 => std::thread::sleep(HANG),
            _ => {}
        }
    }
}
