//! Storage: disk image access shared by the disk controllers (virtio-blk now), image
//! locks, and the CD-ROM command set (MMC) that the CD drive's transports carry.

pub mod ide;
pub mod image;
pub mod lock;
pub mod mmc;

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
