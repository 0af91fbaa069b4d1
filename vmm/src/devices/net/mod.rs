//! Network backends: where a virtual NIC's frames go on the host.

pub mod passt;

use std::os::fd::RawFd;

/// A host endpoint that carries Ethernet frames.
pub trait NetBackend: Send {
    /// The fd to wait on (readable: frames arrived; writable: room to send).
    fn fd(&self) -> RawFd;
    /// Queues one frame for sending; false when the backend is full (try again later).
    fn send(&mut self, frame: &[u8]) -> bool;
    /// The next received frame, if a complete one has arrived.
    fn recv(&mut self) -> Option<Vec<u8>>;
}
