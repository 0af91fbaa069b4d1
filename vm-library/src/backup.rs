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
//! Each backup freezes the VM's disks as a snapshot does (an unseen node of its tree):
//! the images stay as they are and the VM goes on in new overlays, so the copy is one
//! point's even while the guest runs on (it pauses only while its disks switch). The
//! node stays until the set's next backup, and the images above it are then exactly
//! what the guest wrote since: the next backup reads only those chunks (the change
//! record is the disks themselves, so it holds across restarts and crashes). A disk
//! whose last point left its history (a revert to an earlier snapshot, a restore) is
//! read whole, and the point says why.
//!
//! Reading the frozen images while a snapshot operation folds images below them is
//! safe: every fold leaves each image reading as before, and only writes where the
//! image above holds data.

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
use crate::snapshots;

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
    #[error(transparent)]
    Snapshot(#[from] snapshots::SnapshotError),
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
    /// The set's own id: the VM's tree keeps the set's latest point under it.
    #[serde(default)]
    id: Option<String>,
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
    /// Bytes of disk not read: unchanged since the set's last point.
    #[serde(default)]
    pub unchanged: u64,
    /// Bytes of disk not read: never written (no image of the disk holds data there).
    #[serde(default)]
    pub holes: u64,
    /// Why the disks were read whole although the set had a point before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full: Option<String>,
    /// Its point in the VM's snapshot tree (unseen there), which the next backup reads
    /// what was written since from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The snapshot the VM's state then grew from, by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// How long it took.
    #[serde(default)]
    pub seconds: f64,
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

/// The default set of the VM named `name` in the library at `library_dir`:
/// `backups/NAME` beside its VMs.
pub fn default_set(library_dir: &Path, name: &str) -> PathBuf {
    library_dir.join("backups").join(name)
}

fn chunk_path(set: &Path, hash: &str) -> PathBuf {
    set.join("chunks").join(&hash[..2]).join(hash)
}

/// Opens (or makes) the set at `set` for the VM in `bundle`; the set's id.
fn open_set(set: &Path, bundle: &Bundle) -> Result<String, BackupError> {
    let info_path = set.join(SET_FILE);
    let mut info = match fs::read_to_string(&info_path) {
        Ok(text) => {
            let info: SetInfo = toml::from_str(&text).map_err(|e| BackupError::Damaged {
                path: info_path.clone(),
                why: e.message().to_string(),
            })?;
            if info.uuid != bundle.config.uuid {
                return Err(BackupError::OtherVm { set: set.to_path_buf(), other: info.name });
            }
            info
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            for dir in [set.to_path_buf(), set.join("points"), set.join("chunks")] {
                fs::create_dir_all(&dir).map_err(io_err(&dir))?;
            }
            SetInfo { uuid: bundle.config.uuid, name: bundle.config.name.clone(), id: None }
        }
        Err(e) => return Err(io_err(&info_path)(e)),
    };
    match info.id.clone().filter(|id| valid_set_id(id)) {
        Some(id) => Ok(id),
        None => {
            let id = uuid::Uuid::new_v4().simple().to_string();
            info.id = Some(id.clone());
            let text = toml::to_string(&info).expect("serializes");
            crate::safe_write::replace(&info_path, text.as_bytes()).map_err(io_err(&info_path))?;
            Ok(id)
        }
    }
}

/// A set id as Vessel makes them (32 lowercase hex digits).
fn valid_set_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// How far a backup is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// Bytes of disk read so far, and to read in all (unchanged chunks are not read).
    pub read: u64,
    pub to_read: u64,
}

/// Backs up the VM in `bundle` into the set at `set`; the new point. The VM is off (or
/// suspended: its saved machine goes along, so the point restores to the running guest),
/// or running: then `live` makes its machine switch to the overlays a freeze made (see
/// `snapshots::freeze_for_backup`), and the copy is read from the frozen images while
/// the guest runs on. After the set's first point, a disk whose last point is still in
/// its images' history is read only where the guest wrote since (what the overlays made
/// since hold); otherwise it is read whole, and the point says why (`full`).
pub fn backup(
    library: &Library,
    bundle: &mut Bundle,
    set: &Path,
    live: Option<&mut LiveCommit<'_>>,
    progress: &mut dyn FnMut(Progress),
) -> Result<Point, BackupError> {
    let started = std::time::Instant::now();
    // An off VM stays off meanwhile; a running one holds this lock itself.
    let running = live.is_some();
    let _not_running = if running { None } else { Some(bundle.lock_running()?) };
    let set_id = open_set(set, bundle)?;
    let policy = library.backing_policy(bundle)?;
    let last = points(set)?.pop();
    let frozen = match live {
        Some(commit) => {
            let mut commit = |b: &Bundle, overlays: &[PathBuf]| {
                commit(b, overlays).map_err(snapshots::SnapshotError::Freeze)
            };
            snapshots::freeze_for_backup(bundle, &policy, &set_id, Some(&mut commit))?
        }
        None => snapshots::freeze_for_backup(bundle, &policy, &set_id, None)?,
    };
    let mut point = Point {
        id: String::new(),
        created: crate::config::rfc3339(std::time::SystemTime::now()),
        config: frozen.config.to_toml(),
        disks: Vec::new(),
        files: Vec::new(),
        read: 0,
        written: 0,
        deduplicated: 0,
        unchanged: 0,
        holes: 0,
        full: None,
        node: Some(frozen.node.clone()),
        snapshot: frozen.snapshot.clone(),
        seconds: 0.0,
    };
    // What each disk must read: the chunks written since `last` (the others are as
    // then), or, read whole, the chunks any of its images holds data in (the others were
    // never written: zeroes).
    let mut plans = Vec::new();
    let mut sizes = Vec::new();
    let mut whys = Vec::new();
    for (index, (path, format)) in frozen.disks.iter().enumerate() {
        let size = disks::inspect(path, *format)?.virtual_size;
        let plan = match changed_since(bundle, last.as_ref(), index, path, *format, size, &policy) {
            Ok(changed) => Plan::Since(changed),
            Err(why) => {
                if last.is_some() && !whys.contains(&why) {
                    whys.push(why);
                }
                Plan::Whole(written_chunks(path, *format, &policy)?)
            }
        };
        sizes.push(size);
        plans.push(plan);
    }
    if !whys.is_empty() {
        point.full = Some(whys.join("; "));
    }
    let to_read: u64 = (plans.iter().zip(&sizes))
        .map(|(plan, &size)| {
            let (Plan::Since(chunks) | Plan::Whole(chunks)) = plan;
            chunks
                .iter()
                .filter(|&&j| j * CHUNK < size)
                .map(|j| (size - j * CHUNK).min(CHUNK))
                .sum::<u64>()
        })
        .sum();
    let mut buf = vec![0u8; CHUNK as usize];
    for (index, ((path, format), (plan, &size))) in
        frozen.disks.iter().zip(plans.iter().zip(&sizes)).enumerate()
    {
        let image = disks::open_chain(path, *format, &policy, false)?;
        let mut chunks = Vec::new();
        let mut at = 0;
        while at < size {
            let j = at / CHUNK;
            let n = (size - at).min(CHUNK) as usize;
            match plan {
                // Unchanged: the last point's chunk, if the set still has it (else read).
                Plan::Since(changed)
                    if !changed.contains(&j)
                        && last.as_ref().is_some_and(|p| has_chunk(set, &p.disks[index], j)) =>
                {
                    let before = &last.as_ref().expect("a plan since a point").disks[index];
                    chunks.push(before.chunks[j as usize].clone());
                    point.unchanged += n as u64;
                }
                Plan::Whole(written) if !written.contains(&j) => {
                    chunks.push(String::new());
                    point.holes += n as u64;
                }
                _ => {
                    image.read(&mut buf[..n], at).map_err(io_err(path))?;
                    chunks.push(store(set, &buf[..n], &mut point)?);
                    point.read += n as u64;
                    progress(Progress { read: point.read, to_read });
                }
            }
            at += n as u64;
        }
        let file = frozen.config.disks[index].file.clone();
        point.disks.push(DiskPoint { file, format: *format, size, chunks });
    }
    let mut extra: Vec<PathBuf> = Vec::new();
    if let crate::config::Boot::Direct { kernel, initrd, .. } = &frozen.config.boot.value {
        extra.push(kernel.clone());
        extra.extend(initrd.clone());
    }
    if !running && crate::suspended::is_suspended(bundle.root()) {
        // The saved machine: the point restores to the guest running where it was.
        extra.push(PathBuf::from(crate::suspended::MEMORY_FILE));
        extra.push(PathBuf::from(crate::suspended::STATE_FILE));
    }
    for file in &extra {
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
            point.read += data.len() as u64;
            chunks.push(store(set, &data, &mut point)?);
        }
        point.files.push(FilePoint { file: file.clone(), size, chunks });
    }
    sync_chunks(set, &point)?;
    point.id = new_id(set, &point.created)?;
    point.seconds = started.elapsed().as_secs_f64();
    let text = toml::to_string(&point).expect("serializes");
    let path = set.join("points").join(format!("{}.toml", point.id));
    crate::safe_write::replace(&path, text.as_bytes()).map_err(io_err(&path))?;
    // The set's earlier points in the VM's tree are not needed any more: the next backup
    // reads what was written since this one.
    snapshots::release_backups(bundle, &set_id, &frozen.node)?;
    Ok(point)
}

/// Whether the set has chunk `j` of `disk` (a chunk of zeroes always), the size it must be.
fn has_chunk(set: &Path, disk: &DiskPoint, j: u64) -> bool {
    let Some(hash) = disk.chunks.get(j as usize) else { return false };
    let len = (disk.size - j * CHUNK).min(CHUNK);
    hash.is_empty()
        || (hash.len() == 64
            && hash.bytes().all(|b| b.is_ascii_hexdigit())
            && fs::symlink_metadata(chunk_path(set, hash))
                .is_ok_and(|m| m.is_file() && m.len() == len))
}

/// What a backup reads of a disk.
enum Plan {
    /// The chunks written since the set's last point; the others are as they were then.
    Since(BTreeSet<u64>),
    /// The chunks any image of the disk holds data in; the others read as zeroes.
    Whole(BTreeSet<u64>),
}

/// The chunks of the disk `path` (through its chain) that any of its images holds data
/// or stated zeroes in.
fn written_chunks(
    path: &Path,
    format: DiskFormat,
    policy: &disks::BackingPolicy,
) -> Result<BTreeSet<u64>, BackupError> {
    let chain = disks::backing_chain(path, format, policy)?;
    let images = std::iter::once((path.to_path_buf(), format))
        .chain(chain.into_iter().map(|l| (l.path, l.format)));
    Ok(own_chunks(images)?)
}

/// The chunks the `images` hold data or stated zeroes in themselves (`own_ranges`).
fn own_chunks(
    images: impl IntoIterator<Item = (PathBuf, DiskFormat)>,
) -> Result<BTreeSet<u64>, DiskError> {
    let mut chunks = BTreeSet::new();
    for (image, format) in images {
        for (start, len) in disks::own_ranges(&image, format)? {
            chunks.extend(start / CHUNK..(start + len).div_ceil(CHUNK));
        }
    }
    Ok(chunks)
}

/// The commit of a running VM's freeze: its machine switches to the overlays (see
/// `snapshots::freeze_for_backup`); what went wrong, said for the user.
pub type LiveCommit<'a> = dyn FnMut(&Bundle, &[PathBuf]) -> Result<(), String> + 'a;

/// The chunks of disk `index` (frozen at `path`, `size` bytes) that may differ from the
/// set's last point `last`: those the images above that point's frozen image hold. Why
/// not, if the disk must be read whole.
fn changed_since(
    bundle: &Bundle,
    last: Option<&Point>,
    index: usize,
    path: &Path,
    format: DiskFormat,
    size: u64,
    policy: &disks::BackingPolicy,
) -> Result<BTreeSet<u64>, String> {
    let last = last.ok_or("the set's first point")?;
    let before = last.disks.get(index).ok_or("a disk was added since the last backup")?;
    if before.size != size || before.chunks.len() as u64 != size.div_ceil(CHUNK) {
        return Err("a disk was resized since the last backup".into());
    }
    let Some(images) = last.node.as_deref().and_then(|n| snapshots::backup_images(bundle, n))
    else {
        return Err("the last backup's point is no longer in the VM's disks' history (it was \
                    restored, or made by an earlier Vessel)"
            .into());
    };
    let (base, _) = images.get(index).ok_or("a disk was added since the last backup")?;
    let base = fs::canonicalize(base).map_err(|e| format!("{}: {e}", base.display()))?;
    // The images from the frozen one down to the last point's: what was written since.
    let chain = disks::backing_chain(path, format, policy).map_err(|e| e.to_string())?;
    let mut above = vec![(path.to_path_buf(), format)];
    let mut found = false;
    for layer in chain {
        if layer.path == base {
            found = true;
            break;
        }
        above.push((layer.path, layer.format));
    }
    if !found {
        return Err("the VM went back to a snapshot since the last backup".into());
    }
    own_chunks(above).map_err(|e| e.to_string())
}

/// Stores `data` as a chunk of the set (unless it is all zero, or there already); its name.
/// Chunks are not synced one by one: `backup` syncs them at the end, before the point
/// that names them is written. A chunk a crash left short (written, renamed,
/// not synced) is not taken as there: it is written again.
fn store(set: &Path, data: &[u8], point: &mut Point) -> Result<String, BackupError> {
    if data.iter().all(|&b| b == 0) {
        return Ok(String::new());
    }
    let hash = hex(&Sha256::digest(data));
    let path = chunk_path(set, &hash);
    if fs::symlink_metadata(&path).is_ok_and(|m| m.is_file() && m.len() == data.len() as u64) {
        point.deduplicated += data.len() as u64;
        return Ok(hash);
    }
    let dir = path.parent().expect("a chunk has a folder");
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let temp = dir.join(format!(".{hash}.{}", std::process::id()));
    let mut out = fs::File::create(&temp).map_err(io_err(&temp))?;
    out.write_all(data).map_err(io_err(&temp))?;
    fs::rename(&temp, &path).map_err(io_err(&path))?;
    point.written += data.len() as u64;
    Ok(hash)
}

/// Makes the chunks this backup wrote durable, before a point names them: synced at the
/// end rather than one by one as written, so the kernel writes them back meanwhile and
/// each sync finds little left to do.
fn sync_chunks(set: &Path, point: &Point) -> Result<(), BackupError> {
    let mut dirs = BTreeSet::new();
    let hashes = (point.disks.iter().flat_map(|d| &d.chunks))
        .chain(point.files.iter().flat_map(|f| &f.chunks))
        .filter(|h| !h.is_empty())
        .collect::<BTreeSet<_>>();
    for hash in hashes {
        let path = chunk_path(set, hash);
        fs::File::open(&path).and_then(|f| f.sync_data()).map_err(io_err(&path))?;
        dirs.insert(path.parent().expect("a chunk has a folder").to_path_buf());
    }
    for dir in dirs {
        fs::File::open(&dir).and_then(|f| f.sync_all()).map_err(io_err(&dir))?;
    }
    Ok(())
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
    fn points_restore_to_exactly_their_bytes_and_increments_read_what_changed() {
        let dir = scratch("points");
        let lib = Library::open(&dir.join("lib")).unwrap();
        let mut bundle = vm(&lib);
        let set = default_set(lib.dir(), &bundle.config.name);
        let mut seen = Vec::new();
        let first = backup(&lib, &mut bundle, &set, None, &mut |p| seen.push(p)).unwrap();
        // Only chunks with data are read and stored: one of each disk; the rest was never
        // written (no image holds it).
        assert_eq!(seen.last(), Some(&Progress { read: 2 * CHUNK, to_read: 2 * CHUNK }));
        assert_eq!((first.written, first.holes), (2 * CHUNK, (32 << 20) - 2 * CHUNK));
        assert_eq!((first.unchanged, first.full.as_deref()), (0, None));
        let expected = [(read(&bundle, 0), read(&bundle, 1))];
        let mut expected = expected.to_vec();
        // Three increments, each rewriting the same 4 KiB (and the third 64 KiB of the
        // other disk too): each reads and stores only the chunks changed.
        let mut ids = vec![first.id.clone()];
        for n in 1..=3u8 {
            write(&bundle, 0, 4 << 20, &[n; 4096]);
            if n == 3 {
                write(&bundle, 1, 12 << 20, &[n; 65536]);
            }
            let point = backup(&lib, &mut bundle, &set, None, &mut |_| {}).unwrap();
            let changed = if n == 3 { 2 } else { 1 };
            assert_eq!(point.read, changed * CHUNK, "only the changed chunks are read: {point:?}");
            assert_eq!(point.written, changed * CHUNK, "{point:?}");
            assert_eq!(point.unchanged, (32 << 20) - changed * CHUNK, "{point:?}");
            assert_eq!(point.full, None);
            expected.push((read(&bundle, 0), read(&bundle, 1)));
            ids.push(point.id);
        }
        // A backup with nothing written since reads nothing.
        let idle = backup(&lib, &mut bundle, &set, None, &mut |_| {}).unwrap();
        assert_eq!((idle.read, idle.written, idle.unchanged), (0, 0, 32 << 20));
        // An unchanged chunk the set lost is read again rather than named.
        let lost = idle.disks[1].chunks[1].clone();
        fs::remove_file(chunk_path(&set, &lost)).unwrap();
        let healed = backup(&lib, &mut bundle, &set, None, &mut |_| {}).unwrap();
        assert_eq!((healed.read, healed.written), (CHUNK, CHUNK), "{healed:?}");
        assert_eq!(healed.disks[1].chunks[1], lost);
        // The backups' points are not the user's snapshots, and the folds kept the VM's
        // disks shallow: each reads through its first image and the last point's.
        assert!(snapshots::list(&bundle).unwrap().snapshots.is_empty());
        let policy = lib.backing_policy(&bundle).unwrap();
        let system = bundle.resolve(&bundle.config.disks[0].file);
        let depth = disks::backing_chain(&system, DiskFormat::Qcow2, &policy).unwrap().len();
        assert!(depth <= 3, "the chain grew to {depth}");
        ids.push(idle.id.clone());
        expected.push(expected.last().unwrap().clone());
        ids.push(healed.id.clone());
        expected.push(expected.last().unwrap().clone());
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
        // A snapshot, more writes, a backup, then back to the snapshot: the last point is
        // not in the disks' history any more, so the next backup reads them whole.
        let snap = snapshots::take(&mut bundle, &policy, "before", "", None).unwrap();
        write(&bundle, 0, 8 << 20, &[0x77; 4096]);
        let after_snap = backup(&lib, &mut bundle, &set, None, &mut |_| {}).unwrap();
        assert_eq!(after_snap.read, CHUNK, "{after_snap:?}");
        assert_eq!(after_snap.snapshot.as_deref(), Some("before"));
        snapshots::revert(&mut bundle, &policy, &snap.name).unwrap();
        let full = backup(&lib, &mut bundle, &set, None, &mut |_| {}).unwrap();
        assert_eq!((full.read + full.holes, full.unchanged), (32 << 20, 0), "{full:?}");
        assert_eq!(full.read, 4 * CHUNK, "the chunks with data: {full:?}");
        assert!(full.full.as_deref().is_some_and(|w| w.contains("snapshot")), "{full:?}");
        assert_eq!(full.written, 0, "every chunk was in the set already");
        let tree = snapshots::list(&bundle).unwrap();
        assert_eq!(tree.snapshots.len(), 1, "{tree:?}");
        // And over the VM itself (off): back to the first point.
        write(&bundle, 1, 0, &[0x99; 512]);
        let over = restore(&lib, &set, Some(&ids[0]), None).unwrap();
        assert_eq!(over.root(), bundle.root());
        assert_eq!(read(&over, 0), expected[0].0);
        assert_eq!(read(&over, 1), expected[0].1);
        // Its history went with the restore: the next backup reads it whole, and says so.
        let mut over = over;
        let whole = backup(&lib, &mut over, &set, None, &mut |_| {}).unwrap();
        assert!(whole.full.as_deref().is_some_and(|w| w.contains("no longer")), "{whole:?}");
        // Retention: the newest two stay, and what only the others needed goes.
        let chunks_before = count_chunks(&set);
        let all = points(&set).unwrap();
        let gone = prune(&set, 2).unwrap();
        assert_eq!(gone.len(), all.len() - 2);
        assert!(count_chunks(&set) < chunks_before);
        let left = restore(&lib, &set, Some(&whole.id), Some("after prune")).unwrap();
        assert_eq!(read(&left, 0), expected[0].0);
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
        let mut bundle = bundle;
        backup(&lib, &mut bundle, &set, None, &mut |_| {}).unwrap();
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
        let mut bundle = vm(&lib);
        let set = dir.join("set");
        let point = backup(&lib, &mut bundle, &set, None, &mut |_| {}).unwrap();
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
        let error = backup(&lib, &mut other.unwrap(), &set, None, &mut |_| {}).unwrap_err();
        assert!(matches!(error, BackupError::OtherVm { .. }), "{error}");
        // A running VM is backed up only through its machine (`live`).
        let running = bundle.lock_running().unwrap();
        assert!(backup(&lib, &mut bundle, &set, None, &mut |_| {}).is_err());
        drop(running);
        let _ = fs::remove_dir_all(dir);
    }
}
