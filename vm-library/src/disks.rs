//! Disk images for bundles: sparse raw files and qcow2 through `imago` (whose images
//! `qemu-img check` finds clean), created, grown, inspected and imported.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use imago::qcow2::Qcow2;
use imago::{FormatAccess, FormatCreateBuilder, FormatDriverBuilder, PermissiveImplicitOpenGate};

use crate::config::DiskFormat;

/// Largest disk Vessel creates or grows to (qcow2's own limit is far above; this catches
/// unit mistakes such as bytes given as sectors).
pub const MAX_DISK_BYTES: u64 = 64 << 40;

#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("{path}: {cause}")]
    Io { path: PathBuf, cause: io::Error },
    #[error("{0} already exists; choose another file name")]
    Exists(PathBuf),
    #[error("a disk of {0} bytes is not possible: give a size from 1 MiB to 64 TiB, in whole MiB")]
    BadSize(u64),
    #[error("{path} is {current} bytes; it can only grow (asked for {asked})")]
    Shrink { path: PathBuf, current: u64, asked: u64 },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> DiskError + '_ {
    move |source| DiskError::Io { path: path.to_path_buf(), cause: source }
}

fn check_size(size: u64) -> Result<(), DiskError> {
    if !((1 << 20)..=MAX_DISK_BYTES).contains(&size) || !size.is_multiple_of(1 << 20) {
        return Err(DiskError::BadSize(size));
    }
    Ok(())
}

/// What a disk image file is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskInfo {
    pub format: DiskFormat,
    /// The size the guest sees.
    pub virtual_size: u64,
}

/// Tells raw from qcow2 by the magic, and reads the virtual size.
pub fn inspect(path: &Path) -> Result<DiskInfo, DiskError> {
    let mut file = File::open(path).map_err(io_err(path))?;
    let mut magic = [0u8; 4];
    let is_qcow2 = match file.read_exact(&mut magic) {
        Ok(()) => magic == *b"QFI\xfb",
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => false,
        Err(e) => return Err(io_err(path)(e)),
    };
    if is_qcow2 {
        let access = open_qcow2(path, false)?;
        Ok(DiskInfo { format: DiskFormat::Qcow2, virtual_size: access.size() })
    } else {
        let len = file.metadata().map_err(io_err(path))?.len();
        Ok(DiskInfo { format: DiskFormat::Raw, virtual_size: len })
    }
}

/// The image a qcow2 image reads through to (its backing file), resolved against the
/// image's folder; none for raw images and qcow2 images without one.
pub fn backing_file(path: &Path) -> Result<Option<PathBuf>, DiskError> {
    use std::os::unix::fs::FileExt;
    let file = File::open(path).map_err(io_err(path))?;
    let mut header = [0u8; 20];
    match file.read_exact_at(&mut header, 0) {
        Ok(()) if header[..4] == *b"QFI\xfb" => {}
        Ok(()) => return Ok(None),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(io_err(path)(e)),
    }
    // qcow2 header: backing_file_offset (u64 at 8), backing_file_size (u32 at 16).
    let offset = u64::from_be_bytes(header[8..16].try_into().expect("8 bytes"));
    let size = u32::from_be_bytes(header[16..20].try_into().expect("4 bytes"));
    if offset == 0 || size == 0 || size > 1023 {
        return Ok(None);
    }
    let mut name = vec![0u8; size as usize];
    file.read_exact_at(&mut name, offset).map_err(io_err(path))?;
    let name = PathBuf::from(String::from_utf8_lossy(&name).into_owned());
    Ok(Some(path.parent().unwrap_or(Path::new(".")).join(name)))
}

fn open_qcow2(path: &Path, writable: bool) -> Result<FormatAccess<imago::file::File>, DiskError> {
    let qcow2 = Qcow2::<imago::file::File>::builder_path(path)
        .write(writable)
        .open(PermissiveImplicitOpenGate::default())
        .map_err(io_err(path))?;
    Ok(FormatAccess::new(qcow2))
}

/// Creates an empty disk image of `size` bytes; raw images are sparse. With `backing`, a
/// qcow2 image reads what it has not written from that image (a linked clone); the
/// backing path is stored as given, so relative paths stay valid when the bundle moves.
pub fn create(
    path: &Path,
    format: DiskFormat,
    size: u64,
    backing: Option<(&Path, DiskFormat)>,
) -> Result<(), DiskError> {
    check_size(size)?;
    let file =
        File::options().read(true).write(true).create_new(true).open(path).map_err(|e| match e
            .kind()
        {
            io::ErrorKind::AlreadyExists => DiskError::Exists(path.to_path_buf()),
            _ => io_err(path)(e),
        })?;
    let made = match format {
        DiskFormat::Raw => file.set_len(size),
        DiskFormat::Qcow2 => (|| {
            let storage = imago::file::File::try_from(file)?;
            let mut builder = Qcow2::<imago::file::File>::create_builder(storage).size(size);
            if let Some((backing, backing_format)) = backing {
                let name = match backing_format {
                    DiskFormat::Raw => "raw",
                    DiskFormat::Qcow2 => "qcow2",
                };
                builder = builder.backing(backing.to_string_lossy().into_owned(), name.into());
            }
            builder.create()
        })(),
    };
    if let Err(e) = made {
        let _ = fs::remove_file(path);
        return Err(io_err(path)(e));
    }
    Ok(())
}

/// Grows a disk image to `new_size` bytes (the guest sees the new size at its next boot,
/// or at once on a running Vessel machine, which watches the file).
pub fn grow(path: &Path, new_size: u64) -> Result<(), DiskError> {
    check_size(new_size)?;
    let info = inspect(path)?;
    if new_size < info.virtual_size {
        return Err(DiskError::Shrink {
            path: path.to_path_buf(),
            current: info.virtual_size,
            asked: new_size,
        });
    }
    match info.format {
        DiskFormat::Raw => File::options()
            .write(true)
            .open(path)
            .and_then(|f| f.set_len(new_size))
            .map_err(io_err(path)),
        DiskFormat::Qcow2 => {
            let access = open_qcow2(path, true)?;
            access
                .resize_grow(new_size, imago::format::PreallocateMode::None)
                .and_then(|()| access.flush())
                .map_err(io_err(path))
        }
    }
}

/// Copies an existing image into `dest` (a bundle's `disks/` folder), keeping raw images
/// sparse; returns the copy's path and what it is.
pub fn import(src: &Path, dest_dir: &Path) -> Result<(PathBuf, DiskInfo), DiskError> {
    let info = inspect(src)?;
    let name = src.file_name().ok_or_else(|| io_err(src)(io::Error::other("no file name")))?;
    let dest = dest_dir.join(name);
    if dest.exists() {
        return Err(DiskError::Exists(dest));
    }
    copy_sparse(src, &dest).inspect_err(|_| {
        let _ = fs::remove_file(&dest);
    })?;
    Ok((dest, info))
}

/// Copies a file, leaving holes where the source has holes (SEEK_DATA/SEEK_HOLE).
pub fn copy_sparse(src: &Path, dest: &Path) -> Result<(), DiskError> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::FileExt;
    let from = File::open(src).map_err(io_err(src))?;
    let len = from.metadata().map_err(io_err(src))?.len();
    let to = File::options().write(true).create_new(true).open(dest).map_err(io_err(dest))?;
    to.set_len(len).map_err(io_err(dest))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut at: i64 = 0;
    while (at as u64) < len {
        // SAFETY: lseek on an fd this function owns; the result is checked.
        let data = unsafe { libc::lseek(from.as_raw_fd(), at, libc::SEEK_DATA) };
        if data < 0 {
            break; // ENXIO: only a hole remains
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(from.as_raw_fd(), data, libc::SEEK_HOLE) };
        let end = if hole < 0 { len as i64 } else { hole };
        let mut pos = data as u64;
        while pos < end as u64 {
            let n = buf.len().min((end as u64 - pos) as usize);
            from.read_exact_at(&mut buf[..n], pos).map_err(io_err(src))?;
            to.write_all_at(&buf[..n], pos).map_err(io_err(dest))?;
            pos += n as u64;
        }
        at = end;
    }
    to.sync_all().map_err(io_err(dest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;
    use std::process::Command;

    fn scratch(name: &str) -> PathBuf {
        crate::test_util::scratch("disks", name)
    }

    fn qemu_img(args: &[&str], path: &Path) -> String {
        let out = Command::new("qemu-img")
            .args(args)
            .arg(path)
            .output()
            .expect("qemu-img is needed: apt-get install qemu-utils");
        assert!(
            out.status.success(),
            "qemu-img {args:?}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    #[test]
    fn raw_images_are_sparse_and_grow() {
        let dir = scratch("raw");
        let path = dir.join("a.raw");
        create(&path, DiskFormat::Raw, 64 << 20, None).unwrap();
        assert_eq!(
            inspect(&path).unwrap(),
            DiskInfo { format: DiskFormat::Raw, virtual_size: 64 << 20 }
        );
        assert_eq!(fs::metadata(&path).unwrap().blocks(), 0, "sparse");
        grow(&path, 128 << 20).unwrap();
        assert_eq!(inspect(&path).unwrap().virtual_size, 128 << 20);
        assert!(matches!(grow(&path, 64 << 20), Err(DiskError::Shrink { .. })));
        assert!(matches!(
            create(&path, DiskFormat::Raw, 64 << 20, None),
            Err(DiskError::Exists(_))
        ));
        for bad in [0, 1000, 3 << 19, MAX_DISK_BYTES + (1 << 20)] {
            assert!(matches!(
                create(&dir.join("b"), DiskFormat::Raw, bad, None),
                Err(DiskError::BadSize(_))
            ));
        }
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn qcow2_images_pass_qemu_img_check_grow_and_back_linked_clones() {
        let dir = scratch("qcow2");
        let base = dir.join("base.qcow2");
        create(&base, DiskFormat::Qcow2, 64 << 20, None).unwrap();
        qemu_img(&["check", "-q"], &base);
        assert!(qemu_img(&["info"], &base).contains("virtual size: 64 MiB"));
        assert_eq!(
            inspect(&base).unwrap(),
            DiskInfo { format: DiskFormat::Qcow2, virtual_size: 64 << 20 }
        );
        // Data written into the base shows through a linked clone, which qemu-img reads.
        {
            let access = open_qcow2(&base, true).unwrap();
            let data: Vec<u8> = (0..65536u32).map(|i| (i % 253) as u8).collect();
            access.write(&data[..], 1 << 20).unwrap();
            access.flush().unwrap();
        }
        let clone = dir.join("clone.qcow2");
        create(
            &clone,
            DiskFormat::Qcow2,
            64 << 20,
            Some((Path::new("base.qcow2"), DiskFormat::Qcow2)),
        )
        .unwrap();
        qemu_img(&["check", "-q"], &clone);
        assert!(qemu_img(&["info"], &clone).contains("backing file: base.qcow2"));
        assert_eq!(backing_file(&clone).unwrap(), Some(dir.join("base.qcow2")));
        assert_eq!(backing_file(&base).unwrap(), None);
        let raw = dir.join("clone.raw");
        let status =
            Command::new("qemu-img").args(["convert", "-O", "raw"]).arg(&clone).arg(&raw).status();
        assert!(status.unwrap().success());
        let bytes = fs::read(&raw).unwrap();
        assert_eq!(bytes[(1 << 20) + 300], (300 % 253) as u8);
        grow(&base, 256 << 20).unwrap();
        qemu_img(&["check", "-q"], &base);
        assert!(qemu_img(&["info"], &base).contains("virtual size: 256 MiB"));
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn imports_keep_holes() {
        let dir = scratch("import");
        let src = dir.join("src.raw");
        let f = File::create(&src).unwrap();
        f.set_len(32 << 20).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, b"hello", 16 << 20).unwrap();
        drop(f);
        let dest_dir = dir.join("disks");
        fs::create_dir_all(&dest_dir).unwrap();
        let (dest, info) = import(&src, &dest_dir).unwrap();
        assert_eq!(info.virtual_size, 32 << 20);
        assert_eq!(fs::read(&dest).unwrap(), fs::read(&src).unwrap());
        assert!(fs::metadata(&dest).unwrap().blocks() < 1024, "holes stay holes");
        assert!(matches!(import(&src, &dest_dir), Err(DiskError::Exists(_))));
        assert!(import(&dir.join("missing.raw"), &dest_dir).is_err());
        let _ = fs::remove_dir_all(dir);
    }
}
