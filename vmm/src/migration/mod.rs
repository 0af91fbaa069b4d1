//! Live migration: a running machine moves to another Vessel over a byte stream (a unix
//! or TCP socket, an SSH channel; which one is the caller's business) with a pause the
//! guest barely notices. Pre-copy, as Cloud Hypervisor and QEMU do it:
//!
//! 1. The sender greets and states what the machine needs (`Requirements`: memory layout,
//!    vCPUs, the guest's CPUID); the receiver accepts, or refuses before any memory moves
//!    (a CPU feature this host lacks is named).
//! 2. Memory in passes while the guest runs: the first sends every page with data, each
//!    next one the pages changed since (KVM's dirty log for the guest's writes, the
//!    written-pages bitmap for the VMM's: `vstate::dirty`), until what is left would take
//!    no longer than the target downtime to send, or a pass limit or time limit is hit.
//!    Without shared storage (`MigrateOptions::copy_disks`) the writable disks go the same
//!    way (`disks`): what each holds of its own first, then the chunks written since.
//! 3. The sender pauses the machine, sends the last changed pages (and disk chunks) and
//!    the machine's state (`persist`), and lets its disks go; the receiver builds the machine (taking the
//!    disks) and says `Ready`; the sender says `Go` and from then on never runs the
//!    machine again; the receiver starts it and says `Running`; the sender's machine stops
//!    (`StopReason::Migrated`).
//!
//! Until `Go`, any failure (the link, the receiver, a cancel) leaves the sender's machine
//! running as before and the receiver discards everything. After `Go`, a link that breaks
//! before `Running` leaves the sender's machine paused, not running (`Unconfirmed`): the
//! receiver may be running it, and two copies of one machine must never run.

pub mod cpu;
pub mod disks;
mod receive;
mod send;
pub mod wire;

use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use receive::{ReceiveOptions, Received, receive, receive_memory, receive_with};
pub use send::{Source, send};

use crate::persist::memory::MemoryLayout;

/// The stream a migration goes over.
pub trait Connection: Read + Write + Send {}
impl<T: Read + Write + Send> Connection for T {}

/// What the machine needs of the host it moves to.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Requirements {
    pub memory: MemoryLayout,
    pub vcpus: u8,
    /// The guest's CPUID (its first vCPU's).
    pub cpuid: Vec<cpu::Leaf>,
    /// The sizes of the writable disks the sender copies (`MigrateOptions::copy_disks`);
    /// None: the receiver opens the same disks (shared storage).
    pub disks: Option<Vec<u64>>,
}

/// When to stop copying memory while the guest runs.
#[derive(Clone, Debug)]
pub struct MigrateOptions {
    /// The pause the guest may have: pre-copy ends when what is left would take no longer
    /// to send (at the rate measured so far).
    pub downtime: Duration,
    /// Most passes over memory while the guest runs.
    pub max_passes: u32,
    /// Most time copying while the guest runs.
    pub timeout: Duration,
    /// What happens when the limit is hit before the downtime target is met.
    pub on_limit: OnLimit,
    /// Set to cancel (checked between frames): the machine runs on here.
    pub cancel: Arc<AtomicBool>,
    /// What else the machine's owner lets go at the switch-over and takes back if the
    /// migration then fails (a VM process's run lock).
    pub hand_over: Option<HandOver>,
    /// The writable disks go too (`disks`), for a receiver without shared storage.
    pub copy_disks: bool,
}

/// Called with true at the switch-over (let go), false if the migration fails after it
/// (take back).
#[derive(Clone)]
pub struct HandOver(pub Arc<dyn Fn(bool) -> Result<(), String> + Send + Sync>);

impl std::fmt::Debug for HandOver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HandOver")
    }
}

impl Default for MigrateOptions {
    fn default() -> Self {
        MigrateOptions {
            downtime: Duration::from_millis(300),
            max_passes: 30,
            timeout: Duration::from_secs(600),
            on_limit: OnLimit::Complete,
            cancel: Arc::default(),
            hand_over: None,
            copy_disks: false,
        }
    }
}

/// A guest that changes its memory faster than the link carries it never meets the
/// downtime target: at the limit, the migration either completes with a longer pause
/// (stated in the outcome) or is cancelled and the guest runs on here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnLimit {
    Complete,
    Cancel,
}

/// How far a migration is, told after each pass and at each phase.
#[derive(Clone, Debug, Default)]
pub struct Progress {
    pub phase: Phase,
    /// The pass over memory under way (1: all of it).
    pub pass: u32,
    /// Bytes of guest memory (and copied disks) sent so far, in all passes.
    pub sent: u64,
    /// Bytes of guest memory (and copied disks) changed and not sent yet (as of the last
    /// look).
    pub remaining: u64,
    /// Bytes the guest (and devices) changed a second, during the last pass.
    pub dirty_rate: u64,
    /// Bytes a second the link carried, during the last pass.
    pub bandwidth: u64,
    /// The pause the guest would have if the machine stopped now.
    pub downtime_estimate: Duration,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Phase {
    /// Memory goes over while the guest runs.
    #[default]
    Copying,
    /// The machine is paused: the last pages and its state go over.
    Stopping,
    /// The receiver builds the machine and takes over.
    HandingOver,
}

/// A migration that completed: the machine runs on the receiver.
#[derive(Clone, Debug)]
pub struct Migrated {
    pub passes: u32,
    /// Bytes of guest memory sent, and of the machine's state.
    pub memory_bytes: u64,
    pub state_bytes: u64,
    /// Bytes of disk data sent (copied disks; zeroes not counted).
    pub disk_bytes: u64,
    /// From the start to the receiver's `Running`.
    pub total: Duration,
    /// From the pause here to the receiver's `Running`.
    pub downtime: Duration,
    /// Whether the downtime target was met before the pause (else a limit was hit).
    pub converged: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error(transparent)]
    Wire(#[from] wire::WireError),
    #[error("the other Vessel refused the machine: {0}")]
    Refused(String),
    #[error("the other Vessel failed to take the machine: {0}; it runs on here")]
    ReceiverFailed(String),
    #[error("the migration was cancelled; the machine runs on here")]
    Cancelled,
    #[error(
        "the guest changes its memory faster than the link carries it: after {passes} passes \
         the pause would still be {estimate:?}; the migration was cancelled as asked and the \
         machine runs on here"
    )]
    DidNotConverge { passes: u32, estimate: Duration },
    #[error(
        "the other Vessel was told to run the machine, but did not confirm it ({0}); the \
         machine stays paused here. Check the other side: if the machine runs there, power \
         this copy off; if not, resume it here (refused while the other side holds its \
         disks)"
    )]
    Unconfirmed(String),
    #[error("the machine: {0}")]
    Machine(String),
    #[error("this host cannot run the machine: {0}")]
    Incompatible(String),
    #[error("the sender broke the protocol: {0}")]
    Protocol(String),
    #[error("the sender cancelled the migration")]
    SenderCancelled,
    #[error("the sender gave up the migration: {0}")]
    SenderFailed(String),
}

impl MigrationError {
    /// Whether the source's machine runs on (false only for `Unconfirmed`).
    pub fn source_runs_on(&self) -> bool {
        !matches!(self, MigrationError::Unconfirmed(_))
    }
}

/// Parts of the controller a sender drives (`machine::MachineHandle`).
pub trait Controls {
    /// Starts dirty tracking; what the sender reads.
    fn begin(&self) -> Result<Source, String>;
    /// Pauses the machine, stops its devices, lets go of its disks; its state's bytes.
    fn freeze(&self, generation: u64) -> Result<Vec<u8>, String>;
    /// Takes the machine back after a failed migration: devices, disks, and running if
    /// it was.
    fn abort(&self);
    /// The receiver runs the machine: this one stops for good.
    fn done(&self);
    /// The receiver was told to run the machine and did not confirm it: this one stays
    /// paused, and may be resumed only if its disks can be taken back.
    fn unconfirmed(&self);
}
