//! Backups of a VM: `vessel backup NAME [--to DIR]`, `vessel backups`, `vessel backup
//! verify`, `vessel restore`. A backup set is a folder of points and chunks:
//!
//! ```text
//! SET/
//!   vessel-backup.toml    the VM it backs up (uuid, name)
//!   points/<id>.toml      a point: its time, the VM's configuration, and each disk as
//!                         the list of its chunks' SHA-256 (empty: all zero)
//!   chunks/ab/abcdef…     a chunk of guest-visible disk data (4 MiB), named by its hash
//! ```
//!
//! Chunks are shared by every point of the set (deduplicated by hash), so a point after
//! the first stores only the chunks that changed. A chunk is written under a temporary
//! name and renamed when whole, and a point's file (crash-safe) only after all its
//! chunks: a backup killed part-way leaves the earlier points as they were. Verify and
//! restore read every chunk against its hash; a damaged chunk is named, and a restore
//! refuses to write a disk it cannot produce exactly.
//!
//! This increment backs up a VM that is not running (off or suspended), reading each
//! disk whole; backing up a running VM and change bitmaps are to come.

use std::collections::BTreeSet;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::archive::hex;
use crate::bundle::{Bundle, BundleError};
use crate::config::{DiskFormat, VmConfig};
use crate::disks::{self, DiskError};
use crate::library::{Library, LibraryError};

/// Bytes of guest-visible disk data per chunk.
pub const CHUNK: u64 = 4 << 20;
const SET_FILE: &str = "vessel-backup.toml";

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{path}: {cause}")]
    Io { path: PathBuf, cause: std::io::Error },
    #[error(transparent)]
    Library(#[from] LibraryError),
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error(transparent)]
    Disk(#[from] DiskError),
    #[error("{0} is not a Vessel backup set (no {SET_FILE} in it)")]
    NotASet(PathBuf),
    #[error("{set} backs up another VM ({other}); choose another folder")]
    OtherVm { set: PathBuf, other: String },
    #[error("{path} is damaged: {why}")]
    Damaged { path: PathBuf, why: String },
    #[error("no backup point {0} in this set (`vessel backups` lists them)")]
    NoSuchPoint(String),
    #[error(
        "the backup is damaged: {} chunk(s) missing or not matching their checksum ({}); \
         nothing was restored",
        .0.len(),
        .0.iter().take(3).cloned().collect::<Vec<_>>().join(", ")
    )]
    BadChunks(Vec<String>),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
    move |cause| BackupError::Io { path: path.to_path_buf(), cause }
}

#[derive(Debug, Serialize, Deserialize)]
struct SetInfo {
    uuid: uuid::Uuid,
    name: String,
}

/// One backup point of a set.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Point {
    pub id: String,
    /// RFC 3339, UTC.
    pub created: String,
    /// The VM's configuration then (`vessel.toml`).
    pub config: String,
    pub disks: Vec<DiskPoint>,
    /// The VM's other files it cannot run without (a directly booted kernel and initrd).
    #[serde(default)]
    pub files: Vec<FilePoint>,
    /// Bytes of disk read, chunks written new, and chunks the set had already.
    pub read: u64,
    pub written: u64,
    pub deduplicated: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct DiskPoint {
    /// As the configuration names it.
    pub file: PathBuf,
    pub format: DiskFormat,
    pub size: u64,
    /// Each chunk's SHA-256 (hex), in order; empty for a chunk that is all zero.
    pub chunks: Vec<String>,
}

/// A file of the VM's folder, as its chunks.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct FilePoint {
    /// As the configuration names it.
    pub file: PathBuf,
    pub size: u64,
    pub chunks: Vec<String>,
}

/// The default set of the VM named `name` in `library`: `backups/NAME` beside its VMs.
pub fn default_set(library: &Library, name: &str) -> PathBuf {
    library.dir().join("backups").join(name)
}

fn chunk_path(set: &Path, hash: &str) -> PathBuf {
    set.join("chunks").join(&hash[..2]).join(hash)
}

/// Opens (or makes) the set at `set` for the VM in `bundle`.
fn open_set(set: &Path, bundle: &Bundle) -> Result<(), BackupError> {
    let info_path = set.join(SET_FILE);
    match fs::read_to_string(&info_path) {
        Ok(text) => {
            let info: SetInfo = toml::from_str(&text).map_err(|e| BackupError::Damaged {
                path: info_path.clone(),
                why: e.message().to_string(),
            })?;
            if info.uuid != bundle.config.uuid {
                return Err(BackupError::OtherVm { set: set.to_path_buf(), other: info.name });
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            for dir in [set.to_path_buf(), set.join("points"), set.join("chunks")] {
                fs::create_dir_all(&dir).map_err(io_err(&dir))?;
            }
            let info = SetInfo { uuid: bundle.config.uuid, name: bundle.config.name.clone() };
            let text = toml::to_string(&info).expect("serializes");
            crate::safe_write::replace(&info_path, text.as_bytes()).map_err(io_err(&info_path))
        }
        Err(e) => Err(io_err(&info_path)(e)),
    }
}

/// Backs up the VM in `bundle` (not running) into the set at `set`; the new point.
/// `progress` hears the bytes read so far and the total.
pub fn backup(
    library: &Library,
    bundle: &Bundle,
    set: &Path,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Point, BackupError> {
    let _not_running = bundle.lock_running()?;
    open_set(set, bundle)?;
    let policy = library.backing_policy(bundle)?;
    let mut point = Point {
        id: String::new(),
        created: crate::config::rfc3339(std::time::SystemTime::now()),
        config: bundle.config.to_toml(),
        disks: Vec::new(),
        files: Vec::new(),
        read: 0,
        written: 0,
        deduplicated: 0,
    };
    let mut sizes = Vec::new();
    for disk in &bundle.config.disks {
        let path = bundle.inside(&disk.file)?;
        sizes.push(disks::inspect(&path, disk.format)?.virtual_size);
    }
    let total: u64 = sizes.iter().sum();
    let mut buf = vec![0u8; CHUNK as usize];
    for (disk, &size) in bundle.config.disks.iter().zip(&sizes) {
        let path = bundle.inside(&disk.file)?;
        let image = disks::open_chain(&path, disk.format, &policy, false)?;
        let mut chunks = Vec::new();
        let mut at = 0;
        while at < size {
            let n = (size - at).min(CHUNK) as usize;
            image.read(&mut buf[..n], at).map_err(io_err(&path))?;
            chunks.push(store(set, &buf[..n], &mut point)?);
            at += n as u64;
            point.read += n as u64;
            progress(point.read, total);
        }
        point.disks.push(DiskPoint { file: disk.file.clone(), format: disk.format, size, chunks });
    }
    if let crate::config::Boot::Direct { kernel, initrd, .. } = &bundle.config.boot.value {
        for file in std::iter::once(kernel).chain(initrd) {
            let path = bundle.inside(file)?;
            let mut source = crate::files::open_regular(&path, false).map_err(io_err(&path))?;
            let (mut chunks, mut size) = (Vec::new(), 0u64);
            loop {
                let mut data = Vec::new();
                (&mut source).take(CHUNK).read_to_end(&mut data).map_err(io_err(&path))?;
                if data.is_empty() {
                    break;
                }
                size += data.len() as u64;
                chunks.push(store(set, &data, &mut point)?);
            }
            point.files.push(FilePoint { file: file.clone(), size, chunks });
        }
    }
    point.id = new_id(set, &point.created)?;
    let text = toml::to_string(&point).expect("serializes");
    let path = set.join("points").join(format!("{}.toml", point.id));
    crate::safe_write::replace(&path, text.as_bytes()).map_err(io_err(&path))?;
    Ok(point)
}

/// Stores `data` as a chunk of the set (unless it is all zero, or there already); its name.
fn store(set: &Path, data: &[u8], point: &mut Point) -> Result<String, BackupError> {
    if data.iter().all(|&b| b == 0) {
        return Ok(String::new());
    }
    let hash = hex(&Sha256::digest(data));
    let path = chunk_path(set, &hash);
    if path.exists() {
        point.deduplicated += data.len() as u64;
        return Ok(hash);
    }
    let dir = path.parent().expect("a chunk has a folder");
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let temp = dir.join(format!(".{hash}.{}", std::process::id()));
    let mut out = fs::File::create(&temp).map_err(io_err(&temp))?;
    out.write_all(data).and_then(|()| out.sync_data()).map_err(io_err(&temp))?;
    fs::rename(&temp, &path).map_err(io_err(&path))?;
    point.written += data.len() as u64;
    Ok(hash)
}

/// A point id from its creation time, unique in the set.
fn new_id(set: &Path, created: &str) -> Result<String, BackupError> {
    let base: String = created.chars().filter(|c| c.is_ascii_digit()).collect();
    for n in 0..1000 {
        let id = if n == 0 { base.clone() } else { format!("{base}-{n}") };
        if !set.join("points").join(format!("{id}.toml")).exists() {
            return Ok(id);
        }
    }
    Err(BackupError::Damaged { path: set.to_path_buf(), why: "too many points at once".into() })
}

/// The set's points, oldest first.
pub fn points(set: &Path) -> Result<Vec<Point>, BackupError> {
    if !set.join(SET_FILE).is_file() {
        return Err(BackupError::NotASet(set.to_path_buf()));
    }
    let dir = set.join("points");
    let mut points = Vec::new();
    for entry in fs::read_dir(&dir).map_err(io_err(&dir))?.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let file = crate::files::open_regular(&path, false).map_err(io_err(&path))?;
        let text = crate::safe_write::read_small(file).map_err(io_err(&path))?;
        let point: Point = toml::from_str(&text).map_err(|e| BackupError::Damaged {
            path: path.clone(),
            why: e.message().to_string(),
        })?;
        points.push(point);
    }
    points.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(points)
}

/// Reads the chunk `hash` of the set, checked against its hash.
fn read_chunk(set: &Path, hash: &str, buf: &mut Vec<u8>) -> Result<(), String> {
    if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("{hash:?} (not a chunk name)"));
    }
    let path = chunk_path(set, hash);
    buf.clear();
    let file = crate::files::open_regular(&path, false).map_err(|_| format!("{hash} (missing)"))?;
    file.take(CHUNK + 1).read_to_end(buf).map_err(|_| format!("{hash} (unreadable)"))?;
    if hex(&Sha256::digest(&buf[..])) != hash {
        return Err(format!("{hash} (does not match its checksum)"));
    }
    Ok(())
}

/// Re-reads every chunk the set's points name; the damaged ones, each with the points
/// that need it.
pub fn verify(set: &Path) -> Result<Vec<(String, Vec<String>)>, BackupError> {
    let points = points(set)?;
    let mut damaged: Vec<(String, Vec<String>)> = Vec::new();
    let mut good = BTreeSet::new();
    let mut buf = Vec::new();
    for point in &points {
        let chunks = (point.disks.iter().flat_map(|d| &d.chunks))
            .chain(point.files.iter().flat_map(|f| &f.chunks));
        for hash in chunks.filter(|h| !h.is_empty()) {
            if good.contains(hash) {
                continue;
            }
            match read_chunk(set, hash, &mut buf) {
                Ok(()) => {
                    good.insert(hash.clone());
                }
                Err(what) => match damaged.iter_mut().find(|(w, _)| *w == what) {
                    Some((_, ids)) if ids.contains(&point.id) => {}
                    Some((_, ids)) => ids.push(point.id.clone()),
                    None => damaged.push((what, vec![point.id.clone()])),
                },
            }
        }
    }
    Ok(damaged)
}

/// Restores point `id` of the set (the newest if none) as a new VM named `as_name` in
/// `library`, or over the VM it backs up (which must be off; it stays as it was until
/// the restore has completed). Every chunk is checked before anything is written.
pub fn restore(
    library: &Library,
    set: &Path,
    id: Option<&str>,
    as_name: Option<&str>,
) -> Result<Bundle, BackupError> {
    let points = points(set)?;
    let point = match id {
        Some(id) => {
            points.iter().find(|p| p.id == id).ok_or_else(|| BackupError::NoSuchPoint(id.into()))?
        }
        None => {
            points.last().ok_or_else(|| BackupError::NoSuchPoint("(the set has none)".into()))?
        }
    };
    let mut buf = Vec::new();
    let bad: Vec<String> = (point.disks.iter().flat_map(|d| &d.chunks))
        .chain(point.files.iter().flat_map(|f| &f.chunks))
        .filter(|h| !h.is_empty())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .filter_map(|h| read_chunk(set, h, &mut buf).err())
        .collect();
    if !bad.is_empty() {
        return Err(BackupError::BadChunks(bad));
    }
    let mut config = VmConfig::from_toml(&point.config)
        .map_err(|e| BackupError::Damaged { path: set.to_path_buf(), why: e.to_string() })?;
    match as_name {
        Some(name) => {
            config.name = name.to_string();
            config.uuid = uuid::Uuid::new_v4();
            if let crate::config::Network::Nat { mac, .. } = &mut config.network.value {
                *mac = crate::library::mac_for(&config.uuid);
            }
        }
        None => {
            if let Ok(old) = library.find(&config.name) {
                return restore_over(library, set, point, config, &old);
            }
        }
    }
    config.cdrom.iso = None;
    let bundle = library.create(config)?;
    match write_disks(set, point, &bundle) {
        Ok(()) => Ok(bundle),
        Err(e) => {
            let _ = fs::remove_dir_all(bundle.root());
            Err(e)
        }
    }
}

/// Restores `point` over the VM in `old` (which must be off): into a new folder first,
/// which then takes the old one's place; the old one goes last.
fn restore_over(
    library: &Library,
    set: &Path,
    point: &Point,
    mut config: VmConfig,
    old: &Bundle,
) -> Result<Bundle, BackupError> {
    let _not_running = old.lock_running()?;
    let staging = library.dir().join(format!(".restore-{}", std::process::id()));
    let _ = fs::remove_dir_all(&staging);
    fs::create_dir_all(&staging).map_err(io_err(&staging))?;
    config.cdrom.iso = None;
    let made =
        Bundle::create(&staging, config.clone()).map_err(BackupError::from).and_then(|new| {
            write_disks(set, point, &new)?;
            Ok(new)
        });
    let result = made.and_then(|new| {
        let aside = staging.join("previous");
        fs::rename(old.root(), &aside).map_err(io_err(old.root()))?;
        if let Err(e) = fs::rename(new.root(), old.root()) {
            let _ = fs::rename(&aside, old.root());
            return Err(io_err(old.root())(e));
        }
        Ok(Bundle::open(old.root())?)
    });
    let _ = fs::remove_dir_all(&staging);
    result
}

/// Writes the disks of `point` into `bundle` (new images of the stated format).
fn write_disks(set: &Path, point: &Point, bundle: &Bundle) -> Result<(), BackupError> {
    let mut buf = Vec::new();
    for disk in &point.disks {
        // A point is a file someone may have changed: its sizes are bounded as a new
        // disk's are (a huge qcow2 would need a huge table made for it).
        if disk.size > disks::MAX_DISK_BYTES || disk.chunks.len() as u64 > disk.size.div_ceil(CHUNK)
        {
            return Err(BackupError::Damaged {
                path: set.to_path_buf(),
                why: format!("{} is larger than a disk may be", disk.file.display()),
            });
        }
        let path = bundle.inside(&disk.file)?;
        if let Some(dir) = path.parent() {
            crate::files::create_dir_private(dir).map_err(io_err(dir))?;
        }
        disks::create_image(&path, disk.format, disk.size, None)?;
        let image = disks::open_chain(&path, disk.format, &disks::BackingPolicy::none(), true)?;
        for (index, hash) in disk.chunks.iter().enumerate() {
            if hash.is_empty() {
                continue;
            }
            read_chunk(set, hash, &mut buf).map_err(|what| BackupError::BadChunks(vec![what]))?;
            let at = index as u64 * CHUNK;
            if at + buf.len() as u64 > disk.size {
                return Err(BackupError::Damaged {
                    path: set.to_path_buf(),
                    why: format!("a chunk of {} lies beyond its end", disk.file.display()),
                });
            }
            image.write(&buf[..], at).map_err(io_err(&path))?;
        }
        image.flush().and_then(|()| image.sync()).map_err(io_err(&path))?;
    }
    for file in &point.files {
        let path = bundle.inside(&file.file)?;
        if let Some(dir) = path.parent() {
            crate::files::create_dir_private(dir).map_err(io_err(dir))?;
        }
        let mut out = crate::files::create_private(&path).map_err(io_err(&path))?;
        let mut left = file.size;
        for hash in &file.chunks {
            let n = left.min(CHUNK);
            if hash.is_empty() {
                // A chunk of zeroes (`store` leaves them out).
                out.write_all(&vec![0u8; n as usize]).map_err(io_err(&path))?;
            } else {
                read_chunk(set, hash, &mut buf).map_err(|w| BackupError::BadChunks(vec![w]))?;
                out.write_all(&buf[..(n as usize).min(buf.len())]).map_err(io_err(&path))?;
            }
            left -= n;
        }
        out.sync_all().map_err(io_err(&path))?;
    }
    Ok(())
}

/// Keeps the newest `keep` points of the set and the chunks they need; the ids removed.
pub fn prune(set: &Path, keep: usize) -> Result<Vec<String>, BackupError> {
    let points = points(set)?;
    let cut = points.len().saturating_sub(keep.max(1));
    let (gone, kept) = points.split_at(cut);
    for point in gone {
        let path = set.join("points").join(format!("{}.toml", point.id));
        fs::remove_file(&path).map_err(io_err(&path))?;
    }
    // Then the chunks no kept point needs (a kill before this leaves extra chunks only).
    let needed: BTreeSet<&String> = (kept.iter())
        .flat_map(|p| p.disks.iter().flat_map(|d| &d.chunks))
        .chain(kept.iter().flat_map(|p| p.files.iter().flat_map(|f| &f.chunks)))
        .collect();
    for dir in fs::read_dir(set.join("chunks")).into_iter().flatten().flatten() {
        for chunk in fs::read_dir(dir.path()).into_iter().flatten().flatten() {
            let name = chunk.file_name().to_string_lossy().into_owned();
            if !needed.contains(&name) {
                let _ = fs::remove_file(chunk.path());
            }
        }
    }
    Ok(gone.iter().map(|p| p.id.clone()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::full;

    fn scratch(name: &str) -> PathBuf {
        crate::test_util::scratch("backup", name)
    }

    /// A stopped VM with a qcow2 disk (over a base) and a raw disk, 16 MiB each.
    fn vm(lib: &Library) -> Bundle {
        let mut config = full();
        config.boot = crate::config::Boot::Uefi.into();
        config.disks[0].size_bytes = 16 << 20;
        config.disks[1].size_bytes = 16 << 20;
        let bundle = lib.create(config).unwrap();
        let base = bundle.resolve(Path::new("snapshots/base.qcow2"));
        disks::create(&base, DiskFormat::Qcow2, 16 << 20, None).unwrap();
        let top = bundle.resolve(Path::new("disks/system.qcow2"));
        let backing = Some((Path::new("../snapshots/base.qcow2"), DiskFormat::Qcow2));
        disks::create(&top, DiskFormat::Qcow2, 16 << 20, backing).unwrap();
        write(&bundle, 0, 0, &[0x11; 1 << 20]);
        let raw = bundle.resolve(Path::new("disks/data.raw"));
        disks::create(&raw, DiskFormat::Raw, 16 << 20, None).unwrap();
        write(&bundle, 1, 5 << 20, &[0x22; 4096]);
        bundle
    }

    /// Writes `data` at `at` of the VM's disk `index` (through its chain).
    fn write(bundle: &Bundle, index: usize, at: u64, data: &[u8]) {
        let disk = &bundle.config.disks[index];
        let path = bundle.resolve(&disk.file);
        let policy = disks::BackingPolicy::within(bundle.root()).unwrap();
        let image = disks::open_chain(&path, disk.format, &policy, true).unwrap();
        image.write(data, at).unwrap();
        image.flush().unwrap();
    }

    /// The guest-visible bytes of the VM's disk `index`.
    fn read(bundle: &Bundle, index: usize) -> Vec<u8> {
        let disk = &bundle.config.disks[index];
        let path = bundle.resolve(&disk.file);
        let policy = disks::BackingPolicy::within(bundle.root()).unwrap();
        let image = disks::open_chain(&path, disk.format, &policy, false).unwrap();
        let mut bytes = vec![0u8; image.size() as usize];
        image.read(&mut bytes[..], 0).unwrap();
        bytes
    }

    #[test]
    fn points_restore_to_exactly_their_bytes_and_increments_store_what_changed() {
        let dir = scratch("points");
        let lib = Library::open(&dir.join("lib")).unwrap();
        let bundle = vm(&lib);
        let set = default_set(&lib, &bundle.config.name);
        let mut seen = Vec::new();
        let first =
            backup(&lib, &bundle, &set, &mut |done, total| seen.push((done, total))).unwrap();
        assert_eq!(seen.last(), Some(&(32 << 20, 32 << 20)));
        // Only chunks with data are stored: one of each disk.
        assert_eq!(first.written, 2 * CHUNK);
        let expected = [(read(&bundle, 0), read(&bundle, 1))];
        let mut expected = expected.to_vec();
        // Three increments, each rewriting the same 4 KiB: each stores the chunk changed.
        let mut ids = vec![first.id.clone()];
        for n in 1..=3u8 {
            write(&bundle, 0, 4 << 20, &[n; 4096]);
            let point = backup(&lib, &bundle, &set, &mut |_, _| {}).unwrap();
            assert_eq!(point.written, CHUNK, "one changed chunk: {point:?}");
            assert!(point.deduplicated >= CHUNK, "{point:?}");
            expected.push((read(&bundle, 0), read(&bundle, 1)));
            ids.push(point.id);
        }
        assert_eq!(points(&set).unwrap().iter().map(|p| p.id.clone()).collect::<Vec<_>>(), ids);
        assert!(verify(&set).unwrap().is_empty());
        // Each point restores as a new VM to exactly its bytes.
        for (n, (id, (disk0, disk1))) in ids.iter().zip(&expected).enumerate() {
            let name = format!("restored {n}");
            let restored = restore(&lib, &set, Some(id), Some(&name)).unwrap();
            assert_ne!(restored.config.uuid, bundle.config.uuid);
            assert_eq!(&read(&restored, 0), disk0, "point {n}");
            assert_eq!(&read(&restored, 1), disk1, "point {n}");
        }
        // And over the VM itself (off): back to the first point.
        write(&bundle, 1, 0, &[0x99; 512]);
        let over = restore(&lib, &set, Some(&ids[0]), None).unwrap();
        assert_eq!(over.root(), bundle.root());
        assert_eq!(read(&over, 0), expected[0].0);
        assert_eq!(read(&over, 1), expected[0].1);
        // Retention: the newest two stay, and what only the others needed (the first
        // increment's version of that chunk) goes.
        let chunks_before = count_chunks(&set);
        let gone = prune(&set, 2).unwrap();
        assert_eq!(gone, ids[..2]);
        assert!(count_chunks(&set) < chunks_before);
        let left = restore(&lib, &set, Some(&ids[3]), Some("after prune")).unwrap();
        assert_eq!(read(&left, 0), expected[3].0);
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn a_directly_booted_vm_comes_back_with_its_kernel_and_initrd() {
        let dir = scratch("direct");
        let lib = Library::open(&dir.join("lib")).unwrap();
        let mut config = full();
        config.disks.clear();
        let bundle = lib.create(config).unwrap();
        fs::create_dir_all(bundle.resolve(Path::new("boot"))).unwrap();
        let kernel: Vec<u8> = (0..(CHUNK as u32 + 1000)).map(|i| (i % 253) as u8).collect();
        fs::write(bundle.resolve(Path::new("boot/vmlinuz")), &kernel).unwrap();
        fs::write(bundle.resolve(Path::new("boot/initrd.gz")), b"an initrd").unwrap();
        let set = dir.join("set");
        backup(&lib, &bundle, &set, &mut |_, _| {}).unwrap();
        let restored = restore(&lib, &set, None, Some("again")).unwrap();
        assert_eq!(fs::read(restored.resolve(Path::new("boot/vmlinuz"))).unwrap(), kernel);
        assert_eq!(fs::read(restored.resolve(Path::new("boot/initrd.gz"))).unwrap(), b"an initrd");
        let _ = fs::remove_dir_all(dir);
    }

    fn count_chunks(set: &Path) -> usize {
        fs::read_dir(set.join("chunks"))
            .unwrap()
            .flatten()
            .map(|d| fs::read_dir(d.path()).unwrap().count())
            .sum()
    }

    #[test]
    fn a_damaged_chunk_is_named_and_blocks_the_restore() {
        let dir = scratch("damaged");
        let lib = Library::open(&dir.join("lib")).unwrap();
        let bundle = vm(&lib);
        let set = dir.join("set");
        let point = backup(&lib, &bundle, &set, &mut |_, _| {}).unwrap();
        // A point whose disk size was changed to more than any disk may be: refused.
        let point_file = set.join("points").join(format!("{}.toml", point.id));
        let text = fs::read_to_string(&point_file).unwrap();
        let huge = text.replacen("size = 16777216", "size = 9223372036854775807", 1);
        assert_ne!(huge, text);
        fs::write(&point_file, huge).unwrap();
        let error = restore(&lib, &set, None, Some("huge")).unwrap_err();
        assert!(error.to_string().contains("larger than a disk may be"), "{error}");
        assert!(lib.find("huge").is_err(), "nothing was made");
        fs::write(&point_file, text).unwrap();
        let hash = point.disks[1].chunks.iter().find(|h| !h.is_empty()).unwrap().clone();
        let path = chunk_path(&set, &hash);
        let mut bytes = fs::read(&path).unwrap();
        bytes[100] ^= 1;
        fs::write(&path, bytes).unwrap();
        let damaged = verify(&set).unwrap();
        assert_eq!(damaged.len(), 1);
        assert!(damaged[0].0.contains(&hash) && damaged[0].0.contains("checksum"), "{damaged:?}");
        assert_eq!(damaged[0].1, std::slice::from_ref(&point.id));
        let error = restore(&lib, &set, None, Some("never")).unwrap_err();
        assert!(matches!(&error, BackupError::BadChunks(c) if c[0].contains(&hash)), "{error}");
        assert!(lib.find("never").is_err(), "nothing was made");
        // A set of another VM is not written into.
        let other = lib.create({
            let mut c = full();
            c.name = "other".into();
            c.disks.clear();
            c
        });
        let error = backup(&lib, &other.unwrap(), &set, &mut |_, _| {}).unwrap_err();
        assert!(matches!(error, BackupError::OtherVm { .. }), "{error}");
        // A running VM is not backed up by this increment.
        let running = bundle.lock_running().unwrap();
        assert!(backup(&lib, &bundle, &set, &mut |_, _| {}).is_err());
        drop(running);
        let _ = fs::remove_dir_all(dir);
    }
}
