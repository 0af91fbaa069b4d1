//! Disk images as the device models see them: byte-addressed reads and writes, flush,
//! zeroing, size. Raw images are plain files (sparse, hole punching); qcow2 goes through
//! `imago` (written by a QEMU block-layer maintainer), which keeps its metadata consistent
//! so `qemu-img check` finds nothing wrong.
//!
//! An image's format is never guessed from its bytes: a guest on a raw disk can write a
//! qcow2 header into it (QEMU's CVE-2008-2004), and an image that named a host file as
//! its backing or data file would hand that file to the guest. The machine's configuration
//! states each image's format and every image it reads through (`Layer`); a qcow2 image
//! opens with exactly those, whatever its header names, and never with a data file.

use std::fs::File;
use std::io::{self, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use imago::qcow2::Qcow2;
use imago::raw::Raw;
use imago::{DenyImplicitOpenGate, FormatAccess, FormatDriverBuilder};
use vm_memory::{ReadVolatile, WriteVolatile};

use crate::vstate::memory::GuestSlice;

/// The image formats Vessel reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageFormat {
    Raw,
    Qcow2,
}

/// One image a qcow2 image reads through to (its backing file), as the configuration
/// names it: the VM library checked that it is the VM's own file, or a linked clone's base.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layer {
    pub path: PathBuf,
    pub format: ImageFormat,
}

/// A disk image as the configuration states it: its file, its format, and for qcow2 the
/// images it reads through (empty for raw images and qcow2 images without a backing file).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageSpec {
    pub path: PathBuf,
    pub format: ImageFormat,
    pub backing: Vec<Layer>,
}

impl ImageSpec {
    pub fn raw(path: impl Into<PathBuf>) -> Self {
        ImageSpec { path: path.into(), format: ImageFormat::Raw, backing: Vec::new() }
    }

    /// A qcow2 image with no backing file (one that names a backing file in its header
    /// reads zeroes where it has no data: the name is not followed).
    pub fn qcow2(path: impl Into<PathBuf>) -> Self {
        ImageSpec { path: path.into(), format: ImageFormat::Qcow2, backing: Vec::new() }
    }

    /// Opens the image; `file` is the image file already opened (and locked) by the caller.
    pub fn open(&self, file: &File, writable: bool) -> io::Result<Box<dyn DiskImage>> {
        match self.format {
            ImageFormat::Raw if self.backing.is_empty() => {
                Ok(Box::new(RawImage::new(file.try_clone()?)?))
            }
            ImageFormat::Raw => Err(refuse(format!(
                "{} is raw, so it cannot read through to {}",
                self.path.display(),
                self.backing[0].path.display()
            ))),
            ImageFormat::Qcow2 => Ok(Box::new(Qcow2Image::open(
                &self.path,
                file.try_clone()?,
                writable,
                &self.backing,
            )?)),
        }
    }
}

/// Longest backing chain opened (the top image not counted), as the VM library allows.
pub const MAX_BACKING_CHAIN: usize = 32;

/// What a stretch of an image holds, as a disk copy (`migration`'s `--copy-disks`) needs
/// to know: what a fresh image of the same format and backing would read differently.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Extent {
    /// Data of this image's own (it may be zeroes written out).
    Data,
    /// Zeroes this image states (a qcow2 zero cluster over a backing image with data).
    Zero,
    /// Nothing of this image's own: a hole of a raw image, or a qcow2 cluster read from
    /// the images below (or as zeroes with none). A fresh image reads the same there.
    Unallocated,
}

pub trait DiskImage: Send {
    /// Virtual size in bytes, as of the last `refresh_size`.
    fn size(&self) -> u64;
    /// What the image holds from `offset`, and for how many bytes (at least 1); None at
    /// the end. This default says data everywhere.
    fn extent(&mut self, offset: u64) -> io::Result<Option<(Extent, u64)>> {
        let size = self.size();
        Ok((offset < size).then(|| (Extent::Data, size - offset)))
    }
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
    fn read_to_guest(&mut self, offset: u64, dst: &[GuestSlice<'_>]) -> io::Result<()> {
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
    fn write_from_guest(&mut self, offset: u64, src: &[GuestSlice<'_>]) -> io::Result<()> {
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

    // Holes and data as the filesystem keeps them (SEEK_DATA, SEEK_HOLE).
    fn extent(&mut self, offset: u64) -> io::Result<Option<(Extent, u64)>> {
        if offset >= self.size {
            return Ok(None);
        }
        let fd = self.file.as_raw_fd();
        let seek = |whence| {
            // SAFETY: lseek on our own fd; it moves the file position, which every other
            // access sets before use (`seek`) or does not use (positioned reads and writes).
            let at = unsafe { libc::lseek(fd, offset as i64, whence) };
            if at < 0 { Err(io::Error::last_os_error()) } else { Ok(at as u64) }
        };
        let end = self.size;
        match seek(libc::SEEK_DATA) {
            Ok(data) if data > offset => Ok(Some((Extent::Unallocated, data.min(end) - offset))),
            Ok(_) => {
                let hole = seek(libc::SEEK_HOLE)?.clamp(offset + 1, end);
                Ok(Some((Extent::Data, hole - offset)))
            }
            // No data after `offset`: a hole to the end.
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {
                Ok(Some((Extent::Unallocated, end - offset)))
            }
            // A filesystem that cannot tell: data.
            Err(_) => Ok(Some((Extent::Data, end - offset))),
        }
    }

    fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(buf, offset)
    }

    // Straight between the page cache and guest memory: one copy, as a host read has.
    fn read_to_guest(&mut self, offset: u64, dst: &[GuestSlice<'_>]) -> io::Result<()> {
        seek(&self.file, offset)?;
        for slice in dst {
            self.file.read_exact_volatile(&mut slice.clone()).map_err(volatile_err)?;
        }
        Ok(())
    }

    fn write_from_guest(&mut self, offset: u64, src: &[GuestSlice<'_>]) -> io::Result<()> {
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

type ImagoFile = imago::file::File;

fn refuse(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::PermissionDenied, what)
}

/// Opens `path` as qcow2 reading through exactly `backing` (outermost first): the names
/// in the image headers are not followed, implicit opens are denied, and an image that
/// needs an external data file is refused.
fn open_qcow2(
    path: &Path,
    file: File,
    writable: bool,
    backing: &[Layer],
) -> io::Result<Qcow2<ImagoFile, FormatAccess<ImagoFile>>> {
    // A backing image is only read.
    let read_only = |layer: &Layer| -> io::Result<File> {
        File::open(&layer.path).map_err(|e| {
            io::Error::new(e.kind(), format!("backing file {}: {e}", layer.path.display()))
        })
    };
    let below = match backing.split_first() {
        None => None,
        Some((layer, rest)) => Some(match layer.format {
            ImageFormat::Qcow2 => {
                FormatAccess::new(open_qcow2(&layer.path, read_only(layer)?, false, rest)?)
            }
            ImageFormat::Raw if rest.is_empty() => FormatAccess::new(
                Raw::<ImagoFile>::builder(ImagoFile::try_from(read_only(layer)?)?)
                    .write(false)
                    .open(DenyImplicitOpenGate::default())?,
            ),
            ImageFormat::Raw => {
                return Err(refuse(format!(
                    "{} is raw, so it cannot read through to {}",
                    layer.path.display(),
                    rest[0].path.display()
                )));
            }
        }),
    };
    // The storage is handed in without its name, so imago can resolve no file name from
    // a header against it.
    let qcow2 = Qcow2::<ImagoFile>::builder(ImagoFile::try_from(file)?)
        .write(writable)
        .backing(below)
        .data_file(None)
        .open(DenyImplicitOpenGate::default())?;
    if qcow2.requires_external_data_file() {
        return Err(refuse(format!(
            "{} keeps its data in an external data file{}; Vessel never opens one (convert \
             it: qemu-img convert -O qcow2 IMAGE NEW.qcow2)",
            path.display(),
            qcow2.implicit_external_data_file().map(|f| format!(" ({f})")).unwrap_or_default()
        )));
    }
    Ok(qcow2)
}

impl Qcow2Image {
    /// Opens the qcow2 image in `file` (at `path`) that reads through `backing` (outermost
    /// first; at most `MAX_BACKING_CHAIN`), which are opened read-only.
    pub fn open(path: &Path, file: File, writable: bool, backing: &[Layer]) -> io::Result<Self> {
        if backing.len() > MAX_BACKING_CHAIN {
            return Err(refuse(format!(
                "{} reads through {} images; Vessel opens at most {MAX_BACKING_CHAIN}",
                path.display(),
                backing.len()
            )));
        }
        Ok(Qcow2Image { access: FormatAccess::new(open_qcow2(path, file, writable, backing)?) })
    }
}

impl DiskImage for Qcow2Image {
    fn size(&self) -> u64 {
        self.access.size()
    }

    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.access.read(buf, offset)
    }

    // This image's own clusters, not what it reads through to.
    fn extent(&mut self, offset: u64) -> io::Result<Option<(Extent, u64)>> {
        use imago::ShallowMapping;
        let size = self.access.size();
        if offset >= size {
            return Ok(None);
        }
        let (mapping, len) = self.access.get_shallow_mapping(offset, size - offset)?;
        let extent = match mapping {
            ShallowMapping::Eof { .. } => return Ok(None),
            ShallowMapping::Indirect { .. } | ShallowMapping::Zero { explicit: false, .. } => {
                Extent::Unallocated
            }
            ShallowMapping::Zero { .. } => Extent::Zero,
            // Raw clusters, and special ones (compressed): read as data.
            _ => Extent::Data,
        };
        Ok(Some((extent, len.clamp(1, size - offset))))
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
        {
            let file = File::options().read(true).write(true).open(&img).unwrap();
            let mut q = Qcow2Image::open(&img, file, true, &[]).unwrap();
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

    fn qemu_img(args: &[&str]) {
        let out = Command::new("qemu-img").args(args).output().expect("qemu-img runs");
        assert!(
            out.status.success(),
            "qemu-img {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn open(spec: &ImageSpec, writable: bool) -> io::Result<Box<dyn DiskImage>> {
        let file = File::options().read(true).write(writable).open(&spec.path)?;
        spec.open(&file, writable)
    }

    #[test]
    fn images_open_as_stated_and_read_only_what_the_spec_names() {
        assert!(have_qemu_img(), "qemu-img is needed: apt-get install qemu-utils");
        let dir = std::env::temp_dir().join(format!("vessel-image-spec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = |name: &str| dir.join(name).to_str().unwrap().to_string();
        let victim = dir.join("victim");
        std::fs::write(&victim, vec![0x5au8; 1 << 20]).unwrap();

        // A "raw" disk whose first bytes are a qcow2 header naming the victim as backing
        // file (what a guest can write): opened raw, it is those bytes and nothing more.
        qemu_img(&["create", "-q", "-f", "qcow2", "-F", "raw", "-b", &p("victim"), &p("disk.raw")]);
        let header = std::fs::read(dir.join("disk.raw")).unwrap();
        let mut raw = open(&ImageSpec::raw(dir.join("disk.raw")), true).unwrap();
        let mut back = vec![0u8; 512];
        raw.read_at(&mut back, 0).unwrap();
        assert_eq!(&back[..], &header[..512]);
        assert_eq!(raw.size(), header.len() as u64);

        // Opened as qcow2 without a backing layer, the name in its header is not followed:
        // it reads zeroes, and writes land in the image.
        let mut q = open(&ImageSpec::qcow2(dir.join("disk.raw")), true).unwrap();
        q.read_at(&mut back, 4096).unwrap();
        assert!(back.iter().all(|b| *b == 0), "the victim was read through the header's name");
        q.write_at(&[1u8; 512], 4096).unwrap();
        q.flush().unwrap();
        drop(q);
        assert!(std::fs::read(&victim).unwrap().iter().all(|b| *b == 0x5a), "victim changed");
        // With the layer stated, it reads through it (a linked clone).
        let spec = ImageSpec {
            path: dir.join("disk.raw"),
            format: ImageFormat::Qcow2,
            backing: vec![Layer { path: victim.clone(), format: ImageFormat::Raw }],
        };
        let mut q = open(&spec, false).unwrap();
        // (Beyond the 64 KiB cluster the write above allocated.)
        q.read_at(&mut back, 128 << 10).unwrap();
        assert!(back.iter().all(|b| *b == 0x5a));
        q.read_at(&mut back, 4096).unwrap();
        assert!(back.iter().all(|b| *b == 1));

        // An image keeping its data in an external file: refused, the file untouched.
        let data = dir.join("data.bin");
        qemu_img(&[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            &format!("data_file={}", data.display()),
            &p("ext.qcow2"),
            "1M",
        ]);
        std::fs::write(&data, vec![0x77u8; 1 << 20]).unwrap();
        let err = open(&ImageSpec::qcow2(dir.join("ext.qcow2")), true).err().expect("refused");
        assert!(err.to_string().contains("external data file"), "{err}");
        assert!(std::fs::read(&data).unwrap().iter().all(|b| *b == 0x77));

        // More layers than a chain may have: refused before anything is opened.
        let layer = Layer { path: victim.clone(), format: ImageFormat::Qcow2 };
        let deep = ImageSpec {
            path: dir.join("disk.raw"),
            format: ImageFormat::Qcow2,
            backing: vec![layer; MAX_BACKING_CHAIN + 1],
        };
        let err = open(&deep, false).err().expect("refused");
        assert!(err.to_string().contains(&format!("at most {MAX_BACKING_CHAIN}")), "{err}");
        // A raw layer cannot have layers under it; a raw image none at all.
        let mut bad = spec.clone();
        bad.backing.push(Layer { path: victim.clone(), format: ImageFormat::Raw });
        assert!(open(&bad, false).is_err());
        let mut bad = ImageSpec::raw(dir.join("disk.raw"));
        bad.backing = spec.backing.clone();
        assert!(open(&bad, false).is_err());
        let _ = std::fs::remove_dir_all(dir);
    }

    /// All extents of `image` from the start, merged where alike.
    fn extents(image: &mut dyn DiskImage) -> Vec<(Extent, u64, u64)> {
        let mut out: Vec<(Extent, u64, u64)> = Vec::new();
        let mut at = 0;
        while let Some((kind, len)) = image.extent(at).unwrap() {
            match out.last_mut() {
                Some((k, _, l)) if *k == kind => *l += len,
                _ => out.push((kind, at, len)),
            }
            at += len;
        }
        assert_eq!(at, image.size());
        out
    }

    #[test]
    fn extents_tell_an_images_own_data_from_holes_and_backing() {
        assert!(have_qemu_img(), "qemu-img is needed: apt-get install qemu-utils");
        let dir = std::env::temp_dir().join(format!("vessel-extents-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = |name: &str| dir.join(name).to_str().unwrap().to_string();

        // Raw: a sparse file with data in its second megabyte.
        let raw_path = dir.join("disk.raw");
        let file = File::create(&raw_path).unwrap();
        file.set_len(4 << 20).unwrap();
        file.write_all_at(&[7u8; 65536], 1 << 20).unwrap();
        let mut raw = open(&ImageSpec::raw(&raw_path), false).unwrap();
        let found = extents(raw.as_mut());
        let data: Vec<_> = found.iter().filter(|e| e.0 == Extent::Data).collect();
        assert_eq!(data.len(), 1, "{found:?}");
        assert!(data[0].1 <= 1 << 20 && data[0].1 + data[0].2 >= (1 << 20) + 65536, "{found:?}");
        assert!(data[0].2 <= 1 << 20, "the hole after it is a hole: {found:?}");

        // qcow2 over a backing image: the backing's data is not the overlay's own; what
        // the overlay wrote, and the zeroes it states, are.
        std::fs::write(dir.join("base.raw"), vec![9u8; 4 << 20]).unwrap();
        qemu_img(&[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-F",
            "raw",
            "-b",
            &p("base.raw"),
            &p("top.qcow2"),
        ]);
        let base = Layer { path: dir.join("base.raw"), format: ImageFormat::Raw };
        let spec = ImageSpec {
            path: dir.join("top.qcow2"),
            format: ImageFormat::Qcow2,
            backing: vec![base],
        };
        let mut top = open(&spec, true).unwrap();
        assert!(extents(top.as_mut()).iter().all(|e| e.0 == Extent::Unallocated));
        top.write_at(&[1u8; 65536], 2 << 20).unwrap();
        top.zero(0, 65536).unwrap();
        let found = extents(top.as_mut());
        assert!(found.contains(&(Extent::Zero, 0, 65536)), "{found:?}");
        assert!(found.contains(&(Extent::Data, 2 << 20, 65536)), "{found:?}");
        assert_eq!(found.iter().filter(|e| e.0 != Extent::Unallocated).count(), 2, "{found:?}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
