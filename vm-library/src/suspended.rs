//! A suspended VM's saved state, in its folder: the machine's state and its memory
//! (the VMM's `persist` format), written by its VM process when it is suspended and taken
//! by the next start, which resumes the machine where it was and then removes them. A
//! snapshot taken of a suspended VM keeps them too (as links), and reverting to a
//! snapshot with memory puts its files here.

use std::path::{Path, PathBuf};

/// The state file of a suspended VM in `root`.
pub fn state_path(root: &Path) -> PathBuf {
    root.join(STATE_FILE)
}

/// The memory file of a suspended VM in `root`.
pub fn memory_path(root: &Path) -> PathBuf {
    root.join(MEMORY_FILE)
}

pub const STATE_FILE: &str = "suspended-state";
pub const MEMORY_FILE: &str = "suspended-memory";

/// Whether the VM in `root` is suspended: both its files are there. (The state file is
/// put in place last: without it, the memory file is a suspend that never finished.)
pub fn is_suspended(root: &Path) -> bool {
    // The files themselves (a symlink in their place is no suspended state).
    let regular = |path: PathBuf| std::fs::symlink_metadata(path).is_ok_and(|m| m.is_file());
    regular(state_path(root)) && regular(memory_path(root))
}

/// Where a suspend writes before its files are put in place.
pub fn pending(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".new");
    PathBuf::from(name)
}

/// Removes the VM's suspended state (resumed, or discarded), and what a suspend that did
/// not finish left.
pub fn discard(root: &Path) -> std::io::Result<()> {
    for path in [state_path(root), memory_path(root)] {
        for path in [pending(&path), path] {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}
