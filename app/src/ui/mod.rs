//! The desktop app (eframe/egui): the library sidebar, each VM's Summary, Console and
//! Serial pages, the New VM wizard, menus and toolbar, drag and drop, toasts and the
//! status bar. VMs run in `session` threads; slow work goes to `jobs`.

mod console;
mod demo;
mod jobs;
pub mod prefs;
mod session;
mod toasts;
mod wizard;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use egui::{Key, KeyboardShortcut, Modifiers, Sense, Vec2};
use vm_library::config::{Boot, Display as DisplayConfig};
use vm_library::library::Library;
use vm_library::validate::Host;
use vmm::input::evdev::*;

use console::{KeyTranslator, Scale, Screen, WheelAccumulator};
use jobs::{Done, IsoPurpose, ItemKind, Jobs, Pick, VmItem};
use prefs::Preferences;
use session::{Command, Ending, Phase, Session};
use toasts::Toasts;
use wizard::Wizard;

/// Where the app keeps things; tests point these at temporary folders.
pub struct Options {
    /// The library folder from the command line (`--library`), over the preferences.
    pub library: Option<PathBuf>,
    pub prefs_path: PathBuf,
}

/// Opens the window and runs until it is closed.
pub fn run(library: Option<PathBuf>) -> anyhow::Result<()> {
    let prefs_path = prefs::default_path();
    let (prefs, _) = Preferences::load(&prefs_path);
    let options = eframe::NativeOptions {
        renderer: match prefs.renderer {
            prefs::Renderer::Glow => eframe::Renderer::Glow,
            prefs::Renderer::Wgpu => eframe::Renderer::Wgpu,
        },
        viewport: egui::ViewportBuilder::default()
            .with_title("Vessel")
            .with_app_id("vessel")
            .with_inner_size([1180.0, 760.0])
            .with_min_inner_size([640.0, 420.0])
            .with_drag_and_drop(true),
        ..Default::default()
    };
    eframe::run_native(
        "Vessel",
        options,
        Box::new(move |cc| {
            Ok(Box::new(VesselApp::new(&cc.egui_ctx, Options { library, prefs_path })))
        }),
    )
    .map_err(|e| anyhow::anyhow!("cannot open the window: {e}"))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Page {
    Summary,
    Console,
    Serial,
}

/// Everything menus, buttons and shortcuts can ask for.
#[derive(Clone, Debug, PartialEq)]
enum Act {
    NewVm,
    OpenVm,
    Preferences,
    Quit,
    PowerOn(PathBuf),
    ShutDown(PathBuf),
    PowerOff(PathBuf),
    Reset(PathBuf),
    PauseResume(PathBuf),
    SendKeys(PathBuf, &'static [u16]),
    AttachIso(PathBuf),
    EjectCd(PathBuf),
    Settings(PathBuf),
    Scale(Scale),
    ToggleAutofit,
    ToggleFullscreen,
    ToggleRelative(PathBuf),
    Page(Page),
    About,
    Demo,
}

/// Key combinations the VM menu sends.
const COMBOS: &[(&str, &[u16])] = &[
    ("Ctrl+Alt+Del", &[KEY_LEFTCTRL, KEY_LEFTALT, KEY_DELETE]),
    ("Ctrl+Alt+Backspace", &[KEY_LEFTCTRL, KEY_LEFTALT, KEY_BACKSPACE]),
    ("Ctrl+Alt+F1", &[KEY_LEFTCTRL, KEY_LEFTALT, KEY_F1]),
    ("Ctrl+Alt+F2", &[KEY_LEFTCTRL, KEY_LEFTALT, KEY_F2]),
    ("Ctrl+Alt+F7", &[KEY_LEFTCTRL, KEY_LEFTALT, KEY_F7]),
    ("Print Screen", &[KEY_SYSRQ]),
    ("Super", &[KEY_LEFTMETA]),
    ("Alt+Tab", &[KEY_LEFTALT, KEY_TAB]),
];

const fn shortcut(modifiers: Modifiers, key: Key) -> KeyboardShortcut {
    KeyboardShortcut::new(modifiers, key)
}
const CTRL_SHIFT: Modifiers =
    Modifiers { ctrl: true, shift: true, command: true, ..Modifiers::NONE };
const SC_NEW: KeyboardShortcut = shortcut(Modifiers::COMMAND, Key::N);
const SC_OPEN: KeyboardShortcut = shortcut(Modifiers::COMMAND, Key::O);
const SC_PREFS: KeyboardShortcut = shortcut(Modifiers::COMMAND, Key::Comma);
const SC_QUIT: KeyboardShortcut = shortcut(Modifiers::COMMAND, Key::Q);
const SC_POWER_ON: KeyboardShortcut = shortcut(Modifiers::COMMAND, Key::B);
const SC_SHUT_DOWN: KeyboardShortcut = shortcut(Modifiers::COMMAND, Key::E);
const SC_POWER_OFF: KeyboardShortcut = shortcut(CTRL_SHIFT, Key::E);
const SC_RESET: KeyboardShortcut = shortcut(CTRL_SHIFT, Key::R);
const SC_PAUSE: KeyboardShortcut = shortcut(CTRL_SHIFT, Key::P);
const SC_SETTINGS: KeyboardShortcut = shortcut(Modifiers::COMMAND, Key::D);
const SC_FIT: KeyboardShortcut = shortcut(Modifiers::COMMAND, Key::Num0);
const SC_ACTUAL: KeyboardShortcut = shortcut(Modifiers::COMMAND, Key::Num1);
const SC_FULLSCREEN: KeyboardShortcut = shortcut(Modifiers::NONE, Key::F11);
/// Full screen too, and works while the guest has the keyboard.
const SC_FULLSCREEN_HOST: KeyboardShortcut =
    shortcut(Modifiers { ctrl: true, alt: true, command: true, ..Modifiers::NONE }, Key::Enter);

/// A VM the app runs, with what its console needs.
struct Running {
    session: Session,
    screen: Screen,
    /// The size last asked of the guest (autofit).
    requested: Option<(u32, u32)>,
    relative: bool,
    grabbed: bool,
    held: Vec<vmm::Button>,
    wheel: WheelAccumulator,
    /// When its thumbnail was last brought up to date.
    thumb_at: Option<Instant>,
    /// How far an Actual Size screen larger than the console is scrolled (points).
    pan: Vec2,
}

pub struct VesselApp {
    ctx: egui::Context,
    lib_dir: PathBuf,
    library_override: bool,
    prefs: Preferences,
    prefs_path: PathBuf,
    prefs_draft: Option<Preferences>,
    items: Vec<VmItem>,
    scanned_at: Option<Instant>,
    scanning: bool,
    /// Scans started, and the newest one whose result is shown.
    scan_seq: u64,
    scan_applied: u64,
    /// The last scan's error, so it is reported once, not every few seconds.
    scan_error: Option<String>,
    selected: Option<PathBuf>,
    page: Page,
    running: HashMap<PathBuf, Running>,
    /// How each VM's last run ended, when that is worth showing (crashes, failures).
    endings: HashMap<PathBuf, Ending>,
    jobs: Jobs,
    wizard: Option<Wizard>,
    toasts: Toasts,
    scale: Scale,
    fullscreen: bool,
    /// The VM whose console has the keyboard (decided last frame).
    keyboard: Option<PathBuf>,
    serial_focus: Option<PathBuf>,
    keys: KeyTranslator,
    serial_line: String,
    sidebar_rect: egui::Rect,
    closing: Closing,
    about: bool,
    settings: Option<SettingsDraft>,
    /// Frames drawn, and the time spent drawing them (for the benchmark).
    pub frame_stats: FrameStats,
}

/// What the console drew so far, for benchmarks.
#[derive(Default, Clone, Copy, Debug)]
pub struct FrameStats {
    pub frames: u64,
    /// Guest screen rows uploaded into textures.
    pub rows_uploaded: u64,
    /// Time spent bringing the console's texture up to date (reading the guest's frame,
    /// converting the damaged rows, handing them to egui).
    pub upload_time: Duration,
}

#[derive(PartialEq)]
enum Closing {
    No,
    /// Asking what to do with running VMs.
    Asking,
    /// Waiting for the VMs to stop, then closing.
    Waiting,
    /// Close now.
    Go,
}

struct SettingsDraft {
    root: PathBuf,
    name: String,
    vcpus: u32,
    memory_mib: u64,
    notes: String,
    iso: String,
    follow_window: bool,
    width: u32,
    height: u32,
    /// Whether the guest may reach this computer's own services; None without a network
    /// card.
    host_access: Option<bool>,
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
            prefs_draft: None,
            items: Vec::new(),
            scanned_at: None,
            scanning: false,
            scan_seq: 0,
            scan_applied: 0,
            scan_error: None,
            selected: None,
            page: Page::Summary,
            running: HashMap::new(),
            endings: HashMap::new(),
            jobs: Jobs::new(Arc::new(move || wake_ctx.request_repaint())),
            wizard: None,
            toasts: Toasts::default(),
            scale: Scale::Fit,
            fullscreen: false,
            keyboard: None,
            serial_focus: None,
            keys: KeyTranslator::default(),
            serial_line: String::new(),
            sidebar_rect: egui::Rect::NOTHING,
            closing: Closing::No,
            about: false,
            settings: None,
            frame_stats: FrameStats::default(),
        };
        if let Some(e) = prefs_error {
            app.toasts.error("Preferences could not be read", Some(e.to_string()));
        }
        app.rescan();
        app
    }

    /// Whether the library has been read once (tests, benchmarks).
    pub fn library_read(&self) -> bool {
        self.scanned_at.is_some()
    }

    /// Selects the VM called `name` and powers it on, showing its console; false if the
    /// library has no such VM.
    pub fn power_on_by_name(&mut self, name: &str) -> bool {
        let Some(root) = self.items.iter().find(|i| i.name == name).map(|i| i.root.clone()) else {
            return false;
        };
        self.selected = Some(root.clone());
        self.power_on(&root);
        true
    }

    /// The size of the selected VM's screen as the console has it (0x0: nothing yet).
    pub fn console_size(&self) -> Option<[usize; 2]> {
        self.selected.as_ref().and_then(|r| self.running.get(r)).map(|r| r.screen.size())
    }

    /// Powers every VM off (benchmarks, before they end).
    pub fn power_off_all(&mut self) {
        for r in self.running.values() {
            r.session.send(Command::PowerOff);
        }
    }

    /// Whether any VM is running.
    pub fn any_running(&self) -> bool {
        !self.running.is_empty()
    }

    fn rescan(&mut self) {
        if self.scanning {
            return;
        }
        self.scanning = true;
        self.scan_seq += 1;
        let (dir, seq) = (self.lib_dir.clone(), self.scan_seq);
        self.jobs.spawn("Reading the library", false, move |_| Done::Scanned {
            seq,
            result: jobs::scan(&dir),
        });
    }

    fn item(&self, root: &Path) -> Option<&VmItem> {
        self.items.iter().find(|i| i.root == root)
    }

    /// The state shown for a VM.
    fn state_of(&self, item: &VmItem) -> String {
        if let Some(r) = self.running.get(&item.root) {
            return match &r.session.phase {
                Phase::Starting => "Starting…".into(),
                Phase::Running => "Running".into(),
                Phase::Paused => "Paused".into(),
                Phase::Ended(_) => "Stopping…".into(),
            };
        }
        match &item.kind {
            ItemKind::Inaccessible(_) => "Inaccessible".into(),
            ItemKind::Ok { elsewhere: Some(pid), .. } => format!("Running elsewhere (pid {pid})"),
            ItemKind::Ok { .. } => match self.endings.get(&item.root) {
                Some(Ending::Crashed(_)) => "Crashed".into(),
                Some(Ending::Failed(_)) => "Failed to run".into(),
                _ => "Off".into(),
            },
        }
    }

    // --- polling what the threads did ---

    fn poll(&mut self) {
        for done in self.jobs.finished() {
            self.finished(done);
        }
        let mut ended = Vec::new();
        for (root, r) in &mut self.running {
            for notice in r.session.poll() {
                if notice.error {
                    self.toasts.error(&notice.text, None);
                } else {
                    self.toasts.info(&notice.text);
                }
            }
            if let Phase::Ended(ending) = &r.session.phase {
                ended.push((root.clone(), ending.clone()));
            }
        }
        for (root, ending) in ended {
            let r = self.running.remove(&root);
            let name = r.map(|r| r.session.name).unwrap_or_default();
            if self.keyboard.as_ref() == Some(&root) {
                self.keyboard = None;
                self.ctx
                    .send_viewport_cmd(egui::ViewportCommand::CursorGrab(egui::CursorGrab::None));
                self.ctx.send_viewport_cmd(egui::ViewportCommand::CursorVisible(true));
            }
            match &ending {
                Ending::PoweredOff => {
                    self.endings.remove(&root);
                }
                Ending::Crashed(reason) => {
                    self.toasts.error(&format!("{name} crashed"), Some(reason.clone()));
                    self.endings.insert(root.clone(), ending.clone());
                }
                Ending::Failed(reason) => {
                    self.toasts.error(&format!("{name} could not run"), Some(reason.clone()));
                    self.endings.insert(root.clone(), ending.clone());
                }
            }
            if self.selected.as_ref() == Some(&root) && self.page == Page::Console {
                self.page = Page::Summary;
            }
        }
        if self.closing == Closing::Waiting && self.running.is_empty() {
            self.closing = Closing::Go;
            self.ctx.send_viewport_cmd(egui::ViewportCommand::Close);
        }
        if self.scanned_at.is_none_or(|t| t.elapsed() > Duration::from_secs(5)) {
            self.rescan();
        }
    }

    fn finished(&mut self, done: Done) {
        match done {
            Done::Scanned { seq, result } => {
                if seq < self.scan_applied {
                    return; // an older scan that finished late
                }
                self.scan_applied = seq;
                self.scanning = false;
                self.scanned_at = Some(Instant::now());
                let error = result.as_ref().err().cloned();
                if error.is_some() && error != self.scan_error {
                    self.toasts.error("The VM library cannot be read", error.clone());
                }
                self.scan_error = error;
                match result {
                    Ok(items) => {
                        self.items = items;
                        if self.selected.is_none() {
                            self.selected = self.items.first().map(|i| i.root.clone());
                        }
                    }
                    Err(_) => self.items.clear(),
                }
            }
            Done::Inspected { iso, purpose, result } => self.iso_inspected(iso, purpose, result),
            Done::Created { result, power_on } => match result {
                Ok(root) => {
                    self.wizard = None;
                    self.toasts.success(&format!(
                        "Created {}",
                        root.file_name().map(|n| n.to_string_lossy()).unwrap_or_default()
                    ));
                    self.selected = Some(root.clone());
                    self.page = Page::Summary;
                    self.scanned_at = None;
                    self.rescan_now();
                    if power_on {
                        self.power_on(&root);
                    }
                }
                Err(e) => {
                    if let Some(w) = &mut self.wizard {
                        w.busy = false;
                    }
                    self.toasts.error("The VM could not be created", Some(e));
                }
            },
            Done::Picked { pick, path } => self.picked(pick, path),
            Done::Changed { ok, result } => {
                match result {
                    Ok(()) => self.toasts.success(&ok),
                    Err(e) => self.toasts.error("That did not work", Some(e)),
                }
                self.rescan_now();
            }
            Done::Demo(result) => match result {
                Ok(root) => {
                    self.toasts.success("The demo VM is ready");
                    self.selected = Some(root.clone());
                    self.rescan_now();
                    self.power_on(&root);
                }
                Err(e) => self.toasts.error("The demo VM could not be made", Some(e)),
            },
        }
    }

    /// Reads the library again now (after a change), synchronously enough for the list to
    /// show what was just made: a small scan, on the job thread.
    fn rescan_now(&mut self) {
        self.scanning = false;
        self.rescan();
    }

    // --- actions ---

    fn act(&mut self, act: Act) {
        match act {
            Act::NewVm => self.open_wizard(None),
            Act::OpenVm => self.pick(Pick::OpenVm),
            Act::Preferences => self.prefs_draft = Some(self.prefs.clone()),
            Act::Quit => self.ctx.send_viewport_cmd(egui::ViewportCommand::Close),
            Act::PowerOn(root) => self.power_on(&root),
            Act::ShutDown(root) => self.command(&root, Command::ShutDown),
            Act::PowerOff(root) => self.command(&root, Command::PowerOff),
            Act::Reset(root) => self.command(&root, Command::Reset),
            Act::PauseResume(root) => {
                let paused =
                    self.running.get(&root).is_some_and(|r| r.session.phase == Phase::Paused);
                self.command(&root, if paused { Command::Resume } else { Command::Pause });
            }
            Act::SendKeys(root, keys) => {
                if let Some(input) = self.running.get(&root).and_then(|r| r.session.input.clone()) {
                    for &k in keys {
                        input.key(k, true);
                    }
                    for &k in keys.iter().rev() {
                        input.key(k, false);
                    }
                }
            }
            Act::AttachIso(root) => self.pick(Pick::AttachIso(root)),
            Act::EjectCd(root) => {
                if self.running.contains_key(&root) {
                    self.command(&root, Command::EjectCd { force: false });
                } else {
                    self.edit(
                        &root,
                        vec![("cdrom.iso".into(), "\"\"".into())],
                        "The CD drive is empty",
                    );
                }
            }
            Act::Settings(root) => self.open_settings(&root),
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
                if let Some(r) = self.running.get_mut(&root) {
                    r.relative = !r.relative;
                    if !r.relative {
                        r.grabbed = false;
                        self.ctx.send_viewport_cmd(egui::ViewportCommand::CursorGrab(
                            egui::CursorGrab::None,
                        ));
                        self.ctx.send_viewport_cmd(egui::ViewportCommand::CursorVisible(true));
                    }
                }
            }
            Act::Page(page) => self.page = page,
            Act::About => self.about = true,
            Act::Demo => self.make_demo(),
        }
    }

    fn command(&mut self, root: &Path, command: Command) {
        match self.running.get(root) {
            Some(r) if r.session.send(command) => {}
            _ => self.toasts.error("That VM is not running", None),
        }
    }

    fn power_on(&mut self, root: &Path) {
        if self.running.contains_key(root) {
            return;
        }
        let Some(item) = self.item(root) else {
            // Just made: not in the list yet; the scan brings it.
            let root = root.to_path_buf();
            self.start_session(
                root.clone(),
                root.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default(),
            );
            return;
        };
        match &item.kind {
            ItemKind::Inaccessible(why) => {
                let why = why.clone();
                self.toasts.error(&format!("{} cannot be opened", item.name), Some(why));
            }
            ItemKind::Ok { elsewhere: Some(pid), .. } => {
                let text = format!(
                    "{} is running in another Vessel (pid {pid}); stop it there first",
                    item.name
                );
                self.toasts.error(&text, None);
            }
            ItemKind::Ok { .. } => self.start_session(item.root.clone(), item.name.clone()),
        }
    }

    fn start_session(&mut self, root: PathBuf, name: String) {
        self.endings.remove(&root);
        let ctx = self.ctx.clone();
        let session = Session::start(
            self.lib_dir.clone(),
            root.clone(),
            name,
            Arc::new(move || ctx.request_repaint()),
        );
        self.running.insert(
            root.clone(),
            Running {
                session,
                screen: Screen::default(),
                requested: None,
                relative: false,
                grabbed: false,
                held: Vec::new(),
                wheel: WheelAccumulator::default(),
                thumb_at: None,
                pan: Vec2::ZERO,
            },
        );
        self.selected = Some(root);
        self.page = Page::Console;
    }

    fn open_wizard(&mut self, iso: Option<PathBuf>) {
        let taken = self.items.iter().map(|i| i.name.clone()).collect();
        let mut wizard = Wizard::new(taken, Host::this());
        if let Some(iso) = iso
            && let Some(iso) = wizard.set_path(wizard::PathField::Iso, iso)
        {
            self.inspect(iso, IsoPurpose::Wizard);
        }
        self.wizard = Some(wizard);
    }

    fn inspect(&mut self, iso: PathBuf, purpose: IsoPurpose) {
        let title = format!("Reading {}", iso.display());
        self.jobs.spawn(title, true, move |_| {
            let result = jobs::inspect(&iso);
            Done::Inspected { iso, purpose, result }
        });
    }

    fn iso_inspected(
        &mut self,
        iso: PathBuf,
        purpose: IsoPurpose,
        result: Result<(Option<vm_library::iso::os::OsGuess>, bool), String>,
    ) {
        match purpose {
            IsoPurpose::Wizard => {
                if let Some(w) = &mut self.wizard {
                    w.iso_inspected(&iso, result);
                } else if let Err(e) = result {
                    self.toasts.error("Not an ISO image; nothing was changed", Some(e));
                }
            }
            IsoPurpose::Attach(root) => match result {
                Ok((_, linux)) => {
                    let mut changes =
                        vec![("cdrom.iso".to_string(), toml_string(&iso.display().to_string()))];
                    // A VM with nothing else it can boot installs from the disc.
                    let firmware = self
                        .item(&root)
                        .is_some_and(|i| matches!(&i.kind, ItemKind::Ok { config, .. } if matches!(config.boot.value, Boot::Bios | Boot::Uefi)));
                    if linux && firmware {
                        changes.push(("boot".into(), "{ kind = \"cdrom\" }".into()));
                    }
                    let name = self.item(&root).map(|i| i.name.clone()).unwrap_or_default();
                    let ok = format!(
                        "{} is in {name}'s CD drive{}",
                        file_name(&iso),
                        if linux && firmware { "; it boots from it" } else { "" }
                    );
                    self.edit(&root, changes, &ok);
                }
                Err(e) => self.toasts.error("Not an ISO image; nothing was changed", Some(e)),
            },
            IsoPurpose::Swap(root) => match result {
                Ok(_) => self.command(&root, Command::InsertCd(iso)),
                Err(e) => self.toasts.error("Not an ISO image; nothing was changed", Some(e)),
            },
        }
    }

    /// Changes a VM's settings off the UI thread.
    fn edit(&mut self, root: &Path, changes: Vec<(String, String)>, ok: &str) {
        let Some(name) = self.item(root).map(|i| i.name.clone()) else { return };
        let dir = self.lib_dir.clone();
        let ok = ok.to_string();
        self.jobs.spawn(format!("Saving {name}"), false, move |_| {
            let result = Library::open(&dir).map_err(|e| e.to_string()).and_then(|lib| {
                lib.edit(&name, &changes, &Host::this()).map(|_| ()).map_err(|e| e.to_string())
            });
            Done::Changed { ok, result }
        });
    }

    fn pick(&mut self, pick: Pick) {
        let start = self.lib_dir.clone();
        self.jobs.spawn("Choosing a file", false, move |_| {
            let dialog = rfd::FileDialog::new().set_directory(&start);
            let path = match &pick {
                Pick::Wizard(wizard::PathField::Iso) | Pick::AttachIso(_) => dialog
                    .set_title("Choose an ISO image")
                    .add_filter("ISO images", &["iso", "ISO"])
                    .add_filter("All files", &["*"])
                    .pick_file(),
                Pick::Wizard(wizard::PathField::Location) | Pick::LibraryFolder => {
                    dialog.set_title("Choose a folder").pick_folder()
                }
                Pick::OpenVm => dialog.set_title("Open a VM folder (NAME.vessel)").pick_folder(),
                Pick::Wizard(_) => dialog.set_title("Choose a file").pick_file(),
            };
            Done::Picked { pick, path }
        });
    }

    fn picked(&mut self, pick: Pick, path: Option<PathBuf>) {
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
            Pick::OpenVm => {
                let dir = self.lib_dir.clone();
                self.jobs.spawn("Opening a VM", false, move |_| {
                    let result = Library::open(&dir)
                        .map_err(|e| e.to_string())
                        .and_then(|lib| lib.register(&path).map(|_| ()).map_err(|e| e.to_string()));
                    Done::Changed { ok: "The VM is in the library".into(), result }
                });
            }
            Pick::LibraryFolder => {
                if let Some(d) = &mut self.prefs_draft {
                    d.library = Some(path);
                }
            }
        }
    }

    /// An ISO dropped (or chosen) for `target` (a VM), or for the library (None).
    fn drop_iso_on(&mut self, target: Option<PathBuf>, iso: PathBuf) {
        match target {
            None => self.open_wizard(Some(iso)),
            Some(root) if self.running.contains_key(&root) => {
                self.inspect(iso, IsoPurpose::Swap(root))
            }
            Some(root) => self.inspect(iso, IsoPurpose::Attach(root)),
        }
    }

    fn open_settings(&mut self, root: &Path) {
        let Some(VmItem { kind: ItemKind::Ok { config, .. }, name, .. }) = self.item(root) else {
            return;
        };
        let (follow_window, width, height) = match config.display.value {
            DisplayConfig::FollowWindow => (true, 1024, 768),
            DisplayConfig::Fixed { width, height } => (false, width, height),
        };
        self.settings = Some(SettingsDraft {
            root: root.to_path_buf(),
            name: name.clone(),
            vcpus: config.vcpus,
            memory_mib: config.memory_mib,
            notes: config.notes.clone(),
            iso: config.cdrom.iso.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
            follow_window,
            width,
            height,
            host_access: match &config.network.value {
                vm_library::config::Network::Nat { host_access, .. } => Some(*host_access),
                vm_library::config::Network::None => None,
            },
        });
    }

    fn save_prefs(&mut self) {
        if let Err(e) = self.prefs.save(&self.prefs_path) {
            self.toasts.error("Preferences were not saved", Some(e.to_string()));
        }
    }

    fn make_demo(&mut self) {
        let dir = self.lib_dir.clone();
        let taken: Vec<String> = self.items.iter().map(|i| i.name.clone()).collect();
        self.jobs.spawn("Building the demo VM", true, move |progress| {
            Done::Demo(demo::make(&dir, &taken, progress))
        });
    }

    // --- input routing (before egui sees the events) ---

    /// Gives keyboard events to the console or serial view that has the keyboard, so that
    /// egui's own shortcuts (Ctrl+Q, zoom, Tab focus moves, clipboard) do not fire.
    pub fn route_input(&mut self, raw: &mut egui::RawInput) {
        let window_lost_focus =
            raw.events.iter().any(|e| matches!(e, egui::Event::WindowFocused(false)));
        // Ctrl+Alt+Enter: full screen on and off, whoever has the keyboard (VMware's key).
        let before = raw.events.len();
        raw.events.retain(|e| {
            !matches!(e, egui::Event::Key { key: Key::Enter, pressed: true, modifiers, .. } if modifiers.ctrl && modifiers.alt)
        });
        if raw.events.len() != before {
            raw.events.retain(|e| !matches!(e, egui::Event::Key { key: Key::Enter, .. }));
            self.act(Act::ToggleFullscreen);
        }
        if let Some(root) = self.keyboard.clone() {
            let Some(r) = self.running.get_mut(&root) else { return };
            if let Some(input) = r.session.input.clone() {
                let was = self.keys.modifiers();
                let keys = self.keys.translate(&mut raw.events);
                console::send_keys(&input, &keys);
                let now = self.keys.modifiers();
                let r = self.running.get_mut(&root).expect("checked above");
                if r.grabbed && now.ctrl && now.alt && !(was.ctrl && was.alt) {
                    // Ctrl+Alt: the pointer and keyboard go back to the host.
                    self.release_grab(&root);
                    self.release_keyboard();
                }
            }
        } else if let Some(root) = self.serial_focus.clone() {
            let bytes = serial_bytes(&mut raw.events);
            if !bytes.is_empty() {
                self.command(&root, Command::Serial(bytes));
            }
        }
        if window_lost_focus {
            self.release_keyboard();
        }
    }

    fn release_keyboard(&mut self) {
        if let Some(root) = self.keyboard.take() {
            if let Some(input) = self.running.get(&root).and_then(|r| r.session.input.as_ref()) {
                input.release_all_keys();
            }
            self.release_grab(&root);
            self.ctx.memory_mut(|m| m.surrender_focus(console_id(&root)));
        }
        self.keys.reset();
    }

    fn release_grab(&mut self, root: &Path) {
        if let Some(r) = self.running.get_mut(root)
            && r.grabbed
        {
            r.grabbed = false;
            self.ctx.send_viewport_cmd(egui::ViewportCommand::CursorGrab(egui::CursorGrab::None));
            self.ctx.send_viewport_cmd(egui::ViewportCommand::CursorVisible(true));
        }
    }

    // --- drawing ---

    fn shortcuts(&mut self, ctx: &egui::Context) -> Vec<Act> {
        let mut acts = Vec::new();
        // Not while the guest has the keyboard, a text field in the wizard does, or the
        // close dialog is up.
        let typing = self.wizard.is_some() && ctx.memory(|m| m.focused().is_some());
        if self.keyboard.is_some() || typing || self.closing != Closing::No {
            return acts;
        }
        let sel = self.selected.clone();
        ctx.input_mut(|i| {
            let mut on = |sc: &KeyboardShortcut, act: Act| {
                if i.consume_shortcut(sc) {
                    acts.push(act);
                }
            };
            on(&SC_NEW, Act::NewVm);
            on(&SC_OPEN, Act::OpenVm);
            on(&SC_PREFS, Act::Preferences);
            on(&SC_QUIT, Act::Quit);
            on(&SC_FIT, Act::Scale(Scale::Fit));
            on(&SC_ACTUAL, Act::Scale(Scale::Actual));
            on(&SC_FULLSCREEN, Act::ToggleFullscreen);
            if let Some(root) = sel {
                // Longer combinations first: Ctrl+Shift+E is not Ctrl+E.
                on(&SC_POWER_OFF, Act::PowerOff(root.clone()));
                on(&SC_RESET, Act::Reset(root.clone()));
                on(&SC_PAUSE, Act::PauseResume(root.clone()));
                on(&SC_POWER_ON, Act::PowerOn(root.clone()));
                on(&SC_SHUT_DOWN, Act::ShutDown(root.clone()));
                on(&SC_SETTINGS, Act::Settings(root));
            }
        });
        acts
    }

    fn menu_bar(&mut self, ui: &mut egui::Ui, acts: &mut Vec<Act>) {
        let sel = self.selected.clone();
        let running = sel.as_ref().is_some_and(|r| self.running.contains_key(r));
        let ctx = ui.ctx().clone();
        let item = |ui: &mut egui::Ui,
                    label: &str,
                    sc: Option<&KeyboardShortcut>,
                    enabled: bool|
         -> bool {
            let mut b = egui::Button::new(label);
            if let Some(sc) = sc {
                b = b.shortcut_text(ctx.format_shortcut(sc));
            }
            ui.add_enabled(enabled, b).clicked()
        };
        egui::MenuBar::new().ui(ui, |ui| {
            ui.menu_button("File", |ui| {
                if item(ui, "New VM…", Some(&SC_NEW), true) {
                    acts.push(Act::NewVm);
                }
                if item(ui, "Open VM…", Some(&SC_OPEN), true) {
                    acts.push(Act::OpenVm);
                }
                ui.separator();
                if item(ui, "Preferences…", Some(&SC_PREFS), true) {
                    acts.push(Act::Preferences);
                }
                ui.separator();
                if item(ui, "Quit", Some(&SC_QUIT), true) {
                    acts.push(Act::Quit);
                }
            });
            ui.menu_button("VM", |ui| {
                let has = sel.is_some();
                let root = sel.clone().unwrap_or_default();
                if item(ui, "Power On", Some(&SC_POWER_ON), has && !running) {
                    acts.push(Act::PowerOn(root.clone()));
                }
                if item(ui, "Shut Down (ACPI)", Some(&SC_SHUT_DOWN), running) {
                    acts.push(Act::ShutDown(root.clone()));
                }
                if item(ui, "Power Off", Some(&SC_POWER_OFF), running) {
                    acts.push(Act::PowerOff(root.clone()));
                }
                if item(ui, "Reset", Some(&SC_RESET), running) {
                    acts.push(Act::Reset(root.clone()));
                }
                if item(ui, "Pause / Resume", Some(&SC_PAUSE), running) {
                    acts.push(Act::PauseResume(root.clone()));
                }
                ui.add_enabled_ui(running, |ui| {
                    ui.menu_button("Send Keys", |ui| {
                        for (label, keys) in COMBOS {
                            if ui.button(*label).clicked() {
                                acts.push(Act::SendKeys(root.clone(), keys));
                            }
                        }
                    });
                });
                let relative =
                    sel.as_ref().and_then(|r| self.running.get(r)).is_some_and(|r| r.relative);
                if ui
                    .add_enabled(
                        running,
                        egui::Button::selectable(relative, "Relative Mouse (grab)"),
                    )
                    .clicked()
                {
                    acts.push(Act::ToggleRelative(root.clone()));
                }
                ui.add_enabled_ui(has, |ui| {
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
                ui.separator();
                if item(ui, "Settings…", Some(&SC_SETTINGS), has && !running) {
                    acts.push(Act::Settings(root));
                }
            });
            ui.menu_button("View", |ui| {
                if ui
                    .add(
                        egui::Button::selectable(self.scale == Scale::Fit, "Fit Window")
                            .shortcut_text(ctx.format_shortcut(&SC_FIT)),
                    )
                    .clicked()
                {
                    acts.push(Act::Scale(Scale::Fit));
                }
                if ui.add(egui::Button::selectable(self.prefs.autofit, "Autofit Guest")).clicked() {
                    acts.push(Act::ToggleAutofit);
                }
                if ui
                    .add(
                        egui::Button::selectable(self.scale == Scale::Actual, "Actual Size")
                            .shortcut_text(ctx.format_shortcut(&SC_ACTUAL)),
                    )
                    .clicked()
                {
                    acts.push(Act::Scale(Scale::Actual));
                }
                if ui
                    .add(egui::Button::selectable(self.fullscreen, "Full Screen").shortcut_text(
                        format!(
                            "{} / {}",
                            ctx.format_shortcut(&SC_FULLSCREEN),
                            ctx.format_shortcut(&SC_FULLSCREEN_HOST)
                        ),
                    ))
                    .clicked()
                {
                    acts.push(Act::ToggleFullscreen);
                }
                ui.separator();
                for (page, label) in [
                    (Page::Summary, "Summary"),
                    (Page::Console, "Console"),
                    (Page::Serial, "Serial Console"),
                ] {
                    if ui.add(egui::Button::selectable(self.page == page, label)).clicked() {
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
    }

    fn toolbar(&mut self, ui: &mut egui::Ui, acts: &mut Vec<Act>) {
        ui.horizontal(|ui| {
            if ui.button("New VM").on_hover_text("Create a VM (Ctrl+N)").clicked() {
                acts.push(Act::NewVm);
            }
            ui.separator();
            let Some(root) = self.selected.clone() else { return };
            let phase = self.running.get(&root).map(|r| r.session.phase.clone());
            let off = phase.is_none();
            let accessible = self
                .item(&root)
                .is_some_and(|i| matches!(i.kind, ItemKind::Ok { elsewhere: None, .. }));
            if ui.add_enabled(off && accessible, egui::Button::new("Power On")).clicked() {
                acts.push(Act::PowerOn(root.clone()));
            }
            if ui
                .add_enabled(!off, egui::Button::new("Shut Down"))
                .on_hover_text("Press the ACPI power button")
                .clicked()
            {
                acts.push(Act::ShutDown(root.clone()));
            }
            if ui.add_enabled(!off, egui::Button::new("Power Off")).clicked() {
                acts.push(Act::PowerOff(root.clone()));
            }
            let paused = phase == Some(Phase::Paused);
            if ui
                .add_enabled(!off, egui::Button::new(if paused { "Resume" } else { "Pause" }))
                .clicked()
            {
                acts.push(Act::PauseResume(root.clone()));
            }
            if ui.add_enabled(!off, egui::Button::new("Reset")).clicked() {
                acts.push(Act::Reset(root.clone()));
            }
            ui.separator();
            for (page, label) in
                [(Page::Summary, "Summary"), (Page::Console, "Console"), (Page::Serial, "Serial")]
            {
                if ui.add(egui::Button::selectable(self.page == page, label)).clicked() {
                    acts.push(Act::Page(page));
                }
            }
        });
    }

    fn sidebar(&mut self, ui: &mut egui::Ui, acts: &mut Vec<Act>) {
        ui.heading("Library");
        ui.add_space(4.0);
        let ctx = ui.ctx().clone();
        // Thumbnails of guests not in view: twice a second is plenty.
        for (root, r) in &mut self.running {
            let shown = self.selected.as_ref() == Some(root) && self.page == Page::Console;
            if !shown
                && let Some(display) = &r.session.display
                && r.thumb_at.is_none_or(|t| t.elapsed() > Duration::from_millis(500))
            {
                r.screen.update(&ctx, display, Duration::ZERO);
                r.thumb_at = Some(Instant::now());
            }
        }
        egui::ScrollArea::vertical().auto_shrink([false, false]).show(ui, |ui| {
            let items = self.items.clone();
            for item in &items {
                let state = self.state_of(item);
                let selected = self.selected.as_ref() == Some(&item.root);
                ui.horizontal(|ui| {
                    let thumb = Vec2::new(64.0, 48.0);
                    match self
                        .running
                        .get(&item.root)
                        .and_then(|r| r.screen.texture().map(|t| (t.id(), r.screen.size())))
                    {
                        Some((id, size)) => {
                            let rect = console::place(
                                egui::Rect::from_min_size(egui::Pos2::ZERO, thumb),
                                size,
                                Scale::Fit,
                                1.0,
                            );
                            ui.add(
                                egui::Image::new((id, rect.size()))
                                    .alt_text(format!("{} screen", item.name)),
                            );
                        }
                        None => {
                            let (rect, _) = ui.allocate_exact_size(thumb, Sense::hover());
                            ui.painter().rect_filled(rect, 4.0, ui.visuals().extreme_bg_color);
                            let screen =
                                egui::Rect::from_center_size(rect.center(), Vec2::new(28.0, 20.0));
                            ui.painter().rect_stroke(
                                screen,
                                2.0,
                                egui::Stroke::new(1.5, ui.visuals().weak_text_color()),
                                egui::StrokeKind::Inside,
                            );
                        }
                    }
                    ui.vertical(|ui| {
                        let name = egui::Button::selectable(selected, &item.name)
                            .wrap_mode(egui::TextWrapMode::Truncate);
                        if ui.add(name).clicked() {
                            self.selected = Some(item.root.clone());
                            if !self.running.contains_key(&item.root) && self.page == Page::Console
                            {
                                self.page = Page::Summary;
                            }
                        }
                        ui.weak(state);
                    });
                });
                ui.add_space(2.0);
            }
            if self.items.is_empty() {
                ui.weak("No VMs yet.");
                if ui.button("New VM…").clicked() {
                    acts.push(Act::NewVm);
                }
            }
        });
    }

    fn central(&mut self, ui: &mut egui::Ui, acts: &mut Vec<Act>) {
        let Some(root) = self.selected.clone() else {
            self.welcome(ui, acts);
            return;
        };
        let Some(item) = self.item(&root).cloned() else {
            if self.running.contains_key(&root) {
                self.console_page(ui, &root, None);
            } else {
                self.welcome(ui, acts);
            }
            return;
        };
        match self.page {
            Page::Console if self.running.contains_key(&root) => {
                self.console_page(ui, &root, Some(&item))
            }
            Page::Serial => self.serial_page(ui, &root),
            _ => self.summary_page(ui, &item, acts),
        }
    }

    fn welcome(&mut self, ui: &mut egui::Ui, acts: &mut Vec<Act>) {
        ui.vertical_centered(|ui| {
            ui.add_space(ui.available_height() / 4.0);
            ui.heading("Welcome to Vessel");
            ui.label("Create a VM, drop an installer ISO on this window, power it on.");
            ui.add_space(12.0);
            if ui.button("New VM…").clicked() {
                acts.push(Act::NewVm);
            }
            if self.items.is_empty() {
                ui.add_space(8.0);
                ui.label("Or try a small Linux guest first:");
                let building = self.jobs.visible().any(|j| j.title.contains("demo"));
                if ui.add_enabled(!building, egui::Button::new("Create the demo VM")).clicked() {
                    acts.push(Act::Demo);
                }
                ui.weak("Built from Debian packages on first use (a minute or so).");
            }
            ui.add_space(8.0);
            ui.weak(format!("Library: {}", self.lib_dir.display()));
        });
    }

    fn summary_page(&mut self, ui: &mut egui::Ui, item: &VmItem, acts: &mut Vec<Act>) {
        ui.heading(&item.name);
        let (config, elsewhere) = match &item.kind {
            ItemKind::Inaccessible(why) => {
                ui.label("Inaccessible");
                wizard::problem_label(ui, why);
                ui.weak(format!("Folder: {}", item.root.display()));
                ui.weak("Fix or restore its vessel.toml (a backup is kept as vessel.toml.bak), or remove it from the library.");
                return;
            }
            ItemKind::Ok { config, elsewhere } => (config, elsewhere),
        };
        let running = self.running.contains_key(&item.root);
        ui.label(self.state_of(item));
        if let Some(ending) = self.endings.get(&item.root) {
            let (Ending::Crashed(why) | Ending::Failed(why)) = ending else {
                unreachable!("only problems are kept")
            };
            wizard::problem_label(ui, why);
            if ui.button("Restart").clicked() {
                acts.push(Act::PowerOn(item.root.clone()));
            }
        }
        ui.add_space(8.0);
        if !running && elsewhere.is_none() {
            let power = egui::Button::new(egui::RichText::new("Power On").size(22.0))
                .min_size(Vec2::new(200.0, 48.0));
            if ui.add(power).clicked() {
                acts.push(Act::PowerOn(item.root.clone()));
            }
            ui.add_space(8.0);
        }
        egui::Grid::new("summary-hardware").num_columns(2).striped(true).show(ui, |ui| {
            let boot = match &config.boot.value {
                Boot::Direct { kernel, .. } => format!("Linux kernel {}", kernel.display()),
                Boot::Cdrom => "the CD (its Linux kernel, directly)".into(),
                Boot::Bios => "BIOS".into(),
                Boot::Uefi => "UEFI".into(),
            };
            let disks = if config.disks.is_empty() {
                "none".to_string()
            } else {
                config
                    .disks
                    .iter()
                    .map(|d| format!("{} ({} GiB)", d.file.display(), d.size_bytes >> 30))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let display = match config.display.value {
                DisplayConfig::FollowWindow => "follows the window".to_string(),
                DisplayConfig::Fixed { width, height } => format!("{width}x{height}"),
            };
            for (k, v) in [
                ("OS", config.os.clone()),
                ("vCPUs", config.vcpus.to_string()),
                ("Memory", format!("{} MiB", config.memory_mib)),
                ("Disks", disks),
                (
                    "CD",
                    config
                        .cdrom
                        .iso
                        .as_ref()
                        .map(|p| p.display().to_string())
                        .unwrap_or_else(|| "empty".into()),
                ),
                ("Boots from", boot),
                (
                    "Network",
                    if matches!(config.network.value, vm_library::config::Network::None) {
                        "none".into()
                    } else {
                        "NAT".into()
                    },
                ),
                ("Display", display),
                ("Folder", item.root.display().to_string()),
            ] {
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
        if !running && ui.button("Settings…").clicked() {
            acts.push(Act::Settings(item.root.clone()));
        }
    }

    fn console_page(&mut self, ui: &mut egui::Ui, root: &Path, item: Option<&VmItem>) {
        let ctx = ui.ctx().clone();
        let ppp = ctx.pixels_per_point();
        let area = ui.available_rect_before_wrap();
        let id = console_id(root);
        let response = ui.interact(area, id, Sense::click_and_drag());
        ui.painter().rect_filled(area, 0.0, egui::Color32::BLACK);
        let follow = item.is_none_or(|i| matches!(&i.kind, ItemKind::Ok { config, .. } if config.display.value == DisplayConfig::FollowWindow));
        let Some(r) = self.running.get_mut(root) else { return };
        let Some(display) = r.session.display.clone() else {
            ui.put(
                area,
                egui::Label::new(
                    egui::RichText::new(phase_text(&r.session.phase))
                        .color(egui::Color32::LIGHT_GRAY),
                ),
            );
            return;
        };
        // Autofit: the guest's display follows the console's size in screen pixels.
        if self.prefs.autofit && follow && self.scale == Scale::Fit {
            let want = ((area.width() * ppp).round() as u32, (area.height() * ppp).round() as u32);
            if r.requested != Some(want) && want.0 >= 64 && want.1 >= 64 {
                display.request_resize(want.0, want.1);
                r.requested = Some(want);
            }
        }
        let started = Instant::now();
        r.screen.update(&ctx, &display, Duration::ZERO);
        self.frame_stats.upload_time += started.elapsed();
        self.frame_stats.rows_uploaded =
            self.running.values().map(|r| r.screen.rows_uploaded).sum();
        let r = self.running.get_mut(root).expect("present");
        let Some(texture) = r.screen.texture() else {
            let [w, h] = r.screen.size();
            let mut text = if w > 0 {
                format!("The guest's screen, {w}x{h}, is larger than this graphics card can show")
            } else {
                "The guest shows nothing yet".to_string()
            };
            if w == 0
                && r.session.running_for().is_some_and(|t| t > Duration::from_secs(10))
                && let Some(hint) = session::host_hint()
            {
                text = format!("The guest shows nothing yet.\n\n{hint}");
            }
            let label = egui::RichText::new(text).color(egui::Color32::LIGHT_GRAY);
            ui.put(area.shrink(24.0), egui::Label::new(label).wrap());
            return;
        };
        let size = r.screen.size();
        let rect = match self.scale {
            Scale::Fit => console::place(area, size, Scale::Fit, ppp),
            Scale::Actual => {
                // Larger than the console: the pointer at an edge scrolls the screen.
                if let Some(pointer) = response.hover_pos() {
                    let towards = console::edge_scroll(pointer, area, 24.0);
                    if towards != Vec2::ZERO {
                        r.pan += towards * 16.0;
                        ctx.request_repaint();
                    }
                }
                console::place_panned(area, size, ppp, &mut r.pan)
            }
        };
        ui.painter().image(
            texture.id(),
            rect,
            egui::Rect::from_min_max(egui::pos2(0.0, 0.0), egui::pos2(1.0, 1.0)),
            egui::Color32::WHITE,
        );
        response
            .widget_info(|| egui::WidgetInfo::labeled(egui::Role::Canvas, true, "Guest console"));

        let Some(input) = r.session.input.clone() else { return };
        if response.clicked() || response.drag_started() || response.secondary_clicked() {
            response.request_focus();
        }
        if response.has_focus() {
            if self.keyboard.as_deref() != Some(root) {
                self.keyboard = Some(root.to_path_buf());
                // Modifiers already held stay the host's: the guest gets their releases
                // only if it saw them pressed.
                self.keys = KeyTranslator::with_modifiers(ctx.input(|i| i.modifiers));
            }
        } else if self.keyboard.as_deref() == Some(root) {
            self.release_keyboard();
        }
        let r = self.running.get_mut(root).expect("present");
        if r.relative && !r.grabbed && response.clicked() {
            r.grabbed = true;
            ctx.send_viewport_cmd(egui::ViewportCommand::CursorGrab(egui::CursorGrab::Locked));
            ctx.send_viewport_cmd(egui::ViewportCommand::CursorVisible(false));
        }
        let events = ctx.input(|i| i.events.clone());
        for event in events {
            match event {
                egui::Event::PointerMoved(pos)
                    if !r.grabbed && (rect.contains(pos) || !r.held.is_empty()) =>
                {
                    let (x, y) = console::to_guest(pos, rect, size);
                    input.pointer_abs(x, y);
                }
                egui::Event::MouseMoved(delta) if r.grabbed => {
                    let d = delta * ppp;
                    input.pointer_rel(d.x.round() as i32, d.y.round() as i32);
                }
                egui::Event::PointerButton { pos, button, pressed, .. } => {
                    let Some(b) = guest_button(button) else { continue };
                    if pressed && (r.grabbed || rect.contains(pos)) {
                        if !r.grabbed {
                            let (x, y) = console::to_guest(pos, rect, size);
                            input.pointer_abs(x, y);
                        }
                        input.button(b, true);
                        r.held.push(b);
                    } else if !pressed && let Some(i) = r.held.iter().position(|h| *h == b) {
                        r.held.remove(i);
                        input.button(b, false);
                    }
                }
                egui::Event::MouseWheel { unit, delta, .. } if r.grabbed || response.hovered() => {
                    let (dx, dy) = r.wheel.add(unit, delta);
                    input.wheel(dx, dy);
                }
                _ => {}
            }
        }
        // The guest's cursor as the pointer (absolute mode).
        if !r.grabbed
            && response.hovered()
            && let Some((tex, csize, hot)) = r.screen.cursor(&ctx, &display)
            && let Some(pos) = ctx.pointer_hover_pos()
        {
            {
                let scale = rect.width() / size[0].max(1) as f32;
                let min = pos - hot * scale;
                ui.painter().with_clip_rect(area).image(
                    tex,
                    egui::Rect::from_min_size(min, Vec2::from(csize) * scale),
                    egui::Rect::from_min_max(egui::pos2(0.0, 0.0), egui::pos2(1.0, 1.0)),
                    egui::Color32::WHITE,
                );
                ctx.set_cursor_icon(egui::CursorIcon::None);
            }
        }
    }

    fn serial_page(&mut self, ui: &mut egui::Ui, root: &Path) {
        let Some(r) = self.running.get(root) else {
            ui.label("The serial console shows the guest's COM1 while the VM runs.");
            return;
        };
        let id = egui::Id::unique(("serial", root));
        // The last 64 KiB: laid out every frame while the guest writes, more would make
        // the window slow.
        let serial = &r.session.serial;
        let mut from = serial.len().saturating_sub(64 * 1024);
        while !serial.is_char_boundary(from) {
            from += 1;
        }
        let text = serial[from..].to_string();
        let frame = egui::Frame::new().fill(egui::Color32::from_gray(16)).inner_margin(6.0);
        let response = frame
            .show(ui, |ui| {
                egui::ScrollArea::vertical()
                    .stick_to_bottom(true)
                    .auto_shrink([false, false])
                    .max_height(ui.available_height() - 40.0)
                    .show(ui, |ui| {
                        ui.add(
                            egui::Label::new(
                                egui::RichText::new(text)
                                    .monospace()
                                    .color(egui::Color32::LIGHT_GRAY),
                            )
                            .wrap(),
                        );
                    });
            })
            .response;
        let response = ui.interact(response.rect, id, Sense::click());
        response.widget_info(|| {
            egui::WidgetInfo::labeled(egui::Role::Terminal, true, "Serial console")
        });
        if response.clicked() {
            response.request_focus();
        }
        self.serial_focus = response.has_focus().then(|| root.to_path_buf());
        ui.horizontal(|ui| {
            ui.weak(if response.has_focus() {
                "Typing goes to the guest's serial port."
            } else {
                "Click the text to type into the serial port, or send a line:"
            });
            let label = ui.label("Line");
            let edit = ui
                .add(egui::TextEdit::singleline(&mut self.serial_line).desired_width(240.0))
                .labelled_by(label.id);
            if (edit.lost_focus() && ui.input(|i| i.key_pressed(Key::Enter)))
                || ui.button("Send").clicked()
            {
                let mut line = std::mem::take(&mut self.serial_line).into_bytes();
                line.push(b'\n');
                self.command(root, Command::Serial(line));
            }
        });
    }

    fn status_bar(&mut self, ui: &mut egui::Ui) {
        ui.horizontal(|ui| {
            let Some(root) = self.selected.clone() else {
                ui.label(format!("{} VMs", self.items.len()));
                return;
            };
            let state = self.item(&root).map(|i| self.state_of(i)).unwrap_or_default();
            ui.label(state);
            if let Some(r) = self.running.get(&root) {
                ui.separator();
                let cpu: Vec<[f64; 2]> =
                    r.session.cpu.iter().enumerate().map(|(i, v)| [i as f64, *v]).collect();
                let now = r.session.cpu.back().copied().unwrap_or(0.0);
                ui.label(format!("CPU {now:.0}%"));
                egui_plot::Plot::new(("cpu", &root))
                    .height(18.0)
                    .width(90.0)
                    .show_axes(false)
                    .show_grid(false)
                    .allow_drag(false)
                    .allow_zoom(false)
                    .allow_scroll(false)
                    .allow_boxed_zoom(false)
                    .show_x(false)
                    .show_y(false)
                    .include_y(0.0)
                    .include_y(100.0 * f64::from(r.session.vcpus.max(1)))
                    .include_x(0.0)
                    .include_x(session::HISTORY as f64)
                    .show(ui, |plot| plot.line(egui_plot::Line::new("vCPU", cpu)));
                ui.label(format!(
                    "{} vCPU · memory {} of {} MiB",
                    r.session.vcpus,
                    r.session.memory_resident >> 20,
                    r.session.memory_mib
                ));
                ui.separator();
                let led = |on: bool| if on { "active" } else { "idle" };
                ui.label(format!("Disk {}", led(r.session.disk_rate > 0)))
                    .on_hover_text(format!("{} wake-ups/s", r.session.disk_rate));
                ui.label(format!("Net {}", led(r.session.net_rate > 0)))
                    .on_hover_text(format!("{} wake-ups/s", r.session.net_rate));
                ui.separator();
                let hint = if r.grabbed {
                    "Pointer grabbed: press Ctrl+Alt to release"
                } else if self.keyboard.as_deref() == Some(root.as_path()) {
                    "The guest has the keyboard: click outside the console to release it"
                } else if self.page == Page::Console {
                    "Click in the console to type into the guest"
                } else {
                    ""
                };
                ui.weak(hint);
            }
            for job in self.jobs.visible() {
                ui.separator();
                ui.spinner();
                let p = job.progress.get();
                ui.label(if p.is_empty() {
                    job.title.clone()
                } else {
                    format!("{}: {p}", job.title)
                });
            }
        });
    }

    fn drag_and_drop(&mut self, ctx: &egui::Context) {
        let (hovered, dropped, pointer) = ctx.input(|i| {
            (i.raw.hovered_files.clone(), i.raw.dropped_files.clone(), i.pointer.hover_pos())
        });
        let over_library = pointer.is_some_and(|p| self.sidebar_rect.contains(p));
        let target =
            if over_library || self.selected.is_none() { None } else { self.selected.clone() };
        if !hovered.is_empty() {
            let named: Vec<&Path> = hovered.iter().filter_map(|f| f.path.as_deref()).collect();
            let not_iso = named
                .iter()
                .find(|p| !p.extension().is_some_and(|e| e.eq_ignore_ascii_case("iso")));
            let what = match (&target, not_iso) {
                (_, Some(p)) => format!(
                    "{} does not look like an ISO image; Vessel will check it, and change \
                     nothing if it is not one",
                    file_name(p)
                ),
                (None, None) => "Drop an ISO to create a VM from it".to_string(),
                (Some(root), None) => {
                    let name = self.item(root).map(|i| i.name.clone()).unwrap_or_default();
                    if self.running.contains_key(root) {
                        format!(
                            "Drop an ISO to put it in {name}'s CD drive (the guest sees a \
                             disc change)"
                        )
                    } else {
                        format!("Drop an ISO to attach it as {name}'s CD")
                    }
                }
            };
            let screen = ctx.content_rect();
            egui::Area::new(egui::Id::unique("drop-overlay"))
                .order(egui::Order::Foreground)
                .fixed_pos(screen.min)
                .interactable(false)
                .show(ctx, |ui| {
                    ui.painter().rect_filled(screen, 0.0, egui::Color32::from_black_alpha(180));
                    ui.scope_builder(egui::UiBuilder::new().max_rect(screen), |ui| {
                        ui.centered_and_justified(|ui| {
                            ui.label(
                                egui::RichText::new(what).size(24.0).color(egui::Color32::WHITE),
                            );
                        });
                    });
                });
        }
        let mut dropped = dropped.into_iter();
        if let Some(file) = dropped.next() {
            self.drop_iso_on(target, file.path().to_path_buf());
        }
        if dropped.next().is_some() {
            self.toasts.error("Drop one ISO at a time; Vessel took the first", None);
        }
    }

    fn dialogs(&mut self, ctx: &egui::Context, acts: &mut Vec<Act>) {
        if let Some(w) = &mut self.wizard {
            match w.ui(ctx) {
                wizard::Action::None => {}
                wizard::Action::Cancel => self.wizard = None,
                wizard::Action::Browse(field) => self.pick(Pick::Wizard(field)),
                wizard::Action::Inspect(iso) => self.inspect(iso, IsoPurpose::Wizard),
                wizard::Action::Finish { args, power_on } => {
                    let dir = self.lib_dir.clone();
                    self.jobs.spawn(format!("Creating {}", args.name), true, move |_| {
                        let result = Library::open(&dir)
                            .map_err(|e| e.to_string())
                            .and_then(|lib| {
                                crate::vms::create_bundle(&lib, &args).map_err(|e| format!("{e:#}"))
                            })
                            .map(|(bundle, _)| bundle.root().to_path_buf());
                        Done::Created { result, power_on }
                    });
                }
            }
        }
        if let Some(draft) = &mut self.prefs_draft {
            let mut keep = true;
            let mut save = false;
            egui::Window::new("Preferences").collapsible(false).resizable(false).show(ctx, |ui| {
                egui::Grid::new("prefs").num_columns(2).show(ui, |ui| {
                    let label = ui.label("Library folder");
                    let mut text =
                        draft.library.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
                    ui.horizontal(|ui| {
                        if ui
                            .add(
                                egui::TextEdit::singleline(&mut text)
                                    .hint_text("default")
                                    .desired_width(260.0),
                            )
                            .labelled_by(label.id)
                            .changed()
                        {
                            draft.library =
                                (!text.trim().is_empty()).then(|| PathBuf::from(text.trim()));
                        }
                        if ui.button("Browse…").clicked() {
                            acts.push(Act::Preferences); // keep the window; the pick fills it
                        }
                    });
                    ui.end_row();
                    ui.label("Renderer");
                    egui::ComboBox::from_id_salt("renderer")
                        .selected_text(draft.renderer.label())
                        .show_ui(ui, |ui| {
                            for r in prefs::Renderer::ALL {
                                ui.selectable_value(&mut draft.renderer, r, r.label());
                            }
                        });
                    ui.end_row();
                    ui.label("Theme");
                    egui::ComboBox::from_id_salt("theme")
                        .selected_text(draft.theme.label())
                        .show_ui(ui, |ui| {
                            for t in prefs::Theme::ALL {
                                ui.selectable_value(&mut draft.theme, t, t.label());
                            }
                        });
                    ui.end_row();
                    ui.label("Guests");
                    ui.checkbox(&mut draft.autofit, "Guest displays follow the window (autofit)");
                    ui.end_row();
                });
                if self.library_override {
                    ui.weak("This run uses the library given with --library / VESSEL_LIBRARY.");
                }
                ui.weak("A new renderer takes effect at the next start.");
                ui.horizontal(|ui| {
                    if ui.button("Save").clicked() {
                        save = true;
                    }
                    if ui.button("Cancel").clicked() {
                        keep = false;
                    }
                });
            });
            if acts.last() == Some(&Act::Preferences) {
                acts.pop();
                self.pick(Pick::LibraryFolder);
            }
            if save {
                let draft = self.prefs_draft.take().expect("open");
                let library_changed = draft.library != self.prefs.library;
                self.prefs = draft;
                ctx.set_theme(self.prefs.theme.egui());
                self.save_prefs();
                if library_changed && !self.library_override {
                    self.lib_dir =
                        self.prefs.library.clone().unwrap_or_else(vm_library::library::default_dir);
                    self.selected = None;
                    self.rescan_now();
                }
            } else if !keep {
                self.prefs_draft = None;
            }
        }
        if let Some(s) = &mut self.settings {
            let mut close = false;
            let mut save = None;
            egui::Window::new(format!("{} settings", s.name))
                .id(egui::Id::unique("vm-settings"))
                .collapsible(false)
                .resizable(false)
                .show(ctx, |ui| {
                    egui::Grid::new("settings").num_columns(2).show(ui, |ui| {
                        let l = ui.label("vCPUs");
                        ui.add(egui::DragValue::new(&mut s.vcpus).range(1..=256)).labelled_by(l.id);
                        ui.end_row();
                        let l = ui.label("Memory (MiB)");
                        ui.add(
                            egui::DragValue::new(&mut s.memory_mib).speed(64).range(64..=1 << 24),
                        )
                        .labelled_by(l.id);
                        ui.end_row();
                        let l = ui.label("CD (ISO)");
                        ui.add(
                            egui::TextEdit::singleline(&mut s.iso)
                                .hint_text("empty")
                                .desired_width(260.0),
                        )
                        .labelled_by(l.id);
                        ui.end_row();
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
                                    "Services listening only on this computer (127.0.0.1) \
                                     answer the guest at its gateway address. Off: the \
                                     guest reaches the internet, not this computer.",
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
                            let display = if s.follow_window {
                                "{ size = \"follow-window\" }".to_string()
                            } else {
                                format!(
                                    "{{ size = \"fixed\", width = {}, height = {} }}",
                                    s.width, s.height
                                )
                            };
                            let mut changes = vec![
                                ("vcpus".to_string(), s.vcpus.to_string()),
                                ("memory_mib".to_string(), s.memory_mib.to_string()),
                                ("notes".to_string(), toml_string(&s.notes)),
                                ("cdrom.iso".to_string(), toml_string(s.iso.trim())),
                                ("display".to_string(), display),
                            ];
                            if let Some(host_access) = s.host_access {
                                changes.push((
                                    "network.host_access".to_string(),
                                    host_access.to_string(),
                                ));
                            }
                            save = Some((s.root.clone(), changes, format!("{} saved", s.name)));
                            close = true;
                        }
                        if ui.button("Cancel").clicked() {
                            close = true;
                        }
                    });
                });
            if let Some((root, changes, ok)) = save {
                self.edit(&root, changes, &ok);
            }
            if close {
                self.settings = None;
            }
        }
        if self.about {
            egui::Window::new("About Vessel")
                .collapsible(false)
                .resizable(false)
                .open(&mut self.about)
                .show(ctx, |ui| {
                    ui.heading(format!("Vessel {}", env!("CARGO_PKG_VERSION")));
                    ui.label("Virtual machines on your Linux desktop, on KVM.");
                    ui.label(format!("Library: {}", self.lib_dir.display()));
                    if let Some(hint) = session::host_hint() {
                        ui.label(hint);
                    }
                });
        }
        if self.closing == Closing::Asking || self.closing == Closing::Waiting {
            let n = self.running.len();
            egui::Modal::new(egui::Id::unique("close-dialog")).show(ctx, |ui| {
                ui.heading("VMs are running");
                if self.closing == Closing::Waiting {
                    ui.horizontal(|ui| {
                        ui.spinner();
                        ui.label(format!("Waiting for {n} VM(s) to stop…"));
                    });
                    if ui.button("Power Off Now").clicked() {
                        for r in self.running.values() {
                            r.session.send(Command::PowerOff);
                        }
                    }
                    return;
                }
                ui.label(format!("{n} VM(s) are running. Closing Vessel stops them."));
                ui.horizontal(|ui| {
                    if ui.button("Shut Down All").clicked() {
                        for r in self.running.values() {
                            r.session.send(Command::ShutDown);
                        }
                        self.closing = Closing::Waiting;
                    }
                    if ui.button("Power Off All").clicked() {
                        for r in self.running.values() {
                            r.session.send(Command::PowerOff);
                        }
                        self.closing = Closing::Waiting;
                    }
                    if ui.button("Cancel").clicked() {
                        self.closing = Closing::No;
                    }
                });
            });
        }
    }
}

fn console_id(root: &Path) -> egui::Id {
    egui::Id::unique(("console", root))
}

fn phase_text(phase: &Phase) -> String {
    match phase {
        Phase::Starting => "Starting…".into(),
        Phase::Running => "Running; waiting for the guest's display".into(),
        Phase::Paused => "Paused".into(),
        Phase::Ended(_) => "Stopped".into(),
    }
}

fn guest_button(button: egui::PointerButton) -> Option<vmm::Button> {
    Some(match button {
        egui::PointerButton::Primary => vmm::Button::Left,
        egui::PointerButton::Secondary => vmm::Button::Right,
        egui::PointerButton::Middle => vmm::Button::Middle,
        egui::PointerButton::Extra1 => vmm::Button::Side,
        egui::PointerButton::Extra2 => vmm::Button::Extra,
    })
}

/// Text as a TOML string value (quoted and escaped), for `Library::edit`.
fn toml_string(text: &str) -> String {
    toml::Value::String(text.to_string()).to_string()
}

fn file_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// Keys typed into the serial view, as the bytes a terminal would send.
fn serial_bytes(events: &mut Vec<egui::Event>) -> Vec<u8> {
    let mut out = Vec::new();
    events.retain(|e| match e {
        egui::Event::Text(t) => {
            out.extend_from_slice(t.as_bytes());
            false
        }
        egui::Event::Key { key, pressed: true, modifiers, .. } => {
            match key {
                Key::Enter => out.push(b'\r'),
                Key::Backspace => out.push(0x7f),
                Key::Tab => out.push(b'\t'),
                Key::Escape => out.push(0x1b),
                Key::ArrowUp => out.extend_from_slice(b"\x1b[A"),
                Key::ArrowDown => out.extend_from_slice(b"\x1b[B"),
                Key::ArrowRight => out.extend_from_slice(b"\x1b[C"),
                Key::ArrowLeft => out.extend_from_slice(b"\x1b[D"),
                k if modifiers.ctrl => {
                    let name = k.name();
                    if name.len() == 1 && name.as_bytes()[0].is_ascii_alphabetic() {
                        out.push(name.as_bytes()[0].to_ascii_uppercase() - b'A' + 1);
                    }
                }
                _ => {}
            }
            false
        }
        egui::Event::Key { .. } => false,
        egui::Event::Copy => {
            out.push(0x03);
            false
        }
        egui::Event::Paste(text) => {
            out.extend_from_slice(text.as_bytes());
            false
        }
        _ => true,
    });
    out
}

impl eframe::App for VesselApp {
    fn raw_input_hook(&mut self, _ctx: &egui::Context, raw_input: &mut egui::RawInput) {
        self.route_input(raw_input);
    }

    /// Also while the window is hidden (every VM's news wakes it): what the VMs' threads
    /// report is taken then too, rather than piling up in their channels.
    fn logic(&mut self, _ctx: &egui::Context, _frame: &mut eframe::Frame) {
        self.poll();
    }

    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        let ctx = ui.ctx().clone();
        self.frame_stats.frames += 1;
        if ctx.input(|i| i.viewport().close_requested()) {
            match self.closing {
                Closing::Go => {}
                _ if self.running.is_empty() => {}
                _ => {
                    ctx.send_viewport_cmd(egui::ViewportCommand::CancelClose);
                    if self.closing == Closing::No {
                        self.closing = Closing::Asking;
                    }
                }
            }
        }
        let mut acts = self.shortcuts(&ctx);
        if !self.fullscreen {
            egui::Panel::top("menu").show(ui, |ui| self.menu_bar(ui, &mut acts));
            egui::Panel::top("toolbar").show(ui, |ui| self.toolbar(ui, &mut acts));
            egui::Panel::bottom("status").show(ui, |ui| self.status_bar(ui));
            let side = egui::Panel::left("library")
                .default_size(230.0)
                .resizable(true)
                .show(ui, |ui| self.sidebar(ui, &mut acts));
            self.sidebar_rect = side.response.rect;
        } else {
            self.sidebar_rect = egui::Rect::NOTHING;
        }
        let panel = if self.page == Page::Console {
            egui::CentralPanel::no_frame()
        } else {
            egui::CentralPanel::default_margins()
        };
        panel.show(ui, |ui| self.central(ui, &mut acts));
        self.drag_and_drop(&ctx);
        self.dialogs(&ctx, &mut acts);
        self.toasts.show(&ctx);
        for act in acts {
            self.act(act);
        }
    }
}
