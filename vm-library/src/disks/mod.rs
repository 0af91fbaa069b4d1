//! Disk images for bundles: sparse raw files and qcow2 through `imago` (whose images
//! `qemu-img check` finds clean), created, grown, inspected and imported.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use imago::qcow2::Qcow2;
use imago::{DenyImplicitOpenGate, FormatAccess, FormatCreateBuilder, FormatDriverBuilder};

use crate::config::DiskFormat;

mod layers;
pub(crate) use layers::open_chain;
pub use layers::{commit_into, drop_backing, flatten, own_ranges, pull_into};

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
    #[error("{path} is not a qcow2 image Vessel can read ({cause}); is its format right?")]
    NotQcow2 { path: PathBuf, cause: io::Error },
    #[error("disk {disk} {why}: {target}; Vessel refuses it. To use it, {FLATTEN}")]
    Refused { disk: PathBuf, target: String, why: String },
    #[error(
        "{path} looks like {} but is named as {named:?}; say which it is with --format raw or \
         --format qcow2", if *named == DiskFormat::Qcow2 { "a raw image" } else { "a qcow2 image" }
    )]
    Ambiguous { path: PathBuf, named: DiskFormat },
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

/// Longest backing chain a qcow2 image may have (the image itself not counted).
/// Deep enough for a long line of snapshots (each adds one image), as VMware's 31.
pub const MAX_BACKING_CHAIN: usize = 32;

/// Where the images a qcow2 image reads through (its backing files) may be: files under
/// the VM's own folder, and the read-only bases of linked clones in the library. Anything
/// else — a host file, another VM's live disk — is refused.
#[derive(Clone, Debug, Default)]
pub struct BackingPolicy {
    /// Folders (canonical) whose files may be backing files.
    folders: Vec<PathBuf>,
    /// Single files (canonical) that may be backing files.
    files: Vec<PathBuf>,
}

impl BackingPolicy {
    /// No backing files at all: an image to be copied in on its own.
    pub fn none() -> Self {
        BackingPolicy::default()
    }

    /// Files under `folder` (a VM's bundle) may back its images.
    pub fn within(folder: &Path) -> Result<Self, DiskError> {
        let folder = fs::canonicalize(folder).map_err(io_err(folder))?;
        Ok(BackingPolicy { folders: vec![folder], files: Vec::new() })
    }

    /// `file`, if it exists, may back images too (a linked clone's base).
    pub fn allow_file(&mut self, file: &Path) {
        if let Ok(file) = fs::canonicalize(file) {
            self.files.push(file);
        }
    }

    /// May the file at `canonical` (a resolved path) back an image?
    pub fn allows(&self, canonical: &Path) -> bool {
        self.files.iter().any(|f| f == canonical)
            || self.folders.iter().any(|d| canonical.starts_with(d))
    }
}

/// One image of a backing chain: its file (canonical) and its format, as its child's
/// header states it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layer {
    pub path: PathBuf,
    pub format: DiskFormat,
}

/// What to tell a user whose image breaks the policy.
const FLATTEN: &str = "flatten it into one image (qemu-img convert -O qcow2 IMAGE FLAT.qcow2) \
                       and attach that (vessel disk-add VM FLAT.qcow2)";

/// `path` as imago storage that does not know its own name, so imago can resolve no
/// file name in a header against it: Vessel decides what is opened.
fn storage(path: &Path, writable: bool) -> Result<imago::file::File, DiskError> {
    let file = crate::files::open_regular(path, writable).map_err(io_err(path))?;
    imago::file::File::try_from(file).map_err(io_err(path))
}

/// The qcow2 header of `path`, without opening anything it names.
fn qcow2_header(path: &Path, writable: bool) -> Result<Qcow2<imago::file::File>, DiskError> {
    let not_qcow2 = |cause| DiskError::NotQcow2 { path: path.to_path_buf(), cause };
    check_extensions(path).map_err(not_qcow2)?;
    Qcow2::<imago::file::File>::open_image(storage(path, writable)?, writable).map_err(not_qcow2)
}

/// The feature name table header extension (qcow2 spec, "Feature name table").
const EXT_FEATURE_NAMES: u32 = 0x6803_f857;

/// Refuses header extensions imago 0.2.6 would panic on: a feature name table whose
/// length is not whole 48-byte entries (it indexes past a short last entry). The walk is
/// bounded by the header's cluster and the bytes read.
fn check_extensions(path: &Path) -> Result<(), io::Error> {
    let bad = |why: &str| io::Error::new(io::ErrorKind::InvalidData, why.to_string());
    let mut head = Vec::new();
    let file = crate::files::open_regular(path, false)?;
    // The header and its extensions live in the first cluster (at most 2 MiB).
    file.take(2 << 20).read_to_end(&mut head)?;
    let be32 = |at: usize| head.get(at..at + 4).map(|b| u32::from_be_bytes(b.try_into().unwrap()));
    if head.get(..4) != Some(b"QFI\xfb") {
        return Ok(()); // not qcow2: imago says so
    }
    let version = be32(4).unwrap_or(0);
    let cluster_bits = be32(20).unwrap_or(0);
    let end = if (9..=21).contains(&cluster_bits) { 1usize << cluster_bits } else { return Ok(()) };
    let mut at = if version >= 3 { be32(100).unwrap_or(0) as usize } else { 72 };
    while at + 8 <= end.min(head.len()) {
        let (kind, len) = (be32(at).unwrap_or(0), be32(at + 4).unwrap_or(0) as usize);
        if kind == 0 {
            break;
        }
        if kind == EXT_FEATURE_NAMES && len % 48 != 0 {
            return Err(bad("its feature name table is not whole 48-byte entries"));
        }
        at = at.saturating_add(8).saturating_add(len.next_multiple_of(8));
    }
    Ok(())
}

/// The images `path` (of `format`, as the configuration states it) reads through, outermost
/// first, each checked against `policy`: no external data file, every backing file's
/// format stated in its child's header (never probed), allowed by the policy, at most
/// `MAX_BACKING_CHAIN` deep, no loop. A raw image reads through nothing, whatever its
/// bytes say.
pub fn backing_chain(
    path: &Path,
    format: DiskFormat,
    policy: &BackingPolicy,
) -> Result<Vec<Layer>, DiskError> {
    let mut chain: Vec<Layer> = Vec::new();
    let (mut at, mut at_format) = (path.to_path_buf(), format);
    let mut seen = vec![fs::canonicalize(path).map_err(io_err(path))?];
    while at_format == DiskFormat::Qcow2 {
        let header = qcow2_header(&at, false)?;
        let refused = |target: String, why: &str| DiskError::Refused {
            disk: path.to_path_buf(),
            target,
            why: why.to_string(),
        };
        if header.requires_external_data_file() {
            let target = header.implicit_external_data_file().cloned().unwrap_or_default();
            return Err(refused(target, "keeps its data in an external data file"));
        }
        let Some(name) = header.implicit_backing_file() else { break };
        let target = at.parent().unwrap_or(Path::new(".")).join(name);
        let shown = target.display().to_string();
        let next_format = match header.implicit_backing_format().map(String::as_str) {
            Some("qcow2") => DiskFormat::Qcow2,
            Some("raw") | Some("file") => DiskFormat::Raw,
            Some(other) => {
                return Err(refused(
                    shown,
                    &format!("names a backing format Vessel does not read ({other})"),
                ));
            }
            None => return Err(refused(shown, "names a backing file without stating its format")),
        };
        if chain.len() == MAX_BACKING_CHAIN {
            return Err(refused(shown, &format!("is deeper than {MAX_BACKING_CHAIN} images")));
        }
        let canonical = match fs::canonicalize(&target) {
            Ok(c) => c,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(refused(shown, "reads through a file that does not exist"));
            }
            Err(e) => return Err(io_err(&target)(e)),
        };
        if seen.contains(&canonical) {
            return Err(refused(shown, "loops back on itself"));
        }
        if !policy.allows(&canonical) || !canonical.is_file() {
            return Err(refused(shown, "reads through a file outside this VM"));
        }
        seen.push(canonical.clone());
        chain.push(Layer { path: canonical.clone(), format: next_format });
        (at, at_format) = (canonical, next_format);
    }
    Ok(chain)
}

/// The size the guest sees of the image at `path`, in the stated `format` (the bytes
/// never decide the format).
pub fn inspect(path: &Path, format: DiskFormat) -> Result<DiskInfo, DiskError> {
    let virtual_size = match format {
        DiskFormat::Qcow2 => FormatAccess::new(qcow2_header(path, false)?).size(),
        DiskFormat::Raw => fs::metadata(path).map_err(io_err(path))?.len(),
    };
    Ok(DiskInfo { format, virtual_size })
}

/// The image a qcow2 image names as its backing file, resolved against the image's
/// folder (not checked: for finding linked clones); none for raw images and qcow2 images
/// without one.
pub fn backing_file(path: &Path, format: DiskFormat) -> Result<Option<PathBuf>, DiskError> {
    if format == DiskFormat::Raw {
        return Ok(None);
    }
    let header = qcow2_header(path, false)?;
    Ok(header
        .implicit_backing_file()
        .map(|name| path.parent().unwrap_or(Path::new(".")).join(name)))
}

/// The backing file a qcow2 image's header names, as it names it (relative to the image's
/// folder, unresolved and unchecked), and its format; none for raw images and qcow2
/// images without one. For making an image that reads through the same name.
pub fn backing_name(
    path: &Path,
    format: DiskFormat,
) -> Result<Option<(PathBuf, DiskFormat)>, DiskError> {
    if format == DiskFormat::Raw {
        return Ok(None);
    }
    let header = qcow2_header(path, false)?;
    let Some(name) = header.implicit_backing_file() else { return Ok(None) };
    let backing_format = match header.implicit_backing_format().map(String::as_str) {
        Some("qcow2") => DiskFormat::Qcow2,
        Some("raw") | Some("file") => DiskFormat::Raw,
        other => {
            return Err(DiskError::Refused {
                disk: path.to_path_buf(),
                target: name.clone(),
                why: format!("names its backing file's format as {other:?}"),
            });
        }
    };
    Ok(Some((PathBuf::from(name), backing_format)))
}

/// The format an image a user hands in is in: the one they state, or else the one its
/// name says (`.qcow2`; anything else is raw). An image whose first bytes contradict an
/// unstated format is refused rather than guessed at.
pub fn format_of_import(path: &Path, stated: Option<DiskFormat>) -> Result<DiskFormat, DiskError> {
    if let Some(format) = stated {
        return Ok(format);
    }
    let named = if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("qcow2")) {
        DiskFormat::Qcow2
    } else {
        DiskFormat::Raw
    };
    let mut magic = [0u8; 4];
    let mut file = crate::files::open_regular(path, false).map_err(io_err(path))?;
    let has_magic = match file.read_exact(&mut magic) {
        Ok(()) => magic == *b"QFI\xfb",
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => false,
        Err(e) => return Err(io_err(path)(e)),
    };
    if has_magic != (named == DiskFormat::Qcow2) {
        return Err(DiskError::Ambiguous { path: path.to_path_buf(), named });
    }
    Ok(named)
}

/// Opens a qcow2 image for a metadata change (growing it): its backing files are not
/// opened (they are not needed), and an image with an external data file is refused.
fn open_qcow2(path: &Path, writable: bool) -> Result<FormatAccess<imago::file::File>, DiskError> {
    let qcow2 = Qcow2::<imago::file::File>::builder(storage(path, writable)?)
        .write(writable)
        .backing(None)
        .data_file(None)
        .open(DenyImplicitOpenGate::default())
        .map_err(io_err(path))?;
    if qcow2.requires_external_data_file() {
        return Err(DiskError::Refused {
            disk: path.to_path_buf(),
            target: qcow2.implicit_external_data_file().cloned().unwrap_or_default(),
            why: "keeps its data in an external data file".into(),
        });
    }
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
    create_image(path, format, size, backing)
}

/// `create` for an image that must match one that exists (an overlay on a disk, a copy of
/// one), whatever its size.
pub(crate) fn create_image(
    path: &Path,
    format: DiskFormat,
    size: u64,
    backing: Option<(&Path, DiskFormat)>,
) -> Result<(), DiskError> {
    let file = crate::files::create_private(path).map_err(|e| match e.kind() {
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
pub fn grow(path: &Path, format: DiskFormat, new_size: u64) -> Result<(), DiskError> {
    check_size(new_size)?;
    let info = inspect(path, format)?;
    if new_size < info.virtual_size {
        return Err(DiskError::Shrink {
            path: path.to_path_buf(),
            current: info.virtual_size,
            asked: new_size,
        });
    }
    match info.format {
        DiskFormat::Raw => crate::files::open_regular(path, true)
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

/// Copies an existing image of `format` into `dest` (a bundle's `disks/` folder), keeping
/// raw images sparse; returns the copy's path and what it is. A qcow2 image that reads
/// through another file (a backing or data file) is refused before anything is copied:
/// the copy would stand alone in the bundle.
pub fn import(
    src: &Path,
    format: DiskFormat,
    dest_dir: &Path,
) -> Result<(PathBuf, DiskInfo), DiskError> {
    backing_chain(src, format, &BackingPolicy::none())?;
    let info = inspect(src, format)?;
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

/// The ranges (offset, length) of `file` (`len` bytes) that hold data, the holes left
/// out (SEEK_DATA/SEEK_HOLE); all of it where the file system cannot tell.
pub(crate) fn data_ranges(file: &fs::File, len: u64) -> Vec<(u64, u64)> {
    use std::os::fd::AsRawFd;
    let mut ranges = Vec::new();
    let mut at: i64 = 0;
    // Each step moves past one stretch of data, so the loop ends.
    while (at as u64) < len {
        // SAFETY: lseek on an fd the caller holds open; the result is checked.
        let data = unsafe { libc::lseek(file.as_raw_fd(), at, libc::SEEK_DATA) };
        if data < 0 {
            if at == 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::ENXIO) {
                return vec![(0, len)]; // no SEEK_DATA here: all of it
            }
            break; // ENXIO: only a hole remains
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(file.as_raw_fd(), data, libc::SEEK_HOLE) };
        let end = if hole <= data { len as i64 } else { hole.min(len as i64) };
        if end <= data {
            break;
        }
        ranges.push((data as u64, (end - data) as u64));
        at = end;
    }
    ranges
}

/// Copies a file into a new private file, leaving holes where the source has holes
/// (SEEK_DATA/SEEK_HOLE).
pub fn copy_sparse(src: &Path, dest: &Path) -> Result<(), DiskError> {
    use std::os::unix::fs::FileExt;
    let from = crate::files::open_regular(src, false).map_err(io_err(src))?;
    let len = from.metadata().map_err(io_err(src))?.len();
    let to = crate::files::create_private(dest).map_err(io_err(dest))?;
    to.set_len(len).map_err(io_err(dest))?;
    let mut buf = vec![0u8; 1 << 20];
    for (start, n) in data_ranges(&from, len) {
        let mut pos = start;
        while pos < start + n {
            let step = buf.len().min((start + n - pos) as usize);
            from.read_exact_at(&mut buf[..step], pos).map_err(io_err(src))?;
            to.write_all_at(&buf[..step], pos).map_err(io_err(dest))?;
            pos += step as u64;
        }
    }
    to.sync_all().map_err(io_err(dest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
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
            inspect(&path, DiskFormat::Raw).unwrap(),
            DiskInfo { format: DiskFormat::Raw, virtual_size: 64 << 20 }
        );
        assert_eq!(fs::metadata(&path).unwrap().blocks(), 0, "sparse");
        grow(&path, DiskFormat::Raw, 128 << 20).unwrap();
        assert_eq!(inspect(&path, DiskFormat::Raw).unwrap().virtual_size, 128 << 20);
        assert!(matches!(grow(&path, DiskFormat::Raw, 64 << 20), Err(DiskError::Shrink { .. })));
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
            inspect(&base, DiskFormat::Qcow2).unwrap(),
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
        assert_eq!(backing_file(&clone, DiskFormat::Qcow2).unwrap(), Some(dir.join("base.qcow2")));
        assert_eq!(backing_file(&base, DiskFormat::Qcow2).unwrap(), None);
        let raw = dir.join("clone.raw");
        let status =
            Command::new("qemu-img").args(["convert", "-O", "raw"]).arg(&clone).arg(&raw).status();
        assert!(status.unwrap().success());
        let bytes = fs::read(&raw).unwrap();
        assert_eq!(bytes[(1 << 20) + 300], (300 % 253) as u8);
        grow(&base, DiskFormat::Qcow2, 256 << 20).unwrap();
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
        let (dest, info) = import(&src, DiskFormat::Raw, &dest_dir).unwrap();
        assert_eq!(info.virtual_size, 32 << 20);
        assert_eq!(fs::read(&dest).unwrap(), fs::read(&src).unwrap());
        assert!(fs::metadata(&dest).unwrap().blocks() < 1024, "holes stay holes");
        assert!(matches!(import(&src, DiskFormat::Raw, &dest_dir), Err(DiskError::Exists(_))));
        assert!(import(&dir.join("missing.raw"), DiskFormat::Raw, &dest_dir).is_err());
        let _ = fs::remove_dir_all(dir);
    }

    /// Runs qemu-img, which must succeed.
    fn make(args: &[&str]) {
        let out = Command::new("qemu-img").args(args).output().expect("qemu-img runs");
        assert!(
            out.status.success(),
            "qemu-img {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Makes `image` a qcow2 overlay on `backing` (a name as the header keeps it) of
    /// `format`.
    fn overlay(image: &str, backing: &str, format: &str) {
        make(&["create", "-q", "-f", "qcow2", "-F", format, "-b", backing, image]);
    }

    fn refused(result: Result<Vec<Layer>, DiskError>, why: &str) -> String {
        match result {
            Err(e @ DiskError::Refused { .. }) => {
                let text = e.to_string();
                assert!(text.contains(why), "{text}");
                assert!(text.contains("qemu-img convert"), "says how to fix it: {text}");
                text
            }
            other => panic!("expected a refusal ({why}), got {other:?}"),
        }
    }

    #[test]
    fn a_raw_disk_is_raw_whatever_its_bytes() {
        let dir = scratch("raw-header");
        let victim = dir.join("victim");
        fs::write(&victim, b"host secret").unwrap();
        // A raw disk holding a qcow2 header that names a host file, as a guest on it can
        // write one.
        let disk = dir.join("disk.raw");
        make(&[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-F",
            "raw",
            "-b",
            victim.to_str().unwrap(),
            disk.to_str().unwrap(),
            "1M",
        ]);
        let policy = BackingPolicy::within(&dir.join("..")).unwrap();
        assert_eq!(backing_chain(&disk, DiskFormat::Raw, &policy).unwrap(), []);
        assert_eq!(backing_file(&disk, DiskFormat::Raw).unwrap(), None);
        let len = fs::metadata(&disk).unwrap().len();
        assert_eq!(inspect(&disk, DiskFormat::Raw).unwrap().virtual_size, len);
        // Growing it as raw grows the file; the "header" is just bytes.
        grow(&disk, DiskFormat::Raw, 2 << 20).unwrap();
        assert_eq!(fs::metadata(&disk).unwrap().len(), 2 << 20);
        assert_eq!(fs::read(&victim).unwrap(), b"host secret");
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn qcow2_chains_are_checked_against_the_policy() {
        let dir = scratch("chains");
        let vm = dir.join("vm.vessel");
        fs::create_dir_all(&vm).unwrap();
        let outside = dir.join("outside.raw");
        fs::write(&outside, vec![7u8; 1 << 20]).unwrap();
        let policy = BackingPolicy::within(&vm).unwrap();
        let path = |name: &str| vm.join(name).to_str().unwrap().to_string();

        // Inside the bundle, formats stated: followed, canonical paths, outermost first.
        make(&["create", "-q", "-f", "raw", &path("base.raw"), "1M"]);
        overlay(&path("mid.qcow2"), "base.raw", "raw");
        overlay(&path("top.qcow2"), "mid.qcow2", "qcow2");
        let chain = backing_chain(&vm.join("top.qcow2"), DiskFormat::Qcow2, &policy).unwrap();
        let real = fs::canonicalize(&vm).unwrap();
        assert_eq!(
            chain,
            [
                Layer { path: real.join("mid.qcow2"), format: DiskFormat::Qcow2 },
                Layer { path: real.join("base.raw"), format: DiskFormat::Raw },
            ]
        );

        // A backing file outside the VM, by absolute path or by "..".
        overlay(&path("abs.qcow2"), outside.to_str().unwrap(), "raw");
        refused(
            backing_chain(&vm.join("abs.qcow2"), DiskFormat::Qcow2, &policy),
            "outside this VM",
        );
        overlay(&path("rel.qcow2"), "../outside.raw", "raw");
        let text =
            refused(backing_chain(&vm.join("rel.qcow2"), DiskFormat::Qcow2, &policy), "outside");
        assert!(text.contains("outside.raw"), "names the file: {text}");
        // ... unless the policy allows that one file (a linked clone's base).
        let mut with_base = policy.clone();
        with_base.allow_file(&outside);
        assert_eq!(
            backing_chain(&vm.join("abs.qcow2"), DiskFormat::Qcow2, &with_base).unwrap().len(),
            1
        );
        // A symlink inside leading out.
        std::os::unix::fs::symlink(&outside, vm.join("link.raw")).unwrap();
        overlay(&path("sym.qcow2"), "link.raw", "raw");
        refused(backing_chain(&vm.join("sym.qcow2"), DiskFormat::Qcow2, &policy), "outside");

        // No backing format stated: refused, never probed.
        // (qemu-img no longer writes such images: the backing format header extension,
        // 0xe2792aca, is renamed to one nobody knows.)
        overlay(&path("nofmt.qcow2"), "base.raw", "raw");
        let mut bytes = fs::read(vm.join("nofmt.qcow2")).unwrap();
        let at = bytes[..4096].windows(4).position(|w| w == [0xe2, 0x79, 0x2a, 0xca]).unwrap();
        bytes[at..at + 4].copy_from_slice(&[0x0e, 0x55, 0x5e, 0x11]);
        fs::write(vm.join("nofmt.qcow2"), bytes).unwrap();
        let info = Command::new("qemu-img").args(["info", &path("nofmt.qcow2")]).output().unwrap();
        assert!(!String::from_utf8_lossy(&info.stdout).contains("backing file format"));
        refused(
            backing_chain(&vm.join("nofmt.qcow2"), DiskFormat::Qcow2, &policy),
            "without stating its format",
        );

        // Its own backing file: a loop.
        make(&["create", "-q", "-f", "qcow2", &path("self.qcow2"), "1M"]);
        make(&["rebase", "-q", "-u", "-F", "qcow2", "-b", "self.qcow2", &path("self.qcow2")]);
        refused(backing_chain(&vm.join("self.qcow2"), DiskFormat::Qcow2, &policy), "loops");

        // A chain of 33 backing files under the top: one too deep. 32 is fine.
        make(&["create", "-q", "-f", "qcow2", &path("c0.qcow2"), "1M"]);
        for i in 1..=33 {
            let below = format!("c{}.qcow2", i - 1);
            overlay(&path(&format!("c{i}.qcow2")), &below, "qcow2");
        }
        assert_eq!(
            backing_chain(&vm.join("c32.qcow2"), DiskFormat::Qcow2, &policy).unwrap().len(),
            32
        );
        refused(backing_chain(&vm.join("c33.qcow2"), DiskFormat::Qcow2, &policy), "deeper than 32");

        // An external data file (qemu-img makes it, outside the VM).
        let data = dir.join("data.bin");
        make(&[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            &format!("data_file={}", data.display()),
            &path("data.qcow2"),
            "1M",
        ]);
        refused(
            backing_chain(&vm.join("data.qcow2"), DiskFormat::Qcow2, &policy),
            "external data file",
        );
        assert!(grow(&vm.join("data.qcow2"), DiskFormat::Qcow2, 2 << 20).is_err());

        // A file that is not qcow2 at all, said to be qcow2.
        let err = backing_chain(&outside, DiskFormat::Qcow2, &policy).unwrap_err();
        assert!(matches!(err, DiskError::NotQcow2 { .. }), "{err}");
        assert!(fs::read(&outside).unwrap() == vec![7u8; 1 << 20], "the outside file is untouched");
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn imports_refuse_images_that_read_other_files_and_never_guess() {
        let dir = scratch("import-policy");
        let dest = dir.join("disks");
        fs::create_dir_all(&dest).unwrap();
        let base = dir.join("base.raw");
        fs::write(&base, vec![1u8; 1 << 20]).unwrap();
        let top = dir.join("overlay.qcow2");
        overlay(top.to_str().unwrap(), base.to_str().unwrap(), "raw");
        assert!(matches!(import(&top, DiskFormat::Qcow2, &dest), Err(DiskError::Refused { .. })));
        assert_eq!(fs::read_dir(&dest).unwrap().count(), 0, "nothing copied");
        // The format comes from what the user says, or the name; bytes only refuse.
        assert_eq!(format_of_import(&top, None).unwrap(), DiskFormat::Qcow2);
        assert_eq!(format_of_import(&base, None).unwrap(), DiskFormat::Raw);
        let disguised = dir.join("disguised.img");
        fs::copy(&top, &disguised).unwrap();
        let err = format_of_import(&disguised, None).unwrap_err();
        assert!(err.to_string().contains("--format"), "{err}");
        assert_eq!(format_of_import(&disguised, Some(DiskFormat::Raw)).unwrap(), DiskFormat::Raw);
        // Stated raw, it is copied as the bytes it is, backing name and all.
        let (copy, info) = import(&disguised, DiskFormat::Raw, &dest).unwrap();
        assert_eq!(info.format, DiskFormat::Raw);
        assert_eq!(fs::read(&copy).unwrap(), fs::read(&disguised).unwrap());
        assert_eq!(fs::metadata(&copy).unwrap().mode() & 0o777, 0o600, "private");
        let _ = fs::remove_dir_all(dir);
    }

    /// Found by the qcow2_policy fuzz target: a feature name table of 0x70 bytes (two
    /// entries and a short one) made imago index past its end and panic.
    #[test]
    fn a_short_feature_name_entry_is_refused_not_a_panic() {
        let dir =
            std::env::temp_dir().join(format!("vessel-disk-featnames-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bad.qcow2");
        let mut image = vec![0u8; 0x200];
        image[..4].copy_from_slice(b"QFI\xfb");
        image[4..8].copy_from_slice(&3u32.to_be_bytes()); // version 3
        image[20..24].copy_from_slice(&16u32.to_be_bytes()); // 64 KiB clusters
        image[100..104].copy_from_slice(&104u32.to_be_bytes()); // header length
        image[104..108].copy_from_slice(&EXT_FEATURE_NAMES.to_be_bytes());
        image[108..112].copy_from_slice(&0x70u32.to_be_bytes());
        fs::write(&path, &image).unwrap();
        let err = backing_chain(&path, DiskFormat::Qcow2, &BackingPolicy::none()).unwrap_err();
        assert!(err.to_string().contains("feature name table"), "{err}");
        let _ = fs::remove_dir_all(dir);
    }
}
