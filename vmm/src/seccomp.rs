//! System call filters (seccomp-bpf, with seccompiler) per kind of thread of a VM process.
//!
//! A sandboxed VM process installs the `Main` filter on its main thread before it starts
//! any other thread, and turns the per-thread filters on (`confine_process`). Each thread
//! of a machine then installs the filter of its kind as the first thing it does
//! (`confine_this_thread`): a vCPU runs the guest's device exits and may not open a file,
//! make a socket or spawn a thread; a device I/O thread serves its queues; the controller
//! builds and rebuilds the machine. Filters stack (the kernel applies every filter a thread
//! has, the strictest answer winning) and a new thread inherits its parent's, so the filter
//! of a thread that starts others also allows what those need: the controller's covers the
//! vCPUs and device threads it starts at a guest reboot, and `Main` covers them all.
//!
//! A call a filter does not allow traps: the process's SIGSYS handler writes which call it
//! was to the VM's log and ends the process. The narrowest kinds (vCPU, device I/O, control)
//! have one more filter on top, which answers `openat` with EACCES: the C library opens
//! `/sys/devices/system/cpu/online` the first time a thread allocates, and copes with a
//! refusal, but none of these threads has a file of its own to open.
//!
//! The lists come from the calls each kind of thread makes (`strace -ff` of every test
//! guest run in a VM process) and are checked by running them all under these filters
//! (the app's `sandbox` tests).

use std::collections::BTreeMap;
use std::sync::OnceLock;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("cannot make the system call filter of the {0:?} threads")]
    Build(ThreadKind, #[source] seccompiler::BackendError),
    #[error("cannot install the system call filter")]
    Install(#[source] seccompiler::Error),
}

/// The kinds of thread of a VM process, each with its own filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ThreadKind {
    /// The process's first thread: serves the control socket's main loop and builds the
    /// machine; every other thread descends from it.
    Main,
    /// The machine's controller (`vessel-machine`): power, reset, rebuilding at reboot.
    Controller,
    /// A vCPU: runs the guest and the device exits it takes (port and MMIO accesses).
    Vcpu,
    /// A device's own thread: virtio queues and backends, display refresh, typematic.
    DeviceIo,
    /// A thread serving a client of the control socket (accepting, reading, writing,
    /// publishing frames).
    Control,
}

const KINDS: [ThreadKind; 5] = [
    ThreadKind::Main,
    ThreadKind::Controller,
    ThreadKind::Vcpu,
    ThreadKind::DeviceIo,
    ThreadKind::Control,
];

/// What every thread does: memory, locks, signals (the SIGSYS handler's calls among them),
/// time, logging to stderr, eventfds, ending.
const EVERY_THREAD: &[i64] = &[
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_close,
    libc::SYS_fcntl,
    libc::SYS_openat, // answered EACCES for the narrow kinds (see above)
    libc::SYS_futex,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mprotect,
    libc::SYS_mremap,
    libc::SYS_madvise,
    libc::SYS_brk,
    libc::SYS_sigaltstack,
    libc::SYS_rt_sigaction,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigreturn,
    libc::SYS_restart_syscall,
    libc::SYS_sched_getaffinity,
    libc::SYS_sched_yield,
    libc::SYS_getpid,
    libc::SYS_gettid,
    libc::SYS_tgkill,
    libc::SYS_clock_gettime,
    libc::SYS_clock_nanosleep,
    libc::SYS_nanosleep,
    libc::SYS_gettimeofday,
    libc::SYS_getrandom,
    libc::SYS_exit,
    libc::SYS_exit_group,
];

/// What a thread that starts threads needs (a new thread runs its first calls under its
/// parent's filters, before it installs its own).
const STARTS_THREADS: &[i64] = &[
    libc::SYS_clone,
    libc::SYS_clone3,
    libc::SYS_set_robust_list,
    libc::SYS_rseq,
    libc::SYS_prctl,
    libc::SYS_seccomp,
];

/// Guest exits: the IDE disk and CD (read, write, flush, discard, size), a display mode
/// set (a new sealed memfd for the picture).
const VCPU: &[i64] = &[
    libc::SYS_statx,
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_preadv,
    libc::SYS_pwritev,
    libc::SYS_lseek,
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    libc::SYS_fallocate,
    libc::SYS_fstat,
    libc::SYS_memfd_create,
    libc::SYS_ftruncate,
];

/// Device threads: their epoll loops, disks, the network backend's socket (passt), a new
/// picture's memfd.
const DEVICE_IO: &[i64] = &[
    libc::SYS_statx,
    libc::SYS_epoll_wait,
    libc::SYS_epoll_pwait,
    libc::SYS_epoll_ctl,
    libc::SYS_poll,
    libc::SYS_ppoll,
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_preadv,
    libc::SYS_pwritev,
    libc::SYS_preadv2,
    libc::SYS_pwritev2,
    libc::SYS_lseek,
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    libc::SYS_fallocate,
    libc::SYS_fstat,
    libc::SYS_recvfrom,
    libc::SYS_recvmsg,
    libc::SYS_sendto,
    libc::SYS_sendmsg,
    libc::SYS_memfd_create,
    libc::SYS_ftruncate,
];

/// The controller's own calls, on top of its children's: it opens the disks, firmware and
/// `/dev/kvm` again at each reboot and makes the new machine's eventfds and epolls.
const CONTROLLER: &[i64] = &[
    libc::SYS_newfstatat,
    libc::SYS_statx,
    libc::SYS_statfs,
    libc::SYS_fstatfs,
    libc::SYS_readlink,
    libc::SYS_readlinkat,
    libc::SYS_getdents64,
    libc::SYS_flock,
    libc::SYS_dup,
    libc::SYS_dup3,
    libc::SYS_pipe2,
    libc::SYS_eventfd2,
    libc::SYS_epoll_create1,
    libc::SYS_timerfd_create,
    libc::SYS_timerfd_settime,
    libc::SYS_inotify_init1,
    libc::SYS_inotify_add_watch,
    libc::SYS_mincore,
    libc::SYS_readv,
    libc::SYS_writev,
];

/// A control socket's client threads.
const CONTROL: &[i64] = &[
    libc::SYS_accept4,
    libc::SYS_recvfrom,
    libc::SYS_recvmsg,
    libc::SYS_sendto,
    libc::SYS_sendmsg,
    libc::SYS_shutdown,
    libc::SYS_poll,
    libc::SYS_ppoll,
    libc::SYS_getsockopt,
];

/// The main thread's own: it ends its helper, writes the VM's files (crash-safe: rename),
/// removes its socket, reports its usage.
const MAIN: &[i64] = &[
    libc::SYS_unlink,
    libc::SYS_unlinkat,
    libc::SYS_rename,
    libc::SYS_renameat,
    libc::SYS_renameat2,
    libc::SYS_linkat,
    libc::SYS_mkdir,
    libc::SYS_mkdirat,
    libc::SYS_fchmod,
    libc::SYS_kill,
    libc::SYS_wait4,
    libc::SYS_getuid,
    libc::SYS_getrusage,
    libc::SYS_prlimit64,
    libc::SYS_uname,
];

/// KVM's ioctl numbers (`linux/kvm.h`): `_IO`, `_IOR`, `_IOW` of type 0xAE.
mod kvm {
    use std::mem::size_of;

    const fn io(dir: u64, nr: u64, size: usize) -> u64 {
        (dir << 30) | ((size as u64) << 16) | (0xae << 8) | nr
    }
    pub const RUN: u64 = io(0, 0x80, 0);
    pub const GET_REGS: u64 = io(2, 0x81, size_of::<kvm_bindings::kvm_regs>());
    pub const GET_SREGS: u64 = io(2, 0x83, size_of::<kvm_bindings::kvm_sregs>());
    pub const SET_USER_MEMORY_REGION: u64 =
        io(1, 0x46, size_of::<kvm_bindings::kvm_userspace_memory_region>());
    pub const GET_DIRTY_LOG: u64 = io(1, 0x42, size_of::<kvm_bindings::kvm_dirty_log>());
    pub const SET_GSI_ROUTING: u64 = io(1, 0x6a, size_of::<kvm_bindings::kvm_irq_routing>());
    pub const IRQFD: u64 = io(1, 0x76, size_of::<kvm_bindings::kvm_irqfd>());
    pub const IOEVENTFD: u64 = io(1, 0x79, size_of::<kvm_bindings::kvm_ioeventfd>());
}

/// Which ioctls a kind may make.
enum Ioctls {
    /// These numbers only.
    Only(&'static [u64]),
    /// Any of KVM's (type 0xAE: the machine's set-up) and a descriptor's and socket's.
    AnyKvm,
}

/// A descriptor's and a socket's ioctls: non-blocking, close-on-exec, "is it a terminal".
const FD_IOCTLS: &[u64] = &[libc::FIONBIO, libc::FIOCLEX, libc::FIONCLEX, libc::TCGETS];

/// A vCPU: running, its registers for a crash report, and what a guest's PCI programming
/// changes (BARs' memory slots and ioeventfds, MSI routes and irqfds, the VGA's memory and
/// its dirty log).
const VCPU_IOCTLS: &[u64] = &[
    kvm::RUN,
    kvm::GET_REGS,
    kvm::GET_SREGS,
    kvm::SET_USER_MEMORY_REGION,
    kvm::GET_DIRTY_LOG,
    kvm::SET_GSI_ROUTING,
    kvm::IRQFD,
    kvm::IOEVENTFD,
];

/// A display refresh thread reads the VGA memory's dirty log (and unmaps its slot if it is
/// the last to let go of it).
const DEVICE_IOCTLS: &[u64] = &[kvm::GET_DIRTY_LOG, kvm::SET_USER_MEMORY_REGION];

const CONTROL_IOCTLS: &[u64] = &[libc::FIONBIO, libc::FIOCLEX];

impl ThreadKind {
    /// The system calls a thread of this kind may make, with those of the threads it starts.
    pub fn calls(self) -> Vec<i64> {
        let own: &[&[i64]] = match self {
            ThreadKind::Main => &[MAIN, CONTROLLER, CONTROL, VCPU, DEVICE_IO, STARTS_THREADS],
            ThreadKind::Controller => &[CONTROLLER, VCPU, DEVICE_IO, STARTS_THREADS],
            ThreadKind::Vcpu => &[VCPU],
            ThreadKind::DeviceIo => &[DEVICE_IO],
            ThreadKind::Control => &[CONTROL, STARTS_THREADS],
        };
        let mut calls: Vec<i64> =
            EVERY_THREAD.iter().chain(own.iter().copied().flatten()).copied().collect();
        calls.sort_unstable();
        calls.dedup();
        calls
    }

    fn ioctls(self) -> Ioctls {
        match self {
            ThreadKind::Main | ThreadKind::Controller => Ioctls::AnyKvm,
            ThreadKind::Vcpu => Ioctls::Only(VCPU_IOCTLS),
            ThreadKind::DeviceIo => Ioctls::Only(DEVICE_IOCTLS),
            ThreadKind::Control => Ioctls::Only(CONTROL_IOCTLS),
        }
    }

    /// Whether `openat` is answered EACCES (the thread has no file of its own to open).
    fn opens_no_files(self) -> bool {
        matches!(self, ThreadKind::Vcpu | ThreadKind::DeviceIo | ThreadKind::Control)
    }

    /// The filters a thread of this kind installs: for the kinds that open no file, one
    /// that refuses `openat`; then `calls` and `ioctls` allowed, anything else trapped.
    pub fn programs(self) -> Result<Vec<BpfProgram>, SeccompError> {
        let fail = |e| SeccompError::Build(self, e);
        let ioctl_is = |op, value| {
            SeccompCondition::new(1, SeccompCmpArgLen::Dword, op, value)
                .and_then(|c| SeccompRule::new(vec![c]))
                .map_err(fail)
        };
        let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
            self.calls().into_iter().map(|nr| (nr, Vec::new())).collect();
        let mut ioctl = Vec::new();
        let numbers = match self.ioctls() {
            Ioctls::AnyKvm => {
                ioctl.push(ioctl_is(SeccompCmpOp::MaskedEq(0xff00), 0xae00)?);
                FD_IOCTLS
            }
            Ioctls::Only(numbers) => numbers,
        };
        for &number in numbers {
            ioctl.push(ioctl_is(SeccompCmpOp::Eq, number)?);
        }
        rules.insert(libc::SYS_ioctl, ioctl);
        if matches!(self, ThreadKind::Main | ThreadKind::Control) {
            // A control socket's reader asks for short time slices (`sched`), for itself
            // only: sched_setattr and getpriority of thread 0, the caller.
            let this_thread =
                SeccompCondition::new(0, SeccompCmpArgLen::Qword, SeccompCmpOp::Eq, 0)
                    .and_then(|c| SeccompRule::new(vec![c]))
                    .map_err(fail)?;
            rules.insert(libc::SYS_sched_setattr, vec![this_thread]);
            // getpriority(PRIO_PROCESS = 0, who = 0).
            let both = SeccompCondition::new(0, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, 0)
                .and_then(|which| {
                    let who =
                        SeccompCondition::new(1, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, 0)?;
                    SeccompRule::new(vec![which, who])
                })
                .map_err(fail)?;
            rules.insert(libc::SYS_getpriority, vec![both]);
        }
        // Installed in this order: seccompiler sets no_new_privs (prctl) before each
        // filter, which the kind's own filter may refuse.
        let mut programs = Vec::new();
        if self.opens_no_files() {
            let open = SeccompFilter::new(
                [(libc::SYS_openat, Vec::new())].into(),
                SeccompAction::Allow,
                SeccompAction::Errno(libc::EACCES as u32),
                TargetArch::x86_64,
            )
            .map_err(fail)?;
            programs.push(open.try_into().map_err(fail)?);
        }
        let allowed = SeccompFilter::new(
            rules,
            SeccompAction::Trap,
            SeccompAction::Allow,
            TargetArch::x86_64,
        )
        .map_err(fail)?;
        programs.push(allowed.try_into().map_err(fail)?);
        Ok(programs)
    }
}

/// The compiled filters of each kind, once the process asked for them.
static THREAD_FILTERS: OnceLock<BTreeMap<ThreadKind, Vec<BpfProgram>>> = OnceLock::new();

/// Confines the process for good: installs the `Main` filter on the calling thread (which
/// must be the process's only one), and from now on each thread a machine starts installs
/// its kind's. All are compiled here, so that a thread starting needs no allocation to
/// confine itself.
pub fn confine_process() -> Result<(), SeccompError> {
    let mut all = BTreeMap::new();
    for kind in KINDS {
        all.insert(kind, kind.programs()?);
    }
    for program in &all[&ThreadKind::Main] {
        seccompiler::apply_filter(program).map_err(SeccompError::Install)?;
    }
    let _ = THREAD_FILTERS.set(all);
    Ok(())
}

/// Called first thing by each thread of a machine and of a VM process: installs its kind's
/// filters if the process asked for them (`confine_process`). A thread that cannot confine
/// itself must not run unconfined: it says why on stderr (the VM's log) and ends the
/// process.
pub fn confine_this_thread(kind: ThreadKind) {
    let Some(filters) = THREAD_FILTERS.get() else { return };
    for program in filters.get(&kind).into_iter().flatten() {
        if let Err(e) = seccompiler::apply_filter(program) {
            eprintln!("vessel: a {kind:?} thread cannot install its system call filter: {e}");
            std::process::abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ioctl_numbers_are_the_kernels() {
        // As strace shows them for Linux's `linux/kvm.h`.
        assert_eq!(kvm::RUN, 0xae80);
        assert_eq!(kvm::GET_REGS, 0x8090_ae81);
        assert_eq!(kvm::GET_SREGS, 0x8138_ae83);
        assert_eq!(kvm::SET_USER_MEMORY_REGION, 0x4020_ae46);
        assert_eq!(kvm::GET_DIRTY_LOG, 0x4010_ae42);
        assert_eq!(kvm::SET_GSI_ROUTING, 0x4008_ae6a);
        assert_eq!(kvm::IRQFD, 0x4020_ae76);
        assert_eq!(kvm::IOEVENTFD, 0x4040_ae79);
    }

    #[test]
    fn a_parents_filter_allows_what_its_children_do() {
        let main = ThreadKind::Main.calls();
        for kind in KINDS {
            let missing: Vec<_> = kind.calls().into_iter().filter(|c| !main.contains(c)).collect();
            assert!(missing.is_empty(), "{kind:?} makes {missing:?}, which Main refuses");
        }
        let controller = ThreadKind::Controller.calls();
        for kind in [ThreadKind::Vcpu, ThreadKind::DeviceIo] {
            assert!(kind.calls().iter().all(|c| controller.contains(c)), "{kind:?}");
        }
        // Threads that start none do not get the calls that start one.
        for kind in [ThreadKind::Vcpu, ThreadKind::DeviceIo] {
            let calls = kind.calls();
            for call in [libc::SYS_clone, libc::SYS_clone3, libc::SYS_socket, libc::SYS_execve] {
                assert!(!calls.contains(&call), "{kind:?} may make {call}");
            }
        }
        for kind in KINDS {
            assert!(kind.programs().is_ok(), "{kind:?}");
        }
    }

    /// Runs `child` in a forked process and returns how it ended (`waitpid`'s status).
    fn in_child(child: impl FnOnce() -> i32) -> i32 {
        // SAFETY: the child only installs precompiled filters and makes raw system calls
        // (no allocation, no lock another thread of this test could hold), then _exits.
        unsafe {
            let pid = libc::fork();
            assert!(pid >= 0);
            if pid == 0 {
                libc::_exit(child());
            }
            let mut status = 0;
            assert_eq!(libc::waitpid(pid, &mut status, 0), pid);
            status
        }
    }

    #[test]
    fn a_vcpu_may_not_open_files_nor_make_sockets() {
        let programs = ThreadKind::Vcpu.programs().unwrap();
        let install = |programs: &[BpfProgram]| {
            for p in programs {
                if seccompiler::apply_filter(p).is_err() {
                    return false;
                }
            }
            true
        };
        // openat: refused with EACCES, and the thread goes on.
        let status = in_child(|| {
            if !install(&programs) {
                return 10;
            }
            // SAFETY: open(2) of a constant C string.
            let fd = unsafe { libc::open(c"/etc/passwd".as_ptr(), libc::O_RDONLY) };
            let refused =
                fd < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EACCES);
            if refused { 0 } else { 11 }
        });
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "{status:#x}");
        // socket: trapped (no handler in this child: SIGSYS ends it).
        let status = in_child(|| {
            if !install(&programs) {
                return 10;
            }
            // SAFETY: socket(2) with integer arguments.
            unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
            12
        });
        assert!(libc::WIFSIGNALED(status), "{status:#x}");
        assert_eq!(libc::WTERMSIG(status), libc::SIGSYS);
        // A KVM ioctl a vCPU never makes (KVM_CREATE_VCPU): trapped too.
        let status = in_child(|| {
            if !install(&programs) {
                return 10;
            }
            // SAFETY: ioctl on an invalid descriptor; the filter acts before the kernel.
            unsafe { libc::ioctl(-1, 0xae41) };
            12
        });
        assert_eq!(libc::WTERMSIG(status), libc::SIGSYS, "{status:#x}");
    }

    #[test]
    fn a_control_thread_may_ask_for_short_slices_for_itself_only() {
        let programs = ThreadKind::Control.programs().unwrap();
        let run = |target: libc::pid_t| {
            in_child(|| {
                for p in &programs {
                    if seccompiler::apply_filter(p).is_err() {
                        return 10;
                    }
                }
                if target == 0 {
                    // Itself: allowed (whether the kernel has custom slices or not).
                    crate::sched::prefer_short_slices();
                    return 0;
                }
                // SAFETY: sched_setattr(2) naming another thread with a null attr: the
                // filter acts before the kernel would refuse the pointer.
                unsafe { libc::syscall(libc::SYS_sched_setattr, target, 0usize, 0) };
                12
            })
        };
        let status = run(0);
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "{status:#x}");
        let status = run(1);
        assert!(libc::WIFSIGNALED(status), "{status:#x}");
        assert_eq!(libc::WTERMSIG(status), libc::SIGSYS);
    }
}
