//! What a running machine uses, for a status bar: the CPU time of its vCPU threads and
//! how often its disks and network card had work.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::devices::bus::lock;

/// Counters a machine's threads update; cheap to read from any thread.
#[derive(Default)]
pub struct MachineStats {
    /// Each vCPU thread's CPU-time clock, by vCPU index (replaced when a reboot starts new
    /// threads).
    vcpu_clocks: Mutex<Vec<Option<libc::clockid_t>>>,
    disk_activity: AtomicU64,
    net_activity: AtomicU64,
}

/// A reading of `MachineStats`; rates come from the difference of two readings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// CPU time of the vCPU threads running now (a reboot starts again from zero).
    pub vcpu_time: Duration,
    /// Times a disk's thread woke up with work (requests, in batches).
    pub disk_activity: u64,
    /// The same for network cards (guest transmits and host receives).
    pub net_activity: u64,
}

/// Which counter a virtio device's work goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activity {
    Disk,
    Net,
    Other,
}

impl MachineStats {
    /// Called on a vCPU thread when it starts.
    pub fn register_vcpu_thread(&self, index: u8) {
        let mut clock: libc::clockid_t = 0;
        // SAFETY: pthread_self is this live thread; `clock` is a valid place for the id.
        let r = unsafe { libc::pthread_getcpuclockid(libc::pthread_self(), &mut clock) };
        let mut clocks = lock(&self.vcpu_clocks);
        let index = usize::from(index);
        if clocks.len() <= index {
            clocks.resize(index + 1, None);
        }
        clocks[index] = (r == 0).then_some(clock);
    }

    pub fn count(&self, activity: Activity) {
        match activity {
            Activity::Disk => self.disk_activity.fetch_add(1, Ordering::Relaxed),
            Activity::Net => self.net_activity.fetch_add(1, Ordering::Relaxed),
            Activity::Other => 0,
        };
    }

    pub fn usage(&self) -> Usage {
        let vcpu_time = lock(&self.vcpu_clocks)
            .iter()
            .flatten()
            .filter_map(|&clock| {
                let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
                // SAFETY: `ts` is a valid timespec to write; a clock of a thread that has
                // exited fails with EINVAL and is skipped.
                let r = unsafe { libc::clock_gettime(clock, &mut ts) };
                (r == 0).then(|| Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
            })
            .sum();
        Usage {
            vcpu_time,
            disk_activity: self.disk_activity.load(Ordering::Relaxed),
            net_activity: self.net_activity.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vcpu_time_counts_the_registered_threads_cpu() {
        let stats = std::sync::Arc::new(MachineStats::default());
        let (s, (tx, rx)) = (stats.clone(), std::sync::mpsc::channel());
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            s.register_vcpu_thread(1);
            let start = std::time::Instant::now();
            while start.elapsed() < Duration::from_millis(30) {
                std::hint::spin_loop();
            }
            tx.send(()).unwrap();
            let _ = done_rx.recv();
        });
        rx.recv().unwrap();
        let usage = stats.usage();
        assert!(usage.vcpu_time >= Duration::from_millis(20), "{usage:?}");
        assert!(usage.vcpu_time < Duration::from_secs(5), "{usage:?}");
        done_tx.send(()).unwrap();
        t.join().unwrap();
        stats.count(Activity::Disk);
        stats.count(Activity::Net);
        stats.count(Activity::Net);
        stats.count(Activity::Other);
        let usage = stats.usage();
        assert_eq!((usage.disk_activity, usage.net_activity), (1, 2));
    }
}
