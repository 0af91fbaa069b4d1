//! A machine's state, to save and restore it (snapshots, suspend, later migration): the
//! state file's format (`format`), guest memory in a file of its own (`memory`: sparse,
//! restored copy-on-write), each vCPU's KVM state (`vcpu`), the VM's own (`vm`: interrupt
//! controllers, PIT, clock).

pub mod format;
pub mod machine;
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

/// A part of a machine's state (a device's own structure) as bytes, inside the state
/// file's checksummed payload: each device encodes what it keeps, so the machine's state
/// holds devices of any kind.
pub fn encode_part<T: Serialize>(value: &T) -> Vec<u8> {
    // Plain structures of numbers, vectors and options: postcard cannot fail on them.
    postcard::to_stdvec(value).unwrap_or_default()
}

/// A part `encode_part` made; the problem if it is not that structure.
pub fn decode_part<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    postcard::from_bytes(bytes).map_err(|e| format!("its saved state does not decode: {e}"))
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
