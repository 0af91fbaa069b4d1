//! Work the UI hands to background threads (reading the library, looking into an ISO,
//! creating a VM, saving a change, file dialogs, building the demo guest), with progress
//! the UI can show; each comes back as a `Done`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, channel};

use vm_library::config::VmConfig;
use vm_library::iso::IsoError;
use vm_library::library::{Library, LibraryError};
use vm_library::validate::Host;

pub use super::progress::Progress;
use super::wizard::PathField;
use crate::core::create::{CreateError, NewVm, create_bundle};
use crate::core::iso::IsoFacts;
use crate::core::state::VmState;

/// A VM as the library window shows it.
#[derive(Clone, Debug)]
pub struct VmItem {
    pub root: PathBuf,
    pub name: String,
    pub kind: ItemKind,
}

#[derive(Clone, Debug)]
pub enum ItemKind {
    /// Its configuration, and the pid of another process running it, if one is (never
    /// this one's: a VM this window runs is its session's business).
    /// `suspended`: its state is saved in its folder (the next power-on resumes it).
    Ok { config: Box<VmConfig>, elsewhere: Option<String>, suspended: bool },
    /// Why it cannot be opened.
    Inaccessible(String),
}

/// What a dropped or chosen ISO is for.
#[derive(Clone, Debug, PartialEq)]
pub enum IsoPurpose {
    /// The New VM wizard's install source.
    Wizard,
    /// The CD of a VM that is off (and its boot medium, if it has nothing else to boot).
    Attach(PathBuf),
    /// A new disc in a running VM's drive.
    Swap(PathBuf),
}

/// Which dialog's answer this is.
#[derive(Clone, Debug, PartialEq)]
pub enum Pick {
    Wizard(PathField),
    OpenVm,
    AttachIso(PathBuf),
    LibraryFolder,
}

pub enum Done {
    /// A library scan (numbered: a late older one is ignored).
    Scanned {
        seq: u64,
        result: Result<Vec<VmItem>, LibraryError>,
    },
    Inspected {
        iso: PathBuf,
        purpose: IsoPurpose,
        result: Result<IsoFacts, IsoError>,
    },
    /// A VM created (its folder), to power on or not.
    Created {
        result: Result<PathBuf, CreateError>,
        power_on: bool,
    },
    Picked {
        pick: Pick,
        path: Option<PathBuf>,
    },
    /// A change to a VM or the library: what was done, or why not.
    Changed {
        ok: String,
        result: Result<(), LibraryError>,
    },
    /// The demo VM is made (its folder).
    Demo(Result<PathBuf, super::demo::DemoError>),
    /// The snapshot tree of the VM in `root`, read for the Snapshot Manager.
    SnapshotTree {
        root: PathBuf,
        result: Result<super::dialogs::snapshots::Loaded, String>,
    },
    /// Snapshot work on the VM in `root` done (what to say), or not (why); then it is
    /// powered on as `resume` says.
    SnapshotWork {
        root: PathBuf,
        result: Result<String, String>,
        resume: super::dialogs::snapshots::Resume,
    },
    /// The VM in `root` moved (what to say) or did not (why).
    Migrated {
        root: PathBuf,
        result: Result<String, String>,
    },
    /// The VM in `root` was backed up (what to say) or not (why).
    BackedUp {
        root: PathBuf,
        result: Result<String, String>,
    },
    /// A migration was asked to stop (or could not be).
    MigrationCancelled(Result<(), String>),
}

pub struct Job {
    pub title: String,
    pub progress: Progress,
    /// Shown in the status bar (long work), or not (a scan, a dialog).
    pub visible: bool,
}

/// Runs jobs on threads and collects what they finish.
pub struct Jobs {
    tx: Sender<(u64, Done)>,
    rx: Receiver<(u64, Done)>,
    running: Vec<(u64, Job)>,
    next: u64,
    wake: Arc<dyn Fn() + Send + Sync>,
}

impl Jobs {
    pub fn new(wake: Arc<dyn Fn() + Send + Sync>) -> Jobs {
        let (tx, rx) = channel();
        Jobs { tx, rx, running: Vec::new(), next: 0, wake }
    }

    /// Starts `work` on a thread.
    pub fn spawn(
        &mut self,
        title: impl Into<String>,
        visible: bool,
        work: impl FnOnce(&Progress) -> Done + Send + 'static,
    ) {
        let id = self.next;
        self.next += 1;
        let progress = Progress::default();
        let (tx, wake, p) = (self.tx.clone(), self.wake.clone(), progress.clone());
        let title = title.into();
        let spawned =
            std::thread::Builder::new().name(format!("vessel-job {title}")).spawn(move || {
                let done = work(&p);
                let _ = tx.send((id, done));
                wake();
            });
        if spawned.is_ok() {
            self.running.push((id, Job { title, progress, visible }));
        }
    }

    /// Jobs that finished since the last call.
    pub fn finished(&mut self) -> Vec<Done> {
        let mut out = Vec::new();
        while let Ok((id, done)) = self.rx.try_recv() {
            self.running.retain(|(i, _)| *i != id);
            out.push(done);
        }
        out
    }

    /// Long work in progress, for the status bar.
    pub fn visible(&self) -> impl Iterator<Item = &Job> {
        self.running.iter().map(|(_, j)| j).filter(|j| j.visible)
    }
}

/// Opens the file dialog `pick` asks for, starting in `start`; the answer comes back as
/// `Done::Picked`.
pub fn pick(jobs: &mut Jobs, start: &Path, pick: Pick) {
    let start = start.to_path_buf();
    jobs.spawn("Choosing a file", false, move |_| {
        let dialog = rfd::FileDialog::new().set_directory(&start);
        let path = match &pick {
            Pick::Wizard(PathField::Iso) | Pick::AttachIso(_) => dialog
                .set_title("Choose an ISO image")
                .add_filter("ISO images", &["iso", "ISO"])
                .add_filter("All files", &["*"])
                .pick_file(),
            Pick::Wizard(PathField::Location) | Pick::LibraryFolder => {
                dialog.set_title("Choose a folder").pick_folder()
            }
            Pick::OpenVm => dialog.set_title("Open a VM folder (NAME.vessel)").pick_folder(),
            Pick::Wizard(_) => dialog.set_title("Choose a file").pick_file(),
        };
        Done::Picked { pick, path }
    });
}

/// Looks into `iso` for `purpose`; the answer comes back as `Done::Inspected`.
pub fn inspect(jobs: &mut Jobs, iso: PathBuf, purpose: IsoPurpose) {
    let title = format!("Reading {}", iso.display());
    jobs.spawn(title, true, move |_| {
        let result = crate::core::iso::inspect(&iso);
        Done::Inspected { iso, purpose, result }
    });
}

/// Adds the VM folder `path` to the library in `dir` (File ▸ Open VM).
pub fn open_vm(jobs: &mut Jobs, dir: &Path, path: PathBuf) {
    let dir = dir.to_path_buf();
    jobs.spawn("Opening a VM", false, move |_| {
        let result = Library::open(&dir).and_then(|lib| lib.register(&path).map(|_| ()));
        Done::Changed { ok: "The VM is in the library".into(), result }
    });
}

/// What attaching `iso` to the VM `vm` (configured as `config`, when it could be read)
/// says: whether and when the VM boots it.
pub fn attach_message(iso: &Path, vm: &str, linux: bool, config: Option<&VmConfig>) -> String {
    use vm_library::config::{Boot, BootDevice};
    let diskless = config.is_some_and(|c| c.disks.is_empty());
    let boots = match config.map(|c| &c.boot.value) {
        Some(Boot::Bios(fw))
            if fw.next_order().first() == Some(&BootDevice::Cd)
                || (diskless && fw.order.contains(&BootDevice::Cd)) =>
        {
            "; it boots from it"
        }
        Some(Boot::Bios(fw)) if fw.order.contains(&BootDevice::Cd) => {
            "; it boots from it when the disks have no system"
        }
        Some(Boot::Cdrom) if linux => "; it boots its Linux",
        Some(Boot::Cdrom) => {
            "; it has no Linux kernel for Quick Linux boot (Settings: boot through the BIOS)"
        }
        _ => "",
    };
    format!("{} is in {vm}'s CD drive{boots}", file_name(iso))
}

/// Creates `vm` in the library in `dir`, then powers it on if asked (`Done::Created`).
pub fn create(jobs: &mut Jobs, dir: &Path, vm: NewVm, power_on: bool) {
    let dir = dir.to_path_buf();
    jobs.spawn(format!("Creating {}", vm.name), true, move |_| {
        let result = Library::open(&dir)
            .map_err(CreateError::from)
            .and_then(|lib| create_bundle(&lib, &vm))
            .map(|(bundle, _)| bundle.root().to_path_buf());
        Done::Created { result, power_on }
    });
}

/// Changes the configuration of the VM `name` in the library in `dir` (`Library::update`:
/// checked against this host, or nothing is saved); `ok` is said when it worked.
pub fn update(
    jobs: &mut Jobs,
    dir: &Path,
    name: String,
    ok: String,
    change: impl FnOnce(&mut VmConfig) + Send + 'static,
) {
    let dir = dir.to_path_buf();
    jobs.spawn(format!("Saving {name}"), false, move |_| {
        let result = Library::open(&dir).and_then(|lib| {
            lib.update(&name, &Host::this(), |c| {
                change(c);
                Ok(())
            })
            .map(|_| ())
        });
        Done::Changed { ok, result }
    });
}

/// Reads the library: every VM, its configuration and whether another process runs it.
pub fn scan(dir: &Path) -> Result<Vec<VmItem>, LibraryError> {
    use vm_library::library::Entry;
    let entries = Library::open(dir)?.list()?;
    Ok(entries
        .into_iter()
        .map(|e| match e {
            Entry::Ok(bundle) => {
                let elsewhere = match VmState::of_lock(bundle.running().ok().flatten()) {
                    VmState::Elsewhere(pid) => Some(pid),
                    _ => None,
                };
                let suspended = crate::core::suspend::is_suspended(bundle.root());
                VmItem {
                    root: bundle.root().to_path_buf(),
                    name: bundle.config.name.clone(),
                    kind: ItemKind::Ok { config: Box::new(bundle.config), elsewhere, suspended },
                }
            }
            Entry::Inaccessible { ref path, ref reason } => VmItem {
                root: path.clone(),
                name: e.name(),
                kind: ItemKind::Inaccessible(reason.to_string()),
            },
        })
        .collect())
}

/// Why an ISO cannot be used, for people.
pub fn not_an_iso(iso: &Path, error: &IsoError) -> String {
    format!("{} is not an ISO image Vessel can use ({error}); choose an .iso file", iso.display())
}

/// The last part of a path, for people.
pub fn file_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}
