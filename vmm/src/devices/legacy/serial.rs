//! COM1: a 16550A UART (`vm-superio`) whose interrupt is an irqfd and whose output is
//! collected for the machine's event channel. Host input waits in a queue when the UART's
//! FIFO is full and is fed in as the guest drains it.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::{Arc, Mutex};

use vm_superio::serial::NoEvents;
use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

use crate::devices::bus::BusDevice;
use crate::sync::lock;

/// Most host input held back for a guest that is not reading; beyond it, input is dropped.
pub const INPUT_LIMIT: usize = 64 * 1024;
/// Most guest output waiting for the controller; a guest writing faster than the host
/// takes it loses the excess rather than growing the VMM without bound.
pub const OUTPUT_LIMIT: usize = 1 << 20;

/// The UART's interrupt line: an irqfd.
pub struct IrqTrigger(pub EventFd);

impl Trigger for IrqTrigger {
    type E = std::io::Error;
    fn trigger(&self) -> std::io::Result<()> {
        self.0.write(1)
    }
}

/// Bytes the guest wrote, waiting for the controller; `ready` wakes it.
#[derive(Clone)]
pub struct SerialOutput {
    pending: Arc<Mutex<Vec<u8>>>,
    ready: Arc<EventFd>,
}

impl SerialOutput {
    pub fn new(pending: Arc<Mutex<Vec<u8>>>, ready: Arc<EventFd>) -> Self {
        SerialOutput { pending, ready }
    }
}

impl Write for SerialOutput {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut pending = lock(&self.pending);
        let was_empty = pending.is_empty();
        let room = OUTPUT_LIMIT.saturating_sub(pending.len());
        pending.extend_from_slice(&buf[..buf.len().min(room)]);
        drop(pending);
        if was_empty {
            // One wake-up per batch: the controller takes everything queued so far.
            self.ready.write(1)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub struct SerialPort {
    uart: Serial<IrqTrigger, NoEvents, SerialOutput>,
    input: VecDeque<u8>,
    dropped_input: u64,
}

/// Receive buffer register offset (with DLAB clear).
const RBR: u8 = 0;

impl SerialPort {
    pub fn new(irq: EventFd, output: SerialOutput) -> Self {
        SerialPort {
            uart: Serial::new(IrqTrigger(irq), output),
            input: VecDeque::new(),
            dropped_input: 0,
        }
    }

    /// Queues host input for the guest.
    pub fn send_input(&mut self, bytes: &[u8]) {
        let room = INPUT_LIMIT.saturating_sub(self.input.len());
        let taken = bytes.len().min(room);
        self.input.extend(&bytes[..taken]);
        if taken < bytes.len() {
            self.dropped_input += (bytes.len() - taken) as u64;
            log::warn!(
                "serial input dropped: the guest is not reading ({} bytes so far)",
                self.dropped_input
            );
        }
        self.feed();
    }

    /// Moves queued input into the UART's FIFO as far as it has room.
    fn feed(&mut self) {
        if self.input.is_empty() || self.uart.fifo_capacity() == 0 {
            return;
        }
        let n = self.uart.fifo_capacity().min(self.input.len());
        let chunk: Vec<u8> = self.input.drain(..n).collect();
        if let Err(e) = self.uart.enqueue_raw_bytes(&chunk) {
            log::warn!("serial input: {e:?}");
        }
    }
}

/// The UART's registers and receive FIFO, and the host's input waiting for room in it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SerialPortState {
    pub divisor: [u8; 2],
    pub interrupt_enable: u8,
    pub interrupt_identification: u8,
    pub line_control: u8,
    pub line_status: u8,
    pub modem_control: u8,
    pub modem_status: u8,
    pub scratch: u8,
    pub fifo: Vec<u8>,
    pub input: Vec<u8>,
}

impl crate::persist::Persist for SerialPort {
    type State = SerialPortState;

    fn save_state(&self) -> SerialPortState {
        let s = self.uart.state();
        SerialPortState {
            divisor: [s.baud_divisor_low, s.baud_divisor_high],
            interrupt_enable: s.interrupt_enable,
            interrupt_identification: s.interrupt_identification,
            line_control: s.line_control,
            line_status: s.line_status,
            modem_control: s.modem_control,
            modem_status: s.modem_status,
            scratch: s.scratch,
            fifo: s.in_buffer,
            input: self.input.iter().copied().collect(),
        }
    }

    fn restore_state(
        &mut self,
        state: &SerialPortState,
    ) -> Result<(), crate::persist::DeviceStateError> {
        let problem = |p: String| crate::persist::DeviceStateError::new("serial port", p);
        if state.input.len() > INPUT_LIMIT {
            return Err(problem(format!(
                "{} bytes of input waiting (at most {INPUT_LIMIT})",
                state.input.len()
            )));
        }
        let saved = vm_superio::serial::SerialState {
            baud_divisor_low: state.divisor[0],
            baud_divisor_high: state.divisor[1],
            interrupt_enable: state.interrupt_enable,
            interrupt_identification: state.interrupt_identification,
            line_control: state.line_control,
            line_status: state.line_status,
            modem_control: state.modem_control,
            modem_status: state.modem_status,
            scratch: state.scratch,
            in_buffer: state.fifo.clone(),
        };
        // The same interrupt line and output, the saved registers (an interrupt the guest
        // had not taken is raised again).
        let irq = self.uart.interrupt_evt().0.try_clone().map_err(|e| problem(e.to_string()))?;
        let out = self.uart.writer().clone();
        let uart = Serial::from_state(&saved, IrqTrigger(irq), NoEvents, out)
            .map_err(|e| problem(format!("{e:?}")))?;
        self.uart = uart;
        self.input = state.input.iter().copied().collect();
        Ok(())
    }
}

impl BusDevice for SerialPort {
    fn read(&mut self, _base: u64, offset: u64, data: &mut [u8]) {
        data.fill(0);
        let Ok(offset) = u8::try_from(offset) else {
            return;
        };
        data[0] = self.uart.read(offset);
        if offset == RBR {
            self.feed();
        }
    }

    fn write(&mut self, _base: u64, offset: u64, data: &[u8]) {
        let (Ok(offset), Some(&value)) = (u8::try_from(offset), data.first()) else {
            return;
        };
        if let Err(e) = self.uart.write(offset, value) {
            log::warn!("serial: {e:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port() -> (SerialPort, Arc<Mutex<Vec<u8>>>, EventFd) {
        let out = Arc::new(Mutex::new(Vec::new()));
        let ready = Arc::new(EventFd::new(libc::EFD_NONBLOCK).unwrap());
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let p = SerialPort::new(irq.try_clone().unwrap(), SerialOutput::new(out.clone(), ready));
        (p, out, irq)
    }

    #[test]
    fn output_is_collected() {
        let (mut p, out, _) = port();
        for b in b"hi" {
            p.write(0x3f8, 0, &[*b]);
        }
        assert_eq!(*out.lock().unwrap(), b"hi");
    }

    #[test]
    fn input_beyond_the_fifo_waits_for_the_guest() {
        let (mut p, _, irq) = port();
        p.write(0x3f8, 1, &[1]); // IER: received-data interrupt
        let text: Vec<u8> = (0..200u8).collect();
        p.send_input(&text);
        assert!(irq.read().unwrap() >= 1);
        let mut got = Vec::new();
        let mut b = [0u8];
        for _ in 0..200 {
            p.read(0x3f8, 5, &mut b); // LSR
            assert_eq!(b[0] & 1, 1, "data ready");
            p.read(0x3f8, 0, &mut b);
            got.push(b[0]);
        }
        assert_eq!(got, text);
        p.read(0x3f8, 5, &mut b);
        assert_eq!(b[0] & 1, 0);
    }

    #[test]
    fn output_is_bounded() {
        let (mut p, out, _) = port();
        for _ in 0..OUTPUT_LIMIT + 100 {
            p.write(0x3f8, 0, b"x");
        }
        assert_eq!(out.lock().unwrap().len(), OUTPUT_LIMIT);
    }

    #[test]
    fn registers_fifo_and_waiting_input_survive_a_save() {
        use crate::persist::Persist;
        let (mut p, _, _) = port();
        p.write(0x3f8, 3, &[0x80]); // DLAB
        p.write(0x3f8, 0, &[0x0c]); // 9600 baud
        p.write(0x3f8, 3, &[0x03]); // 8N1
        p.write(0x3f8, 7, &[0x99]); // scratch
        p.write(0x3f8, 1, &[1]); // received-data interrupt
        let text: Vec<u8> = (0..100u8).collect();
        p.send_input(&text); // 64 in the FIFO, the rest waiting
        let state = p.save_state();
        assert_eq!(state.fifo.len() + state.input.len(), 100);

        let (mut restored, out, irq) = port();
        restored.restore_state(&state).unwrap();
        assert!(irq.read().unwrap() >= 1, "the untaken interrupt is raised again");
        let mut b = [0u8];
        restored.read(0x3f8, 7, &mut b);
        assert_eq!(b[0], 0x99);
        let mut got = Vec::new();
        for _ in 0..100 {
            restored.read(0x3f8, 0, &mut b);
            got.push(b[0]);
        }
        assert_eq!(got, text);
        restored.write(0x3f8, 0, b"!");
        assert_eq!(*out.lock().unwrap(), b"!", "output goes where it went");
        // A crafted state: too much input, an overfull FIFO.
        let mut bad = state.clone();
        bad.input = vec![0; INPUT_LIMIT + 1];
        assert!(restored.restore_state(&bad).unwrap_err().to_string().contains("serial port"));
        let mut bad = state;
        bad.fifo = vec![0; 1000];
        assert!(restored.restore_state(&bad).is_err());
    }

    #[test]
    fn input_is_bounded() {
        let (mut p, _, _) = port();
        p.send_input(&vec![b'x'; INPUT_LIMIT * 2]);
        assert!(p.input.len() <= INPUT_LIMIT);
        assert!(p.dropped_input > 0);
        p.read(0x3f8, 0x1_0000_0000, &mut [0u8; 1]); // absurd offset: ignored
    }
}
