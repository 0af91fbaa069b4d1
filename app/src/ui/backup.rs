//! VM ▸ Back Up… in the window: the dialog's answer carried out off the UI thread, as
//! `vessel backup` does it (`core::backup::back_up`), its progress shown in the dialog and
//! the status bar, and a summary when it is done.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::app::VesselApp;
use super::dialogs::backup::{Answer, BackupDialog};
use super::jobs::{Done, ItemKind};
use crate::core::units::size_text;
use crate::ui::jobs::Progress;

impl VesselApp {
    pub(crate) fn open_backup(&mut self, root: &Path) {
        let Some(item) = self.library.item(root) else { return };
        let set = vm_library::backup::default_set(&self.lib_dir, &item.name);
        // What the window knows already (the dialog's words only): run here or elsewhere.
        let elsewhere = matches!(&item.kind, ItemKind::Ok { elsewhere: Some(_), .. });
        let running = elsewhere || self.running.get(root).is_some();
        self.backup = Some(BackupDialog::new(root.to_path_buf(), item.name.clone(), set, running));
    }

    pub(crate) fn backup_answer(&mut self, answer: Answer) {
        match answer {
            Answer::Close => self.backup = None,
            Answer::Start { root, set, keep } => {
                let Some(dialog) = &mut self.backup else { return };
                let copying = Arc::new(Mutex::new((0u64, 0u64)));
                dialog.copying = Some(copying.clone());
                dialog.error = None;
                let (dir, ctx, name) = (self.lib_dir.clone(), self.ctx.clone(), dialog.vm.clone());
                let job_root = root.clone();
                self.jobs.spawn(format!("Backing up {name}"), true, move |progress| {
                    let result = back_up(&dir, &name, &set, keep, &copying, progress, &ctx);
                    Done::BackedUp { root: job_root, result }
                });
            }
        }
    }

    pub(crate) fn backup_done(&mut self, root: PathBuf, result: Result<String, String>) {
        let name = self.library.item(&root).map(|i| i.name.clone()).unwrap_or_default();
        match result {
            Ok(summary) => {
                if self.backup.as_ref().is_some_and(|d| d.root == root) {
                    self.backup = None;
                }
                self.toasts.success(&summary);
            }
            Err(error) => {
                if let Some(dialog) = self.backup.as_mut().filter(|d| d.root == root) {
                    dialog.copying = None;
                    dialog.error = Some(error.clone());
                }
                self.toasts.error(&format!("{name} was not backed up"), Some(error));
            }
        }
        self.rescan_now();
    }
}

/// Backs up the VM `name` into `set`, keeping the newest `keep` points if asked; what to
/// say, or why not.
fn back_up(
    dir: &Path,
    name: &str,
    set: &Path,
    keep: Option<usize>,
    copying: &Arc<Mutex<(u64, u64)>>,
    line: &Progress,
    ctx: &egui::Context,
) -> Result<String, String> {
    let result = (|| -> anyhow::Result<String> {
        let lib = vm_library::library::Library::open(dir)?;
        let done = crate::core::backup::back_up(&lib, name, set, &mut |p| {
            *vmm::sync::lock(copying) = (p.read, p.to_read);
            line.set(format!("{} of {} read", size_text(p.read), size_text(p.to_read)));
            ctx.request_repaint();
        })?;
        if let Some(keep) = keep {
            vm_library::backup::prune(set, keep)?;
        }
        let point = &done.point;
        let mut summary = format!(
            "{name} is backed up: {} read, {} stored new ({} unchanged, not read), in {:.1} s",
            size_text(point.read),
            size_text(point.written),
            size_text(point.unchanged),
            point.seconds
        );
        if let Some(paused) = done.paused {
            summary.push_str(&format!("; it ran on, paused {:.0} ms", paused.as_secs_f64() * 1e3));
        }
        Ok(summary)
    })();
    result.map_err(|e| format!("{e:#}"))
}
