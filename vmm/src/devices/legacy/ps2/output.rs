//! What a PS/2 device holds for the host: a bounded queue of bytes the controller takes one
//! at a time, and the last byte taken, which RESEND (0xFE) sends again.

use std::collections::VecDeque;

/// The PS/2 device commands both devices answer the same way.
pub const ACK: u8 = 0xfa;
pub const RESEND: u8 = 0xfe;
pub const SELF_TEST_PASSED: u8 = 0xaa;

pub struct Output {
    queue: VecDeque<u8>,
    last: u8,
    limit: usize,
}

impl Output {
    /// At most `limit` bytes wait; what does not fit is not sent.
    pub fn new(limit: usize) -> Self {
        Output { queue: VecDeque::new(), last: 0, limit }
    }

    /// Queues `bytes` whole, or not at all if they do not fit; whether they did.
    pub fn send(&mut self, bytes: &[u8]) -> bool {
        let fits = self.queue.len() + bytes.len() <= self.limit;
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
}
