//! The New VM wizard: install source (an ISO, whose OS sets the defaults; a Linux kernel
//! and initrd; or nothing) → name and location → vCPUs, memory, disk → summary → Finish.
//! Every field says in place what is wrong with it. Looking into an ISO happens off the UI
//! thread: the app runs the inspection and hands the result back with `iso_inspected`.

use std::path::PathBuf;

use vm_library::iso::os::OsGuess;
use vm_library::validate::{Host, MIN_MEMORY_MIB};

use crate::core::create::NewVm;
use crate::core::iso::IsoFacts;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    Source,
    Name,
    Hardware,
    Summary,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Iso,
    Kernel,
    Nothing,
}

/// What is known about the chosen ISO.
#[derive(Clone, Debug, PartialEq)]
pub enum IsoState {
    Unset,
    Inspecting,
    Ok { os: Option<OsGuess>, linux: bool },
    Bad(String),
}

/// Which path field a file dialog fills.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathField {
    Iso,
    Kernel,
    Initrd,
    Location,
}

/// What the wizard wants the app to do.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    None,
    Cancel,
    /// Open a file (or folder) dialog for this field.
    Browse(PathField),
    /// Look into this ISO; answer with `iso_inspected`.
    Inspect(PathBuf),
    /// Create the VM (off the UI thread), then power it on if asked.
    Finish {
        vm: Box<NewVm>,
        power_on: bool,
    },
}

pub struct Wizard {
    pub step: Step,
    pub source: Source,
    pub iso: String,
    pub iso_state: IsoState,
    pub kernel: String,
    pub initrd: String,
    pub cmdline: String,
    pub name: String,
    /// Empty: the library folder.
    pub location: String,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub disk_gib: u64,
    pub power_on: bool,
    /// Boot a Linux ISO's kernel directly instead of through the BIOS.
    pub quick_linux: bool,
    /// Names already in the library.
    taken: Vec<String>,
    host: Host,
    /// Whether the user changed the hardware; if not, a newly detected OS sets it.
    hardware_touched: bool,
    name_touched: bool,
    /// Being created: the form is read-only.
    pub busy: bool,
    /// What the filesystem said of the paths typed so far (asked once per path, not once
    /// a frame).
    fs: FsChecks,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum FsCheck {
    Readable,
    Folder,
}

/// Answers about paths, remembered.
#[derive(Default)]
struct FsChecks(std::cell::RefCell<std::collections::HashMap<(String, FsCheck), Option<String>>>);

impl FsChecks {
    /// None if `path` is fine for `check`, else why not.
    fn check(&self, path: &str, check: FsCheck) -> Option<String> {
        let mut seen = self.0.borrow_mut();
        if seen.len() > 256 {
            seen.clear();
        }
        seen.entry((path.to_string(), check))
            .or_insert_with(|| match check {
                FsCheck::Readable => std::fs::File::open(path).err().map(|e| e.to_string()),
                FsCheck::Folder => {
                    (!std::path::Path::new(path).is_dir()).then(|| "not a folder".to_string())
                }
            })
            .clone()
    }
}

impl Wizard {
    pub fn new(taken: Vec<String>, host: Host) -> Wizard {
        Wizard {
            step: Step::Source,
            source: Source::Iso,
            iso: String::new(),
            iso_state: IsoState::Unset,
            kernel: String::new(),
            initrd: String::new(),
            cmdline: "console=ttyS0".into(),
            name: String::new(),
            location: String::new(),
            vcpus: 1.min(host.cores),
            memory_mib: 1024.min(host.memory_mib),
            disk_gib: 16,
            power_on: true,
            quick_linux: false,
            taken,
            host,
            hardware_touched: false,
            name_touched: false,
            busy: false,
            fs: FsChecks::default(),
        }
    }

    /// A file dialog (or a drop) chose `path` for `field`. Returns the ISO to inspect, if
    /// the ISO changed.
    pub fn set_path(&mut self, field: PathField, path: PathBuf) -> Option<PathBuf> {
        let text = path.display().to_string();
        match field {
            PathField::Iso => {
                self.source = Source::Iso;
                self.iso = text;
                self.iso_state = IsoState::Inspecting;
                return Some(path);
            }
            PathField::Kernel => self.kernel = text,
            PathField::Initrd => self.initrd = text,
            PathField::Location => self.location = text,
        }
        None
    }

    /// The inspection of `iso` finished.
    pub fn iso_inspected(&mut self, iso: &std::path::Path, result: Result<IsoFacts, String>) {
        if std::path::Path::new(self.iso.trim()) != iso {
            return; // an older choice
        }
        self.iso_state = match result {
            Ok(IsoFacts { os, linux }) => {
                if let Some(os) = &os {
                    if !self.hardware_touched {
                        self.vcpus = os.recommended.vcpus.clamp(1, self.host.cores);
                        self.memory_mib = os.recommended.memory_mib;
                        self.disk_gib = os.recommended.disk_gib;
                    }
                    if !self.name_touched || self.name.is_empty() {
                        self.name = free_name(&os.name, &self.taken);
                    }
                }
                IsoState::Ok { os, linux }
            }
            Err(e) => IsoState::Bad(e),
        };
    }

    // --- checks: None when fine, else the reason ---

    pub fn source_problem(&self) -> Option<String> {
        match self.source {
            Source::Iso => match &self.iso_state {
                IsoState::Unset => Some("choose an ISO image, or drop one on the window".into()),
                IsoState::Inspecting => Some("reading the ISO…".into()),
                IsoState::Bad(e) => Some(e.clone()),
                IsoState::Ok { .. } => None,
            },
            Source::Kernel => {
                if self.kernel.trim().is_empty() {
                    return Some("choose the Linux kernel to boot (a bzImage or vmlinux)".into());
                }
                for (what, path) in [("kernel", &self.kernel), ("initrd", &self.initrd)] {
                    if !path.trim().is_empty()
                        && let Some(e) = self.fs.check(path.trim(), FsCheck::Readable)
                    {
                        return Some(format!("the {what} {}: {e}", path.trim()));
                    }
                }
                None
            }
            Source::Nothing => None,
        }
    }

    pub fn name_problem(&self) -> Option<String> {
        if let Err(e) = vm_library::bundle::validate_name(&self.name) {
            return Some(e.to_string());
        }
        if self.taken.iter().any(|t| t.eq_ignore_ascii_case(&self.name)) {
            return Some(format!(
                "the library has a VM called {:?} already; choose another name",
                self.name
            ));
        }
        if !self.location.trim().is_empty()
            && self.fs.check(self.location.trim(), FsCheck::Folder).is_some()
        {
            return Some(format!(
                "{} is not a folder; choose an existing folder or leave it empty for the library",
                self.location.trim()
            ));
        }
        None
    }

    pub fn vcpus_problem(&self) -> Option<String> {
        (self.vcpus == 0 || self.vcpus > self.host.cores).then(|| {
            format!("this computer has {} cores: choose 1 to {}", self.host.cores, self.host.cores)
        })
    }

    pub fn memory_problem(&self) -> Option<String> {
        (self.memory_mib < MIN_MEMORY_MIB || self.memory_mib > self.host.memory_mib).then(|| {
            format!(
                "choose from {MIN_MEMORY_MIB} MiB to this computer's {} MiB",
                self.host.memory_mib
            )
        })
    }

    pub fn disk_problem(&self) -> Option<String> {
        (self.disk_gib > 16384).then(|| "at most 16384 GiB (16 TiB)".to_string())
    }

    fn step_problem(&self, step: Step) -> Option<String> {
        match step {
            Step::Source => self.source_problem(),
            Step::Name => self.name_problem(),
            Step::Hardware => {
                self.vcpus_problem().or(self.memory_problem()).or(self.disk_problem())
            }
            Step::Summary => None,
        }
    }

    /// The VM the form describes.
    pub fn new_vm(&self) -> NewVm {
        let path = |s: &str| (!s.trim().is_empty()).then(|| PathBuf::from(s.trim()));
        let kernel = (self.source == Source::Kernel).then(|| path(&self.kernel)).flatten();
        NewVm {
            vcpus: Some(self.vcpus),
            memory_bytes: Some(self.memory_mib << 20),
            disk_bytes: Some(self.disk_gib << 30),
            initrd: kernel.as_ref().and_then(|_| path(&self.initrd)),
            kernel,
            cmdline: self.cmdline.clone(),
            iso: (self.source == Source::Iso).then(|| path(&self.iso)).flatten(),
            quick_linux: self.source == Source::Iso
                && self.quick_linux
                && matches!(self.iso_state, IsoState::Ok { linux: true, .. }),
            location: path(&self.location),
            ..NewVm::named(self.name.clone())
        }
    }

    pub fn ui(&mut self, ctx: &egui::Context) -> Action {
        let mut action = Action::None;
        let mut open = true;
        egui::Window::new("New VM")
            .id(egui::Id::unique("new-vm-wizard"))
            .collapsible(false)
            .resizable(false)
            .default_width(460.0)
            .anchor(egui::Align2::CENTER_CENTER, [0.0, 0.0])
            .open(&mut open)
            .show(ctx, |ui| {
                ui.add_enabled_ui(!self.busy, |ui| {
                    let steps = [
                        (Step::Source, "1 Install source"),
                        (Step::Name, "2 Name"),
                        (Step::Hardware, "3 Hardware"),
                        (Step::Summary, "4 Summary"),
                    ];
                    ui.horizontal(|ui| {
                        for (step, label) in steps {
                            ui.add_enabled(
                                false,
                                egui::Button::selectable(self.step == step, label),
                            );
                        }
                    });
                    ui.separator();
                    match self.step {
                        Step::Source => self.source_ui(ui, &mut action),
                        Step::Name => self.name_ui(ui, &mut action),
                        Step::Hardware => self.hardware_ui(ui),
                        Step::Summary => self.summary_ui(ui),
                    }
                    ui.separator();
                    ui.horizontal(|ui| {
                        if ui.button("Cancel").clicked() {
                            action = Action::Cancel;
                        }
                        ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                            let problem = self.step_problem(self.step);
                            if self.step == Step::Summary {
                                if ui.button("Finish").clicked() {
                                    self.busy = true;
                                    action = Action::Finish {
                                        vm: Box::new(self.new_vm()),
                                        power_on: self.power_on,
                                    };
                                }
                            } else {
                                let next =
                                    ui.add_enabled(problem.is_none(), egui::Button::new("Next"));
                                if next.clicked() {
                                    self.step = match self.step {
                                        Step::Source => Step::Name,
                                        Step::Name => Step::Hardware,
                                        _ => Step::Summary,
                                    };
                                }
                            }
                            if self.step != Step::Source && ui.button("Back").clicked() {
                                self.step = match self.step {
                                    Step::Summary => Step::Hardware,
                                    Step::Hardware => Step::Name,
                                    _ => Step::Source,
                                };
                            }
                        });
                    });
                });
                if self.busy {
                    ui.horizontal(|ui| {
                        ui.spinner();
                        ui.label("Creating the VM…");
                    });
                }
            });
        if !open {
            action = Action::Cancel;
        }
        action
    }

    fn source_ui(&mut self, ui: &mut egui::Ui, action: &mut Action) {
        ui.label("Where does the guest come from?");
        ui.radio_value(&mut self.source, Source::Iso, "An installer or live ISO image");
        ui.radio_value(&mut self.source, Source::Kernel, "A Linux kernel and initrd");
        ui.radio_value(&mut self.source, Source::Nothing, "No media (install later)");
        ui.add_space(6.0);
        match self.source {
            Source::Iso => {
                if path_row(ui, "ISO image", &mut self.iso) {
                    *action = Action::Browse(PathField::Iso);
                }
                let typed = PathBuf::from(self.iso.trim());
                if ui.input(|i| i.key_pressed(egui::Key::Enter)) && !self.iso.trim().is_empty() {
                    self.iso_state = IsoState::Inspecting;
                    *action = Action::Inspect(typed);
                }
                match &self.iso_state {
                    IsoState::Ok { os: Some(os), linux } => {
                        ui.label(format!(
                            "Detected {}: {} vCPUs, {} MiB, {} GiB disk recommended",
                            os.name,
                            os.recommended.vcpus,
                            os.recommended.memory_mib,
                            os.recommended.disk_gib,
                        ));
                        if *linux {
                            quick_linux_ui(ui, &mut self.quick_linux);
                        }
                    }
                    IsoState::Ok { os: None, linux } => {
                        ui.label(if *linux {
                            "A Linux disc (its OS not recognised)"
                        } else {
                            "The OS on this disc is not recognised; the BIOS boots it"
                        });
                        if *linux {
                            quick_linux_ui(ui, &mut self.quick_linux);
                        }
                    }
                    IsoState::Inspecting => {
                        ui.horizontal(|ui| {
                            ui.spinner();
                            ui.label("Reading the ISO…");
                        });
                    }
                    IsoState::Bad(e) => problem_label(ui, e),
                    IsoState::Unset => {
                        ui.weak("Choose a file, or drop an ISO on the window. Press Enter after typing a path.");
                    }
                }
            }
            Source::Kernel => {
                if path_row(ui, "Kernel", &mut self.kernel) {
                    *action = Action::Browse(PathField::Kernel);
                }
                if path_row(ui, "Initrd (optional)", &mut self.initrd) {
                    *action = Action::Browse(PathField::Initrd);
                }
                ui.horizontal(|ui| {
                    ui.label("Command line");
                    ui.text_edit_singleline(&mut self.cmdline);
                });
                if let Some(p) = self.source_problem() {
                    problem_label(ui, &p);
                }
            }
            Source::Nothing => {
                ui.weak("The VM gets an empty disk and CD drive; attach an ISO later from VM ▸ Removable Devices.");
            }
        }
    }

    fn name_ui(&mut self, ui: &mut egui::Ui, action: &mut Action) {
        ui.horizontal(|ui| {
            let label = ui.label("Name");
            if ui.text_edit_singleline(&mut self.name).labelled_by(label.id).changed() {
                self.name_touched = true;
            }
        });
        if path_row(ui, "Location (empty: the library)", &mut self.location) {
            *action = Action::Browse(PathField::Location);
        }
        if let Some(p) = self.name_problem() {
            problem_label(ui, &p);
        }
    }

    fn hardware_ui(&mut self, ui: &mut egui::Ui) {
        let mut touched = false;
        egui::Grid::new("wizard-hardware").num_columns(2).show(ui, |ui| {
            let label = ui.label("vCPUs");
            touched |= ui
                .add(egui::DragValue::new(&mut self.vcpus).range(0..=256))
                .labelled_by(label.id)
                .changed();
            ui.end_row();
            let label = ui.label("Memory (MiB)");
            touched |= ui
                .add(
                    egui::DragValue::new(&mut self.memory_mib)
                        .speed(64)
                        .range(0..=u64::from(u32::MAX)),
                )
                .labelled_by(label.id)
                .changed();
            ui.end_row();
            let label = ui.label("Disk (GiB, 0: none)");
            touched |= ui
                .add(egui::DragValue::new(&mut self.disk_gib).range(0..=1 << 20))
                .labelled_by(label.id)
                .changed();
            ui.end_row();
        });
        self.hardware_touched |= touched;
        for p in
            [self.vcpus_problem(), self.memory_problem(), self.disk_problem()].into_iter().flatten()
        {
            problem_label(ui, &p);
        }
    }

    fn summary_ui(&mut self, ui: &mut egui::Ui) {
        let source = match self.source {
            Source::Iso if self.new_vm().quick_linux => {
                format!("CD: {} (Quick Linux boot)", self.iso.trim())
            }
            Source::Iso => format!("CD: {} (BIOS: the disk, then the CD)", self.iso.trim()),
            Source::Kernel => format!("Linux kernel {}", self.kernel.trim()),
            Source::Nothing => "no media".into(),
        };
        egui::Grid::new("wizard-summary").num_columns(2).show(ui, |ui| {
            for (k, v) in [
                ("Name", self.name.clone()),
                ("Install source", source),
                (
                    "Location",
                    if self.location.trim().is_empty() {
                        "the library".into()
                    } else {
                        self.location.trim().into()
                    },
                ),
                ("vCPUs", self.vcpus.to_string()),
                ("Memory", format!("{} MiB", self.memory_mib)),
                (
                    "Disk",
                    if self.disk_gib == 0 {
                        "none".into()
                    } else {
                        format!("{} GiB (qcow2, grows as used)", self.disk_gib)
                    },
                ),
            ] {
                ui.label(k);
                ui.label(v);
                ui.end_row();
            }
        });
        ui.checkbox(&mut self.power_on, "Power on after creating");
    }
}

/// The choice a Linux disc offers: its kernel directly, or the BIOS as for any disc.
fn quick_linux_ui(ui: &mut egui::Ui, quick_linux: &mut bool) {
    ui.checkbox(quick_linux, "Quick Linux boot");
    ui.weak(if *quick_linux {
        "Starts the disc's Linux kernel directly, without the BIOS: quicker, and it runs \
         where the CPU has no virtualization extensions. What you install on the disk does \
         not boot this way."
    } else {
        "The BIOS boots the disk, then the CD: the installer installs onto the disk, and \
         the installed system boots after it."
    });
}

/// `base`, or `base 2`, `base 3`, ... whichever no VM in `taken` has (made a valid name:
/// no '/', not too long).
pub fn free_name(base: &str, taken: &[String]) -> String {
    let base: String = base.chars().filter(|c| *c != '/').take(56).collect();
    let base = base.trim().to_string();
    std::iter::once(base.clone())
        .chain((2..).map(|n| format!("{base} {n}")))
        .find(|n| !taken.iter().any(|t| t.eq_ignore_ascii_case(n)))
        .unwrap_or(base)
}

/// A labelled path field with a Browse… button; true if Browse was clicked.
fn path_row(ui: &mut egui::Ui, label: &str, value: &mut String) -> bool {
    ui.horizontal(|ui| {
        let l = ui.label(label);
        ui.add(egui::TextEdit::singleline(value).desired_width(260.0)).labelled_by(l.id);
        ui.button(format!("Browse… ({label})")).clicked()
    })
    .inner
}

pub fn problem_label(ui: &mut egui::Ui, text: &str) {
    ui.colored_label(ui.visuals().error_fg_color, text.to_string());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> Host {
        Host { cores: 4, memory_mib: 8192 }
    }

    #[test]
    fn fields_say_what_is_wrong() {
        let mut w = Wizard::new(vec!["Debian".into()], host());
        assert!(w.source_problem().unwrap().contains("choose an ISO"));
        w.source = Source::Kernel;
        w.kernel = "/nonexistent/vmlinuz".into();
        assert!(w.source_problem().unwrap().contains("/nonexistent/vmlinuz"));
        w.source = Source::Nothing;
        assert_eq!(w.source_problem(), None);
        w.name = "debian".into();
        assert!(w.name_problem().unwrap().contains("already"));
        w.name = " x".into();
        assert!(w.name_problem().unwrap().contains("spaces"));
        w.name = "Mine".into();
        assert_eq!(w.name_problem(), None);
        w.vcpus = 5;
        assert!(w.vcpus_problem().unwrap().contains("1 to 4"));
        w.memory_mib = 9000;
        assert!(w.memory_problem().unwrap().contains("8192"));
    }

    #[test]
    fn a_detected_os_sets_defaults_unless_the_user_chose() {
        let mut w = Wizard::new(vec!["Debian 12".into()], host());
        let iso = w.set_path(PathField::Iso, "/isos/debian.iso".into()).unwrap();
        assert_eq!(w.iso_state, IsoState::Inspecting);
        let os = OsGuess {
            id: "debian12".into(),
            name: "Debian 12".into(),
            recommended: vm_library::iso::os::Resources {
                vcpus: 8,
                memory_mib: 2048,
                disk_gib: 20,
            },
        };
        w.iso_inspected(&iso, Ok(IsoFacts { os: Some(os.clone()), linux: true }));
        assert_eq!((w.vcpus, w.memory_mib, w.disk_gib), (4, 2048, 20), "clamped to the host");
        assert_eq!(w.name, "Debian 12 2", "a free name");
        assert_eq!(w.source_problem(), None);
        let vm = w.new_vm();
        assert_eq!(vm.iso, Some(PathBuf::from("/isos/debian.iso")));
        assert_eq!(
            (vm.vcpus, vm.memory_bytes, vm.disk_bytes),
            (Some(4), Some(2048 << 20), Some(20 << 30))
        );
        // A stale answer for another file changes nothing.
        w.iso_inspected(std::path::Path::new("/other.iso"), Err("bad".into()));
        assert!(matches!(w.iso_state, IsoState::Ok { .. }));
        w.iso_inspected(&iso, Err("not an ISO 9660 image".into()));
        assert_eq!(w.source_problem().as_deref(), Some("not an ISO 9660 image"));
    }
}
