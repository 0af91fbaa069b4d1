//! virtio-input (virtio 1.2 §5.8): a keyboard, an absolute tablet or a relative mouse.
//! Events come from the machine's `InputSink`; the event queue carries them to the guest
//! in its buffers, one struct virtio_input_event (8 bytes) each. The status queue brings
//! the guest's LED changes back. The configuration space answers the driver's
//! select/subsel queries: name, serial, device ids, property bits, event bits, axes.

use std::os::fd::{AsRawFd, RawFd};

use virtio_queue::{Queue, QueueT};
use vm_memory::Bytes;

use super::{TYPE_INPUT, VirtioDevice, read_config_bytes};
use crate::devices::log_limit::{LogLimit, held_back};
use crate::input::evdev::*;
use crate::input::{ABS_MAX, InputEvent, InputKind, InputSink};
use crate::vstate::memory::GuestMem;

const EVENTQ: usize = 0;
const STATUSQ: usize = 1;
/// As QEMU and UML size their rings (vhost-user has no way to ask for less).
const QUEUE_SIZE: u16 = 256;
const EVENT_BYTES: usize = 8;

// struct virtio_input_config selectors (§5.8.5).
const CFG_ID_NAME: u8 = 0x01;
const CFG_ID_SERIAL: u8 = 0x02;
const CFG_ID_DEVIDS: u8 = 0x03;
const CFG_PROP_BITS: u8 = 0x10;
const CFG_EV_BITS: u8 = 0x11;
const CFG_ABS_INFO: u8 = 0x12;
/// select, subsel, size, reserved[5], then the 128-byte union.
const CONFIG_HEADER: usize = 8;
const CONFIG_BYTES: usize = CONFIG_HEADER + 128;

/// BUS_VIRTUAL (include/uapi/linux/input.h) and the virtio vendor id.
const BUS_VIRTUAL: u16 = 0x06;
const VENDOR: u16 = 0x1af4;

pub struct Input {
    kind: InputKind,
    sink: InputSink,
    select: u8,
    subsel: u8,
    /// The answer to the current select/subsel.
    config: [u8; CONFIG_BYTES],
    warnings: LogLimit,
}

impl Input {
    pub fn new(kind: InputKind, sink: InputSink) -> Self {
        let mut device = Input {
            kind,
            sink,
            select: 0,
            subsel: 0,
            config: [0; CONFIG_BYTES],
            warnings: LogLimit::default(),
        };
        device.answer();
        device
    }

    fn name(&self) -> &'static str {
        match self.kind {
            InputKind::Keyboard => "Vessel Keyboard",
            InputKind::Tablet => "Vessel Tablet",
            InputKind::Mouse => "Vessel Mouse",
        }
    }

    /// Event codes of type `ev` this device sends (or, for EV_LED, accepts).
    fn codes(&self, ev: u16) -> Vec<u16> {
        const BUTTONS: [u16; 5] = [BTN_LEFT, BTN_RIGHT, BTN_MIDDLE, BTN_SIDE, BTN_EXTRA];
        match (self.kind, ev) {
            (InputKind::Keyboard, EV_KEY) => (KEY_FIRST..=KEY_LAST).collect(),
            (InputKind::Keyboard, EV_LED) => {
                vec![LED_NUML, LED_CAPSL, LED_SCROLLL, LED_COMPOSE, LED_KANA]
            }
            (InputKind::Tablet | InputKind::Mouse, EV_KEY) => BUTTONS.to_vec(),
            (InputKind::Tablet, EV_ABS) => vec![ABS_X, ABS_Y],
            (InputKind::Tablet, EV_REL) => vec![REL_HWHEEL, REL_WHEEL],
            (InputKind::Mouse, EV_REL) => vec![REL_X, REL_Y, REL_HWHEEL, REL_WHEEL],
            _ => Vec::new(),
        }
    }

    /// Fills the union and size for the current select/subsel (§5.8.5.1 device
    /// requirements: size 0 when there is no answer).
    fn answer(&mut self) {
        let mut body = Vec::new();
        match self.select {
            CFG_ID_NAME if self.subsel == 0 => body.extend_from_slice(self.name().as_bytes()),
            CFG_ID_SERIAL if self.subsel == 0 => {
                body.extend_from_slice(format!("vessel-{:?}", self.kind).to_lowercase().as_bytes())
            }
            CFG_ID_DEVIDS if self.subsel == 0 => {
                let product = 1 + self.kind as u16;
                for v in [BUS_VIRTUAL, VENDOR, product, 1] {
                    body.extend_from_slice(&v.to_le_bytes());
                }
            }
            CFG_EV_BITS => {
                let ev = u16::from(self.subsel);
                let codes = self.codes(ev);
                if let Some(&max) = codes.iter().max() {
                    body = vec![0; usize::from(max) / 8 + 1];
                    for code in codes {
                        body[usize::from(code / 8)] |= 1 << (code % 8);
                    }
                } else if ev == EV_REP && self.kind == InputKind::Keyboard {
                    // Autorepeat is done by the guest; the type is present, no codes.
                    body = vec![0];
                }
            }
            CFG_ABS_INFO if self.codes(EV_ABS).contains(&u16::from(self.subsel)) => {
                // min, max, fuzz, flat, res
                for v in [0, ABS_MAX, 0, 0, 0] {
                    body.extend_from_slice(&v.to_le_bytes());
                }
            }
            CFG_PROP_BITS => {} // no input properties (INPUT_PROP_*)
            _ => {}             // CFG_UNSET, unknown selectors: no answer
        }
        self.config = [0; CONFIG_BYTES];
        self.config[0] = self.select;
        self.config[1] = self.subsel;
        let n = body.len().min(128);
        self.config[2] = n as u8;
        self.config[CONFIG_HEADER..CONFIG_HEADER + n].copy_from_slice(&body[..n]);
    }

    /// Moves queued events into the guest's event buffers; returns whether any were used.
    fn deliver(&mut self, queue: &mut Queue, mem: &GuestMem) -> bool {
        if !queue.ready() {
            return false;
        }
        let sink = self.sink.clone();
        let events = sink.queue(self.kind);
        let mut used = false;
        while let Some(event) = events.take(1).pop() {
            let Some(chain) = queue.pop_descriptor_chain(mem) else {
                events.put_back(vec![event]);
                break;
            };
            let head = chain.head_index();
            let written = match chain.clone().find(|d| d.is_write_only()) {
                None => Err("an event buffer the device cannot write"),
                Some(desc) if (desc.len() as usize) < EVENT_BYTES => {
                    Err("an event buffer shorter than an event")
                }
                Some(desc) => mem
                    .write_slice(&event.to_bytes(), desc.addr())
                    .map_err(|_| "an event buffer outside guest memory"),
            };
            let len = match written {
                Ok(()) => EVENT_BYTES as u32,
                Err(why) => {
                    // The buffer goes back empty; the event waits for the next one.
                    self.warn(why);
                    events.put_back(vec![event]);
                    0
                }
            };
            if queue.add_used(mem, head, len).is_err() {
                self.warn("cannot update the used ring");
                break;
            }
            used = true;
        }
        used
    }

    /// Reads the guest's status events (LEDs) and gives the buffers back.
    fn take_status(&mut self, queue: &mut Queue, mem: &GuestMem) -> bool {
        let mut used = false;
        while let Some(chain) = queue.pop_descriptor_chain(mem) {
            let head = chain.head_index();
            let mut bytes = [0u8; EVENT_BYTES];
            let readable = chain.clone().find(|d| !d.is_write_only());
            match readable {
                Some(desc) if desc.len() as usize >= EVENT_BYTES => {
                    if mem.read_slice(&mut bytes, desc.addr()).is_ok() {
                        let event = InputEvent::from_bytes(bytes);
                        if event.kind == EV_LED && self.kind == InputKind::Keyboard {
                            self.sink.set_led(event.code, event.value != 0);
                        }
                    } else {
                        self.warn("a status buffer outside guest memory");
                    }
                }
                _ => self.warn("a status buffer without a whole event"),
            }
            if queue.add_used(mem, head, 0).is_err() {
                self.warn("cannot update the used ring");
                break;
            }
            used = true;
        }
        used
    }

    fn warn(&mut self, what: &str) {
        if let Some(n) = self.warnings.allow() {
            log::warn!("virtio-input: {what}{}", held_back(n));
        }
    }
}

impl VirtioDevice for Input {
    fn device_type(&self) -> u32 {
        TYPE_INPUT
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE]
    }

    fn pci_class(&self) -> u32 {
        0x09_80_00 // input device controller, other (as QEMU's virtio-input)
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        // Only select (offset 0) and subsel (offset 1) are writable.
        for (i, &byte) in data.iter().enumerate() {
            match offset.checked_add(i as u64) {
                Some(0) => self.select = byte,
                Some(1) => self.subsel = byte,
                _ => {}
            }
        }
        self.answer();
    }

    fn activate(&mut self, _features: u64) {
        self.sink.set_driver_live(self.kind, true);
    }

    /// The configuration query the driver had selected, and (a keyboard) the LEDs it lit.
    fn save_state(&self) -> Vec<u8> {
        let leds = (self.kind == InputKind::Keyboard).then(|| self.sink.leds());
        crate::persist::encode_part(&(self.select, self.subsel, leds))
    }

    fn restore_state(&mut self, state: &[u8], _mem: &GuestMem) -> Result<(), String> {
        let (select, subsel, leds): (u8, u8, Option<crate::input::Leds>) =
            crate::persist::decode_part(state)?;
        (self.select, self.subsel) = (select, subsel);
        self.answer();
        if let Some(leds) = leds.filter(|_| self.kind == InputKind::Keyboard) {
            self.sink.set_led(LED_NUML, leds.num_lock);
            self.sink.set_led(LED_CAPSL, leds.caps_lock);
            self.sink.set_led(LED_SCROLLL, leds.scroll_lock);
        }
        Ok(())
    }

    fn reset(&mut self) {
        self.select = 0;
        self.subsel = 0;
        self.answer();
        self.sink.set_driver_live(self.kind, false);
    }

    fn process_queue(&mut self, index: usize, queues: &mut [Queue], mem: &GuestMem) -> u64 {
        let Some(queue) = queues.get_mut(index) else { return 0 };
        let used = match index {
            EVENTQ => self.deliver(queue, mem),
            STATUSQ => self.take_status(queue, mem),
            _ => false,
        };
        u64::from(used) << index
    }

    fn backend_fd(&self) -> Option<RawFd> {
        Some(self.sink.queue(self.kind).wake_fd().as_raw_fd())
    }

    fn process_backend(&mut self, queues: &mut [Queue], mem: &GuestMem) -> u64 {
        let _ = self.sink.queue(self.kind).wake_fd().read();
        match queues.get_mut(EVENTQ) {
            Some(queue) => u64::from(self.deliver(queue, mem)) << EVENTQ,
            None => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::test_util::{publish, put_desc, queue, used};
    use crate::vstate::memory::create_guest_memory;
    use vm_memory::GuestAddress;

    const WRITE: u16 = 2;

    fn query(dev: &mut Input, select: u8, subsel: u8) -> Vec<u8> {
        dev.write_config(0, &[select, subsel]);
        let mut size = [0u8];
        dev.read_config(2, &mut size);
        let mut body = vec![0u8; usize::from(size[0])];
        dev.read_config(CONFIG_HEADER as u64, &mut body);
        body
    }

    fn has_bit(bitmap: &[u8], code: u16) -> bool {
        bitmap.get(usize::from(code / 8)).is_some_and(|b| b & (1 << (code % 8)) != 0)
    }

    #[test]
    fn the_selected_query_and_the_leds_survive_a_save() {
        let mem = create_guest_memory(16 << 20).unwrap();
        let sink = InputSink::new().unwrap();
        let mut kbd = Input::new(InputKind::Keyboard, sink.clone());
        kbd.write_config(0, &[CFG_ID_NAME, 0]);
        sink.set_led(LED_CAPSL, true);
        let state = kbd.save_state();
        let other = InputSink::new().unwrap();
        let mut restored = Input::new(InputKind::Keyboard, other.clone());
        restored.restore_state(&state, &mem).unwrap();
        let mut size = [0u8];
        restored.read_config(2, &mut size);
        assert_eq!(usize::from(size[0]), b"Vessel Keyboard".len());
        assert!(other.leds().caps_lock && !other.leds().num_lock);
        assert!(restored.restore_state(&[], &mem).is_err());
    }

    #[test]
    fn configuration_answers() {
        let sink = InputSink::new().unwrap();
        let mut kbd = Input::new(InputKind::Keyboard, sink.clone());
        assert_eq!(query(&mut kbd, CFG_ID_NAME, 0), b"Vessel Keyboard");
        assert_eq!(query(&mut kbd, CFG_ID_SERIAL, 0), b"vessel-keyboard");
        assert_eq!(query(&mut kbd, CFG_ID_DEVIDS, 0), [6, 0, 0xf4, 0x1a, 1, 0, 1, 0]);
        assert_eq!(query(&mut kbd, CFG_PROP_BITS, 0), b"");
        let keys = query(&mut kbd, CFG_EV_BITS, EV_KEY as u8);
        for code in [
            KEY_ESC,
            KEY_A,
            KEY_102ND,
            KEY_RIGHTMETA,
            KEY_COMPOSE,
            KEY_MUTE,
            KEY_PLAYPAUSE,
            KEY_MICMUTE,
        ] {
            assert!(has_bit(&keys, code), "key {code}");
        }
        assert!(!has_bit(&keys, 0) && !has_bit(&keys, 249));
        assert_eq!(query(&mut kbd, CFG_EV_BITS, EV_REP as u8).len(), 1, "autorepeat present");
        assert!(has_bit(&query(&mut kbd, CFG_EV_BITS, EV_LED as u8), LED_CAPSL));
        assert_eq!(query(&mut kbd, CFG_EV_BITS, EV_ABS as u8), b"", "no axes");
        assert_eq!(query(&mut kbd, CFG_ABS_INFO, 0), b"");

        let mut tablet = Input::new(InputKind::Tablet, sink.clone());
        assert_eq!(query(&mut tablet, CFG_ID_NAME, 0), b"Vessel Tablet");
        let abs = query(&mut tablet, CFG_EV_BITS, EV_ABS as u8);
        assert!(has_bit(&abs, ABS_X) && has_bit(&abs, ABS_Y));
        let info = query(&mut tablet, CFG_ABS_INFO, ABS_Y as u8);
        assert_eq!(info.len(), 20);
        assert_eq!(i32::from_le_bytes(info[4..8].try_into().unwrap()), ABS_MAX);
        assert_eq!(query(&mut tablet, CFG_ABS_INFO, 5), b"", "an axis it does not have");
        assert!(has_bit(&query(&mut tablet, CFG_EV_BITS, EV_KEY as u8), BTN_LEFT));
        assert!(has_bit(&query(&mut tablet, CFG_EV_BITS, EV_REL as u8), REL_WHEEL));
        assert_eq!(query(&mut tablet, CFG_EV_BITS, EV_REP as u8), b"");

        let mut mouse = Input::new(InputKind::Mouse, sink);
        let rel = query(&mut mouse, CFG_EV_BITS, EV_REL as u8);
        assert!(has_bit(&rel, REL_X) && has_bit(&rel, REL_Y));
        assert_eq!(query(&mut mouse, CFG_EV_BITS, EV_ABS as u8), b"");
        // Unknown selectors and subsels answer size 0; writes past subsel are ignored.
        assert_eq!(query(&mut mouse, 0x7f, 0), b"");
        assert_eq!(query(&mut mouse, CFG_ID_NAME, 1), b"");
        mouse.write_config(2, &[99; 40]);
        mouse.write_config(u64::MAX, &[1, 2]);
        let mut size = [0u8];
        mouse.read_config(2, &mut size);
        assert_eq!(size[0], 0);
        let mut far = [0xaau8; 8];
        mouse.read_config(1 << 40, &mut far);
        assert_eq!(far, [0; 8]);
    }

    #[test]
    fn events_fill_buffers_and_wait_for_more() {
        let mem = create_guest_memory(16 << 20).unwrap();
        let sink = InputSink::new().unwrap();
        let mut dev = Input::new(InputKind::Keyboard, sink.clone());
        let mut queues = [queue(&mem), queue(&mem)];
        // Two buffers for a three-event burst: two go now, one waits.
        put_desc(&mem, 0, 0x8000, 8, WRITE, 0);
        put_desc(&mem, 1, 0x8008, 8, WRITE, 0);
        publish(&mem, &[0, 1]);
        sink.key(KEY_A, true); // KEY_A down, SYN
        sink.key(KEY_A, false); // KEY_A up, SYN
        assert_eq!(dev.process_backend(&mut queues, &mem), 1);
        assert_eq!(used(&mem, 0), (0, 8));
        let event = |at: u64| InputEvent::from_bytes(mem.read_obj(GuestAddress(at)).unwrap());
        assert_eq!(event(0x8000), InputEvent::new(EV_KEY, KEY_A, 1));
        assert_eq!(event(0x8008), InputEvent::SYN);
        assert_eq!(sink.queue(InputKind::Keyboard).len(), 2, "the rest waits for buffers");
        assert_eq!(dev.process_backend(&mut queues, &mem), 0, "no buffers, nothing used");
        // The driver posts more buffers and notifies: the rest arrives in order.
        put_desc(&mem, 2, 0x8010, 8, WRITE, 0);
        put_desc(&mem, 3, 0x8018, 8, WRITE, 0);
        publish(&mem, &[0, 1, 2, 3]);
        assert_eq!(dev.process_queue(EVENTQ, &mut queues, &mem), 1);
        assert_eq!(event(0x8010), InputEvent::new(EV_KEY, KEY_A, 0));
        assert_eq!(event(0x8018), InputEvent::SYN);
        assert!(sink.queue(InputKind::Keyboard).is_empty());
    }

    #[test]
    fn hostile_event_buffers() {
        let mem = create_guest_memory(16 << 20).unwrap();
        let sink = InputSink::new().unwrap();
        let mut dev = Input::new(InputKind::Tablet, sink.clone());
        let mut queues = [queue(&mem), queue(&mem)];
        put_desc(&mem, 0, 0x8000, 4, WRITE, 0); // too short
        put_desc(&mem, 1, 0x8000, 8, 0, 0); // not writable
        put_desc(&mem, 2, 0xffff_fff0_0000, 8, WRITE, 0); // outside guest memory
        put_desc(&mem, 3, 0x8000, 8, WRITE, 0); // fine
        publish(&mem, &[0, 1, 2, 3]);
        sink.button(crate::input::Button::Left, true);
        assert_eq!(dev.process_backend(&mut queues, &mem), 1);
        for i in 0..3 {
            assert_eq!(used(&mem, i).1, 0, "bad buffer {i} returned empty");
        }
        assert_eq!(used(&mem, 3), (3, 8));
        assert_eq!(
            InputEvent::from_bytes(mem.read_obj(GuestAddress(0x8000)).unwrap()),
            InputEvent::new(EV_KEY, BTN_LEFT, 1),
            "the event went to the good buffer"
        );
        assert_eq!(sink.queue(InputKind::Tablet).len(), 1, "SYN waits");
    }

    #[test]
    fn the_status_queue_sets_leds() {
        let mem = create_guest_memory(16 << 20).unwrap();
        let sink = InputSink::new().unwrap();
        let mut dev = Input::new(InputKind::Keyboard, sink.clone());
        let mut queues = [queue(&mem), queue(&mem)];
        mem.write_slice(&InputEvent::new(EV_LED, LED_CAPSL, 1).to_bytes(), GuestAddress(0x9000))
            .unwrap();
        mem.write_slice(&InputEvent::new(EV_LED, LED_NUML, 1).to_bytes(), GuestAddress(0x9008))
            .unwrap();
        put_desc(&mem, 0, 0x9000, 8, 0, 0);
        put_desc(&mem, 1, 0x9008, 8, 0, 0);
        put_desc(&mem, 2, 0x9008, 2, 0, 0); // short: ignored, returned
        publish(&mem, &[0, 1, 2]);
        assert_eq!(dev.process_queue(STATUSQ, &mut queues, &mem), 1 << STATUSQ);
        assert_eq!(used(&mem, 2), (2, 0));
        let leds = sink.leds();
        assert!(leds.caps_lock && leds.num_lock && !leds.scroll_lock);
    }
}
