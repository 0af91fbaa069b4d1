//! The menu bar and the toolbar. Labels, shortcuts and availability come from the one
//! table in `act`; these only lay them out and return what was clicked.

use std::path::Path;

use super::act::{Act, COMBOS, Page, SC_FULLSCREEN_HOST, Verb};
use super::console::view::Scale;
use crate::core::state::VmState;

/// What the menus and toolbar show of the app.
pub struct Chrome<'a> {
    /// The selected VM and its state.
    pub selected: Option<(&'a Path, VmState)>,
    /// Its pointer is in relative mode.
    pub relative: bool,
    pub scale: Scale,
    pub autofit: bool,
    pub fullscreen: bool,
    pub page: Page,
}

impl Chrome<'_> {
    fn state(&self) -> Option<&VmState> {
        self.selected.as_ref().map(|(_, s)| s)
    }

    fn root(&self) -> Option<&Path> {
        self.selected.as_ref().map(|(r, _)| *r)
    }

    /// A menu entry for `verb`, with its shortcut; pushes its act when clicked.
    fn item(&self, ui: &mut egui::Ui, verb: Verb, selected: bool, acts: &mut Vec<Act>) {
        let b = verb.binding();
        let mut button = egui::Button::selectable(selected, b.label);
        if let Some(sc) = &b.shortcut {
            let mut text = ui.ctx().format_shortcut(sc);
            if verb == Verb::Fullscreen {
                text = format!("{text} / {}", ui.ctx().format_shortcut(&SC_FULLSCREEN_HOST));
            }
            button = button.shortcut_text(text);
        }
        if ui.add_enabled(verb.available(self.state()), button).clicked()
            && let Some(act) = verb.act(self.root())
        {
            acts.push(act);
        }
    }
}

const PAGES: [(Page, &str); 3] =
    [(Page::Summary, "Summary"), (Page::Console, "Console"), (Page::Serial, "Serial Console")];

pub fn menu_bar(ui: &mut egui::Ui, chrome: &Chrome) -> Vec<Act> {
    let mut acts = Vec::new();
    let running = Verb::PowerOff.available(chrome.state());
    egui::MenuBar::new().ui(ui, |ui| {
        ui.menu_button("File", |ui| {
            chrome.item(ui, Verb::NewVm, false, &mut acts);
            chrome.item(ui, Verb::OpenVm, false, &mut acts);
            ui.separator();
            chrome.item(ui, Verb::Preferences, false, &mut acts);
            ui.separator();
            chrome.item(ui, Verb::Quit, false, &mut acts);
        });
        ui.menu_button("VM", |ui| {
            for verb in [
                Verb::PowerOn,
                Verb::ShutDown,
                Verb::PowerOff,
                Verb::Reset,
                Verb::PauseResume,
                Verb::Suspend,
            ] {
                chrome.item(ui, verb, false, &mut acts);
            }
            let root = chrome.root().map(Path::to_path_buf).unwrap_or_default();
            ui.add_enabled_ui(running, |ui| {
                ui.menu_button("Send Keys", |ui| {
                    for (label, keys) in COMBOS {
                        if ui.button(*label).clicked() {
                            acts.push(Act::SendKeys(root.clone(), keys));
                        }
                    }
                });
            });
            let relative = egui::Button::selectable(chrome.relative, "Relative Mouse (grab)");
            if ui.add_enabled(running, relative).clicked() {
                acts.push(Act::ToggleRelative(root.clone()));
            }
            ui.add_enabled_ui(chrome.selected.is_some(), |ui| {
                ui.menu_button("Removable Devices", |ui| {
                    ui.menu_button("CD", |ui| {
                        if ui.button("Attach ISO…").clicked() {
                            acts.push(Act::AttachIso(root.clone()));
                        }
                        if ui.button("Eject").clicked() {
                            acts.push(Act::EjectCd(root.clone()));
                        }
                    });
                });
            });
            ui.add_enabled_ui(Verb::SnapshotManager.available(chrome.state()), |ui| {
                ui.menu_button("Snapshot", |ui| {
                    for verb in [Verb::TakeSnapshot, Verb::RevertSnapshot, Verb::SnapshotManager] {
                        chrome.item(ui, verb, false, &mut acts);
                    }
                });
            });
            chrome.item(ui, Verb::Migrate, false, &mut acts);
            chrome.item(ui, Verb::BackUp, false, &mut acts);
            ui.separator();
            chrome.item(ui, Verb::Settings, false, &mut acts);
        });
        ui.menu_button("View", |ui| {
            chrome.item(ui, Verb::Fit, chrome.scale == Scale::Fit, &mut acts);
            if ui.add(egui::Button::selectable(chrome.autofit, "Autofit Guest")).clicked() {
                acts.push(Act::ToggleAutofit);
            }
            chrome.item(ui, Verb::Actual, chrome.scale == Scale::Actual, &mut acts);
            chrome.item(ui, Verb::Fullscreen, chrome.fullscreen, &mut acts);
            ui.separator();
            for (page, label) in PAGES {
                if ui.add(egui::Button::selectable(chrome.page == page, label)).clicked() {
                    acts.push(Act::Page(page));
                }
            }
        });
        ui.menu_button("Help", |ui| {
            if ui.button("About Vessel").clicked() {
                acts.push(Act::About);
            }
        });
    });
    acts
}

pub fn toolbar(ui: &mut egui::Ui, chrome: &Chrome) -> Vec<Act> {
    let mut acts = Vec::new();
    ui.horizontal(|ui| {
        if ui.button("New VM").on_hover_text("Create a VM (Ctrl+N)").clicked() {
            acts.push(Act::NewVm);
        }
        ui.separator();
        let (Some(root), Some(state)) = (chrome.root(), chrome.state()) else { return };
        let paused = *state == VmState::Paused;
        let buttons = [
            (Verb::PowerOn, "Power On", ""),
            (Verb::ShutDown, "Shut Down", "Press the ACPI power button"),
            (Verb::PowerOff, "Power Off", ""),
            (Verb::PauseResume, if paused { "Resume" } else { "Pause" }, ""),
            (Verb::Suspend, "Suspend", "Save its whole state; Power On resumes it where it was"),
            (Verb::Reset, "Reset", ""),
            (Verb::TakeSnapshot, "Snapshot", "Take a snapshot (Ctrl+M)"),
            (Verb::SnapshotManager, "Snapshots", "The Snapshot Manager"),
        ];
        for (verb, label, hover) in buttons {
            let mut response =
                ui.add_enabled(verb.available(Some(state)), egui::Button::new(label));
            if !hover.is_empty() {
                response = response.on_hover_text(hover);
            }
            if response.clicked()
                && let Some(act) = verb.act(Some(root))
            {
                acts.push(act);
            }
        }
        ui.separator();
        for (page, label) in PAGES {
            let label = if page == Page::Serial { "Serial" } else { label };
            if ui.add(egui::Button::selectable(chrome.page == page, label)).clicked() {
                acts.push(Act::Page(page));
            }
        }
    });
    acts
}
