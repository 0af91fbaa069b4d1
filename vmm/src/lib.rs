//! Vessel's virtual machine monitor: KVM-backed x86-64 machines that run in background
//! threads and are driven through a `MachineHandle`.
//!
//! Layout (after Firecracker's `vmm` crate): `arch` (boot protocols, CPUID, registers,
//! ACPI), `vstate` (KVM and guest memory), `devices` (buses and device models), `machine`
//! (build, lifecycle, the handle), `firmware` (fw_cfg), `sync` (locking), `seccomp`
//! (the system call filters of a VM process's threads), `sched` (what a thread asks of
//! the scheduler).

pub mod arch;
pub mod devices;
pub mod display;
pub mod firmware;
pub mod input;
pub mod machine;
pub mod migration;
pub mod persist;
pub mod sched;
pub mod seccomp;
pub mod sync;
pub mod vhost_user;
pub mod vstate;

pub use arch::x86_64::boot::BootSource;
pub use devices::storage::image::{ImageFormat, ImageSpec, Layer};
pub use display::Display;
pub use input::{Button, InputKind, InputSink};
pub use machine::{
    Boot, BootDevice, CrashReport, DeviceConfig, Event, FirmwareBoot, Machine, MachineConfig,
    MachineError, MachineHandle, MachineState, RebootPolicy, StopReason, Usage, WakeFn,
};
