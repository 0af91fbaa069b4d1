//! VM ▸ Snapshot in the window: opening the Take Snapshot dialog and the Snapshot
//! Manager, and carrying out what they ask, off the UI thread.
//!
//! A VM this window runs is snapshotted with its machine, as the CLI does it: it is
//! suspended (its VM process saves its state and memory and ends), the snapshot takes
//! that state, and it is powered on again, resuming at once. Going to a snapshot powers a
//! running VM off first; a snapshot with a running state then resumes there, as VMware
//! Workstation's Revert does.

use std::path::{Path, PathBuf};

use vm_library::library::Library;

use super::app::VesselApp;
use super::dialogs::snapshots::{AfterStop, Answer, Manager, Resume, TakeDialog};
use super::jobs::Done;
use super::session::{Command, Ending};

impl VesselApp {
    /// The library name of the VM in `root`, if it is listed.
    fn vm_name(&self, root: &Path) -> Option<String> {
        self.library.item(root).map(|i| i.name.clone())
    }

    pub(crate) fn open_take_snapshot(&mut self, root: &Path) {
        let Some(vm) = self.vm_name(root) else { return };
        let running = self.running.contains(root);
        let mut dialog = match &self.snapshot_manager {
            // Its snapshots' names are known: the next free "Snapshot N".
            Some(m) if m.root == root => {
                TakeDialog::new(root.to_path_buf(), vm, &m.names(), running)
            }
            // Not read here: a name no snapshot of it has yet, the time (UTC).
            _ => {
                let mut dialog = TakeDialog::new(root.to_path_buf(), vm, &[], running);
                let now = vm_library::config::rfc3339(std::time::SystemTime::now());
                dialog.name = format!("Snapshot {}", now.replace('T', " ").trim_end_matches('Z'));
                dialog
            }
        };
        dialog.name.truncate(vm_library::snapshots::MAX_NAME);
        self.take_snapshot = Some(dialog);
    }

    /// Opens the Snapshot Manager on the VM in `root` (`revert`: asking at once whether to
    /// go back to the snapshot the VM's present state grew from).
    pub(crate) fn open_snapshot_manager(&mut self, root: &Path, revert: bool) {
        let Some(vm) = self.vm_name(root) else { return };
        let mut manager = Manager::new(root.to_path_buf(), vm);
        manager.confirm_current = revert;
        self.snapshot_manager = Some(manager);
        self.load_snapshots(root);
    }

    /// Reads the VM's snapshot tree again, for the manager.
    fn load_snapshots(&mut self, root: &Path) {
        let Some(name) = self.vm_name(root) else { return };
        let (dir, root) = (self.lib_dir.clone(), root.to_path_buf());
        self.jobs.spawn(format!("Reading {name}'s snapshots"), false, move |_| {
            let result = super::dialogs::snapshots::load(&dir, &name);
            Done::SnapshotTree { root, result }
        });
    }

    pub(crate) fn snapshot_answer(&mut self, answer: Answer) {
        match answer {
            Answer::CloseTake => self.take_snapshot = None,
            Answer::CloseManager => self.snapshot_manager = None,
            Answer::OpenTake(root) => self.open_take_snapshot(&root),
            Answer::Take { root, name, description } => {
                self.take_snapshot = None;
                if let Some(vm) = self.running.get(&root) {
                    let screen =
                        vm.session.display.as_ref().and_then(crate::core::screenshot::capture);
                    self.after_stop
                        .insert(root.clone(), AfterStop::Take { name, description, screen });
                    self.toasts.info("Saving the VM's running state for the snapshot…");
                    self.command(&root, Command::Suspend);
                } else {
                    self.take_job(root, name, description, None, Resume::No);
                }
            }
            Answer::GoTo { root, id, name, memory } => {
                if self.running.contains(&root) {
                    self.after_stop
                        .insert(root.clone(), AfterStop::GoTo { id, name, resume: memory });
                    self.command(&root, Command::PowerOff);
                } else {
                    let resume = if memory { Resume::IfDone } else { Resume::No };
                    self.go_to_job(root, id, name, resume);
                }
            }
            Answer::Delete { root, id, name } => {
                self.snapshot_job(
                    &root,
                    format!("Deleting snapshot {name:?}"),
                    Resume::No,
                    move |lib, vm| {
                        let deleted = lib.delete_snapshot(vm, &id)?;
                        Ok(if deleted.deferred {
                            format!("Deleted {name:?}; its disk space comes back once {vm} is off")
                        } else {
                            format!(
                                "Deleted {name:?} ({} given back)",
                                crate::core::units::size_text(deleted.reclaimed)
                            )
                        })
                    },
                );
            }
            Answer::Rename { root, id, new_name } => {
                self.snapshot_job(
                    &root,
                    "Renaming a snapshot".into(),
                    Resume::No,
                    move |lib, vm| {
                        lib.rename_snapshot(vm, &id, &new_name)?;
                        Ok(format!("The snapshot is now {new_name:?}"))
                    },
                );
            }
            Answer::Clone { root, id, new_name, linked } => {
                self.snapshot_job(
                    &root,
                    format!("Copying into {new_name}"),
                    Resume::No,
                    move |lib, vm| {
                        let clone = lib.clone_snapshot(vm, &id, &new_name, linked)?;
                        let how = if linked { "a linked clone" } else { "a copy" };
                        Ok(format!("{} is {how} of {vm} at that snapshot", clone.config.name))
                    },
                );
            }
        }
    }

    fn take_job(
        &mut self,
        root: PathBuf,
        name: String,
        description: String,
        screen: Option<image::RgbaImage>,
        resume: Resume,
    ) {
        self.snapshot_job(&root, format!("Taking snapshot {name:?}"), resume, move |lib, vm| {
            // Encoded here, off the UI thread.
            let png = screen.as_ref().and_then(crate::core::screenshot::png);
            let taken = lib.take_snapshot(vm, &name, &description, png.as_deref())?;
            let with = if taken.memory { " with its running state" } else { "" };
            Ok(format!("Took snapshot {:?} of {vm}{with}", taken.name))
        });
    }

    fn go_to_job(&mut self, root: PathBuf, id: String, name: String, resume: Resume) {
        self.snapshot_job(&root, format!("Going to snapshot {name:?}"), resume, move |lib, vm| {
            lib.revert_snapshot(vm, &id)?;
            Ok(format!("{vm} is back at {name:?}"))
        });
    }

    /// Runs `work` on the VM in `root` off the UI thread (shown in the status bar); what it
    /// says comes back as `Done::SnapshotWork`, and the VM is powered on after it with
    /// `resume`.
    fn snapshot_job(
        &mut self,
        root: &Path,
        title: String,
        resume: Resume,
        work: impl FnOnce(&Library, &str) -> Result<String, vm_library::library::LibraryError>
        + Send
        + 'static,
    ) {
        let Some(vm) = self.vm_name(root) else { return };
        if let Some(m) = &mut self.snapshot_manager
            && m.root == root
        {
            m.busy = true;
        }
        let (dir, root) = (self.lib_dir.clone(), root.to_path_buf());
        self.jobs.spawn(title, true, move |_| {
            let result = Library::open(&dir)
                .and_then(|lib| work(&lib, &vm))
                .map_err(|e| super::session::error_chain(&e));
            Done::SnapshotWork { root, result, resume }
        });
    }

    /// The VM in `root` stopped with `ending`: what waited for that is done now.
    pub(crate) fn after_session(&mut self, root: &Path, ending: &Ending) {
        let Some(after) = self.after_stop.remove(root) else { return };
        match (after, ending) {
            (AfterStop::Take { name, description, screen }, Ending::Suspended) => {
                self.take_job(root.to_path_buf(), name, description, screen, Resume::Always);
            }
            (AfterStop::Take { .. }, _) => {
                self.toasts.error(
                    "The snapshot was not taken: the VM stopped before its state was saved",
                    None,
                );
            }
            (AfterStop::PowerOn, _) => self.power_on(root),
            (AfterStop::GoTo { id, name, resume }, _) => {
                let resume = if resume { Resume::IfDone } else { Resume::No };
                self.go_to_job(root.to_path_buf(), id, name, resume);
            }
        }
    }

    /// A snapshot job finished.
    pub(crate) fn snapshot_done(
        &mut self,
        root: PathBuf,
        result: Result<String, String>,
        resume: Resume,
    ) {
        let done = result.is_ok();
        match result {
            Ok(text) => self.toasts.success(&text),
            Err(e) => self.toasts.error("That did not work", Some(e)),
        }
        self.rescan_now();
        if self.snapshot_manager.as_ref().is_some_and(|m| m.root == root) {
            self.load_snapshots(&root);
        }
        // A VM snapshotted while it ran goes on from its saved state even if the snapshot
        // failed; one taken back to a running state resumes there.
        if resume == Resume::Always || (resume == Resume::IfDone && done) {
            if self.running.contains(&root) {
                self.after_stop.insert(root, AfterStop::PowerOn);
            } else {
                self.power_on(&root);
            }
        }
    }
}
