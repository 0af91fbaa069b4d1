//! VM ▸ Migrate…: where the running VM goes (a `vessel receive` address), the receiver's
//! token and the pause it may have; then, while it moves, how far it is (pass, bytes sent,
//! how fast the guest changes its memory, the pause it would have now) and Cancel. The
//! work is done off the UI thread (`ui::migrate`), which writes the progress here.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::core::units::size_text;

/// What the dialog asked for.
#[derive(Clone, Debug, PartialEq)]
pub enum Answer {
    Start {
        root: PathBuf,
        to: String,
        how: How,
    },
    /// Cancel the migration under way (the VM runs on here).
    Cancel(PathBuf),
    Close,
}

/// The dialog's fields, as `core::migration::How` takes them.
#[derive(Clone, Debug, PartialEq)]
pub struct How {
    pub token: String,
    pub downtime_ms: u64,
    pub insecure: bool,
    pub copy_disks: bool,
}

/// How far a migration is, as its VM process tells it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Progress {
    pub phase: String,
    pub pass: u32,
    pub sent: u64,
    pub remaining: u64,
    pub dirty_rate: u64,
    pub downtime_estimate_ms: u64,
}

pub struct MigrateDialog {
    pub root: PathBuf,
    pub vm: String,
    pub to: String,
    pub token: String,
    pub downtime_ms: String,
    pub insecure: bool,
    pub copy_disks: bool,
    /// Under way: what the work reports (None before its first report).
    pub moving: Option<Arc<Mutex<Option<Progress>>>>,
    /// The last attempt's error, shown until the next.
    pub error: Option<String>,
}

impl MigrateDialog {
    pub fn new(root: PathBuf, vm: String) -> Self {
        MigrateDialog {
            root,
            vm,
            to: String::new(),
            token: String::new(),
            downtime_ms: "300".into(),
            insecure: false,
            copy_disks: false,
            moving: None,
            error: None,
        }
    }

    pub fn ui(&mut self, ctx: &egui::Context) -> Option<Answer> {
        let mut answer = None;
        egui::Modal::new(egui::Id::unique("migrate")).show(ctx, |ui| {
            ui.set_max_width(460.0);
            ui.heading(format!("Migrate {}", self.vm));
            match &self.moving {
                None => answer = self.form(ui),
                Some(progress) => {
                    let progress = vmm::sync::lock(progress).clone();
                    answer = self.under_way(ui, progress);
                }
            }
        });
        answer
    }

    fn form(&mut self, ui: &mut egui::Ui) -> Option<Answer> {
        let mut answer = None;
        ui.label(
            "The VM moves to another Vessel while it runs: its memory goes over, then it \
             pauses briefly and runs on there. Its folder and disks are on storage both hosts \
             share, or go along. On the other host: vessel receive --listen ADDRESS.",
        );
        egui::Grid::new("migrate-grid").num_columns(2).show(ui, |ui| {
            let l = ui.label("To");
            let hint = "unix:PATH, tcp:HOST:PORT or ssh://HOST";
            ui.add(egui::TextEdit::singleline(&mut self.to).hint_text(hint).desired_width(300.0))
                .labelled_by(l.id);
            ui.end_row();
            let l = ui.label("Token");
            let hint = "the one vessel receive printed (TCP)";
            ui.add(
                egui::TextEdit::singleline(&mut self.token).hint_text(hint).desired_width(300.0),
            )
            .labelled_by(l.id);
            ui.end_row();
            let l = ui.label("Longest pause (ms)");
            ui.add(egui::TextEdit::singleline(&mut self.downtime_ms).desired_width(80.0))
                .labelled_by(l.id);
            ui.end_row();
        });
        ui.checkbox(
            &mut self.copy_disks,
            "Copy its folder and disks (the other host does not share its storage)",
        );
        ui.checkbox(
            &mut self.insecure,
            "Allow TCP to another host (its memory crosses the network unencrypted)",
        );
        let downtime = self.downtime_ms.trim().parse::<u64>().ok();
        if downtime.is_none() {
            ui.colored_label(ui.visuals().warn_fg_color, "The pause is a number of milliseconds.");
        }
        if let Some(error) = &self.error {
            ui.colored_label(ui.visuals().error_fg_color, error);
        }
        ui.horizontal(|ui| {
            let ready = !self.to.trim().is_empty() && downtime.is_some();
            if ui.add_enabled(ready, egui::Button::new("Migrate")).clicked() {
                answer = Some(Answer::Start {
                    root: self.root.clone(),
                    to: self.to.trim().to_string(),
                    how: How {
                        token: self.token.trim().to_string(),
                        downtime_ms: downtime.unwrap_or(300),
                        insecure: self.insecure,
                        copy_disks: self.copy_disks,
                    },
                });
            }
            if ui.button("Cancel").clicked() {
                answer = Some(Answer::Close);
            }
        });
        answer
    }

    fn under_way(&self, ui: &mut egui::Ui, progress: Option<Progress>) -> Option<Answer> {
        let mut answer = None;
        match progress {
            None => {
                ui.horizontal(|ui| {
                    ui.spinner();
                    ui.label(format!("Reaching {}…", self.to));
                });
            }
            Some(p) => {
                let phase = match p.phase.as_str() {
                    "copying" if self.copy_disks => {
                        format!("Copying its memory and disks while it runs: pass {}", p.pass)
                    }
                    "copying" => format!("Copying its memory while it runs: pass {}", p.pass),
                    "stopping" => "Paused: the last of its memory and its state go over".into(),
                    _ => "The other Vessel takes over".into(),
                };
                ui.horizontal(|ui| {
                    ui.spinner();
                    ui.label(phase);
                });
                egui::Grid::new("migrate-progress").num_columns(2).show(ui, |ui| {
                    ui.label("To");
                    ui.label(&self.to);
                    ui.end_row();
                    ui.label("Sent");
                    ui.label(size_text(p.sent));
                    ui.end_row();
                    ui.label("Changed since");
                    ui.label(size_text(p.remaining));
                    ui.end_row();
                    ui.label("Changing");
                    ui.label(format!("{}/s", size_text(p.dirty_rate)));
                    ui.end_row();
                    ui.label("Pause if it stopped now");
                    ui.label(format!("{} ms", p.downtime_estimate_ms));
                    ui.end_row();
                });
            }
        }
        if ui.button("Cancel Migration").clicked() {
            answer = Some(Answer::Cancel(self.root.clone()));
        }
        answer
    }
}
