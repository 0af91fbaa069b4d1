//! The messages that reach a machine's controller thread: commands from the handle, and
//! what vCPUs and devices report. Everything that talks to the controller goes through a
//! `ControlSender`; the controller is the only reader.

use std::sync::Arc;
use std::sync::mpsc::{Sender, SyncSender};

use vmm_sys_util::eventfd::EventFd;

use super::error::MachineError;
use super::vcpu::VcpuStop;
use crate::devices::PowerRequest;

/// Host commands; each is answered.
#[derive(Debug)]
pub enum Command {
    Start,
    Pause,
    Resume,
    RequestShutdown,
    PowerOff,
    Reset,
    SerialInput(Vec<u8>),
    InsertCd(std::path::PathBuf),
    EjectCd {
        force: bool,
    },
    /// The paused machine's disks (in the order of its configuration) go on in new qcow2
    /// overlays at these paths, each reading through the image the disk was on (which is
    /// then only read); `None` keeps a disk as it is. Reboots open the overlays.
    SwitchDisks(Vec<Option<std::path::PathBuf>>),
    /// What the guest wrote to its disks is made durable.
    FlushDisks,
    /// Writes the paused machine's state and memory into these files, telling `progress`
    /// how far the memory is.
    SaveState {
        state: std::fs::File,
        memory: std::fs::File,
        progress: Progress,
    },
    /// A live migration begins: dirty tracking starts; what the sender reads comes back.
    MigrationBegin(SyncSender<crate::migration::Source>),
    /// The switch-over: pause, stop the devices, let go of the disks; the machine's state
    /// comes back. Refused if the guest rebooted since `MigrationBegin` (`generation`).
    MigrationFreeze {
        generation: u64,
        reply: SyncSender<Vec<u8>>,
    },
    /// The migration failed: the machine takes its devices and disks back and runs on as
    /// it did.
    MigrationAbort,
    /// The machine runs elsewhere: this one stops.
    MigrationDone,
    /// The receiver did not confirm it runs the machine: this one stays paused; a Resume
    /// takes it back only if its disks can be taken back.
    MigrationUnconfirmed,
}

/// Told (bytes of guest memory saved, bytes in all) as a save goes on.
pub struct Progress(pub Box<dyn Fn(u64, u64) + Send + Sync>);

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Progress")
    }
}

pub enum ControlMsg {
    Command(Command, SyncSender<Result<(), MachineError>>),
    Power {
        generation: u64,
        request: PowerRequest,
    },
    VcpuStopped {
        generation: u64,
        vcpu: u8,
        stop: VcpuStop,
    },
    /// A device thread failed (panicked); the text says which.
    DeviceFailed {
        generation: u64,
        message: String,
    },
    Quit,
}

/// Sends to the controller and wakes it.
#[derive(Clone)]
pub struct ControlSender {
    tx: Sender<ControlMsg>,
    wake: Arc<EventFd>,
}

impl ControlSender {
    pub fn new(tx: Sender<ControlMsg>, wake: Arc<EventFd>) -> Self {
        ControlSender { tx, wake }
    }

    /// Returns false if the controller is gone.
    pub fn send(&self, msg: ControlMsg) -> bool {
        let sent = self.tx.send(msg).is_ok();
        let _ = self.wake.write(1);
        sent
    }
}
