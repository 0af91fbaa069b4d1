//! Disk images as the device models see them: byte-addressed reads and writes, flush,
//! zeroing, size. Raw images are plain files (sparse, hole punching); qcow2 goes through
//! `imago` (written by a QEMU block-layer maintainer), which keeps its metadata consistent
//! so `qemu-img check` finds nothing wrong.

use std::fs::File;
use std::io::{self, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;

use imago::qcow2::Qcow2;
use imago::{FormatAccess, FormatDriverBuilder, PermissiveImplicitOpenGate};
use vm_memory::{ReadVolatile, VolatileSlice, WriteVolatile};

/// The image formats Vessel reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageFormat {
    Raw,
    Qcow2,
}

const QCOW2_MAGIC: [u8; 4] = *b"QFI\xfb";

/// Tells raw from qcow2 by the magic; anything else is raw, as for QEMU.
pub fn detect(file: &File) -> io::Result<ImageFormat> {
    let mut magic = [0u8; 4];
    match file.read_exact_at(&mut magic, 0) {
        Ok(()) if magic == QCOW2_MAGIC => Ok(ImageFormat::Qcow2),
        Ok(()) => Ok(ImageFormat::Raw),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(ImageFormat::Raw),
        Err(e) => Err(e),
    }
}

pub trait DiskImage: Send {
    /// Virtual size in bytes, as of the last `refresh_size`.
    fn size(&self) -> u64;
    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Makes written data durable (fdatasync for raw; metadata and data for qcow2).
    fn flush(&mut self) -> io::Result<()>;
    /// Makes the range read as zeroes, freeing space where the format can.
    fn zero(&mut self, offset: u64, len: u64) -> io::Result<()>;
    /// Re-reads the size (raw images grow when the file does); returns it.
    fn refresh_size(&mut self) -> u64 {
        self.size()
    }
    /// Reads the bytes at `offset` into guest buffers, in order. This default goes through
    /// a buffer; formats that can read straight into guest memory do.
    fn read_to_guest(&mut self, offset: u64, dst: &[VolatileSlice<'_>]) -> io::Result<()> {
        let mut at = offset;
        for slice in dst {
            let mut buf = vec![0u8; slice.len()];
            self.read_at(&mut buf, at)?;
            slice.copy_from(&buf);
            at += slice.len() as u64;
        }
        Ok(())
    }
    /// Writes guest buffers, in order, at `offset`. This default goes through a buffer.
    fn write_from_guest(&mut self, offset: u64, src: &[VolatileSlice<'_>]) -> io::Result<()> {
        let mut at = offset;
        for slice in src {
            let mut buf = vec![0u8; slice.len()];
            slice.copy_to(&mut buf);
            self.write_at(&buf, at)?;
            at += slice.len() as u64;
        }
        Ok(())
    }
}

fn volatile_err(e: vm_memory::VolatileMemoryError) -> io::Error {
    match e {
        vm_memory::VolatileMemoryError::IOError(e) => e,
        other => io::Error::other(other),
    }
}

/// Positions `file` at `offset` for the volatile (guest-memory) reads and writes, which
/// use the file position.
fn seek(mut file: &File, offset: u64) -> io::Result<()> {
    file.seek(SeekFrom::Start(offset)).map(drop)
}

pub struct RawImage {
    file: File,
    size: u64,
}

impl RawImage {
    pub fn new(file: File) -> io::Result<Self> {
        let size = file.metadata()?.len();
        Ok(RawImage { file, size })
    }
}

impl DiskImage for RawImage {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(buf, offset)
    }

    // Straight between the page cache and guest memory: one copy, as a host read has.
    fn read_to_guest(&mut self, offset: u64, dst: &[VolatileSlice<'_>]) -> io::Result<()> {
        seek(&self.file, offset)?;
        for slice in dst {
            self.file.read_exact_volatile(&mut slice.clone()).map_err(volatile_err)?;
        }
        Ok(())
    }

    fn write_from_guest(&mut self, offset: u64, src: &[VolatileSlice<'_>]) -> io::Result<()> {
        seek(&self.file, offset)?;
        for slice in src {
            self.file.write_all_volatile(slice).map_err(volatile_err)?;
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn zero(&mut self, offset: u64, len: u64) -> io::Result<()> {
        // Punching a hole both frees the space and reads back as zeroes.
        let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
        // SAFETY: fallocate on our own fd; no memory is involved.
        let r = unsafe { libc::fallocate(self.file.as_raw_fd(), mode, offset as i64, len as i64) };
        if r == 0 {
            return Ok(());
        }
        // No hole punching here (some filesystems): write zeroes.
        let zeros = vec![0u8; len.min(1 << 20) as usize];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(zeros.len() as u64) as usize;
            self.file.write_all_at(&zeros[..n], offset + done)?;
            done += n as u64;
        }
        Ok(())
    }

    fn refresh_size(&mut self) -> u64 {
        if let Ok(meta) = self.file.metadata() {
            self.size = meta.len();
        }
        self.size
    }
}

pub struct Qcow2Image {
    access: FormatAccess<imago::file::File>,
}

impl Qcow2Image {
    pub fn open(path: &Path, writable: bool) -> io::Result<Self> {
        let qcow2 = Qcow2::<imago::file::File>::builder_path(path)
            .write(writable)
            .open(PermissiveImplicitOpenGate::default())?;
        Ok(Qcow2Image { access: FormatAccess::new(qcow2) })
    }
}

impl DiskImage for Qcow2Image {
    fn size(&self) -> u64 {
        self.access.size()
    }

    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.access.read(buf, offset)
    }

    fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.access.write(buf, offset)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.access.flush()?;
        self.access.sync()
    }

    fn zero(&mut self, offset: u64, len: u64) -> io::Result<()> {
        self.access.write_zeroes(offset, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn have_qemu_img() -> bool {
        Command::new("qemu-img").arg("--version").output().is_ok_and(|o| o.status.success())
    }

    #[test]
    fn qcow2_writes_are_readable_by_qemu_img_and_check_clean() {
        assert!(have_qemu_img(), "qemu-img is needed: apt-get install qemu-utils");
        let dir = std::env::temp_dir().join(format!("vessel-qcow2-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let img = dir.join("disk.qcow2");
        let made = Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(&img)
            .arg("4M")
            .status();
        assert!(made.unwrap().success());
        assert_eq!(detect(&File::open(&img).unwrap()).unwrap(), ImageFormat::Qcow2);
        {
            let mut q = Qcow2Image::open(&img, true).unwrap();
            assert_eq!(q.size(), 4 << 20);
            let data: Vec<u8> = (0..8192u32).map(|i| (i % 251) as u8).collect();
            q.write_at(&data, 65536 + 512).unwrap();
            q.zero(65536 + 1024, 512).unwrap();
            q.flush().unwrap();
            let mut back = vec![0u8; 8192];
            q.read_at(&mut back, 65536 + 512).unwrap();
            assert_eq!(&back[..512], &data[..512]);
            assert!(back[512..1024].iter().all(|b| *b == 0));
            assert_eq!(&back[1024..], &data[1024..]);
        }
        let check = Command::new("qemu-img").args(["check", "-q"]).arg(&img).output().unwrap();
        assert!(
            check.status.success(),
            "qemu-img check: {}",
            String::from_utf8_lossy(&check.stdout)
        );
        let raw = dir.join("disk.raw");
        let conv =
            Command::new("qemu-img").args(["convert", "-O", "raw"]).arg(&img).arg(&raw).status();
        assert!(conv.unwrap().success());
        let bytes = std::fs::read(&raw).unwrap();
        assert_eq!(bytes[65536 + 512], 0);
        assert_eq!(bytes[65536 + 513], 1);
        assert!(bytes[65536 + 1024..65536 + 1536].iter().all(|b| *b == 0));
        let _ = std::fs::remove_dir_all(dir);
    }
}
