//! VM ▸ Migrate… in the window: the dialog's answers carried out off the UI thread, as
//! `vessel migrate` does it (`core::migration::migrate`), with the VM process's progress
//! shown in the dialog; Cancel asks the VM process to stop the migration (the VM runs on).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::app::VesselApp;
use super::dialogs::migrate::{Answer, MigrateDialog, Progress};
use super::jobs::Done;
use crate::vmhost::protocol::Reply;

impl VesselApp {
    pub(crate) fn open_migrate(&mut self, root: &Path) {
        let Some(item) = self.library.item(root) else { return };
        self.migrate = Some(MigrateDialog::new(root.to_path_buf(), item.name.clone()));
    }

    pub(crate) fn migrate_answer(&mut self, answer: Answer) {
        match answer {
            Answer::Close => self.migrate = None,
            Answer::Cancel(root) => {
                self.jobs.spawn("Cancelling the migration", false, move |_| {
                    let result = vm_library::bundle::Bundle::open(&root)
                        .map_err(anyhow::Error::from)
                        .and_then(|bundle| crate::core::migration::cancel(&bundle));
                    Done::MigrationCancelled(result.map_err(|e| format!("{e:#}")))
                });
            }
            Answer::Start { root, to, how } => {
                let Some(dialog) = &mut self.migrate else { return };
                let progress = Arc::new(Mutex::new(None::<Progress>));
                dialog.moving = Some(progress.clone());
                dialog.error = None;
                let (dir, ctx) = (self.lib_dir.clone(), self.ctx.clone());
                let title = format!("Migrating {}", dialog.vm);
                let job_root = root.clone();
                self.jobs.spawn(title, true, move |_| {
                    let result = move_vm(&dir, &root, &to, how, &progress, &ctx);
                    Done::Migrated { root: job_root, result }
                });
            }
        }
    }

    /// A cancel went through (the migration's own job then says how it ended), or not.
    pub(crate) fn migration_cancelled(&mut self, result: Result<(), String>) {
        if let Err(error) = result {
            self.toasts.error("The migration could not be cancelled", Some(error));
        }
    }

    pub(crate) fn migrate_done(&mut self, root: PathBuf, result: Result<String, String>) {
        let name = self.library.item(&root).map(|i| i.name.clone()).unwrap_or_default();
        match result {
            Ok(summary) => {
                self.migrate = None;
                self.toasts.success(&format!("{name} {summary}"));
            }
            Err(error) => {
                if let Some(dialog) = self.migrate.as_mut().filter(|d| d.root == root) {
                    dialog.moving = None;
                    dialog.error = Some(error.clone());
                }
                self.toasts.error(&format!("{name} did not move"), Some(error));
            }
        }
        self.rescan_now();
    }
}

/// Moves the VM in `root` to `to`; what to say, or why not.
fn move_vm(
    dir: &Path,
    root: &Path,
    to: &str,
    how: super::dialogs::migrate::How,
    progress: &Arc<Mutex<Option<Progress>>>,
    ctx: &egui::Context,
) -> Result<String, String> {
    let result = (|| -> anyhow::Result<String> {
        let lib = vm_library::library::Library::open(dir)?;
        let bundle = vm_library::bundle::Bundle::open(root)?;
        let address = crate::core::migration::Address::parse(to)?;
        let how = crate::core::migration::How {
            downtime_ms: how.downtime_ms,
            insecure: how.insecure,
            copy_disks: how.copy_disks,
            token: (!how.token.is_empty()).then_some(how.token),
            ..Default::default()
        };
        let figures = crate::core::migration::migrate(&lib, &bundle, &address, &how, |reply| {
            if let Reply::Migrating {
                phase,
                pass,
                sent,
                remaining,
                dirty_rate,
                downtime_estimate_ms,
                ..
            } = reply
            {
                *vmm::sync::lock(progress) = Some(Progress {
                    phase: phase.clone(),
                    pass: *pass,
                    sent: *sent,
                    remaining: *remaining,
                    dirty_rate: *dirty_rate,
                    downtime_estimate_ms: *downtime_estimate_ms,
                });
                ctx.request_repaint();
            }
        })?;
        let summary = figures.summary(&address);
        Ok(if how.copy_disks {
            format!("{summary}. {}", crate::core::migration::left_here(&bundle))
        } else {
            summary
        })
    })();
    result.map_err(|e| format!("{e:#}"))
}
