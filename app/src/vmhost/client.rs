//! The clients' side of a VM process: starting one (`launch`), reaching a running one
//! (`connect`), one request and its answer (`request`), and the window's live view of one
//! (`Input`, and `mirror` for its display, see `ui::session`).

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};

use super::paths::{self, PathsError};
use super::protocol::{self, CONTROL_FD, Hello, ProtocolError, Reply, Request};
use super::scope::Scope;

/// The VM process's log, in the VM's folder: what it said on stderr, for a crash report.
pub const LOG_FILE: &str = "vessel.log";

/// Why a VM process runs without a scope of its own, from its launcher, for its log.
pub const NO_SCOPE_ENV: &str = "VESSEL_NO_SCOPE";

/// How long the greeting waits for its answer at most.
const ANSWER_WITHIN: std::time::Duration = std::time::Duration::from_secs(10);

/// Requests queued for a VM process; input beyond this while it does not read is dropped.
pub const REQUEST_QUEUE: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Paths(#[from] PathsError),
    #[error("{name} is not running")]
    NotRunning { name: String },
    #[error("cannot reach {name}'s VM process at {}", .socket.display())]
    Connect {
        name: String,
        socket: PathBuf,
        #[source]
        error: std::io::Error,
    },
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    #[error("the control socket answered for {}, not {}", .theirs.display(), .ours.display())]
    WrongVm { theirs: PathBuf, ours: PathBuf },
    #[error("the VM process went away before it answered")]
    NoAnswer,
    #[error("{0}")]
    Failed(String),
    #[error("cannot start the VM process {}", .0.display())]
    Spawn(PathBuf, #[source] std::io::Error),
    #[error(
        "{} is missing: it runs each VM and comes with vessel (cargo build -p vessel builds \
         both; install both side by side)",
        .0.display()
    )]
    NoVmProgram(PathBuf),
    #[error("cannot open the VM's log {}", .0.display())]
    Log(PathBuf, #[source] std::io::Error),
    #[error("the VM process sent a screen that cannot be shown: {0}")]
    BadFrame(String),
    #[error("{name} sent no picture of its screen within {}s", .seconds)]
    NoScreen { name: String, seconds: u64 },
}

/// The program a VM process runs, next to `vessel`.
pub const VM_PROGRAM: &str = "vessel-vm";

/// How a VM process is started.
#[derive(Clone, Debug)]
pub enum Launcher {
    /// `vessel-vm` (this path), as a process of its own: the real thing.
    Process(PathBuf),
    /// A thread of this process serving the same protocol (the app's unit tests, where no
    /// `vessel-vm` binary is at hand). No isolation.
    InProcess,
}

impl Launcher {
    /// The `vessel-vm` next to the `vessel` running now.
    pub fn this_program() -> Self {
        let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("vessel"));
        Launcher::Process(exe.with_file_name(VM_PROGRAM))
    }
}

/// A started VM process: the starter's connection, and the child to reap.
pub struct Started {
    pub stream: UnixStream,
    pub child: Option<Child>,
}

/// Starts the VM process for the VM in `root` (of the library in `library`) and greets
/// it: connected to us from its first instruction on. Its stderr goes to the VM's
/// `LOG_FILE`. It runs in a session of its own: a terminal's Ctrl-C or hang-up, or the
/// starter's end, leave it running. Where the host has a systemd user session it runs in
/// a scope of its own with a memory limit (`scope`); if systemd-run cannot make one, it
/// runs without, and its log says why.
pub fn start(launcher: &Launcher, library: &Path, root: &Path) -> Result<Started, ClientError> {
    start_with(launcher, library, root, None)
}

/// `start`, for a VM process that receives the VM by live migration over `incoming` (a
/// connection the sending Vessel made, and was answered on) instead of building it.
pub fn start_incoming(
    launcher: &Launcher,
    library: &Path,
    root: &Path,
    incoming: OwnedFd,
) -> Result<Started, ClientError> {
    start_with(launcher, library, root, Some(incoming))
}

fn start_with(
    launcher: &Launcher,
    library: &Path,
    root: &Path,
    incoming: Option<OwnedFd>,
) -> Result<Started, ClientError> {
    let exe = match launcher {
        Launcher::InProcess => {
            let (ours, theirs) =
                UnixStream::pair().map_err(|e| ClientError::Spawn("socketpair".into(), e))?;
            let (library, bundle) = (library.to_path_buf(), root.to_path_buf());
            let incoming = incoming.map(std::fs::File::from);
            std::thread::Builder::new()
                .name("vessel-vm-host".into())
                .spawn(move || super::host::run(&library, &bundle, Some(theirs), false, incoming))
                .map_err(|e| ClientError::Spawn("a thread".into(), e))?;
            let mut started = Started { stream: ours, child: None };
            greet(&mut started.stream, root)?;
            return Ok(started);
        }
        Launcher::Process(exe) => exe,
    };
    if !exe.is_file() {
        return Err(ClientError::NoVmProgram(exe.clone()));
    }
    // An unreadable configuration gets no scope: the VM process says what is wrong.
    let planned = match vm_library::bundle::Bundle::open(root) {
        Ok(bundle) => {
            Scope::plan(&bundle.config.name, bundle.config.memory_mib).map_err(|e| format!("{e:#}"))
        }
        Err(_) => Err("its configuration could not be read".to_string()),
    };
    let no_scope = match planned {
        Ok(scope) => {
            let mut started = spawn(exe, library, root, Group::Scope(&scope), incoming.as_ref())?;
            match greet(&mut started.stream, root) {
                Ok(()) => return Ok(started),
                // It ended before it said hello: systemd-run, most likely, said why.
                Err(ClientError::Protocol(ProtocolError::Truncated | ProtocolError::Io(_))) => {
                    if let Some(mut child) = started.child.take() {
                        let _ = child.wait();
                    }
                    let said = last_log_line(root).unwrap_or_default();
                    log::warn!("{}: no scope of its own ({}): {said}", root.display(), scope.unit);
                    format!("systemd-run could not make scope {}: {said}", scope.unit)
                }
                Err(e) => return Err(e),
            }
        }
        Err(reason) => reason,
    };
    let mut started = spawn(exe, library, root, Group::Starters(&no_scope), incoming.as_ref())?;
    greet(&mut started.stream, root)?;
    Ok(started)
}

/// Where a VM process runs: in a scope of its own, or in its starter's control group (and
/// why).
enum Group<'a> {
    Scope(&'a Scope),
    Starters(&'a str),
}

/// Spawns `exe` (`vessel-vm`) for the VM in `root`, in `group`; `incoming`: a live
/// migration's connection, which it finds at `MIGRATION_FD`.
fn spawn(
    exe: &Path,
    library: &Path,
    root: &Path,
    group: Group,
    incoming: Option<&OwnedFd>,
) -> Result<Started, ClientError> {
    let (ours, theirs) =
        UnixStream::pair().map_err(|e| ClientError::Spawn("socketpair".into(), e))?;
    let log_path = root.join(LOG_FILE);
    let log = open_log(&log_path).map_err(|e| ClientError::Log(log_path.clone(), e))?;
    let log2 = log.try_clone().map_err(|e| ClientError::Log(log_path, e))?;
    let mut command = match group {
        Group::Scope(scope) => {
            let mut command = scope.command();
            command.arg(exe);
            command
        }
        Group::Starters(why_not) => {
            let mut command = Command::new(exe);
            command.env(NO_SCOPE_ENV, why_not);
            command
        }
    };
    command.arg("--library").arg(library);
    if incoming.is_some() {
        command.arg("--incoming");
    }
    command.arg(root).stdin(Stdio::null()).stdout(log).stderr(log2);
    let fd = theirs.as_raw_fd();
    let migration = incoming.map(AsRawFd::as_raw_fd);
    // SAFETY: between fork and exec only async-signal-safe calls: dup2, fcntl and
    // setsid, on descriptors the child owns.
    unsafe {
        command.pre_exec(move || {
            let fail = || Err(std::io::Error::last_os_error());
            // Each first out of the way (above any low number), then into its place:
            // dup2 clears close-on-exec on the copy.
            let control = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 100);
            let migration = migration.map(|m| libc::fcntl(m, libc::F_DUPFD_CLOEXEC, 100));
            if control < 0 || migration.is_some_and(|m| m < 0) {
                return fail();
            }
            if libc::dup2(control, CONTROL_FD) < 0 {
                return fail();
            }
            if let Some(migration) = migration
                && libc::dup2(migration, protocol::MIGRATION_FD) < 0
            {
                return fail();
            }
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    };
    let program = PathBuf::from(command.get_program());
    let child = command.spawn().map_err(|e| ClientError::Spawn(program, e))?;
    drop(theirs);
    Ok(Started { stream: ours, child: Some(child) })
}

/// The VM's log: never through a symlink, readable by its owner only, appended to (a
/// start refused because the VM runs must not cut the running one's log; the VM process
/// starts it afresh once it holds the run lock).
fn open_log(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

/// The last line the VM process wrote to its log (a crash's last words), if any; its
/// notes of how it was set up (`[INFO ...]`) are no last words.
pub fn last_log_line(root: &Path) -> Option<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(root.join(LOG_FILE)).ok()?;
    let len = file.metadata().ok()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(4096))).ok()?;
    let mut tail = Vec::new();
    file.take(4096).read_to_end(&mut tail).ok()?;
    let text = String::from_utf8_lossy(&tail);
    let said = |l: &&str| !l.trim().is_empty() && !l.starts_with("[INFO ");
    text.lines().rev().find(said).map(|l| l.trim().to_string())
}

/// Says hello on a new connection, and checks the VM process runs the VM in `root`.
pub fn greet(stream: &mut UnixStream, root: &Path) -> Result<(), ClientError> {
    let theirs = protocol::handshake(stream, Hello::ours(None))?;
    let ours = paths::canonical(root)?;
    match theirs.bundle {
        Some(theirs) if theirs == ours => Ok(()),
        theirs => Err(ClientError::WrongVm { theirs: theirs.unwrap_or_default(), ours }),
    }
}

/// Connects to the running VM in `root` (named `name` in errors) and says hello.
pub fn connect(root: &Path, name: &str) -> Result<UnixStream, ClientError> {
    let socket = paths::socket_for(root)?;
    let mut stream = UnixStream::connect(&socket).map_err(|error| match error.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
            ClientError::NotRunning { name: name.to_string() }
        }
        _ => ClientError::Connect { name: name.to_string(), socket: socket.clone(), error },
    })?;
    // A VM process that hangs does not hang whoever reaches for it.
    let _ = stream.set_read_timeout(Some(ANSWER_WITHIN));
    greet(&mut stream, root)?;
    let _ = stream.set_read_timeout(None);
    Ok(stream)
}

/// Sends one control request to the running VM in `root` and waits for its answer.
pub fn request(root: &Path, name: &str, request: Request) -> Result<Reply, ClientError> {
    exchange(root, name, request, None)
}

/// `request`, hearing the VM's events meanwhile (`on_event`: how far a suspend's saving
/// is, state changes), until its answer.
pub fn request_watching(
    root: &Path,
    name: &str,
    request: Request,
    mut on_event: impl FnMut(&Reply),
) -> Result<Reply, ClientError> {
    exchange(root, name, request, Some(&mut on_event))
}

/// `request_watching`, with `fd` passed alongside the request (a `Migrate`'s connection).
pub fn request_with_fd_watching(
    root: &Path,
    name: &str,
    request: Request,
    fd: &std::os::fd::OwnedFd,
    mut on_event: impl FnMut(&Reply),
) -> Result<Reply, ClientError> {
    exchange_with(root, name, request, Some(fd), Some(&mut on_event))
}

/// Sends `request` (subscribed to the VM's events first if they are `watched`) and waits
/// for its answer, handing the events to `watched`.
fn exchange(
    root: &Path,
    name: &str,
    request: Request,
    watched: Option<&mut dyn FnMut(&Reply)>,
) -> Result<Reply, ClientError> {
    exchange_with(root, name, request, None, watched)
}

fn exchange_with(
    root: &Path,
    name: &str,
    request: Request,
    fd: Option<&std::os::fd::OwnedFd>,
    mut watched: Option<&mut dyn FnMut(&Reply)>,
) -> Result<Reply, ClientError> {
    let mut stream = connect(root, name)?;
    let _ = stream.set_read_timeout(Some(request.answer_within()));
    if watched.is_some() {
        let subscribe = Request::Subscribe { serial: false, display: false, debug: false };
        protocol::send(&mut stream, &subscribe)?;
    }
    super::wire::send_with_fd(&mut stream, &request, fd)?;
    loop {
        match protocol::receive::<Reply>(&mut stream)? {
            None => return Err(ClientError::NoAnswer),
            Some(Reply::Failed { error }) => return Err(ClientError::Failed(error)),
            Some(
                reply @ (Reply::Done
                | Reply::Status { .. }
                | Reply::Migrated { .. }
                | Reply::Frozen { .. }),
            ) => {
                return Ok(reply);
            }
            Some(event) => {
                if let Some(watch) = watched.as_mut() {
                    watch(&event);
                }
            }
        }
    }
}

/// How long `screen` waits for the VM process to send what its screen shows.
const SCREEN_WITHIN: std::time::Duration = std::time::Duration::from_secs(10);

/// What the running VM in `root` shows now: a display of this process onto the VM
/// process's frame memory (mapped read-only, sealed against shrinking, so the guest may
/// draw on while it is read); None when the guest shows nothing. The VM process sends its
/// screen to every client that subscribes to it.
pub fn screen(root: &Path, name: &str) -> Result<Option<vmm::Display>, ClientError> {
    let mut stream = connect(root, name)?;
    let _ = stream.set_read_timeout(Some(SCREEN_WITHIN));
    let subscribe = Request::Subscribe { serial: false, display: true, debug: false };
    protocol::send(&mut stream, &subscribe)?;
    let deadline = std::time::Instant::now() + SCREEN_WITHIN;
    let mut reader = super::wire::FrameReader::new(stream);
    while std::time::Instant::now() < deadline {
        let reply = match reader.receive::<Reply>() {
            Ok(Some(reply)) => reply,
            Ok(None) => return Err(ClientError::NoAnswer),
            Err(ProtocolError::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e.into()),
        };
        match reply {
            Reply::NoFrame => return Ok(None),
            Reply::Frame { layout, new_memory: true, .. } => {
                let bad = |e: &dyn std::fmt::Display| ClientError::BadFrame(e.to_string());
                let memory = reader.take_fd().ok_or_else(|| bad(&"its memory did not come"))?;
                let layout = layout.frame_layout().ok_or_else(|| bad(&"an unknown layout"))?;
                let needs = layout.bytes_needed().unwrap_or(u64::MAX);
                let mapped = vmm::display::FrameMapping::map(memory, needs).map_err(|e| bad(&e))?;
                let display = vmm::Display::new().map_err(|e| bad(&e))?;
                display.mirror_scanout(Some((Arc::new(mapped), layout))).map_err(|e| bad(&e))?;
                return Ok(Some(display));
            }
            Reply::StateChanged { state: protocol::VmState::Stopped { .. } } => {
                return Err(ClientError::NotRunning { name: name.to_string() });
            }
            _ => {}
        }
    }
    Err(ClientError::NoScreen { name: name.to_string(), seconds: SCREEN_WITHIN.as_secs() })
}

/// Keyboard and pointer input into a VM process: what `vmm::InputSink` does in the
/// machine's own process, over the socket. Never blocks; cheap to clone.
#[derive(Clone)]
pub struct Input {
    requests: SyncSender<Request>,
    absolute: Arc<AtomicBool>,
}

impl Input {
    pub fn new(requests: SyncSender<Request>) -> Self {
        Input { requests, absolute: Arc::new(AtomicBool::new(true)) }
    }

    fn send(&self, request: Request) {
        if let Err(TrySendError::Full(_)) = self.requests.try_send(request) {
            log::warn!("the VM process is not taking input; some was dropped");
        }
    }

    /// The VM process says whether the guest follows an absolute pointer.
    pub fn set_pointer_absolute(&self, absolute: bool) {
        self.absolute.store(absolute, Ordering::Relaxed);
    }

    pub fn pointer_is_absolute(&self) -> bool {
        self.absolute.load(Ordering::Relaxed)
    }

    pub fn key(&self, code: u16, down: bool) {
        self.send(Request::Key { code, down });
    }

    pub fn release_all_keys(&self) {
        self.send(Request::ReleaseKeys);
    }

    pub fn pointer_abs(&self, x: f64, y: f64) {
        self.send(Request::PointerAbs { x, y });
    }

    pub fn pointer_rel(&self, dx: i32, dy: i32) {
        self.send(Request::PointerRel { dx, dy });
    }

    pub fn button(&self, button: vmm::Button, down: bool) {
        self.send(Request::Button { code: button.code(), down });
    }

    pub fn wheel(&self, dx: i32, dy: i32) {
        self.send(Request::Wheel { dx, dy });
    }

    /// Asks the guest for a display of this size (the window's).
    pub fn request_resize(&self, width: u32, height: u32) {
        self.send(Request::Resize { width, height });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_logs_notes_are_not_its_last_words() {
        let dir = std::env::temp_dir().join(format!("vessel-last-words-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = "[INFO  vessel::vmhost::host] sandboxed\nvessel: SIGSYS: socket\n\n\
                   [INFO  vessel::vmhost::host] a control client went away\n";
        std::fs::write(dir.join(LOG_FILE), log).unwrap();
        assert_eq!(last_log_line(&dir).as_deref(), Some("vessel: SIGSYS: socket"));
        std::fs::write(dir.join(LOG_FILE), "[INFO  x] only notes\n").unwrap();
        assert_eq!(last_log_line(&dir), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_missing_vm_program_is_named_with_the_fix() {
        let launcher = Launcher::Process("/nonexistent/bin/vessel-vm".into());
        let error = start(&launcher, Path::new("/nonexistent"), Path::new("/nonexistent/A"));
        let text = error.err().expect("no VM process starts").to_string();
        assert!(text.contains("/nonexistent/bin/vessel-vm is missing"), "{text}");
        assert!(text.contains("cargo build -p vessel"), "{text}");
    }
}
