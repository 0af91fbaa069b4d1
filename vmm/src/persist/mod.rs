//! A machine's state, to save and restore it (snapshots, suspend, later migration): the
//! state file's format (`format`), guest memory in a file of its own (`memory`: sparse,
//! restored copy-on-write), each vCPU's KVM state (`vcpu`), the VM's own (`vm`: interrupt
//! controllers, PIT, clock).

pub mod format;
pub mod memory;
pub mod vcpu;
pub mod vm;

#[cfg(test)]
mod tests;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// A device whose state goes into a machine's saved state. What `restore_state` takes
/// comes from a file (a state can be imported with a VM): every value is checked, a state
/// the device cannot take is refused with why, never a panic.
pub trait Persist {
    type State: Serialize + DeserializeOwned;
    /// Its state now (the machine is paused).
    fn save_state(&self) -> Self::State;
    /// Takes `state` in place of its own.
    fn restore_state(&mut self, state: &Self::State) -> Result<(), DeviceStateError>;
}

/// A saved device state its device cannot take.
#[derive(Debug, thiserror::Error)]
#[error("the saved state of the {device} is not one it can take: {problem}")]
pub struct DeviceStateError {
    pub device: &'static str,
    pub problem: String,
}

impl DeviceStateError {
    pub fn new(device: &'static str, problem: impl Into<String>) -> Self {
        DeviceStateError { device, problem: problem.into() }
    }
}
