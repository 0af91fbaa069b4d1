//! User-mode NAT through passt (Debian package `passt`): a child process on one end of a
//! socketpair (`passt --fd`), frames prefixed by a 4-byte big-endian length, as qemu's
//! `-netdev stream` speaks it. No root needed.
//!
//! What the guest may reach is the host's choice: the internet, yes; the host's own
//! loopback services (what passt maps the gateway address to) only with `host_access`, as
//! VirtualBox's 10.0.2.2 is opt-in; port forwards listen on 127.0.0.1 unless the user
//! names another address.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};

use super::NetBackend;

/// Largest frame passt or the guest may send (64 KiB GSO frames plus headers).
pub const MAX_FRAME: usize = 65_550;
/// Most bytes held for sending before the device stops taking the guest's frames.
const SEND_LIMIT: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum PasstError {
    #[error(
        "passt is not installed, so this machine has no network card; install it with: \
         sudo apt-get install passt"
    )]
    Missing,
    #[error("cannot start passt")]
    Spawn(#[source] std::io::Error),
    #[error("cannot create the socket to passt")]
    Socket(#[source] std::io::Error),
}

/// A TCP or UDP port forward: host port → guest port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortForward {
    pub udp: bool,
    /// The host address it listens on; None is 127.0.0.1 (this computer only).
    pub address: Option<std::net::IpAddr>,
    pub host: u16,
    pub guest: u16,
}

impl PortForward {
    /// The address the forward listens on.
    pub fn listen_address(&self) -> std::net::IpAddr {
        self.address.unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST))
    }
}

/// passt's command line for a guest on `fd`.
pub fn passt_args(fd: RawFd, forwards: &[PortForward], host_access: bool) -> Vec<String> {
    let mut args: Vec<String> =
        ["--foreground", "--quiet", "--fd", &fd.to_string()].map(String::from).into();
    if !host_access {
        // Otherwise passt sends what the guest addresses to the gateway to the host's
        // loopback, where services expect only local users.
        args.push("--no-map-gw".into());
    }
    for f in forwards {
        args.push(if f.udp { "-u" } else { "-t" }.into());
        args.push(format!("{}/{}:{}", f.listen_address(), f.host, f.guest));
    }
    args
}

/// How a process that may not start programs itself (a sandboxed VM process) gets a passt:
/// a function that starts one elsewhere for these forwards and returns the socket to it.
/// passt then ends when that socket closes (as it does with `--fd`).
pub type Launcher =
    dyn Fn(&[PortForward], bool) -> Result<OwnedFd, PasstError> + Send + Sync + 'static;

static LAUNCHER: std::sync::OnceLock<Box<Launcher>> = std::sync::OnceLock::new();

/// From now on passt is started by `launcher` (once per process; false if one was set).
pub fn set_launcher(launcher: Box<Launcher>) -> bool {
    LAUNCHER.set(launcher).is_ok()
}

pub struct Passt {
    stream: UnixStream,
    /// passt, if this process started it (else whoever did reaps it).
    child: Option<Child>,
    inbox: Vec<u8>,
    outbox: VecDeque<u8>,
}

/// A socketpair whose second end is inheritable (no CLOEXEC), for the child.
fn socketpair() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: socketpair writes two fds into `fds`; the result is checked.
    let r = unsafe {
        libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr())
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both fds were just created and are owned by nobody else.
    let (ours, theirs) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    Ok((ours, theirs))
}

impl Passt {
    /// Starts passt for one guest: `forwards` from the host into it, and with
    /// `host_access` a way from it to the host's loopback services (through the gateway).
    pub fn spawn(forwards: &[PortForward], host_access: bool) -> Result<Self, PasstError> {
        if let Some(launch) = LAUNCHER.get() {
            let stream = UnixStream::from(launch(forwards, host_access)?);
            stream.set_nonblocking(true).map_err(PasstError::Socket)?;
            return Ok(Passt { stream, child: None, inbox: Vec::new(), outbox: VecDeque::new() });
        }
        let (ours, theirs) = socketpair().map_err(PasstError::Socket)?;
        let child_fd = theirs.as_raw_fd();
        let mut cmd = Command::new("passt");
        cmd.args(passt_args(child_fd, forwards, host_access));
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        // SAFETY: between fork and exec the closure only calls fcntl on an fd it owns, which
        // is async-signal-safe; it clears CLOEXEC so passt inherits its end.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(move || {
                if libc::fcntl(child_fd, libc::F_SETFD, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => PasstError::Missing,
            _ => PasstError::Spawn(e),
        })?;
        drop(theirs);
        let stream = UnixStream::from(ours);
        stream.set_nonblocking(true).map_err(PasstError::Socket)?;
        Ok(Passt { stream, child: Some(child), inbox: Vec::new(), outbox: VecDeque::new() })
    }

    /// Writes as much of the outbox as the socket takes.
    fn flush(&mut self) {
        while !self.outbox.is_empty() {
            let (front, _) = self.outbox.as_slices();
            match self.stream.write(front) {
                Ok(0) => return,
                Ok(n) => {
                    self.outbox.drain(..n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return, // WouldBlock, or passt went away: frames wait or are lost
            }
        }
    }
}

/// Splits the first length-prefixed frame off `buf`, if it is complete. A length beyond
/// MAX_FRAME means the stream is corrupt: everything is dropped.
pub fn take_frame(buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    if buf.len() < 4 {
        return None;
    }
    let len = u32::from_be_bytes(buf[..4].try_into().expect("4 bytes")) as usize;
    if len > MAX_FRAME {
        log::warn!("passt sent a {len}-byte frame; dropping the stream's buffered data");
        buf.clear();
        return None;
    }
    if buf.len() < 4 + len {
        return None;
    }
    let frame = buf[4..4 + len].to_vec();
    buf.drain(..4 + len);
    Some(frame)
}

impl NetBackend for Passt {
    fn fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }

    fn send(&mut self, frame: &[u8]) -> bool {
        self.flush();
        if self.outbox.len() > SEND_LIMIT {
            return false;
        }
        self.outbox.extend((frame.len() as u32).to_be_bytes());
        self.outbox.extend(frame);
        self.flush();
        true
    }

    fn recv(&mut self) -> Option<Vec<u8>> {
        self.flush();
        loop {
            if let Some(frame) = take_frame(&mut self.inbox) {
                return Some(frame);
            }
            let mut chunk = [0u8; 16384];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.inbox.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return None,
            }
        }
    }
}

impl Drop for Passt {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_is_closed_unless_opened_and_forwards_listen_locally() {
        let forward = |address: Option<&str>| PortForward {
            udp: false,
            address: address.map(|a| a.parse().unwrap()),
            host: 8080,
            guest: 80,
        };
        let args = passt_args(7, &[forward(None)], false);
        assert_eq!(
            args,
            ["--foreground", "--quiet", "--fd", "7", "--no-map-gw", "-t", "127.0.0.1/8080:80"]
        );
        let args = passt_args(7, &[forward(Some("0.0.0.0")), forward(Some("::1"))], true);
        assert!(!args.contains(&"--no-map-gw".to_string()));
        assert_eq!(args[4..], ["-t", "0.0.0.0/8080:80", "-t", "::1/8080:80"]);
    }

    #[test]
    fn frames_are_split_and_bounded() {
        let mut buf = Vec::new();
        buf.extend(3u32.to_be_bytes());
        buf.extend([1, 2, 3]);
        buf.extend(2u32.to_be_bytes());
        buf.extend([9]);
        assert_eq!(take_frame(&mut buf), Some(vec![1, 2, 3]));
        assert_eq!(take_frame(&mut buf), None, "second frame incomplete");
        buf.push(8);
        assert_eq!(take_frame(&mut buf), Some(vec![9, 8]));
        buf.extend(u32::MAX.to_be_bytes());
        assert_eq!(take_frame(&mut buf), None);
        assert!(buf.is_empty(), "a corrupt length drops the buffer");
    }
}
