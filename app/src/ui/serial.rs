//! A running VM's serial console (its COM1): the last of what the guest wrote, typed into
//! directly (as a terminal would send the keys) or a line at a time.

use std::path::{Path, PathBuf};

use egui::{Key, Sense};

use super::act::Act;
use super::session::Session;

/// The serial page's own state.
#[derive(Default)]
pub struct SerialView {
    /// The line being written in the Line field.
    pub line: String,
    /// The VM whose serial text has the keyboard.
    pub focus: Option<PathBuf>,
}

impl SerialView {
    /// While the serial text has the keyboard: the keys of this frame (taken out of
    /// `events`) as bytes for the guest.
    pub fn route(&self, events: &mut Vec<egui::Event>) -> Option<Act> {
        let root = self.focus.clone()?;
        let bytes = serial_bytes(events);
        (!bytes.is_empty()).then_some(Act::Serial(root, bytes))
    }

    /// The serial page of `root`'s VM (None: not running).
    pub fn ui(&mut self, ui: &mut egui::Ui, root: &Path, session: Option<&Session>) -> Vec<Act> {
        let mut acts = Vec::new();
        let Some(session) = session else {
            ui.label("The serial console shows the guest's COM1 while the VM runs.");
            return acts;
        };
        let id = egui::Id::unique(("serial", root));
        // The last 64 KiB: laid out every frame while the guest writes, more would make
        // the window slow.
        let serial = &session.serial;
        let mut from = serial.len().saturating_sub(64 * 1024);
        while !serial.is_char_boundary(from) {
            from += 1;
        }
        // Terminal control sequences (a firmware's serial console clears the screen and
        // sets modes) are for terminals; the view shows the text.
        let text = printable(&serial[from..]);
        let frame = egui::Frame::new().fill(egui::Color32::from_gray(16)).inner_margin(6.0);
        let response = frame
            .show(ui, |ui| {
                egui::ScrollArea::vertical()
                    .stick_to_bottom(true)
                    .auto_shrink([false, false])
                    .max_height(ui.available_height() - 40.0)
                    .show(ui, |ui| {
                        let text =
                            egui::RichText::new(text).monospace().color(egui::Color32::LIGHT_GRAY);
                        ui.add(egui::Label::new(text).wrap());
                    });
            })
            .response;
        let response = ui.interact(response.rect, id, Sense::click());
        response.widget_info(|| {
            egui::WidgetInfo::labeled(egui::Role::Terminal, true, "Serial console")
        });
        if response.clicked() {
            response.request_focus();
        }
        self.focus = response.has_focus().then(|| root.to_path_buf());
        ui.horizontal(|ui| {
            ui.weak(if response.has_focus() {
                "Typing goes to the guest's serial port."
            } else {
                "Click the text to type into the serial port, or send a line:"
            });
            let label = ui.label("Line");
            let edit = ui
                .add(egui::TextEdit::singleline(&mut self.line).desired_width(240.0))
                .labelled_by(label.id);
            if (edit.lost_focus() && ui.input(|i| i.key_pressed(Key::Enter)))
                || ui.button("Send").clicked()
            {
                let mut line = std::mem::take(&mut self.line).into_bytes();
                line.push(b'\n');
                acts.push(Act::Serial(root.to_path_buf(), line));
            }
        });
        acts
    }
}

/// Keys typed into the serial view, as the bytes a terminal would send.
fn serial_bytes(events: &mut Vec<egui::Event>) -> Vec<u8> {
    let mut out = Vec::new();
    events.retain(|e| match e {
        egui::Event::Text(t) => {
            out.extend_from_slice(t.as_bytes());
            false
        }
        egui::Event::Key { key, pressed: true, modifiers, .. } => {
            match key {
                Key::Enter => out.push(b'\r'),
                Key::Backspace => out.push(0x7f),
                Key::Tab => out.push(b'\t'),
                Key::Escape => out.push(0x1b),
                Key::ArrowUp => out.extend_from_slice(b"\x1b[A"),
                Key::ArrowDown => out.extend_from_slice(b"\x1b[B"),
                Key::ArrowRight => out.extend_from_slice(b"\x1b[C"),
                Key::ArrowLeft => out.extend_from_slice(b"\x1b[D"),
                k if modifiers.ctrl => {
                    let name = k.name();
                    if name.len() == 1 && name.as_bytes()[0].is_ascii_alphabetic() {
                        out.push(name.as_bytes()[0].to_ascii_uppercase() - b'A' + 1);
                    }
                }
                _ => {}
            }
            false
        }
        egui::Event::Key { .. } => false,
        egui::Event::Copy => {
            out.push(0x03);
            false
        }
        egui::Event::Paste(text) => {
            out.extend_from_slice(text.as_bytes());
            false
        }
        _ => true,
    });
    out
}

/// `text` without ANSI/VT100 escape sequences (CSI `ESC [ ... final`, and two-byte
/// `ESC x`) and other control characters but newlines and tabs; carriage returns go.
fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            // CSI (ESC [): parameters and intermediates up to a final byte in @..~; any
            // other ESC takes one character with it (ESC c: reset).
            '\x1b' => {
                if chars.next() == Some('[') {
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
            }
            '\n' | '\t' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::printable;

    #[test]
    fn terminal_control_sequences_are_not_shown() {
        let seabios = "\x1bc\x1b[?7l\x1b[2J\x1b[0mSeaBIOS (version 1.16.2)\r\nBooting...\n";
        assert_eq!(printable(seabios), "SeaBIOS (version 1.16.2)\nBooting...\n");
        assert_eq!(printable("a\tb\x07c\x1b[1;31mred\x1b[0m"), "a\tbcred");
        assert_eq!(printable("cut \x1b["), "cut ", "an unfinished sequence at the end");
    }
}
