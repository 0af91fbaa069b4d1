//! What a machine tells its owner: state changes, serial output, boot milestones.

use std::sync::Arc;
use std::sync::mpsc::Sender;
use std::time::Duration;

use crate::arch::x86_64::regs::VcpuRegisters;

/// Called after every event is queued, so a GUI can wake up (egui's `request_repaint`).
pub type WakeFn = Arc<dyn Fn() + Send + Sync>;

#[derive(Clone, Debug)]
pub enum MachineState {
    /// Built; vCPUs not started yet.
    Created,
    Running,
    Paused,
    Stopped(StopReason),
}

impl MachineState {
    pub fn name(&self) -> &'static str {
        match self {
            MachineState::Created => "created",
            MachineState::Running => "running",
            MachineState::Paused => "paused",
            MachineState::Stopped(_) => "stopped",
        }
    }
}

#[derive(Clone, Debug)]
pub enum StopReason {
    /// The guest powered off, or the host pulled the plug.
    PoweredOff,
    /// The guest rebooted and the machine's policy is to stop.
    Reset,
    /// A vCPU triple-faulted (or KVM reported a guest crash).
    Crashed(Box<CrashReport>),
    /// The VMM could not go on (KVM error, emulation failure).
    Error(String),
    /// The machine moved to another Vessel by live migration, and runs there.
    Migrated,
}

/// The state of the vCPU that brought the machine down.
#[derive(Clone, Debug)]
pub struct CrashReport {
    pub vcpu: u8,
    pub registers: VcpuRegisters,
}

#[derive(Clone, Debug)]
pub enum Event {
    StateChanged(MachineState),
    /// Bytes the guest wrote to COM1.
    Serial(Vec<u8>),
    /// The guest wrote `code` to the debug port, `since_build` after `Machine::build` began.
    DebugMarker {
        code: u8,
        since_build: Duration,
    },
    /// The machine restarted (guest reboot or host reset) and is running again.
    Rebooted,
    /// Something the user should know that did not stop the machine (a missing optional
    /// host component, say), with what to do about it.
    Warning(String),
}

/// The sending side of the event channel, shared by the controller and vCPU threads.
#[derive(Clone)]
pub struct EventSink {
    tx: Sender<Event>,
    wake: Option<WakeFn>,
}

impl EventSink {
    pub fn new(tx: Sender<Event>, wake: Option<WakeFn>) -> Self {
        EventSink { tx, wake }
    }

    /// Queues `event`; a dropped receiver is fine (nobody is listening any more).
    pub fn send(&self, event: Event) {
        let _ = self.tx.send(event);
        if let Some(wake) = &self.wake {
            wake();
        }
    }
}
