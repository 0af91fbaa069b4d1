//! The keyboard and pointer for the guest: egui's key events as evdev key presses (with
//! modifier changes and clipboard shortcuts made keys again), wheel motion as notches,
//! egui's buttons as the guest's.

use std::path::{Path, PathBuf};

use super::view::to_guest;
use crate::vmhost::client::Input;
use egui::{Modifiers, Vec2};
use vmm::input::evdev::{KEY_C, KEY_LEFTALT, KEY_LEFTCTRL, KEY_LEFTSHIFT, KEY_V, KEY_X};

/// Turns egui's keyboard events into guest key presses while the console has the keyboard.
/// egui reports modifiers only as state, so their changes become presses and releases of
/// the left Ctrl, Shift and Alt keys; the clipboard shortcuts egui turns into Copy, Cut and
/// Paste become the C, X and V keys they were.
#[derive(Default)]
pub struct KeyTranslator {
    modifiers: Modifiers,
}

impl KeyTranslator {
    pub fn with_modifiers(modifiers: Modifiers) -> Self {
        KeyTranslator { modifiers }
    }

    /// The modifiers as the guest knows them.
    pub fn modifiers(&self) -> Modifiers {
        self.modifiers
    }

    /// Takes the keyboard events out of `events` and returns them as (evdev code, down),
    /// in order. Modifier changes are left in for egui too, so its idea of the modifiers
    /// stays right for when the console gives the keyboard back.
    pub fn translate(&mut self, events: &mut Vec<egui::Event>) -> Vec<(u16, bool)> {
        let mut keys = Vec::new();
        events.retain(|event| match event {
            egui::Event::ModifiersChanged(now) => {
                self.modifiers_to(*now, &mut keys);
                true
            }
            egui::Event::Key { key, physical_key, pressed, repeat, modifiers, .. } => {
                self.modifiers_to(*modifiers, &mut keys);
                if !*repeat
                    && let Some(code) = super::keymap::evdev_from_egui(physical_key.unwrap_or(*key))
                {
                    keys.push((code, *pressed));
                }
                false
            }
            // egui-winit makes these of Ctrl held with C, X or V.
            egui::Event::Copy
            | egui::Event::Cut
            | egui::Event::Paste(_)
            | egui::Event::PasteImage(_) => {
                self.modifiers_to(
                    Modifiers { ctrl: true, command: true, ..self.modifiers },
                    &mut keys,
                );
                let code = match event {
                    egui::Event::Copy => KEY_C,
                    egui::Event::Cut => KEY_X,
                    _ => KEY_V,
                };
                keys.push((code, true));
                false
            }
            egui::Event::Text(_) | egui::Event::Ime(_) => false,
            _ => true,
        });
        keys
    }

    fn modifiers_to(&mut self, now: Modifiers, keys: &mut Vec<(u16, bool)>) {
        for (was, is, code) in [
            (self.modifiers.ctrl, now.ctrl, KEY_LEFTCTRL),
            (self.modifiers.shift, now.shift, KEY_LEFTSHIFT),
            (self.modifiers.alt, now.alt, KEY_LEFTALT),
        ] {
            if was != is {
                keys.push((code, is));
            }
        }
        self.modifiers = now;
    }

    /// Forgets the modifiers (after the keyboard left the console, every key is up).
    pub fn reset(&mut self) {
        self.modifiers = Modifiers::NONE;
    }
}

/// Sends keys to the guest.
pub fn send_keys(input: &Input, keys: &[(u16, bool)]) {
    for &(code, down) in keys {
        input.key(code, down);
    }
}

/// Wheel motion in points (or lines, or pages) to whole notches, keeping the remainder.
#[derive(Default)]
pub struct WheelAccumulator {
    rest: Vec2,
}

impl WheelAccumulator {
    /// A notch is a line, or 40 points of smooth scrolling.
    pub fn add(&mut self, unit: egui::MouseWheelUnit, delta: Vec2) -> (i32, i32) {
        let lines = match unit {
            egui::MouseWheelUnit::Point => delta / 40.0,
            egui::MouseWheelUnit::Line => delta,
            egui::MouseWheelUnit::Page => delta * 3.0,
        };
        self.rest += lines;
        let notches = Vec2::new(self.rest.x.trunc(), self.rest.y.trunc());
        self.rest -= notches;
        (notches.x as i32, notches.y as i32)
    }
}

/// Which VM's console has the keyboard, and the translation of its keys (the modifiers
/// the guest knows are held).
#[derive(Default)]
pub struct Keyboard {
    owner: Option<PathBuf>,
    keys: KeyTranslator,
}

impl Keyboard {
    /// The VM whose console has the keyboard.
    pub fn owner(&self) -> Option<&Path> {
        self.owner.as_deref()
    }

    /// `root`'s console takes the keyboard. Modifiers already held stay the host's: the
    /// guest gets their releases only if it saw them pressed.
    pub fn take(&mut self, root: &Path, held: Modifiers) {
        if self.owner.as_deref() != Some(root) {
            self.owner = Some(root.to_path_buf());
            self.keys = KeyTranslator::with_modifiers(held);
        }
    }

    /// The keyboard goes back to the host: every key the guest holds is released there.
    /// Returns the VM that had it.
    pub fn release(&mut self, input: Option<&Input>) -> Option<PathBuf> {
        if let Some(input) = input {
            input.release_all_keys();
        }
        self.keys.reset();
        self.owner.take()
    }

    /// Sends the key events of `events` to `input` (taking them out, so egui's own
    /// shortcuts do not fire). True when they held Ctrl+Alt down just now: the release
    /// combination of a grabbed pointer.
    pub fn route(&mut self, events: &mut Vec<egui::Event>, input: &Input) -> bool {
        let was = self.keys.modifiers();
        let keys = self.keys.translate(events);
        send_keys(input, &keys);
        let now = self.keys.modifiers();
        now.ctrl && now.alt && !(was.ctrl && was.alt)
    }
}

/// The guest's pointer in one console: absolute (the tablet follows the host's pointer
/// over the screen) or relative (the host's pointer is grabbed: locked and hidden, its
/// motion goes to the guest's mouse until Ctrl+Alt), with the buttons it holds and the
/// wheel's remainder.
#[derive(Default)]
pub struct Pointer {
    /// Relative mode is on (VM ▸ Relative Mouse).
    pub relative: bool,
    /// The host's pointer is grabbed now.
    pub grabbed: bool,
    held: Vec<vmm::Button>,
    wheel: WheelAccumulator,
}

impl Pointer {
    /// Grabs the host's pointer (relative mode, on a click in the console).
    pub fn grab(&mut self, ctx: &egui::Context) {
        self.grabbed = true;
        // Locked where the windowing system has it (Wayland); X11 only confines the
        // pointer to the window, which does as well: the guest's mouse moves by the raw
        // motion, not the pointer's position.
        let mode = if std::env::var_os("WAYLAND_DISPLAY").is_some() {
            egui::CursorGrab::Locked
        } else {
            egui::CursorGrab::Confined
        };
        ctx.send_viewport_cmd(egui::ViewportCommand::CursorGrab(mode));
        ctx.send_viewport_cmd(egui::ViewportCommand::CursorVisible(false));
    }

    /// Gives the host's pointer back, if it was grabbed.
    pub fn ungrab(&mut self, ctx: &egui::Context) {
        if self.grabbed {
            self.grabbed = false;
            ctx.send_viewport_cmd(egui::ViewportCommand::CursorGrab(egui::CursorGrab::None));
            ctx.send_viewport_cmd(egui::ViewportCommand::CursorVisible(true));
        }
    }

    /// Sends this frame's pointer `events` to `input`: the guest's screen (`size` pixels)
    /// is drawn in `rect`; `hovered` says the pointer is over the console.
    pub fn route(
        &mut self,
        events: &[egui::Event],
        input: &Input,
        rect: egui::Rect,
        size: [usize; 2],
        pixels_per_point: f32,
        hovered: bool,
    ) {
        for event in events {
            match event {
                egui::Event::PointerMoved(pos)
                    if !self.grabbed && (rect.contains(*pos) || !self.held.is_empty()) =>
                {
                    let (x, y) = to_guest(*pos, rect, size);
                    input.pointer_abs(x, y);
                }
                egui::Event::MouseMoved(delta) if self.grabbed => {
                    let d = *delta * pixels_per_point;
                    input.pointer_rel(d.x.round() as i32, d.y.round() as i32);
                }
                egui::Event::PointerButton { pos, button, pressed, .. } => {
                    let Some(b) = guest_button(*button) else { continue };
                    if *pressed && (self.grabbed || rect.contains(*pos)) {
                        if !self.grabbed {
                            let (x, y) = to_guest(*pos, rect, size);
                            input.pointer_abs(x, y);
                        }
                        input.button(b, true);
                        self.held.push(b);
                    } else if !*pressed && let Some(i) = self.held.iter().position(|h| *h == b) {
                        self.held.remove(i);
                        input.button(b, false);
                    }
                }
                egui::Event::MouseWheel { unit, delta, .. } if self.grabbed || hovered => {
                    let (dx, dy) = self.wheel.add(*unit, *delta);
                    input.wheel(dx, dy);
                }
                _ => {}
            }
        }
    }
}

/// Takes Ctrl+Alt+Enter (full screen on and off, VMware's key) out of `events`, whoever
/// has the keyboard; true if it was pressed.
pub fn take_fullscreen_combo(events: &mut Vec<egui::Event>) -> bool {
    let before = events.len();
    events.retain(|e| {
        !matches!(e, egui::Event::Key { key: egui::Key::Enter, pressed: true, modifiers, .. } if modifiers.ctrl && modifiers.alt)
    });
    let pressed = events.len() != before;
    if pressed {
        events.retain(|e| !matches!(e, egui::Event::Key { key: egui::Key::Enter, .. }));
    }
    pressed
}

/// egui's pointer buttons as the guest's.
pub fn guest_button(button: egui::PointerButton) -> Option<vmm::Button> {
    Some(match button {
        egui::PointerButton::Primary => vmm::Button::Left,
        egui::PointerButton::Secondary => vmm::Button::Right,
        egui::PointerButton::Middle => vmm::Button::Middle,
        egui::PointerButton::Extra1 => vmm::Button::Side,
        egui::PointerButton::Extra2 => vmm::Button::Extra,
    })
}

/// A key event as egui-winit reports a physical key (for tests).
#[cfg(test)]
pub fn key(key: egui::Key, pressed: bool, modifiers: Modifiers) -> egui::Event {
    egui::Event::Key { key, physical_key: Some(key), pressed, repeat: false, modifiers }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmm::input::evdev::*;

    #[test]
    fn keys_modifiers_and_clipboard_shortcuts_become_guest_keys() {
        let mut t = KeyTranslator::default();
        let mut events = vec![
            egui::Event::PointerGone,
            key(egui::Key::A, true, Modifiers::NONE),
            egui::Event::Text("a".into()),
            key(egui::Key::A, false, Modifiers::NONE),
            // Ctrl+C arrives as Copy, then the key's release.
            egui::Event::Copy,
            key(egui::Key::C, false, Modifiers::CTRL),
            egui::Event::ModifiersChanged(Modifiers::NONE),
        ];
        let keys = t.translate(&mut events);
        assert_eq!(
            keys,
            vec![
                (KEY_A, true),
                (KEY_A, false),
                (KEY_LEFTCTRL, true),
                (KEY_C, true),
                (KEY_C, false),
                (KEY_LEFTCTRL, false)
            ]
        );
        assert_eq!(
            events,
            vec![egui::Event::PointerGone, egui::Event::ModifiersChanged(Modifiers::NONE)],
            "only pointer and modifier events are left"
        );
        // A modifier alone (no key event) still reaches the guest, and egui still hears of it.
        let mut events = vec![egui::Event::ModifiersChanged(Modifiers::ALT)];
        assert_eq!(t.translate(&mut events), vec![(KEY_LEFTALT, true)]);
        assert_eq!(events.len(), 1);
        let mut events = vec![egui::Event::ModifiersChanged(Modifiers::NONE)];
        assert_eq!(t.translate(&mut events), vec![(KEY_LEFTALT, false)]);
    }

    #[test]
    fn wheel_deltas_become_whole_notches() {
        let mut w = WheelAccumulator::default();
        assert_eq!(w.add(egui::MouseWheelUnit::Line, Vec2::new(0.0, 1.0)), (0, 1));
        assert_eq!(w.add(egui::MouseWheelUnit::Point, Vec2::new(0.0, -30.0)), (0, 0));
        assert_eq!(w.add(egui::MouseWheelUnit::Point, Vec2::new(0.0, -30.0)), (0, -1));
    }
}
