//! The machine's controller thread. It owns the running instance, takes commands from the
//! handle and requests from devices and vCPUs, and publishes events. It waits in epoll on
//! its control EventFd and the serial-output EventFd; virtio devices are served by their
//! own threads (`io_thread`).

use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use super::config::{DeviceConfig, MachineConfig, RebootPolicy};
use super::control::{Command, ControlMsg};
use super::error::{MachineError, error_chain};
use super::events::{CrashReport, Event, EventSink, MachineState, StopReason};
use super::instance::{Instance, InstanceEnv};
use super::vcpu::{RunMode, VcpuStop};
use crate::devices::PowerRequest;
use crate::devices::storage::image::{ImageFormat, ImageSpec, Layer};
use crate::devices::storage::mmc::Media;
use crate::sync::lock;

const TOKEN_CONTROL: u64 = 1;
const TOKEN_SERIAL: u64 = 2;

pub struct Controller {
    config: MachineConfig,
    env: InstanceEnv,
    rx: Receiver<ControlMsg>,
    control_evt: Arc<EventFd>,
    state: Arc<Mutex<MachineState>>,
    instance: Option<Instance>,
    generation: u64,
    epoll: Epoll,
    /// A live migration under way.
    migrating: Option<Migrating>,
}

struct Migrating {
    /// Whether the machine ran when it began (it runs again if the migration fails).
    was_running: bool,
    /// Whether the switch-over paused it and let its disks go.
    frozen: bool,
    /// The receiver was told to run it and did not confirm.
    unconfirmed: bool,
    generation: u64,
}

impl Controller {
    pub fn new(
        config: MachineConfig,
        env: InstanceEnv,
        rx: Receiver<ControlMsg>,
        control_evt: Arc<EventFd>,
        state: Arc<Mutex<MachineState>>,
        instance: Instance,
    ) -> std::io::Result<Self> {
        let epoll = Epoll::new()?;
        for (fd, token) in
            [(control_evt.as_ref(), TOKEN_CONTROL), (env.serial_ready.as_ref(), TOKEN_SERIAL)]
        {
            epoll.ctl(ControlOperation::Add, fd_of(fd), EpollEvent::new(EventSet::IN, token))?;
        }
        Ok(Controller {
            config,
            env,
            rx,
            control_evt,
            state,
            instance: Some(instance),
            generation: 0,
            epoll,
            migrating: None,
        })
    }

    fn events(&self) -> &EventSink {
        &self.env.events
    }

    fn set_state(&self, state: MachineState) {
        *lock(&self.state) = state.clone();
        self.events().send(Event::StateChanged(state));
    }

    fn state(&self) -> MachineState {
        lock(&self.state).clone()
    }

    pub fn run(mut self) {
        let mut ready = vec![EpollEvent::default(); 64];
        loop {
            let n = match self.epoll.wait(-1, &mut ready) {
                Ok(n) => n,
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) => {
                    self.stop(StopReason::Error(format!("epoll: {e}")));
                    break;
                }
            };
            for event in &ready[..n] {
                match event.data() {
                    TOKEN_SERIAL => {
                        let _ = self.env.serial_ready.read();
                        self.flush_serial();
                    }
                    TOKEN_CONTROL => {
                        let _ = self.control_evt.read();
                    }
                    _ => {}
                }
            }
            let mut quit = false;
            while let Ok(msg) = self.rx.try_recv() {
                if self.handle(msg) {
                    quit = true;
                }
            }
            if quit {
                break;
            }
        }
        self.instance = None;
        self.flush_serial();
    }

    fn flush_serial(&self) {
        let bytes = std::mem::take(&mut *lock(&self.env.serial_out));
        if !bytes.is_empty() {
            self.events().send(Event::Serial(bytes));
        }
    }

    /// Handles one message; true when the controller should exit.
    fn handle(&mut self, msg: ControlMsg) -> bool {
        match msg {
            ControlMsg::Quit => return true,
            ControlMsg::Command(cmd, reply) => {
                let result = self.command(cmd);
                let _ = reply.send(result);
            }
            ControlMsg::Power { generation, request } if generation == self.generation => {
                match request {
                    PowerRequest::PowerOff => self.stop(StopReason::PoweredOff),
                    PowerRequest::Reset => self.guest_reboot(),
                }
            }
            ControlMsg::VcpuStopped { generation, vcpu, stop } if generation == self.generation => {
                match stop {
                    VcpuStop::PowerOff => self.stop(StopReason::PoweredOff),
                    VcpuStop::Reset => self.guest_reboot(),
                    VcpuStop::TripleFault(registers) => {
                        log::error!("vCPU {vcpu} triple-faulted:\n{registers}");
                        self.stop(StopReason::Crashed(Box::new(CrashReport {
                            vcpu,
                            registers: *registers,
                        })))
                    }
                    VcpuStop::Error(message) => {
                        log::error!("{message}");
                        self.stop(StopReason::Error(message))
                    }
                }
            }
            ControlMsg::DeviceFailed { generation, message } if generation == self.generation => {
                log::error!("{message}");
                self.stop(StopReason::Error(message));
            }
            // From an instance that no longer exists (e.g. two vCPUs reporting one reset).
            ControlMsg::Power { .. }
            | ControlMsg::VcpuStopped { .. }
            | ControlMsg::DeviceFailed { .. } => {}
        }
        false
    }

    fn command(&mut self, cmd: Command) -> Result<(), MachineError> {
        let state = self.state();
        let wrong_state =
            || MachineError::InvalidState { command: command_name(&cmd), state: state.name() };
        // After a migration the receiver did not confirm, the user's Resume takes the
        // machine back if its disks can be taken back (if the receiver runs it, it holds
        // them, and this copy must not run).
        if matches!(cmd, Command::Resume)
            && let Some(m) = &self.migrating
            && m.unconfirmed
            && m.generation == self.generation
        {
            let instance = self.instance.as_mut().ok_or_else(wrong_state)?;
            instance.thaw().map_err(|e| {
                MachineError::Migration(format!(
                    "cannot take the machine back from the migration: {}; it probably runs \
                     on the other Vessel: power this copy off",
                    error_chain(&e)
                ))
            })?;
            self.migrating = None;
        }
        // Once its disks are let go, the machine must not run here until the migration
        // ends one way or the other.
        if self.migrating.as_ref().is_some_and(|m| m.frozen && m.generation == self.generation)
            && matches!(
                cmd,
                Command::Start | Command::Resume | Command::Reset | Command::SaveState { .. }
            )
        {
            return Err(MachineError::Migration(format!(
                "cannot {} it while it moves to another Vessel",
                command_name(&cmd)
            )));
        }
        match (&cmd, &state) {
            (Command::Start, MachineState::Created) => {
                self.instance_mode(RunMode::Running);
                self.set_state(MachineState::Running);
            }
            (Command::Start, MachineState::Stopped(_)) => {
                self.rebuild()?;
                self.set_state(MachineState::Running);
            }
            (Command::Pause, MachineState::Running) => {
                if !self.instance_mode(RunMode::Paused) {
                    self.instance_mode(RunMode::Running);
                    return Err(MachineError::NotStopped(format!(
                        "a vCPU did not pause within {} s (stuck in a device or in KVM); \
                         the machine runs on",
                        super::vcpu::SETTLE_LIMIT.as_secs()
                    )));
                }
                self.flush_serial();
                self.set_state(MachineState::Paused);
            }
            (Command::Resume, MachineState::Paused) => {
                self.instance_mode(RunMode::Running);
                self.set_state(MachineState::Running);
            }
            (Command::RequestShutdown, MachineState::Running) => {
                let instance = self.instance.as_ref().ok_or_else(wrong_state)?;
                instance.raise_power_button().map_err(MachineError::PowerButton)?;
            }
            (
                Command::PowerOff,
                MachineState::Running | MachineState::Paused | MachineState::Created,
            ) => {
                self.stop(StopReason::PoweredOff);
            }
            (Command::Reset, MachineState::Running | MachineState::Paused) => {
                self.rebuild()?;
                self.events().send(Event::Rebooted);
                self.set_state(MachineState::Running);
            }
            (
                Command::SerialInput(bytes),
                MachineState::Running | MachineState::Paused | MachineState::Created,
            ) => {
                let instance = self.instance.as_ref().ok_or_else(wrong_state)?;
                lock(&instance.serial).send_input(bytes);
            }
            (Command::SaveState { state, memory, progress }, MachineState::Paused) => {
                self.flush_serial();
                let instance = self.instance.as_mut().ok_or_else(wrong_state)?;
                instance.save_state(state, memory, &*progress.0)?;
            }
            (Command::MigrationBegin(reply), MachineState::Running | MachineState::Paused) => {
                if self.migrating.is_some() {
                    return Err(MachineError::Migration("a migration is under way".into()));
                }
                let instance = self.instance.as_ref().ok_or_else(wrong_state)?;
                let source = instance.migration_source(self.generation);
                self.migrating = Some(Migrating {
                    was_running: matches!(state, MachineState::Running),
                    frozen: false,
                    unconfirmed: false,
                    generation: self.generation,
                });
                let _ = reply.send(source);
            }
            (
                Command::MigrationFreeze { generation, reply },
                MachineState::Running | MachineState::Paused,
            ) => {
                let migrating = self.migrating.as_ref().ok_or_else(wrong_state)?;
                if migrating.generation != *generation || self.generation != *generation {
                    return Err(MachineError::Migration(
                        "the guest restarted during the migration".into(),
                    ));
                }
                if matches!(state, MachineState::Running) && !self.instance_mode(RunMode::Paused) {
                    self.instance_mode(RunMode::Running);
                    return Err(MachineError::NotStopped("a vCPU did not pause in time".into()));
                }
                self.flush_serial();
                let instance = self.instance.as_mut().ok_or_else(wrong_state)?;
                match instance.freeze() {
                    Ok(bytes) => {
                        if let Some(m) = &mut self.migrating {
                            m.frozen = true;
                        }
                        self.set_state(MachineState::Paused);
                        let _ = reply.send(bytes);
                    }
                    Err(e) => {
                        if matches!(state, MachineState::Running) {
                            self.instance_mode(RunMode::Running);
                        }
                        return Err(e);
                    }
                }
            }
            (Command::MigrationAbort, _) => {
                let Some(migrating) = self.migrating.take() else { return Ok(()) };
                if migrating.generation != self.generation {
                    return Ok(());
                }
                if migrating.frozen
                    && let Some(instance) = self.instance.as_mut()
                    && let Err(e) = instance.thaw()
                {
                    // Its disks could not be taken back: it must not run on them.
                    let why = format!("after a failed migration: {}", error_chain(&e));
                    self.stop(StopReason::Error(why));
                    return Err(e);
                }
                if migrating.was_running && matches!(self.state(), MachineState::Paused) {
                    self.instance_mode(RunMode::Running);
                    self.set_state(MachineState::Running);
                }
            }
            (Command::MigrationUnconfirmed, _) => {
                if let Some(m) = &mut self.migrating {
                    m.unconfirmed = true;
                }
            }
            (Command::MigrationDone, _) => {
                self.migrating = None;
                self.stop(StopReason::Migrated);
            }
            (Command::SwitchDisks(overlays), MachineState::Paused) => {
                if self.migrating.is_some() {
                    return Err(MachineError::Migration("a migration is under way".into()));
                }
                let specs = self.overlay_specs(overlays)?;
                let instance = self.instance.as_ref().ok_or_else(wrong_state)?;
                instance.switch_disks(&specs)?;
                let disks = self.config.devices.iter_mut().filter_map(|d| match d {
                    DeviceConfig::Block { image, .. } => Some(image),
                    _ => None,
                });
                for (image, spec) in disks.zip(specs) {
                    if let Some(spec) = spec {
                        *image = spec;
                    }
                }
            }
            (Command::FlushDisks, MachineState::Running | MachineState::Paused) => {
                self.instance.as_ref().ok_or_else(wrong_state)?.flush_disks()?;
            }
            (Command::InsertCd(path), _) => {
                self.cd_config().ok_or(MachineError::NoCdDrive)?;
                let media = Media::open(path)?;
                if let Some(cd) = self.instance.as_ref().and_then(Instance::cd) {
                    let mut ide = lock(&cd);
                    ide.cd().ok_or(MachineError::NoCdDrive)?.swap(media, false)?;
                }
                *self.cd_config().ok_or(MachineError::NoCdDrive)? = Some(path.clone());
            }
            (Command::EjectCd { force }, _) => {
                self.cd_config().ok_or(MachineError::NoCdDrive)?;
                if let Some(cd) = self.instance.as_ref().and_then(Instance::cd) {
                    lock(&cd).cd().ok_or(MachineError::NoCdDrive)?.eject(*force)?;
                }
                *self.cd_config().ok_or(MachineError::NoCdDrive)? = None;
            }
            _ => return Err(wrong_state()),
        }
        Ok(())
    }

    /// The images of each disk on an overlay at `overlays` (in the order of the
    /// configuration's disks): a qcow2 image reading through the disk's image and those
    /// it reads through.
    fn overlay_specs(
        &self,
        overlays: &[Option<std::path::PathBuf>],
    ) -> Result<Vec<Option<ImageSpec>>, MachineError> {
        let disks: Vec<&ImageSpec> = (self.config.devices.iter())
            .filter_map(|d| match d {
                DeviceConfig::Block { image, .. } => Some(image),
                _ => None,
            })
            .collect();
        if disks.len() != overlays.len() {
            return Err(MachineError::InvalidConfig(format!(
                "{} overlays given for the machine's {} disks",
                overlays.len(),
                disks.len()
            )));
        }
        let spec = |(image, overlay): (&&ImageSpec, &Option<std::path::PathBuf>)| {
            let path = overlay.clone()?;
            let below = Layer { path: image.path.clone(), format: image.format };
            let backing = std::iter::once(below).chain(image.backing.iter().cloned()).collect();
            Some(ImageSpec { path, format: ImageFormat::Qcow2, backing })
        };
        Ok(disks.iter().zip(overlays).map(spec).collect())
    }

    /// The ISO the machine's CD drive holds, as the config has it (so a reboot keeps the
    /// disc the user put in); None without a CD drive.
    fn cd_config(&mut self) -> Option<&mut Option<std::path::PathBuf>> {
        self.config.devices.iter_mut().find_map(|d| match d {
            DeviceConfig::CdRom { iso } => Some(iso),
            _ => None,
        })
    }

    /// False if some vCPU did not get to `mode` in time.
    fn instance_mode(&self, mode: RunMode) -> bool {
        self.instance.as_ref().is_none_or(|instance| instance.set_mode(mode))
    }

    /// Ends the running instance, if any: Err names the threads that did not stop.
    fn end_instance(&mut self) -> Result<(), String> {
        let result = self.instance.as_mut().map_or(Ok(()), Instance::shutdown);
        self.instance = None;
        result
    }

    /// Tears the instance down and reports why.
    fn stop(&mut self, reason: StopReason) {
        let reason = match self.end_instance() {
            Ok(()) => reason,
            Err(stuck) => StopReason::Error(stuck),
        };
        self.generation += 1;
        self.flush_serial();
        self.set_state(MachineState::Stopped(reason));
    }

    /// Builds a fresh instance from the config and runs it.
    fn rebuild(&mut self) -> Result<(), MachineError> {
        if let Err(stuck) = self.end_instance() {
            // The old instance's threads may still hold its disks: no new one now.
            self.generation += 1;
            self.flush_serial();
            self.set_state(MachineState::Stopped(StopReason::Error(stuck.clone())));
            return Err(MachineError::NotStopped(stuck));
        }
        self.generation += 1;
        self.flush_serial();
        match Instance::build(&self.config, &self.env, self.generation, None) {
            Ok(instance) => {
                self.instance = Some(instance);
                self.instance_mode(RunMode::Running);
                Ok(())
            }
            Err(e) => {
                self.set_state(MachineState::Stopped(StopReason::Error(e.to_string())));
                Err(e)
            }
        }
    }

    fn guest_reboot(&mut self) {
        match self.config.on_guest_reboot {
            RebootPolicy::Stop => self.stop(StopReason::Reset),
            RebootPolicy::Restart => {
                if self.rebuild().is_ok() {
                    self.events().send(Event::Rebooted);
                    self.set_state(MachineState::Running);
                }
            }
        }
    }
}

fn fd_of(evt: &EventFd) -> std::os::fd::RawFd {
    use std::os::fd::AsRawFd;
    evt.as_raw_fd()
}

fn command_name(cmd: &Command) -> &'static str {
    match cmd {
        Command::Start => "start",
        Command::Pause => "pause",
        Command::Resume => "resume",
        Command::RequestShutdown => "shut down",
        Command::PowerOff => "power off",
        Command::Reset => "reset",
        Command::SerialInput(_) => "send serial input to",
        Command::InsertCd(_) => "insert a CD into",
        Command::EjectCd { .. } => "eject the CD of",
        Command::SaveState { .. } => "save the state of",
        Command::SwitchDisks(_) => "switch the disks of",
        Command::FlushDisks => "flush the disks of",
        Command::MigrationBegin(_) | Command::MigrationFreeze { .. } => "migrate",
        Command::MigrationAbort | Command::MigrationDone | Command::MigrationUnconfirmed => {
            "end the migration of"
        }
    }
}
