//! The i8042 keyboard controller (IBM PS/2 Hardware Interface Technical Reference,
//! "Keyboard/Auxiliary Device Controller") with a PS/2 keyboard behind it: its command
//! byte (interrupt enable, interface disable, translation), self-tests, the output buffer
//! the CPU reads at port 0x60 one byte at a time with IRQ 1 for each, writes that go to
//! the keyboard, and the CPU reset line (command 0xFE, or output-port bit 0 cleared),
//! which is how many kernels and boot loaders reboot. There is no device on the auxiliary
//! (mouse) port yet: bytes for it go nowhere.
//!
//! Keys come from the machine's `InputSink` (`I8042Keyboard`) until the guest's virtio
//! keyboard driver runs; the keyboard's LEDs go back to it, as virtio-input's do.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use vmm_sys_util::eventfd::EventFd;

use super::ps2::keyboard::Keyboard;
use crate::arch::x86_64::layout::I8042_COMMAND_PORT;
use crate::devices::bus::BusDevice;
use crate::devices::{PowerRequest, PowerSink};
use crate::input::evdev::{LED_CAPSL, LED_NUML, LED_SCROLLL};
use crate::input::{InputSink, KeyboardPort};
use crate::sync::lock;

const STATUS_OUTPUT_FULL: u8 = 1 << 0;
const STATUS_SYSTEM_FLAG: u8 = 1 << 2;
const STATUS_LAST_WAS_COMMAND: u8 = 1 << 3;
const STATUS_UNLOCKED: u8 = 1 << 4;

/// Command byte: IRQ 1 when the keyboard's byte is in the output buffer.
const CB_KBD_INTERRUPT: u8 = 1 << 0;
/// Command byte: the system flag (the self-test passed), mirrored in the status.
const CB_SYSTEM_FLAG: u8 = 1 << 2;
/// Command byte: the keyboard interface is disabled (its bytes wait in the keyboard).
const CB_KBD_DISABLED: u8 = 1 << 4;
const CB_AUX_DISABLED: u8 = 1 << 5;
/// Command byte: the keyboard's set 2 codes reach the CPU as set 1.
const CB_TRANSLATE: u8 = 1 << 6;

const CMD_READ_COMMAND_BYTE: u8 = 0x20;
const CMD_WRITE_COMMAND_BYTE: u8 = 0x60;
const CMD_DISABLE_AUX: u8 = 0xa7;
const CMD_ENABLE_AUX: u8 = 0xa8;
const CMD_TEST_AUX: u8 = 0xa9;
const CMD_SELF_TEST: u8 = 0xaa;
const CMD_TEST_KBD: u8 = 0xab;
const CMD_DISABLE_KBD: u8 = 0xad;
const CMD_ENABLE_KBD: u8 = 0xae;
const CMD_READ_OUTPUT_PORT: u8 = 0xd0;
const CMD_WRITE_OUTPUT_PORT: u8 = 0xd1;
const CMD_WRITE_KBD_OUTPUT: u8 = 0xd2;
const CMD_WRITE_AUX_OUTPUT: u8 = 0xd3;
const CMD_WRITE_AUX: u8 = 0xd4;
const CMD_PULSE_RESET: u8 = 0xfe;

/// Answers of the controller itself waiting for the CPU; a guest that never reads loses
/// the oldest.
const REPLY_LIMIT: usize = 16;

pub struct I8042 {
    power: PowerSink,
    /// ISA IRQ 1 (None in tests without a VM).
    irq: Option<EventFd>,
    /// Where the keyboard's LEDs are shown.
    sink: Option<InputSink>,
    status: u8,
    command_byte: u8,
    output_port: u8,
    pending_command: Option<u8>,
    /// The controller's own answers, which go out before the keyboard's bytes.
    replies: VecDeque<u8>,
    /// The output buffer: what port 0x60 reads next (and then keeps reading).
    output: Option<u8>,
    last_output: u8,
    keyboard: Keyboard,
}

impl I8042 {
    pub fn new(power: PowerSink, irq: Option<EventFd>, sink: Option<InputSink>) -> Self {
        I8042 {
            power,
            irq,
            sink,
            status: STATUS_SYSTEM_FLAG | STATUS_UNLOCKED,
            // Keyboard interrupt on, system flag, translation on: as firmware leaves it.
            command_byte: CB_KBD_INTERRUPT | CB_SYSTEM_FLAG | CB_TRANSLATE,
            output_port: 0x01, // bit 0 = CPU reset line, active low
            pending_command: None,
            replies: VecDeque::new(),
            output: None,
            last_output: 0,
            keyboard: Keyboard::new(),
        }
    }

    fn translated(&self) -> bool {
        self.command_byte & CB_TRANSLATE != 0
    }

    fn reply(&mut self, byte: u8) {
        if self.replies.len() >= REPLY_LIMIT {
            self.replies.pop_front();
        }
        self.replies.push_back(byte);
        self.fill();
    }

    /// Moves the next byte into an empty output buffer (the controller's answers first,
    /// then the keyboard's if its interface is enabled) and raises IRQ 1 for it.
    fn fill(&mut self) {
        if self.output.is_some() {
            return;
        }
        let byte = match self.replies.pop_front() {
            Some(byte) => Some(byte),
            None if self.command_byte & CB_KBD_DISABLED == 0 => self.keyboard.take(),
            None => None,
        };
        let Some(byte) = byte else { return };
        self.output = Some(byte);
        if self.command_byte & CB_KBD_INTERRUPT != 0
            && let Some(irq) = &self.irq
            && let Err(e) = irq.write(1)
        {
            log::warn!("i8042: IRQ 1: {e}");
        }
    }

    /// A key went down or up on the keyboard.
    pub fn key(&mut self, code: u16, down: bool) {
        self.keyboard.key(code, down, self.translated());
        self.fill();
    }

    fn command(&mut self, cmd: u8) {
        match cmd {
            CMD_READ_COMMAND_BYTE => self.reply(self.command_byte),
            CMD_WRITE_COMMAND_BYTE
            | CMD_WRITE_OUTPUT_PORT
            | CMD_WRITE_KBD_OUTPUT
            | CMD_WRITE_AUX_OUTPUT
            | CMD_WRITE_AUX => self.pending_command = Some(cmd),
            CMD_SELF_TEST => self.reply(0x55),
            CMD_TEST_KBD | CMD_TEST_AUX => self.reply(0x00),
            CMD_READ_OUTPUT_PORT => self.reply(self.output_port),
            CMD_DISABLE_KBD => self.command_byte |= CB_KBD_DISABLED,
            CMD_ENABLE_KBD => {
                self.command_byte &= !CB_KBD_DISABLED;
                self.fill();
            }
            CMD_DISABLE_AUX => self.command_byte |= CB_AUX_DISABLED,
            CMD_ENABLE_AUX => self.command_byte &= !CB_AUX_DISABLED,
            CMD_PULSE_RESET => (self.power)(PowerRequest::Reset),
            // 0xF0-0xFF pulse output lines; only bit 0 (reset) matters and 0xFE is above.
            _ => {}
        }
    }

    fn data(&mut self, byte: u8) {
        match self.pending_command.take() {
            Some(CMD_WRITE_COMMAND_BYTE) => {
                self.command_byte = byte;
                self.fill();
            }
            Some(CMD_WRITE_OUTPUT_PORT) => {
                self.output_port = byte;
                if byte & 1 == 0 {
                    (self.power)(PowerRequest::Reset);
                }
            }
            Some(CMD_WRITE_KBD_OUTPUT) => self.reply(byte),
            // No device on the auxiliary port: its bytes go nowhere.
            Some(CMD_WRITE_AUX_OUTPUT | CMD_WRITE_AUX) => {}
            _ => {
                // A byte for the keyboard, which also enables its interface again.
                self.command_byte &= !CB_KBD_DISABLED;
                let before = self.keyboard.leds();
                self.keyboard.write(byte, self.translated());
                let leds = self.keyboard.leds();
                if leds != before
                    && let Some(sink) = &self.sink
                {
                    sink.set_led(LED_NUML, leds.num_lock);
                    sink.set_led(LED_CAPSL, leds.caps_lock);
                    sink.set_led(LED_SCROLLL, leds.scroll_lock);
                }
                self.fill();
            }
        }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, base: u64, _offset: u64, data: &mut [u8]) {
        data.fill(0);
        data[0] = if base == u64::from(I8042_COMMAND_PORT) {
            let full = if self.output.is_some() { STATUS_OUTPUT_FULL } else { 0 };
            self.status | full
        } else {
            // Reading empties the buffer; an empty one reads its last byte again.
            if let Some(byte) = self.output.take() {
                self.last_output = byte;
            }
            self.fill();
            self.last_output
        };
    }

    fn write(&mut self, base: u64, _offset: u64, data: &[u8]) {
        let Some(&byte) = data.first() else { return };
        if base == u64::from(I8042_COMMAND_PORT) {
            self.status |= STATUS_LAST_WAS_COMMAND;
            self.command(byte);
        } else {
            self.status &= !STATUS_LAST_WAS_COMMAND;
            self.data(byte);
        }
    }
}

/// The machine's i8042 as the `InputSink` sees it: the keyboard keys go to.
pub struct I8042Keyboard(pub Arc<Mutex<I8042>>);

impl KeyboardPort for I8042Keyboard {
    fn key(&self, code: u16, down: bool) {
        lock(&self.0).key(code, down);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::x86_64::layout::I8042_DATA_PORT;
    use crate::devices::legacy::ps2::keyboard::{ACK, SELF_TEST_PASSED};
    use crate::input::evdev::*;

    fn dev() -> (I8042, Arc<Mutex<Vec<PowerRequest>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        (I8042::new(Arc::new(move |r| sink.lock().unwrap().push(r)), Some(irq), None), seen)
    }

    fn read(d: &mut I8042, port: u16) -> u8 {
        let mut b = [0u8];
        d.read(u64::from(port), 0, &mut b);
        b[0]
    }

    fn command(d: &mut I8042, byte: u8) {
        d.write(u64::from(I8042_COMMAND_PORT), 0, &[byte]);
    }

    fn data(d: &mut I8042, byte: u8) {
        d.write(u64::from(I8042_DATA_PORT), 0, &[byte]);
    }

    /// Reads every byte the controller has, as a driver polling the status does.
    fn drain(d: &mut I8042) -> Vec<u8> {
        let mut out = Vec::new();
        while read(d, I8042_COMMAND_PORT) & STATUS_OUTPUT_FULL != 0 {
            out.push(read(d, I8042_DATA_PORT));
            assert!(out.len() < 1000);
        }
        out
    }

    /// IRQ 1 edges raised since the last call.
    fn irqs(d: &I8042) -> u64 {
        d.irq.as_ref().unwrap().read().unwrap_or(0)
    }

    #[test]
    fn reset_by_pulse_and_output_port() {
        let (mut d, seen) = dev();
        command(&mut d, CMD_PULSE_RESET);
        command(&mut d, CMD_WRITE_OUTPUT_PORT);
        data(&mut d, 0xfe);
        assert_eq!(*seen.lock().unwrap(), vec![PowerRequest::Reset, PowerRequest::Reset]);
    }

    #[test]
    fn self_test_and_command_byte() {
        let (mut d, seen) = dev();
        assert_eq!(read(&mut d, I8042_COMMAND_PORT) & STATUS_OUTPUT_FULL, 0);
        command(&mut d, CMD_SELF_TEST);
        assert_ne!(read(&mut d, I8042_COMMAND_PORT) & STATUS_OUTPUT_FULL, 0);
        assert_eq!(read(&mut d, I8042_DATA_PORT), 0x55);
        command(&mut d, CMD_WRITE_COMMAND_BYTE);
        data(&mut d, 0x47);
        command(&mut d, CMD_READ_COMMAND_BYTE);
        assert_eq!(read(&mut d, I8042_DATA_PORT), 0x47);
        assert!(seen.lock().unwrap().is_empty());
    }

    #[test]
    fn keys_come_one_byte_and_one_interrupt_at_a_time() {
        let (mut d, _) = dev();
        d.key(KEY_UP, true);
        assert_eq!(irqs(&d), 1, "the first byte is in the buffer");
        assert_eq!(read(&mut d, I8042_DATA_PORT), 0xe0);
        assert_eq!(irqs(&d), 1, "the next byte moved in");
        assert_eq!(read(&mut d, I8042_DATA_PORT), 0x48, "translated to set 1");
        assert_eq!(irqs(&d), 0, "nothing more");
        assert_eq!(read(&mut d, I8042_DATA_PORT), 0x48, "an empty buffer reads its last byte");
        // Translation off: the keyboard's own set 2.
        command(&mut d, CMD_WRITE_COMMAND_BYTE);
        data(&mut d, CB_KBD_INTERRUPT);
        d.key(KEY_A, true);
        d.key(KEY_A, false);
        assert_eq!(drain(&mut d), [0x1c, 0xf0, 0x1c]);
        // Interrupts off: the bytes still come, without IRQ 1.
        command(&mut d, CMD_WRITE_COMMAND_BYTE);
        data(&mut d, 0);
        irqs(&d);
        d.key(KEY_B, true);
        assert_eq!(irqs(&d), 0);
        assert_eq!(drain(&mut d), [0x32]);
    }

    #[test]
    fn a_disabled_keyboard_interface_holds_the_keys_back() {
        let (mut d, _) = dev();
        command(&mut d, CMD_DISABLE_KBD);
        d.key(KEY_ESC, true);
        assert!(drain(&mut d).is_empty());
        command(&mut d, CMD_ENABLE_KBD);
        assert_eq!(drain(&mut d), [0x01]);
        // The controller's answers go first.
        command(&mut d, CMD_DISABLE_KBD);
        d.key(KEY_ESC, false);
        command(&mut d, CMD_SELF_TEST);
        command(&mut d, CMD_ENABLE_KBD);
        assert_eq!(drain(&mut d), [0x55, 0x81]);
    }

    #[test]
    fn the_keyboard_answers_commands_through_the_controller() {
        let (mut d, _) = dev();
        data(&mut d, 0xff);
        assert_eq!(drain(&mut d), [ACK, SELF_TEST_PASSED]);
        data(&mut d, 0xf2);
        assert_eq!(drain(&mut d), [ACK, 0xab, 0x41], "identify, translated");
        // Writing the keyboard output buffer: the byte comes back as the keyboard's.
        command(&mut d, CMD_WRITE_KBD_OUTPUT);
        data(&mut d, 0x5a);
        assert_eq!(drain(&mut d), [0x5a]);
        // Nothing is on the auxiliary port.
        command(&mut d, CMD_WRITE_AUX);
        data(&mut d, 0xff);
        assert!(drain(&mut d).is_empty());
    }

    #[test]
    fn leds_reach_the_input_sink() {
        let sink = InputSink::new().unwrap();
        let mut d = I8042::new(Arc::new(|_| {}), None, Some(sink.clone()));
        data(&mut d, 0xed);
        data(&mut d, 0x04);
        assert_eq!(drain(&mut d), [ACK, ACK]);
        assert!(sink.leds().caps_lock && !sink.leds().num_lock);
    }

    #[test]
    fn output_is_bounded() {
        let (mut d, _) = dev();
        for _ in 0..1000 {
            data(&mut d, 0xff);
            command(&mut d, CMD_SELF_TEST);
            d.key(KEY_A, true);
        }
        assert!(d.replies.len() <= REPLY_LIMIT);
        let most = REPLY_LIMIT + 1 + crate::devices::legacy::ps2::keyboard::QUEUE_LIMIT;
        assert!(drain(&mut d).len() <= most);
    }
}
