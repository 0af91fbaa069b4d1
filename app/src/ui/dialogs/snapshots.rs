//! VM ▸ Snapshot: Take Snapshot (a name and a description) and the Snapshot Manager (the
//! tree with each snapshot's screen, name and date; Go To, Delete, Rename, Clone, Take).
//! The tree and its pictures are read off the UI thread (`Loaded`); what the user asks
//! comes back as an `Answer` the app carries out (`ui::snapshots`), with what waits for a
//! running VM to stop first (`AfterStop`) and whether it runs again after (`Resume`).

use std::collections::HashMap;
use std::path::PathBuf;

use vm_library::snapshots::{Snapshot, Tree};

/// What a snapshot dialog asked for.
#[derive(Clone, Debug, PartialEq)]
pub enum Answer {
    Take {
        root: PathBuf,
        name: String,
        description: String,
    },
    /// Open Take Snapshot from the manager.
    OpenTake(PathBuf),
    GoTo {
        root: PathBuf,
        id: String,
        name: String,
        memory: bool,
    },
    Delete {
        root: PathBuf,
        id: String,
        name: String,
    },
    Rename {
        root: PathBuf,
        id: String,
        new_name: String,
    },
    Clone {
        root: PathBuf,
        id: String,
        new_name: String,
        linked: bool,
    },
    /// Close the dialog that answered.
    CloseTake,
    CloseManager,
}

/// Whether a VM is powered on after a snapshot job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resume {
    No,
    /// Whether or not the job did its work (a VM suspended for a snapshot goes on).
    Always,
    /// Only if the job did its work (a VM gone back to a running state).
    IfDone,
}

/// What waits for a VM's session to end before it can be done.
pub enum AfterStop {
    /// Take a snapshot of the suspended VM (its screen as it was), then resume it.
    Take { name: String, description: String, screen: Option<image::RgbaImage> },
    /// Go to a snapshot of the powered-off VM; resume if it holds a running state.
    GoTo { id: String, name: String, resume: bool },
    /// Power it on (a session that was still there when it was to be resumed: one a
    /// library scan attached as its process was letting go of it).
    PowerOn,
}

/// VM ▸ Snapshot ▸ Take Snapshot…
pub struct TakeDialog {
    pub root: PathBuf,
    pub vm: String,
    pub name: String,
    pub description: String,
    /// The VM runs: its memory is saved too, while it pauses.
    pub running: bool,
}

impl TakeDialog {
    /// A dialog for the VM `vm` in `root`, with a free name proposed among `taken`.
    pub fn new(root: PathBuf, vm: String, taken: &[String], running: bool) -> Self {
        let name = (1..=taken.len() + 1)
            .map(|n| format!("Snapshot {n}"))
            .find(|n| !taken.contains(n))
            .unwrap_or_else(|| "Snapshot".into());
        TakeDialog { root, vm, name, description: String::new(), running }
    }

    pub fn ui(&mut self, ctx: &egui::Context) -> Option<Answer> {
        let mut answer = None;
        egui::Modal::new(egui::Id::unique("take-snapshot")).show(ctx, |ui| {
            ui.heading(format!("Take a snapshot of {}", self.vm));
            egui::Grid::new("take-snapshot-grid").num_columns(2).show(ui, |ui| {
                let l = ui.label("Name");
                ui.add(egui::TextEdit::singleline(&mut self.name).desired_width(280.0))
                    .labelled_by(l.id);
                ui.end_row();
                let l = ui.label("Description");
                let text = egui::TextEdit::multiline(&mut self.description).desired_rows(3);
                ui.add(text.desired_width(280.0)).labelled_by(l.id);
                ui.end_row();
            });
            ui.weak(if self.running {
                "Its disks, settings and running state are kept. It pauses while its memory \
                 is saved, then runs on."
            } else {
                "Its disks and settings are kept (and its saved state, if it is suspended)."
            });
            ui.horizontal(|ui| {
                let ready = !self.name.trim().is_empty();
                if ui.add_enabled(ready, egui::Button::new("Take Snapshot")).clicked() {
                    answer = Some(Answer::Take {
                        root: self.root.clone(),
                        name: self.name.trim().to_string(),
                        description: self.description.trim().to_string(),
                    });
                }
                if ui.button("Cancel").clicked() {
                    answer = Some(Answer::CloseTake);
                }
            });
        });
        answer
    }
}

/// A tree and its snapshots' screens, read off the UI thread.
pub struct Loaded {
    pub tree: Tree,
    pub screens: Vec<(String, egui::ColorImage)>,
}

/// Reads the snapshots of the VM `name` in the library `dir` and their screens.
pub fn load(dir: &std::path::Path, name: &str) -> Result<Loaded, String> {
    let lib = vm_library::library::Library::open(dir).map_err(|e| e.to_string())?;
    let tree = lib.snapshots(name).map_err(|e| e.to_string())?;
    let mut screens = Vec::new();
    for snap in &tree.snapshots {
        let Some(path) = &snap.screen else { continue };
        // A picture the bundle holds: bounded, and only a small PNG is taken.
        let bytes = vm_library::files::open_regular(path, false).and_then(|f| {
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut std::io::Read::take(f, 1 << 20), &mut bytes)?;
            Ok(bytes)
        });
        if let Some(image) = bytes.ok().and_then(|b| crate::core::screenshot::decode(&b)) {
            let size = [image.width() as usize, image.height() as usize];
            screens.push((snap.id.clone(), egui::ColorImage::from_rgba_unmultiplied(size, &image)));
        }
    }
    Ok(Loaded { tree, screens })
}

/// What the manager is doing with the selected snapshot.
#[derive(Clone, Debug, PartialEq)]
enum Mode {
    Browse,
    ConfirmGoTo,
    ConfirmDelete,
    Renaming(String),
    /// The copy's name, and whether it is linked.
    Cloning(String, bool),
}

/// VM ▸ Snapshot ▸ Snapshot Manager…
pub struct Manager {
    pub root: PathBuf,
    pub vm: String,
    /// None while it is read.
    tree: Option<Result<Tree, String>>,
    screens: HashMap<String, egui::TextureHandle>,
    selected: Option<String>,
    mode: Mode,
    /// An operation on this VM is under way.
    pub busy: bool,
    /// Once read, ask whether to go back to the current snapshot (VM ▸ Revert).
    pub confirm_current: bool,
}

impl Manager {
    pub fn new(root: PathBuf, vm: String) -> Self {
        Manager {
            root,
            vm,
            tree: None,
            screens: HashMap::new(),
            selected: None,
            mode: Mode::Browse,
            busy: false,
            confirm_current: false,
        }
    }

    /// The tree was read (again).
    pub fn loaded(&mut self, ctx: &egui::Context, result: Result<Loaded, String>) {
        self.busy = false;
        self.mode = Mode::Browse;
        match result {
            Ok(loaded) => {
                self.screens.clear();
                for (id, image) in loaded.screens {
                    let texture =
                        ctx.load_texture(format!("snapshot-{id}"), image, Default::default());
                    self.screens.insert(id, texture);
                }
                if self.selected.as_ref().is_none_or(|s| loaded.tree.find(s).is_none()) {
                    self.selected = loaded.tree.current.clone();
                }
                if std::mem::take(&mut self.confirm_current) && loaded.tree.current.is_some() {
                    self.selected = loaded.tree.current.clone();
                    self.mode = Mode::ConfirmGoTo;
                }
                self.tree = Some(Ok(loaded.tree));
            }
            Err(e) => self.tree = Some(Err(e)),
        }
    }

    /// Names the snapshots have (for proposing a new one).
    pub fn names(&self) -> Vec<String> {
        match &self.tree {
            Some(Ok(tree)) => tree.snapshots.iter().map(|s| s.name.clone()).collect(),
            _ => Vec::new(),
        }
    }

    pub fn ui(&mut self, ctx: &egui::Context) -> Option<Answer> {
        let mut answer = None;
        let mut open = true;
        egui::Window::new(format!("Snapshots of {}", self.vm))
            .id(egui::Id::unique("snapshot-manager"))
            .open(&mut open)
            .collapsible(false)
            // Over the VM's page, clear of the toasts in the top right corner.
            .default_pos(ctx.content_rect().left_top() + egui::vec2(250.0, 120.0))
            .default_size([560.0, 380.0])
            .show(ctx, |ui| answer = self.contents(ui));
        if !open {
            answer = Some(Answer::CloseManager);
        }
        answer
    }

    fn contents(&mut self, ui: &mut egui::Ui) -> Option<Answer> {
        let tree = match &self.tree {
            None => {
                ui.horizontal(|ui| {
                    ui.spinner();
                    ui.label("Reading the snapshots…");
                });
                return None;
            }
            Some(Err(e)) => {
                ui.colored_label(ui.visuals().error_fg_color, e);
                return None;
            }
            Some(Ok(tree)) => tree.clone(),
        };
        let mut answer = None;
        ui.horizontal_top(|ui| {
            ui.vertical(|ui| {
                ui.set_width(260.0);
                egui::ScrollArea::vertical().id_salt("tree").max_height(280.0).show(ui, |ui| {
                    if tree.snapshots.is_empty() {
                        ui.weak("No snapshots yet.");
                    }
                    self.level(ui, &tree, None, 0);
                    if tree.current.is_none() {
                        ui.label("» You are here");
                    }
                });
            });
            // (A separator here would stretch the window to the screen's height.)
            ui.add_space(16.0);
            ui.vertical(|ui| {
                ui.set_width(260.0);
                egui::ScrollArea::vertical()
                    .id_salt("details")
                    .max_height(280.0)
                    .show(ui, |ui| answer = self.details(ui, &tree));
            });
        });
        ui.separator();
        ui.horizontal(|ui| {
            if self.busy {
                ui.spinner();
            }
            if ui.add_enabled(!self.busy, egui::Button::new("Take Snapshot…")).clicked() {
                answer = Some(Answer::OpenTake(self.root.clone()));
            }
            if ui.button("Close").clicked() {
                answer = Some(Answer::CloseManager);
            }
        });
        answer
    }

    /// The snapshots under `parent`, indented (bounded: each drawn once, depth at most
    /// the number of snapshots).
    fn level(&mut self, ui: &mut egui::Ui, tree: &Tree, parent: Option<&str>, depth: usize) {
        for snap in tree.children(parent) {
            ui.horizontal(|ui| {
                ui.add_space(depth as f32 * 14.0);
                if let Some(texture) = self.screens.get(&snap.id) {
                    let size = texture.size_vec2() * (24.0 / texture.size_vec2().y.max(1.0));
                    ui.image((texture.id(), size));
                }
                let chosen = self.selected.as_deref() == Some(snap.id.as_str());
                if ui.selectable_label(chosen, &snap.name).clicked() {
                    self.selected = Some(snap.id.clone());
                    self.mode = Mode::Browse;
                }
            });
            if depth < tree.snapshots.len() {
                self.level(ui, tree, Some(&snap.id), depth + 1);
            }
            if tree.current.as_deref() == Some(snap.id.as_str()) {
                ui.horizontal(|ui| {
                    ui.add_space((depth + 1) as f32 * 14.0);
                    ui.label("» You are here");
                });
            }
        }
    }

    fn details(&mut self, ui: &mut egui::Ui, tree: &Tree) -> Option<Answer> {
        let snap: Snapshot = self.selected.as_ref().and_then(|id| tree.find(id)).cloned()?;
        match self.screens.get(&snap.id) {
            Some(texture) => {
                let size = texture.size_vec2() * (240.0 / texture.size_vec2().x.max(1.0));
                let size = size.min(egui::vec2(240.0, 150.0));
                ui.image((texture.id(), size));
            }
            None => {
                ui.weak("(no screen kept)");
            }
        }
        ui.strong(&snap.name);
        ui.label(format!("Taken {} UTC", snap.created.replace('T', " ").trim_end_matches('Z')));
        ui.label(if snap.memory { "With its running state" } else { "Powered off" });
        if !snap.description.is_empty() {
            ui.label(&snap.description);
        }
        let root = self.root.clone();
        let (id, name) = (snap.id.clone(), snap.name.clone());
        let mut answer = None;
        match &mut self.mode {
            Mode::Browse => {
                ui.add_enabled_ui(!self.busy, |ui| {
                    ui.horizontal_wrapped(|ui| {
                        if ui.button("Go To").clicked() {
                            self.mode = Mode::ConfirmGoTo;
                        }
                        if ui.button("Delete").clicked() {
                            self.mode = Mode::ConfirmDelete;
                        }
                        if ui.button("Rename").clicked() {
                            self.mode = Mode::Renaming(name.clone());
                        }
                        if ui.button("Clone…").clicked() {
                            self.mode = Mode::Cloning(format!("{} ({name})", self.vm), false);
                        }
                    });
                });
            }
            Mode::ConfirmGoTo => {
                ui.label(format!(
                    "Go back to {name:?}? What the VM is doing now, and its disks' changes \
                     since, are lost."
                ));
                ui.horizontal(|ui| {
                    if ui.button("Go To").clicked() {
                        answer = Some(Answer::GoTo { root, id, name, memory: snap.memory });
                    }
                    if ui.button("Cancel").clicked() {
                        self.mode = Mode::Browse;
                    }
                });
            }
            Mode::ConfirmDelete => {
                ui.label(format!("Delete {name:?}? The VM's present state is not touched."));
                ui.horizontal(|ui| {
                    if ui.button("Delete").clicked() {
                        answer = Some(Answer::Delete { root, id, name });
                    }
                    if ui.button("Cancel").clicked() {
                        self.mode = Mode::Browse;
                    }
                });
            }
            Mode::Renaming(new_name) => {
                let l = ui.label("New name");
                ui.text_edit_singleline(new_name).labelled_by(l.id);
                let new_name = new_name.trim().to_string();
                ui.horizontal(|ui| {
                    let ready = !new_name.is_empty();
                    if ui.add_enabled(ready, egui::Button::new("Rename")).clicked() {
                        answer = Some(Answer::Rename { root, id, new_name });
                    }
                    if ui.button("Cancel").clicked() {
                        self.mode = Mode::Browse;
                    }
                });
            }
            Mode::Cloning(new_name, linked) => {
                let l = ui.label("Name of the copy");
                ui.text_edit_singleline(new_name).labelled_by(l.id);
                ui.checkbox(linked, "Linked clone");
                ui.weak(if *linked {
                    "Shares this snapshot's disks (quick, small); the snapshot stays while the \
                     clone does."
                } else {
                    "A full copy of the VM as it was at this snapshot."
                });
                let (new_name, linked) = (new_name.trim().to_string(), *linked);
                ui.horizontal(|ui| {
                    let ready = !new_name.is_empty();
                    if ui.add_enabled(ready, egui::Button::new("Clone")).clicked() {
                        answer = Some(Answer::Clone { root, id, new_name, linked });
                    }
                    if ui.button("Cancel").clicked() {
                        self.mode = Mode::Browse;
                    }
                });
            }
        }
        if answer.is_some() {
            self.busy = true;
            self.mode = Mode::Browse;
        }
        answer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_snapshot_gets_a_free_name() {
        let taken = ["Snapshot 1".to_string(), "Snapshot 3".into()];
        let dialog = TakeDialog::new("/vm".into(), "vm".into(), &taken, false);
        assert_eq!(dialog.name, "Snapshot 2");
        assert_eq!(TakeDialog::new("/vm".into(), "vm".into(), &[], true).name, "Snapshot 1");
    }
}
