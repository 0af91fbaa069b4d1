//! The VM process (`vessel-vm`): takes one library VM's run lock, builds its machine,
//! and serves its control socket until the machine stops; then it ends. Clients (the
//! window, the CLI) come and go meanwhile: a VM outlives them all. The process that
//! starts it passes a first client already connected (`first`), so it hears how the start
//! went, whatever happens.
//!
//! Threads: this one owns the `MachineHandle` (a control request waits for it at most
//! `POLL`); each client has a reader (input goes straight to the machine's `InputSink`,
//! which never blocks), a writer (a bounded queue: a client that stops reading is dropped,
//! never waited for; the guest's serial output waits for it gathered, up to 1 MiB) and,
//! if it watches the display, a publisher of frames.

use std::collections::VecDeque;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use vm_library::bundle::Bundle;
use vm_library::library::Library;
use vmm::display::{Damage, Display};
use vmm::seccomp::ThreadKind;
use vmm::{Event, InputSink, Machine, MachineHandle, MachineState, StopReason};

use super::paths;
use super::protocol::{
    self, Hello, Layout, MachineInfo, ProtocolError, Reply, Request, StopKind, Usage, VmState,
};
use super::wire;
use crate::core::report::{crash_reason, error_chain};
use crate::core::{launch, suspend};
use vmm::sync::lock;

/// How long a control request waits for the machine's thread at most.
const POLL: Duration = Duration::from_millis(5);
/// Messages queued for a client; one that falls this far behind is dropped.
const CLIENT_QUEUE: usize = 1024;
/// Serial output kept for clients that subscribe later (a window attaching).
const SERIAL_BACKLOG: usize = 64 * 1024;
/// Serial output a message carries at most (its JSON stays far below `MAX_FRAME`).
const SERIAL_PIECE: usize = 16 * 1024;
/// Serial output that may wait for one client; a client this far behind is dropped.
const SERIAL_WAITING: usize = 1 << 20;
/// How long the publisher waits for a change before looking at the pointer mode again.
const PUBLISH_IDLE: Duration = Duration::from_millis(100);

/// What the process ends with: its exit status, as `vessel run`'s.
pub type ExitCode = i32;

/// A message for one client.
enum Outgoing {
    /// A reply, with the descriptor it carries.
    Reply { reply: Reply, fd: Option<OwnedFd> },
    /// The serial output waiting for the client (`Client::serial_waiting`), all of it as
    /// it is when this is sent.
    Serial,
}

impl Outgoing {
    fn reply(reply: Reply) -> Self {
        Outgoing::Reply { reply, fd: None }
    }
}

/// The guest's serial output waiting for one client. The guest writes a byte at a time:
/// what comes while a client's last piece waits in its queue joins that piece, so a client
/// that reads slowly for a moment gets fewer, larger messages instead of being dropped
/// when a thousand single bytes fill its queue.
#[derive(Default)]
struct SerialWaiting {
    bytes: Vec<u8>,
    /// An `Outgoing::Serial` is in the client's queue.
    queued: bool,
}

/// A client's queue, and what it asked to hear.
struct Client {
    id: u64,
    queue: SyncSender<Outgoing>,
    serial: bool,
    events: bool,
    /// It asked for the guest's debug-port bytes.
    debug: bool,
    /// It has a publisher of the display's frames.
    display: bool,
    /// Whether it is gone or dropped (its threads end), and its socket.
    leash: Arc<Leash>,
    /// Disconnects when the client's writer ended (everything queued was sent).
    ended: Receiver<()>,
    /// Its serial output not sent yet.
    serial_waiting: Arc<Mutex<SerialWaiting>>,
}

/// Whether a client is gone, and its socket to let go of one that lags.
struct Leash {
    gone: AtomicBool,
    socket: UnixStream,
}

impl Leash {
    fn is_gone(&self) -> bool {
        self.gone.load(Ordering::Relaxed)
    }

    /// Its threads end (a writer after what is queued).
    fn mark_gone(&self) {
        self.gone.store(true, Ordering::Relaxed);
    }

    /// A client that stopped reading: its threads end now, a writer blocked on the socket
    /// too, and the client sees its end.
    fn let_go(&self) {
        if !self.gone.swap(true, Ordering::Relaxed) {
            log::warn!("a client of the control socket stopped reading; dropped");
        }
        let _ = self.socket.shutdown(std::net::Shutdown::Both);
    }
}

/// A control request for the machine's thread: the client's id, the request, and the
/// descriptor that came with it (a `Migrate`'s connection).
type Control = (u64, Request, Option<OwnedFd>);

/// What every thread of the process shares.
struct Shared {
    clients: Mutex<Vec<Client>>,
    state: Mutex<VmState>,
    machine: Mutex<Option<MachineInfo>>,
    serial: Mutex<VecDeque<u8>>,
    /// Control requests for the machine's thread: (client id, request).
    control: Mutex<Option<Sender<Control>>>,
    /// The machine's display and input, once it is built.
    io: OnceLock<MachineIo>,
    next_id: AtomicU64,
    bundle: PathBuf,
    /// Set to cancel the live migration under way.
    cancel_migration: Mutex<Option<Arc<AtomicBool>>>,
    /// A migration told the other side to run the VM and heard no confirmation: the VM is
    /// paused here, its run lock let go; it resumes here only if the lock can be taken
    /// back (nobody runs it elsewhere).
    unconfirmed: AtomicBool,
}

impl Shared {
    /// A VM process's shared state, starting, for the VM in `bundle`.
    fn new(bundle: PathBuf) -> Arc<Shared> {
        Arc::new(Shared {
            clients: Mutex::new(Vec::new()),
            state: Mutex::new(VmState::Starting),
            machine: Mutex::new(None),
            serial: Mutex::new(VecDeque::new()),
            control: Mutex::new(None),
            io: OnceLock::new(),
            next_id: AtomicU64::new(1),
            bundle,
            cancel_migration: Mutex::new(None),
            unconfirmed: AtomicBool::new(false),
        })
    }

    fn set_state(&self, state: VmState) {
        *lock(&self.state) = state.clone();
        self.broadcast(|c| c.events, &Reply::StateChanged { state });
    }

    fn broadcast(&self, to: impl Fn(&Client) -> bool, reply: &Reply) {
        let mut clients = lock(&self.clients);
        clients.retain(|c| {
            if !to(c) {
                return !c.leash.is_gone();
            }
            c.queue_or_let_go(Outgoing::reply(reply.clone()))
        });
    }

    /// The guest's serial output `bytes`: kept for clients that subscribe later, and for
    /// every client that hears it. Under the clients' lock, as `subscribe` reads what was
    /// kept: a client subscribing meanwhile gets these bytes once, not twice.
    fn broadcast_serial(&self, bytes: &[u8]) {
        let mut clients = lock(&self.clients);
        {
            let mut backlog = lock(&self.serial);
            backlog.extend(bytes);
            let excess = backlog.len().saturating_sub(SERIAL_BACKLOG);
            backlog.drain(..excess);
        }
        clients.retain(|c| {
            if !c.serial {
                return !c.leash.is_gone();
            }
            let mut waiting = lock(&c.serial_waiting);
            if waiting.bytes.len() + bytes.len() > SERIAL_WAITING {
                drop(waiting);
                c.leash.let_go();
                return false;
            }
            waiting.bytes.extend_from_slice(bytes);
            if waiting.queued {
                return true;
            }
            waiting.queued = true;
            drop(waiting);
            c.queue_or_let_go(Outgoing::Serial)
        });
    }

    fn reply_to(&self, id: u64, reply: Reply) {
        let clients = lock(&self.clients);
        if let Some(c) = clients.iter().find(|c| c.id == id) {
            let _ = c.queue.try_send(Outgoing::reply(reply));
        }
    }
}

impl Client {
    /// Queues `message`; a client whose queue is full stopped reading and is let go. False
    /// when the client is gone.
    fn queue_or_let_go(&self, message: Outgoing) -> bool {
        match self.queue.try_send(message) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                self.leash.let_go();
                false
            }
            Err(TrySendError::Disconnected(_)) => false,
        }
    }
}

/// The connection the starter passed (`protocol::CONTROL_FD`), if there is one: a socket,
/// made close-on-exec at once so that no child of this process (passt) inherits it.
pub fn control_fd() -> Option<UnixStream> {
    use std::os::fd::{FromRawFd, OwnedFd};
    let fd = protocol::CONTROL_FD;
    // SAFETY: fstat writes into a stat struct we own; a closed fd just fails.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::fstat(fd, &mut st) } != 0 || st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return None;
    }
    // SAFETY: F_SETFD on an open descriptor.
    unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    // SAFETY: the starter gave this process the descriptor for this; nothing else owns it.
    Some(UnixStream::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// The sender's connection a VM process started with `--incoming` finds at
/// `protocol::MIGRATION_FD`, made close-on-exec at once.
pub fn migration_fd() -> Option<std::fs::File> {
    use std::os::fd::FromRawFd;
    let fd = protocol::MIGRATION_FD;
    // SAFETY: fstat writes into a stat struct we own; a closed fd just fails.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::fstat(fd, &mut st) } != 0 || st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return None;
    }
    // SAFETY: F_SETFD on an open descriptor.
    unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    // SAFETY: the starter gave this process the descriptor for this; nothing else owns it.
    Some(std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// Runs the VM in `root` (of the library in `library`) until it stops. `first` is a
/// client connected before this process started (the starter's end of a socket pair).
/// `sandboxed`: the process enters its sandbox (`sandbox`) before it starts any thread —
/// a VM process does; a VM run on a thread of another process (tests) cannot.
/// `incoming`: the VM comes by live migration over this connection, from the process
/// that runs it now, instead of being built here.
pub fn run(
    library: &Path,
    root: &Path,
    first: Option<UnixStream>,
    sandboxed: bool,
    incoming: Option<std::fs::File>,
) -> ExitCode {
    let shared = Shared::new(paths::canonical(root).unwrap_or_else(|_| root.to_path_buf()));
    let (control_tx, control_rx) = std::sync::mpsc::channel();
    *lock(&shared.control) = Some(control_tx);
    // Still one thread: everything that needs the world outside the sandbox happens now.
    let ready = prepare(library, root, sandboxed, incoming);
    if let Some(stream) = first {
        // The starter hears how the start goes from the first instant.
        serve_client(&shared, stream, true);
    }
    let code = match ready {
        Ok(ready) => run_machine(&shared, ready, &control_rx),
        Err(e) => fail(&shared, &e),
    };
    // Every client hears the end before this process goes: their queues close (the
    // publishers see them gone), each writer sends what is queued, then ends.
    *lock(&shared.control) = None;
    let clients: Vec<Client> = std::mem::take(&mut *lock(&shared.clients));
    let deadline = Instant::now() + Duration::from_secs(2);
    for client in clients {
        client.leash.mark_gone();
        drop(client.queue);
        let left = deadline.saturating_duration_since(Instant::now());
        let _ = client.ended.recv_timeout(left);
    }
    code
}

fn fail(shared: &Shared, error: &anyhow::Error) -> ExitCode {
    let text = format!("{error:#}");
    eprintln!("vessel: error: {text}");
    shared.set_state(VmState::Stopped { kind: StopKind::Failed, reason: Some(text) });
    crate::cli::headless::EXIT_VMM_ERROR
}

/// A VM ready to build: its run lock and machine configuration, its control socket.
struct Ready {
    bundle: Bundle,
    launch: launch::Launch,
    listener: UnixListener,
    /// Where the control socket is now, and where it goes once this process runs the VM
    /// (the same, unless the VM comes by live migration).
    socket: PathBuf,
    final_socket: PathBuf,
    /// The connection a live migration brings the VM over.
    incoming: Option<std::fs::File>,
    /// The helper outside the sandbox (a sandboxed VM process has one).
    helper: Option<super::helper::Helper>,
}

/// Takes the run lock, reads the configuration, binds the control socket and, if
/// `sandboxed`, starts the helper (passt; cleaning up after this process) and enters the
/// sandbox.
fn prepare(
    library: &Path,
    root: &Path,
    sandboxed: bool,
    incoming: Option<std::fs::File>,
) -> anyhow::Result<Ready> {
    use anyhow::Context;
    let lib = Library::open(library)?;
    // A VM that comes by live migration may come with its folder, arriving.
    let bundle = match incoming {
        Some(_) => Bundle::open_arriving(root)?,
        None => Bundle::open(root)?,
    };
    let launch = match incoming {
        // The VM runs in the sending process meanwhile, which has the lock (and the log).
        Some(_) => launch::prepare_incoming(&lib, &bundle)?,
        None => launch::prepare(&lib, &bundle)?,
    };
    if sandboxed && incoming.is_none() {
        // This run's log starts empty (its file is ours now: we hold the run lock).
        // SAFETY: fstat and ftruncate on stderr; only a regular file is cut.
        unsafe {
            let mut st: libc::stat = std::mem::zeroed();
            if libc::fstat(libc::STDERR_FILENO, &mut st) == 0
                && st.st_mode & libc::S_IFMT == libc::S_IFREG
            {
                libc::ftruncate(libc::STDERR_FILENO, 0);
            }
        }
    }
    let final_socket = paths::socket_for(root)?;
    // Under the run lock: nobody else serves this VM, so a socket there is a dead one's.
    // Receiving the VM, beside the sender's, under a name of this process's own.
    let socket = match incoming {
        Some(_) => {
            let name = final_socket.file_name().unwrap_or_default().to_string_lossy();
            final_socket.with_file_name(format!("{name}.incoming-{}", std::process::id()))
        }
        None => final_socket.clone(),
    };
    let listener = bind(&socket)?;
    let mut helper = None;
    if sandboxed {
        // Before the helper starts: it and passt belong to the same group.
        report_group(bundle.config.memory_mib);
        let nics: Vec<_> = (launch.config.devices.iter())
            .filter_map(|d| match d {
                vmm::DeviceConfig::Net { forwards, host_access, .. } => {
                    Some((&forwards[..], *host_access))
                }
                _ => None,
            })
            .collect();
        let started = super::helper::start(launch.lock.file(), &socket, &nics);
        helper = Some(started.context("cannot start the helper")?);
        let mut plan = super::sandbox::Plan::for_machine(bundle.root(), &launch.config, &socket);
        if incoming.is_some() {
            plan = plan.with_socket_moving();
        }
        let entered = super::sandbox::enter(&plan).context("cannot sandbox the VM process")?;
        if entered.landlock_enforced {
            log::info!("sandboxed; Landlock {}", entered.landlock);
        } else {
            log::warn!(
                "the VM's files are not confined: Landlock is {}; the system call filters are",
                entered.landlock
            );
        }
    }
    Ok(Ready { bundle, launch, listener, socket, final_socket, incoming, helper })
}

/// Says in the log which control group this process runs in, and its memory limit.
fn report_group(memory_mib: u64) {
    let placement = super::scope::Placement::of_this_process();
    match (placement.unit, placement.memory_limit) {
        (Some(unit), Some(limit)) => log::info!(
            "in scope {unit}; memory limit {} MiB: {memory_mib} MiB of guest RAM and {} MiB \
             for the VM process",
            limit >> 20,
            (limit >> 20).saturating_sub(memory_mib),
        ),
        (Some(unit), None) => log::warn!(
            "in scope {unit}, with no memory limit: the user session's systemd has no memory \
             controller to set one with"
        ),
        (None, _) => {
            let why = std::env::var(super::client::NO_SCOPE_ENV);
            let why = why.as_deref().unwrap_or("it was not started by Vessel's launcher");
            log::info!("no scope of its own, no memory limit: {why}");
        }
    }
}

fn run_machine(shared: &Arc<Shared>, ready: Ready, control: &Receiver<Control>) -> ExitCode {
    let Ready { bundle, launch, listener, socket, final_socket, incoming, helper } = ready;
    let ours = super::helper::socket_id(&socket);
    let sockets = (socket, final_socket);
    let code = build_and_serve(shared, bundle, launch, listener, &sockets, incoming, control);
    // The socket goes, then the helper and with it its hold on the run lock; this
    // process's hold went with `launch`. Clients hear the end after this: the VM can be
    // started again at once. Only this process's own socket: a VM that moved away by live
    // migration may have another's in its place already.
    for path in [&sockets.0, &sockets.1] {
        if ours.is_some() && super::helper::socket_id(path) == ours {
            let _ = std::fs::remove_file(path);
        }
    }
    if let Some(helper) = helper {
        helper.finish();
    }
    code
}

fn build_and_serve(
    shared: &Arc<Shared>,
    bundle: Bundle,
    launch: launch::Launch,
    listener: UnixListener,
    (socket, final_socket): &(PathBuf, PathBuf),
    incoming: Option<std::fs::File>,
    control: &Receiver<Control>,
) -> ExitCode {
    let running = Arc::new(Mutex::new(launch.lock));
    let firmware = matches!(launch.config.boot, vmm::Boot::Firmware(_));
    let root = bundle.root().to_path_buf();
    let received = incoming.is_some();
    let arriving = bundle.is_arriving();
    let built = match incoming {
        Some(conn) => receive(shared, conn, launch.config, &running, arriving).inspect(|_| {
            // A VM whose folder came with it is the library's now.
            if arriving && let Err(e) = bundle.arrived() {
                log::error!("cannot mark the VM as arrived: {e}");
            }
            // Clients find this process where they found the sender's. The machine runs
            // here now and the sender's has stopped: nothing undoes that, whatever this
            // does (clients can still reach it where it listens).
            if let Err(e) = std::fs::rename(socket, final_socket) {
                log::error!(
                    "cannot put the control socket in place ({e}); it stays at {}",
                    socket.display()
                );
            }
        }),
        None if suspend::is_suspended(&root) => resume(&root, launch.config),
        None => Machine::build(launch.config, None)
            .map_err(|e| anyhow::Error::new(e).context("cannot build the machine")),
    };
    let handle = match built {
        Ok(h) => h,
        Err(e) => return fail(shared, &e),
    };
    if let Err(e) = launch.one_time.used() {
        let text = format!("{}: {}", bundle.config.name, error_chain(&e));
        shared.broadcast(|c| c.events, &Reply::Warning { text });
    }
    // Input before the machine was built went nowhere; from now on it reaches the guest.
    let _ = shared.io.set((handle.display(), handle.input()));
    #[cfg(test)]
    testing::register(&shared.bundle, (handle.display(), handle.input()));
    let machine = MachineInfo {
        vcpus: bundle.config.vcpus,
        memory_mib: bundle.config.memory_mib,
        firmware,
        pid: std::process::id(),
    };
    *lock(&shared.machine) = Some(machine.clone());
    shared.broadcast(|c| c.events, &Reply::Built { machine });
    let accept = {
        let shared = shared.clone();
        std::thread::Builder::new().name("vessel-accept".into()).spawn(move || {
            vmm::seccomp::confine_this_thread(ThreadKind::Control);
            for stream in listener.incoming() {
                match stream {
                    Ok(s) => serve_client(&shared, s, false),
                    Err(e) => log::warn!("control socket: {e}"),
                }
            }
        })
    };
    if let Err(e) = accept {
        return fail(shared, &anyhow::Error::new(e).context("cannot serve the control socket"));
    }
    // A machine that came by live migration runs already.
    if !received && let Err(e) = handle.start() {
        return fail(shared, &anyhow::Error::new(e).context("cannot start the machine"));
    }
    serve_machine(shared, &handle, control, &running)
}

/// Takes the VM that comes over `conn` by live migration (its machine `config`), taking
/// its run lock as the sender lets it go; running when this returns.
fn receive(
    shared: &Arc<Shared>,
    mut conn: std::fs::File,
    config: vmm::MachineConfig,
    running: &Arc<Mutex<vm_library::bundle::RunLock>>,
    arriving: bool,
) -> anyhow::Result<MachineHandle> {
    let options = vmm::migration::ReceiveOptions {
        hide_cpu_features: hidden_cpu_features(),
        // The VM's folder came with the migration: its disks come too.
        copy_disks: arriving,
    };
    let progress = |r: vmm::migration::Received| {
        let reply = Reply::Migrating {
            phase: "receiving".into(),
            pass: r.passes,
            sent: r.bytes,
            remaining: 0,
            dirty_rate: 0,
            bandwidth: 0,
            downtime_estimate_ms: 0,
        };
        shared.broadcast(|c| c.events, &reply);
    };
    let mut take_lock = || {
        lock(running)
            .take(Duration::from_secs(10))
            .map_err(|e| format!("cannot take over the VM's run lock: {e}"))
    };
    let handle =
        vmm::migration::receive_with(config, None, &mut conn, &options, &progress, &mut take_lock)
            .map_err(|e| anyhow::anyhow!("{}", error_chain(&e)))?;
    log::info!("received by live migration; running");
    Ok(handle)
}

/// CPU features to count as missing here (`VESSEL_HIDE_CPU_FEATURES`, comma-separated
/// Linux names): keeps a VM movable to an older host, and lets the tests see a refusal.
fn hidden_cpu_features() -> Vec<String> {
    std::env::var("VESSEL_HIDE_CPU_FEATURES")
        .map(|v| v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect())
        .unwrap_or_default()
}

/// The machine of the suspended VM in `root`, where it was; its suspended state then goes
/// (its memory stays mapped until the machine ends). A state it cannot take is kept, and
/// the error says how to boot the VM afresh instead.
fn resume(root: &Path, config: vmm::MachineConfig) -> anyhow::Result<MachineHandle> {
    use anyhow::Context;
    // A bundle's files are not trusted: each must be a regular file inside the VM's folder
    // (no symlink out of it, no FIFO to hang on).
    let open = |path: PathBuf| {
        let name = path.file_name().map(PathBuf::from).unwrap_or_default();
        let inside = vm_library::files::inside(root, &name)?;
        vm_library::files::open_regular(&inside, false)
            .with_context(|| format!("cannot open {}", path.display()))
    };
    let state = open(suspend::state_path(root))?;
    let memory = open(suspend::memory_path(root))?;
    let handle = Machine::restore(config, None, &state, &memory).with_context(|| {
        format!(
            "cannot resume the suspended VM; `vessel discard-state` boots it afresh instead \
             (what it was doing is lost; its files: {} and {})",
            suspend::state_path(root).display(),
            suspend::memory_path(root).display()
        )
    })?;
    if let Err(e) = suspend::discard(root) {
        log::warn!("resumed, but its suspended state stays: {e}");
    }
    log::info!("resumed from its suspended state");
    Ok(handle)
}

/// Saves the machine's state and memory in the VM's folder (written beside, then put in
/// place, the state file last), pausing it first; the caller then powers it off. A
/// machine that ran is running again if the save fails.
fn suspend_machine(handle: &MachineHandle, shared: &Arc<Shared>) -> anyhow::Result<()> {
    use anyhow::Context;
    let root = shared.bundle.as_path();
    let was_running = matches!(handle.state(), MachineState::Running);
    if was_running {
        handle.pause()?;
    }
    let saved = (|| -> anyhow::Result<()> {
        // Guest memory: private to this user (0600), created anew, never written through a
        // symlink planted under its name (one left there is removed, not followed).
        let create = |path: &Path| {
            match std::fs::remove_file(path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => vm_library::files::create_private(path),
            }
            .with_context(|| format!("cannot create {}", path.display()))
        };
        let (state_path, memory_path) = (suspend::state_path(root), suspend::memory_path(root));
        let (state_new, memory_new) =
            (suspend::pending(&state_path), suspend::pending(&memory_path));
        let (state, memory) = (create(&state_new)?, create(&memory_new)?);
        // How far the memory is, to the windows watching (a percent at a time).
        let watching = shared.clone();
        let told = std::sync::atomic::AtomicU64::new(u64::MAX);
        let progress = move |done: u64, total: u64| {
            let percent = done.saturating_mul(100) / total.max(1);
            if told.swap(percent, std::sync::atomic::Ordering::Relaxed) != percent {
                watching.broadcast(|c| c.events, &Reply::Saving { done, total });
            }
        };
        handle.save_state_with(state.try_clone()?, memory.try_clone()?, progress)?;
        // On disk before either is put in place: a crash leaves a whole state or none.
        memory.sync_all()?;
        state.sync_all()?;
        std::fs::rename(&memory_new, &memory_path)?;
        std::fs::rename(&state_new, &state_path)?;
        std::fs::File::open(root)?.sync_all()?;
        Ok(())
    })();
    if let Err(e) = saved {
        let _ = suspend::discard(root);
        if was_running {
            let _ = handle.resume();
        }
        return Err(e.context("cannot suspend the VM"));
    }
    Ok(())
}

/// `Request::FreezeDisks`: the guest's pause (it runs on after), or what went wrong.
///
/// The configuration naming the overlays is written first: should this process end at
/// any point after, the VM's folder names images that read as the guest's disks do (the
/// overlays are empty until the machine writes them, and read through the images it
/// wrote). What the guest wrote is made durable before it pauses, so the pause itself
/// flushes little.
fn freeze_disks(
    handle: &MachineHandle,
    shared: &Arc<Shared>,
    overlays: &[PathBuf],
) -> anyhow::Result<Duration> {
    use anyhow::Context;
    let root = shared.bundle.as_path();
    let mut before = Bundle::open(root)?;
    if overlays.len() != before.config.disks.len() {
        anyhow::bail!(
            "{} overlays for the VM's {} disks",
            overlays.len(),
            before.config.disks.len()
        );
    }
    // Inside the VM's folder, regular files the client made.
    let mut paths = Vec::new();
    for overlay in overlays {
        let path = before.inside(overlay)?;
        vm_library::files::open_regular(&path, false)
            .with_context(|| format!("cannot open the overlay {}", path.display()))?;
        paths.push(Some(path));
    }
    let mut after = before.clone();
    for (disk, overlay) in after.config.disks.iter_mut().zip(overlays) {
        disk.file = overlay.clone();
        disk.format = vm_library::config::DiskFormat::Qcow2;
    }
    handle.flush_disks()?;
    after.save()?;
    let was_running = matches!(handle.state(), MachineState::Running);
    let paused = Instant::now();
    let switched =
        if was_running { handle.pause() } else { Ok(()) }.and_then(|()| handle.switch_disks(paths));
    let pause = paused.elapsed();
    if was_running && let Err(e) = handle.resume() {
        log::warn!("the guest did not resume after its disks were frozen: {e}");
    }
    if let Err(e) = switched {
        if let Err(undo) = before.save() {
            log::error!("cannot put the VM's configuration back after a failed freeze: {undo}");
        }
        return Err(anyhow::Error::from(e).context("cannot freeze the VM's disks"));
    }
    log::info!("froze the disks on {} overlays; the guest paused {pause:?}", overlays.len());
    Ok(pause)
}

/// Binds the VM's control socket (mode 0600) at `path`.
fn bind(path: &Path) -> anyhow::Result<UnixListener> {
    use anyhow::Context;
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot remove {}", path.display())),
    }
    let listener = UnixListener::bind(path)
        .with_context(|| format!("cannot make the control socket {}", path.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot restrict {}", path.display()))?;
    Ok(listener)
}

type MachineIo = (Display, InputSink);

/// Until the machine stops: its events to clients, clients' control requests to it.
fn serve_machine(
    shared: &Arc<Shared>,
    handle: &MachineHandle,
    control: &Receiver<Control>,
    running: &Arc<Mutex<vm_library::bundle::RunLock>>,
) -> ExitCode {
    let mut next_usage = Instant::now() + Duration::from_secs(1);
    // A client powered it off: "quit", not the guest's own power-off.
    let mut forced = false;
    // Its state was saved before that power-off: the VM is suspended.
    let mut suspended = false;
    // Whether the start-up's pages were let go of.
    let mut settled = false;
    loop {
        if let Some(signal) = crate::cli::headless::take_stop_signal() {
            // Someone signalled the VM process (a system shutting down; `vessel-vm`
            // catches these): SIGTERM presses the power button, SIGUSR1 powers off.
            let _ = if signal == libc::SIGTERM {
                handle.request_shutdown()
            } else {
                handle.power_off()
            };
            forced |= signal != libc::SIGTERM;
        }
        match handle.events().recv_timeout(POLL) {
            Ok(Event::StateChanged(MachineState::Running)) => shared.set_state(VmState::Running),
            Ok(Event::StateChanged(MachineState::Paused)) => shared.set_state(VmState::Paused),
            Ok(Event::StateChanged(MachineState::Stopped(reason))) => {
                let code = match reason {
                    StopReason::PoweredOff if forced => crate::cli::headless::EXIT_QUIT,
                    _ => crate::cli::headless::Outcome::Stopped(reason.clone()).exit_code(),
                };
                let (kind, reason) = match reason {
                    StopReason::PoweredOff if suspended => (StopKind::Suspended, None),
                    StopReason::PoweredOff if forced => (StopKind::ForcedOff, None),
                    StopReason::PoweredOff => (StopKind::PoweredOff, None),
                    StopReason::Reset => (StopKind::Rebooted, None),
                    StopReason::Crashed(report) => (StopKind::Crashed, Some(crash_reason(&report))),
                    StopReason::Error(message) => (StopKind::Failed, Some(message)),
                    StopReason::Migrated => (StopKind::Migrated, None),
                };
                if kind == StopKind::Migrated {
                    // The client that asked hears the figures before this process ends.
                    let deadline = Instant::now() + Duration::from_secs(5);
                    while lock(&shared.cancel_migration).is_some() && Instant::now() < deadline {
                        std::thread::sleep(POLL);
                    }
                }
                shared.set_state(VmState::Stopped { kind, reason });
                return code;
            }
            Ok(Event::Serial(bytes)) => shared.broadcast_serial(&bytes),
            Ok(Event::Warning(text)) => shared.broadcast(|c| c.events, &Reply::Warning { text }),
            Ok(Event::DebugMarker { code, since_build }) => {
                // The marker's time on the clock every process shares.
                let ago = Instant::now().saturating_duration_since(handle.built_at() + since_build);
                let monotonic_ns = protocol::monotonic_ns().saturating_sub(ago.as_nanos() as u64);
                shared.broadcast(|c| c.debug, &Reply::DebugMarker { code, monotonic_ns });
            }
            Ok(_) => {}
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                let reason = "the machine's controller went away".to_string();
                shared.set_state(VmState::Stopped { kind: StopKind::Failed, reason: Some(reason) });
                return crate::cli::headless::EXIT_VMM_ERROR;
            }
        }
        while let Ok((client, request, fd)) = control.try_recv() {
            if let Request::Migrate { downtime_ms, max_passes, cancel_at_limit, copy_disks } =
                request
            {
                let how = (downtime_ms, max_passes, cancel_at_limit, copy_disks);
                migrate(handle, shared, client, fd, how, running);
                continue;
            }
            forced |= request == Request::PowerOff;
            if request == Request::Suspend {
                let reply = match suspend_machine(handle, shared) {
                    Ok(()) => {
                        suspended = true;
                        let _ = handle.power_off();
                        Reply::Done
                    }
                    Err(e) => Reply::Failed { error: format!("{e:#}") },
                };
                shared.reply_to(client, reply);
                continue;
            }
            if let Request::FreezeDisks { overlays } = request {
                let reply = match freeze_disks(handle, shared, &overlays) {
                    Ok(paused) => Reply::Frozen { paused_us: paused.as_micros() as u64 },
                    Err(e) => Reply::Failed { error: format!("{e:#}") },
                };
                shared.reply_to(client, reply);
                continue;
            }
            if request == Request::Resume && shared.unconfirmed.load(Ordering::Relaxed) {
                shared.reply_to(client, take_back(handle, shared, running));
                continue;
            }
            let reply = match control_request(handle, shared, request) {
                Ok(reply) => reply,
                Err(e) => Reply::Failed { error: error_chain(&e) },
            };
            shared.reply_to(client, reply);
        }
        if Instant::now() >= next_usage {
            next_usage += Duration::from_secs(1);
            if !settled && *lock(&shared.state) == VmState::Running {
                // A second into the guest's run: the start-up is done.
                settled = true;
                let released = super::footprint::let_go_of_start_up_pages();
                log::info!("let go of the start-up's pages ({} KiB of mappings)", released >> 10);
            }
            shared.broadcast(|c| c.events, &Reply::Usage(usage(handle)));
        }
    }
}

/// Starts moving the machine over `fd` (a connection to the receiving Vessel) on a thread of
/// its own; `client` hears the outcome, subscribers the progress. The machine's events go
/// on being served meanwhile: on success it stops (`Migrated`) and this process ends.
fn migrate(
    handle: &MachineHandle,
    shared: &Arc<Shared>,
    client: u64,
    fd: Option<OwnedFd>,
    (downtime_ms, max_passes, cancel_at_limit, copy_disks): (u64, u32, bool, bool),
    running: &Arc<Mutex<vm_library::bundle::RunLock>>,
) {
    let Some(fd) = fd else {
        let error = "the request came without its connection".to_string();
        return shared.reply_to(client, Reply::Failed { error });
    };
    let cancel = Arc::new(AtomicBool::new(false));
    {
        let mut under_way = lock(&shared.cancel_migration);
        if under_way.is_some() {
            let error = "a migration of this VM is under way".to_string();
            return shared.reply_to(client, Reply::Failed { error });
        }
        *under_way = Some(cancel.clone());
    }
    let options = vmm::migration::MigrateOptions {
        downtime: Duration::from_millis(downtime_ms),
        max_passes: max_passes.max(1),
        on_limit: if cancel_at_limit {
            vmm::migration::OnLimit::Cancel
        } else {
            vmm::migration::OnLimit::Complete
        },
        cancel,
        copy_disks,
        // The run lock goes with the disks' at the switch-over: the receiving VM process
        // (of this library, on shared storage) takes it.
        hand_over: Some(vmm::migration::HandOver({
            let running = running.clone();
            Arc::new(move |release| {
                let mut lock = lock(&running);
                let done =
                    if release { lock.release() } else { lock.take(Duration::from_secs(10)) };
                done.map_err(|e| format!("the VM's run lock: {e}"))
            })
        })),
        ..Default::default()
    };
    let migrator = handle.migrator();
    let watching = shared.clone();
    let spawned = std::thread::Builder::new().name("vessel-migration".into()).spawn(move || {
        // The machine's controller's filters, not a client's: a thread's filters bind the
        // threads it starts, and the one that moves the memory reads KVM's dirty log.
        vmm::seccomp::confine_this_thread(ThreadKind::Controller);
        // A socket read and written as a file: read(2) and write(2), which every thread
        // of the sandbox may make.
        let mut conn = std::fs::File::from(fd);
        let progress = |p: &vmm::migration::Progress| {
            let phase = match p.phase {
                vmm::migration::Phase::Copying => "copying",
                vmm::migration::Phase::Stopping => "stopping",
                vmm::migration::Phase::HandingOver => "handing over",
            };
            let reply = Reply::Migrating {
                phase: phase.into(),
                pass: p.pass,
                sent: p.sent,
                remaining: p.remaining,
                dirty_rate: p.dirty_rate,
                bandwidth: p.bandwidth,
                downtime_estimate_ms: p.downtime_estimate.as_millis() as u64,
            };
            watching.broadcast(|c| c.events, &reply);
        };
        let reply = match migrator.migrate(&mut conn, &options, progress) {
            Ok(m) => {
                log::info!("moved to another Vessel: {m:?}");
                Reply::Migrated {
                    passes: m.passes,
                    memory_bytes: m.memory_bytes,
                    disk_bytes: m.disk_bytes,
                    total_ms: m.total.as_millis() as u64,
                    downtime_ms: m.downtime.as_millis() as u64,
                    converged: m.converged,
                }
            }
            Err(e) => {
                log::warn!("the migration failed: {e}");
                if !e.source_runs_on() {
                    watching.unconfirmed.store(true, Ordering::Relaxed);
                }
                let mut error = error_chain(&e);
                if e.source_runs_on() && !error.contains("runs on here") {
                    error.push_str("; the VM runs on here");
                }
                Reply::Failed { error }
            }
        };
        *lock(&watching.cancel_migration) = None;
        watching.reply_to(client, reply);
    });
    if let Err(e) = spawned {
        *lock(&shared.cancel_migration) = None;
        shared.reply_to(client, Reply::Failed { error: format!("cannot start a thread: {e}") });
    }
}

/// Resumes here a VM whose migration was not confirmed, if nobody runs it elsewhere: its
/// run lock (which the other side takes as it runs it) and its disks' locks are taken back
/// first, or it stays paused.
fn take_back(
    handle: &MachineHandle,
    shared: &Shared,
    running: &Arc<Mutex<vm_library::bundle::RunLock>>,
) -> Reply {
    if let Err(e) = lock(running).take(Duration::ZERO) {
        let error = format!(
            "the VM cannot be taken back from its migration: {e}; it runs on the other Vessel \
             (power this copy off)"
        );
        return Reply::Failed { error };
    }
    match handle.resume() {
        Ok(()) => {
            shared.unconfirmed.store(false, Ordering::Relaxed);
            Reply::Done
        }
        Err(e) => {
            if let Err(e) = lock(running).release() {
                log::error!("cannot let the run lock go again: {e}");
            }
            Reply::Failed { error: error_chain(&e) }
        }
    }
}

fn control_request(
    handle: &MachineHandle,
    shared: &Shared,
    request: Request,
) -> Result<Reply, vmm::MachineError> {
    match request {
        Request::Shutdown => handle.request_shutdown()?,
        Request::PowerOff => handle.power_off()?,
        Request::Reset => handle.reset()?,
        Request::Pause => handle.pause()?,
        Request::Resume => handle.resume()?,
        Request::InsertCd { iso } => {
            handle.insert_cd(&iso)?;
            shared.broadcast(|c| c.events, &Reply::CdInserted { iso });
        }
        Request::EjectCd { force } => handle.eject_cd(force)?,
        Request::SerialInput { bytes } => handle.send_serial(&bytes)?,
        _ => {}
    }
    Ok(Reply::Done)
}

/// The machine's resource use, and this process's memory beyond the guest's.
fn usage(handle: &MachineHandle) -> Usage {
    let u = handle.usage();
    let rss = ProcessRss::read().unwrap_or_default();
    Usage {
        vcpu_time_ns: u.vcpu_time.as_nanos().min(u128::from(u64::MAX)) as u64,
        memory_resident: u.memory_resident,
        disk_activity: u.disk_activity,
        net_activity: u.net_activity,
        process_overhead: (rss.anonymous + rss.file + rss.shmem).saturating_sub(u.memory_resident),
        process_shared: rss.file,
    }
}

/// This process's resident memory, in bytes, by kind (`/proc/self/status`).
#[derive(Debug, Default)]
pub struct ProcessRss {
    /// Anonymous: heap, stacks, guest RAM.
    pub anonymous: u64,
    /// Mapped from files: code and data of the binary and libraries.
    pub file: u64,
    /// Shared memory: the frames' memfds.
    pub shmem: u64,
}

impl ProcessRss {
    pub fn read() -> Option<ProcessRss> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let field = |name: &str| -> Option<u64> {
            let line = status.lines().find_map(|l| l.strip_prefix(name))?;
            let kib: u64 = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
            Some(kib * 1024)
        };
        Some(ProcessRss {
            anonymous: field("RssAnon:")?,
            file: field("RssFile:")?,
            shmem: field("RssShmem:")?,
        })
    }
}

/// Serves one client on threads of its own; `events`: it hears state changes before it
/// subscribes (the starter).
fn serve_client(shared: &Arc<Shared>, stream: UnixStream, events: bool) {
    let (queue, outgoing) = std::sync::mpsc::sync_channel::<Outgoing>(CLIENT_QUEUE);
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let (Ok(mut write_half), Ok(socket)) = (stream.try_clone(), stream.try_clone()) else {
        return;
    };
    let leash = Arc::new(Leash { gone: AtomicBool::new(false), socket });
    let (ended_tx, ended) = std::sync::mpsc::channel::<()>();
    let writer_leash = leash.clone();
    let serial_waiting = Arc::new(Mutex::new(SerialWaiting::default()));
    let writer_waiting = serial_waiting.clone();
    let hello = Hello::ours(Some(shared.bundle.clone()));
    let writer = std::thread::Builder::new().name("vessel-client-out".into()).spawn(move || {
        vmm::seccomp::confine_this_thread(ThreadKind::Control);
        let _ended = ended_tx;
        // Our Hello goes first, before anything queued.
        if protocol::send(&mut write_half, &hello).is_err() {
            writer_leash.mark_gone();
            return;
        }
        while let Ok(message) = outgoing.recv() {
            let sent = match message {
                Outgoing::Reply { reply, fd } => {
                    wire::send_with_fd(&mut write_half, &reply, fd.as_ref())
                }
                Outgoing::Serial => {
                    let bytes = {
                        let mut waiting = lock(&writer_waiting);
                        waiting.queued = false;
                        std::mem::take(&mut waiting.bytes)
                    };
                    // In pieces well inside a frame's limit (JSON spells a byte in up to 4).
                    bytes.chunks(SERIAL_PIECE).try_for_each(|piece| {
                        protocol::send(&mut write_half, &Reply::Serial { bytes: piece.to_vec() })
                    })
                }
            };
            if sent.is_err() {
                break;
            }
        }
        writer_leash.mark_gone();
        let _ = write_half.flush();
        let _ = write_half.shutdown(std::net::Shutdown::Both);
    });
    if writer.is_err() {
        return;
    }
    lock(&shared.clients).push(Client {
        id,
        queue,
        serial: false,
        events,
        debug: false,
        display: false,
        leash: leash.clone(),
        ended,
        serial_waiting,
    });
    let reader_shared = shared.clone();
    let spawned = std::thread::Builder::new().name("vessel-client-in".into()).spawn(move || {
        vmm::seccomp::confine_this_thread(ThreadKind::Control);
        // It carries keys and the pointer: it gets the CPU soon after it wakes.
        vmm::sched::prefer_short_slices();
        if let Err(e) = read_client(&reader_shared, stream, id, &leash) {
            log::info!("a control client went away: {e}");
        }
        leash.mark_gone();
    });
    if spawned.is_err() {
        lock(&shared.clients).retain(|c| c.id != id);
    }
}

/// A client's requests until it hangs up.
fn read_client(
    shared: &Arc<Shared>,
    stream: UnixStream,
    id: u64,
    leash: &Arc<Leash>,
) -> Result<(), ProtocolError> {
    // Descriptors come only with a disc put in (the client opened it: this process may not);
    // the reader refuses a client that sends more than it takes.
    let mut stream = wire::FrameReader::new(stream);
    let theirs: Hello = stream.receive()?.ok_or(ProtocolError::Truncated)?;
    if theirs.protocol != protocol::PROTOCOL_VERSION {
        return Err(ProtocolError::Version {
            theirs: theirs.protocol,
            their_vessel: theirs.vessel,
            ours: protocol::PROTOCOL_VERSION,
        });
    }
    let io = || shared.io.get();
    while let Some(request) = stream.receive::<Request>()? {
        // Input and resizes go straight to the machine (nowhere before it is built).
        let Some(request) = feed(io(), request) else { continue };
        match request {
            Request::Subscribe { serial, display, debug } => {
                subscribe(shared, id, serial, debug);
                // One publisher a client, however often it subscribes.
                let queue = lock(&shared.clients)
                    .iter_mut()
                    .find(|c| c.id == id && display && !c.display)
                    .map(|c| {
                        c.display = true;
                        c.queue.clone()
                    });
                if let Some(queue) = queue {
                    let (shared, leash) = (shared.clone(), leash.clone());
                    std::thread::Builder::new()
                        .name("vessel-publish".into())
                        .spawn(move || {
                            vmm::seccomp::confine_this_thread(ThreadKind::Control);
                            // A client of the starter may ask before the machine is built.
                            while shared.io.get().is_none() {
                                let stopped =
                                    matches!(*lock(&shared.state), VmState::Stopped { .. });
                                if stopped || leash.is_gone() {
                                    return;
                                }
                                std::thread::sleep(Duration::from_millis(20));
                            }
                            if let Some((display, input)) = shared.io.get() {
                                publish(display, input, &queue, &leash);
                            }
                        })
                        .map_err(ProtocolError::Io)?;
                }
            }
            Request::Status => {
                let state = lock(&shared.state).clone();
                let machine = lock(&shared.machine).clone();
                shared.reply_to(id, Reply::Status { state, machine });
            }
            Request::CancelMigration => {
                let cancel = lock(&shared.cancel_migration).clone();
                let reply = match cancel {
                    Some(flag) => {
                        flag.store(true, Ordering::Relaxed);
                        Reply::Done
                    }
                    None => Reply::Failed { error: "no migration is under way".into() },
                };
                shared.reply_to(id, reply);
            }
            control => {
                if let Request::InsertCd { iso } = &control
                    && let Some(disc) = stream.take_fd()
                {
                    vmm::devices::storage::hand_over_disc(iso.clone(), disc.into());
                }
                let fd = if matches!(control, Request::Migrate { .. }) {
                    stream.take_fd()
                } else {
                    None
                };
                let sent = lock(&shared.control)
                    .as_ref()
                    .is_some_and(|tx| tx.send((id, control, fd)).is_ok());
                if !sent {
                    let error = "the VM is not running".to_string();
                    shared.reply_to(id, Reply::Failed { error });
                }
            }
        }
    }
    Ok(())
}

/// Carries out `request` if it is input or a resize (on the machine's `io`, if built);
/// hands any other request back.
fn feed(io: Option<&MachineIo>, request: Request) -> Option<Request> {
    let input = io.map(|(_, input)| input);
    match request {
        Request::Key { code, down } => input.map(|i| i.key(code, down)),
        Request::ReleaseKeys => input.map(InputSink::release_all_keys),
        Request::PointerAbs { x, y } => input.map(|i| i.pointer_abs(x, y)),
        Request::PointerRel { dx, dy } => input.map(|i| i.pointer_rel(dx, dy)),
        Request::Button { code, down } => {
            vmm::Button::from_code(code).and_then(|button| input.map(|i| i.button(button, down)))
        }
        Request::Wheel { dx, dy } => input.map(|i| i.wheel(dx, dy)),
        Request::Resize { width, height } => {
            io.map(|(display, _)| display.request_resize(width, height))
        }
        other => return Some(other),
    };
    None
}

/// Registers the client for events, with the serial output so far first.
fn subscribe(shared: &Shared, id: u64, serial: bool, debug: bool) {
    let mut clients = lock(&shared.clients);
    // Under the clients' lock: no event slips between the snapshot and the registration.
    let Some(client) = clients.iter_mut().find(|c| c.id == id) else { return };
    let state = lock(&shared.state).clone();
    let machine = lock(&shared.machine).clone();
    let mut first = Vec::new();
    if let Some(machine) = machine {
        first.push(Reply::Built { machine });
    }
    first.push(Reply::StateChanged { state });
    if serial && !client.serial {
        let backlog: Vec<u8> = lock(&shared.serial).iter().copied().collect();
        for piece in backlog.chunks(SERIAL_PIECE) {
            first.push(Reply::Serial { bytes: piece.to_vec() });
        }
    }
    for reply in first {
        let _ = client.queue.try_send(Outgoing::reply(reply));
    }
    client.events = true;
    client.serial |= serial;
    client.debug |= debug;
}

/// Sends the display's frames (memory once per scanout, then damage), cursor and pointer
/// mode to one client until it is gone; a client this far behind (`CLIENT_QUEUE`) is let
/// go, never waited for.
fn publish(display: &Display, input: &InputSink, queue: &SyncSender<Outgoing>, leash: &Leash) {
    let (mut changes, mut since, mut scanout) = (0u64, 0u64, 0u64);
    let mut cursor_image = u64::MAX;
    let mut cursor_at = None;
    let mut absolute = None;
    let send =
        |reply: Reply, fd: Option<OwnedFd>| match queue.try_send(Outgoing::Reply { reply, fd }) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                leash.let_go();
                false
            }
            Err(TrySendError::Disconnected(_)) => false,
        };
    while !leash.is_gone() {
        changes = display.wait_for_any_change(changes, PUBLISH_IDLE);
        match display.export(since, scanout) {
            Some(export) => {
                let new_memory = export.memory.is_some();
                let damage = match &export.damage {
                    Damage::None if !new_memory => None,
                    Damage::Rects(rects) if !new_memory => {
                        Some(Some(rects.iter().map(|r| (r.x, r.y, r.width, r.height)).collect()))
                    }
                    _ => Some(None),
                };
                if let Some(damage) = damage {
                    let l = export.layout;
                    let layout = Layout {
                        width: l.width,
                        height: l.height,
                        stride: l.stride,
                        offset: l.offset,
                        format: format!("{:?}", l.format),
                    };
                    let reply = Reply::Frame { layout, new_memory, damage, drawn: export.drawn };
                    if !send(reply, export.memory) {
                        return;
                    }
                }
                since = export.generation;
                scanout = export.scanout;
            }
            None if scanout != 0 => {
                scanout = 0;
                if !send(Reply::NoFrame, None) {
                    return;
                }
            }
            None => {}
        }
        let cursor = display.cursor();
        if cursor.image_generation != cursor_image {
            cursor_image = cursor.image_generation;
            let image = cursor
                .image
                .as_ref()
                .map(|i| (i.width, i.height, i.hot_x, i.hot_y, i.rgba.clone()));
            if !send(Reply::CursorImage { image }, None) {
                return;
            }
        }
        if cursor_at != Some((cursor.x, cursor.y)) {
            cursor_at = Some((cursor.x, cursor.y));
            if !send(Reply::CursorMoved { x: cursor.x, y: cursor.y }, None) {
                return;
            }
        }
        let now = input.pointer_is_absolute();
        if absolute != Some(now) {
            absolute = Some(now);
            if !send(Reply::Pointer { absolute: now }, None) {
                return;
            }
        }
    }
}

/// The machines of VM processes run as threads of this process (`Launcher::InProcess`),
/// by VM folder, for tests that look inside them (what reached the guest's devices).
#[cfg(test)]
pub mod testing {
    use super::*;

    static MACHINES: Mutex<Vec<(PathBuf, MachineIo)>> = Mutex::new(Vec::new());

    pub(super) fn register(bundle: &Path, io: MachineIo) {
        let mut machines = lock(&MACHINES);
        machines.retain(|(b, _)| b != bundle);
        machines.push((bundle.to_path_buf(), io));
    }

    /// The display and input of the machine last started for the VM in `root`.
    pub fn machine_io(root: &Path) -> MachineIo {
        let bundle = paths::canonical(root).unwrap();
        let machines = lock(&MACHINES);
        machines.iter().rev().find(|(b, _)| *b == bundle).map(|(_, io)| io.clone()).unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared() -> Arc<Shared> {
        Shared::new(PathBuf::from("/nowhere"))
    }

    /// A client served by `shared`, greeted and subscribed to the serial output; its end.
    fn serial_client(shared: &Arc<Shared>) -> UnixStream {
        let (mut ours, theirs) = UnixStream::pair().unwrap();
        serve_client(shared, theirs, false);
        let _: Hello = protocol::receive(&mut ours).unwrap().unwrap();
        protocol::send(&mut ours, &Hello::ours(None)).unwrap();
        let id = lock(&shared.clients).last().unwrap().id;
        subscribe(shared, id, true, false);
        ours
    }

    /// Serial bytes the client reads until it has `want` of them; and in how many messages.
    fn read_serial(stream: &mut UnixStream, want: usize) -> (Vec<u8>, usize) {
        let (mut bytes, mut messages) = (Vec::new(), 0);
        while bytes.len() < want {
            let reply = protocol::receive::<Reply>(stream).unwrap().expect("the client is served");
            if let Reply::Serial { bytes: piece } = reply {
                bytes.extend(piece);
                messages += 1;
            }
        }
        (bytes, messages)
    }

    #[test]
    fn serial_output_waits_for_a_slow_client_in_larger_pieces_up_to_a_bound() {
        let shared = shared();
        let mut slow = serial_client(&shared);
        // The guest writes a byte at a time, far more bytes than the client's queue holds
        // messages, while the client reads nothing: it is kept, and what waits for it joins.
        let written: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        for byte in &written {
            shared.broadcast_serial(std::slice::from_ref(byte));
        }
        assert_eq!(lock(&shared.clients).len(), 1, "the slow client was dropped");
        let (read, messages) = read_serial(&mut slow, written.len());
        assert!(read == written, "every byte, in order");
        assert!(messages < written.len() / 4, "{messages} messages for {} bytes", written.len());

        drop(slow);

        // A client that reads nothing while more than SERIAL_WAITING comes is let go: it
        // sees its end after what was sent.
        let shared = self::shared();
        let mut stalled = serial_client(&shared);
        let line = vec![b'x'; 4096];
        for _ in 0..SERIAL_WAITING * 2 / line.len() {
            shared.broadcast_serial(&line);
        }
        assert!(lock(&shared.clients).is_empty(), "the stalled client is kept");
        let _ = stalled.set_read_timeout(Some(Duration::from_secs(10)));
        while let Ok(Some(_)) = protocol::receive::<Reply>(&mut stalled) {}
    }

    #[test]
    fn resident_memory_adds_up_by_kind() {
        let rss = ProcessRss::read().expect("/proc/self/status has RssAnon, RssFile, RssShmem");
        assert!(rss.anonymous > 0 && rss.file > 0, "{rss:?}");
        // The kinds add up to the whole (statm's resident pages), give or take what the
        // process touched between the two reads.
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
        let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
        let whole = pages * 4096;
        let sum = rss.anonymous + rss.file + rss.shmem;
        assert!(sum.abs_diff(whole) < 4 << 20, "{rss:?} against {whole}");
    }
}
