//! The i8042 keyboard controller (IBM PS/2 Hardware Interface Technical Reference,
//! "Keyboard/Auxiliary Device Controller") with a PS/2 keyboard behind it: its command
//! byte (interrupt enable, interface disable, translation), self-tests, the output buffer
//! the CPU reads at port 0x60 one byte at a time with IRQ 1 for each, writes that go to
//! the keyboard, a PS/2 mouse on the auxiliary port (its bytes flagged in the status, IRQ
//! 12 each), and the CPU reset line (command 0xFE, or output-port bit 0 cleared), which is
//! how many kernels and boot loaders reboot.
//!
//! Keys and pointer motion come from the machine's `InputSink` (`I8042Port`) until the
//! guest's virtio-input drivers run; the keyboard's LEDs go back to it, as virtio-input's
//! do.

use std::collections::VecDeque;
use std::sync::{Mutex, Weak};

use vmm_sys_util::eventfd::EventFd;

use super::ps2::keyboard::Keyboard;
use super::ps2::mouse::{Buttons, Mouse};
use crate::arch::x86_64::layout::I8042_COMMAND_PORT;
use crate::devices::bus::BusDevice;
use crate::devices::{PowerRequest, PowerSink};
use crate::input::evdev::{LED_CAPSL, LED_NUML, LED_SCROLLL};
use crate::input::{Button, InputSink, Ps2Port};
use crate::sync::lock;

const STATUS_OUTPUT_FULL: u8 = 1 << 0;
const STATUS_SYSTEM_FLAG: u8 = 1 << 2;
const STATUS_LAST_WAS_COMMAND: u8 = 1 << 3;
const STATUS_UNLOCKED: u8 = 1 << 4;
/// The byte in the output buffer is the mouse's.
const STATUS_AUX_OUTPUT: u8 = 1 << 5;

/// Command byte: IRQ 1 when the keyboard's byte is in the output buffer.
const CB_KBD_INTERRUPT: u8 = 1 << 0;
/// Command byte: IRQ 12 when the mouse's byte is in the output buffer.
const CB_AUX_INTERRUPT: u8 = 1 << 1;
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

/// Where a byte in the output buffer came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Source {
    Keyboard,
    Aux,
}

pub struct I8042 {
    power: PowerSink,
    /// ISA IRQ 1 (None in tests without a VM).
    irq: Option<EventFd>,
    /// ISA IRQ 12.
    aux_irq: Option<EventFd>,
    /// Where the keyboard's LEDs are shown.
    sink: Option<InputSink>,
    status: u8,
    command_byte: u8,
    output_port: u8,
    pending_command: Option<u8>,
    /// The controller's own answers, which go out before the devices' bytes.
    replies: VecDeque<(u8, Source)>,
    /// The output buffer: what port 0x60 reads next (and then keeps reading).
    output: Option<(u8, Source)>,
    last_output: u8,
    keyboard: Keyboard,
    mouse: Mouse,
}

impl I8042 {
    /// The controller with its keyboard's `irq` (1) and its mouse's `aux_irq` (12).
    pub fn new(
        power: PowerSink,
        [irq, aux_irq]: [Option<EventFd>; 2],
        sink: Option<InputSink>,
    ) -> Self {
        I8042 {
            power,
            irq,
            aux_irq,
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
            mouse: Mouse::new(),
        }
    }

    fn translated(&self) -> bool {
        self.command_byte & CB_TRANSLATE != 0
    }

    fn reply(&mut self, byte: u8) {
        self.reply_from(byte, Source::Keyboard);
    }

    fn reply_from(&mut self, byte: u8, source: Source) {
        if self.replies.len() >= REPLY_LIMIT {
            self.replies.pop_front();
        }
        self.replies.push_back((byte, source));
        self.fill();
    }

    /// Moves the next byte into an empty output buffer (the controller's answers first,
    /// then the keyboard's and then the mouse's, each if its interface is enabled) and
    /// raises its IRQ (1 or 12) if the command byte enables that.
    fn fill(&mut self) {
        if self.output.is_some() {
            return;
        }
        let cb = self.command_byte;
        let next = self
            .replies
            .pop_front()
            .or_else(|| {
                let on = cb & CB_KBD_DISABLED == 0;
                on.then(|| self.keyboard.take()).flatten().map(|b| (b, Source::Keyboard))
            })
            .or_else(|| {
                let on = cb & CB_AUX_DISABLED == 0;
                on.then(|| self.mouse.take()).flatten().map(|b| (b, Source::Aux))
            });
        let Some((byte, source)) = next else { return };
        self.output = Some((byte, source));
        let (irq, enabled, line) = match source {
            Source::Keyboard => (&self.irq, cb & CB_KBD_INTERRUPT != 0, 1),
            Source::Aux => (&self.aux_irq, cb & CB_AUX_INTERRUPT != 0, 12),
        };
        if enabled
            && let Some(irq) = irq
            && let Err(e) = irq.write(1)
        {
            log::warn!("i8042: IRQ {line}: {e}");
        }
    }

    /// The mouse moved (see `Mouse::motion`); `buttons` are `Button::bit`s.
    pub fn mouse(&mut self, dx: i32, dy: i32, wheel: i32, buttons: u8) {
        let held = |b: Button| buttons & b.bit() != 0;
        let buttons = Buttons {
            left: held(Button::Left),
            right: held(Button::Right),
            middle: held(Button::Middle),
            side: held(Button::Side),
            extra: held(Button::Extra),
        };
        self.mouse.motion(dx, dy, wheel, buttons);
        self.fill();
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
            CMD_ENABLE_AUX => {
                self.command_byte &= !CB_AUX_DISABLED;
                self.fill();
            }
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
            Some(CMD_WRITE_AUX_OUTPUT) => self.reply_from(byte, Source::Aux),
            Some(CMD_WRITE_AUX) => {
                // A byte for the mouse, which also enables its interface again.
                self.command_byte &= !CB_AUX_DISABLED;
                self.mouse.write(byte);
                self.fill();
            }
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

/// The controller's state, with its keyboard's and mouse's.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct I8042State {
    pub status: u8,
    pub command_byte: u8,
    pub output_port: u8,
    pub pending_command: Option<u8>,
    pub replies: Vec<(u8, Source)>,
    pub output: Option<(u8, Source)>,
    pub last_output: u8,
    pub keyboard: super::ps2::keyboard::KeyboardState,
    pub mouse: super::ps2::mouse::MouseState,
}

impl crate::persist::Persist for I8042 {
    type State = I8042State;

    fn save_state(&self) -> I8042State {
        I8042State {
            status: self.status,
            command_byte: self.command_byte,
            output_port: self.output_port,
            pending_command: self.pending_command,
            replies: self.replies.iter().copied().collect(),
            output: self.output,
            last_output: self.last_output,
            keyboard: self.keyboard.save_state(),
            mouse: self.mouse.save_state(),
        }
    }

    fn restore_state(
        &mut self,
        state: &I8042State,
    ) -> Result<(), crate::persist::DeviceStateError> {
        let problem = |p: String| crate::persist::DeviceStateError::new("PS/2 controller", p);
        if state.replies.len() > REPLY_LIMIT {
            let n = state.replies.len();
            return Err(problem(format!("{n} answers waiting (at most {REPLY_LIMIT})")));
        }
        // Checked whole before anything changes: a state refused leaves the device as it was.
        let (mut keyboard, mut mouse) = (Keyboard::new(), Mouse::new());
        keyboard.restore_state(&state.keyboard).map_err(|p| problem(format!("keyboard: {p}")))?;
        mouse.restore_state(&state.mouse).map_err(|p| problem(format!("mouse: {p}")))?;
        (self.keyboard, self.mouse) = (keyboard, mouse);
        // The output buffer's bits are the buffer's (read from `output`), not the status's.
        self.status = state.status & !(STATUS_OUTPUT_FULL | STATUS_AUX_OUTPUT);
        self.command_byte = state.command_byte;
        // The CPU's reset line released: a machine held in reset is never saved.
        self.output_port = state.output_port | 0x01;
        self.pending_command = state.pending_command;
        self.replies = state.replies.iter().copied().collect();
        self.output = state.output;
        self.last_output = state.last_output;
        // Its interrupt, if the guest had not taken the byte, is in the interrupt
        // controller's saved state.
        Ok(())
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, base: u64, _offset: u64, data: &mut [u8]) {
        data.fill(0);
        data[0] = if base == u64::from(I8042_COMMAND_PORT) {
            let full = match self.output {
                Some((_, Source::Keyboard)) => STATUS_OUTPUT_FULL,
                Some((_, Source::Aux)) => STATUS_OUTPUT_FULL | STATUS_AUX_OUTPUT,
                None => 0,
            };
            self.status | full
        } else {
            // Reading empties the buffer; an empty one reads its last byte again.
            if let Some((byte, _)) = self.output.take() {
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

/// The machine's i8042 as the `InputSink` sees it: the keyboard and mouse behind it. Weak,
/// as the i8042 holds the sink (for its LEDs) and the sink outlives the machine; once the
/// machine is gone, input for it goes nowhere.
///
/// A key held down repeats, as a PS/2 keyboard's do (its typematic rate): the host sends
/// one press and one release, so a thread of the port sends the key's make code again
/// after the delay and then at the rate, until the key comes up or another goes down.
pub struct I8042Port {
    i8042: Weak<Mutex<I8042>>,
    /// The key repeating now, and the sender whose drop stops its thread.
    repeat: Mutex<Option<(u16, std::sync::mpsc::Sender<()>)>>,
}

impl I8042Port {
    pub fn new(i8042: Weak<Mutex<I8042>>) -> Self {
        I8042Port { i8042, repeat: Mutex::new(None) }
    }

    /// Repeats `code` from its thread until told to stop (or the machine is gone).
    fn start_repeat(&self, code: u16) {
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let i8042 = self.i8042.clone();
        let Some(machine) = i8042.upgrade() else { return };
        let (delay, period) = lock(&machine).keyboard.typematic();
        drop(machine);
        let spawned =
            std::thread::Builder::new().name("vessel-typematic".into()).spawn(move || {
                crate::seccomp::confine_this_thread(crate::seccomp::ThreadKind::DeviceIo);
                let mut wait = delay;
                // Ends when the sender is dropped (the key came up) or the i8042 is gone.
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(wait)
                {
                    let Some(i8042) = i8042.upgrade() else { return };
                    lock(&i8042).key(code, true);
                    wait = period;
                }
            });
        match spawned {
            Ok(_) => *lock(&self.repeat) = Some((code, stop)),
            Err(e) => log::warn!("i8042: no key repeat: {e}"),
        }
    }
}

impl Ps2Port for I8042Port {
    fn key(&self, code: u16, down: bool) {
        let Some(i8042) = self.i8042.upgrade() else { return };
        lock(&i8042).key(code, down);
        drop(i8042);
        let mut repeat = lock(&self.repeat);
        let repeating = repeat.as_ref().map(|(key, _)| *key);
        if down || repeating == Some(code) {
            // Another key down, or this one up: the repeat stops (its sender dropped).
            *repeat = None;
        }
        drop(repeat);
        // Pause sends its whole sequence once and is not typematic.
        if down && code != crate::input::evdev::KEY_PAUSE {
            self.start_repeat(code);
        }
    }

    fn mouse(&self, dx: i32, dy: i32, wheel: i32, buttons: u8) {
        if let Some(i8042) = self.i8042.upgrade() {
            lock(&i8042).mouse(dx, dy, wheel, buttons);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::x86_64::layout::I8042_DATA_PORT;
    use crate::devices::legacy::ps2::keyboard::{ACK, SELF_TEST_PASSED};
    use crate::input::evdev::*;
    use std::sync::Arc;

    #[test]
    fn keyboard_mouse_and_controller_survive_a_save() {
        use crate::persist::Persist;
        let (mut d, _) = dev();
        // The mouse on (an IntelliMouse: 200, 100, 80), LEDs lit, set 1, a key waiting
        // in the output buffer and more behind it.
        command(&mut d, CMD_ENABLE_AUX);
        for rate in [200, 100, 80] {
            command(&mut d, CMD_WRITE_AUX);
            data(&mut d, 0xf3);
            command(&mut d, CMD_WRITE_AUX);
            data(&mut d, rate);
        }
        drain(&mut d);
        data(&mut d, 0xed);
        data(&mut d, 0x04); // caps lock
        drain(&mut d);
        d.key(KEY_A, true);
        d.key(KEY_B, true);
        let state = d.save_state();
        let (mut restored, _) = dev();
        restored.restore_state(&state).unwrap();
        assert_eq!(restored.save_state(), state);
        assert!(restored.keyboard.leds().caps_lock);
        let keys = drain(&mut restored);
        assert_eq!(keys, drain(&mut d), "the same bytes come out");
        assert!(!keys.is_empty());
        command(&mut restored, CMD_WRITE_AUX);
        data(&mut restored, 0xf2); // identify
        assert_eq!(drain(&mut restored), [ACK, 3], "still an IntelliMouse");
        // Crafted states: refused whole, naming what is wrong.
        let mut bad = state.clone();
        bad.mouse.id = 9;
        let error = restored.restore_state(&bad).unwrap_err().to_string();
        assert!(error.contains("PS/2 controller") && error.contains("mouse: ID 9"), "{error}");
        let mut bad = state.clone();
        bad.keyboard.output.queue = vec![0; 10_000];
        assert!(restored.restore_state(&bad).unwrap_err().to_string().contains("keyboard"));
        let mut bad = state;
        bad.replies = vec![(0, Source::Keyboard); 100];
        assert!(restored.restore_state(&bad).is_err());
    }

    fn dev() -> (I8042, Arc<Mutex<Vec<PowerRequest>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let aux = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let power: PowerSink = Arc::new(move |r| sink.lock().unwrap().push(r));
        (I8042::new(power, [Some(irq), Some(aux)], None), seen)
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
        // The auxiliary port's output buffer write: the byte comes back as the mouse's.
        command(&mut d, CMD_WRITE_AUX_OUTPUT);
        data(&mut d, 0x5b);
        assert_eq!(read(&mut d, I8042_COMMAND_PORT) & STATUS_AUX_OUTPUT, STATUS_AUX_OUTPUT);
        assert_eq!(drain(&mut d), [0x5b]);
    }

    /// IRQ 12 edges raised since the last call.
    fn aux_irqs(d: &I8042) -> u64 {
        d.aux_irq.as_ref().unwrap().read().unwrap_or(0)
    }

    #[test]
    fn the_mouse_answers_on_the_auxiliary_port_with_irq_12() {
        let (mut d, _) = dev();
        command(&mut d, CMD_WRITE_COMMAND_BYTE);
        data(&mut d, CB_KBD_INTERRUPT | CB_AUX_INTERRUPT | CB_TRANSLATE);
        let to_mouse = |d: &mut I8042, byte| {
            command(d, CMD_WRITE_AUX);
            data(d, byte);
        };
        to_mouse(&mut d, 0xff);
        assert_eq!(aux_irqs(&d), 1);
        assert_eq!(read(&mut d, I8042_COMMAND_PORT) & STATUS_AUX_OUTPUT, STATUS_AUX_OUTPUT);
        assert_eq!(drain(&mut d), [0xfa, 0xaa, 0x00], "reset: ACK, self-test passed, ID 0");
        to_mouse(&mut d, 0xf4);
        assert_eq!(drain(&mut d), [0xfa]);
        aux_irqs(&d);
        irqs(&d);
        d.mouse(3, 0, 0, Button::Left.bit());
        assert_eq!(aux_irqs(&d), 1, "the first byte");
        assert_eq!(irqs(&d), 0, "not the keyboard's IRQ");
        assert_eq!(drain(&mut d), [0x09, 3, 0]);
        // A disabled auxiliary interface holds the mouse's bytes back.
        command(&mut d, CMD_DISABLE_AUX);
        d.mouse(0, 0, 0, 0);
        assert!(drain(&mut d).is_empty());
        command(&mut d, CMD_ENABLE_AUX);
        assert_eq!(drain(&mut d), [0x08, 0, 0], "the left button came up");
    }

    #[test]
    fn a_held_key_repeats_until_it_comes_up() {
        let (d, _) = dev();
        let d = Arc::new(Mutex::new(d));
        let port = I8042Port::new(Arc::downgrade(&d));
        // The fastest rate: after 250 ms, 30 a second.
        data(&mut lock(&d), 0xf3);
        data(&mut lock(&d), 0x00);
        drain(&mut lock(&d));
        port.key(KEY_A, true);
        std::thread::sleep(std::time::Duration::from_millis(600));
        let held = drain(&mut lock(&d));
        assert!(held.len() >= 3 && held.iter().all(|&b| b == 0x1e), "{held:02x?}");
        port.key(KEY_A, false);
        std::thread::sleep(std::time::Duration::from_millis(100));
        drain(&mut lock(&d));
        std::thread::sleep(std::time::Duration::from_millis(300));
        assert!(drain(&mut lock(&d)).is_empty(), "no repeats once it is up");
        // Another key down takes the repeat over; the machine gone, the thread ends.
        port.key(KEY_A, true);
        port.key(KEY_B, true);
        std::thread::sleep(std::time::Duration::from_millis(400));
        let held = drain(&mut lock(&d));
        assert_eq!(held[..2], [0x1e, 0x30], "{held:02x?}");
        assert!(held[2..].iter().all(|&b| b == 0x30) && held.len() > 2, "{held:02x?}");
        // Pause held: its sequence once, no repeats (and B's repeat stops).
        port.key(KEY_PAUSE, true);
        drain(&mut lock(&d));
        std::thread::sleep(std::time::Duration::from_millis(400));
        assert!(drain(&mut lock(&d)).is_empty(), "Pause is not typematic");
        drop(d);
    }

    #[test]
    fn leds_reach_the_input_sink() {
        let sink = InputSink::new().unwrap();
        let mut d = I8042::new(Arc::new(|_| {}), [None, None], Some(sink.clone()));
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
