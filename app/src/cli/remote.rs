//! `vessel start`: a library VM in a VM process of its own (`vmhost`), its serial console
//! on this terminal for as long as this runs (or, `--detach`, not at all). The keys and
//! exit statuses are `vessel run`'s; Ctrl-A d detaches, leaving the VM running.

use std::io::{Read, Write};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::Context;
use vm_library::bundle::Bundle;
use vm_library::library::Library;

use super::headless::{
    EXIT_CRASHED, EXIT_POWERED_OFF, EXIT_QUIT, EXIT_REBOOTED, EXIT_VMM_ERROR, catch_stop_signals,
    take_stop_signal,
};
use super::terminal::{Escapes, RawMode, Typed};
use crate::vmhost::client::{self, Launcher};
use crate::vmhost::protocol::{self, Reply, Request, StopKind, VmState};
use crate::vmhost::wire::FrameReader;

const HELP: &str = "\r\nvessel: Ctrl-A x quit (power off) | Ctrl-A d detach (the VM runs on) | \
                    Ctrl-A s ACPI shutdown | Ctrl-A r reset | Ctrl-A p pause/resume | Ctrl-A \
                    Ctrl-A send Ctrl-A\r\n";

/// What the console loop hears.
enum Heard {
    Reply(Reply),
    /// The VM process closed the socket.
    End,
    Keys(Vec<u8>),
}

/// Starts `name` in its VM process; returns the exit status.
pub fn start(lib: &Library, name: &str, detach: bool) -> anyhow::Result<i32> {
    let bundle = lib.find(name)?;
    let started = client::start(&Launcher::this_program(), lib.dir(), bundle.root())?;
    let mut stream = started.stream;
    // A VM process that failed at once may have hung up already; its answer is still there
    // to read, and says why.
    let _ = protocol::send(
        &mut stream,
        &Request::Subscribe { serial: !detach, display: false, debug: false },
    );
    let reader = FrameReader::new(stream.try_clone()?);
    if detach {
        return Ok(wait_until_running(reader, &bundle, true)?.unwrap_or(EXIT_POWERED_OFF));
    }
    catch_stop_signals();
    let (tx, heard) = mpsc::channel();
    let replies = tx.clone();
    std::thread::Builder::new().name("vessel-vm-replies".into()).spawn(move || {
        let mut reader = reader;
        while let Ok(Some(reply)) = reader.receive::<Reply>() {
            if replies.send(Heard::Reply(reply)).is_err() {
                return;
            }
        }
        let _ = replies.send(Heard::End);
    })?;
    let raw = RawMode::enable(libc::STDIN_FILENO);
    let interactive = raw.is_some();
    std::thread::Builder::new().name("vessel-stdin".into()).spawn(move || {
        let mut buf = [0u8; 256];
        let mut stdin = std::io::stdin().lock();
        while let Ok(n) = stdin.read(&mut buf) {
            if n == 0 || tx.send(Heard::Keys(buf[..n].to_vec())).is_err() {
                break;
            }
        }
    })?;
    let mut child = started.child;
    let mut stdout = std::io::stdout().lock();
    let mut escapes = Escapes::new(interactive);
    let mut state = VmState::Starting;
    let mut quitting = false;
    let mut send = |request: Request| protocol::send(&mut stream, &request);
    loop {
        let next = heard.recv_timeout(Duration::from_millis(20));
        match take_stop_signal() {
            Some(libc::SIGTERM) => send(Request::Shutdown)?,
            Some(libc::SIGUSR1) => {
                send(Request::PowerOff)?;
                quitting = true;
            }
            _ => {}
        }
        match next {
            Ok(Heard::Reply(Reply::Serial { bytes })) => {
                stdout.write_all(&bytes)?;
                stdout.flush()?;
            }
            Ok(Heard::Reply(Reply::StateChanged { state: new })) => state = new,
            Ok(Heard::Reply(Reply::Warning { text })) => eprint!("vessel: warning: {text}\r\n"),
            Ok(Heard::Reply(Reply::Failed { error })) => eprint!("vessel: {error}\r\n"),
            Ok(Heard::Reply(_)) | Err(mpsc::RecvTimeoutError::Timeout) => {}
            Ok(Heard::End) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                drop(raw);
                let status = child.take().and_then(|mut c| c.wait().ok());
                // Back when the VM's processes have let go of it (its sandbox's helper
                // holds its run lock a moment longer): it can be started or changed at once.
                let deadline = std::time::Instant::now() + Duration::from_secs(5);
                while bundle.running().ok().flatten().is_some()
                    && std::time::Instant::now() < deadline
                {
                    std::thread::sleep(Duration::from_millis(10));
                }
                return Ok(ended(&state, quitting, status, bundle.root()));
            }
            Ok(Heard::Keys(bytes)) => {
                for typed in escapes.feed(&bytes) {
                    match typed {
                        Typed::Guest(bytes) => send(Request::SerialInput { bytes })?,
                        Typed::Command(b'x') => {
                            send(Request::PowerOff)?;
                            quitting = true;
                        }
                        Typed::Command(b'd') => {
                            drop(raw);
                            eprintln!(
                                "\nvessel: detached; {} runs on (vessel stop {:?} shuts it down)",
                                bundle.config.name, bundle.config.name
                            );
                            return Ok(EXIT_POWERED_OFF);
                        }
                        Typed::Command(b's') => send(Request::Shutdown)?,
                        Typed::Command(b'r') => send(Request::Reset)?,
                        Typed::Command(b'p') => send(match state {
                            VmState::Paused => Request::Resume,
                            _ => Request::Pause,
                        })?,
                        Typed::Command(_) => {
                            stdout.write_all(HELP.as_bytes())?;
                            stdout.flush()?;
                        }
                    }
                }
            }
        }
    }
}

/// The exit status for how the VM ended (its last state), saying why on stderr; a VM
/// process that died says its log's last line (the sandbox names the call it refused).
fn ended(
    state: &VmState,
    quitting: bool,
    status: Option<std::process::ExitStatus>,
    root: &std::path::Path,
) -> i32 {
    match state {
        VmState::Stopped { kind: StopKind::ForcedOff, .. } if quitting => {
            eprintln!("\nvessel: quit; the guest was powered off");
            EXIT_QUIT
        }
        VmState::Stopped { kind: StopKind::ForcedOff, .. } => {
            eprintln!("\nvessel: powered off on request");
            EXIT_QUIT
        }
        VmState::Stopped { kind: StopKind::PoweredOff, .. } => EXIT_POWERED_OFF,
        VmState::Stopped { kind: StopKind::Migrated, .. } => {
            eprintln!("\nvessel: the VM moved to another Vessel, and runs there");
            EXIT_POWERED_OFF
        }
        VmState::Stopped { kind: StopKind::Rebooted, .. } => {
            eprintln!("vessel: the guest rebooted");
            EXIT_REBOOTED
        }
        VmState::Stopped { kind: StopKind::Crashed, reason } => {
            eprintln!("vessel: {}", reason.as_deref().unwrap_or("the guest crashed"));
            EXIT_CRASHED
        }
        VmState::Stopped { kind: StopKind::Failed, reason } => {
            eprintln!("vessel: error: {}", reason.as_deref().unwrap_or("the machine failed"));
            EXIT_VMM_ERROR
        }
        _ => {
            let how = status.map(|s| format!(" ({s})")).unwrap_or_default();
            eprintln!("\nvessel: error: the VM process ended unexpectedly{how}");
            if let Some(last) = client::last_log_line(root) {
                eprintln!("vessel: its log ends: {last}");
            }
            EXIT_VMM_ERROR
        }
    }
}

/// `--detach`: waits until the VM runs (or fails to start), then leaves it running.
/// Starts `name` in its VM process in the background, saying nothing; back when it runs.
pub fn start_in_background(lib: &Library, name: &str) -> anyhow::Result<()> {
    let bundle = lib.find(name)?;
    let started = client::start(&Launcher::this_program(), lib.dir(), bundle.root())?;
    let mut stream = started.stream;
    let subscribe = Request::Subscribe { serial: false, display: false, debug: false };
    let _ = protocol::send(&mut stream, &subscribe);
    match wait_until_running(FrameReader::new(stream), &bundle, false)? {
        None => Ok(()),
        Some(_) => anyhow::bail!(
            "{name} stopped as it started; see {}",
            bundle.root().join(client::LOG_FILE).display()
        ),
    }
}

fn wait_until_running(
    mut reader: FrameReader,
    bundle: &Bundle,
    announce: bool,
) -> anyhow::Result<Option<i32>> {
    let name = &bundle.config.name;
    let mut pid = None;
    loop {
        match reader.receive::<Reply>().context("the VM process")? {
            Some(Reply::Built { machine }) => pid = Some(machine.pid),
            Some(Reply::StateChanged { state: VmState::Running }) => {
                let pid = pid.map(|p| format!(" (pid {p})")).unwrap_or_default();
                if announce {
                    println!(
                        "{name} is running in the background{pid}; vessel stop {name:?} shuts \
                         it down"
                    );
                }
                return Ok(None);
            }
            Some(Reply::StateChanged { state: state @ VmState::Stopped { .. } }) => {
                return Ok(Some(ended(&state, false, None, bundle.root())));
            }
            Some(_) => {}
            None => anyhow::bail!(
                "the VM process ended before {name} ran; see {}",
                bundle.root().join(client::LOG_FILE).display()
            ),
        }
    }
}
