//! A VM's Summary page: its state (and why it crashed or failed, with Restart), the big
//! Power On, its hardware, notes and Settings; and the welcome page when nothing is
//! selected.

use std::path::Path;

use egui::Vec2;
use vm_library::config::{Boot, Display as DisplayConfig, Network};

use super::act::Act;
use super::jobs::{ItemKind, VmItem};
use super::wizard::problem_label;
use crate::core::state::VmState;
use crate::core::units::size_text;

/// The Summary page of `item`; `why` is how its last run ended, if that was a problem.
pub fn ui(ui: &mut egui::Ui, item: &VmItem, state: &VmState, why: Option<&str>) -> Vec<Act> {
    let mut acts = Vec::new();
    ui.heading(&item.name);
    let config = match &item.kind {
        ItemKind::Inaccessible(why) => {
            ui.label(VmState::Inaccessible.label());
            problem_label(ui, why);
            ui.weak(format!("Folder: {}", item.root.display()));
            ui.weak(
                "Fix or restore its vessel.toml (a backup is kept as vessel.toml.bak), or \
                 remove it from the library.",
            );
            return acts;
        }
        ItemKind::Ok { config, .. } => config,
    };
    ui.label(state.label());
    if let Some(why) = why {
        problem_label(ui, why);
        if ui.button("Restart").clicked() {
            acts.push(Act::PowerOn(item.root.clone()));
        }
    }
    ui.add_space(8.0);
    if state.can_power_on() {
        let power = egui::Button::new(egui::RichText::new("Power On").size(22.0))
            .min_size(Vec2::new(200.0, 48.0));
        if ui.add(power).clicked() {
            acts.push(Act::PowerOn(item.root.clone()));
        }
        ui.add_space(8.0);
    }
    egui::Grid::new("summary-hardware").num_columns(2).striped(true).show(ui, |ui| {
        for (k, v) in hardware(config, &item.root) {
            ui.label(k);
            ui.label(v);
            ui.end_row();
        }
    });
    ui.add_space(8.0);
    let label = ui.label("Notes");
    let mut notes = config.notes.clone();
    ui.add_enabled(false, egui::TextEdit::multiline(&mut notes).desired_rows(3))
        .labelled_by(label.id);
    if super::act::Verb::Settings.available(Some(state)) && ui.button("Settings…").clicked() {
        acts.push(Act::Settings(item.root.clone()));
    }
    if *state == VmState::Suspended {
        ui.weak(
            "Suspended: Power On resumes it where it was. Its settings can change once it \
             is shut down (or `vessel discard-state` lets its saved state go).",
        );
    }
    acts
}

/// The hardware table: (what, value) rows.
fn hardware(config: &vm_library::config::VmConfig, root: &Path) -> Vec<(&'static str, String)> {
    let boot = match &config.boot.value {
        Boot::Direct { kernel, .. } => format!("Linux kernel {}", kernel.display()),
        Boot::Cdrom => "the CD (its Linux kernel, directly)".into(),
        Boot::Bios(fw) => format!(
            "BIOS: {}{}",
            fw.order.iter().map(|d| d.label()).collect::<Vec<_>>().join(", then "),
            match fw.next {
                Some(d) => format!(" ({} first at the next power-on)", d.label()),
                None => String::new(),
            }
        ),
        Boot::Uefi => "UEFI".into(),
    };
    let disks = if config.disks.is_empty() {
        "none".to_string()
    } else {
        config
            .disks
            .iter()
            .map(|d| format!("{} ({})", d.file.display(), size_text(d.size_bytes)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let display = match config.display.value {
        DisplayConfig::FollowWindow => "follows the window".to_string(),
        DisplayConfig::Fixed { width, height } => format!("{width}x{height}"),
    };
    let cd = config.cdrom.iso.as_ref().map(|p| p.display().to_string());
    let network = if matches!(config.network.value, Network::None) { "none" } else { "NAT" };
    vec![
        ("OS", config.os.clone()),
        ("vCPUs", config.vcpus.to_string()),
        ("Memory", format!("{} MiB", config.memory_mib)),
        ("Disks", disks),
        ("CD", cd.unwrap_or_else(|| "empty".into())),
        ("Boots from", boot),
        ("Network", network.into()),
        ("Display", display),
        ("Folder", root.display().to_string()),
    ]
}

/// The page when no VM is selected: what Vessel is for, New VM, and the demo VM for an
/// empty library.
pub fn welcome(ui: &mut egui::Ui, library: &Path, empty: bool, building_demo: bool) -> Vec<Act> {
    let mut acts = Vec::new();
    ui.vertical_centered(|ui| {
        ui.add_space(ui.available_height() / 4.0);
        ui.heading("Welcome to Vessel");
        ui.label("Create a VM, drop an installer ISO on this window, power it on.");
        ui.add_space(12.0);
        if ui.button("New VM…").clicked() {
            acts.push(Act::NewVm);
        }
        if empty {
            ui.add_space(8.0);
            ui.label("Or try a small Linux guest first:");
            if ui.add_enabled(!building_demo, egui::Button::new("Create the demo VM")).clicked() {
                acts.push(Act::Demo);
            }
            ui.weak("Built from Debian packages on first use (a minute or so).");
        }
        ui.add_space(8.0);
        ui.weak(format!("Library: {}", library.display()));
    });
    acts
}
