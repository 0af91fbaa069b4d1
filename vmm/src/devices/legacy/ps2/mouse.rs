//! A PS/2 mouse on the i8042's auxiliary port (IBM PS/2 Hardware Interface Technical
//! Reference, "Pointing Device"; Microsoft's IntelliMouse extensions): stream and remote
//! modes, reporting on and off, sample rate, resolution, 1:1 and 2:1 scaling, status, wrap
//! mode, and the sample-rate sequences that turn it into an IntelliMouse with a wheel
//! (ID 3: 200, 100, 80) and then an IntelliMouse Explorer with buttons 4 and 5 (ID 4:
//! 200, 200, 80). Movement and buttons become 3- or 4-byte packets in a bounded queue the
//! controller takes them from.

pub use super::output::{ACK, QUEUE_LIMIT, RESEND, SELF_TEST_PASSED};
use super::output::{
    CMD_DEFAULTS, CMD_DISABLE, CMD_ENABLE, CMD_GET_ID, CMD_RESEND, CMD_RESET, Output,
};

const CMD_SCALING_1_1: u8 = 0xe6;
const CMD_SCALING_2_1: u8 = 0xe7;
const CMD_SET_RESOLUTION: u8 = 0xe8;
const CMD_STATUS: u8 = 0xe9;
const CMD_STREAM_MODE: u8 = 0xea;
const CMD_READ_DATA: u8 = 0xeb;
const CMD_RESET_WRAP: u8 = 0xec;
const CMD_WRAP: u8 = 0xee;
const CMD_REMOTE_MODE: u8 = 0xf0;
const CMD_SET_SAMPLE_RATE: u8 = 0xf3;

/// Buttons, as the packet's first byte has the first three.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Buttons {
    pub left: bool,
    pub right: bool,
    pub middle: bool,
    pub side: bool,
    pub extra: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Mode {
    Stream,
    Remote,
    /// Every byte the host sends comes back (but reset and leaving wrap mode).
    Wrap,
}

pub struct Mouse {
    output: Output,
    pending: Option<u8>,
    mode: Mode,
    /// The mode wrap mode returns to.
    before_wrap: Mode,
    reporting: bool,
    sample_rate: u8,
    resolution: u8,
    scaling_2_1: bool,
    /// 0 (standard), 3 (IntelliMouse) or 4 (IntelliMouse Explorer).
    id: u8,
    /// The last three sample rates set, for the ID sequences.
    rates: [u8; 3],
    buttons: Buttons,
    /// Motion not yet reported (remote mode reports it when asked).
    dx: i32,
    dy: i32,
    dz: i32,
}

/// A mouse's state: what it holds for the host, its settings, the motion not yet
/// reported.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MouseState {
    pub output: super::output::OutputState,
    pub pending: Option<u8>,
    pub mode: Mode,
    pub before_wrap: Mode,
    pub reporting: bool,
    pub sample_rate: u8,
    pub resolution: u8,
    pub scaling_2_1: bool,
    pub id: u8,
    pub rates: [u8; 3],
    pub buttons: Buttons,
    pub motion: [i32; 3],
}

impl Default for Mouse {
    fn default() -> Self {
        Self::new()
    }
}

impl Mouse {
    pub fn save_state(&self) -> MouseState {
        MouseState {
            output: self.output.save_state(),
            pending: self.pending,
            mode: self.mode,
            before_wrap: self.before_wrap,
            reporting: self.reporting,
            sample_rate: self.sample_rate,
            resolution: self.resolution,
            scaling_2_1: self.scaling_2_1,
            id: self.id,
            rates: self.rates,
            buttons: self.buttons,
            motion: [self.dx, self.dy, self.dz],
        }
    }

    /// Takes `state`; the problem if it is not one a mouse can be in.
    pub fn restore_state(&mut self, state: &MouseState) -> Result<(), String> {
        if state.resolution > 3 {
            return Err(format!("resolution {} (at most 3)", state.resolution));
        }
        if state.sample_rate == 0 {
            return Err("a sample rate of 0".into());
        }
        if ![0, 3, 4].contains(&state.id) {
            return Err(format!("ID {} (a PS/2 mouse is 0, 3 or 4)", state.id));
        }
        if state.before_wrap == Mode::Wrap {
            return Err("wrap mode to return to from wrap mode".into());
        }
        self.output.restore_state(&state.output)?;
        self.pending = state.pending;
        self.mode = state.mode;
        self.before_wrap = state.before_wrap;
        self.reporting = state.reporting;
        self.sample_rate = state.sample_rate;
        self.resolution = state.resolution;
        self.scaling_2_1 = state.scaling_2_1;
        self.id = state.id;
        self.rates = state.rates;
        self.buttons = state.buttons;
        [self.dx, self.dy, self.dz] = state.motion;
        Ok(())
    }

    pub fn new() -> Self {
        Mouse {
            output: Output::new(),
            pending: None,
            mode: Mode::Stream,
            before_wrap: Mode::Stream,
            reporting: false,
            sample_rate: 100,
            resolution: 2,
            scaling_2_1: false,
            id: 0,
            rates: [0; 3],
            buttons: Buttons::default(),
            dx: 0,
            dy: 0,
            dz: 0,
        }
    }

    fn defaults(&mut self) {
        self.mode = Mode::Stream;
        self.reporting = false;
        self.sample_rate = 100;
        self.resolution = 2;
        self.scaling_2_1 = false;
        self.pending = None;
        (self.dx, self.dy, self.dz) = (0, 0, 0);
    }

    fn send(&mut self, bytes: &[u8]) {
        self.output.send(bytes);
    }

    /// The next byte for the controller.
    pub fn take(&mut self) -> Option<u8> {
        self.output.take()
    }

    /// The mouse moved by (`dx`, `dy`) (evdev's directions: right and down are positive)
    /// and its wheel by `dz` notches (up is positive), with `buttons` down. In stream mode
    /// with reporting on, packets go out at once (more than one if the motion is larger
    /// than a packet holds); in remote mode the motion waits to be read; with reporting
    /// off it is not counted.
    pub fn motion(&mut self, dx: i32, dy: i32, dz: i32, buttons: Buttons) {
        let changed = buttons != self.buttons;
        self.buttons = buttons;
        if self.mode == Mode::Wrap || (self.mode == Mode::Stream && !self.reporting) {
            return;
        }
        // PS/2's Y grows upward and its wheel downward; saturating, so no sum overflows.
        self.dx = self.dx.saturating_add(dx);
        self.dy = self.dy.saturating_sub(dy);
        self.dz = self.dz.saturating_sub(dz);
        if self.mode == Mode::Remote {
            return;
        }
        // At most a queue's worth of packets: a motion beyond that is cut short.
        let mut first = changed;
        while first || self.dx != 0 || self.dy != 0 || self.dz != 0 {
            first = false;
            let packet = self.packet();
            if !self.output.send(&packet) {
                (self.dx, self.dy, self.dz) = (0, 0, 0);
                break;
            }
        }
    }

    /// The next packet of the motion not yet reported (taken off it).
    fn packet(&mut self) -> Vec<u8> {
        let scale = |v: i32, scaling: bool| {
            // 2:1 scaling (stream mode only) as the reference's table has it.
            if !scaling {
                return v;
            }
            match v.abs() {
                0..=1 => v,
                2 => v.signum(),
                3 => 3 * v.signum(),
                4 => 6 * v.signum(),
                5 => 9 * v.signum(),
                a => v.signum() * a.saturating_mul(2),
            }
        };
        let part = |v: &mut i32, low: i32, high: i32| {
            let p = (*v).clamp(low, high);
            *v -= p;
            p
        };
        // Packets carry at most 127 either way, though the sign bits allow 9-bit values:
        // drivers that read the data bytes as signed bytes get them right too (QEMU's
        // mouse does the same).
        let scaling = self.scaling_2_1 && self.mode == Mode::Stream;
        let x = scale(part(&mut self.dx, -127, 127), scaling).clamp(-127, 127);
        let y = scale(part(&mut self.dy, -127, 127), scaling).clamp(-127, 127);
        let b = self.buttons;
        let mut first = 0x08 | u8::from(b.left) | u8::from(b.right) << 1 | u8::from(b.middle) << 2;
        if x < 0 {
            first |= 0x10;
        }
        if y < 0 {
            first |= 0x20;
        }
        let mut packet = vec![first, x as u8, y as u8];
        match self.id {
            3 => packet.push(part(&mut self.dz, -8, 7) as i8 as u8),
            4 => {
                let z = part(&mut self.dz, -8, 7) as i8 as u8 & 0x0f;
                packet.push(z | u8::from(b.side) << 4 | u8::from(b.extra) << 5);
            }
            _ => self.dz = 0,
        }
        packet
    }

    /// A byte from the host.
    pub fn write(&mut self, byte: u8) {
        if self.mode == Mode::Wrap && byte != CMD_RESET && byte != CMD_RESET_WRAP {
            self.send(&[byte]);
            return;
        }
        if let Some(command) = self.pending.take() {
            match command {
                CMD_SET_RESOLUTION if byte <= 3 => {
                    self.resolution = byte;
                    self.send(&[ACK]);
                }
                CMD_SET_SAMPLE_RATE if byte != 0 => {
                    self.sample_rate = byte;
                    self.knock(byte);
                    self.send(&[ACK]);
                }
                _ => self.send(&[RESEND]),
            }
            return;
        }
        match byte {
            CMD_SCALING_1_1 => {
                self.scaling_2_1 = false;
                self.send(&[ACK]);
            }
            CMD_SCALING_2_1 => {
                self.scaling_2_1 = true;
                self.send(&[ACK]);
            }
            CMD_SET_RESOLUTION | CMD_SET_SAMPLE_RATE => {
                self.pending = Some(byte);
                self.send(&[ACK]);
            }
            CMD_STATUS => {
                let b = self.buttons;
                let status = u8::from(b.right)
                    | u8::from(b.middle) << 1
                    | u8::from(b.left) << 2
                    | u8::from(self.scaling_2_1) << 4
                    | u8::from(self.reporting) << 5
                    | u8::from(self.mode == Mode::Remote) << 6;
                self.send(&[ACK, status, self.resolution, self.sample_rate]);
            }
            CMD_STREAM_MODE | CMD_REMOTE_MODE => {
                self.mode = if byte == CMD_STREAM_MODE { Mode::Stream } else { Mode::Remote };
                (self.dx, self.dy, self.dz) = (0, 0, 0);
                self.send(&[ACK]);
            }
            CMD_READ_DATA => {
                self.send(&[ACK]);
                let packet = self.packet();
                self.send(&packet);
            }
            CMD_WRAP => {
                self.before_wrap = self.mode;
                self.mode = Mode::Wrap;
                self.send(&[ACK]);
            }
            CMD_RESET_WRAP => {
                if self.mode == Mode::Wrap {
                    self.mode = self.before_wrap;
                }
                self.send(&[ACK]);
            }
            CMD_GET_ID => self.send(&[ACK, self.id]),
            CMD_ENABLE | CMD_DISABLE => {
                self.reporting = byte == CMD_ENABLE;
                (self.dx, self.dy, self.dz) = (0, 0, 0);
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
                self.id = 0;
                self.rates = [0; 3];
                self.send(&[ACK, SELF_TEST_PASSED, 0]);
            }
            _ => self.send(&[RESEND]),
        }
    }

    /// The sample-rate sequences that unlock the wheel (200, 100, 80) and, with the
    /// wheel on, buttons 4 and 5 (200, 200, 80).
    fn knock(&mut self, rate: u8) {
        self.rates = [self.rates[1], self.rates[2], rate];
        match (self.rates, self.id) {
            ([200, 100, 80], 0) => self.id = 3,
            ([200, 200, 80], 3) => self.id = 4,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(m: &mut Mouse) -> Vec<u8> {
        std::iter::from_fn(|| m.take()).collect()
    }

    fn command(m: &mut Mouse, bytes: &[u8]) -> Vec<u8> {
        bytes.iter().for_each(|&b| m.write(b));
        drain(m)
    }

    #[test]
    fn reset_id_status_and_settings() {
        let mut m = Mouse::new();
        assert_eq!(command(&mut m, &[CMD_RESET]), [ACK, SELF_TEST_PASSED, 0]);
        assert_eq!(command(&mut m, &[CMD_GET_ID]), [ACK, 0]);
        assert_eq!(command(&mut m, &[CMD_STATUS]), [ACK, 0, 2, 100], "defaults");
        assert_eq!(command(&mut m, &[CMD_SET_RESOLUTION, 3]), [ACK, ACK]);
        assert_eq!(command(&mut m, &[CMD_SET_RESOLUTION, 9]), [ACK, RESEND], "no resolution 9");
        assert_eq!(command(&mut m, &[CMD_SET_SAMPLE_RATE, 40]), [ACK, ACK]);
        assert_eq!(command(&mut m, &[CMD_SCALING_2_1, CMD_ENABLE]), [ACK, ACK]);
        assert_eq!(command(&mut m, &[CMD_STATUS]), [ACK, 0x30, 3, 40]);
        assert_eq!(command(&mut m, &[0x12]), [RESEND], "not a command");
        assert_eq!(command(&mut m, &[CMD_RESEND]), [RESEND]);
    }

    #[test]
    fn the_sample_rate_knocks_unlock_the_wheel_and_two_buttons() {
        let mut m = Mouse::new();
        let rate = |m: &mut Mouse, r| command(m, &[CMD_SET_SAMPLE_RATE, r]);
        for r in [200, 200, 80] {
            rate(&mut m, r);
        }
        assert_eq!(command(&mut m, &[CMD_GET_ID]), [ACK, 0], "Explorer's knock first: nothing");
        for r in [200, 100, 80] {
            rate(&mut m, r);
        }
        assert_eq!(command(&mut m, &[CMD_GET_ID]), [ACK, 3], "IntelliMouse");
        for r in [200, 200, 80] {
            rate(&mut m, r);
        }
        assert_eq!(command(&mut m, &[CMD_GET_ID]), [ACK, 4], "IntelliMouse Explorer");
        assert_eq!(command(&mut m, &[CMD_RESET]), [ACK, SELF_TEST_PASSED, 0]);
        assert_eq!(command(&mut m, &[CMD_GET_ID]), [ACK, 0], "a reset forgets");
    }

    #[test]
    fn packets_in_stream_mode_with_reporting_on() {
        let mut m = Mouse::new();
        let left = Buttons { left: true, ..Buttons::default() };
        m.motion(5, 5, 0, Buttons::default());
        assert!(drain(&mut m).is_empty(), "reporting is off after reset");
        command(&mut m, &[CMD_ENABLE]);
        m.motion(5, 3, 0, left);
        // Right 5, down 3: Y is up in PS/2, so -3 with its sign bit.
        assert_eq!(drain(&mut m), [0x08 | 0x01 | 0x20, 5, (-3i8) as u8]);
        m.motion(-300, 0, 0, left);
        assert_eq!(
            drain(&mut m),
            [0x19, (-127i8) as u8, 0, 0x19, (-127i8) as u8, 0, 0x19, (-46i8) as u8, 0],
            "a long motion in three packets"
        );
        // The wheel once it is unlocked: up one notch is -1 in the fourth byte.
        for r in [200, 100, 80] {
            command(&mut m, &[CMD_SET_SAMPLE_RATE, r]);
        }
        m.motion(0, 0, 1, Buttons::default());
        assert_eq!(drain(&mut m), [0x08, 0, 0, 0xff]);
        for r in [200, 200, 80] {
            command(&mut m, &[CMD_SET_SAMPLE_RATE, r]);
        }
        let side = Buttons { side: true, ..Buttons::default() };
        m.motion(0, 0, -2, side);
        assert_eq!(drain(&mut m), [0x08, 0, 0, 0x12], "wheel down 2 and button 4");
        m.motion(0, 0, 0, side);
        assert!(drain(&mut m).is_empty(), "nothing changed, nothing sent");
    }

    #[test]
    fn remote_mode_reports_when_asked_and_wrap_mode_echoes() {
        let mut m = Mouse::new();
        command(&mut m, &[CMD_REMOTE_MODE, CMD_ENABLE]);
        m.motion(2, -1, 0, Buttons::default());
        m.motion(1, 0, 0, Buttons { right: true, ..Buttons::default() });
        assert!(drain(&mut m).is_empty());
        assert_eq!(command(&mut m, &[CMD_READ_DATA]), [ACK, 0x0a, 3, 1]);
        assert_eq!(command(&mut m, &[CMD_READ_DATA]), [ACK, 0x0a, 0, 0], "nothing moved since");
        assert_eq!(command(&mut m, &[CMD_WRAP]), [ACK]);
        assert_eq!(command(&mut m, &[0x42, CMD_GET_ID]), [0x42, CMD_GET_ID], "echoed");
        assert_eq!(command(&mut m, &[CMD_RESET_WRAP]), [ACK]);
        assert_eq!(command(&mut m, &[CMD_STATUS])[1] & 0x40, 0x40, "back in remote mode");
    }

    #[test]
    fn a_host_that_does_not_read_gets_whole_packets_and_a_bounded_queue() {
        let mut m = Mouse::new();
        command(&mut m, &[CMD_ENABLE]);
        m.motion(i32::MAX, i32::MIN, 0, Buttons::default());
        m.motion(i32::MIN, i32::MAX, 0, Buttons::default());
        let bytes = drain(&mut m);
        assert!(bytes.len() <= QUEUE_LIMIT && bytes.len().is_multiple_of(3), "{}", bytes.len());
        assert!(bytes.chunks(3).all(|p| p[0] & 0x08 != 0), "every packet whole");
    }
}
