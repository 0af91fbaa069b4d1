//! Storage: disk image access shared by the disk controllers (virtio-blk now), image
//! locks, and the CD-ROM command set (MMC) that the CD drive's transports carry.

pub mod ide;
pub mod image;
pub mod lock;
pub mod mmc;

/// Bytes of a disk one bit of a `CopySource`'s written-chunks bitmap stands for.
pub const COPY_CHUNK: u64 = 64 << 10;

/// A writable disk in use, as a live migration that copies disks (`--copy-disks`) reads
/// it: what it holds, read consistently with the guest's own requests (the caller holds
/// the device), and which chunks were written since the copy last asked.
pub trait CopySource {
    /// The disk's size in bytes now.
    fn copy_size(&self) -> u64;
    /// Starts (or stops) noting the chunks written; while on, every write, discard and
    /// zeroing of the guest is noted before it happens.
    fn track_writes(&mut self, on: bool);
    /// The chunks written since the last call (or since tracking began), a bit each
    /// (`COPY_CHUNK` bytes), 64 to a word; those bits are cleared.
    fn take_written(&mut self) -> Vec<u64>;
    /// What the image holds from `offset` (`image::DiskImage::extent`).
    fn copy_extent(&mut self, offset: u64) -> std::io::Result<Option<(image::Extent, u64)>>;
    /// The disk's bytes at `offset`, as the guest reads them.
    fn copy_read(&mut self, buf: &mut [u8], offset: u64) -> std::io::Result<()>;
}

/// A disk whose image can be switched while the machine runs: frozen where it is (for a
/// snapshot or a backup), the disk goes on in an overlay reading through it.
pub trait SwitchImage {
    /// Makes what was written to the image durable (before it is let go of).
    fn flush_image(&mut self) -> std::io::Result<()>;
    /// Opens the image `spec` names to take this disk's place (`install_image`): locked
    /// as this one is, and the same size (the guest knows the disk by its size). Nothing
    /// of the disk changes.
    fn prepare_image(&self, spec: &image::ImageSpec) -> std::io::Result<PreparedImage>;
    /// The guest's requests go to `prepared` from now on; the image before it is closed
    /// and its lock let go of. The caller flushed it and keeps requests out meanwhile (it
    /// holds the device).
    fn install_image(&mut self, prepared: PreparedImage);
}

/// An image opened to take a disk's place (`SwitchImage::prepare_image`).
pub struct PreparedImage {
    pub(crate) image: Box<dyn image::DiskImage>,
    /// Holds the image's lock.
    pub(crate) lock: std::fs::File,
    pub(crate) path: std::path::PathBuf,
}

/// Discs handed to this process already open, by the path they were opened at: a VM process
/// whose sandbox keeps it from opening files the user picks later (a disc put in while it
/// runs) is given them by its client. The last few are kept, so a reboot finds its disc.
static HANDED: std::sync::Mutex<Vec<(std::path::PathBuf, std::fs::File)>> =
    std::sync::Mutex::new(Vec::new());

/// Discs kept handed over at most (each is one open descriptor).
const HANDED_KEEP: usize = 8;

/// Hands this process the disc at `path`, open for reading: `open_disc` takes it from here.
pub fn hand_over_disc(path: std::path::PathBuf, file: std::fs::File) {
    let mut handed = crate::sync::lock(&HANDED);
    handed.retain(|(p, _)| *p != path);
    if handed.len() == HANDED_KEEP {
        handed.remove(0);
    }
    handed.push((path, file));
}

/// The disc at `path` for reading: one handed over at that path, else opened as
/// `open_regular` does.
pub fn open_disc(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    let handed = crate::sync::lock(&HANDED);
    if let Some((_, file)) = handed.iter().find(|(p, _)| p == path) {
        let file = file.try_clone()?;
        if !file.metadata()?.is_file() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "not a regular file; an image is a file",
            ));
        }
        return Ok(file);
    }
    drop(handed);
    open_regular(path, false)
}

/// Opens `path`, which must be a regular file (a disk image, an ISO), for reading (and
/// writing with `write`). Non-blocking, so a FIFO or a device named as an image is refused
/// at once instead of hanging the open (O_NONBLOCK changes nothing for a regular file).
pub fn open_regular(path: &std::path::Path, write: bool) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::File::options()
        .read(true)
        .write(write)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file; an image is a file",
        ));
    }
    Ok(file)
}
