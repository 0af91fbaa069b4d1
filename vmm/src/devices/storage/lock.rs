//! Whole-file OFD locks (fcntl(2), "Open file description locks") on the images a machine
//! uses: exclusive for a writable disk, shared for a read-only disk or a CD, so two
//! machines never write one image and nobody writes an image another machine reads.
//! They go away with the file, even when the process is killed.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "{path} is in use by another virtual machine (it is locked); shut that machine down \
         first, or attach the image read-only"
    )]
    Locked { path: PathBuf },
    #[error("cannot lock {path}")]
    Lock {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Attempts, 2 ms apart, before a held lock counts as held.
const LOCK_TRIES: u32 = 25;

/// Sets (or, `F_UNLCK`, drops) this open file description's lock of `kind` on all of
/// `file`, without waiting.
fn set_ofd_lock(file: &File, kind: libc::c_int) -> std::io::Result<()> {
    let lock = libc::flock {
        l_type: kind as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    };
    // SAFETY: F_OFD_SETLK reads the flock struct we pass; the fd is open for the call.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &lock) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Drops this open file description's lock on `file` (a machine handing its disks to the
/// one it migrates to, which takes them on the same storage).
pub fn ofd_unlock(file: &File, path: &Path) -> Result<(), LockError> {
    set_ofd_lock(file, libc::F_UNLCK)
        .map_err(|source| LockError::Lock { path: path.to_path_buf(), source })
}

/// Locks all of `file` (opened from `path`), shared or exclusive, without waiting.
pub fn ofd_lock(file: &File, path: &Path, exclusive: bool) -> Result<(), LockError> {
    let kind = if exclusive { libc::F_WRLCK } else { libc::F_RDLCK };
    // A lock released a moment ago (a machine of this process rebooting) can linger while
    // a child that another thread forked has not exec'd yet: it shares the open file
    // description. So a held lock is tried again for a short while before it counts.
    for _ in 0..LOCK_TRIES {
        match set_ofd_lock(file, kind) {
            Ok(()) => return Ok(()),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EACCES)) => {}
            Err(source) => return Err(LockError::Lock { path: path.to_path_buf(), source }),
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    Err(LockError::Locked { path: path.to_path_buf() })
}
