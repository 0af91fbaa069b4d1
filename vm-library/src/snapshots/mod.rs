//! A VM's snapshots: a tree of saved points it can go back to.
//!
//! A snapshot is the VM's configuration, its disks frozen at that point and, if the VM
//! was suspended then, its machine state and memory. Taking one freezes each disk image
//! where it is and lets the VM go on writing a new qcow2 overlay that reads through it;
//! reverting puts a fresh overlay on the snapshot's frozen images (and its saved machine,
//! as the VM's suspended state); deleting folds a frozen image into the one image that
//! reads through it, so its disk space comes back (one that two images read through stays
//! until one of them goes).
//!
//! ```text
//! snapshots/
//!   tree.toml          the tree (written crash-safely); tree.toml.bak, the previous one
//!   .lock              held while the tree changes
//!   <id>/vessel.toml   the configuration at that point; its disks name the frozen images
//!   <id>/state         with memory: the machine's state ...
//!   <id>/memory        ... and its memory (links to the suspended VM's files)
//!   <id>/screen.png    the screen at that point, when the VM was running
//! ```
//!
//! Every change that touches more than one file is written in the tree first (`pending`)
//! and is committed by one atomic write (the VM's configuration, or the tree); whatever
//! the point a process is killed at, the next operation (or the next power-on, through
//! `recover`) finishes it or undoes it, and the VM stays bootable.
//!
//! The frozen images live beside the disk they were (`disks/`): the image tree is the
//! snapshot tree. A node's images read through its parent's; the VM's current disks read
//! through the images of `current`, the snapshot the VM's present state grew from.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::bundle::{Bundle, BundleError};
use crate::config::{DiskFormat, VmConfig, rfc3339};
use crate::disks::{self, BackingPolicy, DiskError, MAX_BACKING_CHAIN};
use crate::{files, safe_write, suspended};

#[cfg(test)]
mod tests;

/// The version of `tree.toml` this Vessel writes; it reads this one and older ones.
pub const FORMAT_VERSION: u32 = 1;
/// Most snapshots a VM keeps (a bound on what a bundle's tree may make Vessel walk).
pub const MAX_SNAPSHOTS: usize = 1000;
/// Longest snapshot name and description, in characters.
pub const MAX_NAME: usize = 100;
pub const MAX_DESCRIPTION: usize = 4000;

const DIR: &str = "snapshots";
const MANIFEST: &str = "tree.toml";
const LOCK: &str = ".lock";
const NODE_CONFIG: &str = "vessel.toml";
const NODE_STATE: &str = "state";
const NODE_MEMORY: &str = "memory";
const NODE_SCREEN: &str = "screen.png";
/// Files a folder of disks may hold that are looked at for images reading through a
/// frozen one.
const MAX_FOLDER_ENTRIES: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{path}: {cause}")]
    Io { path: PathBuf, cause: std::io::Error },
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error(transparent)]
    Disk(#[from] DiskError),
    #[error(transparent)]
    Path(#[from] files::PathError),
    #[error(
        "the VM's snapshot tree {path} is damaged ({why}); its previous version is \
         {path}.bak: put that in its place, or move both away to start a new tree (the \
         disks stay as they are)"
    )]
    Damaged { path: PathBuf, why: String },
    #[error(
        "the VM's snapshot tree {path} was written by a newer Vessel (tree format {version}; \
         this Vessel reads up to {FORMAT_VERSION}); update Vessel to use its snapshots"
    )]
    Newer { path: PathBuf, version: u32 },
    #[error("{vm:?} has no snapshot named {name:?} (`vessel snapshot list {vm:?}` shows them)")]
    NoSuch { vm: String, name: String },
    #[error("{vm:?} already has a snapshot named {name:?}; choose another name")]
    NameTaken { vm: String, name: String },
    #[error("the snapshot name {name:?} {why}")]
    BadName { name: String, why: String },
    #[error("{vm:?} has {MAX_SNAPSHOTS} snapshots, as many as Vessel keeps; delete some first")]
    TooMany { vm: String },
    #[error("the running VM could not freeze its disks: {0}")]
    Freeze(String),
    #[error(
        "{disk} already reads through {depth} images, as deep as Vessel opens; delete a \
         snapshot on this branch first (`vessel snapshot delete`). Each backup of a running \
         VM adds one until the VM is next off: power it off once, and the next backup or \
         snapshot folds them"
    )]
    TooDeep { disk: PathBuf, depth: usize },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SnapshotError + '_ {
    move |cause| SnapshotError::Io { path: path.to_path_buf(), cause }
}

/// One snapshot as the user sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Snapshot {
    pub id: String,
    pub name: String,
    pub description: String,
    /// RFC 3339, UTC.
    pub created: String,
    /// The snapshot it was taken after (deleted ones passed over).
    pub parent: Option<String>,
    /// Whether it holds the machine's state and memory (the VM was suspended or running).
    pub memory: bool,
    /// The screen at that point, if one was kept.
    pub screen: Option<PathBuf>,
}

/// A VM's snapshots, parents before their children.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Tree {
    pub snapshots: Vec<Snapshot>,
    /// The snapshot the VM's present state grew from ("you are here" hangs below it).
    pub current: Option<String>,
}

impl Tree {
    pub fn find(&self, name_or_id: &str) -> Option<&Snapshot> {
        self.snapshots
            .iter()
            .find(|s| s.name == name_or_id)
            .or_else(|| self.snapshots.iter().find(|s| s.id == name_or_id))
    }

    /// The snapshots whose parent is `parent` (none: the roots), oldest first.
    pub fn children<'a>(&'a self, parent: Option<&'a str>) -> impl Iterator<Item = &'a Snapshot> {
        self.snapshots.iter().filter(move |s| s.parent.as_deref() == parent)
    }
}

/// What deleting a snapshot did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deleted {
    /// Disk space given back, in bytes.
    pub reclaimed: u64,
    /// Whether its images stay until the VM is off (it was running).
    pub deferred: bool,
}

// ---- the tree on disk ----

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Manifest {
    version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    current: Option<String>,
    #[serde(default, rename = "snapshot")]
    nodes: Vec<Node>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pending: Option<Pending>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Node {
    id: String,
    name: String,
    #[serde(default)]
    description: String,
    created: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    parent: Option<String>,
    memory: bool,
    /// Deleted by the user; its images stay while two images read through one of them.
    #[serde(default)]
    hidden: bool,
    /// A backup's point, not a snapshot the user took: the id of the backup set whose
    /// latest point it is (`freeze_for_backup`). The user does not see it; it stays
    /// while it is that set's latest point, and what the guest wrote since is what the
    /// images above it hold (the set's next backup reads only that).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    backup: Option<String>,
    /// The frozen images, in the order of the configuration's disks.
    disks: Vec<Frozen>,
    /// The uuids of the VMs made as linked clones of this snapshot: they may read its
    /// images (and those below them), no other VM may.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    clones: Vec<String>,
}

impl Node {
    /// Whether the user sees it as a snapshot.
    fn shown(&self) -> bool {
        !self.hidden && self.backup.is_none()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Frozen {
    /// Relative to the bundle.
    file: PathBuf,
    format: DiskFormat,
}

/// An operation under way (see the module's notes).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
enum Pending {
    /// Committed when the configuration's disks are `overlays`.
    Take { node: Node, overlays: Vec<PathBuf> },
    /// Committed when the configuration's disks are `overlays`; `discard` are the old
    /// current images, removed once committed.
    Revert { to: String, overlays: Vec<PathBuf>, discard: Vec<PathBuf> },
    /// Always carried forward: each step leaves every image reading as before.
    Collect { id: String, steps: Vec<Step> },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "how", rename_all = "kebab-case")]
enum Step {
    /// Nothing reads through `file`: it goes.
    Remove { file: PathBuf },
    /// `into` alone reads through the qcow2 image `file`: `into` is folded into `file`,
    /// which then takes `into`'s place.
    Fold { file: PathBuf, into: PathBuf },
    /// `into` alone reads through the raw image `file`: `file`'s data is copied into
    /// `into`, which stops reading through it; `file` goes.
    Pull { file: PathBuf, into: PathBuf },
}

fn manifest_path(root: &Path) -> PathBuf {
    root.join(DIR).join(MANIFEST)
}

fn damaged(root: &Path, why: impl Into<String>) -> SnapshotError {
    SnapshotError::Damaged { path: manifest_path(root), why: why.into() }
}

fn load(root: &Path) -> Result<Manifest, SnapshotError> {
    let path = manifest_path(root);
    let text = match files::open_regular(&path, false).and_then(safe_write::read_small) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Manifest { version: FORMAT_VERSION, ..Manifest::default() });
        }
        Err(e) => return Err(io(&path)(e)),
    };
    let manifest: Manifest = toml::from_str(&text).map_err(|e| damaged(root, e.message()))?;
    if manifest.version > FORMAT_VERSION {
        return Err(SnapshotError::Newer { path, version: manifest.version });
    }
    check(root, &manifest)?;
    Ok(manifest)
}

/// A bundle's tree is not trusted: ids name folders, parents must form a tree, paths
/// stay relative (each is also resolved inside the bundle where it is used).
fn check(root: &Path, m: &Manifest) -> Result<(), SnapshotError> {
    if m.nodes.len() > MAX_SNAPSHOTS {
        return Err(damaged(root, format!("more than {MAX_SNAPSHOTS} snapshots")));
    }
    let known = |id: &str| m.nodes.iter().any(|n| n.id == id);
    for (i, node) in m.nodes.iter().enumerate() {
        if !valid_id(&node.id) {
            return Err(damaged(root, format!("snapshot id {:?} is not Vessel's", node.id)));
        }
        if m.nodes[..i].iter().any(|n| n.id == node.id) {
            return Err(damaged(root, format!("snapshot id {} appears twice", node.id)));
        }
        if let Some(parent) = &node.parent
            && !known(parent)
        {
            return Err(damaged(root, format!("{}'s parent {parent} is not in it", node.id)));
        }
        // Up the parents: the root within as many steps as there are nodes, or a loop.
        let mut at = node.parent.as_deref();
        for _ in 0..=m.nodes.len() {
            at = at.and_then(|p| m.nodes.iter().find(|n| n.id == p)?.parent.as_deref());
        }
        if at.is_some() {
            return Err(damaged(root, format!("{}'s parents loop", node.id)));
        }
        check_name(&node.name).map_err(|e| damaged(root, e.to_string()))?;
    }
    if let Some(current) = &m.current
        && !known(current)
    {
        return Err(damaged(root, format!("the current snapshot {current} is not in it")));
    }
    Ok(())
}

fn valid_id(id: &str) -> bool {
    (8..=32).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

fn check_name(name: &str) -> Result<(), SnapshotError> {
    let bad = |why: &str| Err(SnapshotError::BadName { name: name.into(), why: why.into() });
    if name.trim().is_empty() {
        return bad("is empty; give it a name");
    }
    if name != name.trim() {
        return bad("starts or ends with spaces; remove them");
    }
    if name.chars().count() > MAX_NAME {
        return bad(&format!("is longer than {MAX_NAME} characters; shorten it"));
    }
    if name.chars().any(char::is_control) {
        return bad("contains control characters; remove them");
    }
    Ok(())
}

fn save(root: &Path, m: &Manifest) -> Result<(), SnapshotError> {
    let dir = root.join(DIR);
    files::create_dir_private(&dir).map_err(io(&dir))?;
    let text = toml::to_string(m).map_err(|e| io(&dir)(std::io::Error::other(e)))?;
    let path = dir.join(MANIFEST);
    safe_write::replace(&path, text.as_bytes()).map_err(io(&path))
}

/// Held while the tree changes: one change at a time, whichever process makes it.
struct TreeLock {
    _file: fs::File,
}

fn lock_tree(root: &Path) -> Result<TreeLock, SnapshotError> {
    use std::os::fd::AsRawFd;
    let dir = root.join(DIR);
    files::create_dir_private(&dir).map_err(io(&dir))?;
    let path = dir.join(LOCK);
    let file = files::open_nofollow(&path).map_err(io(&path))?;
    // SAFETY: flock on an fd this function owns; the result is checked.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(io(&path)(std::io::Error::last_os_error()));
    }
    Ok(TreeLock { _file: file })
}

// ---- what the user sees ----

/// The VM's snapshots as the user sees them: deleted ones left out, their children hung
/// under the nearest snapshot that is kept.
pub fn list(bundle: &Bundle) -> Result<Tree, SnapshotError> {
    Ok(visible(bundle.root(), &load(bundle.root())?))
}

fn visible(root: &Path, m: &Manifest) -> Tree {
    // The nearest kept snapshot at or above `id` (bounded: `check` found no loop).
    fn kept<'a>(m: &'a Manifest, mut id: Option<&'a str>) -> Option<String> {
        for _ in 0..=m.nodes.len() {
            match id.and_then(|i| m.nodes.iter().find(|n| n.id == i)) {
                Some(n) if !n.shown() => id = n.parent.as_deref(),
                _ => break,
            }
        }
        id.map(str::to_string)
    }
    // Parents before children: the order they were taken in.
    let snapshots = m
        .nodes
        .iter()
        .filter(|n| n.shown())
        .map(|n| {
            let screen = root.join(DIR).join(&n.id).join(NODE_SCREEN);
            Snapshot {
                id: n.id.clone(),
                name: n.name.clone(),
                description: n.description.clone(),
                created: n.created.clone(),
                parent: kept(m, n.parent.as_deref()),
                memory: n.memory,
                screen: screen.is_file().then_some(screen),
            }
        })
        .collect();
    Tree { snapshots, current: kept(m, m.current.as_deref()) }
}

fn find<'a>(bundle: &Bundle, m: &'a Manifest, name: &str) -> Result<&'a Node, SnapshotError> {
    let kept = || m.nodes.iter().filter(|n| n.shown());
    kept()
        .find(|n| n.name == name)
        .or_else(|| kept().find(|n| n.id == name))
        .ok_or_else(|| SnapshotError::NoSuch { vm: bundle.config.name.clone(), name: name.into() })
}

fn name_free(bundle: &Bundle, m: &Manifest, name: &str) -> Result<(), SnapshotError> {
    check_name(name)?;
    if m.nodes.iter().any(|n| n.shown() && n.name == name) {
        return Err(SnapshotError::NameTaken { vm: bundle.config.name.clone(), name: name.into() });
    }
    Ok(())
}

// ---- operations ----
//
// Each expects the VM not to run (the caller holds its run lock), except `rename` and a
// `delete` that defers its disk work.

/// Finishes or undoes what an operation killed part-way left (see the module's notes).
/// Called before every operation and before the VM powers on.
pub fn recover(bundle: &mut Bundle, policy: &BackingPolicy) -> Result<(), SnapshotError> {
    let root = bundle.root().to_path_buf();
    if !manifest_path(&root).exists() {
        return Ok(());
    }
    let _lock = lock_tree(&root)?;
    let mut m = load(&root)?;
    settle(bundle, policy, &mut m)
}

fn settle(
    bundle: &mut Bundle,
    policy: &BackingPolicy,
    m: &mut Manifest,
) -> Result<(), SnapshotError> {
    let Some(pending) = m.pending.clone() else { return Ok(()) };
    // What the configuration on disk says decides, not what this process last had.
    *bundle = Bundle::open(bundle.root())?;
    let committed = |overlays: &[PathBuf]| {
        bundle.config.disks.len() == overlays.len()
            && bundle.config.disks.iter().zip(overlays).all(|(d, o)| d.file == *o)
    };
    match pending {
        Pending::Take { node, overlays } => {
            if committed(&overlays) {
                finish_take(bundle, m, node)
            } else {
                undo(bundle, m, &overlays, Some(&node.id))
            }
        }
        Pending::Revert { to, overlays, discard } => {
            if committed(&overlays) {
                finish_revert(bundle, m, &to, &discard)
            } else {
                undo(bundle, m, &overlays, None)
            }
        }
        Pending::Collect { id, steps } => run_collect(bundle, policy, m, &id, &steps).map(|_| ()),
    }
}

/// Undoes an operation that was not committed: the images and files it made go.
fn undo(
    bundle: &Bundle,
    m: &mut Manifest,
    overlays: &[PathBuf],
    node: Option<&str>,
) -> Result<(), SnapshotError> {
    let root = bundle.root();
    for overlay in overlays {
        remove(&bundle.inside(overlay)?)?;
    }
    match node {
        Some(id) => remove_node_dir(root, id)?,
        // A revert's links to the snapshot's machine state.
        None => {
            for path in [suspended::state_path(root), suspended::memory_path(root)] {
                remove(&suspended::pending(&path))?;
            }
        }
    }
    m.pending = None;
    save(root, m)
}

fn remove(path: &Path) -> Result<(), SnapshotError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(path)(e)),
        _ => Ok(()),
    }
}

fn node_dir(root: &Path, id: &str) -> PathBuf {
    root.join(DIR).join(id)
}

fn remove_node_dir(root: &Path, id: &str) -> Result<(), SnapshotError> {
    let dir = node_dir(root, id);
    // Only a real folder: a symlink in its place is removed, never followed.
    match fs::symlink_metadata(&dir) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(&dir).map_err(io(&dir)),
        Ok(_) => remove(&dir),
        Err(_) => Ok(()),
    }
}

/// A new id: 16 hex digits.
fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..16].to_string()
}

/// A name for a new overlay on the disk `file`: beside it, `<stem>-<8 hex>.qcow2`, where
/// the stem is the disk's own name without an earlier overlay's suffix.
fn overlay_for(bundle: &Bundle, file: &Path) -> Result<PathBuf, SnapshotError> {
    let stem = file.file_stem().unwrap_or_default().to_string_lossy().into_owned();
    let stem = match stem.rsplit_once('-') {
        Some((base, tag)) if tag.len() == 8 && tag.bytes().all(|b| b.is_ascii_hexdigit()) => {
            base.to_string()
        }
        _ => stem,
    };
    let folder = file.parent().unwrap_or(Path::new(""));
    for _ in 0..16 {
        let tag = &uuid::Uuid::new_v4().simple().to_string()[..8];
        let name = folder.join(format!("{stem}-{tag}.qcow2"));
        let path = bundle.inside(&name)?;
        if fs::symlink_metadata(&path).is_err() {
            return Ok(name);
        }
    }
    Err(io(file)(std::io::Error::other("no free name for an overlay beside it")))
}

/// Creates the overlay `overlay` (relative to the bundle) reading through `frozen`, the
/// image in the same folder, at its size; named relative to itself, so the VM's folder
/// stays movable.
fn make_overlay(bundle: &Bundle, frozen: &Frozen, overlay: &Path) -> Result<(), SnapshotError> {
    let below = bundle.inside(&frozen.file)?;
    let size = disks::inspect(&below, frozen.format)?.virtual_size;
    let name = Path::new(below.file_name().unwrap_or_default());
    let path = bundle.inside(overlay)?;
    disks::create_image(&path, DiskFormat::Qcow2, size, Some((name, frozen.format)))?;
    // On disk before the configuration names it.
    files::open_regular(&path, false).and_then(|f| f.sync_all()).map_err(io(&path))?;
    files::sync_dir(path.parent().unwrap_or(Path::new("/")));
    Ok(())
}

/// The configuration with its disks on `overlays`.
fn on_overlays(config: &mut VmConfig, overlays: &[PathBuf]) {
    for (disk, overlay) in config.disks.iter_mut().zip(overlays) {
        disk.file = overlay.clone();
        disk.format = DiskFormat::Qcow2;
    }
}

/// Writes `contents` as the new private file `path`, synced.
fn write_new(path: &Path, contents: &[u8]) -> Result<(), SnapshotError> {
    let mut file = files::create_private(path).map_err(io(path))?;
    file.write_all(contents).and_then(|()| file.sync_all()).map_err(io(path))
}

/// The VM's tree, locked, with what an interrupted operation left settled and what
/// deleted snapshots kept let go of (the VM is off).
fn open_tree(
    bundle: &mut Bundle,
    policy: &BackingPolicy,
) -> Result<(TreeLock, Manifest), SnapshotError> {
    let lock = lock_tree(bundle.root())?;
    let mut m = load(bundle.root())?;
    settle(bundle, policy, &mut m)?;
    collect(bundle, policy, &mut m)?;
    Ok((lock, m))
}

/// Takes a snapshot of the VM, which is off or suspended (a suspended VM's machine state
/// and memory are kept with it). `screen` is a PNG of the screen at that point.
pub fn take(
    bundle: &mut Bundle,
    policy: &BackingPolicy,
    name: &str,
    description: &str,
    screen: Option<&[u8]>,
) -> Result<Snapshot, SnapshotError> {
    let (_lock, mut m) = open_tree(bundle, policy)?;
    name_free(bundle, &m, name)?;
    if description.chars().count() > MAX_DESCRIPTION {
        return Err(SnapshotError::BadName {
            name: name.into(),
            why: format!("has a description longer than {MAX_DESCRIPTION} characters"),
        });
    }
    let node = new_node(bundle, &m, name, description);
    let id = freeze(bundle, policy, &mut m, node, screen, &mut save_on_overlays)?;
    visible(bundle.root(), &m)
        .find(&id)
        .cloned()
        .ok_or_else(|| damaged(bundle.root(), format!("snapshot {id} went missing")))
}

/// The commit of a VM that is not running: its configuration names the overlays.
fn save_on_overlays(bundle: &Bundle, overlays: &[PathBuf]) -> Result<(), SnapshotError> {
    let mut next = bundle.clone();
    on_overlays(&mut next.config, overlays);
    next.save()?;
    Ok(())
}

/// A node for the VM's present point, its disks not yet frozen.
fn new_node(bundle: &Bundle, m: &Manifest, name: &str, description: &str) -> Node {
    Node {
        id: new_id(),
        name: name.to_string(),
        description: description.to_string(),
        created: rfc3339(std::time::SystemTime::now()),
        parent: m.current.clone(),
        memory: suspended::is_suspended(bundle.root()),
        hidden: false,
        backup: None,
        disks: Vec::new(),
        clones: Vec::new(),
    }
}

/// How a freeze is committed, once the overlays are made: from then on the VM's disks are
/// the overlays (its configuration names them). It must not return Ok before that is so,
/// nor Err after.
type Commit<'a> = dyn FnMut(&Bundle, &[PathBuf]) -> Result<(), SnapshotError> + 'a;

/// Freezes the VM's disks as `node`: each disk's image stays as it is, and the VM goes
/// on in a new overlay reading through it (`commit` puts it there). The node's id.
fn freeze(
    bundle: &mut Bundle,
    policy: &BackingPolicy,
    m: &mut Manifest,
    mut node: Node,
    screen: Option<&[u8]>,
    commit: &mut Commit<'_>,
) -> Result<String, SnapshotError> {
    let root = bundle.root().to_path_buf();
    if m.nodes.len() >= MAX_SNAPSHOTS {
        return Err(SnapshotError::TooMany { vm: bundle.config.name.clone() });
    }
    let mut overlays = Vec::new();
    for disk in &bundle.config.disks {
        let path = bundle.inside(&disk.file)?;
        let depth = disks::backing_chain(&path, disk.format, policy)?.len();
        if depth >= MAX_BACKING_CHAIN {
            return Err(SnapshotError::TooDeep { disk: path, depth });
        }
        node.disks.push(Frozen { file: disk.file.clone(), format: disk.format });
        overlays.push(overlay_for(bundle, &disk.file)?);
    }
    m.pending = Some(Pending::Take { node: node.clone(), overlays: overlays.clone() });
    save(&root, m)?;
    let made = (|| -> Result<(), SnapshotError> {
        let dir = node_dir(&root, &node.id);
        fs::create_dir(&dir).map_err(io(&dir))?;
        files::create_dir_private(&dir).map_err(io(&dir))?;
        write_new(&dir.join(NODE_CONFIG), bundle.config.to_toml().as_bytes())?;
        if let Some(png) = screen {
            write_new(&dir.join(NODE_SCREEN), png)?;
        }
        if node.memory {
            // The suspended VM's files, shared: they are never written in place (a new
            // suspend writes new files and renames them over these names).
            for (from, to) in [
                (suspended::memory_path(&root), dir.join(NODE_MEMORY)),
                (suspended::state_path(&root), dir.join(NODE_STATE)),
            ] {
                fs::hard_link(&from, &to).map_err(io(&to))?;
            }
        }
        for (frozen, overlay) in node.disks.iter().zip(&overlays) {
            make_overlay(bundle, frozen, overlay)?;
        }
        // The commit: from here on the VM writes its new overlays.
        commit(bundle, &overlays)
    })();
    if let Err(e) = made {
        let _ = settle(bundle, policy, m);
        return Err(e);
    }
    settle(bundle, policy, m)?;
    if !m.nodes.iter().any(|n| n.id == node.id) {
        return Err(damaged(&root, format!("snapshot {} went missing", node.id)));
    }
    Ok(node.id)
}

/// A backup's point of the VM (`freeze_for_backup`).
#[derive(Clone, Debug, PartialEq)]
pub struct BackupPoint {
    /// Its node in the VM's tree.
    pub node: String,
    /// Its frozen images (the VM only reads them from now on), in the order of the
    /// configuration's disks, resolved inside the VM's folder.
    pub disks: Vec<(PathBuf, DiskFormat)>,
    /// The configuration at that point.
    pub config: VmConfig,
    /// The snapshot the VM's state then grew from (`Tree::current`), by name.
    pub snapshot: Option<String>,
}

/// Freezes the VM's disks for a backup into the set `set` (its id): the images stay as
/// they are, for the backup to read while the VM goes on in new overlays. The VM is off
/// (`commit` None: its configuration is saved here) or running (`commit` makes its
/// machine switch to the overlays and save its configuration, while the guest is paused;
/// the disks' images are not folded meanwhile). The point stays in the VM's tree, unseen,
/// until the set's next backup (`release_backups`).
pub fn freeze_for_backup(
    bundle: &mut Bundle,
    policy: &BackingPolicy,
    set: &str,
    commit: Option<&mut Commit<'_>>,
) -> Result<BackupPoint, SnapshotError> {
    let running = commit.is_some();
    let (_lock, mut m) = if running {
        let lock = lock_tree(bundle.root())?;
        let mut m = load(bundle.root())?;
        if let Some(Pending::Collect { .. }) = m.pending {
            return Err(damaged(
                bundle.root(),
                "a snapshot's deletion was left half-done; power the VM off once to finish it"
                    .to_string(),
            ));
        }
        settle(bundle, policy, &mut m)?;
        (lock, m)
    } else {
        open_tree(bundle, policy)?
    };
    let config = bundle.config.clone();
    let snapshot = visible(bundle.root(), &m)
        .current
        .and_then(|id| m.nodes.iter().find(|n| n.id == id).map(|n| n.name.clone()));
    let mut node = new_node(bundle, &m, &format!("backup {set}"), "");
    node.backup = Some(set.to_string());
    // A suspended VM's saved machine goes into the backup itself; the node keeps none.
    node.memory = false;
    let id = match commit {
        Some(commit) => freeze(bundle, policy, &mut m, node, None, commit)?,
        None => freeze(bundle, policy, &mut m, node, None, &mut save_on_overlays)?,
    };
    let node = m.nodes.iter().find(|n| n.id == id).expect("freeze found it");
    let disks = node
        .disks
        .iter()
        .map(|f| Ok((bundle.inside(&f.file)?, f.format)))
        .collect::<Result<_, SnapshotError>>()?;
    Ok(BackupPoint { node: id, disks, config, snapshot })
}

/// The frozen images of the backup point `node` (in the order of its configuration's
/// disks), if the VM's tree still has it as a backup's point.
pub fn backup_images(bundle: &Bundle, node: &str) -> Option<Vec<(PathBuf, DiskFormat)>> {
    let m = load(bundle.root()).ok()?;
    let node = m.nodes.iter().find(|n| n.id == node && !n.hidden && n.backup.is_some())?;
    node.disks.iter().map(|f| Some((bundle.inside(&f.file).ok()?, f.format))).collect()
}

/// The set `set`'s backup points in the VM's tree other than `keep` go (their images are
/// folded away when the VM is next off for a snapshot or backup operation).
pub fn release_backups(bundle: &Bundle, set: &str, keep: &str) -> Result<(), SnapshotError> {
    let root = bundle.root();
    let _lock = lock_tree(root)?;
    let mut m = load(root)?;
    let mut changed = false;
    for node in &mut m.nodes {
        if node.backup.as_deref() == Some(set) && node.id != keep && !node.hidden {
            node.hidden = true;
            changed = true;
        }
    }
    if changed { save(root, &m) } else { Ok(()) }
}

/// Carries the operation recorded in `m` forward if `made` committed it, or undoes it;
/// then the snapshot `id` as the user sees it.
fn conclude(
    bundle: &mut Bundle,
    policy: &BackingPolicy,
    m: &mut Manifest,
    made: Result<(), SnapshotError>,
    id: &str,
) -> Result<Snapshot, SnapshotError> {
    if let Err(e) = made {
        let _ = settle(bundle, policy, m);
        return Err(e);
    }
    settle(bundle, policy, m)?;
    visible(bundle.root(), m)
        .find(id)
        .cloned()
        .ok_or_else(|| damaged(bundle.root(), format!("snapshot {id} went missing")))
}

fn finish_take(bundle: &Bundle, m: &mut Manifest, node: Node) -> Result<(), SnapshotError> {
    // The frozen images are only read from now on.
    for frozen in &node.disks {
        let path = bundle.inside(&frozen.file)?;
        if let Ok(meta) = fs::symlink_metadata(&path)
            && meta.is_file()
        {
            fs::set_permissions(&path, fs::Permissions::from_mode(0o400)).map_err(io(&path))?;
        }
    }
    m.current = Some(node.id.clone());
    if !m.nodes.iter().any(|n| n.id == node.id) {
        m.nodes.push(node);
    }
    m.pending = None;
    save(bundle.root(), m)
}

/// The configuration the VM had at snapshot `node`; its disks are the frozen images.
fn node_config(root: &Path, node: &Node) -> Result<VmConfig, SnapshotError> {
    let dir = node_dir(root, &node.id);
    let config_path = dir.join(NODE_CONFIG);
    let text = files::open_regular(&config_path, false)
        .and_then(safe_write::read_small)
        .map_err(io(&config_path))?;
    let config = VmConfig::from_toml(&text)
        .map_err(|e| damaged(root, format!("{}: {e}", config_path.display())))?;
    let same_disks = config.disks.len() == node.disks.len()
        && config
            .disks
            .iter()
            .zip(&node.disks)
            .all(|(d, f)| d.file == f.file && d.format == f.format);
    if !same_disks {
        return Err(damaged(
            root,
            format!("{} names other disks than the tree", config_path.display()),
        ));
    }
    Ok(config)
}

/// The configuration the VM had at the snapshot `name`, its disks naming the snapshot's
/// frozen images (for a clone of that point).
pub fn config_at(bundle: &Bundle, name: &str) -> Result<VmConfig, SnapshotError> {
    let m = load(bundle.root())?;
    node_config(bundle.root(), find(bundle, &m, name)?)
}

/// The frozen images of the VM's snapshots that the VM `uuid` was made a linked clone of,
/// and those they read through (their snapshots' parents'), resolved inside the VM's
/// folder: what that clone may read. A VM that was not made so reads none of them.
pub fn images_for_clone(bundle: &Bundle, uuid: &uuid::Uuid) -> Vec<PathBuf> {
    let Ok(m) = load(bundle.root()) else { return Vec::new() };
    let uuid = uuid.to_string();
    let mut images = Vec::new();
    for node in m.nodes.iter().filter(|n| n.clones.contains(&uuid)) {
        // Up its parents (bounded: `check` found no loop).
        let mut at = Some(node);
        for _ in 0..=m.nodes.len() {
            let Some(n) = at else { break };
            images.extend(n.disks.iter().filter_map(|f| bundle.inside(&f.file).ok()));
            at = n.parent.as_ref().and_then(|p| m.nodes.iter().find(|x| &x.id == p));
        }
    }
    images
}

/// Records that the VM `uuid` is a linked clone of the snapshot `name` (it may read its
/// images from now on).
pub fn add_clone(bundle: &Bundle, name: &str, uuid: &uuid::Uuid) -> Result<(), SnapshotError> {
    let root = bundle.root();
    let _lock = lock_tree(root)?;
    let mut m = load(root)?;
    let id = find(bundle, &m, name)?.id.clone();
    for node in m.nodes.iter_mut().filter(|n| n.id == id) {
        node.clones.push(uuid.to_string());
    }
    save(root, &m)
}

/// The frozen images of the snapshot `name`, resolved inside the VM's folder, with their
/// formats, in the order of its configuration's disks.
pub fn images_of(bundle: &Bundle, name: &str) -> Result<Vec<(PathBuf, DiskFormat)>, SnapshotError> {
    let m = load(bundle.root())?;
    let node = find(bundle, &m, name)?;
    node.disks.iter().map(|f| Ok((bundle.inside(&f.file)?, f.format))).collect()
}

/// Goes back to the snapshot `name`: the VM's disks read as they did then, its
/// configuration is the one it had (under its present name), and if the snapshot holds
/// the machine's state the VM is suspended at that point (powering on resumes it). The
/// present state is lost.
pub fn revert(
    bundle: &mut Bundle,
    policy: &BackingPolicy,
    name: &str,
) -> Result<Snapshot, SnapshotError> {
    let root = bundle.root().to_path_buf();
    let (_lock, mut m) = open_tree(bundle, policy)?;
    let node = find(bundle, &m, name)?.clone();
    let dir = node_dir(&root, &node.id);
    let mut config = node_config(&root, &node)?;
    // Only images a snapshot made are let go of: the present overlays on frozen images.
    let frozen_files: Vec<PathBuf> =
        m.nodes.iter().flat_map(|n| &n.disks).map(|f| f.file.clone()).collect();
    let mut discard = Vec::new();
    for disk in &bundle.config.disks {
        if frozen_files.contains(&disk.file) || disk.format != DiskFormat::Qcow2 {
            continue;
        }
        let path = bundle.inside(&disk.file)?;
        let below = disks::backing_file(&path, disk.format).ok().flatten();
        let reads_frozen = below.is_some_and(|b| {
            frozen_files
                .iter()
                .any(|f| bundle.inside(f).is_ok_and(|f| fs::canonicalize(&b).is_ok_and(|b| b == f)))
        });
        if reads_frozen {
            discard.push(disk.file.clone());
        }
    }
    let mut overlays = Vec::new();
    for frozen in &node.disks {
        overlays.push(overlay_for(bundle, &frozen.file)?);
    }
    m.pending = Some(Pending::Revert {
        to: node.id.clone(),
        overlays: overlays.clone(),
        discard: discard.clone(),
    });
    save(&root, &m)?;
    let made = (|| -> Result<(), SnapshotError> {
        for (frozen, overlay) in node.disks.iter().zip(&overlays) {
            make_overlay(bundle, frozen, overlay)?;
        }
        if node.memory {
            for (from, to) in [
                (dir.join(NODE_MEMORY), suspended::memory_path(&root)),
                (dir.join(NODE_STATE), suspended::state_path(&root)),
            ] {
                let to = suspended::pending(&to);
                remove(&to)?;
                // A regular file inside the snapshot's folder only.
                files::open_regular(&from, false).map_err(io(&from))?;
                fs::hard_link(&from, &to).map_err(io(&to))?;
            }
        }
        // The commit.
        let mut next = bundle.clone();
        config.name = next.config.name.clone();
        config.uuid = next.config.uuid;
        config.created = next.config.created.clone();
        on_overlays(&mut config, &overlays);
        next.config = config;
        next.save()?;
        Ok(())
    })();
    conclude(bundle, policy, &mut m, made, &node.id)
}

fn finish_revert(
    bundle: &Bundle,
    m: &mut Manifest,
    to: &str,
    discard: &[PathBuf],
) -> Result<(), SnapshotError> {
    let root = bundle.root();
    let (state, memory) = (suspended::state_path(root), suspended::memory_path(root));
    // The present suspended state goes first (without its state file the memory file is
    // no suspended state), then the snapshot's is put in place, the state file last.
    remove(&state)?;
    let memory_new = suspended::pending(&memory);
    if memory_new.exists() {
        fs::rename(&memory_new, &memory).map_err(io(&memory))?;
    } else if !suspended::pending(&state).exists() {
        remove(&memory)?;
    }
    let state_new = suspended::pending(&state);
    if state_new.exists() {
        fs::rename(&state_new, &state).map_err(io(&state))?;
    }
    files::sync_dir(root);
    for file in discard {
        remove(&bundle.inside(file)?)?;
    }
    m.current = Some(to.to_string());
    m.pending = None;
    save(root, m)
}

/// Renames the snapshot `name`.
pub fn rename(bundle: &Bundle, name: &str, new_name: &str) -> Result<(), SnapshotError> {
    let root = bundle.root();
    let _lock = lock_tree(root)?;
    let mut m = load(root)?;
    let id = find(bundle, &m, name)?.id.clone();
    if name != new_name {
        name_free(bundle, &m, new_name)?;
    }
    m.nodes.iter_mut().filter(|n| n.id == id).for_each(|n| n.name = new_name.to_string());
    save(root, &m)
}

/// Deletes the snapshot `name`: it leaves the tree at once; its images are folded into
/// the image that reads through them, or removed if none does, which gives their disk
/// space back. With `disks_in_use` (the VM runs), that waits for the next operation on
/// the VM while it is off.
pub fn delete(
    bundle: &mut Bundle,
    policy: &BackingPolicy,
    name: &str,
    disks_in_use: bool,
) -> Result<Deleted, SnapshotError> {
    let root = bundle.root().to_path_buf();
    let _lock = lock_tree(&root)?;
    let mut m = load(&root)?;
    if !disks_in_use {
        settle(bundle, policy, &mut m)?;
    }
    let id = find(bundle, &m, name)?.id.clone();
    m.nodes.iter_mut().filter(|n| n.id == id).for_each(|n| n.hidden = true);
    save(&root, &m)?;
    if disks_in_use {
        return Ok(Deleted { reclaimed: 0, deferred: true });
    }
    let reclaimed = collect(bundle, policy, &mut m)?;
    Ok(Deleted { reclaimed, deferred: false })
}

/// Lets go of what deleted snapshots keep, as far as nothing else needs it.
fn collect(
    bundle: &mut Bundle,
    policy: &BackingPolicy,
    m: &mut Manifest,
) -> Result<u64, SnapshotError> {
    let mut reclaimed = 0;
    // Each pass drops one node; bounded by their number.
    for _ in 0..=m.nodes.len() {
        let mut planned = None;
        for node in m.nodes.iter().filter(|n| n.hidden) {
            if let Some(steps) = plan(bundle, m, node)? {
                planned = Some((node.id.clone(), steps));
                break;
            }
        }
        let Some((id, steps)) = planned else { break };
        m.pending = Some(Pending::Collect { id: id.clone(), steps: steps.clone() });
        save(bundle.root(), m)?;
        reclaimed += run_collect(bundle, policy, m, &id, &steps)?;
    }
    Ok(reclaimed)
}

/// How the deleted `node`'s images go, if they can: each must have at most one image
/// reading through it, and that one must be the VM's (a current disk or another
/// snapshot's frozen image).
fn plan(bundle: &Bundle, m: &Manifest, node: &Node) -> Result<Option<Vec<Step>>, SnapshotError> {
    let canonical = |rel: &Path| bundle.inside(rel).ok().and_then(|p| fs::canonicalize(p).ok());
    // The VM's images besides this node's: current disks and other nodes' frozen ones.
    let mut ours: Vec<(PathBuf, PathBuf)> = Vec::new();
    for rel in bundle.config.disks.iter().map(|d| &d.file).chain(
        m.nodes.iter().filter(|n| n.id != node.id).flat_map(|n| n.disks.iter().map(|f| &f.file)),
    ) {
        if let Some(path) = canonical(rel) {
            ours.push((rel.clone(), path));
        }
    }
    let mut steps = Vec::new();
    for frozen in &node.disks {
        let Ok(image) = fs::canonicalize(bundle.inside(&frozen.file)?) else {
            continue; // gone already
        };
        if ours.iter().any(|(_, p)| *p == image) {
            return Ok(None); // still a disk of the VM
        }
        let readers = readers_of(&image)?;
        match readers.as_slice() {
            [] => steps.push(Step::Remove { file: frozen.file.clone() }),
            [reader] => {
                let Some((rel, _)) = ours.iter().find(|(_, p)| p == reader) else {
                    return Ok(None); // read by an image the tree does not know: kept
                };
                let (file, into) = (frozen.file.clone(), rel.clone());
                steps.push(match frozen.format {
                    DiskFormat::Qcow2 => Step::Fold { file, into },
                    DiskFormat::Raw => Step::Pull { file, into },
                });
            }
            _ => return Ok(None),
        }
    }
    Ok(Some(steps))
}

/// The qcow2 images in `image`'s folder whose backing file is `image` (canonical paths).
fn readers_of(image: &Path) -> Result<Vec<PathBuf>, SnapshotError> {
    let folder = image.parent().unwrap_or(Path::new("/"));
    let mut readers = Vec::new();
    let entries = fs::read_dir(folder).map_err(io(folder))?;
    for entry in entries.take(MAX_FOLDER_ENTRIES) {
        let path = entry.map_err(io(folder))?.path();
        if !fs::symlink_metadata(&path).is_ok_and(|m| m.is_file()) || path == image {
            continue;
        }
        let mut magic = [0u8; 4];
        let is_qcow2 = files::open_regular(&path, false)
            .and_then(|f| std::os::unix::fs::FileExt::read_exact_at(&f, &mut magic, 0))
            .is_ok_and(|()| magic == *b"QFI\xfb");
        if !is_qcow2 {
            continue;
        }
        let below = disks::backing_file(&path, DiskFormat::Qcow2).ok().flatten();
        if below.and_then(|b| fs::canonicalize(b).ok()).is_some_and(|b| b == image) {
            readers.push(path);
        }
    }
    Ok(readers)
}

/// Bytes a file holds on disk that removing it gives back (none while another link to
/// it stays).
fn held(path: &Path) -> u64 {
    fs::symlink_metadata(path)
        .map(|m| if m.nlink() == 1 { m.blocks() * 512 } else { 0 })
        .unwrap_or(0)
}

/// Carries out the steps dropping node `id` (again, after an interruption: each step
/// sees whether it was done), then drops it from the tree.
fn run_collect(
    bundle: &Bundle,
    policy: &BackingPolicy,
    m: &mut Manifest,
    id: &str,
    steps: &[Step],
) -> Result<u64, SnapshotError> {
    let root = bundle.root();
    let mut freed = 0u64;
    for step in steps {
        match step {
            Step::Remove { file } => {
                let path = bundle.inside(file)?;
                freed += held(&path);
                remove(&path)?;
            }
            Step::Fold { file, into } => {
                let (image, reader) = (bundle.inside(file)?, bundle.inside(into)?);
                if fs::symlink_metadata(&image).is_err() {
                    continue; // done: it took the reader's place
                }
                let before = held(&image) + held(&reader);
                let mode = fs::metadata(&reader).map_err(io(&reader))?.permissions().mode() & 0o777;
                fs::set_permissions(&image, fs::Permissions::from_mode(0o600))
                    .map_err(io(&image))?;
                disks::commit_into(&reader, &image, policy)?;
                fs::rename(&image, &reader).map_err(io(&reader))?;
                fs::set_permissions(&reader, fs::Permissions::from_mode(mode))
                    .map_err(io(&reader))?;
                files::sync_dir(reader.parent().unwrap_or(root));
                freed += before.saturating_sub(held(&reader));
            }
            Step::Pull { file, into } => {
                let (image, reader) = (bundle.inside(file)?, bundle.inside(into)?);
                if fs::symlink_metadata(&image).is_err() {
                    continue;
                }
                let before = held(&image) + held(&reader);
                if disks::backing_file(&reader, DiskFormat::Qcow2)?.is_some() {
                    let mode =
                        fs::metadata(&reader).map_err(io(&reader))?.permissions().mode() & 0o777;
                    fs::set_permissions(&reader, fs::Permissions::from_mode(0o600))
                        .map_err(io(&reader))?;
                    disks::pull_into(&reader, policy)?;
                    disks::drop_backing(&reader)?;
                    fs::set_permissions(&reader, fs::Permissions::from_mode(mode))
                        .map_err(io(&reader))?;
                }
                remove(&image)?;
                freed += before.saturating_sub(held(&reader));
            }
        }
    }
    let dir = node_dir(root, id);
    for file in [NODE_MEMORY, NODE_STATE, NODE_SCREEN, NODE_CONFIG] {
        freed += held(&dir.join(file));
    }
    remove_node_dir(root, id)?;
    let parent = m.nodes.iter().find(|n| n.id == id).and_then(|n| n.parent.clone());
    m.nodes.retain(|n| n.id != id);
    for node in &mut m.nodes {
        if node.parent.as_deref() == Some(id) {
            node.parent = parent.clone();
        }
    }
    if m.current.as_deref() == Some(id) {
        m.current = parent;
    }
    m.pending = None;
    save(root, m)?;
    Ok(freed)
}
