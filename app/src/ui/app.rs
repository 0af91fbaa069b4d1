//! The window's state: its components (library sidebar, pages, dialogs), the VMs it runs,
//! the jobs under way, and the one place (`apply`) where what the components ask for is
//! carried out. What the VMs' threads and the jobs report is taken in `poll`. How a frame
//! is drawn from all this (the `eframe::App`) is `frame.rs`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use vm_library::config::VmConfig;
use vm_library::validate::Host;

use super::Options;
use super::act::{Act, Page};
use super::console;
use super::console::input::{self, Keyboard};
use super::console::view::Scale;
use super::dialogs::DialogAction;
use super::dialogs::close::{Choice, Closing};
use super::dialogs::preferences::{self, PreferencesDialog};
use super::dialogs::settings::{self, SettingsDialog};
use super::jobs::{self, Done, IsoPurpose, ItemKind, Jobs, Pick, VmItem};
use super::library::LibraryPanel;
use super::prefs::Preferences;
use super::running::{Running, Vm};
use super::serial::SerialView;
use super::session::{Command, Phase};
use super::toasts::Toasts;
use super::wizard::{self, Wizard};
use crate::core::iso::IsoFacts;
use crate::core::state::VmState;

/// What the console drew so far, for benchmarks.
#[derive(Default, Clone, Copy, Debug)]
pub struct FrameStats {
    pub frames: u64,
    /// Guest screen rows uploaded into textures.
    pub rows_uploaded: u64,
    /// Time the UI thread spent bringing the console's texture up to date (handing the
    /// converted rows to egui; converting them on the UI thread for thumbnails).
    pub upload_time: Duration,
    /// What the consoles' converter threads spent converting guest frames.
    pub conversion: crate::ui::console::screen::Conversion,
}

pub struct VesselApp {
    pub(crate) ctx: egui::Context,
    pub(crate) lib_dir: PathBuf,
    pub(crate) library_override: bool,
    pub(crate) prefs: Preferences,
    pub(crate) prefs_path: PathBuf,
    pub(crate) library: LibraryPanel,
    pub(crate) page: Page,
    pub(crate) running: Running,
    pub(crate) jobs: Jobs,
    pub(crate) toasts: Toasts,
    pub(crate) scale: Scale,
    pub(crate) fullscreen: bool,
    /// The console that has the keyboard (decided last frame).
    pub(crate) keyboard: Keyboard,
    pub(crate) serial: SerialView,
    pub(crate) wizard: Option<Wizard>,
    pub(crate) preferences: Option<PreferencesDialog>,
    pub(crate) settings: Option<SettingsDialog>,
    pub(crate) take_snapshot: Option<super::dialogs::snapshots::TakeDialog>,
    pub(crate) snapshot_manager: Option<super::dialogs::snapshots::Manager>,
    pub(crate) migrate: Option<super::dialogs::migrate::MigrateDialog>,
    pub(crate) backup: Option<super::dialogs::backup::BackupDialog>,
    /// What waits for a VM's session to end (a snapshot of it, going to one).
    pub(crate) after_stop: std::collections::HashMap<PathBuf, super::dialogs::snapshots::AfterStop>,
    pub(crate) about: bool,
    pub(crate) closing: Closing,
    /// Frames drawn, and the time spent drawing them (for the benchmark).
    pub frame_stats: FrameStats,
    /// Guest screens are converted to RGBA for egui's own textures even where the
    /// renderer takes their pixels as they are (for a benchmark's comparison).
    pub convert_frames: bool,
}

impl VesselApp {
    pub fn new(ctx: &egui::Context, options: Options) -> VesselApp {
        let (prefs, prefs_error) = Preferences::load(&options.prefs_path);
        ctx.set_theme(prefs.theme.egui());
        let lib_dir = options
            .library
            .clone()
            .or_else(|| prefs.library.clone())
            .unwrap_or_else(vm_library::library::default_dir);
        let wake_ctx = ctx.clone();
        let mut app = VesselApp {
            ctx: ctx.clone(),
            lib_dir,
            library_override: options.library.is_some(),
            prefs,
            prefs_path: options.prefs_path,
            library: LibraryPanel::default(),
            page: Page::Summary,
            running: Running::new(options.launcher),
            jobs: Jobs::new(Arc::new(move || wake_ctx.request_repaint())),
            toasts: Toasts::default(),
            scale: Scale::Fit,
            fullscreen: false,
            keyboard: Keyboard::default(),
            serial: SerialView::default(),
            wizard: None,
            preferences: None,
            settings: None,
            take_snapshot: None,
            snapshot_manager: None,
            migrate: None,
            backup: None,
            after_stop: Default::default(),
            about: false,
            closing: Closing::No,
            frame_stats: FrameStats::default(),
            convert_frames: false,
        };
        if let Some(e) = prefs_error {
            app.toasts.error("Preferences could not be read", Some(e.to_string()));
        }
        app.library.rescan(&mut app.jobs, &app.lib_dir);
        app
    }

    /// Whether the library has been read once (tests, benchmarks).
    pub fn library_read(&self) -> bool {
        self.library.scanned_at.is_some()
    }

    /// Selects the VM called `name` and powers it on, showing its console; false if the
    /// library has no such VM.
    pub fn power_on_by_name(&mut self, name: &str) -> bool {
        let Some(root) = self.library.items.iter().find(|i| i.name == name).map(|i| i.root.clone())
        else {
            return false;
        };
        self.library.selected = Some(root.clone());
        self.power_on(&root);
        true
    }

    /// The size of the selected VM's screen as the console has it (0x0: nothing yet).
    pub fn console_size(&self) -> Option<[usize; 2]> {
        self.selected_vm().map(|vm| vm.console.screen.size())
    }

    /// Whether the selected VM's screen goes into the renderer's texture as it is
    /// (benchmarks).
    pub fn console_is_native(&self) -> bool {
        self.selected_vm().is_some_and(|vm| vm.console.screen.is_native())
    }

    /// The selected VM's display as the window mirrors it (benchmarks).
    pub fn console_display(&self) -> Option<vmm::Display> {
        self.selected_vm().and_then(|vm| vm.session.display.clone())
    }

    /// Powers every VM off (benchmarks, before they end).
    pub fn power_off_all(&mut self) {
        self.running.send_all(|| Command::PowerOff);
    }

    /// Whether any VM is running.
    pub fn any_running(&self) -> bool {
        !self.running.is_empty()
    }

    /// How the window shows the VM called `name` ("Running", "Crashed", ...), and why its
    /// last run ended if that is worth saying (tests).
    pub fn vm_state(&self, name: &str) -> Option<(String, Option<String>)> {
        let item = self.library.items.iter().find(|i| i.name == name)?;
        let reason = self.running.endings.get(&item.root).and_then(|e| e.reason());
        Some((self.state_of(item).label(), reason))
    }

    /// Selects the VM called `name` and shows its console if it runs (tests).
    pub fn select_by_name(&mut self, name: &str) {
        if let Some(item) = self.library.items.iter().find(|i| i.name == name) {
            self.library.selected = Some(item.root.clone());
            self.page = Page::Console;
        }
    }

    /// Closes the window as its close dialog's Run in Background does: every VM goes on in
    /// its own process (tests).
    pub fn run_in_background(&mut self) {
        self.running.detach_all();
    }

    /// Reads the library again now.
    pub(crate) fn rescan_now(&mut self) {
        self.library.rescan_now(&mut self.jobs, &self.lib_dir);
    }

    pub(crate) fn selected_vm(&self) -> Option<&Vm> {
        self.library.selected.as_ref().and_then(|r| self.running.get(r))
    }

    /// The state of a VM of the library, as the window shows it.
    pub(crate) fn state_of(&self, item: &VmItem) -> VmState {
        self.running.state_of(item)
    }

    /// The state of the VM in `root` (one this window runs may not be listed yet).
    pub(crate) fn state_at(&self, root: &Path) -> Option<VmState> {
        match self.library.item(root) {
            Some(item) => Some(self.state_of(item)),
            None => self.running.get(root).map(|vm| vm.session.phase.state()),
        }
    }

    // --- what the threads did ---

    pub(crate) fn poll(&mut self) {
        for done in self.jobs.finished() {
            self.finished(done);
        }
        for (root, mut vm) in self.running.poll(&mut self.toasts) {
            if self.keyboard.owner() == Some(root.as_path()) {
                self.keyboard.release(None);
            }
            vm.console.pointer.ungrab(&self.ctx);
            if self.library.selected.as_ref() == Some(&root) && self.page == Page::Console {
                self.page = Page::Summary;
            }
            // Its VM process ended (having let go of the run lock): the list's "running
            // elsewhere" is stale until the scan, which is news now anyway.
            self.library.stopped(&root);
            self.rescan_now();
            if let super::session::Phase::Ended(ending) = &vm.session.phase {
                self.after_session(&root, &ending.clone());
            }
        }
        if self.closing == Closing::Waiting && self.running.is_empty() {
            self.closing = Closing::Go;
            self.ctx.send_viewport_cmd(egui::ViewportCommand::Close);
        }
        self.library.rescan_if_stale(&mut self.jobs, &self.lib_dir);
    }

    fn finished(&mut self, done: Done) {
        match done {
            Done::Scanned { seq, result } => {
                if let Some(error) = self.library.scanned(seq, &self.lib_dir, result) {
                    self.toasts.error("The VM library cannot be read", Some(error));
                }
                // VMs running in processes of their own (started by another window, the
                // CLI, or this window before it was closed) show here too.
                let ctx = self.ctx.clone();
                self.running.attach(&self.library.items, Arc::new(move || ctx.request_repaint()));
            }
            Done::Inspected { iso, purpose, result } => {
                let result = result.map_err(|e| jobs::not_an_iso(&iso, &e));
                self.iso_inspected(iso, purpose, result)
            }
            Done::Created { result, power_on } => match result {
                Ok(root) => {
                    self.wizard = None;
                    let name = jobs::file_name(&root);
                    self.toasts.success(&format!("Created {name}"));
                    self.library.selected = Some(root.clone());
                    self.page = Page::Summary;
                    self.rescan_now();
                    if power_on {
                        self.power_on(&root);
                    }
                }
                Err(e) => {
                    if let Some(w) = &mut self.wizard {
                        w.busy = false;
                    }
                    let details = super::session::error_chain(&e);
                    self.toasts.error("The VM could not be created", Some(details));
                }
            },
            Done::Picked { pick, path } => self.picked(pick, path),
            Done::Changed { ok, result } => {
                match result {
                    Ok(()) => self.toasts.success(&ok),
                    Err(e) => self.toasts.error("That did not work", Some(e.to_string())),
                }
                self.rescan_now();
            }
            Done::SnapshotTree { root, result } => {
                if let Some(m) = &mut self.snapshot_manager
                    && m.root == root
                {
                    m.loaded(&self.ctx, result);
                }
            }
            Done::SnapshotWork { root, result, resume } => self.snapshot_done(root, result, resume),
            Done::Migrated { root, result } => self.migrate_done(root, result),
            Done::BackedUp { root, result } => self.backup_done(root, result),
            Done::MigrationCancelled(result) => self.migration_cancelled(result),
            Done::Demo(result) => match result {
                Ok(root) => {
                    self.toasts.success("The demo VM is ready");
                    self.library.selected = Some(root.clone());
                    self.rescan_now();
                    self.power_on(&root);
                }
                Err(e) => {
                    let details = super::session::error_chain(&e);
                    self.toasts.error("The demo VM could not be made", Some(details))
                }
            },
        }
    }

    // --- carrying out what was asked ---

    pub(crate) fn apply(&mut self, act: Act) {
        match act {
            Act::NewVm => self.open_wizard(None),
            Act::OpenVm => self.pick(Pick::OpenVm),
            Act::Preferences => {
                self.preferences = Some(PreferencesDialog::new(&self.prefs, self.library_override))
            }
            Act::Quit => self.ctx.send_viewport_cmd(egui::ViewportCommand::Close),
            Act::Select(root) => {
                if !self.running.contains(&root) && self.page == Page::Console {
                    self.page = Page::Summary;
                }
                self.library.selected = Some(root);
            }
            Act::PowerOn(root) => self.power_on(&root),
            Act::ShutDown(root) => self.command(&root, Command::ShutDown),
            Act::PowerOff(root) => self.command(&root, Command::PowerOff),
            Act::Reset(root) => self.command(&root, Command::Reset),
            Act::PauseResume(root) => {
                let paused =
                    self.running.get(&root).is_some_and(|vm| vm.session.phase == Phase::Paused);
                self.command(&root, if paused { Command::Resume } else { Command::Pause });
            }
            Act::Suspend(root) => self.command(&root, Command::Suspend),
            Act::SendKeys(root, keys) => self.running.send_keys(&root, keys),
            Act::AttachIso(root) => self.pick(Pick::AttachIso(root)),
            Act::EjectCd(root) => {
                if self.running.contains(&root) {
                    self.command(&root, Command::EjectCd { force: false });
                } else {
                    self.update(&root, "The CD drive is empty", |c| c.cdrom.iso = None);
                }
            }
            Act::Settings(root) => self.open_settings(&root),
            Act::TakeSnapshot(root) => self.open_take_snapshot(&root),
            Act::RevertSnapshot(root) => self.open_snapshot_manager(&root, true),
            Act::SnapshotManager(root) => self.open_snapshot_manager(&root, false),
            Act::Migrate(root) => self.open_migrate(&root),
            Act::BackUp(root) => self.open_backup(&root),
            Act::Serial(root, bytes) => self.command(&root, Command::Serial(bytes)),
            Act::DropIso(target, iso) => self.drop_iso_on(target, iso),
            Act::Scale(scale) => self.scale = scale,
            Act::ToggleAutofit => {
                self.prefs.autofit = !self.prefs.autofit;
                self.save_prefs();
            }
            Act::ToggleFullscreen => {
                self.fullscreen = !self.fullscreen;
                self.ctx.send_viewport_cmd(egui::ViewportCommand::Fullscreen(self.fullscreen));
            }
            Act::ToggleRelative(root) => {
                if let Some(vm) = self.running.get_mut(&root) {
                    vm.console.pointer.relative = !vm.console.pointer.relative;
                    if !vm.console.pointer.relative {
                        vm.console.pointer.ungrab(&self.ctx);
                    }
                }
            }
            Act::Page(page) => self.page = page,
            Act::About => self.about = true,
            Act::Demo => self.make_demo(),
            Act::Pick(pick) => self.pick(pick),
            Act::Dialog(action) => self.dialog(action),
            Act::Wizard(action) => self.wizard_action(action),
        }
    }

    fn wizard_action(&mut self, action: wizard::Action) {
        match action {
            wizard::Action::None => {}
            wizard::Action::Cancel => self.wizard = None,
            wizard::Action::Browse(field) => self.pick(Pick::Wizard(field)),
            wizard::Action::Inspect(iso) => self.inspect(iso, IsoPurpose::Wizard),
            wizard::Action::Finish { vm, power_on } => {
                jobs::create(&mut self.jobs, &self.lib_dir, *vm, power_on)
            }
        }
    }

    fn dialog(&mut self, action: DialogAction) {
        match action {
            DialogAction::Preferences(preferences::Answer::BrowseLibraryFolder) => {
                self.pick(Pick::LibraryFolder)
            }
            DialogAction::Preferences(preferences::Answer::Cancel) => self.preferences = None,
            DialogAction::Preferences(preferences::Answer::Save(prefs)) => {
                self.preferences = None;
                let library_changed = prefs.library != self.prefs.library;
                self.prefs = prefs;
                self.ctx.set_theme(self.prefs.theme.egui());
                self.save_prefs();
                if library_changed && !self.library_override {
                    self.lib_dir =
                        self.prefs.library.clone().unwrap_or_else(vm_library::library::default_dir);
                    self.library.selected = None;
                    self.rescan_now();
                }
            }
            DialogAction::Settings(settings::Answer::Cancel) => self.settings = None,
            DialogAction::Settings(settings::Answer::Save { root, name, change }) => {
                self.settings = None;
                self.update(&root, &format!("{name} saved"), move |c| change.apply(c));
            }
            DialogAction::Snapshots(answer) => self.snapshot_answer(answer),
            DialogAction::Migrate(answer) => self.migrate_answer(answer),
            DialogAction::Backup(answer) => self.backup_answer(answer),
            DialogAction::Close(Choice::Cancel) => self.closing = Closing::No,
            DialogAction::Close(Choice::RunInBackground) => {
                // The VMs' processes go on; the window lets go of them as it closes.
                self.running.detach_all();
                self.closing = Closing::Go;
                self.ctx.send_viewport_cmd(egui::ViewportCommand::Close);
            }
            DialogAction::Close(choice) => {
                let shut_down = choice == Choice::ShutDownAll;
                self.running
                    .send_all(|| if shut_down { Command::ShutDown } else { Command::PowerOff });
                self.closing = Closing::Waiting;
            }
        }
    }

    pub(crate) fn command(&mut self, root: &Path, command: Command) {
        if !self.running.send(root, command) {
            self.toasts.error("That VM is not running", None);
        }
    }

    pub(crate) fn power_on(&mut self, root: &Path) {
        if self.running.contains(root) {
            return;
        }
        let Some(item) = self.library.item(root) else {
            // Just made: not in the list yet; the scan brings it.
            let name = root.file_stem().map(|s| s.to_string_lossy().into_owned());
            self.start_session(root.to_path_buf(), name.unwrap_or_default());
            return;
        };
        match &item.kind {
            ItemKind::Inaccessible(why) => {
                let why = why.clone();
                self.toasts.error(&format!("{} cannot be opened", item.name), Some(why));
            }
            ItemKind::Ok { elsewhere: Some(pid), .. } => {
                let text = format!(
                    "{} is running already (pid {pid}); it shows here in a moment",
                    item.name
                );
                self.toasts.info(&text);
                self.rescan_now();
            }
            ItemKind::Ok { .. } => self.start_session(item.root.clone(), item.name.clone()),
        }
    }

    fn start_session(&mut self, root: PathBuf, name: String) {
        let ctx = self.ctx.clone();
        self.running.start(
            &self.lib_dir,
            root.clone(),
            name,
            Arc::new(move || ctx.request_repaint()),
        );
        self.library.selected = Some(root);
        self.page = Page::Console;
    }

    pub(crate) fn open_wizard(&mut self, iso: Option<PathBuf>) {
        let taken = self.library.items.iter().map(|i| i.name.clone()).collect();
        let mut wizard = Wizard::new(taken, Host::this());
        if let Some(iso) = iso
            && let Some(iso) = wizard.set_path(super::wizard::PathField::Iso, iso)
        {
            self.inspect(iso, IsoPurpose::Wizard);
        }
        self.wizard = Some(wizard);
    }

    fn pick(&mut self, pick: Pick) {
        jobs::pick(&mut self.jobs, &self.lib_dir, pick);
    }

    fn inspect(&mut self, iso: PathBuf, purpose: IsoPurpose) {
        jobs::inspect(&mut self.jobs, iso, purpose);
    }

    pub(crate) fn picked(&mut self, pick: Pick, path: Option<PathBuf>) {
        let Some(path) = path else { return };
        match pick {
            Pick::Wizard(field) => {
                if let Some(w) = &mut self.wizard
                    && let Some(iso) = w.set_path(field, path)
                {
                    self.inspect(iso, IsoPurpose::Wizard);
                }
            }
            Pick::AttachIso(root) => self.drop_iso_on(Some(root), path),
            Pick::OpenVm => jobs::open_vm(&mut self.jobs, &self.lib_dir, path),
            Pick::LibraryFolder => {
                if let Some(d) = &mut self.preferences {
                    d.draft.library = Some(path);
                }
            }
        }
    }

    /// An ISO dropped (or chosen) for `target` (a VM), or for the library (None).
    fn drop_iso_on(&mut self, target: Option<PathBuf>, iso: PathBuf) {
        match target {
            None => self.open_wizard(Some(iso)),
            Some(root) if self.running.contains(&root) => self.inspect(iso, IsoPurpose::Swap(root)),
            Some(root) => self.inspect(iso, IsoPurpose::Attach(root)),
        }
    }

    fn iso_inspected(
        &mut self,
        iso: PathBuf,
        purpose: IsoPurpose,
        result: Result<IsoFacts, String>,
    ) {
        let not_iso = "Not an ISO image; nothing was changed";
        match (purpose, result) {
            (IsoPurpose::Wizard, result) => match &mut self.wizard {
                Some(w) => w.iso_inspected(&iso, result),
                None => {
                    if let Err(e) = result {
                        self.toasts.error(not_iso, Some(e));
                    }
                }
            },
            (_, Err(e)) => self.toasts.error(not_iso, Some(e)),
            (IsoPurpose::Attach(root), Ok(facts)) => {
                let Some(item) = self.library.item(&root) else { return };
                let config = match &item.kind {
                    ItemKind::Ok { config, .. } => Some(&**config),
                    _ => None,
                };
                let ok = jobs::attach_message(&iso, &item.name, facts.linux, config);
                let path = iso.clone();
                self.update(&root, &ok, move |c| c.cdrom.iso = Some(path));
            }
            (IsoPurpose::Swap(root), Ok(_)) => self.command(&root, Command::InsertCd(iso)),
        }
    }

    fn open_settings(&mut self, root: &Path) {
        let Some(VmItem { kind: ItemKind::Ok { config, .. }, name, .. }) = self.library.item(root)
        else {
            return;
        };
        self.settings = Some(SettingsDialog {
            root: root.to_path_buf(),
            name: name.clone(),
            draft: super::dialogs::settings::SettingsChange::of(config),
        });
    }

    /// Changes a VM's configuration off the UI thread; `ok` is said when it worked.
    pub(crate) fn update(
        &mut self,
        root: &Path,
        ok: &str,
        change: impl FnOnce(&mut VmConfig) + Send + 'static,
    ) {
        if let Some(name) = self.library.item(root).map(|i| i.name.clone()) {
            jobs::update(&mut self.jobs, &self.lib_dir, name, ok.to_string(), change);
        }
    }

    pub(crate) fn save_prefs(&mut self) {
        if let Err(e) = self.prefs.save(&self.prefs_path) {
            self.toasts.error("Preferences were not saved", Some(e.to_string()));
        }
    }

    fn make_demo(&mut self) {
        let dir = self.lib_dir.clone();
        let taken: Vec<String> = self.library.items.iter().map(|i| i.name.clone()).collect();
        self.jobs.spawn("Building the demo VM", true, move |progress| {
            Done::Demo(super::demo::make(&dir, &taken, progress))
        });
    }

    // --- input routing (before egui sees the events) ---

    /// Gives keyboard events to the console or serial view that has the keyboard, so that
    /// egui's own shortcuts (Ctrl+Q, zoom, Tab focus moves, clipboard) do not fire.
    pub fn route_input(&mut self, raw: &mut egui::RawInput) {
        let lost_focus = raw.events.iter().any(|e| matches!(e, egui::Event::WindowFocused(false)));
        if input::take_fullscreen_combo(&mut raw.events) {
            self.apply(Act::ToggleFullscreen);
        }
        if let Some(root) = self.keyboard.owner().map(Path::to_path_buf) {
            let vm = self.running.get_mut(&root);
            let input = vm.as_ref().and_then(|vm| vm.session.input.clone());
            let grabbed = vm.is_some_and(|vm| vm.console.pointer.grabbed);
            // Ctrl+Alt with the pointer grabbed: the pointer and keyboard go back.
            if input.is_some_and(|input| self.keyboard.route(&mut raw.events, &input)) && grabbed {
                self.release_keyboard();
            }
        } else if let Some(act) = self.serial.route(&mut raw.events) {
            self.apply(act);
        }
        if lost_focus {
            self.release_keyboard();
        }
    }

    /// The keyboard (and a grabbed pointer) go back to the host.
    fn release_keyboard(&mut self) {
        let Some(root) = self.keyboard.owner().map(Path::to_path_buf) else { return };
        let vm = self.running.get_mut(&root);
        self.keyboard.release(vm.as_ref().and_then(|vm| vm.session.input.as_ref()));
        if let Some(vm) = vm {
            vm.console.pointer.ungrab(&self.ctx);
        }
        self.ctx.memory_mut(|m| m.surrender_focus(console::console_id(&root)));
    }
}
