//! Where a live migration goes (`vessel migrate --to`, and later the window's Migrate
//! dialog): an address, and the connection to it. A unix socket stays on this host; TCP
//! carries the guest's memory over a network, unencrypted (no TLS yet), so it is refused
//! unless it stays on this host (a loopback address) or the user says `--insecure`.

use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Address {
    Unix(PathBuf),
    /// Host and port as given.
    Tcp(String, u16),
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
    #[error(
        "{0}: migrating over SSH is not available yet; run `vessel receive --listen \
         tcp:ADDR:PORT` on the other host and migrate to tcp:HOST:PORT with --insecure"
    )]
    Ssh(String),
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
        if text.starts_with("ssh://") {
            return Err(AddressError::Ssh(text.to_string()));
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
        if host.is_empty() || port == 0 {
            return Err(AddressError::Unknown(text.to_string()));
        }
        Ok(Address::Tcp(host.to_string(), port))
    }

    /// Connects to the receiving Vessel; the connection as a descriptor to hand to the VM
    /// process. TCP to another host needs `insecure`.
    pub fn connect(&self, insecure: bool) -> Result<OwnedFd, AddressError> {
        let connect_err = |source| AddressError::Connect { address: self.to_string(), source };
        match self {
            Address::Unix(path) => Ok(UnixStream::connect(path).map_err(connect_err)?.into()),
            Address::Tcp(host, port) => {
                let resolve = |source| AddressError::Resolve { host: host.clone(), source };
                let addrs: Vec<SocketAddr> =
                    (host.as_str(), *port).to_socket_addrs().map_err(resolve)?.collect();
                if !insecure && !addrs.iter().all(|a| is_this_host(a.ip())) {
                    return Err(AddressError::Insecure { host: host.clone(), port: *port });
                }
                let stream = TcpStream::connect(&addrs[..]).map_err(connect_err)?;
                let _ = stream.set_nodelay(true);
                Ok(stream.into())
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
        }
    }
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
        for bad in ["", "unix:", "tcp:host", "tcp::1", "http://x", "tcp:host:0"] {
            let error = Address::parse(bad).unwrap_err().to_string();
            assert!(error.contains("unix:PATH") || error.contains("port"), "{bad}: {error}");
        }
        assert!(matches!(Address::parse("tcp:h:99999"), Err(AddressError::Port(_))));
        assert!(matches!(Address::parse("ssh://me@there"), Err(AddressError::Ssh(_))));
    }

    #[test]
    fn tcp_off_this_host_needs_insecure() {
        // 192.0.2.1 (TEST-NET-1): refused before any connection is tried.
        let error = Address::parse("tcp:192.0.2.1:4444").unwrap().connect(false).unwrap_err();
        assert!(matches!(error, AddressError::Insecure { .. }), "{error}");
        assert!(error.to_string().contains("--insecure"));
        // On this host: it connects.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        Address::Tcp("127.0.0.1".into(), port).connect(false).unwrap();
    }
}
