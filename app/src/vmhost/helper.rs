//! The VM process's helper outside its sandbox, forked from it before it enters it:
//! - it starts passt on request (with the forwards the request names, nothing else) and
//!   hands back the socket to it, since a sandboxed VM process may not execute programs;
//!   passt keeps its own sandbox, and ends when its socket closes (as with `--fd`);
//! - it holds the VM's run lock too (the lock is the file description's, which the fork
//!   shares), so when the VM process dies however it dies (SIGKILL, the sandbox), the
//!   helper sees its socket close, removes the VM's control socket, and only then lets the
//!   lock go: nobody can start the VM meanwhile and find a dead socket, or lose a new one.

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use vmm::devices::net::passt::{self, PasstError, PortForward};

use super::protocol;
use super::wire::{self, FrameReader};

/// A request: passt with these forwards (udp, address, host port, guest port).
#[derive(Serialize, Deserialize, PartialEq)]
struct Start {
    forwards: Vec<(bool, Option<std::net::IpAddr>, u16, u16)>,
    host_access: bool,
}

/// The answer; a started passt's socket comes with it.
#[derive(Serialize, Deserialize)]
enum Started {
    Ok,
    Missing,
    Failed(String),
}

/// The helper, from the VM process's side.
pub struct Helper {
    pid: libc::pid_t,
    stream: Arc<Mutex<UnixStream>>,
}

impl Helper {
    /// The VM process is done: the helper ends (its part of the run lock with it) before
    /// this returns, so clients that hear the VM stopped find it free.
    pub fn finish(self) {
        let _ = vmm::sync::lock(&self.stream).shutdown(std::net::Shutdown::Both);
        // SAFETY: waits for this process's own child; a null status pointer is allowed.
        unsafe { libc::waitpid(self.pid, std::ptr::null_mut(), 0) };
    }
}

/// The request for a passt with `forwards` (and access to the host if `host_access`).
fn request(forwards: &[PortForward], host_access: bool) -> Start {
    Start {
        forwards: forwards.iter().map(|f| (f.udp, f.address, f.host, f.guest)).collect(),
        host_access,
    }
}

/// Forks the helper, holding the run lock `lock`, to remove `socket` once this process is
/// gone; makes the machine start passt through it, for the network cards `nics` (their
/// forwards, and access to the host) and no other: the helper is outside the sandbox, and
/// a VM process a guest took over may not have it listen on ports the VM's settings do not
/// name. Must run while this is the process's only thread (it forks).
pub fn start(
    lock: BorrowedFd<'_>,
    socket: &Path,
    nics: &[(&[PortForward], bool)],
) -> std::io::Result<Helper> {
    let allowed: Vec<Start> =
        nics.iter().map(|&(f, host_access)| request(f, host_access)).collect();
    let lock = lock.as_raw_fd();
    let (ours, theirs) = UnixStream::pair()?;
    // SAFETY: the process has one thread (the caller's promise), so the child may run
    // Rust code: nothing it needs is held by a thread that does not exist there.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if pid == 0 {
        drop(ours);
        serve(theirs, lock, socket, &allowed);
    }
    drop(theirs);
    let stream = Arc::new(Mutex::new(ours));
    let helper = stream.clone();
    passt::set_launcher(Box::new(move |forwards, host_access| {
        let stream = vmm::sync::lock(&helper);
        ask(&stream, forwards, host_access)
    }));
    Ok(Helper { pid, stream })
}

fn ask(
    stream: &UnixStream,
    forwards: &[PortForward],
    host_access: bool,
) -> Result<OwnedFd, PasstError> {
    let broken = |e: protocol::ProtocolError| PasstError::Spawn(std::io::Error::other(e));
    let request = request(forwards, host_access);
    let mut writer = stream.try_clone().map_err(PasstError::Socket)?;
    protocol::send(&mut writer, &request).map_err(broken)?;
    let mut reader = FrameReader::new(stream.try_clone().map_err(PasstError::Socket)?);
    match reader.receive::<Started>().map_err(broken)? {
        Some(Started::Ok) => reader
            .take_fd()
            .ok_or_else(|| PasstError::Spawn(std::io::Error::other("passt's socket did not come"))),
        Some(Started::Missing) => Err(PasstError::Missing),
        Some(Started::Failed(text)) => Err(PasstError::Spawn(std::io::Error::other(text))),
        None => Err(PasstError::Spawn(std::io::Error::other("the passt helper ended"))),
    }
}

/// The helper: starts passt for each request until the VM process goes, then removes its
/// control socket and ends (letting the run lock go).
fn serve(stream: UnixStream, lock: RawFd, socket: &Path, allowed: &[Start]) -> ! {
    // Only its socket (fd 3), the run lock (fd 4) and stdio: not the VM's control socket,
    // disks or anything else the VM process had open.
    let keep = stream.into_raw_fd();
    // SAFETY: descriptor juggling on descriptors this process owns: both are first copied
    // above any fd that could be in the way, then put at 3 and 4; everything above is
    // closed. _exit ends the forked child at once if that fails.
    unsafe {
        let (keep, lock) =
            (libc::fcntl(keep, libc::F_DUPFD, 100), libc::fcntl(lock, libc::F_DUPFD, 100));
        if keep < 0 || lock < 0 || libc::dup2(keep, 3) < 0 || libc::dup2(lock, 4) < 0 {
            libc::_exit(1);
        }
        libc::syscall(libc::SYS_close_range, 5u32, u32::MAX, 0u32);
    }
    // The control socket as the VM process bound it: a VM that moves away by live
    // migration leaves another process's socket in its place, which stays.
    let ours = socket_id(socket);
    // SAFETY: fd 3 is the helper's socket now, owned by nothing else here.
    let stream = UnixStream::from(unsafe { OwnedFd::from_raw_fd(3) });
    let mut writer = match stream.try_clone() {
        Ok(w) => w,
        // SAFETY: _exit ends the process at once, as a forked child should.
        Err(_) => unsafe { libc::_exit(1) },
    };
    let mut reader = FrameReader::new(stream);
    // passts that end are reaped by the kernel: no zombies while the VM runs.
    // SAFETY: sets one signal's disposition; no handler is involved.
    unsafe { libc::signal(libc::SIGCHLD, libc::SIG_IGN) };
    let mut running = Vec::new();
    while let Ok(Some(request)) = reader.receive::<Start>() {
        let (answer, fd) = match spawn(&request, allowed, &mut running) {
            Ok(fd) => (Started::Ok, Some(fd)),
            Err(PasstError::Missing) => (Started::Missing, None),
            Err(e) => (Started::Failed(crate::core::report::error_chain(&e)), None),
        };
        if wire::send_with_fd(&mut writer, &answer, fd.as_ref()).is_err() {
            break;
        }
    }
    // The VM process is gone (its end of the socket closed): its control socket goes, then
    // the lock (fd 4) with this process.
    if ours.is_some() && socket_id(socket) == ours {
        let _ = std::fs::remove_file(socket);
    }
    // SAFETY: _exit ends the forked child without running the parent's exit handlers.
    unsafe { libc::_exit(0) }
}

/// The socket file at `path` (device and inode), if there is one.
pub fn socket_id(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// How long a request for one passt too many waits for an old one to end (a reboot's
/// new network card may come before the old one's passt saw its socket close).
const OLD_PASST_ENDS_WITHIN: std::time::Duration = std::time::Duration::from_secs(2);

/// Starts passt for `request` if the VM's settings have that network (`allowed`) and fewer
/// than two for each are `running` (the old and the new across a reboot): a VM process a
/// guest took over cannot fill the host with them.
fn spawn(
    request: &Start,
    allowed: &[Start],
    running: &mut Vec<std::process::Child>,
) -> Result<OwnedFd, PasstError> {
    if !allowed.contains(request) {
        let refused = "the VM process asked for a network its settings do not have";
        return Err(PasstError::Spawn(std::io::Error::other(refused)));
    }
    let most = 2 * allowed.len();
    let deadline = std::time::Instant::now() + OLD_PASST_ENDS_WITHIN;
    loop {
        // Ended ones are reaped by the kernel (SIGCHLD ignored): waiting for them fails.
        running.retain_mut(|child| matches!(child.try_wait(), Ok(None)));
        if running.len() < most {
            break;
        }
        if std::time::Instant::now() >= deadline {
            let refused = format!(
                "the VM process asked for more passt processes than its {} network card(s) \
                 need ({most} run)",
                allowed.len()
            );
            return Err(PasstError::Spawn(std::io::Error::other(refused)));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let forwards: Vec<PortForward> = request
        .forwards
        .iter()
        .map(|&(udp, address, host, guest)| PortForward { udp, address, host, guest })
        .collect();
    let (ours, theirs) = UnixStream::pair().map_err(PasstError::Socket)?;
    let child_fd = theirs.as_raw_fd();
    let args = passt::passt_args(child_fd, &forwards, request.host_access);
    let mut command = Command::new("passt");
    command.args(args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    // SAFETY: between fork and exec only fcntl on a descriptor the child owns.
    unsafe {
        command.pre_exec(move || {
            if libc::fcntl(child_fd, libc::F_SETFD, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = command.spawn().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => PasstError::Missing,
        _ => PasstError::Spawn(e),
    })?;
    running.push(child);
    drop(theirs);
    Ok(ours.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_vms_own_networks_are_started() {
        let nic: &[PortForward] =
            &[PortForward { udp: false, address: None, host: 8022, guest: 22 }];
        let allowed = [request(nic, false)];
        // A forward the settings do not name, on every address, or access to the host:
        // refused before anything runs.
        let wider = [PortForward { address: Some([0, 0, 0, 0].into()), ..nic[0] }];
        for asked in [request(&wider, false), request(nic, true), request(&[], false)] {
            match spawn(&asked, &allowed, &mut Vec::new()) {
                Err(PasstError::Spawn(e)) => assert!(e.to_string().contains("do not have"), "{e}"),
                other => panic!("started: {:?}", other.map(|_| ())),
            }
        }
    }

    #[test]
    fn no_more_passts_run_than_the_networks_need() {
        let nic: &[PortForward] = &[];
        let allowed = [request(nic, false)];
        let mut running = Vec::new();
        // Two at once (the old one and a reboot's new one), not a third.
        let first = spawn(&request(nic, false), &allowed, &mut running).expect("passt starts");
        let second = spawn(&request(nic, false), &allowed, &mut running).expect("passt starts");
        match spawn(&request(nic, false), &allowed, &mut running) {
            Err(PasstError::Spawn(e)) => assert!(e.to_string().contains("(2 run)"), "{e}"),
            other => panic!("a third passt: {:?}", other.map(|_| ())),
        }
        // One ends (its socket closed): another may start. (Not reaped by the kernel here:
        // this test process does not ignore SIGCHLD, so try_wait reaps it.)
        drop(first);
        let third = spawn(&request(nic, false), &allowed, &mut running).expect("passt starts");
        assert_eq!(running.len(), 2);
        drop((second, third));
        for mut child in running {
            child.wait().unwrap();
        }
    }
}
