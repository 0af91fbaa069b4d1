//! VM ▸ Back Up…: where the backup goes (the VM's set in the library, or another folder)
//! and how many points the set keeps; then, while it is made, how far the copy is. The
//! work is done off the UI thread (`ui::backup`), which writes the progress here; a
//! running VM runs on meanwhile.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::core::units::size_text;

/// What the dialog asked for.
#[derive(Clone, Debug, PartialEq)]
pub enum Answer {
    Start {
        root: PathBuf,
        set: PathBuf,
        keep: Option<usize>,
    },
    /// Closes the dialog; a backup under way goes on (the status bar shows it).
    Close,
}

pub struct BackupDialog {
    pub root: PathBuf,
    pub vm: String,
    pub set: String,
    pub prune: bool,
    pub keep: String,
    pub running: bool,
    /// Under way: bytes read so far, and to read.
    pub copying: Option<Arc<Mutex<(u64, u64)>>>,
    /// The last attempt's error, shown until the next.
    pub error: Option<String>,
}

impl BackupDialog {
    pub fn new(root: PathBuf, vm: String, set: PathBuf, running: bool) -> Self {
        BackupDialog {
            root,
            vm,
            set: set.display().to_string(),
            prune: false,
            keep: "7".into(),
            running,
            copying: None,
            error: None,
        }
    }

    pub fn ui(&mut self, ctx: &egui::Context) -> Option<Answer> {
        let mut answer = None;
        egui::Modal::new(egui::Id::unique("backup")).show(ctx, |ui| {
            ui.set_max_width(460.0);
            ui.heading(format!("Back Up {}", self.vm));
            answer = match &self.copying {
                None => self.form(ui),
                Some(copying) => Self::under_way(ui, *vmm::sync::lock(copying)),
            };
        });
        answer
    }

    fn form(&mut self, ui: &mut egui::Ui) -> Option<Answer> {
        let mut answer = None;
        let how = if self.running {
            "It runs on: it pauses a few milliseconds while its disks are frozen, and the \
             copy is read while it runs."
        } else {
            "It stays off while the copy is made."
        };
        ui.label(format!(
            "A point of its disks goes into a backup set. The set's points share what did not \
             change, and after the first only what the guest wrote since is read. {how}"
        ));
        egui::Grid::new("backup-grid").num_columns(2).show(ui, |ui| {
            let l = ui.label("Backup set");
            ui.add(egui::TextEdit::singleline(&mut self.set).desired_width(320.0))
                .labelled_by(l.id);
            ui.end_row();
        });
        ui.horizontal(|ui| {
            ui.checkbox(&mut self.prune, "Keep only the newest");
            ui.add_enabled(
                self.prune,
                egui::TextEdit::singleline(&mut self.keep).desired_width(40.0),
            );
            ui.label("points");
        });
        let keep = self.keep.trim().parse::<usize>().ok().filter(|&n| n > 0);
        if self.prune && keep.is_none() {
            ui.colored_label(ui.visuals().warn_fg_color, "Keep at least one point.");
        }
        if let Some(error) = &self.error {
            ui.colored_label(ui.visuals().error_fg_color, error);
        }
        ui.horizontal(|ui| {
            let ready = !self.set.trim().is_empty() && (!self.prune || keep.is_some());
            if ui.add_enabled(ready, egui::Button::new("Back Up")).clicked() {
                answer = Some(Answer::Start {
                    root: self.root.clone(),
                    set: PathBuf::from(self.set.trim()),
                    keep: if self.prune { keep } else { None },
                });
            }
            if ui.button("Cancel").clicked() {
                answer = Some(Answer::Close);
            }
        });
        answer
    }

    fn under_way(ui: &mut egui::Ui, (read, to_read): (u64, u64)) -> Option<Answer> {
        ui.horizontal(|ui| {
            ui.spinner();
            ui.label(if to_read == 0 {
                "Freezing its disks…".to_string()
            } else {
                format!("Reading its disks: {} of {}", size_text(read), size_text(to_read))
            });
        });
        if to_read > 0 {
            ui.add(egui::ProgressBar::new(read as f32 / to_read as f32).show_percentage());
        }
        ui.button("Hide").clicked().then_some(Answer::Close)
    }
}
