//! The VM process's sandbox, entered on its main thread before it starts any other thread,
//! so that every thread it ever has is inside (Landlock and seccomp both pass to threads
//! made later):
//! - `PR_SET_NO_NEW_PRIVS`: nothing it runs gains privileges.
//! - Landlock (best effort: a kernel without it runs the VM, and the log says so): files
//!   only in the VM's folder (read-write), the ISO, kernel, firmware and disks' backing
//!   files it was given (read-only), `/dev/kvm`, what it reads of itself in `/proc`, and
//!   removing its own control socket. Discs put in later come as open descriptors from the
//!   client (`fds`).
//! - seccomp-bpf: a filter per kind of thread (`vmm::seccomp`): the main thread's allows
//!   what the process makes, `ioctl` only with KVM's numbers and a few for sockets; each vCPU,
//!   device, controller and client thread then narrows its own. Anything else traps: the
//!   process writes which call it was to its log (the window shows the log's last line)
//!   and ends by SIGSYS.
//!
//! The VM process never executes programs: passt is started by a helper forked before the
//! sandbox (`helper`).

use std::path::{Path, PathBuf};

use landlock::{
    ABI, Access, AccessFs, PathBeneath, PathFd, Ruleset, RulesetAttr, RulesetCreatedAttr,
    RulesetStatus,
};
use vmm::{Boot, DeviceConfig, MachineConfig};

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("cannot set no_new_privs")]
    NoNewPrivs(#[source] std::io::Error),
    #[error("cannot set up the file sandbox (Landlock)")]
    Landlock(#[source] landlock::RulesetError),
    #[error(transparent)]
    Filter(#[from] vmm::seccomp::SeccompError),
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
    /// The control socket is moved into its place there (a VM process receiving its VM by
    /// live migration listens beside the sender's socket until it takes over).
    socket_moves: bool,
}

impl Plan {
    /// The control socket is moved into its place in its folder (`socket_moves`).
    pub fn with_socket_moving(mut self) -> Plan {
        self.socket_moves = true;
        self
    }

    /// What the machine `config` of the VM in `bundle` opens, now and at each reboot.
    pub fn for_machine(bundle: &Path, config: &MachineConfig, socket: &Path) -> Plan {
        let mut plan = Plan {
            read_write: vec![bundle.to_path_buf(), PathBuf::from("/dev/kvm")],
            read_only: vec![PathBuf::from("/proc/self")],
            socket_dir: socket.parent().map(Path::to_path_buf),
            socket_moves: false,
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
    /// What Landlock does here, in words.
    pub landlock: &'static str,
    pub landlock_enforced: bool,
}

/// Enters the sandbox for good. Must run while this is the process's only thread.
pub fn enter(plan: &Plan) -> Result<Entered, SandboxError> {
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(SandboxError::NoNewPrivs(std::io::Error::last_os_error()));
    }
    let status = restrict_files(plan).map_err(SandboxError::Landlock)?;
    catch_denied_calls()?;
    vmm::seccomp::confine_process()?;
    Ok(Entered {
        landlock: match status {
            RulesetStatus::FullyEnforced => "fully enforced",
            RulesetStatus::PartiallyEnforced => "partly enforced (an older kernel)",
            RulesetStatus::NotEnforced => "not enforced (this kernel has no Landlock)",
        },
        landlock_enforced: status == RulesetStatus::FullyEnforced,
    })
}

/// Landlock over the whole file system but `plan`'s files.
fn restrict_files(plan: &Plan) -> Result<RulesetStatus, landlock::RulesetError> {
    let abi = ABI::V5;
    let all = AccessFs::from_all(abi);
    let read = AccessFs::ReadFile | AccessFs::ReadDir;
    let mut rules: Vec<(PathBuf, landlock::BitFlags<AccessFs>)> = Vec::new();
    rules.extend(plan.read_write.iter().map(|p| (p.clone(), all)));
    rules.extend(plan.read_only.iter().map(|p| (p.clone(), read)));
    if let Some(dir) = &plan.socket_dir {
        let access = if plan.socket_moves {
            AccessFs::RemoveFile | AccessFs::MakeSock
        } else {
            AccessFs::RemoveFile.into()
        };
        rules.push((dir.clone(), access));
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
    Ok(ruleset.restrict_self()?.ruleset)
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
    fn a_plan_names_the_machines_files() {
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

    /// Landlock on its own (the vCPU that opens a file in `sandbox` tests meets its
    /// seccomp filter first): in a child process, the VM's folder opens and a file outside
    /// does not.
    #[test]
    fn landlock_keeps_the_process_to_its_files() {
        let dir = std::env::temp_dir().join(format!("vessel-landlock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("disk.img"), b"inside").unwrap();
        let outside = std::env::temp_dir().join(format!("vessel-outside-{}", std::process::id()));
        std::fs::write(&outside, b"outside").unwrap();
        let plan = Plan { read_write: vec![dir.clone()], ..Plan::default() };
        // SAFETY: the child only sets up Landlock, opens files and _exits (glibc's malloc
        // is usable after fork); the parent waits for it.
        let status = unsafe {
            let pid = libc::fork();
            assert!(pid >= 0);
            if pid == 0 {
                let code = match restrict_files(&plan) {
                    Ok(RulesetStatus::FullyEnforced) => {
                        let inside = std::fs::read(dir.join("disk.img")).is_ok();
                        let refused = std::fs::File::open(&outside).map_err(|e| e.kind());
                        match (inside, refused) {
                            (true, Err(std::io::ErrorKind::PermissionDenied)) => 0,
                            (false, _) => 11,
                            (true, _) => 12,
                        }
                    }
                    _ => 10,
                };
                libc::_exit(code);
            }
            let mut status = 0;
            assert_eq!(libc::waitpid(pid, &mut status, 0), pid);
            status
        };
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_file(&outside);
        assert!(libc::WIFEXITED(status), "{status:#x}");
        let what = match libc::WEXITSTATUS(status) {
            0 => "",
            10 => "this kernel does not enforce Landlock fully",
            11 => "the VM's own folder was refused",
            _ => "a file outside the VM's folder opened",
        };
        assert!(what.is_empty(), "{what}");
        // The parent was never restricted.
        assert!(std::fs::metadata("/etc/passwd").is_ok());
    }
}
