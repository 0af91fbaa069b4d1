//! `vessel migrate NAME --to ADDRESS`: connects to the receiving Vessel, offers it the VM
//! (`core::migration::Offer`, with the receiver's token) and hands the connection to the
//! VM's process, which moves the machine over it (`vmm::migration`); says how far it is on
//! a terminal, and what it took. `vessel receive --listen ADDRESS`: waits for one VM,
//! checks the offer, takes the VM's folder if it comes along (`--copy-disks`,
//! `vm_library::transfer`), and starts the VM's process here to take the machine.

use std::io::{IsTerminal, Write};

use anyhow::bail;
use vm_library::library::Library;

use super::verbs::say;
use crate::core::migration::{Address, Answer, How, Offer, with_timeout};
use crate::core::units::size_text;
use crate::vmhost::client::{self, Launcher};
use crate::vmhost::protocol::{self, Reply, VmState};
use crate::vmhost::wire::FrameReader;

pub fn migrate(lib: &Library, name: &str, to: &str, how: &How, json: bool) -> anyhow::Result<()> {
    let address = Address::parse(to)?;
    let bundle = lib.find(name)?;
    let show = !json && std::io::stderr().is_terminal();
    let mut shown = false;
    let progress = |reply: &Reply| {
        let Reply::Migrating {
            phase, pass, sent, remaining, dirty_rate, downtime_estimate_ms, ..
        } = reply
        else {
            return;
        };
        if !show {
            return;
        }
        let line = match phase.as_str() {
            "copying" => format!(
                "copying, pass {pass}: {} sent, {} changed since, {}/s changing; a pause now \
                 would be {downtime_estimate_ms} ms",
                size_text(*sent),
                size_text(*remaining),
                size_text(*dirty_rate)
            ),
            "stopping" => {
                format!("paused; the last {} and its state go over", size_text(*remaining))
            }
            _ => "the other Vessel takes over".to_string(),
        };
        eprint!("\r\x1b[K{name}: {line}");
        let _ = std::io::stderr().flush();
        shown = true;
    };
    let moved = crate::core::migration::migrate(lib, &bundle, &address, how, progress);
    if shown {
        eprintln!();
    }
    let figures = moved?;
    let value = serde_json::json!({
        "name": name,
        "to": address.to_string(),
        "passes": figures.passes,
        "memory_bytes": figures.memory_bytes,
        "total_ms": figures.total_ms,
        "downtime_ms": figures.downtime_ms,
        "converged": figures.converged,
        "disk_bytes": figures.disk_bytes,
    });
    let mut line = format!("{name}: {}", figures.summary(&address));
    if how.copy_disks {
        line.push_str(&format!("\n{}", crate::core::migration::left_here(&bundle)));
    }
    say(json, value, line)
}

/// Where `vessel receive` listens.
enum Listener {
    Unix(std::os::unix::net::UnixListener, std::path::PathBuf),
    Tcp(std::net::TcpListener),
}

impl Listener {
    fn accept(&self) -> std::io::Result<std::os::fd::OwnedFd> {
        Ok(match self {
            Listener::Unix(l, _) => l.accept()?.0.into(),
            Listener::Tcp(l) => {
                let (stream, _) = l.accept()?;
                let _ = stream.set_nodelay(true);
                stream.into()
            }
        })
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix(_, path) = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// `vessel receive --listen ADDRESS`: one VM by live migration, into this library (whose
/// folder the sender's is too: shared storage); Ok once it runs here.
pub fn receive(
    lib: &Library,
    listen: &str,
    token_file: Option<&std::path::Path>,
    insecure: bool,
    json: bool,
) -> anyhow::Result<()> {
    use anyhow::Context;
    let address = Address::parse(listen)?;
    let token = match token_file {
        Some(path) => Some(crate::core::migration::read_token(path)?),
        // Over TCP anyone who reaches the port could offer a VM: a token is a must.
        None if matches!(address, Address::Tcp(..)) => Some(crate::core::migration::new_token()?),
        None => None,
    };
    let listener = match &address {
        Address::Unix(path) => {
            if std::fs::symlink_metadata(path).is_ok() {
                bail!("{} exists; remove it or listen elsewhere", path.display());
            }
            let listener = std::os::unix::net::UnixListener::bind(path)
                .with_context(|| format!("cannot listen on {}", path.display()))?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
            Listener::Unix(listener, path.clone())
        }
        Address::Tcp(host, port) => {
            let listener = std::net::TcpListener::bind((host.as_str(), *port))
                .with_context(|| format!("cannot listen on {address}"))?;
            if !insecure && !listener.local_addr()?.ip().is_loopback() {
                bail!(
                    "{address} is reachable from the network, and a VM's memory would come \
                     over it unencrypted; add --insecure to allow it (on a network you trust)"
                );
            }
            Listener::Tcp(listener)
        }
        Address::Ssh { .. } => bail!(
            "a receiver listens on unix:PATH or tcp:ADDR:PORT; over SSH, `vessel migrate --to \
             ssh://HOST` starts `vessel receive --stdio` on HOST itself"
        ),
    };
    // Where and how to reach it, at once (a script waits for this line).
    let shown = match (&listener, &address) {
        (Listener::Tcp(l), Address::Tcp(host, _)) => {
            format!("{}", Address::Tcp(host.clone(), l.local_addr()?.port()))
        }
        _ => address.to_string(),
    };
    if json {
        println!("{}", serde_json::json!({ "listening": shown, "token": token }));
    } else {
        println!("listening on {shown}");
        if token_file.is_none()
            && let Some(token) = &token
        {
            println!("token: {token} (give it to `vessel migrate` with --token-file)");
        }
    }
    std::io::stdout().flush()?;
    loop {
        let conn = listener.accept().context("cannot accept a connection")?;
        match take_offer(lib, &conn, token.as_deref()) {
            Ok(bundle) => return receive_vm(lib, bundle, conn, json, false),
            // Not the sender (a wrong token, a stray connection): told why, and the next.
            Err(why) => eprintln!("vessel: refused a migration: {why:#}"),
        }
    }
}

/// `vessel receive --stdio`: one VM by live migration over standard input and output (an
/// ssh channel: the ssh user is the one authenticated, and the channel is encrypted), into
/// this library; Ok once it runs here. Messages go to stderr: stdout is the channel.
pub fn receive_stdio(lib: &Library, token_file: Option<&std::path::Path>) -> anyhow::Result<()> {
    use std::os::fd::AsFd;
    let token = token_file.map(crate::core::migration::read_token).transpose()?;
    // The VM process takes one socket: the channel's two pipes are relayed through a pair.
    let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
    let stdin = std::io::stdin().as_fd().try_clone_to_owned()?;
    let stdout = std::io::stdout().as_fd().try_clone_to_owned()?;
    let mut into = ours.try_clone()?;
    let mut out_of = ours;
    let inbound = std::thread::Builder::new().name("vessel-stdin".into()).spawn(move || {
        let mut stdin = std::fs::File::from(stdin);
        let _ = std::io::copy(&mut stdin, &mut into);
        let _ = into.shutdown(std::net::Shutdown::Write);
    })?;
    let outbound = std::thread::Builder::new().name("vessel-stdout".into()).spawn(move || {
        let mut stdout = std::fs::File::from(stdout);
        let _ = std::io::copy(&mut out_of, &mut stdout);
    })?;
    let conn: std::os::fd::OwnedFd = theirs.into();
    let bundle = take_offer(lib, &conn, token.as_deref())?;
    let result = receive_vm(lib, bundle, conn, false, true);
    // Everything the VM process said (its last word, Running) reaches the sender before
    // this ends: the relay ends when the VM process lets the connection go.
    let _ = outbound.join();
    drop(inbound);
    result
}

/// Reads the offer on `conn` and answers it: the VM in this library it names, if it
/// may come; or, for a VM that comes with its folder (`--copy-disks`), the folder, as it
/// arrives here (answered again once it is here).
fn take_offer(
    lib: &Library,
    conn: &std::os::fd::OwnedFd,
    token: Option<&str>,
) -> anyhow::Result<vm_library::bundle::Bundle> {
    let mut stream = std::fs::File::from(conn.try_clone()?);
    let offer = with_timeout(conn, || protocol::receive::<Offer>(&mut stream))?
        .ok_or_else(|| anyhow::anyhow!("the other side hung up without an offer"))?;
    let verdict = (|| {
        if let Some(token) = token
            && !crate::core::migration::token_matches(token, offer.token.as_deref())
        {
            bail!("the token is not this receiver's: give the one `vessel receive` printed");
        }
        if offer.copy_disks {
            return Ok(None);
        }
        let found = lib.list()?.into_iter().find_map(|e| match e {
            vm_library::library::Entry::Ok(b) if b.config.uuid == offer.uuid => Some(*b),
            _ => None,
        });
        found.map(Some).ok_or_else(|| {
            anyhow::anyhow!(
                "{} ({}) is not in this library ({}); a live migration needs the VM's folder \
                 and disks on storage both hosts share, as the same library, or \
                 `vessel migrate --copy-disks` to send them",
                offer.name,
                offer.uuid,
                lib.dir().display()
            )
        })
    })();
    fn answer<T>(verdict: &anyhow::Result<T>) -> Answer {
        match verdict {
            Ok(_) => Answer::Accept,
            Err(why) => Answer::Refuse(format!("{why:#}")),
        }
    }
    protocol::send(&mut stream, &answer(&verdict))?;
    if let Some(bundle) = verdict? {
        return Ok(bundle);
    }
    // The folder, through the same connection (no further than its end: the machine
    // follows).
    let arrived =
        vm_library::transfer::receive(&mut stream, lib, offer.uuid).map_err(anyhow::Error::from);
    protocol::send(&mut stream, &answer(&arrived))?;
    arrived
}

/// Starts the VM's process here to take the VM over `conn`; back once it runs here.
/// `quiet_stdout`: stdout is the channel (`--stdio`), what it says goes to stderr.
fn receive_vm(
    lib: &Library,
    bundle: vm_library::bundle::Bundle,
    conn: std::os::fd::OwnedFd,
    json: bool,
    quiet_stdout: bool,
) -> anyhow::Result<()> {
    let received = take_vm(lib, &bundle, conn, json, quiet_stdout);
    // A folder that came with the VM and was not taken: nothing of it stays.
    if received.is_err() && bundle.is_arriving() {
        vm_library::transfer::discard(bundle.root(), std::time::Duration::from_secs(10));
    }
    received
}

fn take_vm(
    lib: &Library,
    bundle: &vm_library::bundle::Bundle,
    conn: std::os::fd::OwnedFd,
    json: bool,
    quiet_stdout: bool,
) -> anyhow::Result<()> {
    let name = &bundle.config.name;
    let started =
        client::start_incoming(&Launcher::this_program(), lib.dir(), bundle.root(), conn)?;
    let mut reader = FrameReader::new(started.stream);
    let show = !json && std::io::stderr().is_terminal();
    let mut shown = false;
    let mut pid = None;
    let outcome = loop {
        match reader.receive::<Reply>()? {
            Some(Reply::Migrating { pass, sent, .. }) if show => {
                eprint!("\r\x1b[K{name}: receiving, pass {pass}: {}", size_text(sent));
                let _ = std::io::stderr().flush();
                shown = true;
            }
            Some(Reply::Built { machine }) => pid = Some(machine.pid),
            Some(Reply::StateChanged { state: VmState::Running }) => break Ok(()),
            Some(Reply::StateChanged { state: VmState::Stopped { reason, .. } }) => {
                break Err(anyhow::anyhow!(
                    "{name} did not come: {}",
                    reason.unwrap_or_else(|| "its VM process stopped".into())
                ));
            }
            Some(_) => {}
            None => {
                let said = client::last_log_line(bundle.root()).unwrap_or_default();
                break Err(anyhow::anyhow!("the VM process ended before {name} came: {said}"));
            }
        }
    };
    if shown {
        eprintln!();
    }
    outcome?;
    let pid_text = pid.map(|p| format!(" (pid {p})")).unwrap_or_default();
    let line = format!("{name}: received; it runs here{pid_text}");
    if quiet_stdout {
        eprintln!("{line}");
        return Ok(());
    }
    say(json, serde_json::json!({ "name": name, "received": true, "pid": pid }), line)
}
