//! Dropping a `MachineHandle` stops the machine and joins its threads: no thread, file
//! descriptor or guest-memory mapping outlives it. (Its own test binary: other tests'
//! threads would blur the counts.)

use vessel_tests::*;

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

/// The names of this process's threads (for a failure's message).
fn thread_names() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .flatten()
        .map(|t| std::fs::read_to_string(t.path().join("comm")).unwrap_or_default().trim().into())
        .collect()
}

/// The thread count once it is back to `want`, or after a second: a thread the kernel
/// runs in the process for a VM (KVM's NX huge page recovery worker) ends as the VM's
/// last reference closes, moments after the handle's drop has returned.
fn threads_settled(want: usize) -> usize {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    while threads() != want && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    threads()
}

fn fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// The process's virtual size in bytes.
fn vm_size() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmSize:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() << 10
}

#[test]
fn dropping_the_handle_leaves_nothing_behind() {
    let memory: u64 = 512 << 20;
    let (threads0, fds0) = (threads(), fds());
    for test in ["ticks", "smp", "ticks"] {
        let mut spec = GuestSpec::new(test);
        spec.vcpus = 3;
        spec.memory_bytes = memory;
        let mut run = spec.boot();
        // Running, with all its threads up, when the handle goes away.
        run.expect_output("VESSEL-TESTGUEST");
        assert!(threads() >= threads0 + 4, "3 vCPU threads and the controller");
        let running_size = vm_size();
        drop(run);
        let left = threads_settled(threads0);
        assert_eq!(left, threads0, "threads left after drop ({test}): {:?}", thread_names());
        assert_eq!(fds(), fds0, "file descriptors left after drop ({test})");
        let freed = || running_size.saturating_sub(vm_size());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
        while freed() < memory && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let freed = freed();
        assert!(freed >= memory, "guest memory left mapped ({test}): only {freed} bytes unmapped");
    }
}
