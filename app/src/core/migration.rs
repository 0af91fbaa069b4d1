//! Where a live migration goes (`vessel migrate --to`, and later the window's Migrate
//! dialog): an address, and the connection to it. A unix socket stays on this host; TCP
//! carries the guest's memory over a network, unencrypted (no TLS yet), so it is refused
//! unless it stays on this host (a loopback address) or the user says `--insecure`; SSH
//! runs `vessel receive --stdio` on the other host through the user's own `ssh` (its keys,
//! its known hosts, its encryption), as libvirt's qemu+ssh does.

use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Address {
    Unix(PathBuf),
    /// Host and port as given.
    Tcp(String, u16),
    /// `[user@]host`, the SSH port if given, and the library there if given (the path of
    /// `ssh://host/PATH`).
    Ssh {
        target: String,
        port: Option<u16>,
        library: Option<PathBuf>,
    },
}

/// The program `ssh` is (`VESSEL_SSH` replaces it: another client, or the tests' stand-in).
pub fn ssh_program() -> std::ffi::OsString {
    std::env::var_os("VESSEL_SSH").unwrap_or_else(|| "ssh".into())
}

/// The `vessel` the other host runs (`VESSEL_REMOTE_VESSEL`, else `vessel` on its PATH).
pub fn remote_vessel() -> std::ffi::OsString {
    std::env::var_os("VESSEL_REMOTE_VESSEL").unwrap_or_else(|| "vessel".into())
}

/// A connection to the receiving Vessel, and the `ssh` carrying it, if any (ended when
/// this is dropped, after the other side has).
pub struct Connection {
    pub fd: OwnedFd,
    ssh: Option<std::process::Child>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        if let Some(mut ssh) = self.ssh.take() {
            // It ends once the remote command has; a hung one is not waited for long.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while matches!(ssh.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            let _ = ssh.kill();
            let _ = ssh.wait();
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AddressError {
    #[error(
        "{0:?} is not a migration address: give unix:PATH (a receiver on this host) or \
         tcp:HOST:PORT"
    )]
    Unknown(String),
    #[error("{0:?}: the port is not a number from 1 to 65535")]
    Port(String),
    #[error("cannot run ssh ({program}); install openssh-client, or set VESSEL_SSH")]
    Ssh {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot find {host}")]
    Resolve {
        host: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "tcp:{host}:{port} is not on this host, and the guest's memory would cross the network \
         unencrypted; add --insecure to allow it (on a network you trust)"
    )]
    Insecure { host: String, port: u16 },
    #[error("cannot reach the receiving Vessel at {address}")]
    Connect {
        address: String,
        #[source]
        source: std::io::Error,
    },
}

impl Address {
    pub fn parse(text: &str) -> Result<Address, AddressError> {
        if let Some(rest) = text.strip_prefix("ssh://") {
            // [user@]host[:port][/library]
            let (rest, library) = match rest.split_once('/') {
                Some((authority, path)) => {
                    let path = path.trim_end_matches('/');
                    (authority, (!path.is_empty()).then(|| PathBuf::from(format!("/{path}"))))
                }
                None => (rest, None),
            };
            // [user@]host[:port], the host in brackets if it is an IPv6 address.
            let (user, host) = match rest.rsplit_once('@') {
                Some((user, host)) => (Some(user), host),
                None => (None, rest),
            };
            let (host, port) = match host.rsplit_once(':') {
                Some((h, p)) if !h.is_empty() && (!h.contains(':') || h.ends_with(']')) => {
                    let port = p.parse().map_err(|_| AddressError::Port(text.to_string()))?;
                    (h, Some(port))
                }
                _ => (host, None),
            };
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let bad =
                |s: &str| s.is_empty() || s.starts_with('-') || s.contains(char::is_whitespace);
            if bad(host) || user.is_some_and(bad) {
                return Err(AddressError::Unknown(text.to_string()));
            }
            let target = match user {
                Some(user) => format!("{user}@{host}"),
                None => host.to_string(),
            };
            return Ok(Address::Ssh { target, port, library });
        }
        if let Some(path) = text.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(AddressError::Unknown(text.to_string()));
            }
            return Ok(Address::Unix(PathBuf::from(path)));
        }
        let Some(rest) = text.strip_prefix("tcp:") else {
            return Err(AddressError::Unknown(text.to_string()));
        };
        // The port after the last colon (an IPv6 address in brackets has colons of its own).
        let (host, port) = rest.rsplit_once(':').ok_or(AddressError::Unknown(text.to_string()))?;
        let port: u16 = port.parse().map_err(|_| AddressError::Port(text.to_string()))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        // Port 0 is for listening (any free port); connecting to it fails as it should.
        if host.is_empty() {
            return Err(AddressError::Unknown(text.to_string()));
        }
        Ok(Address::Tcp(host.to_string(), port))
    }

    /// Connects to the receiving Vessel; the connection as a descriptor to hand to the VM
    /// process. TCP to another host needs `insecure`. Over SSH, `vessel receive --stdio`
    /// runs there on the address's library, else on `library` (the same folder there:
    /// shared storage), else on the default one there.
    pub fn connect(
        &self,
        insecure: bool,
        library: Option<&std::path::Path>,
    ) -> Result<Connection, AddressError> {
        let connect_err = |source| AddressError::Connect { address: self.to_string(), source };
        let plain = |fd: OwnedFd| Connection { fd, ssh: None };
        match self {
            Address::Unix(path) => {
                Ok(plain(UnixStream::connect(path).map_err(connect_err)?.into()))
            }
            Address::Ssh { target, port, library: there } => {
                let (ours, theirs) = UnixStream::pair().map_err(connect_err)?;
                let theirs_out = theirs.try_clone().map_err(connect_err)?;
                let program = ssh_program();
                let mut ssh = std::process::Command::new(&program);
                if let Some(port) = port {
                    ssh.arg("-p").arg(port.to_string());
                }
                // The remote command's words, each quoted for the remote shell.
                let quoted = |s: &std::ffi::OsStr| {
                    format!("'{}'", s.to_string_lossy().replace('\'', "'\\''"))
                };
                let mut remote = vec![quoted(&remote_vessel())];
                if let Some(library) = there.as_deref().or(library) {
                    remote.extend([quoted("--library".as_ref()), quoted(library.as_os_str())]);
                }
                remote.extend([quoted("receive".as_ref()), quoted("--stdio".as_ref())]);
                let remote = remote.join(" ");
                ssh.arg("-e").arg("none").arg("--").arg(target).arg(remote);
                ssh.stdin(std::process::Stdio::from(OwnedFd::from(theirs)))
                    .stdout(std::process::Stdio::from(OwnedFd::from(theirs_out)));
                let child = ssh.spawn().map_err(|source| AddressError::Ssh {
                    program: program.to_string_lossy().into_owned(),
                    source,
                })?;
                Ok(Connection { fd: ours.into(), ssh: Some(child) })
            }
            Address::Tcp(host, port) => {
                let resolve = |source| AddressError::Resolve { host: host.clone(), source };
                let addrs: Vec<SocketAddr> =
                    (host.as_str(), *port).to_socket_addrs().map_err(resolve)?.collect();
                if !insecure && !addrs.iter().all(|a| is_this_host(a.ip())) {
                    return Err(AddressError::Insecure { host: host.clone(), port: *port });
                }
                let stream = TcpStream::connect(&addrs[..]).map_err(connect_err)?;
                let _ = stream.set_nodelay(true);
                Ok(plain(stream.into()))
            }
        }
    }
}

/// A loopback address: traffic to it never leaves this host.
fn is_this_host(ip: IpAddr) -> bool {
    ip.is_loopback()
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Address::Unix(path) => write!(f, "unix:{}", path.display()),
            Address::Tcp(host, port) if host.contains(':') => write!(f, "tcp:[{host}]:{port}"),
            Address::Tcp(host, port) => write!(f, "tcp:{host}:{port}"),
            Address::Ssh { target, port, library } => {
                write!(f, "ssh://{target}")?;
                if let Some(port) = port {
                    write!(f, ":{port}")?;
                }
                match library {
                    Some(library) => write!(f, "{}", library.display()),
                    None => Ok(()),
                }
            }
        }
    }
}

/// How long one side waits for the other's offer or answer.
const HANDSHAKE_WITHIN: std::time::Duration = std::time::Duration::from_secs(30);

/// How long a migration waits for a peer that neither sends nor reads: far longer than
/// any step takes (a pass sends all the while; building the machine takes moments).
const STALLED_AFTER: std::time::Duration = std::time::Duration::from_secs(120);

/// How a migration goes (`vessel migrate`'s options, the Migrate dialog's fields).
#[derive(Clone, Debug)]
pub struct How {
    pub downtime_ms: u64,
    pub max_passes: u32,
    pub cancel_at_limit: bool,
    pub insecure: bool,
    /// The receiver's token (`--token-file`).
    pub token: Option<String>,
    /// The VM's folder and disks go too (`--copy-disks`: no shared storage).
    pub copy_disks: bool,
}

impl Default for How {
    fn default() -> Self {
        How {
            downtime_ms: 300,
            max_passes: 30,
            cancel_at_limit: false,
            insecure: false,
            token: None,
            copy_disks: false,
        }
    }
}

/// What a migration that completed took.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Figures {
    pub passes: u32,
    pub memory_bytes: u64,
    pub total_ms: u64,
    pub downtime_ms: u64,
    /// Whether the pause target was met (else the pass limit was hit).
    pub converged: bool,
    /// Bytes of disk data sent (`--copy-disks`).
    pub disk_bytes: u64,
}

impl Figures {
    /// "moved to ADDRESS in … (N passes, … of memory); paused … ms".
    pub fn summary(&self, to: &Address) -> String {
        let disks = match self.disk_bytes {
            0 => String::new(),
            n => format!(" and {} of disks", crate::core::units::size_text(n)),
        };
        format!(
            "moved to {to} in {} ms ({} passes, {} of memory{disks}); paused {} ms{}",
            self.total_ms,
            self.passes,
            crate::core::units::size_text(self.memory_bytes),
            self.downtime_ms,
            if self.converged {
                ""
            } else {
                " (the guest changed its memory faster than the link carried it)"
            }
        )
    }
}

/// Moves the running VM in `bundle` to the Vessel at `to` by live migration: connects,
/// offers the VM, and has its VM process move the machine over the connection, telling
/// `progress` what its process tells (`Reply::Migrating`). On failure the VM runs on here
/// (the error says so), unless the other side was told to run it and did not confirm.
pub fn migrate(
    lib: &vm_library::library::Library,
    bundle: &vm_library::bundle::Bundle,
    to: &Address,
    how: &How,
    progress: impl FnMut(&crate::vmhost::protocol::Reply),
) -> anyhow::Result<Figures> {
    use crate::vmhost::protocol::{Reply, Request};
    let name = &bundle.config.name;
    if bundle.running()?.is_none() {
        anyhow::bail!(
            "{name} is not running: only a running VM migrates (a VM that is off moves with \
             `vessel export` and `vessel import`)"
        );
    }
    // What goes apart from the VM's folder, checked before anything goes.
    let fresh =
        if how.copy_disks { Some(vm_library::transfer::fresh_disks(bundle)?) } else { None };
    // Kept to the end: over SSH, it is the ssh process too. Without shared storage, an
    // SSH receiver takes the VM into the library the address names, or its default one.
    let shared = (!how.copy_disks).then(|| lib.dir());
    let connection = to.connect(how.insecure, shared)?;
    offer(&connection.fd, bundle, how.token.clone(), fresh.as_deref())?;
    let request = Request::Migrate {
        downtime_ms: how.downtime_ms,
        max_passes: how.max_passes,
        cancel_at_limit: how.cancel_at_limit,
        copy_disks: how.copy_disks,
    };
    let answer = crate::vmhost::client::request_with_fd_watching(
        bundle.root(),
        name,
        request,
        &connection.fd,
        progress,
    );
    drop(connection);
    match answer? {
        Reply::Migrated { passes, memory_bytes, disk_bytes, total_ms, downtime_ms, converged } => {
            Ok(Figures { passes, memory_bytes, total_ms, downtime_ms, converged, disk_bytes })
        }
        _ => anyhow::bail!("{name}'s VM process gave no account of the migration"),
    }
}

/// What a move with its folder and disks (`How::copy_disks`) leaves here, for the user.
pub fn left_here(bundle: &vm_library::bundle::Bundle) -> String {
    format!(
        "Its folder here ({}) stays as it was at the move; delete it once you no longer need \
         it (vessel delete {:?} --yes).",
        bundle.root().display(),
        bundle.config.name
    )
}

/// Cancels the migration of the VM in `bundle` under way; it runs on here.
pub fn cancel(bundle: &vm_library::bundle::Bundle) -> anyhow::Result<()> {
    let request = crate::vmhost::protocol::Request::CancelMigration;
    crate::vmhost::client::request(bundle.root(), &bundle.config.name, request)?;
    Ok(())
}

/// Offers the VM in `bundle` over `conn` (the receiver's token with it); Err with the
/// receiver's reason if it refuses. With `fresh` (`--copy-disks`), the VM's folder goes
/// next, its writable disks as `fresh`, and the receiver answers again once it has it.
pub fn offer(
    conn: &std::os::fd::OwnedFd,
    bundle: &vm_library::bundle::Bundle,
    token: Option<String>,
    fresh: Option<&[vm_library::transfer::FreshDisk]>,
) -> anyhow::Result<()> {
    let mut stream = std::fs::File::from(conn.try_clone()?);
    let offer = Offer {
        vessel: env!("CARGO_PKG_VERSION").to_string(),
        name: bundle.config.name.clone(),
        uuid: bundle.config.uuid,
        token,
        copy_disks: fresh.is_some(),
    };
    crate::vmhost::protocol::send(&mut stream, &offer)?;
    let mut answer =
        || with_timeout(conn, || crate::vmhost::protocol::receive::<Answer>(&mut stream));
    let verdict = |answer: Option<Answer>| match answer {
        Some(Answer::Accept) => Ok(()),
        Some(Answer::Refuse(why)) => {
            anyhow::bail!("the receiving Vessel refused {}: {why}", offer.name)
        }
        None => anyhow::bail!("the receiving Vessel hung up without an answer"),
    };
    verdict(answer()?)?;
    if let Some(fresh) = fresh {
        let mut out = std::fs::File::from(conn.try_clone()?);
        let sent = vm_library::transfer::send(bundle, fresh, std::io::BufWriter::new(&mut out));
        // A receiver that stopped reading says why: its word beats a broken pipe.
        match (sent, answer()) {
            (_, Ok(Some(Answer::Refuse(why)))) => verdict(Some(Answer::Refuse(why)))?,
            (Err(e), _) => return Err(e.into()),
            (Ok(()), answered) => verdict(answered?)?,
        }
    }
    Ok(())
}

/// Runs `read` on the socket `conn` with a receive timeout of `HANDSHAKE_WITHIN`; then
/// sets the migration's own: a peer silent (or not reading) for `STALLED_AFTER` ends it,
/// rather than leaving a VM process waiting for ever (the machine runs on at the sender).
pub fn with_timeout<T>(
    conn: &std::os::fd::OwnedFd,
    read: impl FnOnce() -> Result<T, crate::vmhost::protocol::ProtocolError>,
) -> anyhow::Result<T> {
    use nix::sys::socket::{setsockopt, sockopt::ReceiveTimeout, sockopt::SendTimeout};
    use nix::sys::time::{TimeVal, TimeValLike};
    let within = TimeVal::milliseconds(HANDSHAKE_WITHIN.as_millis() as i64);
    let _ = setsockopt(conn, ReceiveTimeout, &within);
    let result = read();
    let stalled = TimeVal::milliseconds(STALLED_AFTER.as_millis() as i64);
    let _ = setsockopt(conn, ReceiveTimeout, &stalled);
    let _ = setsockopt(conn, SendTimeout, &stalled);
    Ok(result?)
}

/// What the sending Vessel says first, before any of the machine (`vmm::migration`): which
/// VM comes, and the receiver's token. Framed as the control socket's messages are.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Offer {
    /// The sender's Vessel version.
    pub vessel: String,
    pub name: String,
    pub uuid: uuid::Uuid,
    /// The token `vessel receive` gave (or was given), if it asked for one.
    pub token: Option<String>,
    /// The VM's folder follows the offer, and its disks the machine (`--copy-disks`): the
    /// receiver has no shared storage with the sender.
    #[serde(default)]
    pub copy_disks: bool,
}

/// The receiving Vessel's answer to an `Offer`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Answer {
    Accept,
    /// Why not, and what to do.
    Refuse(String),
}

/// Whether `given` is `expected`, compared in a time that does not depend on where they
/// differ (a token guessed a byte at a time learns nothing from the answer's delay).
pub fn token_matches(expected: &str, given: Option<&str>) -> bool {
    let Some(given) = given else { return false };
    let (a, b) = (expected.as_bytes(), given.as_bytes());
    let mut differ = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        differ |= usize::from(a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0xff));
    }
    differ == 0
}

/// A new token: 128 random bits as hex.
pub fn new_token() -> std::io::Result<String> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// A token from a file (its first line), for `--token-file`.
pub fn read_token(path: &std::path::Path) -> std::io::Result<String> {
    let text = std::fs::read_to_string(path)?;
    let token = text.lines().next().unwrap_or("").trim().to_string();
    if token.is_empty() {
        return Err(std::io::Error::other(format!("{} holds no token", path.display())));
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_and_bad_ones_say_what_works() {
        assert_eq!(
            Address::parse("unix:/run/x.sock").unwrap(),
            Address::Unix("/run/x.sock".into())
        );
        assert_eq!(
            Address::parse("tcp:host.example:4444").unwrap(),
            Address::Tcp("host.example".into(), 4444)
        );
        assert_eq!(Address::parse("tcp:[::1]:4444").unwrap(), Address::Tcp("::1".into(), 4444));
        assert_eq!(Address::parse("tcp:[::1]:4444").unwrap().to_string(), "tcp:[::1]:4444");
        for bad in ["", "unix:", "tcp:host", "tcp::1", "http://x", "tcp::0"] {
            let error = Address::parse(bad).unwrap_err().to_string();
            assert!(error.contains("unix:PATH") || error.contains("port"), "{bad}: {error}");
        }
        assert!(matches!(Address::parse("tcp:h:99999"), Err(AddressError::Port(_))));
        let ssh = |target: &str, port, library: Option<&str>| Address::Ssh {
            target: target.into(),
            port,
            library: library.map(PathBuf::from),
        };
        assert_eq!(Address::parse("ssh://me@there").unwrap(), ssh("me@there", None, None));
        assert_eq!(Address::parse("ssh://there:2222/").unwrap(), ssh("there", Some(2222), None));
        assert_eq!(Address::parse("ssh://[::1]:22").unwrap(), ssh("::1", Some(22), None));
        assert_eq!(Address::parse("ssh://me@there:22").unwrap().to_string(), "ssh://me@there:22");
        let with_library = Address::parse("ssh://me@there:22/srv/vms/").unwrap();
        assert_eq!(with_library, ssh("me@there", Some(22), Some("/srv/vms")));
        assert_eq!(with_library.to_string(), "ssh://me@there:22/srv/vms");
        // Nothing ssh could take for an option of its own.
        for bad in ["ssh://", "ssh://-oProxyCommand=x", "ssh://me@", "ssh://a b"] {
            assert!(Address::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tokens_match_only_in_full() {
        let token = new_token().unwrap();
        assert_eq!(token.len(), 32);
        assert_ne!(token, new_token().unwrap());
        assert!(token_matches(&token, Some(&token)));
        assert!(!token_matches(&token, None));
        assert!(!token_matches(&token, Some(&token[..31])));
        assert!(!token_matches(&token, Some(&format!("{token}0"))));
        assert!(!token_matches(&token, Some("")));
    }

    #[test]
    fn tcp_off_this_host_needs_insecure() {
        // 192.0.2.1 (TEST-NET-1): refused before any connection is tried.
        let here = Some(std::path::Path::new("/"));
        let error =
            Address::parse("tcp:192.0.2.1:4444").unwrap().connect(false, here).err().unwrap();
        assert!(matches!(error, AddressError::Insecure { .. }), "{error}");
        assert!(error.to_string().contains("--insecure"));
        // On this host: it connects.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        Address::Tcp("127.0.0.1".into(), port).connect(false, here).unwrap();
    }
}
