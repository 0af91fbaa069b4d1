//! VM ▸ Settings of a VM that is off: vCPUs, memory, the CD, how it boots, the display,
//! the guest's access to this computer, notes. Saved as a typed change (`SettingsChange`) that the
//! library checks against the host before it writes anything.

use std::path::PathBuf;

use vm_library::config::{Boot, BootDevice, Display, Firmware, Network, VmConfig};

/// The settings the dialog edits, as they will be saved.
#[derive(Clone, Debug, PartialEq)]
pub struct SettingsChange {
    pub vcpus: u32,
    pub memory_mib: u64,
    pub notes: String,
    /// The CD's ISO; empty for none.
    pub iso: String,
    pub follow_window: bool,
    pub width: u32,
    pub height: u32,
    /// Whether the guest may reach this computer's own services; None without a network
    /// card.
    pub host_access: Option<bool>,
    /// How it boots, for a VM that boots from its disks or CD (not a kernel of its own).
    pub boot: Option<BootChoice>,
}

/// How a VM boots from its disks or CD.
#[derive(Clone, Debug, PartialEq)]
pub struct BootChoice {
    /// The Linux kernel on the CD, directly, instead of the BIOS.
    pub quick_linux: bool,
    /// The BIOS's order.
    pub order: Vec<BootDevice>,
    /// Show the BIOS's boot menu (Esc) at power-on.
    pub menu: bool,
    /// Boot the CD first at the next power-on only.
    pub cd_next: bool,
}

/// The orders the dialog offers.
const ORDERS: [(&[BootDevice], &str); 4] = [
    (&[BootDevice::Disk, BootDevice::Cd], "Disk, then CD"),
    (&[BootDevice::Cd, BootDevice::Disk], "CD, then disk"),
    (&[BootDevice::Disk], "Disk only"),
    (&[BootDevice::Cd], "CD only"),
];

impl BootChoice {
    fn of(boot: &Boot) -> Option<Self> {
        let firmware = |fw: &Firmware, quick_linux| BootChoice {
            quick_linux,
            order: fw.order.clone(),
            menu: fw.menu,
            cd_next: fw.next == Some(BootDevice::Cd),
        };
        match boot {
            Boot::Bios(fw) => Some(firmware(fw, false)),
            Boot::Cdrom => Some(firmware(&Firmware::default(), true)),
            Boot::Direct { .. } | Boot::Uefi => None,
        }
    }

    fn boot(&self, before: &Boot) -> Boot {
        if self.quick_linux {
            return Boot::Cdrom;
        }
        let mut fw = match before {
            Boot::Bios(fw) => fw.clone(),
            _ => Firmware::default(),
        };
        fw.order = self.order.clone();
        fw.menu = self.menu;
        fw.next = match (self.cd_next, fw.next) {
            (true, _) => Some(BootDevice::Cd),
            (false, Some(BootDevice::Cd)) => None,
            (false, other) => other,
        };
        Boot::Bios(fw)
    }

    fn ui(&mut self, ui: &mut egui::Ui) {
        ui.vertical(|ui| {
            ui.horizontal(|ui| {
                ui.radio_value(&mut self.quick_linux, false, "BIOS");
                ui.radio_value(&mut self.quick_linux, true, "Quick Linux boot from the CD");
            });
            if self.quick_linux {
                ui.weak(
                    "The Linux kernel on the CD starts directly. What is installed on the \
                     disk does not boot this way.",
                );
                return;
            }
            let current = ORDERS
                .iter()
                .find(|(order, _)| *order == self.order.as_slice())
                .map_or("Custom", |(_, name)| name);
            egui::ComboBox::from_label("Boot order").selected_text(current).show_ui(ui, |ui| {
                for (order, name) in ORDERS {
                    if ui.selectable_label(self.order == order, name).clicked() {
                        self.order = order.to_vec();
                    }
                }
            });
            ui.checkbox(&mut self.cd_next, "Boot from the CD at the next power-on only");
            ui.checkbox(&mut self.menu, "Show the boot menu at power-on (press Esc)");
        });
    }
}

impl SettingsChange {
    /// The settings `config` has now.
    pub fn of(config: &VmConfig) -> Self {
        let (follow_window, width, height) = match config.display.value {
            Display::FollowWindow => (true, 1024, 768),
            Display::Fixed { width, height } => (false, width, height),
        };
        SettingsChange {
            vcpus: config.vcpus,
            memory_mib: config.memory_mib,
            notes: config.notes.clone(),
            iso: config.cdrom.iso.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
            follow_window,
            width,
            height,
            host_access: match &config.network.value {
                Network::Nat { host_access, .. } => Some(*host_access),
                Network::None => None,
            },
            boot: BootChoice::of(&config.boot.value),
        }
    }

    /// Writes the settings into `config` (the library then checks the whole).
    pub fn apply(&self, config: &mut VmConfig) {
        config.vcpus = self.vcpus;
        config.memory_mib = self.memory_mib;
        config.notes = self.notes.clone();
        let iso = self.iso.trim();
        config.cdrom.iso = (!iso.is_empty()).then(|| PathBuf::from(iso));
        config.display.value = if self.follow_window {
            Display::FollowWindow
        } else {
            Display::Fixed { width: self.width, height: self.height }
        };
        if let (Network::Nat { host_access, .. }, Some(wanted)) =
            (&mut config.network.value, self.host_access)
        {
            *host_access = wanted;
        }
        if let Some(boot) = &self.boot {
            config.boot.value = boot.boot(&config.boot.value);
        }
    }
}

/// What the settings dialog asks.
#[derive(Clone, Debug, PartialEq)]
pub enum Answer {
    /// Save `change` to the VM in `root`, called `name`.
    Save {
        root: PathBuf,
        name: String,
        change: SettingsChange,
    },
    Cancel,
}

pub struct SettingsDialog {
    pub root: PathBuf,
    pub name: String,
    pub draft: SettingsChange,
}

impl SettingsDialog {
    pub fn ui(&mut self, ctx: &egui::Context) -> Option<Answer> {
        let mut action = None;
        let s = &mut self.draft;
        egui::Window::new(format!("{} settings", self.name))
            .id(egui::Id::unique("vm-settings"))
            .collapsible(false)
            .resizable(false)
            .show(ctx, |ui| {
                egui::Grid::new("settings").num_columns(2).show(ui, |ui| {
                    let l = ui.label("vCPUs");
                    ui.add(egui::DragValue::new(&mut s.vcpus).range(1..=256)).labelled_by(l.id);
                    ui.end_row();
                    let l = ui.label("Memory (MiB)");
                    let memory =
                        egui::DragValue::new(&mut s.memory_mib).speed(64).range(64..=1 << 24);
                    ui.add(memory).labelled_by(l.id);
                    ui.end_row();
                    let l = ui.label("CD (ISO)");
                    let iso = egui::TextEdit::singleline(&mut s.iso)
                        .hint_text("empty")
                        .desired_width(260.0);
                    ui.add(iso).labelled_by(l.id);
                    ui.end_row();
                    if let Some(boot) = &mut s.boot {
                        ui.label("Boot");
                        boot.ui(ui);
                        ui.end_row();
                    }
                    ui.label("Display");
                    ui.vertical(|ui| {
                        ui.checkbox(&mut s.follow_window, "Follow the window");
                        if !s.follow_window {
                            ui.horizontal(|ui| {
                                let l = ui.label("Width");
                                ui.add(egui::DragValue::new(&mut s.width).range(320..=7680))
                                    .labelled_by(l.id);
                                let l = ui.label("Height");
                                ui.add(egui::DragValue::new(&mut s.height).range(200..=4320))
                                    .labelled_by(l.id);
                            });
                        }
                    });
                    ui.end_row();
                    if let Some(host_access) = &mut s.host_access {
                        ui.label("Network");
                        ui.vertical(|ui| {
                            ui.checkbox(host_access, "Guest can reach this computer");
                            ui.weak(
                                "Services listening only on this computer (127.0.0.1) answer \
                                 the guest at its gateway address. Off: the guest reaches the \
                                 internet, not this computer.",
                            );
                        });
                        ui.end_row();
                    }
                    let l = ui.label("Notes");
                    ui.add(egui::TextEdit::multiline(&mut s.notes).desired_rows(3))
                        .labelled_by(l.id);
                    ui.end_row();
                });
                ui.horizontal(|ui| {
                    if ui.button("Save").clicked() {
                        let (root, name) = (self.root.clone(), self.name.clone());
                        action = Some(Answer::Save { root, name, change: s.clone() });
                    }
                    if ui.button("Cancel").clicked() {
                        action = Some(Answer::Cancel);
                    }
                });
            });
        action
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_round_trips_through_a_config() {
        let mut config = VmConfig::from_toml(
            "schema_version = 1\nuuid = \"6c3f0a4e-8e2a-4a59-9a8e-0b1c2d3e4f50\"\nname = \"t\"\n\
             os = \"linux\"\nvcpus = 1\nmemory_mib = 512\ncreated = \"\"\nmodified = \"\"\n\
             [boot]\nkind = \"bios\"\n[network]\nmode = \"nat\"\nmac = \"52:54:00:12:34:56\"\n\
             [display]\nsize = \"follow-window\"\n",
        )
        .unwrap();
        let mut change = SettingsChange::of(&config);
        assert_eq!(change.host_access, Some(false));
        change.vcpus = 2;
        change.iso = " /isos/a.iso ".into();
        change.follow_window = false;
        change.host_access = Some(true);
        change.apply(&mut config);
        assert_eq!(config.vcpus, 2);
        assert_eq!(config.cdrom.iso.as_deref(), Some(std::path::Path::new("/isos/a.iso")));
        assert_eq!(config.display.value, Display::Fixed { width: 1024, height: 768 });
        assert!(matches!(config.network.value, Network::Nat { host_access: true, .. }));
        assert_eq!(SettingsChange::of(&config), change_trimmed(change));
    }

    #[test]
    fn boot_settings_round_trip_through_a_config() {
        let mut config = vm_library::config::VmConfig::from_toml(
            "schema_version = 1\nuuid = \"6c3f0a4e-8e2a-4a59-9a8e-0b1c2d3e4f50\"\nname = \"t\"\n\
             os = \"linux\"\nvcpus = 1\nmemory_mib = 512\ncreated = \"\"\nmodified = \"\"\n\
             [boot]\nkind = \"bios\"\n[network]\nmode = \"none\"\n\
             [display]\nsize = \"follow-window\"\n",
        )
        .unwrap();
        let mut change = SettingsChange::of(&config);
        let boot = change.boot.as_mut().unwrap();
        assert_eq!(boot.order, [BootDevice::Disk, BootDevice::Cd]);
        assert!(!boot.quick_linux && !boot.menu && !boot.cd_next);
        boot.order = vec![BootDevice::Cd];
        boot.menu = true;
        boot.cd_next = true;
        change.apply(&mut config);
        let Boot::Bios(fw) = &config.boot.value else { panic!() };
        assert_eq!(
            *fw,
            Firmware { order: vec![BootDevice::Cd], menu: true, next: Some(BootDevice::Cd) }
        );
        assert_eq!(SettingsChange::of(&config), change);
        // Unticking "next time" clears it; Quick Linux boot and back keeps nothing stale.
        change.boot.as_mut().unwrap().cd_next = false;
        change.apply(&mut config);
        assert!(matches!(&config.boot.value, Boot::Bios(fw) if fw.next.is_none()));
        change.boot.as_mut().unwrap().quick_linux = true;
        change.apply(&mut config);
        assert_eq!(config.boot.value, Boot::Cdrom);
        let change = SettingsChange::of(&config);
        assert!(change.boot.as_ref().unwrap().quick_linux);
        // A VM that boots a kernel of its own has no boot choice here.
        config.boot.value =
            Boot::Direct { kernel: "boot/kernel".into(), initrd: None, cmdline: String::new() };
        assert_eq!(SettingsChange::of(&config).boot, None);
    }

    fn change_trimmed(mut c: SettingsChange) -> SettingsChange {
        c.iso = c.iso.trim().to_string();
        c
    }
}
