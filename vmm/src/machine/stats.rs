//! What a running machine uses, for a status bar: the CPU time of its vCPU threads, how
//! much of its RAM the host holds, and how often its disks and network card had work.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::sync::lock;

/// Counters a machine's threads update; cheap to read from any thread.
#[derive(Default)]
pub struct MachineStats {
    /// Each vCPU thread's CPU-time clock, by vCPU index (replaced when a reboot starts new
    /// threads).
    vcpu_clocks: Mutex<Vec<Option<libc::clockid_t>>>,
    /// The guest RAM mappings of the running instance (address, length), for mincore.
    memory: Mutex<Vec<(usize, usize)>>,
    disk_activity: AtomicU64,
    net_activity: AtomicU64,
}

/// A reading of `MachineStats`; rates come from the difference of two readings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// CPU time of the vCPU threads running now (a reboot starts again from zero).
    pub vcpu_time: Duration,
    /// Guest RAM the host holds in memory now (touched by the guest or by devices).
    pub memory_resident: u64,
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

    /// The running instance's RAM (`(host address, length)` of each mapping); empty when
    /// the instance goes, before its memory is unmapped.
    pub fn set_memory(&self, ranges: Vec<(usize, usize)>) {
        *lock(&self.memory) = ranges;
    }

    fn resident(&self) -> u64 {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as usize;
        let ranges = lock(&self.memory);
        let mut total = 0u64;
        let mut pages = Vec::new();
        for &(addr, len) in ranges.iter() {
            pages.clear();
            pages.resize(len.div_ceil(page), 0u8);
            // SAFETY: the range is a live mapping of guest RAM (the instance clears the
            // list before unmapping it, under the same lock); mincore only reads the page
            // tables and writes one byte per page into `pages`, which is that long.
            let r = unsafe { libc::mincore(addr as *mut libc::c_void, len, pages.as_mut_ptr()) };
            if r == 0 {
                total += pages.iter().filter(|&&b| b & 1 != 0).count() as u64 * page as u64;
            }
        }
        total
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
            memory_resident: self.resident(),
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
            // 30 ms of this thread's own CPU time, however busy the host is (wall time
            // would give less CPU time on a loaded machine).
            let cpu = || {
                let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
                // SAFETY: clock_gettime writes the timespec passed; the result is checked.
                let r = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
                assert_eq!(r, 0);
                Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
            };
            let start = cpu();
            while cpu() - start < Duration::from_millis(30) {
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
        assert_eq!(usage.memory_resident, 0, "no memory registered");
    }

    #[test]
    fn resident_memory_counts_touched_pages() {
        let stats = MachineStats::default();
        let len = 64 << 20;
        // SAFETY: a fresh private anonymous mapping, unmapped below.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(addr, libc::MAP_FAILED);
        stats.set_memory(vec![(addr as usize, len)]);
        assert_eq!(stats.usage().memory_resident, 0, "nothing touched yet");
        // SAFETY: the first 8 MiB of the mapping above.
        unsafe { std::ptr::write_bytes(addr.cast::<u8>(), 1, 8 << 20) };
        let resident = stats.usage().memory_resident;
        assert!((8 << 20..=10 << 20).contains(&resident), "{resident}");
        stats.set_memory(Vec::new());
        // SAFETY: unmapping the mapping made above, no longer used.
        unsafe { libc::munmap(addr, len) };
    }
}
