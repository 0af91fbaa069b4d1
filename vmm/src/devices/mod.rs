//! Device models. Each is a `BusDevice` on the port-I/O or MMIO bus.

pub mod bus;
#[cfg(feature = "test-devices")]
pub mod faulty;
pub mod legacy;
pub mod log_limit;
pub mod net;
pub mod pci;
pub mod storage;
pub mod vga;
pub mod virtio;

use std::sync::Arc;

/// A machine-level action a device asks for (the guest wrote a power or reset register).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PowerRequest {
    PowerOff,
    Reset,
}

/// Where devices send power requests; the machine's controller acts on them.
pub type PowerSink = Arc<dyn Fn(PowerRequest) + Send + Sync>;
