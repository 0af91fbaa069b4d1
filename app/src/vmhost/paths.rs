//! Where a running VM's control socket is: `$XDG_RUNTIME_DIR/vessel/` (else
//! `/tmp/vessel-UID/`), a folder only this user can enter, named after the VM's folder.
//! The socket is only ever made by the process holding the VM's run lock, so a socket
//! left by a process that died is replaced safely.

use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum PathsError {
    #[error("cannot make the folder for VM control sockets {}", .0.display())]
    Create(PathBuf, #[source] std::io::Error),
    #[error(
        "{} is not a private folder of this user (a symlink, another owner, or open to \
         others); remove it, or set XDG_RUNTIME_DIR to a folder of your own",
        .0.display()
    )]
    NotPrivate(PathBuf),
    #[error("cannot find the VM's folder {}", .0.display())]
    Bundle(PathBuf, #[source] std::io::Error),
}

/// The folder for control sockets, made (mode 0700) if it is not there.
pub fn runtime_dir() -> Result<PathBuf, PathsError> {
    // SAFETY: getuid cannot fail and has no side effects.
    let uid = unsafe { libc::getuid() };
    let dir = match std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from) {
        Some(base) if base.is_absolute() && base.is_dir() => base.join("vessel"),
        _ => std::env::temp_dir().join(format!("vessel-{uid}")),
    };
    match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(PathsError::Create(dir, e)),
    }
    // Never a folder someone else made or can write to: they could put a socket of theirs
    // where a client looks for the VM's.
    let meta = std::fs::symlink_metadata(&dir).map_err(|e| PathsError::Create(dir.clone(), e))?;
    if !meta.is_dir() || meta.uid() != uid || meta.permissions().mode() & 0o077 != 0 {
        return Err(PathsError::NotPrivate(dir));
    }
    Ok(dir)
}

/// The control socket of the VM in `bundle`.
pub fn socket_for(bundle: &Path) -> Result<PathBuf, PathsError> {
    Ok(runtime_dir()?.join(socket_name(&canonical(bundle)?)))
}

/// The VM's folder as the VM process names it in its `Hello`.
pub fn canonical(bundle: &Path) -> Result<PathBuf, PathsError> {
    bundle.canonicalize().map_err(|e| PathsError::Bundle(bundle.to_path_buf(), e))
}

/// `vm-HASH.sock`, HASH a 64-bit FNV-1a of the folder's canonical path: short enough for
/// a socket address (108 bytes), the same on every build.
fn socket_name(canonical: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let hash = canonical.as_os_str().as_bytes().iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("vm-{hash:016x}.sock")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockets_are_named_by_folder_in_a_private_directory() {
        let a = socket_name(Path::new("/home/u/VMs/A"));
        assert_eq!(a, socket_name(Path::new("/home/u/VMs/A")));
        assert_ne!(a, socket_name(Path::new("/home/u/VMs/B")));
        assert!(a.len() < 40);
        let dir = runtime_dir().unwrap();
        let meta = std::fs::metadata(&dir).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o700);
    }
}
