//! Work the UI hands to background threads (reading the library, looking into an ISO,
//! creating a VM, file dialogs, building the demo guest), with progress the UI can show.

use std::path::PathBuf;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};

use vm_library::config::VmConfig;
use vm_library::iso::os::OsGuess;

use super::wizard::PathField;

/// A VM as the library window shows it.
#[derive(Clone, Debug)]
pub struct VmItem {
    pub root: PathBuf,
    pub name: String,
    pub kind: ItemKind,
}

#[derive(Clone, Debug)]
pub enum ItemKind {
    /// Its configuration, and the pid of another process running it, if one is.
    Ok { config: Box<VmConfig>, elsewhere: Option<String> },
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
        result: Result<Vec<VmItem>, String>,
    },
    Inspected {
        iso: PathBuf,
        purpose: IsoPurpose,
        result: Result<(Option<OsGuess>, bool), String>,
    },
    /// A VM created (its folder), to power on or not.
    Created {
        result: Result<PathBuf, String>,
        power_on: bool,
    },
    Picked {
        pick: Pick,
        path: Option<PathBuf>,
    },
    /// A change to a VM or the library: what was done, or why not.
    Changed {
        ok: String,
        result: Result<(), String>,
    },
    /// The demo VM is made (its folder).
    Demo(Result<PathBuf, String>),
}

/// A job's progress line, written by the worker.
#[derive(Clone, Default)]
pub struct Progress(Arc<Mutex<String>>);

impl Progress {
    pub fn set(&self, text: impl Into<String>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = text.into();
    }

    pub fn get(&self) -> String {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
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

/// Reads the library: every VM, its configuration and whether another process runs it.
pub fn scan(dir: &std::path::Path) -> Result<Vec<VmItem>, String> {
    use vm_library::library::{Entry, Library};
    let lib = Library::open(dir)
        .map_err(|e| format!("cannot open the VM library at {}: {e}", dir.display()))?;
    let entries = lib.list().map_err(|e| e.to_string())?;
    Ok(entries
        .into_iter()
        .map(|e| match e {
            Entry::Ok(bundle) => {
                let elsewhere = bundle.running().ok().flatten();
                VmItem {
                    root: bundle.root().to_path_buf(),
                    name: bundle.config.name.clone(),
                    kind: ItemKind::Ok { config: Box::new(bundle.config), elsewhere },
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

/// Looks into an ISO: the OS on it (defaults for this host) and whether it boots Linux.
pub fn inspect(iso: &std::path::Path) -> Result<(Option<OsGuess>, bool), String> {
    crate::vms::iso_defaults(iso).map_err(|e| {
        format!("{} is not an ISO image Vessel can use ({e:#}); choose an .iso file", iso.display())
    })
}
