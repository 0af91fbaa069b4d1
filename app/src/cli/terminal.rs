//! Raw mode for the serial console, restored however the program leaves.

use std::os::fd::RawFd;

/// Puts a terminal in raw mode until dropped.
pub struct RawMode {
    fd: RawFd,
    saved: libc::termios,
}

impl RawMode {
    /// Raw mode on `fd` if it is a terminal; `None` otherwise (pipes, files).
    pub fn enable(fd: RawFd) -> Option<RawMode> {
        // SAFETY: isatty only inspects the descriptor.
        if unsafe { libc::isatty(fd) } != 1 {
            return None;
        }
        // SAFETY: termios is plain data; tcgetattr fills it and we check the result.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: `saved` is a valid termios to write into.
        if unsafe { libc::tcgetattr(fd, &mut saved) } != 0 {
            return None;
        }
        let mut raw = saved;
        // SAFETY: cfmakeraw only modifies the struct it is given.
        unsafe { libc::cfmakeraw(&mut raw) };
        // SAFETY: `raw` is a valid termios derived from the current one.
        if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &raw) } != 0 {
            return None;
        }
        Some(RawMode { fd, saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // SAFETY: restores the attributes read in `enable` on the same descriptor.
        unsafe { libc::tcsetattr(self.fd, libc::TCSANOW, &self.saved) };
    }
}

/// The escape key of the serial consoles: Ctrl-A, as in QEMU.
pub const ESCAPE: u8 = 0x01;

/// What was typed on a serial console: bytes for the guest, or a Ctrl-A command (its
/// letter, lower case).
#[derive(Debug, PartialEq, Eq)]
pub enum Typed {
    Guest(Vec<u8>),
    Command(u8),
}

/// Splits what is typed into bytes for the guest and Ctrl-A commands; Ctrl-A Ctrl-A sends
/// one Ctrl-A. Off (everything goes to the guest) when the input is not a terminal.
pub struct Escapes {
    enabled: bool,
    pending: bool,
}

impl Escapes {
    pub fn new(enabled: bool) -> Self {
        Escapes { enabled, pending: false }
    }

    /// `bytes` as typed, in order.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<Typed> {
        let mut out = Vec::new();
        let mut guest = Vec::with_capacity(bytes.len());
        for &byte in bytes {
            if !self.pending {
                if byte == ESCAPE && self.enabled {
                    self.pending = true;
                } else {
                    guest.push(byte);
                }
                continue;
            }
            self.pending = false;
            if byte == ESCAPE {
                guest.push(ESCAPE);
                continue;
            }
            if !guest.is_empty() {
                out.push(Typed::Guest(std::mem::take(&mut guest)));
            }
            out.push(Typed::Command(byte.to_ascii_lowercase()));
        }
        if !guest.is_empty() {
            out.push(Typed::Guest(guest));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ctrl_a_commands_are_split_from_what_the_guest_gets() {
        let mut keys = Escapes::new(true);
        assert_eq!(
            keys.feed(b"ab\x01Xc\x01"),
            vec![Typed::Guest(b"ab".to_vec()), Typed::Command(b'x'), Typed::Guest(b"c".to_vec())]
        );
        // The escape pending across reads; Ctrl-A Ctrl-A is one Ctrl-A for the guest.
        assert_eq!(keys.feed(b"\x01z"), vec![Typed::Guest(b"\x01z".to_vec())]);
        let mut piped = Escapes::new(false);
        assert_eq!(piped.feed(b"\x01x"), vec![Typed::Guest(b"\x01x".to_vec())]);
    }
}
