//! A VM the app runs: a thread that owns its `MachineHandle` (building it, which can take
//! the kernel off an ISO, happens there too), takes commands from the UI and reports back.
//! The UI keeps the machine's `Display` and `InputSink`, which never block, and otherwise
//! only talks to the thread through channels: a slow machine never freezes the window.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, TryRecvError, channel};
use std::time::{Duration, Instant};

use vm_library::bundle::{Bundle, BundleError};
use vm_library::library::{Library, LibraryError};
use vmm::{
    CrashReport, Display, Event, InputSink, Machine, MachineError, MachineState, StopReason, Usage,
};

use crate::core::launch::{self, LaunchError};
use crate::core::state::VmState;

/// What the UI asks of a running VM.
#[derive(Debug)]
pub enum Command {
    /// The ACPI power button.
    ShutDown,
    PowerOff,
    Reset,
    Pause,
    Resume,
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
    /// The guest crashed (a triple fault), with its registers.
    Crashed(Arc<CrashReport>),
    /// The machine could not start or could not go on.
    Failed(Arc<Failure>),
}

impl PartialEq for Ending {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Ending::PoweredOff, Ending::PoweredOff) => true,
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
            Ending::Crashed(_) => VmState::Crashed,
            Ending::Failed(_) => VmState::Failed,
        }
    }

    /// Why it ended, for people (crashes and failures).
    pub fn reason(&self) -> Option<String> {
        match self {
            Ending::PoweredOff => None,
            Ending::Crashed(report) => Some(crash_reason(report)),
            Ending::Failed(failure) => {
                let mut text = error_chain(failure.as_ref());
                if matches!(failure.as_ref(), Failure::Stopped(_))
                    && let Some(hint) = host_hint()
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
    #[error(transparent)]
    Library(#[from] LibraryError),
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error(transparent)]
    Launch(#[from] LaunchError),
    #[error("cannot build the machine")]
    Build(#[source] MachineError),
    #[error("cannot start the machine")]
    Start(#[source] MachineError),
    #[error("the machine stopped: {0}")]
    Stopped(String),
    #[error("the machine's controller went away")]
    ControllerGone,
    #[error("the VM's thread ended unexpectedly")]
    ThreadEnded,
    #[error("cannot start the VM's thread")]
    Thread(#[source] std::io::Error),
}

/// An error with its causes, "what: why: why".
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let next = cause.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = cause.source();
    }
    text
}

fn failed(failure: impl Into<Failure>) -> Ending {
    Ending::Failed(Arc::new(failure.into()))
}

/// What the thread reports.
enum Update {
    Built {
        display: Display,
        input: InputSink,
        vcpus: u32,
        memory_mib: u64,
        firmware: bool,
    },
    Phase(Phase),
    Serial(Vec<u8>),
    Usage(Usage),
    /// Something the machine says the user should know (no network card, ...).
    Warning(String),
    /// The disc is in the CD drive.
    CdInserted(PathBuf),
    /// A command failed.
    Failed {
        command: &'static str,
        error: MachineError,
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
            Command::InsertCd(_) => "insert a disc",
            Command::EjectCd { .. } => "eject the disc",
            Command::Serial(_) => "type into the serial port",
        }
    }
}

/// A message for a toast.
pub struct Notice {
    pub error: bool,
    pub text: String,
}

/// Serial output kept for the serial view.
const SERIAL_KEEP: usize = 256 * 1024;
/// Usage samples kept for the sparkline (one a second).
pub const HISTORY: usize = 60;

/// The UI's side of a running VM.
pub struct Session {
    pub name: String,
    pub phase: Phase,
    pub display: Option<Display>,
    pub input: Option<InputSink>,
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
    last_usage: Option<(Instant, Usage)>,
    /// When the guest started running.
    running_since: Option<Instant>,
    commands: Sender<Command>,
    updates: Receiver<Update>,
}

impl Session {
    /// Starts the VM in `root` on a new thread; `wake` is called whenever there is news,
    /// including every change of the guest's screen (egui's
    /// `request_repaint`).
    /// The VM's disks may read through to linked-clone bases of the library in `library`.
    pub fn start(
        library: PathBuf,
        root: PathBuf,
        name: String,
        wake: Arc<dyn Fn() + Send + Sync>,
    ) -> Session {
        let (commands, command_rx) = channel();
        let (update_tx, updates) = channel();
        let thread_root = root.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("vessel-vm {name}"))
            .spawn(move || run(&library, &thread_root, command_rx, update_tx, wake));
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
            last_usage: None,
            running_since: None,
            commands,
            updates,
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

    /// Asks the VM to do something; false if its thread is gone.
    pub fn send(&self, command: Command) -> bool {
        self.commands.send(command).is_ok()
    }

    pub fn is_over(&self) -> bool {
        matches!(self.phase, Phase::Ended(_))
    }

    /// Takes what the thread reported since the last call; returns messages for toasts.
    pub fn poll(&mut self) -> Vec<Notice> {
        let mut notices = Vec::new();
        loop {
            match self.updates.try_recv() {
                Ok(Update::Built { display, input, vcpus, memory_mib, firmware }) => {
                    self.display = Some(display);
                    self.input = Some(input);
                    self.vcpus = vcpus;
                    self.memory_mib = memory_mib;
                    self.firmware = firmware;
                }
                Ok(Update::Phase(phase)) => {
                    if phase == Phase::Running && self.running_since.is_none() {
                        self.running_since = Some(Instant::now());
                    }
                    self.phase = phase;
                }
                Ok(Update::Serial(bytes)) => {
                    self.serial.push_str(&String::from_utf8_lossy(&bytes));
                    // Trimmed back to SERIAL_KEEP once it is twice that, so a guest writing
                    // fast costs one move per 256 KiB, not one per write.
                    if self.serial.len() > 2 * SERIAL_KEEP {
                        let mut cut = self.serial.len() - SERIAL_KEEP;
                        while !self.serial.is_char_boundary(cut) {
                            cut += 1;
                        }
                        self.serial.drain(..cut);
                    }
                }
                Ok(Update::Usage(usage)) => self.sample(usage),
                Ok(Update::Warning(text)) => notices.push(Notice { error: false, text }),
                Ok(Update::CdInserted(path)) => notices.push(Notice {
                    error: false,
                    text: format!("{}: {} is in the CD drive", self.name, path.display()),
                }),
                Ok(Update::Failed { command, error }) => notices.push(Notice {
                    error: true,
                    text: format!("{}: cannot {command}: {}", self.name, error_chain(&error)),
                }),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    if !self.is_over() {
                        self.phase = Phase::Ended(failed(Failure::ThreadEnded));
                    }
                    break;
                }
            }
        }
        notices
    }

    fn sample(&mut self, usage: Usage) {
        self.memory_resident = usage.memory_resident;
        let now = Instant::now();
        if let Some((then, last)) = self.last_usage {
            let secs = now.duration_since(then).as_secs_f64().max(1e-3);
            let cpu = usage.vcpu_time.saturating_sub(last.vcpu_time).as_secs_f64() / secs;
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

/// What a guest crash means on this host, for people.
pub fn crash_reason(report: &vmm::CrashReport) -> String {
    let mut reason = format!(
        "the guest crashed (a triple fault on vCPU {}, at RIP {:#x})",
        report.vcpu, report.registers.regs.rip
    );
    if let Some(hint) = host_hint() {
        reason.push_str(". ");
        reason.push_str(hint);
    }
    reason
}

/// This host's known limits, if it has any.
pub fn host_hint() -> Option<&'static str> {
    Path::new("/sys/module/kvm_pvm").exists().then_some(
        "This host's KVM is PVM (kvm_pvm), not hardware virtualization: guest kernel code \
         is only emulated and a standard Linux kernel cannot boot here. On a machine with \
         VT-x or AMD-V this VM runs.",
    )
}

fn run(
    library: &Path,
    root: &Path,
    commands: Receiver<Command>,
    tx: Sender<Update>,
    wake: Arc<dyn Fn() + Send + Sync>,
) {
    let send = |update: Update| {
        let _ = tx.send(update);
        wake();
    };
    let ending = match Library::open(library) {
        Err(e) => failed(e),
        Ok(lib) => match Bundle::open(root) {
            Err(e) => failed(e),
            Ok(bundle) => run_machine(&lib, &bundle, &commands, &send, &wake),
        },
    };
    // The run lock is released by now (run_machine returned): whoever hears of the end
    // and reads the library sees the VM off.
    send(Update::Phase(Phase::Ended(ending)));
}

fn run_machine(
    lib: &Library,
    bundle: &Bundle,
    commands: &Receiver<Command>,
    send: &dyn Fn(Update),
    wake: &Arc<dyn Fn() + Send + Sync>,
) -> Ending {
    let launch = match launch::prepare(lib, bundle) {
        Ok(launch) => launch,
        Err(e) => return failed(e),
    };
    let _running = launch.lock;
    let firmware = matches!(launch.config.boot, vmm::Boot::Firmware(_));
    let handle = match Machine::build(launch.config, None) {
        Ok(handle) => handle,
        Err(e) => return failed(Failure::Build(e)),
    };
    if let Err(e) = launch.one_time.used() {
        send(Update::Warning(format!("{}: {}", bundle.config.name, error_chain(&e))));
    }
    // Every new frame or cursor change repaints the window.
    let repaint = wake.clone();
    handle.display().set_repaint_callback(move || repaint());
    send(Update::Built {
        display: handle.display(),
        input: handle.input(),
        vcpus: bundle.config.vcpus,
        memory_mib: bundle.config.memory_mib,
        firmware,
    });
    if let Err(e) = handle.start() {
        return failed(Failure::Start(e));
    }
    let mut next_sample = Instant::now();
    loop {
        match handle.events().recv_timeout(Duration::from_millis(20)) {
            Ok(Event::StateChanged(MachineState::Running)) => send(Update::Phase(Phase::Running)),
            Ok(Event::StateChanged(MachineState::Paused)) => send(Update::Phase(Phase::Paused)),
            Ok(Event::StateChanged(MachineState::Stopped(reason))) => {
                return match reason {
                    StopReason::PoweredOff | StopReason::Reset => Ending::PoweredOff,
                    StopReason::Crashed(report) => Ending::Crashed(Arc::from(report)),
                    StopReason::Error(message) => failed(Failure::Stopped(message)),
                };
            }
            Ok(Event::Serial(bytes)) => send(Update::Serial(bytes)),
            Ok(Event::Warning(text)) => send(Update::Warning(text)),
            Ok(_) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                return failed(Failure::ControllerGone);
            }
        }
        loop {
            let command = match commands.try_recv() {
                Ok(command) => command,
                Err(TryRecvError::Empty) => break,
                // The app is gone: the machine goes with it.
                Err(TryRecvError::Disconnected) => {
                    let _ = handle.power_off();
                    return Ending::PoweredOff;
                }
            };
            let verb = command.verb();
            let result = match command {
                Command::ShutDown => handle.request_shutdown(),
                Command::PowerOff => handle.power_off(),
                Command::Reset => handle.reset(),
                Command::Pause => handle.pause(),
                Command::Resume => handle.resume(),
                Command::InsertCd(path) => {
                    handle.insert_cd(&path).map(|()| send(Update::CdInserted(path)))
                }
                Command::EjectCd { force } => handle.eject_cd(force),
                Command::Serial(bytes) => handle.send_serial(&bytes),
            };
            if let Err(error) = result {
                send(Update::Failed { command: verb, error });
            }
        }
        if Instant::now() >= next_sample {
            send(Update::Usage(handle.usage()));
            next_sample += Duration::from_secs(1);
        }
    }
}
