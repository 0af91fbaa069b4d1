//! The i8042 keyboard controller, as far as the platform needs it now: self-tests, the
//! command byte, and the CPU reset line (command 0xFE, or output-port bit 0 cleared), which
//! is how many kernels and boot loaders reboot. Keyboard input comes with virtio-input.

use std::collections::VecDeque;

use crate::arch::x86_64::layout::I8042_COMMAND_PORT;
use crate::devices::bus::BusDevice;
use crate::devices::{PowerRequest, PowerSink};

const STATUS_OUTPUT_FULL: u8 = 1 << 0;
const STATUS_SYSTEM_FLAG: u8 = 1 << 2;
const STATUS_LAST_WAS_COMMAND: u8 = 1 << 3;
const STATUS_UNLOCKED: u8 = 1 << 4;

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
const CMD_PULSE_RESET: u8 = 0xfe;

const KBD_RESET: u8 = 0xff;
const KBD_ACK: u8 = 0xfa;
const KBD_SELF_TEST_OK: u8 = 0xaa;
/// At most this many bytes wait for the guest; a guest that never reads loses the oldest.
const OUTPUT_LIMIT: usize = 16;

pub struct I8042 {
    power: PowerSink,
    status: u8,
    command_byte: u8,
    output_port: u8,
    pending_command: Option<u8>,
    output: VecDeque<u8>,
}

impl I8042 {
    pub fn new(power: PowerSink) -> Self {
        I8042 {
            power,
            status: STATUS_SYSTEM_FLAG | STATUS_UNLOCKED,
            command_byte: 0x45, // kbd interrupt on, system flag, translation on
            output_port: 0x01,  // bit 0 = CPU reset line, active low
            pending_command: None,
            output: VecDeque::new(),
        }
    }

    fn push_output(&mut self, byte: u8) {
        if self.output.len() >= OUTPUT_LIMIT {
            self.output.pop_front();
        }
        self.output.push_back(byte);
    }

    fn command(&mut self, cmd: u8) {
        match cmd {
            CMD_READ_COMMAND_BYTE => self.push_output(self.command_byte),
            CMD_WRITE_COMMAND_BYTE | CMD_WRITE_OUTPUT_PORT => self.pending_command = Some(cmd),
            CMD_SELF_TEST => self.push_output(0x55),
            CMD_TEST_KBD | CMD_TEST_AUX => self.push_output(0x00),
            CMD_READ_OUTPUT_PORT => self.push_output(self.output_port),
            CMD_DISABLE_KBD => self.command_byte |= 0x10,
            CMD_ENABLE_KBD => self.command_byte &= !0x10,
            CMD_DISABLE_AUX => self.command_byte |= 0x20,
            CMD_ENABLE_AUX => self.command_byte &= !0x20,
            CMD_PULSE_RESET => (self.power)(PowerRequest::Reset),
            // 0xF0-0xFF pulse output lines; only bit 0 (reset) matters and 0xFE is above.
            _ => {}
        }
    }

    fn data(&mut self, byte: u8) {
        match self.pending_command.take() {
            Some(CMD_WRITE_COMMAND_BYTE) => self.command_byte = byte,
            Some(CMD_WRITE_OUTPUT_PORT) => {
                self.output_port = byte;
                if byte & 1 == 0 {
                    (self.power)(PowerRequest::Reset);
                }
            }
            _ => {
                // A byte for the keyboard: acknowledge it as a present, idle keyboard does.
                self.push_output(KBD_ACK);
                if byte == KBD_RESET {
                    self.push_output(KBD_SELF_TEST_OK);
                }
            }
        }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, base: u64, _offset: u64, data: &mut [u8]) {
        data.fill(0);
        data[0] = if base == u64::from(I8042_COMMAND_PORT) {
            let full = if self.output.is_empty() { 0 } else { STATUS_OUTPUT_FULL };
            self.status | full
        } else {
            self.output.pop_front().unwrap_or(0)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::x86_64::layout::I8042_DATA_PORT;
    use std::sync::{Arc, Mutex};

    fn dev() -> (I8042, Arc<Mutex<Vec<PowerRequest>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        (I8042::new(Arc::new(move |r| sink.lock().unwrap().push(r))), seen)
    }

    fn read(d: &mut I8042, port: u16) -> u8 {
        let mut b = [0u8];
        d.read(u64::from(port), 0, &mut b);
        b[0]
    }

    #[test]
    fn reset_by_pulse_and_output_port() {
        let (mut d, seen) = dev();
        d.write(u64::from(I8042_COMMAND_PORT), 0, &[CMD_PULSE_RESET]);
        d.write(u64::from(I8042_COMMAND_PORT), 0, &[CMD_WRITE_OUTPUT_PORT]);
        d.write(u64::from(I8042_DATA_PORT), 0, &[0xfe]);
        assert_eq!(*seen.lock().unwrap(), vec![PowerRequest::Reset, PowerRequest::Reset]);
    }

    #[test]
    fn self_test_and_command_byte() {
        let (mut d, seen) = dev();
        assert_eq!(read(&mut d, I8042_COMMAND_PORT) & STATUS_OUTPUT_FULL, 0);
        d.write(u64::from(I8042_COMMAND_PORT), 0, &[CMD_SELF_TEST]);
        assert_ne!(read(&mut d, I8042_COMMAND_PORT) & STATUS_OUTPUT_FULL, 0);
        assert_eq!(read(&mut d, I8042_DATA_PORT), 0x55);
        d.write(u64::from(I8042_COMMAND_PORT), 0, &[CMD_WRITE_COMMAND_BYTE]);
        d.write(u64::from(I8042_DATA_PORT), 0, &[0x47]);
        d.write(u64::from(I8042_COMMAND_PORT), 0, &[CMD_READ_COMMAND_BYTE]);
        assert_eq!(read(&mut d, I8042_DATA_PORT), 0x47);
        assert!(seen.lock().unwrap().is_empty());
    }

    #[test]
    fn output_is_bounded() {
        let (mut d, _) = dev();
        for _ in 0..1000 {
            d.write(u64::from(I8042_DATA_PORT), 0, &[KBD_RESET]);
        }
        assert!(d.output.len() <= OUTPUT_LIMIT);
    }
}
