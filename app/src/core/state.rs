//! One vocabulary for a VM's state, from the machine's `MachineState` and the library's
//! run lock up to the words the window and `vessel list` show.

/// Where a VM is, as people see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VmState {
    Off,
    /// Its state was saved (suspended): powering it on resumes it where it was.
    Suspended,
    /// Its machine is being built (reading the disc, opening disks).
    Starting,
    Running,
    Paused,
    /// Its machine stopped; the session is winding down.
    Stopping,
    /// The guest crashed last time it ran.
    Crashed,
    /// The machine could not start, or could not go on, last time.
    Failed,
    /// Another process runs it (its pid, as its run lock says).
    Elsewhere(String),
    /// Its folder or configuration cannot be read.
    Inaccessible,
}

impl VmState {
    /// The words for it in the window.
    pub fn label(&self) -> String {
        match self {
            VmState::Off => "Off".into(),
            VmState::Suspended => "Suspended".into(),
            VmState::Starting => "Starting…".into(),
            VmState::Running => "Running".into(),
            VmState::Paused => "Paused".into(),
            VmState::Stopping => "Stopping…".into(),
            VmState::Crashed => "Crashed".into(),
            VmState::Failed => "Failed to run".into(),
            VmState::Elsewhere(pid) => format!("Running elsewhere (pid {pid})"),
            VmState::Inaccessible => "Inaccessible".into(),
        }
    }

    /// The word for it in `vessel list --json` and `vessel show --json`.
    pub fn id(&self) -> &'static str {
        match self {
            VmState::Off | VmState::Crashed | VmState::Failed => "off",
            VmState::Suspended => "suspended",
            VmState::Starting => "starting",
            VmState::Running | VmState::Elsewhere(_) => "running",
            VmState::Paused => "paused",
            VmState::Stopping => "stopping",
            VmState::Inaccessible => "inaccessible",
        }
    }

    /// It can be powered on from here.
    pub fn can_power_on(&self) -> bool {
        matches!(self, VmState::Off | VmState::Suspended | VmState::Crashed | VmState::Failed)
    }

    /// What the library's run lock says of a bundle: a VM process (its pid) runs it. The
    /// window asks its sessions first, so a VM it shows is never "elsewhere".
    pub fn of_lock(holder: Option<String>) -> VmState {
        match holder {
            Some(pid) => VmState::Elsewhere(pid),
            None => VmState::Off,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_locked_vm_runs_elsewhere() {
        assert_eq!(VmState::of_lock(None), VmState::Off);
        let other = VmState::of_lock(Some("1".into()));
        assert_eq!(other.label(), "Running elsewhere (pid 1)");
        assert!(!other.can_power_on() && VmState::Crashed.can_power_on());
        assert_eq!(other.id(), "running");
    }
}
