//! What a thread asks of the scheduler. Threads that carry a person's input (a VM
//! process's control socket readers, the window's sender) ask for a short time slice
//! (Linux 6.12's EEVDF custom slices, `sched_attr.sched_runtime` under SCHED_OTHER): a
//! thread with a short slice that wakes gets the CPU from one that has been running
//! (a vCPU thread spinning in its guest) within that slice, instead of after the running
//! thread's whole slice, some milliseconds. Older kernels ignore the slice; nothing else
//! about the thread changes (its policy, its nice value).

/// The shortest slice Linux allows.
pub const SHORT_SLICE_NS: u64 = 100_000;

/// `struct sched_attr` as of Linux 4.13 (SCHED_ATTR_SIZE_VER1).
#[repr(C)]
#[derive(Default)]
struct SchedAttr {
    size: u32,
    policy: u32,
    flags: u64,
    nice: i32,
    priority: u32,
    runtime: u64,
    deadline: u64,
    period: u64,
    util_min: u32,
    util_max: u32,
}

/// Asks for a short slice for the calling thread; whether the kernel took it.
pub fn prefer_short_slices() -> bool {
    // The nice value is set with the slice (SCHED_FLAG_KEEP_PARAMS would keep the slice
    // too): the one the thread has. (getpriority of who 0 is the calling thread's; its -1
    // is a value too, an error only with errno set, which cannot happen for who 0.)
    // SAFETY: getpriority(2) of the calling thread.
    let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
    let attr = SchedAttr {
        size: size_of::<SchedAttr>() as u32,
        policy: libc::SCHED_OTHER as u32,
        nice,
        runtime: SHORT_SLICE_NS,
        ..SchedAttr::default()
    };
    // SAFETY: sched_setattr(2) on the calling thread (pid 0) reads `attr`, which lives
    // across the call and whose `size` says how much of it there is.
    unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &raw const attr, 0) == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The calling thread's slice, in nanoseconds (0 where the kernel has no custom slices).
    pub fn slice_of_this_thread() -> u64 {
        let mut attr = SchedAttr::default();
        // SAFETY: sched_getattr(2) on the calling thread writes at most `size` bytes to `attr`.
        let read = unsafe {
            libc::syscall(
                libc::SYS_sched_getattr,
                0,
                &raw mut attr,
                size_of::<SchedAttr>() as u32,
                0,
            )
        };
        if read == 0 { attr.runtime } else { 0 }
    }

    #[test]
    fn a_thread_gets_the_short_slice_it_asks_for_and_keeps_its_nice_value() {
        std::thread::spawn(|| {
            // SAFETY: getpriority/setpriority of the calling thread (who 0).
            let nice = |set: Option<i32>| unsafe {
                if let Some(n) = set {
                    libc::setpriority(libc::PRIO_PROCESS, 0, n);
                }
                libc::getpriority(libc::PRIO_PROCESS, 0)
            };
            nice(Some(3));
            let took = prefer_short_slices();
            let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
            let version: Vec<u32> =
                release.split(['.', '-']).take(2).filter_map(|p| p.parse().ok()).collect();
            if version >= vec![6, 12] {
                assert!(took, "Linux {release} has custom slices");
                assert_eq!(slice_of_this_thread(), SHORT_SLICE_NS);
            }
            assert_eq!(nice(None), 3, "the nice value stays");
        })
        .join()
        .unwrap();
    }
}
