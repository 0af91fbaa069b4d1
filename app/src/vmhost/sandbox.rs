//! The VM process's sandbox, entered on its main thread before it starts any other thread,
//! so that every thread it ever has is inside (Landlock and seccomp both pass to threads
//! made later):
//! - `PR_SET_NO_NEW_PRIVS`: nothing it runs gains privileges.
//! - Landlock (best effort: a kernel without it runs the VM, and the log says so): files
//!   only in the VM's folder (read-write), the ISO, kernel, firmware and disks' backing
//!   files it was given (read-only), `/dev/kvm`, what it reads of itself in `/proc`, and
//!   removing its own control socket. Discs put in later come as open descriptors from the
//!   client (`fds`).
//! - seccomp-bpf (seccompiler): the system calls the VM process makes, and `ioctl` only with
//!   KVM's numbers and a few for sockets. Anything else traps: the process writes which call
//!   it was to its log (the window shows the log's last line) and ends by SIGSYS.
//!
//! The VM process never executes programs: passt is started by a helper forked before the
//! sandbox (`helper`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use landlock::{
    ABI, Access, AccessFs, PathBeneath, PathFd, Ruleset, RulesetAttr, RulesetCreatedAttr,
    RulesetStatus,
};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};
use vmm::{Boot, DeviceConfig, MachineConfig};

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("cannot set no_new_privs")]
    NoNewPrivs(#[source] std::io::Error),
    #[error("cannot set up the file sandbox (Landlock)")]
    Landlock(#[source] landlock::RulesetError),
    #[error("cannot make the system call filter")]
    Filter(#[source] seccompiler::BackendError),
    #[error("cannot install the system call filter")]
    Install(#[source] seccompiler::Error),
    #[error("cannot catch the system call filter's signal")]
    Signal(#[source] std::io::Error),
}

/// The files a VM process may use.
#[derive(Debug, Default)]
pub struct Plan {
    read_write: Vec<PathBuf>,
    read_only: Vec<PathBuf>,
    /// Where the control socket is: the process removes it as it ends.
    socket_dir: Option<PathBuf>,
}

impl Plan {
    /// What the machine `config` of the VM in `bundle` opens, now and at each reboot.
    pub fn for_machine(bundle: &Path, config: &MachineConfig, socket: &Path) -> Plan {
        let mut plan = Plan {
            read_write: vec![bundle.to_path_buf(), PathBuf::from("/dev/kvm")],
            read_only: vec![PathBuf::from("/proc/self")],
            socket_dir: socket.parent().map(Path::to_path_buf),
        };
        match &config.boot {
            Boot::Kernel(source) => {
                plan.read_only.push(source.kernel.clone());
                plan.read_only.extend(source.initrd.clone());
            }
            Boot::Firmware(fw) => plan.read_only.push(fw.image.clone()),
        }
        for device in &config.devices {
            match device {
                DeviceConfig::Block { image, .. } => {
                    plan.read_only.push(image.path.clone());
                    plan.read_only.extend(image.backing.iter().map(|l| l.path.clone()));
                }
                DeviceConfig::CdRom { iso: Some(iso) } => plan.read_only.push(iso.clone()),
                DeviceConfig::Vga(vga) => plan.read_only.extend(vga.rom.clone()),
                _ => {}
            }
        }
        plan
    }
}

/// How much of the sandbox this kernel enforces, for the log.
#[derive(Debug)]
pub struct Entered {
    pub landlock: &'static str,
}

/// Enters the sandbox for good. Must run while this is the process's only thread.
pub fn enter(plan: &Plan) -> Result<Entered, SandboxError> {
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(SandboxError::NoNewPrivs(std::io::Error::last_os_error()));
    }
    let landlock = restrict_files(plan).map_err(SandboxError::Landlock)?;
    catch_denied_calls()?;
    let program = filter()?;
    seccompiler::apply_filter(&program).map_err(SandboxError::Install)?;
    Ok(Entered { landlock })
}

/// Landlock over the whole file system but `plan`'s files.
fn restrict_files(plan: &Plan) -> Result<&'static str, landlock::RulesetError> {
    let abi = ABI::V5;
    let all = AccessFs::from_all(abi);
    let read = AccessFs::ReadFile | AccessFs::ReadDir;
    let mut rules: Vec<(PathBuf, landlock::BitFlags<AccessFs>)> = Vec::new();
    rules.extend(plan.read_write.iter().map(|p| (p.clone(), all)));
    rules.extend(plan.read_only.iter().map(|p| (p.clone(), read)));
    if let Some(dir) = &plan.socket_dir {
        rules.push((dir.clone(), AccessFs::RemoveFile.into()));
    }
    let mut ruleset = Ruleset::default().handle_access(all)?.create()?;
    for (path, access) in rules {
        // A file that is not there (an empty CD drive's last disc) is simply not allowed.
        let Ok(fd) = PathFd::new(&path) else { continue };
        // A file gets only the rights a file can have (Landlock refuses directory rights
        // on one).
        let access = if path.is_dir() { access } else { access & AccessFs::from_file(abi) };
        ruleset = ruleset.add_rule(PathBeneath::new(fd, access))?;
    }
    let status = ruleset.restrict_self()?;
    Ok(match status.ruleset {
        RulesetStatus::FullyEnforced => "fully enforced",
        RulesetStatus::PartiallyEnforced => "partly enforced (an older kernel)",
        RulesetStatus::NotEnforced => "not enforced (this kernel has no Landlock)",
    })
}

/// The system calls a VM process makes: its machine's threads (vCPUs, device I/O, the
/// controller, which rebuilds the machine at a guest reboot), the control socket's and the
/// allocator's. Checked by running every test guest under it (tests/tests in the app's
/// `vm_process` tests).
const ALLOWED: &[i64] = &[
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_readv,
    libc::SYS_writev,
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_preadv,
    libc::SYS_pwritev,
    libc::SYS_preadv2,
    libc::SYS_pwritev2,
    libc::SYS_lseek,
    libc::SYS_close,
    libc::SYS_openat,
    libc::SYS_newfstatat,
    libc::SYS_fstat,
    libc::SYS_statx,
    libc::SYS_statfs,
    libc::SYS_fstatfs,
    libc::SYS_readlink,
    libc::SYS_readlinkat,
    libc::SYS_getdents64,
    libc::SYS_unlink,
    libc::SYS_unlinkat,
    libc::SYS_rename,
    libc::SYS_renameat,
    libc::SYS_renameat2,
    libc::SYS_linkat,
    libc::SYS_mkdir,
    libc::SYS_mkdirat,
    libc::SYS_fchmod,
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    libc::SYS_ftruncate,
    libc::SYS_fallocate,
    libc::SYS_flock,
    libc::SYS_fcntl,
    libc::SYS_inotify_init1,
    libc::SYS_inotify_add_watch,
    libc::SYS_dup,
    libc::SYS_dup3,
    libc::SYS_pipe2,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mprotect,
    libc::SYS_mremap,
    libc::SYS_madvise,
    libc::SYS_mincore,
    libc::SYS_brk,
    libc::SYS_memfd_create,
    libc::SYS_rt_sigaction,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigreturn,
    libc::SYS_restart_syscall,
    libc::SYS_sigaltstack,
    libc::SYS_futex,
    libc::SYS_clone,
    libc::SYS_clone3,
    libc::SYS_set_robust_list,
    libc::SYS_set_tid_address,
    libc::SYS_rseq,
    libc::SYS_sched_getaffinity,
    libc::SYS_sched_yield,
    libc::SYS_exit,
    libc::SYS_exit_group,
    libc::SYS_getpid,
    libc::SYS_gettid,
    libc::SYS_getuid,
    libc::SYS_tgkill,
    libc::SYS_kill,
    libc::SYS_wait4,
    libc::SYS_clock_gettime,
    libc::SYS_clock_nanosleep,
    libc::SYS_nanosleep,
    libc::SYS_gettimeofday,
    libc::SYS_epoll_create1,
    libc::SYS_epoll_ctl,
    libc::SYS_epoll_wait,
    libc::SYS_epoll_pwait,
    libc::SYS_eventfd2,
    libc::SYS_timerfd_create,
    libc::SYS_timerfd_settime,
    libc::SYS_poll,
    libc::SYS_ppoll,
    libc::SYS_recvfrom,
    libc::SYS_recvmsg,
    libc::SYS_sendto,
    libc::SYS_sendmsg,
    libc::SYS_accept4,
    libc::SYS_shutdown,
    libc::SYS_getsockopt,
    libc::SYS_getrandom,
    libc::SYS_prctl,
    libc::SYS_getrusage,
    libc::SYS_prlimit64,
    libc::SYS_uname,
];

/// ioctl numbers allowed besides KVM's (type 0xAE): sockets' and descriptors'.
const IOCTLS: &[u64] = &[libc::FIONBIO, libc::FIOCLEX, libc::FIONCLEX, libc::TCGETS];

/// The filter: `ALLOWED`, and `ioctl` for KVM's numbers and `IOCTLS`; anything else traps.
fn filter() -> Result<BpfProgram, SandboxError> {
    let condition = |op, value| {
        SeccompCondition::new(1, SeccompCmpArgLen::Dword, op, value)
            .and_then(|c| SeccompRule::new(vec![c]))
            .map_err(SandboxError::Filter)
    };
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        ALLOWED.iter().map(|&nr| (nr, Vec::new())).collect();
    let mut ioctl = vec![condition(SeccompCmpOp::MaskedEq(0xff00), 0xae00)?];
    for &number in IOCTLS {
        ioctl.push(condition(SeccompCmpOp::Eq, number)?);
    }
    rules.insert(libc::SYS_ioctl, ioctl);
    let filter =
        SeccompFilter::new(rules, SeccompAction::Trap, SeccompAction::Allow, TargetArch::x86_64)
            .map_err(SandboxError::Filter)?;
    filter.try_into().map_err(SandboxError::Filter)
}

/// What the log says when the filter stops the process; the window quotes it.
const DENIED: &[u8] = b"vessel: the sandbox stopped the VM process: it made system call ";

/// A line built on the stack, cut at its size (for the signal handler).
struct Line {
    bytes: [u8; 256],
    len: usize,
}

impl Line {
    fn push(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if self.len < self.bytes.len() {
                self.bytes[self.len] = b;
                self.len += 1;
            }
        }
    }
}

/// SIGSYS (the filter's trap): write which system call was refused to stderr (the VM's
/// log), then end by SIGSYS. Async-signal-safe: only write(2), sigaction and raise.
extern "C" fn on_denied(_: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // The kernel's siginfo for SIGSYS: after signo, errno, code (3 ints) and a pad, the
    // call address (8 bytes), then the system call number (int).
    // SAFETY: the kernel passes a valid siginfo_t for this signal; the offset is within it.
    let number = unsafe { *(info.cast::<u8>().add(24).cast::<libc::c_int>()) };
    let mut line = Line { bytes: [0; 256], len: 0 };
    line.push(DENIED);
    let mut digits = [0u8; 12];
    let mut n = number.unsigned_abs();
    let mut first = digits.len();
    loop {
        first -= 1;
        digits[first] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    line.push(&digits[first..]);
    // Its name, from a static table: no allocation, no lock.
    if let Some(name) = super::syscalls::name(i64::from(number)) {
        line.push(b" (");
        line.push(name.as_bytes());
        line.push(b")");
    }
    line.push(b", which a VM process never makes; a device model may have been exploited\n");
    // SAFETY: write(2) of a stack buffer, then the default action for SIGSYS, re-raised.
    unsafe {
        libc::write(libc::STDERR_FILENO, line.bytes.as_ptr().cast(), line.len);
        libc::signal(libc::SIGSYS, libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGSYS);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        libc::raise(libc::SIGSYS);
    }
}

fn catch_denied_calls() -> Result<(), SandboxError> {
    // SAFETY: a zeroed sigaction is valid; the handler is async-signal-safe (above).
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_denied as *const () as usize;
        action.sa_flags = libc::SA_SIGINFO;
        if libc::sigaction(libc::SIGSYS, &action, std::ptr::null_mut()) != 0 {
            return Err(SandboxError::Signal(std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_compiles_and_a_plan_names_the_machines_files() {
        assert!(filter().is_ok());
        let mut config = MachineConfig::new(vmm::BootSource {
            kernel: "/vms/a/vmlinuz".into(),
            initrd: Some("/vms/a/initrd".into()),
            cmdline: String::new(),
        });
        config.devices.push(DeviceConfig::CdRom { iso: Some("/isos/d.iso".into()) });
        let plan = Plan::for_machine(Path::new("/vms/a"), &config, Path::new("/run/v/vm.sock"));
        assert!(plan.read_write.contains(&PathBuf::from("/vms/a")));
        assert!(plan.read_write.contains(&PathBuf::from("/dev/kvm")));
        for file in ["/vms/a/vmlinuz", "/vms/a/initrd", "/isos/d.iso", "/proc/self"] {
            assert!(plan.read_only.contains(&PathBuf::from(file)), "{file}");
        }
        assert_eq!(plan.socket_dir, Some(PathBuf::from("/run/v")));
    }
}
