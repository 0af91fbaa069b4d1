//! The VMs this window runs: each a session (the thread that owns its machine) with its
//! console, and how the last run of each VM ended when that is worth showing.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::console::VmConsole;
use super::jobs::{ItemKind, VmItem};
use super::session::{Command, Ending, Phase, Session};
use super::toasts::Toasts;
use crate::core::state::VmState;
use crate::vmhost::client::Launcher;

/// A VM this window runs.
pub struct Vm {
    pub session: Session,
    pub console: VmConsole,
}

pub struct Running {
    pub vms: HashMap<PathBuf, Vm>,
    /// How each VM's last run ended, when that is worth showing (crashes, failures).
    pub endings: HashMap<PathBuf, Ending>,
    /// How VM processes are started.
    launcher: Launcher,
}

impl Running {
    pub fn new(launcher: Launcher) -> Self {
        Running { vms: HashMap::new(), endings: HashMap::new(), launcher }
    }

    pub fn get(&self, root: &Path) -> Option<&Vm> {
        self.vms.get(root)
    }

    pub fn get_mut(&mut self, root: &Path) -> Option<&mut Vm> {
        self.vms.get_mut(root)
    }

    pub fn contains(&self, root: &Path) -> bool {
        self.vms.contains_key(root)
    }

    pub fn is_empty(&self) -> bool {
        self.vms.is_empty()
    }

    pub fn len(&self) -> usize {
        self.vms.len()
    }

    /// Starts the VM in `root` (of the library in `library`); `wake` repaints the window.
    pub fn start(
        &mut self,
        library: &Path,
        root: PathBuf,
        name: String,
        wake: Arc<dyn Fn() + Send + Sync>,
    ) {
        self.endings.remove(&root);
        let session =
            Session::start(&self.launcher, library.to_path_buf(), root.clone(), name, wake);
        self.vms.insert(root, Vm { session, console: VmConsole::default() });
    }

    /// Shows every VM of `items` that runs in a process this window has no session with
    /// (started elsewhere, or before this window).
    pub fn attach(&mut self, items: &[VmItem], wake: Arc<dyn Fn() + Send + Sync>) {
        for item in items {
            if let ItemKind::Ok { elsewhere: Some(_), .. } = &item.kind
                && !self.vms.contains_key(&item.root)
            {
                self.endings.remove(&item.root);
                let session = Session::attach(item.root.clone(), item.name.clone(), wake.clone());
                self.vms.insert(item.root.clone(), Vm { session, console: VmConsole::default() });
            }
        }
    }

    /// Lets go of every VM, leaving them running in their processes (closing the window
    /// with Run in Background).
    pub fn detach_all(&mut self) {
        self.vms.clear();
    }

    /// Asks `root`'s VM to do something; false if it does not run.
    pub fn send(&self, root: &Path, command: Command) -> bool {
        self.vms.get(root).is_some_and(|vm| vm.session.send(command))
    }

    /// Asks every VM (closing the window).
    pub fn send_all(&self, command: impl Fn() -> Command) {
        for vm in self.vms.values() {
            vm.session.send(command());
        }
    }

    /// Presses `keys` in order on `root`'s VM, and releases them in reverse.
    pub fn send_keys(&self, root: &Path, keys: &[u16]) {
        if let Some(input) = self.vms.get(root).and_then(|vm| vm.session.input.as_ref()) {
            for &k in keys {
                input.key(k, true);
            }
            for &k in keys.iter().rev() {
                input.key(k, false);
            }
        }
    }

    /// The state of a VM of the library, as the window shows it.
    pub fn state_of(&self, item: &VmItem) -> VmState {
        if let Some(vm) = self.vms.get(&item.root) {
            return vm.session.phase.state();
        }
        match &item.kind {
            ItemKind::Inaccessible(_) => VmState::Inaccessible,
            ItemKind::Ok { elsewhere: Some(pid), .. } => VmState::Elsewhere(pid.clone()),
            ItemKind::Ok { suspended, .. } => match self.endings.get(&item.root) {
                Some(ending) => ending.state(),
                None if *suspended => VmState::Suspended,
                None => VmState::Off,
            },
        }
    }

    /// Takes what the sessions reported (their messages become toasts); returns the VMs
    /// whose session ended, taken out of the running set, and remembers how they ended.
    pub fn poll(&mut self, toasts: &mut Toasts) -> Vec<(PathBuf, Vm)> {
        let mut ended = Vec::new();
        for (root, vm) in &mut self.vms {
            for notice in vm.session.poll() {
                if notice.error {
                    toasts.error(&notice.text, None);
                } else {
                    toasts.info(&notice.text);
                }
            }
            if vm.session.is_over() {
                ended.push(root.clone());
            }
        }
        let mut out = Vec::new();
        for root in ended {
            let Some(vm) = self.vms.remove(&root) else { continue };
            let Phase::Ended(ending) = &vm.session.phase else { continue };
            match ending.reason() {
                None => {
                    self.endings.remove(&root);
                }
                Some(reason) => {
                    let what = match ending {
                        Ending::Crashed(_) => "crashed",
                        _ => "could not run",
                    };
                    toasts.error(&format!("{} {what}", vm.session.name), Some(reason));
                    self.endings.insert(root.clone(), ending.clone());
                }
            }
            out.push((root, vm));
        }
        out
    }
}
