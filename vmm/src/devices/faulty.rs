//! A device with faults on command, for the tests that prove a faulty device model cannot
//! hang or take down the VMM (built only with the `test-devices` feature, which the
//! integration tests turn on; no configuration a user writes can name it).
//!
//! One port: writing 1 panics (a bug in a device model), writing 2 blocks the writing vCPU
//! for `HANG` (a device stuck in a blocking call), writing 3 makes a system call no device
//! makes (what exploited code would do; a VM process's sandbox forbids it), writing 4 opens
//! a file outside any VM's folder (`/etc/passwd`), after which reading the port says
//! whether that worked (1) or was refused (2).

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
pub struct Faulty {
    /// What the last open (command 4) did: 0 none yet, 1 opened, 2 refused.
    opened: u8,
}

impl BusDevice for Faulty {
    fn read(&mut self, _base: u64, _offset: u64, data: &mut [u8]) {
        data.fill(0);
        data[0] = self.opened;
    }

    fn write(&mut self, _base: u64, _offset: u64, data: &[u8]) {
        match data[0] {
            1 => panic!("the faulty test device panics on command"),
            2 => {
                HANGING.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(HANG);
                HANGING.fetch_sub(1, Ordering::SeqCst);
            }
            3 => {
                // personality(0xffffffff) only asks; outside a sandbox it changes nothing.
                // SAFETY: a query with no memory arguments.
                let r = unsafe { libc::syscall(libc::SYS_personality, 0xffff_ffffu64) };
                log::warn!("the faulty test device made a forbidden system call ({r})");
            }
            4 => {
                self.opened = match std::fs::File::open("/etc/passwd") {
                    Ok(_) => 1,
                    Err(e) => {
                        log::warn!("the faulty test device cannot open /etc/passwd: {e}");
                        2
                    }
                };
            }
            _ => {}
        }
    }
}
