//! A PS/2 keyboard (IBM PS/2 Hardware Interface Technical Reference, "Keyboard and
//! Auxiliary Device Controller" and "101/102-Key Keyboard"): the commands a host sends it
//! (reset, LEDs, typematic rate, enable and disable scanning, defaults, echo, identify,
//! get and set the scan code set (1, 2 or 3), set 3's key types, resend) and the bytes it
//! sends back, answers and key codes, through a bounded queue the controller takes them
//! from one at a time.

pub use super::output::{ACK, QUEUE_LIMIT, RESEND, SELF_TEST_PASSED};
use super::output::{
    CMD_DEFAULTS, CMD_DISABLE, CMD_ENABLE, CMD_GET_ID as CMD_IDENTIFY, CMD_RESEND, CMD_RESET,
    Output,
};
use super::scancodes::{self, Held, Set};
use crate::input::Leds;
use crate::input::evdev::*;

pub const ECHO: u8 = 0xee;
/// The keyboard's ID (a 101/102-key keyboard), and its second byte as the controller
/// translates it.
pub const ID: [u8; 2] = [0xab, 0x83];
pub const ID_TRANSLATED: u8 = 0x41;

const CMD_SET_LEDS: u8 = 0xed;
const CMD_ECHO: u8 = 0xee;
const CMD_SCAN_CODE_SET: u8 = 0xf0;
const CMD_TYPEMATIC: u8 = 0xf3;
/// Set 3's key types: all keys typematic, make/break, make only, all three (F7-FA); a
/// list of keys typematic, make/break, make only (FB-FD).
const CMD_ALL_TYPEMATIC: u8 = 0xf7;
const CMD_ALL_MAKE_BREAK_TYPEMATIC: u8 = 0xfa;
const CMD_KEY_TYPICAL: u8 = 0xfb;
const CMD_KEY_MAKE: u8 = 0xfd;

/// Typematic rate and delay after reset: 10.9 characters a second after 500 ms.
const TYPEMATIC_DEFAULT: u8 = 0x2b;

pub struct Keyboard {
    output: Output,
    /// A command waiting for its argument byte.
    pending: Option<u8>,
    scanning: bool,
    set: Set,
    leds: Leds,
    typematic: u8,
    /// Modifier keys down, which change what Pause and Print Screen send.
    held: Held,
}

/// A keyboard's state: what it holds for the host and how the host set it up.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeyboardState {
    pub output: super::output::OutputState,
    pub pending: Option<u8>,
    pub scanning: bool,
    pub set: Set,
    pub leds: Leds,
    pub typematic: u8,
    pub held: Held,
}

impl Default for Keyboard {
    fn default() -> Self {
        Self::new()
    }
}

impl Keyboard {
    /// A keyboard that passed its power-on self-test.
    pub fn new() -> Self {
        Keyboard {
            output: Output::new(),
            pending: None,
            scanning: true,
            set: Set::Two,
            leds: Leds::default(),
            typematic: TYPEMATIC_DEFAULT,
            held: Held::default(),
        }
    }

    pub fn save_state(&self) -> KeyboardState {
        KeyboardState {
            output: self.output.save_state(),
            pending: self.pending,
            scanning: self.scanning,
            set: self.set,
            leds: self.leds,
            typematic: self.typematic,
            held: self.held,
        }
    }

    /// Takes `state`; the problem if it is not one a keyboard can be in.
    pub fn restore_state(&mut self, state: &KeyboardState) -> Result<(), String> {
        if state.typematic > 0x7f {
            return Err(format!("typematic byte {:#x} (at most 0x7f)", state.typematic));
        }
        self.output.restore_state(&state.output)?;
        self.pending = state.pending;
        self.scanning = state.scanning;
        self.set = state.set;
        self.leds = state.leds;
        self.typematic = state.typematic;
        self.held = state.held;
        Ok(())
    }

    fn defaults(&mut self) {
        self.set = Set::Two;
        self.typematic = TYPEMATIC_DEFAULT;
        self.pending = None;
    }

    fn send(&mut self, bytes: &[u8]) {
        self.output.send(bytes);
    }

    /// The next byte for the controller.
    pub fn take(&mut self) -> Option<u8> {
        self.output.take()
    }

    pub fn leds(&self) -> Leds {
        self.leds
    }

    /// How long a held key waits before it repeats, and then how often it repeats, as the
    /// typematic byte says: delay (bits 6:5) 250 ms × (1 + D); period (bits 4:0)
    /// (8 + A) × 2^B × 4.17 ms with A bits 2:0 and B bits 4:3 (30 to 2 a second).
    pub fn typematic(&self) -> (std::time::Duration, std::time::Duration) {
        let t = u64::from(self.typematic);
        let delay = std::time::Duration::from_millis(250 * (1 + ((t >> 5) & 3)));
        let period_us = (8 + (t & 7)) * (1 << ((t >> 3) & 3)) * 4170;
        (delay, std::time::Duration::from_micros(period_us))
    }

    /// Whether keys reach the host now.
    pub fn scanning(&self) -> bool {
        self.scanning
    }

    /// A key went down or up. With `translated` (the controller translates set 2 into set
    /// 1 for the CPU) the codes come in set 1, which is what translation makes of set 2.
    /// Nothing is sent while scanning is disabled.
    pub fn key(&mut self, key: u16, down: bool, translated: bool) {
        match key {
            KEY_LEFTCTRL | KEY_RIGHTCTRL => self.held.ctrl = down,
            KEY_LEFTSHIFT | KEY_RIGHTSHIFT => self.held.shift = down,
            KEY_LEFTALT | KEY_RIGHTALT => self.held.alt = down,
            _ => {}
        }
        if !self.scanning {
            return;
        }
        let set = if translated { Set::One } else { self.set };
        let bytes = scancodes::bytes(set, key, down, self.held);
        self.send(&bytes);
    }

    /// A byte from the host. `translated` as for `key` (the identify answer's second byte
    /// passes through the translation too).
    pub fn write(&mut self, byte: u8, translated: bool) {
        if let Some(command) = self.pending.take() {
            // A command byte instead of the awaited argument starts that command.
            if byte < CMD_SET_LEDS {
                self.argument(command, byte);
                return;
            }
        }
        match byte {
            CMD_SET_LEDS | CMD_TYPEMATIC | CMD_SCAN_CODE_SET => {
                self.send(&[ACK]);
                self.pending = Some(byte);
            }
            CMD_ECHO => self.send(&[ECHO]),
            CMD_IDENTIFY => {
                self.send(&[ACK, ID[0], if translated { ID_TRANSLATED } else { ID[1] }])
            }
            CMD_ENABLE => {
                self.output.clear();
                self.scanning = true;
                self.send(&[ACK]);
            }
            CMD_DISABLE => {
                self.defaults();
                self.scanning = false;
                self.send(&[ACK]);
            }
            CMD_DEFAULTS => {
                self.defaults();
                self.send(&[ACK]);
            }
            CMD_RESEND => self.output.resend(),
            CMD_RESET => {
                self.output.clear();
                self.defaults();
                self.leds = Leds::default();
                self.scanning = true;
                self.send(&[ACK, SELF_TEST_PASSED]);
            }
            // Set 3's key types for all keys: taken; every key stays make/break.
            CMD_ALL_TYPEMATIC..=CMD_ALL_MAKE_BREAK_TYPEMATIC => self.send(&[ACK]),
            // ...and for a list of keys, which follows.
            CMD_KEY_TYPICAL..=CMD_KEY_MAKE => {
                self.send(&[ACK]);
                self.pending = Some(byte);
            }
            _ => self.send(&[RESEND]),
        }
    }

    fn argument(&mut self, command: u8, byte: u8) {
        match command {
            CMD_SET_LEDS => {
                self.leds = Leds {
                    scroll_lock: byte & 1 != 0,
                    num_lock: byte & 2 != 0,
                    caps_lock: byte & 4 != 0,
                };
                self.send(&[ACK]);
            }
            CMD_TYPEMATIC => {
                self.typematic = byte & 0x7f;
                self.send(&[ACK]);
            }
            CMD_SCAN_CODE_SET => match byte {
                0 => {
                    let set = match self.set {
                        Set::One => 1,
                        Set::Two => 2,
                        Set::Three => 3,
                    };
                    self.send(&[ACK, set]);
                }
                1..=3 => {
                    self.set = [Set::One, Set::Two, Set::Three][usize::from(byte - 1)];
                    self.send(&[ACK]);
                }
                // Asked again, as a keyboard does with a bad value.
                _ => self.send(&[RESEND]),
            },
            // A key of a set 3 key-type list: taken (every key stays make/break), and the
            // list goes on until a command byte.
            CMD_KEY_TYPICAL..=CMD_KEY_MAKE => {
                self.send(&[ACK]);
                self.pending = Some(command);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(k: &mut Keyboard) -> Vec<u8> {
        std::iter::from_fn(|| k.take()).collect()
    }

    #[test]
    fn reset_identify_echo_and_leds() {
        let mut k = Keyboard::new();
        k.write(CMD_RESET, true);
        assert_eq!(drain(&mut k), [ACK, SELF_TEST_PASSED]);
        k.write(CMD_IDENTIFY, true);
        assert_eq!(drain(&mut k), [ACK, 0xab, 0x41], "translated");
        k.write(CMD_IDENTIFY, false);
        assert_eq!(drain(&mut k), [ACK, 0xab, 0x83]);
        k.write(CMD_ECHO, false);
        assert_eq!(drain(&mut k), [ECHO]);
        k.write(CMD_SET_LEDS, false);
        k.write(0x06, false);
        assert_eq!(drain(&mut k), [ACK, ACK]);
        assert_eq!(k.leds(), Leds { num_lock: true, caps_lock: true, scroll_lock: false });
        let ms = |d: std::time::Duration| d.as_millis();
        let (delay, period) = k.typematic();
        assert_eq!((ms(delay), ms(period)), (500, 91), "after reset: 500 ms, 10.9 a second");
        k.write(CMD_TYPEMATIC, false);
        k.write(0x00, false);
        let (delay, period) = k.typematic();
        assert_eq!((ms(delay), ms(period)), (250, 33), "the fastest: 30 a second");
        drain(&mut k);
        k.write(CMD_RESEND, false);
        assert_eq!(drain(&mut k), [ACK], "the last byte again");
        k.write(0x12, false);
        assert_eq!(drain(&mut k), [RESEND], "not a command");
    }

    #[test]
    fn keys_in_the_set_asked_for_and_only_while_scanning() {
        let mut k = Keyboard::new();
        k.key(KEY_A, true, true);
        k.key(KEY_A, false, true);
        assert_eq!(drain(&mut k), [0x1e, 0x9e], "translated: set 1");
        k.key(KEY_A, true, false);
        k.key(KEY_A, false, false);
        assert_eq!(drain(&mut k), [0x1c, 0xf0, 0x1c], "set 2");
        k.write(CMD_SCAN_CODE_SET, false);
        k.write(0, false);
        assert_eq!(drain(&mut k), [ACK, ACK, 2]);
        k.write(CMD_SCAN_CODE_SET, false);
        k.write(1, false);
        k.key(KEY_UP, true, false);
        assert_eq!(drain(&mut k), [ACK, ACK, 0xe0, 0x48], "set 1 asked for");
        k.write(CMD_SCAN_CODE_SET, false);
        k.write(3, false);
        k.write(0xf8, false); // all keys make/break, as Linux's atkbd asks
        k.key(KEY_UP, true, false);
        k.key(KEY_UP, false, false);
        assert_eq!(drain(&mut k), [ACK, ACK, ACK, 0x63, 0xf0, 0x63], "set 3");
        k.write(0xfc, false); // a list of keys...
        k.write(0x1c, false);
        k.write(0x1b, false);
        k.write(CMD_ECHO, false); // ...ended by a command
        assert_eq!(drain(&mut k), [ACK, ACK, ACK, ECHO]);
        k.write(CMD_SCAN_CODE_SET, false);
        k.write(4, false);
        assert_eq!(drain(&mut k), [ACK, RESEND], "no set 4");
        k.write(CMD_DISABLE, false);
        k.key(KEY_B, true, false);
        assert_eq!(drain(&mut k), [ACK], "not scanning");
        k.write(CMD_ENABLE, false);
        k.key(KEY_B, true, false);
        assert_eq!(drain(&mut k), [ACK, 0x32], "disable restored set 2");
        // A command in place of an argument is that command.
        k.write(CMD_SET_LEDS, false);
        k.write(CMD_ECHO, false);
        assert_eq!(drain(&mut k), [ACK, ECHO]);
    }

    #[test]
    fn a_host_that_does_not_read_loses_whole_keys() {
        use pc_keyboard::{ScancodeSet, ScancodeSet2};
        let mut k = Keyboard::new();
        for _ in 0..1000 {
            k.key(KEY_UP, true, false);
            k.key(KEY_UP, false, false);
        }
        let bytes = drain(&mut k);
        assert!(bytes.len() <= QUEUE_LIMIT && bytes.len() > QUEUE_LIMIT - 3);
        // Whole keys only: every byte decodes, and the last one ends a key.
        let mut decoder = ScancodeSet2::new();
        let ends: Vec<bool> =
            bytes.iter().map(|&b| decoder.advance_state(b).unwrap().is_some()).collect();
        assert_eq!(ends.last(), Some(&true), "{bytes:02x?}");
    }
}
