//! The host side of the guest's keyboard and pointers: `InputSink` takes key presses by
//! Linux evdev code, absolute pointer positions in display pixels, buttons, wheel and
//! relative motion, and queues them, batched with SYN_REPORT, for the machine's three
//! virtio-input devices (keyboard, tablet, mouse). Until the guest's driver of a virtio
//! device runs, what it would carry goes to the machine's PS/2 keyboard or mouse instead
//! (`Ps2Port`; absolute motion as the distance moved), so the firmware, boot loaders and
//! guests without virtio drivers get it. It lives as long as the machine, across guest
//! reboots, and never blocks: if the guest stops taking events, each device's queue keeps
//! the newest ones and counts what it dropped.

pub mod evdev;
pub mod keymap;

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use vmm_sys_util::eventfd::EventFd;

use crate::display::Display;
use crate::sync::lock;
use evdev::*;

/// One evdev event as virtio-input carries it (struct virtio_input_event, §5.8.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InputEvent {
    pub kind: u16,
    pub code: u16,
    pub value: i32,
}

impl InputEvent {
    pub const fn new(kind: u16, code: u16, value: i32) -> Self {
        InputEvent { kind, code, value }
    }

    pub const SYN: InputEvent = InputEvent::new(EV_SYN, SYN_REPORT, 0);

    /// The 8 bytes of struct virtio_input_event (little-endian le16 type, le16 code,
    /// le32 value).
    pub fn to_bytes(self) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[0..2].copy_from_slice(&self.kind.to_le_bytes());
        b[2..4].copy_from_slice(&self.code.to_le_bytes());
        b[4..8].copy_from_slice(&self.value.to_le_bytes());
        b
    }

    pub fn from_bytes(b: [u8; 8]) -> Self {
        InputEvent {
            kind: u16::from_le_bytes([b[0], b[1]]),
            code: u16::from_le_bytes([b[2], b[3]]),
            value: i32::from_le_bytes([b[4], b[5], b[6], b[7]]),
        }
    }
}

/// The three virtio-input devices a machine has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum InputKind {
    /// All keys of a 105-key keyboard plus media keys, autorepeat in the guest, LEDs.
    Keyboard,
    /// An absolute pointer (0..=32767 on both axes), buttons and wheel: the guest's pointer
    /// follows the host's without a grab.
    Tablet,
    /// A relative mouse, for guests that want one (games, some installers).
    Mouse,
}

impl InputKind {
    pub const ALL: [InputKind; 3] = [InputKind::Keyboard, InputKind::Tablet, InputKind::Mouse];

    fn index(self) -> usize {
        self as usize
    }
}

/// Largest value of the tablet's axes (QEMU's and VMware's tablets use the same range).
pub const ABS_MAX: i32 = 32767;

/// Events a device's queue holds for a guest that is not taking them; past this the
/// oldest report is dropped.
pub const QUEUE_LIMIT: usize = 1024;

/// Pointer buttons.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Button {
    Left,
    Right,
    Middle,
    /// "Back" on most mice.
    Side,
    /// "Forward" on most mice.
    Extra,
}

impl Button {
    /// Its bit in a set of buttons held down.
    pub fn bit(self) -> u8 {
        1 << (self as u8)
    }

    pub fn code(self) -> u16 {
        match self {
            Button::Left => BTN_LEFT,
            Button::Right => BTN_RIGHT,
            Button::Middle => BTN_MIDDLE,
            Button::Side => BTN_SIDE,
            Button::Extra => BTN_EXTRA,
        }
    }

    /// The button of evdev code `code` (BTN_LEFT...), if it is one of these.
    pub fn from_code(code: u16) -> Option<Button> {
        [Button::Left, Button::Right, Button::Middle, Button::Side, Button::Extra]
            .into_iter()
            .find(|b| b.code() == code)
    }
}

/// Keyboard LEDs the guest has lit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Leds {
    pub num_lock: bool,
    pub caps_lock: bool,
    pub scroll_lock: bool,
}

/// A device's queue of events for the guest, and the eventfd that tells the device there
/// are some.
pub struct EventQueue {
    state: Mutex<QueueState>,
    wake: EventFd,
    /// Gives queued events to the guest at once, on the thread that queued them.
    deliver: Mutex<Option<Deliver>>,
}

/// Gives a device's queued events to the guest now (its `process_backend`), taking the
/// device's lock: never called with a device lock held. False: the device is gone (the
/// machine is being rebuilt), and the events wait for the next one.
pub type Deliver = Arc<dyn Fn() -> bool + Send + Sync>;

#[derive(Default)]
struct QueueState {
    events: VecDeque<InputEvent>,
    dropped: u64,
}

impl EventQueue {
    fn new() -> std::io::Result<Self> {
        Ok(EventQueue {
            state: Mutex::new(QueueState::default()),
            wake: EventFd::new(libc::EFD_NONBLOCK)?,
            deliver: Mutex::new(None),
        })
    }

    /// From now on, events go to the guest on the thread that queues them, through
    /// `deliver` (None: by waking the device's thread). A key press then crosses one thread
    /// fewer: a wake-up of a sleeping thread, tens of microseconds, is most of its way.
    pub fn deliver_with(&self, deliver: Option<Deliver>) {
        *lock(&self.deliver) = deliver;
    }

    /// Queues one report (events ending with SYN_REPORT), dropping the oldest reports
    /// while the queue would be over its limit.
    fn push_report(&self, report: &[InputEvent]) {
        let mut state = lock(&self.state);
        while !state.events.is_empty() && state.events.len() + report.len() > QUEUE_LIMIT {
            // Drop one whole report, so the guest never sees half of one.
            while let Some(event) = state.events.pop_front() {
                state.dropped += 1;
                if event == InputEvent::SYN {
                    break;
                }
            }
        }
        state.events.extend(report.iter().copied());
        drop(state);
        let deliver = lock(&self.deliver).clone();
        if !deliver.is_some_and(|deliver| deliver()) {
            let _ = self.wake.write(1);
        }
    }

    /// Takes up to `max` queued events (the device has that many buffers).
    pub fn take(&self, max: usize) -> Vec<InputEvent> {
        let mut state = lock(&self.state);
        let n = max.min(state.events.len());
        state.events.drain(..n).collect()
    }

    /// Puts events back at the front (the guest had fewer buffers than the device hoped).
    pub fn put_back(&self, events: Vec<InputEvent>) {
        let mut state = lock(&self.state);
        for event in events.into_iter().rev() {
            state.events.push_front(event);
        }
    }

    pub fn len(&self) -> usize {
        lock(&self.state).events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Events dropped because the guest did not take them.
    pub fn dropped(&self) -> u64 {
        lock(&self.state).dropped
    }

    /// Signalled whenever events are queued.
    pub fn wake_fd(&self) -> &EventFd {
        &self.wake
    }
}

/// The keyboard and mouse the machine has besides virtio's: the PS/2 devices behind the
/// i8042.
pub trait Ps2Port: Send + Sync {
    fn key(&self, code: u16, down: bool);
    /// The mouse moved by (`dx`, `dy`) (right and down positive) and its wheel by `wheel`
    /// notches (up positive), with `buttons` (`Button::bit`s) down.
    fn mouse(&self, dx: i32, dy: i32, wheel: i32, buttons: u8);
}

/// The PS/2 mouse's side of the pointer: its buttons, and where the last absolute position
/// was (absolute motion reaches it as the distance from there).
#[derive(Default)]
struct Ps2Pointer {
    buttons: u8,
    last_abs: Option<(f64, f64)>,
}

/// Where a key went down, so it comes up there too.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KeyRoute {
    Virtio,
    Ps2,
}

struct Shared {
    queues: [EventQueue; 3],
    /// Keys held down and where they went, so focus loss can release them all.
    pressed: Mutex<BTreeMap<u16, KeyRoute>>,
    /// The machine's PS/2 keyboard and mouse, which take what each virtio device's driver
    /// does not yet.
    ps2: Mutex<Option<Arc<dyn Ps2Port>>>,
    ps2_pointer: Mutex<Ps2Pointer>,
    /// Which virtio-input devices' guest drivers run (by `InputKind::index`).
    live: [AtomicBool; 3],
    /// The guest display's size in pixels (width << 32 | height), for the tablet's scale.
    display_size: AtomicU64,
    /// Whether the last pointer motion was relative: buttons and wheel then go to the
    /// mouse, else to the tablet.
    relative: AtomicBool,
    leds: AtomicU8,
    /// The machine's display, whose size scales absolute positions once it shows a frame.
    display: OnceLock<Display>,
}

/// Sends keyboard and pointer input into a machine. Cheap to clone; never blocks.
#[derive(Clone)]
pub struct InputSink {
    shared: Arc<Shared>,
}

impl InputSink {
    pub fn new() -> std::io::Result<Self> {
        Ok(InputSink {
            shared: Arc::new(Shared {
                queues: [EventQueue::new()?, EventQueue::new()?, EventQueue::new()?],
                pressed: Mutex::new(BTreeMap::new()),
                ps2: Mutex::new(None),
                ps2_pointer: Mutex::new(Ps2Pointer::default()),
                live: [AtomicBool::new(false), AtomicBool::new(false), AtomicBool::new(false)],
                display_size: AtomicU64::new(pack_size(1024, 768)),
                relative: AtomicBool::new(false),
                leds: AtomicU8::new(0),
                display: OnceLock::new(),
            }),
        })
    }

    /// The event queue of one device (for the device model).
    pub fn queue(&self, kind: InputKind) -> &EventQueue {
        &self.shared.queues[kind.index()]
    }

    fn report(&self, kind: InputKind, events: &[InputEvent]) {
        let mut report = Vec::with_capacity(events.len() + 1);
        report.extend_from_slice(events);
        report.push(InputEvent::SYN);
        self.queue(kind).push_report(&report);
    }

    /// Keys and pointer go to `port` until the guest's virtio-input drivers run (a machine
    /// was built: its guest's drivers have not started yet).
    pub fn attach_ps2(&self, port: Arc<dyn Ps2Port>) {
        *lock(&self.shared.ps2) = Some(port);
        *lock(&self.shared.ps2_pointer) = Ps2Pointer::default();
        for live in &self.shared.live {
            live.store(false, Ordering::Relaxed);
        }
    }

    /// The guest's driver of the virtio-input device `kind` started (DRIVER_OK) or
    /// stopped (reset). The device model says so (tests of what reaches a device may too).
    pub fn set_driver_live(&self, kind: InputKind, live: bool) {
        self.shared.live[kind.index()].store(live, Ordering::Relaxed);
    }

    /// Whether the guest follows an absolute pointer: its tablet driver runs (or the
    /// machine has no PS/2 mouse to fall back on). Until then pointer motion reaches the
    /// PS/2 mouse as relative motion, and the host's pointer is best grabbed, as VMware
    /// does for guests without its tools.
    pub fn pointer_is_absolute(&self) -> bool {
        !self.to_ps2(InputKind::Tablet)
    }

    /// Whether what `kind` carries goes to the PS/2 devices: its virtio driver does not run
    /// and the machine has them.
    fn to_ps2(&self, kind: InputKind) -> bool {
        !self.shared.live[kind.index()].load(Ordering::Relaxed) && lock(&self.shared.ps2).is_some()
    }

    /// Where a key pressed now goes: the virtio keyboard once its driver runs (or if the
    /// machine has no PS/2 keyboard), else the PS/2 keyboard.
    fn route(&self) -> KeyRoute {
        if self.to_ps2(InputKind::Keyboard) { KeyRoute::Ps2 } else { KeyRoute::Virtio }
    }

    fn ps2_port(&self) -> Option<Arc<dyn Ps2Port>> {
        lock(&self.shared.ps2).clone()
    }

    fn ps2_key(&self, code: u16, down: bool) {
        if let Some(port) = self.ps2_port() {
            port.key(code, down);
        }
    }

    /// Motion, wheel and buttons for the PS/2 mouse (`button`: one that changed).
    fn ps2_mouse(&self, dx: i32, dy: i32, wheel: i32, button: Option<(Button, bool)>) {
        let buttons = {
            let mut pointer = lock(&self.shared.ps2_pointer);
            if let Some((button, down)) = button {
                if down {
                    pointer.buttons |= button.bit();
                } else {
                    pointer.buttons &= !button.bit();
                }
            }
            pointer.buttons
        };
        if let Some(port) = self.ps2_port() {
            port.mouse(dx, dy, wheel, buttons);
        }
    }

    /// A key went down or up; `code` is a Linux evdev key code (KEY_A = 30, ...). Codes
    /// outside the keyboard's range are ignored. Repeats come from the guest (EV_REP), so
    /// the host sends one press and one release; a key comes up where it went down.
    pub fn key(&self, code: u16, down: bool) {
        if !is_keyboard_key(code) {
            return;
        }
        let mut pressed = lock(&self.shared.pressed);
        let route = if down {
            if pressed.contains_key(&code) {
                return;
            }
            let route = self.route();
            pressed.insert(code, route);
            route
        } else {
            let Some(route) = pressed.remove(&code) else { return };
            route
        };
        drop(pressed);
        match route {
            KeyRoute::Virtio => {
                self.report(InputKind::Keyboard, &[InputEvent::new(EV_KEY, code, i32::from(down))])
            }
            KeyRoute::Ps2 => self.ps2_key(code, down),
        }
    }

    /// Releases every key held down (the window lost focus): one report for the virtio
    /// keyboard, each key on the PS/2 keyboard.
    pub fn release_all_keys(&self) {
        let released = std::mem::take(&mut *lock(&self.shared.pressed));
        let events: Vec<_> = released
            .iter()
            .filter(|(_, route)| **route == KeyRoute::Virtio)
            .map(|(&code, _)| InputEvent::new(EV_KEY, code, 0))
            .collect();
        if !events.is_empty() {
            self.report(InputKind::Keyboard, &events);
        }
        for (&code, _) in released.iter().filter(|(_, route)| **route == KeyRoute::Ps2) {
            self.ps2_key(code, false);
        }
    }

    /// Keys currently held down.
    pub fn pressed_keys(&self) -> Vec<u16> {
        lock(&self.shared.pressed).keys().copied().collect()
    }

    /// Scales absolute positions by `display`'s size from now on (the machine does this).
    pub fn attach_display(&self, display: Display) {
        let _ = self.shared.display.set(display);
    }

    /// The size of the guest's display in pixels, for a sink without a display showing a
    /// frame; absolute positions are scaled by it.
    pub fn set_display_size(&self, width: u32, height: u32) {
        self.shared.display_size.store(pack_size(width.max(1), height.max(1)), Ordering::Relaxed);
    }

    /// Moves the tablet's pointer to (`x`, `y`) in display pixels (clamped to the display).
    /// Until the guest's tablet driver runs, the PS/2 mouse moves by the distance from the
    /// last position instead.
    pub fn pointer_abs(&self, x: f64, y: f64) {
        self.shared.relative.store(false, Ordering::Relaxed);
        if self.to_ps2(InputKind::Tablet) {
            if !x.is_finite() || !y.is_finite() {
                return;
            }
            let last = lock(&self.shared.ps2_pointer).last_abs.replace((x, y));
            if let Some((lx, ly)) = last {
                let (dx, dy) = ((x - lx).round() as i32, (y - ly).round() as i32);
                if dx != 0 || dy != 0 {
                    self.ps2_mouse(dx, dy, 0, None);
                }
            }
            return;
        }
        let packed = self.shared.display_size.load(Ordering::Relaxed);
        let (width, height) = self
            .shared
            .display
            .get()
            .and_then(Display::size)
            .unwrap_or(((packed >> 32) as u32, packed as u32));
        let scale = |v: f64, size: u32| -> i32 {
            let span = f64::from(size.saturating_sub(1).max(1));
            ((v / span).clamp(0.0, 1.0) * f64::from(ABS_MAX)).round() as i32
        };
        self.report(
            InputKind::Tablet,
            &[
                InputEvent::new(EV_ABS, ABS_X, scale(x, width)),
                InputEvent::new(EV_ABS, ABS_Y, scale(y, height)),
            ],
        );
    }

    /// Moves the mouse by (`dx`, `dy`) (relative mode, with the pointer grabbed).
    pub fn pointer_rel(&self, dx: i32, dy: i32) {
        self.shared.relative.store(true, Ordering::Relaxed);
        if self.to_ps2(InputKind::Mouse) {
            if dx != 0 || dy != 0 {
                self.ps2_mouse(dx, dy, 0, None);
            }
            return;
        }
        let mut events = Vec::with_capacity(2);
        if dx != 0 {
            events.push(InputEvent::new(EV_REL, REL_X, dx));
        }
        if dy != 0 {
            events.push(InputEvent::new(EV_REL, REL_Y, dy));
        }
        if !events.is_empty() {
            self.report(InputKind::Mouse, &events);
        }
    }

    fn pointer(&self) -> InputKind {
        if self.shared.relative.load(Ordering::Relaxed) {
            InputKind::Mouse
        } else {
            InputKind::Tablet
        }
    }

    /// A pointer button went down or up (on the tablet, or on the mouse in relative mode).
    pub fn button(&self, button: Button, down: bool) {
        if self.to_ps2(self.pointer()) {
            self.ps2_mouse(0, 0, 0, Some((button, down)));
            return;
        }
        self.report(self.pointer(), &[InputEvent::new(EV_KEY, button.code(), i32::from(down))]);
    }

    /// Wheel notches: `dy` > 0 scrolls up, `dx` > 0 right (evdev REL_WHEEL / REL_HWHEEL).
    pub fn wheel(&self, dx: i32, dy: i32) {
        // The PS/2 mouse's wheel is vertical only.
        if self.to_ps2(self.pointer()) {
            if dy != 0 {
                self.ps2_mouse(0, 0, dy, None);
            }
            return;
        }
        let mut events = Vec::with_capacity(2);
        if dy != 0 {
            events.push(InputEvent::new(EV_REL, REL_WHEEL, dy));
        }
        if dx != 0 {
            events.push(InputEvent::new(EV_REL, REL_HWHEEL, dx));
        }
        if !events.is_empty() {
            self.report(self.pointer(), &events);
        }
    }

    /// The keyboard LEDs as the guest last set them.
    pub fn leds(&self) -> Leds {
        let bits = self.shared.leds.load(Ordering::Relaxed);
        Leds {
            num_lock: bits & (1 << LED_NUML) != 0,
            caps_lock: bits & (1 << LED_CAPSL) != 0,
            scroll_lock: bits & (1 << LED_SCROLLL) != 0,
        }
    }

    /// An LED event from the guest (the keyboard's status queue).
    pub(crate) fn set_led(&self, code: u16, on: bool) {
        if code < 8 {
            let bit = 1u8 << code;
            if on {
                self.shared.leds.fetch_or(bit, Ordering::Relaxed);
            } else {
                self.shared.leds.fetch_and(!bit, Ordering::Relaxed);
            }
        }
    }

    /// Events dropped so far, over all devices, because the guest did not take them.
    pub fn dropped(&self) -> u64 {
        self.shared.queues.iter().map(EventQueue::dropped).sum()
    }
}

fn pack_size(width: u32, height: u32) -> u64 {
    (u64::from(width) << 32) | u64::from(height)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(sink: &InputSink, kind: InputKind) -> Vec<(u16, u16, i32)> {
        sink.queue(kind).take(usize::MAX).into_iter().map(|e| (e.kind, e.code, e.value)).collect()
    }

    #[test]
    fn a_device_that_delivers_directly_is_not_woken() {
        let sink = InputSink::new().unwrap();
        sink.set_driver_live(InputKind::Keyboard, true);
        let queue = sink.queue(InputKind::Keyboard);
        let calls = Arc::new(AtomicU64::new(0));
        let (c, present) = (calls.clone(), Arc::new(AtomicBool::new(true)));
        let p = present.clone();
        queue.deliver_with(Some(Arc::new(move || {
            c.fetch_add(1, Ordering::SeqCst);
            p.load(Ordering::SeqCst)
        })));
        sink.key(KEY_A, true);
        assert_eq!(calls.load(Ordering::SeqCst), 1, "delivered on the caller's thread");
        assert!(queue.wake_fd().read().is_err(), "and the device's thread not woken");
        // The device gone (a machine being rebuilt): its thread is woken, as before.
        present.store(false, Ordering::SeqCst);
        sink.key(KEY_A, false);
        assert_eq!(queue.wake_fd().read().unwrap(), 1);
        assert_eq!(drain(&sink, InputKind::Keyboard).len(), 4, "both reports stay queued");
    }

    #[test]
    fn keys_are_reported_once_and_released_on_focus_loss() {
        let sink = InputSink::new().unwrap();
        sink.key(KEY_A, true);
        sink.key(KEY_A, true); // a host repeat: the guest repeats by itself
        sink.key(KEY_LEFTSHIFT, true);
        sink.key(0, true); // KEY_RESERVED
        sink.key(BTN_LEFT, true); // not a keyboard key
        assert_eq!(
            drain(&sink, InputKind::Keyboard),
            vec![(EV_KEY, KEY_A, 1), (0, 0, 0), (EV_KEY, KEY_LEFTSHIFT, 1), (0, 0, 0)]
        );
        assert_eq!(sink.pressed_keys(), vec![KEY_A, KEY_LEFTSHIFT]);
        sink.release_all_keys();
        assert_eq!(
            drain(&sink, InputKind::Keyboard),
            vec![(EV_KEY, KEY_A, 0), (EV_KEY, KEY_LEFTSHIFT, 0), (0, 0, 0)]
        );
        sink.release_all_keys();
        sink.key(KEY_A, false);
        assert!(sink.queue(InputKind::Keyboard).is_empty(), "nothing held, nothing sent");
    }

    /// PS/2 devices that write down what they got.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<(u16, bool)>>, Mutex<Vec<(i32, i32, i32, u8)>>);

    impl Ps2Port for Recorder {
        fn key(&self, code: u16, down: bool) {
            self.0.lock().unwrap().push((code, down));
        }
        fn mouse(&self, dx: i32, dy: i32, wheel: i32, buttons: u8) {
            self.1.lock().unwrap().push((dx, dy, wheel, buttons));
        }
    }

    #[test]
    fn the_pointer_moves_the_ps2_mouse_until_the_virtio_drivers_run() {
        let sink = InputSink::new().unwrap();
        let ps2 = Arc::new(Recorder::default());
        sink.attach_ps2(ps2.clone());
        // Absolute positions move it by the distance from the last one.
        sink.pointer_abs(100.0, 100.0);
        sink.pointer_abs(110.0, 95.0);
        sink.pointer_abs(f64::NAN, 3.0);
        sink.button(Button::Left, true);
        sink.wheel(2, 1);
        sink.button(Button::Left, false);
        sink.pointer_rel(-3, 4);
        assert_eq!(
            *ps2.1.lock().unwrap(),
            [(10, -5, 0, 0), (0, 0, 0, 1), (0, 0, 1, 1), (0, 0, 0, 0), (-3, 4, 0, 0)],
            "the horizontal wheel has no PS/2 counterpart"
        );
        assert!(
            sink.queue(InputKind::Tablet).is_empty() && sink.queue(InputKind::Mouse).is_empty()
        );
        // Once the tablet's driver runs, absolute motion and its buttons go there; the
        // mouse's motion still goes to PS/2 until the virtio mouse's driver runs.
        sink.set_driver_live(InputKind::Tablet, true);
        sink.pointer_abs(0.0, 0.0);
        sink.button(Button::Right, true);
        assert_eq!(drain(&sink, InputKind::Tablet).len(), 5, "ABS_X, ABS_Y, SYN, BTN, SYN");
        sink.pointer_rel(1, 1);
        assert_eq!(ps2.1.lock().unwrap().last(), Some(&(1, 1, 0, 0)));
    }

    #[test]
    fn keys_go_to_ps2_until_the_virtio_driver_runs_and_come_up_where_they_went_down() {
        let sink = InputSink::new().unwrap();
        let ps2 = Arc::new(Recorder::default());
        sink.attach_ps2(ps2.clone());
        sink.key(KEY_A, true);
        sink.key(KEY_A, false);
        sink.key(KEY_LEFTSHIFT, true);
        assert_eq!(*ps2.0.lock().unwrap(), [(KEY_A, true), (KEY_A, false), (KEY_LEFTSHIFT, true)]);
        assert!(sink.queue(InputKind::Keyboard).is_empty(), "no virtio driver yet");
        // The guest's virtio keyboard driver starts: new keys go there, Shift comes up on
        // the PS/2 keyboard it went down on.
        sink.set_driver_live(InputKind::Keyboard, true);
        sink.key(KEY_B, true);
        sink.key(KEY_LEFTSHIFT, false);
        sink.key(KEY_C, true);
        sink.release_all_keys();
        assert_eq!(
            drain(&sink, InputKind::Keyboard),
            vec![
                (EV_KEY, KEY_B, 1),
                (0, 0, 0),
                (EV_KEY, KEY_C, 1),
                (0, 0, 0),
                (EV_KEY, KEY_C, 0),
                (EV_KEY, KEY_B, 0),
                (0, 0, 0)
            ]
        );
        assert_eq!(ps2.0.lock().unwrap()[3..], [(KEY_LEFTSHIFT, false)]);
        // A new machine (a reboot): the PS/2 keyboard again until the driver runs again.
        sink.attach_ps2(ps2.clone());
        sink.key(KEY_D, true);
        sink.release_all_keys();
        assert_eq!(ps2.0.lock().unwrap()[4..], [(KEY_D, true), (KEY_D, false)]);
        assert!(sink.queue(InputKind::Keyboard).is_empty());
    }

    #[test]
    fn pointer_positions_scale_to_the_display() {
        let sink = InputSink::new().unwrap();
        sink.set_display_size(1920, 1080);
        sink.pointer_abs(0.0, 0.0);
        sink.pointer_abs(1919.0, 1079.0);
        sink.pointer_abs(959.5, -40.0);
        sink.pointer_abs(5000.0, f64::NAN);
        assert_eq!(
            drain(&sink, InputKind::Tablet),
            vec![
                (EV_ABS, ABS_X, 0),
                (EV_ABS, ABS_Y, 0),
                (0, 0, 0),
                (EV_ABS, ABS_X, ABS_MAX),
                (EV_ABS, ABS_Y, ABS_MAX),
                (0, 0, 0),
                (EV_ABS, ABS_X, 16384),
                (EV_ABS, ABS_Y, 0),
                (0, 0, 0),
                (EV_ABS, ABS_X, ABS_MAX),
                (EV_ABS, ABS_Y, 0),
                (0, 0, 0),
            ]
        );
    }

    #[test]
    fn buttons_and_wheel_follow_the_last_pointer_mode() {
        let sink = InputSink::new().unwrap();
        sink.button(Button::Left, true);
        sink.wheel(0, -2);
        sink.pointer_rel(5, 0);
        sink.pointer_rel(0, 0);
        sink.button(Button::Left, false);
        sink.wheel(1, 0);
        assert_eq!(
            drain(&sink, InputKind::Tablet),
            vec![(EV_KEY, BTN_LEFT, 1), (0, 0, 0), (EV_REL, REL_WHEEL, -2), (0, 0, 0)]
        );
        assert_eq!(
            drain(&sink, InputKind::Mouse),
            vec![
                (EV_REL, REL_X, 5),
                (0, 0, 0),
                (EV_KEY, BTN_LEFT, 0),
                (0, 0, 0),
                (EV_REL, REL_HWHEEL, 1),
                (0, 0, 0)
            ]
        );
    }

    #[test]
    fn a_guest_that_takes_nothing_loses_the_oldest_whole_reports() {
        let sink = InputSink::new().unwrap();
        let moves = QUEUE_LIMIT; // 3 events each: far more than the queue holds
        for i in 0..moves {
            sink.pointer_abs(i as f64, 0.0);
        }
        let queue = sink.queue(InputKind::Tablet);
        assert!(queue.len() <= QUEUE_LIMIT);
        assert_eq!(queue.len() % 3, 0, "only whole reports stay");
        assert_eq!(queue.dropped() as usize + queue.len(), 3 * moves);
        assert_eq!(sink.dropped(), queue.dropped());
        // The newest report is the last one sent.
        let events = queue.take(usize::MAX);
        let last_x = events[events.len() - 3];
        assert_eq!(last_x.code, ABS_X);
        assert_eq!(last_x.value, ((moves - 1) as f64 / 1023.0 * 32767.0).round() as i32);
    }

    #[test]
    fn leds_and_event_bytes() {
        let sink = InputSink::new().unwrap();
        sink.set_led(LED_CAPSL, true);
        sink.set_led(LED_NUML, true);
        sink.set_led(LED_NUML, false);
        sink.set_led(200, true); // not an LED
        assert_eq!(sink.leds(), Leds { num_lock: false, caps_lock: true, scroll_lock: false });
        let event = InputEvent::new(EV_REL, REL_X, -3);
        assert_eq!(event.to_bytes(), [2, 0, 0, 0, 0xfd, 0xff, 0xff, 0xff]);
        assert_eq!(InputEvent::from_bytes(event.to_bytes()), event);
    }

    #[test]
    fn put_back_keeps_the_order() {
        let sink = InputSink::new().unwrap();
        sink.key(KEY_B, true);
        let queue = sink.queue(InputKind::Keyboard);
        let taken = queue.take(2);
        assert_eq!(taken.len(), 2);
        queue.put_back(taken[1..].to_vec());
        queue.put_back(taken[..1].to_vec());
        assert_eq!(queue.take(9), vec![InputEvent::new(EV_KEY, KEY_B, 1), InputEvent::SYN]);
    }
}
