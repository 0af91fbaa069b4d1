//! A VM the window shows: a client of its VM process (`vmhost`), which the session starts
//! (`Session::start`) or finds running (`Session::attach`). A thread reads what the
//! process tells (state, serial output, frames, cursor) and reports back through a
//! mailbox that keeps the latest of each (bounded, however long the window does not
//! look); requests go out through a queue. The guest's frame is the process's own
//! memory, mapped read-only into a `vmm::Display` that mirrors it. Nothing here ever
//! waits for the VM: a slow or dead VM process never freezes the window.

use std::collections::VecDeque;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, SyncSender, channel};
use std::time::{Duration, Instant};

use vmm::display::{Damage, Display, FrameMapping, Rect};

use crate::core::state::VmState;
use crate::vmhost::client::{self, ClientError, Input, Launcher};
use crate::vmhost::protocol::{self, Reply, Request, StopKind};
use crate::vmhost::wire::{self, FrameReader};

pub use crate::core::report::{error_chain, host_hint};

/// What the UI asks of a running VM.
#[derive(Debug)]
pub enum Command {
    /// The ACPI power button.
    ShutDown,
    PowerOff,
    Reset,
    Pause,
    Resume,
    /// Saves the machine's whole state in the VM's folder and ends it.
    Suspend,
    InsertCd(PathBuf),
    EjectCd {
        force: bool,
    },
    Serial(Vec<u8>),
}

/// Where a session is.
#[derive(Clone, Debug, PartialEq)]
pub enum Phase {
    /// Building the machine (reading the disc, opening disks).
    Starting,
    Running,
    Paused,
    /// The machine stopped; the session is over.
    Ended(Ending),
}

impl Phase {
    /// The VM's state while this session has it.
    pub fn state(&self) -> VmState {
        match self {
            Phase::Starting => VmState::Starting,
            Phase::Running => VmState::Running,
            Phase::Paused => VmState::Paused,
            Phase::Ended(_) => VmState::Stopping,
        }
    }
}

/// How a session ended: typed, so that only the view turns it into words.
#[derive(Clone, Debug)]
pub enum Ending {
    PoweredOff,
    /// Its state was saved: powering it on resumes it.
    Suspended,
    /// The guest crashed (a triple fault), or its VM process died: why, for people.
    Crashed(Arc<str>),
    /// The machine could not start or could not go on.
    Failed(Arc<Failure>),
}

impl PartialEq for Ending {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Ending::PoweredOff, Ending::PoweredOff) => true,
            (Ending::Suspended, Ending::Suspended) => true,
            (Ending::Crashed(a), Ending::Crashed(b)) => Arc::ptr_eq(a, b),
            (Ending::Failed(a), Ending::Failed(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl Ending {
    /// The VM's state after it.
    pub fn state(&self) -> VmState {
        match self {
            Ending::PoweredOff => VmState::Off,
            Ending::Suspended => VmState::Suspended,
            Ending::Crashed(_) => VmState::Crashed,
            Ending::Failed(_) => VmState::Failed,
        }
    }

    /// Why it ended, for people (crashes and failures).
    pub fn reason(&self) -> Option<String> {
        match self {
            Ending::PoweredOff | Ending::Suspended => None,
            Ending::Crashed(reason) => Some(reason.to_string()),
            Ending::Failed(failure) => {
                let mut text = error_chain(failure.as_ref());
                if matches!(failure.as_ref(), Failure::Stopped(_))
                    && let Some(hint) = host_hint()
                    && !text.contains(hint)
                {
                    text.push_str(&format!(" ({hint})"));
                }
                Some(text)
            }
        }
    }
}

/// Why a VM could not start or could not go on.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// Its VM process could not be started or reached.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// Its VM process said so (the machine could not be built, or stopped on an error).
    #[error("{0}")]
    Stopped(String),
    #[error("cannot start the VM's thread")]
    Thread(#[source] std::io::Error),
}

fn failed(failure: impl Into<Failure>) -> Ending {
    Ending::Failed(Arc::new(failure.into()))
}

/// What the thread reports (into the `Mailbox`).
enum Update {
    Built {
        display: Display,
        input: Input,
        vcpus: u32,
        memory_mib: u64,
        firmware: bool,
    },
    Phase(Phase),
    Serial(Vec<u8>),
    Usage(protocol::Usage),
    /// Its state is being saved: bytes of memory written, of all.
    Saving(u64, u64),
    /// Something the machine says the user should know (no network card, ...).
    Warning(String),
    /// The disc is in the CD drive.
    CdInserted(PathBuf),
    /// A command failed.
    Failed {
        command: &'static str,
        error: String,
    },
}

impl Command {
    /// What the command does, for messages.
    fn verb(&self) -> &'static str {
        match self {
            Command::ShutDown => "shut down",
            Command::PowerOff => "power off",
            Command::Reset => "reset",
            Command::Pause => "pause",
            Command::Resume => "resume",
            Command::Suspend => "suspend",
            Command::InsertCd(_) => "insert a disc",
            Command::EjectCd { .. } => "eject the disc",
            Command::Serial(_) => "type into the serial port",
        }
    }

    fn request(self) -> Request {
        match self {
            Command::ShutDown => Request::Shutdown,
            Command::PowerOff => Request::PowerOff,
            Command::Reset => Request::Reset,
            Command::Pause => Request::Pause,
            Command::Resume => Request::Resume,
            Command::Suspend => Request::Suspend,
            Command::InsertCd(iso) => Request::InsertCd { iso },
            Command::EjectCd { force } => Request::EjectCd { force },
            Command::Serial(bytes) => Request::SerialInput { bytes },
        }
    }
}

/// A message for a toast.
pub struct Notice {
    pub error: bool,
    pub text: String,
}

/// Serial input a request carries at most.
const SERIAL_PIECE: usize = 16 * 1024;
/// Serial output kept for the serial view.
const SERIAL_KEEP: usize = 256 * 1024;
/// Usage samples kept for the sparkline (one a second).
pub const HISTORY: usize = 60;

/// The UI's side of a running VM.
pub struct Session {
    pub name: String,
    pub phase: Phase,
    /// The guest's screen, mirrored from its VM process.
    pub display: Option<Display>,
    pub input: Option<Input>,
    /// The guest's serial output (lossy UTF-8, the last 256 to 512 KiB).
    pub serial: String,
    /// vCPU use, in percent of one host CPU, a sample a second.
    pub cpu: VecDeque<f64>,
    /// Disk and network wake-ups in the last second.
    pub disk_rate: u64,
    pub net_rate: u64,
    pub vcpus: u32,
    pub memory_mib: u64,
    /// The machine boots through firmware (whose text shows on the serial console).
    pub firmware: bool,
    /// Guest RAM the host holds now.
    pub memory_resident: u64,
    /// The VM process's memory beyond guest RAM.
    pub process_overhead: u64,
    /// Its state is being saved (a suspend, a snapshot): bytes of memory written, of all.
    pub saving: Option<(u64, u64)>,
    last_usage: Option<(Instant, protocol::Usage)>,
    /// When the guest started running.
    running_since: Option<Instant>,
    requests: SyncSender<Request>,
    /// The verbs of control requests sent, for the answers that come back in order.
    verbs: Sender<&'static str>,
    mailbox: Arc<std::sync::Mutex<Mailbox>>,
    /// The connection to the VM process, once made; shut when the session is dropped.
    line: Line,
}

/// The session's connection, and whether the window let go of it.
#[derive(Clone, Default)]
struct Line(Arc<std::sync::Mutex<(bool, Option<UnixStream>)>>);

impl Line {
    /// Keeps `stream` to shut on `let_go`; false if the window let go already.
    fn keep(&self, stream: &UnixStream) -> bool {
        let mut line = vmm::sync::lock(&self.0);
        if line.0 {
            return false;
        }
        line.1 = stream.try_clone().ok();
        true
    }

    fn let_go(&self) {
        let mut line = vmm::sync::lock(&self.0);
        line.0 = true;
        if let Some(stream) = line.1.take() {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    }

    fn let_go_of(&self) -> bool {
        vmm::sync::lock(&self.0).0
    }
}

impl Drop for Session {
    /// The window no longer shows this VM: its process runs on (the close dialog's Run in
    /// Background; a window closing).
    fn drop(&mut self) {
        self.line.let_go();
    }
}

/// How a session reaches its VM process.
enum Reach {
    Start { launcher: Launcher, library: PathBuf },
    Attach,
}

impl Session {
    /// Starts the VM in `root` in a VM process of its own (`launcher`); `wake` is called
    /// whenever there is news, including every change of the guest's screen (egui's
    /// `request_repaint`). The VM's disks may read through to linked-clone bases of the
    /// library in `library`.
    pub fn start(
        launcher: &Launcher,
        library: PathBuf,
        root: PathBuf,
        name: String,
        wake: Arc<dyn Fn() + Send + Sync>,
    ) -> Session {
        Self::open(Reach::Start { launcher: launcher.clone(), library }, root, name, wake)
    }

    /// Shows the VM in `root`, which runs in a VM process someone else started.
    pub fn attach(root: PathBuf, name: String, wake: Arc<dyn Fn() + Send + Sync>) -> Session {
        Self::open(Reach::Attach, root, name, wake)
    }

    fn open(
        reach: Reach,
        root: PathBuf,
        name: String,
        wake: Arc<dyn Fn() + Send + Sync>,
    ) -> Session {
        let (requests, request_rx) = std::sync::mpsc::sync_channel(client::REQUEST_QUEUE);
        let (verbs, verb_rx) = channel();
        let mailbox = Arc::new(std::sync::Mutex::new(Mailbox::default()));
        let thread_mailbox = mailbox.clone();
        let input = Input::new(requests.clone());
        let thread_name = name.clone();
        let line = Line::default();
        let thread_line = line.clone();
        let spawned =
            std::thread::Builder::new().name(format!("vessel-vm {name}")).spawn(move || {
                let link = Link {
                    mailbox: thread_mailbox,
                    wake,
                    verbs: verb_rx,
                    input,
                    line: thread_line,
                };
                let ending = follow(reach, &root, &thread_name, request_rx, &link);
                link.send(Update::Phase(Phase::Ended(ending)));
            });
        let phase = match spawned {
            Ok(_) => Phase::Starting,
            Err(e) => Phase::Ended(failed(Failure::Thread(e))),
        };
        Session {
            name,
            phase,
            display: None,
            input: None,
            serial: String::new(),
            cpu: VecDeque::with_capacity(HISTORY),
            disk_rate: 0,
            net_rate: 0,
            vcpus: 0,
            memory_mib: 0,
            firmware: false,
            memory_resident: 0,
            process_overhead: 0,
            saving: None,
            last_usage: None,
            running_since: None,
            requests,
            verbs,
            mailbox,
            line,
        }
    }

    /// How long the guest has been running (since it first started).
    pub fn running_for(&self) -> Option<Duration> {
        self.running_since.map(|t| t.elapsed())
    }

    /// Makes the guest look as if it started `ago` (tests of what shows after a while).
    #[cfg(test)]
    pub fn started(&mut self, ago: Duration) {
        self.running_since = Some(Instant::now() - ago);
    }

    /// Asks the VM to do something; false if its process cannot be told.
    pub fn send(&self, command: Command) -> bool {
        let verb = command.verb();
        // Text for the serial port in pieces that each fit a message (a long paste).
        let requests = match command {
            Command::Serial(bytes) if bytes.len() > SERIAL_PIECE => bytes
                .chunks(SERIAL_PIECE)
                .map(|piece| Request::SerialInput { bytes: piece.to_vec() })
                .collect(),
            command => vec![command.request()],
        };
        for request in requests {
            if self.requests.try_send(request).is_err() {
                return false;
            }
            let _ = self.verbs.send(verb);
        }
        true
    }

    /// Asks the guest for a display of this size (the console's).
    pub fn request_resize(&self, width: u32, height: u32) {
        if let Some(display) = &self.display {
            display.request_resize(width, height); // remembered here too
        }
        let _ = self.requests.try_send(Request::Resize { width, height });
    }

    pub fn is_over(&self) -> bool {
        matches!(self.phase, Phase::Ended(_))
    }

    /// Takes what the thread reported since the last call; returns messages for toasts.
    pub fn poll(&mut self) -> Vec<Notice> {
        let mail = std::mem::take(&mut *vmm::sync::lock(&self.mailbox));
        if let Some(Update::Built { display, input, vcpus, memory_mib, firmware }) = mail.built {
            self.display = Some(display);
            self.input = Some(input);
            self.vcpus = vcpus;
            self.memory_mib = memory_mib;
            self.firmware = firmware;
        }
        if mail.ran && self.running_since.is_none() {
            self.running_since = Some(Instant::now());
        }
        if let Some(phase) = mail.phase {
            self.phase = phase;
        }
        if !mail.serial.is_empty() {
            self.serial.push_str(&String::from_utf8_lossy(&mail.serial));
            // Trimmed back to SERIAL_KEEP once it is twice that, so a guest writing fast
            // costs one move per 256 KiB, not one per write.
            if self.serial.len() > 2 * SERIAL_KEEP {
                let mut cut = self.serial.len() - SERIAL_KEEP;
                while !self.serial.is_char_boundary(cut) {
                    cut += 1;
                }
                self.serial.drain(..cut);
            }
        }
        if let Some(usage) = mail.usage {
            self.sample(usage);
        }
        if mail.saving.is_some() {
            self.saving = mail.saving;
        }
        let mut notices: Vec<Notice> = (mail.notices.into_iter())
            .filter_map(|update| match update {
                Update::Warning(text) => Some(Notice { error: false, text }),
                Update::CdInserted(path) => Some(Notice {
                    error: false,
                    text: format!("{}: {} is in the CD drive", self.name, path.display()),
                }),
                Update::Failed { command, error } => Some(Notice {
                    error: true,
                    text: format!("{}: cannot {command}: {error}", self.name),
                }),
                _ => None,
            })
            .collect();
        if mail.dropped > 0 {
            let text = format!("{}: {} more messages were left out", self.name, mail.dropped);
            notices.push(Notice { error: false, text });
        }
        if mail.closed && !self.is_over() {
            self.phase =
                Phase::Ended(failed(Failure::Stopped("the VM's thread ended unexpectedly".into())));
        }
        notices
    }

    fn sample(&mut self, usage: protocol::Usage) {
        self.memory_resident = usage.memory_resident;
        self.process_overhead = usage.process_overhead;
        let now = Instant::now();
        if let Some((then, last)) = &self.last_usage {
            let secs = now.duration_since(*then).as_secs_f64().max(1e-3);
            let cpu = usage.vcpu_time_ns.saturating_sub(last.vcpu_time_ns) as f64 / 1e9 / secs;
            if self.cpu.len() == HISTORY {
                self.cpu.pop_front();
            }
            self.cpu.push_back((cpu * 100.0).max(0.0));
            self.disk_rate = ((usage.disk_activity.saturating_sub(last.disk_activity)) as f64
                / secs)
                .round() as u64;
            self.net_rate = ((usage.net_activity.saturating_sub(last.net_activity)) as f64 / secs)
                .round() as u64;
        }
        self.last_usage = Some((now, usage));
    }
}

/// Notices (warnings, failed commands) kept between two polls; more are counted.
const NOTICES: usize = 32;

/// What the session's thread has for the window until its next `poll`: the latest
/// machine, phase and usage, the newest serial output and the first notices. Bounded
/// however long the window does not look (a minimised window may not for hours), and
/// never a reason to stop reading the VM process (which would drop a client that lags).
#[derive(Default)]
struct Mailbox {
    built: Option<Update>,
    phase: Option<Phase>,
    /// The guest ran since the last poll (whatever the phase is now).
    ran: bool,
    serial: Vec<u8>,
    usage: Option<protocol::Usage>,
    saving: Option<(u64, u64)>,
    notices: Vec<Update>,
    dropped: usize,
    /// The thread ended (also by a panic).
    closed: bool,
}

impl Mailbox {
    fn put(&mut self, update: Update) {
        match update {
            built @ Update::Built { .. } => self.built = Some(built),
            Update::Phase(phase) => {
                self.ran |= phase == Phase::Running;
                self.phase = Some(phase);
            }
            Update::Serial(bytes) => {
                self.serial.extend_from_slice(&bytes);
                if self.serial.len() > 2 * SERIAL_KEEP {
                    // The newest SERIAL_KEEP bytes, from a character's start.
                    let mut cut = self.serial.len() - SERIAL_KEEP;
                    while self.serial.get(cut).is_some_and(|b| b & 0xc0 == 0x80) {
                        cut += 1;
                    }
                    self.serial.drain(..cut);
                }
            }
            Update::Usage(usage) => self.usage = Some(usage),
            Update::Saving(done, total) => self.saving = Some((done, total)),
            notice if self.notices.len() < NOTICES => self.notices.push(notice),
            _ => self.dropped += 1,
        }
    }
}

/// The session thread's way back to the UI.
struct Link {
    mailbox: Arc<std::sync::Mutex<Mailbox>>,
    wake: Arc<dyn Fn() + Send + Sync>,
    verbs: Receiver<&'static str>,
    input: Input,
    line: Line,
}

impl Link {
    fn send(&self, update: Update) {
        vmm::sync::lock(&self.mailbox).put(update);
        (self.wake)();
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        vmm::sync::lock(&self.mailbox).closed = true;
        (self.wake)();
    }
}

/// Reaches the VM process and follows it until it ends; returns how.
fn follow(
    reach: Reach,
    root: &Path,
    name: &str,
    requests: Receiver<Request>,
    link: &Link,
) -> Ending {
    let attach = matches!(reach, Reach::Attach);
    let reached = match reach {
        Reach::Start { launcher, library } => {
            client::start(&launcher, &library, root).map(|s| (s.stream, s.child))
        }
        Reach::Attach => client::connect(root, name).map(|stream| (stream, None)),
    };
    let (stream, child) = match reached {
        Ok(reached) => reached,
        // It stopped between the library scan and now: nothing to show, nothing to say.
        Err(ClientError::NotRunning { .. }) if attach => return Ending::PoweredOff,
        Err(e) => return failed(e),
    };
    let mut child = ChildGuard(child);
    if !link.line.keep(&stream) {
        return Ending::PoweredOff; // the window let go already; nobody hears this
    }
    let writer = stream.try_clone().and_then(|w| spawn_writer(w, requests));
    if let Err(e) = writer {
        return failed(Failure::Thread(e));
    }
    match read_events(FrameReader::new(stream), link) {
        Some(ending) => {
            child.reap();
            ending
        }
        // The window let go: the VM runs on; nobody hears this.
        None if link.line.let_go_of() => Ending::PoweredOff,
        None => lost(child.reap(), root),
    }
}

/// Sends the session's requests, a subscription to everything first.
fn spawn_writer(
    mut stream: std::os::unix::net::UnixStream,
    requests: Receiver<Request>,
) -> std::io::Result<()> {
    std::thread::Builder::new().name("vessel-vm-requests".into()).spawn(move || {
        // It carries keys and the pointer: it gets the CPU soon after it wakes.
        vmm::sched::prefer_short_slices();
        let subscribe = Request::Subscribe { serial: true, display: true, debug: false };
        if protocol::send(&mut stream, &subscribe).is_err() {
            return;
        }
        while let Ok(request) = requests.recv() {
            // A disc goes open: the VM process's sandbox keeps it from opening files the
            // user picks. One that cannot be opened here goes by name, and the VM process
            // says why it cannot use it.
            let disc = match &request {
                Request::InsertCd { iso } => std::fs::File::open(iso).ok().map(OwnedFd::from),
                _ => None,
            };
            if wire::send_with_fd(&mut stream, &request, disc.as_ref()).is_err() {
                break;
            }
        }
    })?;
    Ok(())
}

/// What the VM process tells, until it ends: how it stopped, or None if it went away
/// without saying (it died).
fn read_events(mut reader: FrameReader, link: &Link) -> Option<Ending> {
    let mut display: Option<Display> = None;
    let mut ending = None;
    loop {
        let reply = match reader.receive::<Reply>() {
            Ok(Some(reply)) => reply,
            Ok(None) => return ending,
            Err(e) => {
                log::warn!("the VM process's control socket: {e}");
                return ending;
            }
        };
        match reply {
            Reply::Built { machine } => {
                // Told again when subscribing: the mirror already made stays.
                let mirror = match display.clone().map_or_else(Display::new, Ok) {
                    Ok(d) => d,
                    Err(e) => return Some(failed(Failure::Thread(e))),
                };
                let wake = link.wake.clone();
                mirror.set_repaint_callback(move || wake());
                display = Some(mirror.clone());
                link.send(Update::Built {
                    display: mirror,
                    input: link.input.clone(),
                    vcpus: machine.vcpus,
                    memory_mib: machine.memory_mib,
                    firmware: machine.firmware,
                });
            }
            Reply::StateChanged { state } => match state {
                protocol::VmState::Starting => {}
                protocol::VmState::Running => link.send(Update::Phase(Phase::Running)),
                protocol::VmState::Paused => link.send(Update::Phase(Phase::Paused)),
                protocol::VmState::Stopped { kind, reason } => {
                    ending = Some(match kind {
                        // Moved to another Vessel (`vessel migrate`): it is off here.
                        StopKind::PoweredOff
                        | StopKind::ForcedOff
                        | StopKind::Rebooted
                        | StopKind::Migrated => Ending::PoweredOff,
                        StopKind::Suspended => Ending::Suspended,
                        StopKind::Crashed => Ending::Crashed(
                            reason.unwrap_or_else(|| "the guest crashed".into()).into(),
                        ),
                        StopKind::Failed => failed(Failure::Stopped(
                            reason.unwrap_or_else(|| "the machine failed".into()),
                        )),
                    });
                }
            },
            Reply::Serial { bytes } => link.send(Update::Serial(bytes)),
            Reply::Warning { text } => link.send(Update::Warning(text)),
            Reply::CdInserted { iso } => link.send(Update::CdInserted(iso)),
            Reply::Usage(usage) => link.send(Update::Usage(usage)),
            Reply::Saving { done, total } => link.send(Update::Saving(done, total)),
            Reply::Done => {
                let _ = link.verbs.try_recv();
            }
            Reply::Failed { error } => {
                let command = link.verbs.try_recv().unwrap_or("do that");
                link.send(Update::Failed { command, error });
            }
            // A migration the CLI asked for: its progress is the CLI's to show.
            Reply::Status { .. }
            | Reply::Frozen { .. }
            | Reply::DebugMarker { .. }
            | Reply::Migrating { .. }
            | Reply::Migrated { .. } => {}
            Reply::Frame { layout, new_memory, damage, drawn } => {
                // Its memory is taken whatever else is wrong: none is left for the next.
                let memory = if new_memory { reader.take_fd().ok_or(()) } else { Err(()) };
                let Some(display) = &display else { continue };
                let Some(layout) = layout.frame_layout() else {
                    log::warn!("the VM process sent a frame of an unknown layout {layout:?}");
                    continue;
                };
                if new_memory {
                    let Ok(memory) = memory else {
                        log::warn!("the VM process sent a new frame without its memory");
                        continue;
                    };
                    let needs = layout.bytes_needed().unwrap_or(u64::MAX);
                    let shown = FrameMapping::map(memory, needs)
                        .and_then(|m| display.mirror_scanout(Some((Arc::new(m), layout))));
                    if let Err(e) = shown {
                        log::warn!("cannot show the guest's frame: {e}");
                        continue;
                    }
                }
                let damage = match damage {
                    None => Damage::Full,
                    Some(rects) => Damage::Rects(
                        rects
                            .into_iter()
                            .take(256)
                            .map(|(x, y, w, h)| Rect::new(x, y, w, h))
                            .collect(),
                    ),
                };
                display.mirror_damage(&damage, drawn);
            }
            Reply::NoFrame => {
                if let Some(display) = &display {
                    let _ = display.mirror_scanout(None);
                }
            }
            Reply::CursorImage { image } => {
                if let Some(display) = &display {
                    let image = image.and_then(|(width, height, hot_x, hot_y, rgba)| {
                        let size = (width as usize).checked_mul(height as usize)?.checked_mul(4)?;
                        (rgba.len() == size && width <= 512 && height <= 512).then_some(
                            vmm::display::CursorImage { width, height, rgba, hot_x, hot_y },
                        )
                    });
                    display.mirror_cursor_image(image);
                }
            }
            Reply::CursorMoved { x, y } => {
                if let Some(display) = &display {
                    display.mirror_cursor_position(x, y);
                }
            }
            Reply::Pointer { absolute } => {
                link.input.set_pointer_absolute(absolute);
                (link.wake)();
            }
        }
    }
}

/// The VM process, if this session started it: reaped when the session ends, so no
/// zombie is left.
struct ChildGuard(Option<Child>);

impl ChildGuard {
    /// Waits (a few seconds at most, then kills it) for the process to end; how it ended.
    fn reap(&mut self) -> Option<std::process::ExitStatus> {
        let child = self.0.as_mut()?;
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match child.try_wait() {
                Ok(Some(status)) => {
                    self.0 = None;
                    return Some(status);
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                _ => {
                    let _ = child.kill();
                    let status = child.wait().ok();
                    self.0 = None;
                    return status;
                }
            }
        }
    }
}

impl Drop for ChildGuard {
    /// A VM process left running (the window let go of it) is reaped whenever it ends.
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = std::thread::Builder::new()
                .name("vessel-reaper".into())
                .spawn(move || child.wait());
        }
    }
}

/// The VM process went away without saying how the VM stopped: it died.
fn lost(status: Option<std::process::ExitStatus>, root: &Path) -> Ending {
    use std::os::unix::process::ExitStatusExt;
    let how = match status {
        Some(s) => match s.signal() {
            Some(libc::SIGKILL) => {
                "was killed (SIGKILL: out of memory, or someone killed it)".to_string()
            }
            Some(libc::SIGSYS) => "was stopped by its sandbox (a forbidden system call)".into(),
            Some(signal) => format!("was killed by signal {signal}"),
            None => format!("exited with status {}", s.code().unwrap_or(-1)),
        },
        None => "ended".to_string(),
    };
    let mut reason = format!("the VM process {how}");
    if let Some(last) = client::last_log_line(root) {
        reason.push_str(&format!("; its log ends: {last}"));
    }
    Ending::Crashed(reason.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mailbox_the_window_does_not_empty_stays_bounded() {
        let mut mail = Mailbox::default();
        // A guest writing fast for as long as it likes, in pieces that cut characters.
        let text = "é€x".repeat(1_000_000).into_bytes();
        for piece in text.chunks(1_001) {
            mail.put(Update::Serial(piece.to_vec()));
        }
        assert!(mail.serial.len() <= 2 * SERIAL_KEEP, "{}", mail.serial.len());
        assert!(mail.serial.len() >= SERIAL_KEEP);
        assert!(text.ends_with(&mail.serial), "the newest output is kept");
        assert!(std::str::from_utf8(&mail.serial).is_ok(), "cut at a character's start");
        for i in 0..1_000 {
            mail.put(Update::Warning(format!("warning {i}")));
            mail.put(Update::Phase(if i % 2 == 0 { Phase::Running } else { Phase::Paused }));
        }
        assert_eq!(mail.notices.len(), NOTICES);
        assert_eq!(mail.dropped, 1_000 - NOTICES);
        assert!(mail.ran);
        assert!(matches!(mail.phase, Some(Phase::Paused)));
    }

    #[test]
    fn a_poll_takes_the_mailbox_and_says_what_was_left_out() {
        let mut session =
            Session::attach(PathBuf::from("/nonexistent/vessel-vm"), "VM".into(), Arc::new(|| {}));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !session.is_over() {
            assert!(Instant::now() < deadline, "the session's thread ends");
            session.poll();
            std::thread::sleep(Duration::from_millis(5));
        }
        {
            let mut mail = vmm::sync::lock(&session.mailbox);
            for i in 0..40 {
                mail.put(Update::Warning(format!("warning {i}")));
            }
            mail.put(Update::Serial(b"hello".to_vec()));
        }
        let notices = session.poll();
        assert_eq!(notices.len(), NOTICES + 1);
        assert_eq!(notices[0].text, "warning 0");
        assert_eq!(notices[NOTICES].text, "VM: 8 more messages were left out");
        assert!(session.serial.ends_with("hello"));
        assert!(session.poll().is_empty(), "taken once");
    }

    /// A frame's memory as a VM process could send it: any size, sealed or not.
    fn memfd(size: u64, sealed: bool) -> OwnedFd {
        use std::os::fd::{AsRawFd, FromRawFd};
        // SAFETY: memfd_create with a constant C string; the descriptor is ours at once.
        let fd = unsafe {
            let fd = libc::memfd_create(c"hostile".as_ptr(), libc::MFD_ALLOW_SEALING);
            assert!(fd >= 0);
            OwnedFd::from_raw_fd(fd)
        };
        std::fs::File::from(fd.try_clone().unwrap()).set_len(size).unwrap();
        if sealed {
            // SAFETY: F_ADD_SEALS with an int argument on our open memfd.
            let r = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, libc::F_SEAL_SHRINK) };
            assert_eq!(r, 0);
        }
        fd
    }

    #[test]
    fn a_hostile_vm_process_cannot_crash_the_window() {
        use crate::vmhost::protocol::{Layout, MachineInfo, VmState};
        let (mut peer, ours) = UnixStream::pair().unwrap();
        let mailbox = Arc::new(std::sync::Mutex::new(Mailbox::default()));
        let (verbs_tx, verbs) = channel();
        let (requests, _requested) = std::sync::mpsc::sync_channel(16);
        let link = Link {
            mailbox: mailbox.clone(),
            wake: Arc::new(|| {}),
            verbs,
            input: Input::new(requests),
            line: Line::default(),
        };
        let reader = std::thread::spawn(move || {
            read_events(FrameReader::new(ours), &link);
        });
        let rng = std::cell::Cell::new(0x9e37_79b9_7f4a_7c15_u64);
        let next = || {
            let mut x = rng.get();
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            rng.set(x);
            x
        };
        let pick = |choices: &[u64]| choices[(next() % choices.len() as u64) as usize];
        let machine = MachineInfo { vcpus: 1, memory_mib: 64, firmware: false, pid: 1 };
        wire::send_with_fd(&mut peer, &Reply::Built { machine }, None).unwrap();
        let mut display = None;
        let mut converted = 0;
        for i in 0..3_000 {
            let mut fd = None;
            let reply = match next() % 10 {
                0..=3 => {
                    // Half of them nearly right (a frame the window shows, or one byte
                    // short of one), half wild.
                    let plausible = next() % 2 == 0;
                    let (width, height, stride, offset, format);
                    if plausible {
                        width = pick(&[1, 640, 1920]) as u32;
                        height = pick(&[1, 480, 1080]) as u32;
                        stride = width as usize * 4 + pick(&[0, 64]) as usize;
                        offset = pick(&[0, 4096]) as usize;
                        format = "Bgrx";
                    } else {
                        width = pick(&[0, 7, 640, 65_535, u32::MAX as u64]) as u32;
                        height = pick(&[0, 3, 1080, 65_535, u32::MAX as u64]) as u32;
                        let row = width as u64 * 4;
                        stride = pick(&[0, row, row + 64, 3, u64::MAX]) as usize;
                        offset = pick(&[0, 4, 4096, 1 << 40, u64::MAX]) as usize;
                        format = ["Bgrx", "Rgba", "Abgr", "Yuv", ""][(next() % 5) as usize];
                    }
                    let new_memory = next() % 3 == 0;
                    if new_memory && next() % 8 != 0 {
                        let size = if plausible {
                            let needs = offset + stride * (height as usize - 1) + stride;
                            needs as u64 - pick(&[0, 0, 0, 1])
                        } else {
                            pick(&[0, 4096, 1920 * 1080 * 4, 12 << 20])
                        };
                        fd = Some(memfd(size, next() % 5 != 0));
                    }
                    let damage = (next() % 3 != 0).then(|| {
                        (0..next() % 600)
                            .map(|_| {
                                let v = |n: u64| pick(&[0, 1, n, u32::MAX as u64]) as u32;
                                (v(1919), v(1079), v(640), v(480))
                            })
                            .collect()
                    });
                    let format = format.to_string();
                    let layout = Layout { width, height, stride, offset, format };
                    Reply::Frame { layout, new_memory, damage, drawn: next() % 2 == 0 }
                }
                4 => Reply::NoFrame,
                5 => {
                    let (w, h) = (pick(&[0, 1, 32, 512, 513, u32::MAX as u64]) as u32, 32);
                    let len = pick(&[0, 4, 32 * 32 * 4, 512 * 32 * 4]) as usize;
                    let image = (next() % 4 != 0).then(|| (w, h, w, h, vec![0x80; len]));
                    Reply::CursorImage { image }
                }
                6 => Reply::CursorMoved { x: next() as i32, y: next() as i32 },
                7 => Reply::Serial { bytes: (0..next() % 5_000).map(|_| next() as u8).collect() },
                8 => {
                    let _ = verbs_tx.send("pause");
                    match next() % 4 {
                        0 => Reply::Done,
                        1 => Reply::Failed { error: "no".repeat((next() % 100) as usize) },
                        2 => Reply::StateChanged { state: VmState::Paused },
                        _ => Reply::Pointer { absolute: next() % 2 == 0 },
                    }
                }
                _ => Reply::StateChanged { state: VmState::Running },
            };
            wire::send_with_fd(&mut peer, &reply, fd.as_ref()).unwrap();
            // The window looks now and then, as it draws.
            if i % 8 == 0 {
                let mut mail = vmm::sync::lock(&mailbox);
                if let Some(Update::Built { display: d, .. }) = mail.built.take() {
                    display = Some(d);
                }
                drop(mail);
                if let Some(display) = &display {
                    let since = display.generation().saturating_sub(1 + next() % 4);
                    converted +=
                        crate::ui::console::screen::convert_as_the_console_does(display, since);
                    let _ = display.cursor();
                }
            }
        }
        // Then bytes that are no message: the reader stops reading, the window goes on.
        use std::io::Write;
        peer.write_all(&[9, 0, 0, 0, b'{', 0xff, b'"', 0, b'}', 1, 2, 3, 4]).unwrap();
        drop(peer);
        reader.join().expect("the session's thread did not panic");
        assert!(display.is_some(), "the display was made");
        // Some frames were right, and shown.
        assert!(converted > 10_000, "{converted} rows converted");
    }
}
