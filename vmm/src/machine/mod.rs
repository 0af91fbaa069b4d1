//! Machines: built from a `MachineConfig`, run in background threads (one per vCPU, one per
//! virtio device, and the controller), and driven only through a `MachineHandle`.

pub mod config;
mod control;
mod controller;
mod error;
pub mod events;
mod instance;
pub(crate) mod io_thread;
pub mod stats;
mod vcpu;

use std::sync::mpsc::{Receiver, channel, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use vmm_sys_util::eventfd::EventFd;

pub use config::{
    Boot, BootDevice, DeviceConfig, FirmwareBoot, MAX_VCPUS, MachineConfig, RebootPolicy,
};
pub use error::{MachineError, error_chain};
pub use events::{CrashReport, Event, MachineState, StopReason, WakeFn};
pub use stats::{MachineStats, Usage};

use control::{Command, ControlMsg, ControlSender};
use controller::Controller;
use events::EventSink;

use crate::display::Display;
use crate::input::InputSink;
use instance::{Instance, InstanceEnv};

/// Entry point: `Machine::build(config, wake)`.
pub struct Machine;

impl Machine {
    /// Builds the machine (KVM VM, memory, kernel, devices, vCPU threads) and its
    /// controller thread. The vCPUs wait for `MachineHandle::start`. `wake` is called after
    /// every event.
    pub fn build(
        config: MachineConfig,
        wake: Option<WakeFn>,
    ) -> Result<MachineHandle, MachineError> {
        Self::build_from(config, wake, None)
    }

    /// Builds the machine `config` describes from a state `MachineHandle::save_state`
    /// wrote: `state` its state file, `memory` its memory file (mapped copy-on-write: it
    /// must not change while the machine runs). Every part of the state is checked against
    /// the machine before it is taken; the vCPUs wait for `start`, then go on where they
    /// were.
    pub fn restore(
        config: MachineConfig,
        wake: Option<WakeFn>,
        state: &std::fs::File,
        memory: &std::fs::File,
    ) -> Result<MachineHandle, MachineError> {
        use std::os::unix::fs::FileExt;
        let fail = |e: String| MachineError::RestoreState(e);
        let size = state.metadata().map_err(|e| fail(e.to_string()))?.len();
        if size > crate::persist::format::MAX_STATE + 4096 {
            return Err(fail(format!("its state file is {size} bytes, more than a state can be")));
        }
        // From its start, whatever the file's offset.
        let mut bytes = vec![0u8; size as usize];
        state.read_exact_at(&mut bytes, 0).map_err(|e| fail(e.to_string()))?;
        let saved: crate::persist::machine::MachineState =
            crate::persist::format::decode(&bytes).map_err(|e| fail(e.to_string()))?;
        let expected = memory_layout(config.memory_bytes);
        let mem = crate::persist::memory::restore(memory, &saved.memory, &expected)
            .map_err(|e| fail(e.to_string()))?;
        Self::build_from(config, wake, Some(instance::Restoring { state: saved, mem }))
    }

    /// Builds the machine `config` describes from a live migration's state and the memory
    /// it brought; the vCPUs wait for `start`.
    pub(crate) fn from_migration(
        config: MachineConfig,
        wake: Option<WakeFn>,
        state: crate::persist::machine::MachineState,
        mem: crate::vstate::memory::GuestMem,
    ) -> Result<MachineHandle, MachineError> {
        Self::build_from(config, wake, Some(instance::Restoring { state, mem }))
    }

    fn build_from(
        mut config: MachineConfig,
        wake: Option<WakeFn>,
        restoring: Option<instance::Restoring>,
    ) -> Result<MachineHandle, MachineError> {
        let built_at = Instant::now();
        let (event_tx, event_rx) = channel();
        let (control_tx, control_rx) = channel();
        let new_evt =
            || EventFd::new(libc::EFD_NONBLOCK).map(Arc::new).map_err(MachineError::EventFd);
        let control_evt = new_evt()?;
        let env = InstanceEnv {
            control: ControlSender::new(control_tx, control_evt.clone()),
            events: EventSink::new(event_tx, wake),
            serial_out: Arc::new(Mutex::new(Vec::new())),
            serial_ready: new_evt()?,
            built_at,
            input: InputSink::new().map_err(MachineError::EventFd)?,
            display: Display::new().map_err(MachineError::EventFd)?,
            stats: Arc::default(),
        };
        env.input.attach_display(env.display.clone());
        let instance = Instance::build(&config, &env, 0, restoring)?;
        // A one-time boot order is this power-on's: the guest's reboots and later starts
        // boot as usual.
        if let Boot::Firmware(fw) = &mut config.boot {
            fw.first_boot_order = None;
        }
        let state = Arc::new(Mutex::new(MachineState::Created));
        let control = env.control.clone();
        let input = env.input.clone();
        let display = env.display.clone();
        let stats = env.stats.clone();
        let controller =
            Controller::new(config, env, control_rx, control_evt, state.clone(), instance)
                .map_err(MachineError::Thread)?;
        let thread = std::thread::Builder::new()
            .name("vessel-machine".into())
            .spawn(move || {
                crate::seccomp::confine_this_thread(crate::seccomp::ThreadKind::Controller);
                controller.run()
            })
            .map_err(MachineError::Thread)?;
        Ok(MachineHandle {
            control,
            events: event_rx,
            state,
            thread: Some(thread),
            built_at,
            input,
            display,
            stats,
        })
    }
}

/// Where the RAM of a machine with `memory_bytes` lies.
pub fn memory_layout(memory_bytes: u64) -> crate::persist::memory::MemoryLayout {
    crate::persist::memory::MemoryLayout {
        regions: crate::arch::x86_64::layout::ram_ranges(memory_bytes)
            .into_iter()
            .map(|(start, len)| (vm_memory::Address::raw_value(&start), len as u64))
            .collect(),
    }
}

/// The CPUID this host's KVM gives the first vCPU of a new machine with `vcpus` vCPUs.
pub fn host_cpuid(vcpus: u8) -> Result<Vec<crate::migration::cpu::Leaf>, MachineError> {
    let kvm = crate::vstate::kvm::open_kvm()?;
    let mut cpuid = kvm
        .get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
        .map_err(|source| MachineError::Kvm { what: "read supported CPUID", source })?;
    let tsc_deadline = kvm.check_extension(kvm_ioctls::Cap::TscDeadlineTimer);
    crate::arch::x86_64::cpuid::normalize(&mut cpuid, 0, vcpus, tsc_deadline);
    Ok(cpuid.as_slice().iter().map(Into::into).collect())
}

/// Drives a machine's controller for a live migration's sender, from the sender's thread.
#[derive(Clone)]
struct MigrationControls {
    control: ControlSender,
}

impl MigrationControls {
    fn command(&self, cmd: Command) -> Result<(), MachineError> {
        command(&self.control, cmd)
    }
}

/// Sends `cmd` to the controller and waits for its answer.
fn command(control: &ControlSender, cmd: Command) -> Result<(), MachineError> {
    let (reply_tx, reply_rx) = sync_channel(1);
    if !control.send(ControlMsg::Command(cmd, reply_tx)) {
        return Err(MachineError::Gone);
    }
    reply_rx.recv().map_err(|_| MachineError::Gone)?
}

impl crate::migration::Controls for MigrationControls {
    fn begin(&self) -> Result<crate::migration::Source, String> {
        let (tx, rx) = sync_channel(1);
        self.command(Command::MigrationBegin(tx)).map_err(|e| error_chain(&e))?;
        rx.recv().map_err(|_| MachineError::Gone.to_string())
    }

    fn freeze(&self, generation: u64) -> Result<Vec<u8>, String> {
        let (tx, rx) = sync_channel(1);
        self.command(Command::MigrationFreeze { generation, reply: tx })
            .map_err(|e| error_chain(&e))?;
        rx.recv().map_err(|_| MachineError::Gone.to_string())
    }

    fn abort(&self) {
        if let Err(e) = self.command(Command::MigrationAbort) {
            log::error!("after a failed migration: {}", error_chain(&e));
        }
    }

    fn done(&self) {
        let _ = self.command(Command::MigrationDone);
    }

    fn unconfirmed(&self) {
        let _ = self.command(Command::MigrationUnconfirmed);
    }
}

/// Migrates a machine (`MachineHandle::migrator`): cheap, and usable from any thread.
#[derive(Clone)]
pub struct Migrator {
    controls: MigrationControls,
}

impl Migrator {
    /// `MachineHandle::migrate`.
    pub fn migrate(
        &self,
        conn: &mut dyn crate::migration::Connection,
        options: &crate::migration::MigrateOptions,
        progress: impl Fn(&crate::migration::Progress) + Send + Sync,
    ) -> Result<crate::migration::Migrated, crate::migration::MigrationError> {
        let controls = &self.controls;
        // On a thread of its own, under the controller's system call filters (it reads
        // KVM's dirty log). A thread's filters bind the threads it starts: in a confined
        // process the caller must be a thread whose filters allow that much (the VM
        // process's main thread, or one confined as the controller).
        std::thread::scope(|scope| {
            let thread = std::thread::Builder::new().name("vessel-migrate".into()).spawn_scoped(
                scope,
                || {
                    crate::seccomp::confine_this_thread(crate::seccomp::ThreadKind::Controller);
                    crate::migration::send(controls, conn, options, &progress)
                },
            );
            let thread = thread.map_err(|e| {
                crate::migration::MigrationError::Machine(format!("cannot start a thread: {e}"))
            })?;
            thread.join().unwrap_or_else(|_| {
                Err(crate::migration::MigrationError::Machine("the migration panicked".into()))
            })
        })
    }
}

/// The only way into a running machine. Dropping it powers the machine off and joins all
/// of its threads.
pub struct MachineHandle {
    control: ControlSender,
    events: Receiver<Event>,
    state: Arc<Mutex<MachineState>>,
    thread: Option<JoinHandle<()>>,
    built_at: Instant,
    input: InputSink,
    display: Display,
    stats: Arc<MachineStats>,
}

impl MachineHandle {
    fn command(&self, cmd: Command) -> Result<(), MachineError> {
        command(&self.control, cmd)
    }

    /// Starts the vCPUs (or, from Stopped, boots the machine again).
    pub fn start(&self) -> Result<(), MachineError> {
        self.command(Command::Start)
    }

    pub fn pause(&self) -> Result<(), MachineError> {
        self.command(Command::Pause)
    }

    pub fn resume(&self) -> Result<(), MachineError> {
        self.command(Command::Resume)
    }

    /// Presses the ACPI power button; the guest decides how to shut down.
    pub fn request_shutdown(&self) -> Result<(), MachineError> {
        self.command(Command::RequestShutdown)
    }

    /// Stops the machine at once, like pulling the plug.
    pub fn power_off(&self) -> Result<(), MachineError> {
        self.command(Command::PowerOff)
    }

    /// Hard reset: the machine restarts from the beginning.
    pub fn reset(&self) -> Result<(), MachineError> {
        self.command(Command::Reset)
    }

    /// Puts the ISO image at `path` in the CD drive (swapping out what was there); the
    /// guest sees a medium change. The disc stays in across reboots. If the guest locked
    /// the tray with a disc in, this fails like `eject_cd(false)` (the guest is asked).
    pub fn insert_cd(&self, path: &std::path::Path) -> Result<(), MachineError> {
        self.command(Command::InsertCd(path.to_path_buf()))
    }

    /// Takes the disc out of the CD drive. If the guest has locked the tray, it is only
    /// asked to eject (an error says so) unless `force`.
    pub fn eject_cd(&self, force: bool) -> Result<(), MachineError> {
        self.command(Command::EjectCd { force })
    }

    /// Makes what the guest wrote to its disks durable.
    pub fn flush_disks(&self) -> Result<(), MachineError> {
        self.command(Command::FlushDisks)
    }

    /// Puts the paused machine's disks on new qcow2 overlays (`overlays`, in the order of
    /// its configuration's disks; `None` keeps one as it is), each reading through the
    /// disk's image, which the machine only reads from then on: what the guest writes
    /// goes to the overlays. The overlays exist already (the caller made them, at the
    /// disks' sizes). On failure every disk stays as it was.
    pub fn switch_disks(
        &self,
        overlays: Vec<Option<std::path::PathBuf>>,
    ) -> Result<(), MachineError> {
        self.command(Command::SwitchDisks(overlays))
    }

    /// Writes the paused machine's state into `state` and its memory into `memory` (both
    /// emptied first), for `Machine::restore`; the machine stays paused.
    pub fn save_state(
        &self,
        state: std::fs::File,
        memory: std::fs::File,
    ) -> Result<(), MachineError> {
        self.save_state_with(state, memory, |_, _| {})
    }

    /// `save_state`, telling `progress` (bytes of guest memory saved, bytes in all) as the
    /// memory is written, from the machine's controller thread.
    pub fn save_state_with(
        &self,
        state: std::fs::File,
        memory: std::fs::File,
        progress: impl Fn(u64, u64) + Send + Sync + 'static,
    ) -> Result<(), MachineError> {
        let progress = control::Progress(Box::new(progress));
        self.command(Command::SaveState { state, memory, progress })
    }

    /// Moves the running (or paused) machine to the Vessel at the other end of `conn` by
    /// live migration (`crate::migration`), telling `progress` how far it is. On success
    /// the machine runs there and is stopped here (`StopReason::Migrated`); on failure it
    /// runs on here as before, except after an `Unconfirmed` one (paused here).
    pub fn migrate(
        &self,
        conn: &mut dyn crate::migration::Connection,
        options: &crate::migration::MigrateOptions,
        progress: impl Fn(&crate::migration::Progress) + Send + Sync,
    ) -> Result<crate::migration::Migrated, crate::migration::MigrationError> {
        self.migrator().migrate(conn, options, progress)
    }

    /// What migrates this machine from another thread than the handle's.
    pub fn migrator(&self) -> Migrator {
        Migrator { controls: MigrationControls { control: self.control.clone() } }
    }

    /// Types `bytes` into COM1.
    pub fn send_serial(&self, bytes: &[u8]) -> Result<(), MachineError> {
        self.command(Command::SerialInput(bytes.to_vec()))
    }

    pub fn events(&self) -> &Receiver<Event> {
        &self.events
    }

    pub fn state(&self) -> MachineState {
        crate::sync::lock(&self.state).clone()
    }

    /// The machine's keyboard and pointers (its `DeviceConfig::Input` devices). Cheap to
    /// clone, never blocks; events for a device the machine lacks are never taken (the
    /// queue keeps the newest and counts the rest as dropped).
    pub fn input(&self) -> InputSink {
        self.input.clone()
    }

    /// The guest's screen (its `DeviceConfig::Gpu`), with damage, cursor and resize
    /// requests. Cheap to clone.
    pub fn display(&self) -> Display {
        self.display.clone()
    }

    /// What the machine uses now (vCPU time, disk and network activity); compare two
    /// readings for a rate. Never blocks on the machine.
    pub fn usage(&self) -> Usage {
        self.stats.usage()
    }

    /// When `Machine::build` began; debug markers are measured from it.
    pub fn built_at(&self) -> Instant {
        self.built_at
    }
}

impl Drop for MachineHandle {
    fn drop(&mut self) {
        self.control.send(ControlMsg::Quit);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
