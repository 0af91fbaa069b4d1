//! What a PS/2 device holds for the host: a bounded queue of bytes the controller takes one
//! at a time, and the last byte taken, which RESEND (0xFE) sends again.

use std::collections::VecDeque;

/// What both devices answer.
pub const ACK: u8 = 0xfa;
pub const RESEND: u8 = 0xfe;
pub const SELF_TEST_PASSED: u8 = 0xaa;

/// The commands both devices take (IBM's reference gives them the same codes).
pub const CMD_GET_ID: u8 = 0xf2;
pub const CMD_ENABLE: u8 = 0xf4;
pub const CMD_DISABLE: u8 = 0xf5;
pub const CMD_DEFAULTS: u8 = 0xf6;
pub const CMD_RESEND: u8 = 0xfe;
pub const CMD_RESET: u8 = 0xff;

/// Bytes a device holds for the host; what does not fit is dropped whole. A real
/// keyboard holds 16; these hold a burst (a paste, keys typed or a mouse moved while the
/// guest is busy) without dropping any, and are still bounded.
pub const QUEUE_LIMIT: usize = 256;

/// An `Output`'s bytes waiting and the last taken.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OutputState {
    pub queue: Vec<u8>,
    pub last: u8,
}

#[derive(Default)]
pub struct Output {
    queue: VecDeque<u8>,
    last: u8,
}

impl Output {
    /// At most `QUEUE_LIMIT` bytes wait; what does not fit is not sent.
    pub fn new() -> Self {
        Output { queue: VecDeque::new(), last: 0 }
    }

    /// Queues `bytes` whole, or not at all if they do not fit; whether they did.
    pub fn send(&mut self, bytes: &[u8]) -> bool {
        let fits = self.queue.len() + bytes.len() <= QUEUE_LIMIT;
        if fits {
            self.queue.extend(bytes);
        }
        fits
    }

    /// The next byte for the controller.
    pub fn take(&mut self) -> Option<u8> {
        let byte = self.queue.pop_front()?;
        self.last = byte;
        Some(byte)
    }

    /// RESEND: the last byte taken, again.
    pub fn resend(&mut self) {
        let last = self.last;
        self.send(&[last]);
    }

    pub fn clear(&mut self) {
        self.queue.clear();
    }

    pub fn save_state(&self) -> OutputState {
        OutputState { queue: self.queue.iter().copied().collect(), last: self.last }
    }

    /// Takes `state`; the problem if it holds more than a device does.
    pub fn restore_state(&mut self, state: &OutputState) -> Result<(), String> {
        if state.queue.len() > QUEUE_LIMIT {
            return Err(format!("{} bytes waiting (at most {QUEUE_LIMIT})", state.queue.len()));
        }
        self.queue = state.queue.iter().copied().collect();
        self.last = state.last;
        Ok(())
    }
}
