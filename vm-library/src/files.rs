//! How Vessel touches files in a VM's folder. A bundle may come from anywhere (a download,
//! an import, a shared drive), so its paths and its symlinks are not trusted:
//! - a path the configuration names must stay inside the bundle: relative, no `..`, and
//!   still inside once symlinks are resolved (`inside`);
//! - what Vessel writes is created anew without following a symlink planted in its place
//!   (`create_private`, `open_nofollow`), in a folder checked to be inside the bundle;
//! - what it creates is private: folders 0700, files 0600, whatever the umask, so other
//!   users of the computer cannot read a VM's disks.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// Why a path from a configuration is not one of the VM's own files.
#[derive(Debug, thiserror::Error)]
pub enum PathError {
    #[error(
        "{path} is not inside the VM's folder ({why}); the files a VM uses live in its \
         folder: copy the file into {root} and name it relative to that folder"
    )]
    Outside { path: PathBuf, root: PathBuf, why: &'static str },
    #[error("{path}: {cause}")]
    Io { path: PathBuf, cause: io::Error },
}

/// `rel`, a path from `root`'s configuration, as a path inside `root`: it must be relative
/// and plain (no `..`, no `.`), and after resolving symlinks (of the file, or of its folder
/// when the file does not exist yet) it must still be inside `root`. Returns the resolved
/// path, so what is opened is what was checked.
pub fn inside(root: &Path, rel: &Path) -> Result<PathBuf, PathError> {
    let outside =
        |why| PathError::Outside { path: rel.to_path_buf(), root: root.to_path_buf(), why };
    if rel.is_absolute() {
        return Err(outside("it is an absolute path"));
    }
    if rel.as_os_str().is_empty() || !rel.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(outside("it climbs out with '..' or is empty"));
    }
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |cause| PathError::Io { path, cause }
    };
    let real_root = fs::canonicalize(root).map_err(io(root))?;
    let joined = root.join(rel);
    let resolved = match fs::canonicalize(&joined) {
        Ok(path) => path,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // Not there yet (a file or folders about to be created): the nearest part of
            // the path that exists must be inside, and nothing on the way may be a symlink
            // to nowhere (creating through it would land wherever it points).
            let mut missing = joined.as_path();
            loop {
                if fs::symlink_metadata(missing).is_ok() {
                    return Err(outside("a symlink on the way leads to nothing"));
                }
                let Some(parent) = missing.parent() else { return Ok(joined) };
                match fs::canonicalize(parent) {
                    Ok(dir) => {
                        let rest = joined.strip_prefix(parent).unwrap_or(&joined);
                        break dir.join(rest);
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => missing = parent,
                    Err(e) => return Err(io(parent)(e)),
                }
            }
        }
        Err(e) => return Err(io(&joined)(e)),
    };
    if resolved == real_root || !resolved.starts_with(&real_root) {
        return Err(outside("a symlink leads out of the folder"));
    }
    Ok(resolved)
}

/// Opens `path`, which must be a regular file, for reading (and writing with `write`).
/// Non-blocking, so a FIFO or a device planted under a file's name is refused at once
/// instead of hanging the open (O_NONBLOCK changes nothing for a regular file's I/O).
pub fn open_regular(path: &Path, write: bool) -> io::Result<File> {
    let file = File::options().read(true).write(write).custom_flags(libc::O_NONBLOCK).open(path)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"));
    }
    Ok(file)
}

/// Makes what was created or renamed in the folder `path` durable (best effort: a folder
/// that cannot be synced is no reason to fail what was done).
pub fn sync_dir(path: &Path) {
    let _ = File::open(path).and_then(|f| f.sync_all());
}

/// Makes the folder `path` (and missing parents) private to this user: 0700.
pub fn create_dir_private(path: &Path) -> io::Result<()> {
    fs::DirBuilder::new().recursive(true).mode(0o700).create(path)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o700))
}

/// Creates the file `path`, which must not exist yet (not even as a symlink), readable and
/// writable by this user only (0600, whatever the umask).
pub fn create_private(path: &Path) -> io::Result<File> {
    let file = File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    file.set_permissions(fs::Permissions::from_mode(0o600))?;
    Ok(file)
}

/// Opens `path` for reading and writing, creating it private (0600) if missing, but never
/// through a symlink (ELOOP): for files Vessel keeps in a bundle (the run lock).
pub fn open_nofollow(path: &Path) -> io::Result<File> {
    let file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn scratch(name: &str) -> PathBuf {
        crate::test_util::scratch("files", name)
    }

    #[test]
    fn paths_stay_inside_the_bundle() {
        let dir = scratch("inside");
        let root = dir.join("vm.vessel");
        fs::create_dir_all(root.join("disks")).unwrap();
        fs::write(root.join("disks/a.raw"), b"x").unwrap();
        fs::write(dir.join("secret"), b"s").unwrap();
        symlink(dir.join("secret"), root.join("disks/link")).unwrap();
        symlink("a.raw", root.join("disks/inner")).unwrap();
        symlink(&dir, root.join("out")).unwrap();
        symlink(dir.join("nothing"), root.join("dangling")).unwrap();
        let real = fs::canonicalize(&root).unwrap();
        assert_eq!(inside(&root, Path::new("disks/a.raw")).unwrap(), real.join("disks/a.raw"));
        assert_eq!(inside(&root, Path::new("disks/inner")).unwrap(), real.join("disks/a.raw"));
        assert_eq!(inside(&root, Path::new("disks/new.raw")).unwrap(), real.join("disks/new.raw"));
        for bad in [
            "../secret",
            "disks/../../secret",
            "/etc/passwd",
            "disks/link",
            "out/secret",
            "out/new-file",
            "out/missing/deeper/file",
            "dangling",
            "dangling/under",
            "",
            "./disks/a.raw",
        ] {
            let err = inside(&root, Path::new(bad)).unwrap_err();
            assert!(matches!(err, PathError::Outside { .. }), "{bad}: {err}");
            assert!(err.to_string().contains("copy the file into"), "{err}");
        }
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn created_files_are_private_and_never_follow_symlinks() {
        let dir = scratch("private");
        // SAFETY: umask only changes this process's file-creation mask; the test restores it.
        let old = unsafe { libc::umask(0) };
        let made = create_private(&dir.join("f"));
        create_dir_private(&dir.join("d/e")).unwrap();
        // SAFETY: as above.
        unsafe { libc::umask(old) };
        made.unwrap();
        let mode = |p: &str| fs::metadata(dir.join(p)).unwrap().permissions().mode() & 0o777;
        assert_eq!((mode("f"), mode("d/e")), (0o600, 0o700));
        fs::write(dir.join("victim"), b"keep").unwrap();
        symlink(dir.join("victim"), dir.join("planted")).unwrap();
        assert!(create_private(&dir.join("planted")).is_err());
        assert!(open_nofollow(&dir.join("planted")).is_err());
        // A FIFO or a device under a file's name: refused at once, not waited on.
        let fifo = dir.join("fifo");
        let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo reads the NUL-terminated path; the result is checked.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        for path in [fifo.as_path(), Path::new("/dev/zero"), dir.as_path()] {
            let err = open_regular(path, false).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{}", path.display());
        }
        assert!(open_regular(&dir.join("victim"), false).is_ok());
        assert_eq!(fs::read(dir.join("victim")).unwrap(), b"keep");
        let _ = fs::remove_dir_all(dir);
    }
}
