//! Pixel memory another process can map: each `Image`'s pixels live in a memfd, sealed
//! against shrinking and growing, so the window of another process can map the guest's
//! frame read-only (`FrameMapping`) and read it where the device draws it, with no copy.
//! The seals are what make that safe for the reader: a writer that could shrink the file
//! would make the reader's loads fault (SIGBUS), as Wayland's wl_shm has to work around.

use std::fs::File;
use std::ops::{Deref, DerefMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;

/// The seals a frame's memfd carries: its size is fixed for good.
const SEALS: libc::c_int = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;

#[derive(Debug, thiserror::Error)]
pub enum PixelsError {
    #[error("cannot make a frame's shared memory")]
    Create(#[source] std::io::Error),
    #[error("cannot map a frame's shared memory")]
    Map(#[source] std::io::Error),
    #[error("a frame's shared memory is not sealed against shrinking")]
    NotSealed,
    #[error("a frame's shared memory holds {has} bytes, not the {needs} its layout needs")]
    TooSmall { has: u64, needs: u64 },
}

/// One mmap of a memfd, unmapped on drop.
struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain memory owned by this value; access goes through `&`/`&mut`.
unsafe impl Send for Mapping {}
// SAFETY: as above; shared access only reads.
unsafe impl Sync for Mapping {}

impl Mapping {
    fn new(fd: BorrowedFd<'_>, len: usize, writable: bool) -> Result<Self, PixelsError> {
        if len == 0 {
            return Ok(Mapping { ptr: NonNull::dangling(), len: 0 });
        }
        let prot = if writable { libc::PROT_READ | libc::PROT_WRITE } else { libc::PROT_READ };
        // SAFETY: a new shared mapping of `len` bytes of an open fd, placed by the kernel;
        // nothing else is mapped over.
        let ptr = unsafe {
            libc::mmap(std::ptr::null_mut(), len, prot, libc::MAP_SHARED, fd.as_raw_fd(), 0)
        };
        if ptr == libc::MAP_FAILED {
            return Err(PixelsError::Map(std::io::Error::last_os_error()));
        }
        let ptr =
            NonNull::new(ptr.cast()).ok_or(PixelsError::Map(std::io::Error::other("null")))?;
        Ok(Mapping { ptr, len })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        if self.len > 0 {
            // SAFETY: unmaps exactly the mapping this value made; no reference outlives it.
            unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
        }
    }
}

/// The pixels of an `Image`: zeroed memory in a sealed memfd, readable and writable here.
pub struct Pixels {
    map: Mapping,
    memory: File,
}

impl std::fmt::Debug for Pixels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pixels({} bytes)", self.map.len)
    }
}

impl Pixels {
    /// `len` zero bytes.
    pub fn new(len: usize) -> Result<Self, PixelsError> {
        // SAFETY: the name is a NUL-terminated string; the flags are valid.
        let fd = unsafe {
            libc::memfd_create(
                c"vessel-frame".as_ptr(),
                libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
            )
        };
        if fd < 0 {
            return Err(PixelsError::Create(std::io::Error::last_os_error()));
        }
        // SAFETY: a new fd that nothing else owns.
        let memory = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        memory.set_len(len as u64).map_err(PixelsError::Create)?;
        // SAFETY: F_ADD_SEALS takes an int argument; the fd is open.
        if unsafe { libc::fcntl(memory.as_raw_fd(), libc::F_ADD_SEALS, SEALS) } != 0 {
            return Err(PixelsError::Create(std::io::Error::last_os_error()));
        }
        let map = Mapping::new(memory.as_fd(), len, true)?;
        Ok(Pixels { map, memory })
    }

    /// The memfd, for another process to map (`FrameMapping::map`).
    pub fn memory(&self) -> BorrowedFd<'_> {
        self.memory.as_fd()
    }
}

impl Deref for Pixels {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `len` bytes mapped for as long as `self` lives.
        unsafe { std::slice::from_raw_parts(self.map.ptr.as_ptr(), self.map.len) }
    }
}

impl DerefMut for Pixels {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above, writable, and `&mut self` makes this the only reference here.
        unsafe { std::slice::from_raw_parts_mut(self.map.ptr.as_ptr(), self.map.len) }
    }
}

/// Another process's frame memory, mapped read-only: a display mirrors a guest screen
/// from it (`Display::mirror_scanout`). The other process keeps drawing into it, so what
/// a reader sees may change while it reads; that is a torn frame at worst, which the
/// damage that follows repairs.
pub struct FrameMapping {
    map: Mapping,
}

impl FrameMapping {
    /// Maps `memory` read-only, after checking it is sealed against shrinking and holds at
    /// least `needs` bytes: the sender cannot make reads fault later.
    pub fn map(memory: OwnedFd, needs: u64) -> Result<Self, PixelsError> {
        // SAFETY: F_GET_SEALS takes no argument; the fd is open.
        let seals = unsafe { libc::fcntl(memory.as_raw_fd(), libc::F_GET_SEALS) };
        if seals < 0 || seals & libc::F_SEAL_SHRINK == 0 {
            return Err(PixelsError::NotSealed);
        }
        let file = File::from(memory);
        let has = file.metadata().map_err(PixelsError::Map)?.len();
        if has < needs {
            return Err(PixelsError::TooSmall { has, needs });
        }
        let len = usize::try_from(needs).map_err(|_| PixelsError::TooSmall { has, needs })?;
        Ok(FrameMapping { map: Mapping::new(file.as_fd(), len, false)? })
    }

    /// The mapped bytes.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `len` bytes mapped read-only for as long as `self` lives. Another process
        // may write them meanwhile; they are plain bytes, any value is valid.
        unsafe { std::slice::from_raw_parts(self.map.ptr.as_ptr(), self.map.len) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn another_mapping_sees_what_is_drawn() {
        let mut pixels = Pixels::new(4096 * 3).unwrap();
        assert!(pixels.iter().all(|&b| b == 0));
        pixels[5000] = 0xab;
        let dup = pixels.memory().try_clone_to_owned().unwrap();
        let mirror = FrameMapping::map(dup, 4096 * 3).unwrap();
        assert_eq!(mirror.bytes()[5000], 0xab);
        pixels[5001] = 0xcd;
        assert_eq!(mirror.bytes()[5001], 0xcd, "the same memory, not a copy");
        // The size is sealed: neither side can shrink it under the other.
        let file = File::from(pixels.memory().try_clone_to_owned().unwrap());
        assert!(file.set_len(10).is_err());
    }

    #[test]
    fn unsealed_or_short_memory_is_refused() {
        let too_big = Pixels::new(100).unwrap().memory().try_clone_to_owned().unwrap();
        assert!(matches!(
            FrameMapping::map(too_big, 101),
            Err(PixelsError::TooSmall { has: 100, needs: 101 })
        ));
        // A plain file can be truncated by whoever sent it: refused.
        let file = tempfile::tempfile().unwrap();
        file.set_len(4096).unwrap();
        assert!(matches!(FrameMapping::map(file.into(), 4096), Err(PixelsError::NotSealed)));
    }
}
