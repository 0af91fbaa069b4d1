//! The library: which VMs exist. Bundles live in the library folder
//! (`$XDG_DATA_HOME/vessel`, by default `~/.local/share/vessel`) or anywhere else, in which
//! case the library's registry (`library.toml`) remembers where. A bundle that is missing
//! or unreadable is listed as inaccessible with the reason, never dropped silently.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::bundle::{self, Bundle, BundleError, EXTENSION};
use crate::config::{Boot, DiskFormat, Network, VmConfig};
use crate::disks::{self, BackingPolicy, DiskError};
use crate::safe_write;
use crate::snapshots;
use crate::validate::{Host, Problem, validate};

pub const REGISTRY_FILE: &str = "library.toml";

/// A disk as a machine opens it (see `Library::disk_images`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskImage {
    /// The image file, resolved inside the bundle.
    pub path: PathBuf,
    pub format: DiskFormat,
    /// What it reads through, outermost first; each checked against the policy.
    pub backing: Vec<disks::Layer>,
    pub read_only: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum LibraryError {
    #[error("{path}: {cause}")]
    Io { path: PathBuf, cause: std::io::Error },
    #[error("the library registry {path} is damaged ({why}); fix or remove it")]
    Registry { path: PathBuf, why: String },
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error(transparent)]
    Disk(#[from] DiskError),
    #[error("{}", .0.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Problem>),
    #[error("a VM named {0:?} is already in the library; choose another name")]
    NameTaken(String),
    #[error("no VM named {0:?} in the library (`vessel list` shows them)")]
    NoSuchVm(String),
    #[error("{0} is running; stop it first")]
    Running(String),
    #[error("deleting {0:?} removes all its files; confirm with the VM's name")]
    NotConfirmed(String),
    #[error(transparent)]
    Snapshot(#[from] snapshots::SnapshotError),
    #[error(
        "{0:?} has snapshots, whose images a linked clone of its present state cannot \
         share; make a full clone (without --linked), or a linked clone of one of its \
         snapshots (--snapshot SNAP --linked)"
    )]
    LinkedWithSnapshots(String),
    #[error("{clone:?} is a linked clone of {name:?} and reads its disks; delete {clone:?} first")]
    HasLinkedClones { name: String, clone: String },
    #[error(
        "{clone:?} is a linked clone made from snapshot {snapshot:?} and reads its disks; \
         delete {clone:?} first (or make it a full copy: vessel clone {clone:?} NEW_NAME)"
    )]
    SnapshotHasLinkedClones { snapshot: String, clone: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LibraryError + '_ {
    move |source| LibraryError::Io { path: path.to_path_buf(), cause: source }
}

/// The read-only base a linked clone's overlays read: `<disk>.base` beside the disk.
fn base_of(disk: &Path) -> PathBuf {
    let mut name = disk.file_name().unwrap_or_default().to_os_string();
    name.push(".base");
    disk.with_file_name(name)
}

/// Refuses a VM that uses files outside its folder: disks, kernel or initrd named outside
/// it, or qcow2 disks reading through files `policy` does not allow. Files that do not
/// exist are passed over (powering the VM on names them).
pub fn check_confined(bundle: &Bundle, policy: &BackingPolicy) -> Result<(), LibraryError> {
    let exists = |path: &Path| path.try_exists().unwrap_or(true);
    for disk in &bundle.config.disks {
        let path = bundle.inside(&disk.file)?;
        if exists(&path) {
            disks::backing_chain(&path, disk.format, policy)?;
        }
    }
    if let Boot::Direct { kernel, initrd, .. } = &bundle.config.boot.value {
        for file in std::iter::once(kernel).chain(initrd) {
            bundle.inside(file)?;
        }
    }
    Ok(())
}

/// Where a clone's copy of the source's file `rel` goes: inside the clone's new bundle,
/// in a private folder, never the source file itself (a path that resolved back to the
/// source would be truncated by the copy).
fn clone_destination(clone: &Bundle, rel: &Path) -> Result<PathBuf, LibraryError> {
    let to = clone.inside(rel)?;
    if let Some(dir) = to.parent() {
        crate::files::create_dir_private(dir).map_err(io(dir))?;
    }
    // The folder may not have existed when `inside` looked: look again.
    let to = clone.inside(rel)?;
    if to.exists() {
        return Err(LibraryError::Disk(DiskError::Exists(to)));
    }
    Ok(to)
}

/// A MAC in QEMU's 52:54:00 range, from a VM's uuid: stable for the VM, new for a clone.
pub fn mac_for(uuid: &uuid::Uuid) -> String {
    let b = uuid.as_bytes();
    format!("52:54:00:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2])
}

/// Where the library lives unless told otherwise.
pub fn default_dir() -> PathBuf {
    match std::env::var_os("XDG_DATA_HOME") {
        Some(d) if !d.is_empty() => PathBuf::from(d).join("vessel"),
        _ => {
            let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| "/".into());
            home.join(".local/share/vessel")
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Registry {
    /// Bundles outside the library folder.
    #[serde(default)]
    bundles: Vec<PathBuf>,
}

/// One VM the library knows of.
#[derive(Debug)]
pub enum Entry {
    Ok(Box<Bundle>),
    /// Missing, unreadable or from a newer Vessel: shown with the reason.
    Inaccessible {
        path: PathBuf,
        reason: String,
    },
}

impl Entry {
    pub fn path(&self) -> &Path {
        match self {
            Entry::Ok(b) => b.root(),
            Entry::Inaccessible { path, .. } => path,
        }
    }

    pub fn name(&self) -> String {
        match self {
            Entry::Ok(b) => b.config.name.clone(),
            Entry::Inaccessible { path, .. } => path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| path.display().to_string()),
        }
    }
}

pub struct Library {
    dir: PathBuf,
}

impl Library {
    /// The library at `dir`, created if missing.
    pub fn open(dir: &Path) -> Result<Library, LibraryError> {
        fs::create_dir_all(dir).map_err(io(dir))?;
        Ok(Library { dir: dir.to_path_buf() })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn registry(&self) -> Result<Registry, LibraryError> {
        let path = self.dir.join(REGISTRY_FILE);
        match crate::files::open_regular(&path, false).and_then(safe_write::read_small) {
            Ok(text) => toml::from_str(&text)
                .map_err(|e| LibraryError::Registry { path, why: e.message().to_string() }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Registry::default()),
            Err(e) => Err(io(&path)(e)),
        }
    }

    fn save_registry(&self, registry: &Registry) -> Result<(), LibraryError> {
        let path = self.dir.join(REGISTRY_FILE);
        let text = toml::to_string_pretty(registry).expect("the registry serializes");
        safe_write::replace(&path, text.as_bytes()).map_err(io(&path))
    }

    /// Every VM: the bundles in the library folder, then the registered ones, by name.
    pub fn list(&self) -> Result<Vec<Entry>, LibraryError> {
        let mut paths: Vec<PathBuf> = Vec::new();
        for item in fs::read_dir(&self.dir).map_err(io(&self.dir))? {
            let path = item.map_err(io(&self.dir))?.path();
            if path.extension().is_some_and(|e| e == EXTENSION) && path.is_dir() {
                paths.push(path);
            }
        }
        for path in self.registry()?.bundles {
            if !paths.contains(&path) {
                paths.push(path);
            }
        }
        let mut entries: Vec<Entry> = paths
            .into_iter()
            .map(|path| match Bundle::open(&path) {
                Ok(bundle) => Entry::Ok(Box::new(bundle)),
                Err(BundleError::NotABundle(_)) if !path.exists() => Entry::Inaccessible {
                    reason: format!("{} is missing (moved or deleted?)", path.display()),
                    path,
                },
                Err(e) => Entry::Inaccessible { reason: e.to_string(), path },
            })
            .collect();
        entries.sort_by_key(|e| e.name().to_lowercase());
        Ok(entries)
    }

    /// The VM named `name` (names are unique within a library).
    pub fn find(&self, name: &str) -> Result<Bundle, LibraryError> {
        self.list()?
            .into_iter()
            .find_map(|e| match e {
                Entry::Ok(b) if b.config.name == name => Some(*b),
                _ => None,
            })
            .ok_or_else(|| LibraryError::NoSuchVm(name.to_string()))
    }

    fn check_name_free(&self, name: &str) -> Result<(), LibraryError> {
        bundle::validate_name(name)?;
        if self.list()?.iter().any(|e| e.name().eq_ignore_ascii_case(name)) {
            return Err(LibraryError::NameTaken(name.to_string()));
        }
        Ok(())
    }

    /// A new VM in the library folder.
    pub fn create(&self, config: VmConfig) -> Result<Bundle, LibraryError> {
        self.check_name_free(&config.name)?;
        Ok(Bundle::create(&self.dir, config)?)
    }

    /// Adds a bundle that lives elsewhere (an "Open VM…").
    pub fn register(&self, path: &Path) -> Result<Bundle, LibraryError> {
        let path = fs::canonicalize(path).map_err(io(path))?;
        let bundle = Bundle::open(&path)?;
        // A VM from elsewhere whose disks read host files (or files of no VM here) is
        // refused before the library knows it.
        check_confined(&bundle, &self.backing_policy(&bundle)?)?;
        if path.parent() == Some(self.dir.as_path()) {
            return Ok(bundle); // already found by scanning
        }
        self.check_name_free(&bundle.config.name)?;
        let mut registry = self.registry()?;
        registry.bundles.push(path);
        self.save_registry(&registry)?;
        Ok(bundle)
    }

    /// Where `bundle`'s qcow2 disks may read through to: its own folder, and the bases of
    /// linked clones in this library (a `<disk>.base` beside a disk of a library VM, and
    /// the frozen images of the library VM's snapshot `bundle` was made a linked clone of:
    /// they never change).
    pub fn backing_policy(&self, bundle: &Bundle) -> Result<BackingPolicy, LibraryError> {
        let mut policy = BackingPolicy::within(bundle.root())?;
        for entry in self.list()? {
            let Entry::Ok(other) = entry else { continue };
            for disk in &other.config.disks {
                if let Ok(path) = other.inside(&disk.file) {
                    policy.allow_file(&base_of(&path));
                }
            }
            for frozen in snapshots::images_for_clone(&other, &bundle.config.uuid) {
                policy.allow_file(&frozen);
            }
        }
        Ok(policy)
    }

    /// What each of `bundle`'s disks opens, checked: the image inside the bundle, in its
    /// stated format, and the images it reads through under `backing_policy`.
    pub fn disk_images(&self, bundle: &Bundle) -> Result<Vec<DiskImage>, LibraryError> {
        let policy = self.backing_policy(bundle)?;
        bundle
            .config
            .disks
            .iter()
            .map(|disk| {
                let path = bundle.inside(&disk.file)?;
                let backing = disks::backing_chain(&path, disk.format, &policy)?;
                Ok(DiskImage { path, format: disk.format, backing, read_only: disk.read_only })
            })
            .collect()
    }

    /// Forgets a registered bundle without touching its files.
    pub fn unregister(&self, path: &Path) -> Result<(), LibraryError> {
        let mut registry = self.registry()?;
        registry.bundles.retain(|p| p != path);
        self.save_registry(&registry)
    }

    /// Copies a VM under a new name, with a new uuid and MAC. A full clone copies its disks
    /// (sparse); a linked clone shares them: each disk becomes a read-only base that both
    /// VMs read through a qcow2 overlay of their own, so neither sees the other's writes.
    /// Snapshots and logs are not copied.
    pub fn clone_vm(
        &self,
        name: &str,
        new_name: &str,
        linked: bool,
    ) -> Result<Bundle, LibraryError> {
        self.clone_at(name, None, new_name, linked)
    }

    /// `clone_vm`, of the VM as it was at its snapshot `at`: its settings as they were,
    /// its disks as they read then — copied and flattened, or (`linked`) read through the
    /// snapshot's frozen images by overlays of the clone's own (the snapshot cannot be
    /// deleted while the clone is there). The VM may be running: a snapshot's images do
    /// not change.
    pub fn clone_snapshot(
        &self,
        name: &str,
        at: &str,
        new_name: &str,
        linked: bool,
    ) -> Result<Bundle, LibraryError> {
        self.clone_at(name, Some(at), new_name, linked)
    }

    fn clone_at(
        &self,
        name: &str,
        at: Option<&str>,
        new_name: &str,
        linked: bool,
    ) -> Result<Bundle, LibraryError> {
        let mut source = self.find(name)?;
        self.check_name_free(new_name)?;
        let _running = match at {
            // Held if it can be (no snapshot work meanwhile); a running VM does none.
            Some(snapshot) => {
                source.config = snapshots::config_at(&source, snapshot)?;
                source.lock_running().ok()
            }
            None => Some(source.lock_running().map_err(|_| LibraryError::Running(name.into()))?),
        };
        if linked && at.is_none() {
            // A disk that reads through its snapshots' images cannot become a base the
            // clone may read (those images are the source's own).
            let policy = self.backing_policy(&source)?;
            for disk in &source.config.disks {
                let path = source.inside(&disk.file)?;
                let chain = disks::backing_chain(&path, disk.format, &policy)?;
                if chain.first().is_some_and(|layer| {
                    layer.path != fs::canonicalize(base_of(&path)).unwrap_or_default()
                }) {
                    return Err(LibraryError::LinkedWithSnapshots(name.into()));
                }
            }
            self.make_bases(&mut source)?;
        }
        let frozen = match at {
            Some(snapshot) if linked => Some(snapshots::images_of(&source, snapshot)?),
            _ => None,
        };
        let mut config = source.config.clone();
        config.name = new_name.to_string();
        config.uuid = uuid::Uuid::new_v4();
        if let Network::Nat { mac, .. } = &mut config.network.value {
            *mac = mac_for(&config.uuid);
        }
        let parent = source.root().parent().unwrap_or(&self.dir).to_path_buf();
        let mut clone = Bundle::create(&parent, config)?;
        let filled = (|| -> Result<(), LibraryError> {
            if let (Some(snapshot), Some(_)) = (at, &frozen) {
                // From now on the clone may read the snapshot's images.
                snapshots::add_clone(&source, snapshot, &clone.config.uuid)?;
            }
            let policy = self.backing_policy(&source)?;
            let mut config_changed = false;
            for i in 0..clone.config.disks.len() {
                let disk = clone.config.disks[i].clone();
                let from = source.inside(&disk.file)?;
                let to = clone_destination(&clone, &disk.file)?;
                if let Some((image, format)) = frozen.as_ref().and_then(|f| f.get(i)) {
                    // An overlay of its own on the snapshot's frozen image, named
                    // absolutely: the clone's bundle may move without the source's.
                    let size = disks::inspect(image, *format)?.virtual_size;
                    disks::create_image(&to, DiskFormat::Qcow2, size, Some((image, *format)))?;
                    clone.config.disks[i].format = DiskFormat::Qcow2;
                    config_changed = true;
                } else if linked {
                    // The source's disk is now an overlay on its base; the clone gets one
                    // of its own on the same base, in the format the overlay states.
                    let chain = disks::backing_chain(&from, DiskFormat::Qcow2, &policy)?;
                    let base = chain.first().ok_or_else(|| {
                        io(&from)(std::io::Error::other("the linked clone's base is missing"))
                    })?;
                    // Named absolutely: the clone's bundle may move without the source's.
                    disks::create(
                        &to,
                        DiskFormat::Qcow2,
                        disk.size_bytes,
                        Some((&base.path, base.format)),
                    )?;
                } else if disks::backing_chain(&from, disk.format, &policy)?.is_empty() {
                    disks::copy_sparse(&from, &to)?;
                } else {
                    // A disk on snapshots' images (or a linked clone's base): one image
                    // holding what it reads, standing on its own.
                    disks::flatten(&from, disk.format, &policy, &to)?;
                    clone.config.disks[i].format = DiskFormat::Qcow2;
                    config_changed = true;
                }
            }
            if config_changed {
                clone.save()?;
            }
            if let Boot::Direct { kernel, initrd, .. } = &clone.config.boot.value {
                for file in std::iter::once(kernel).chain(initrd) {
                    let from = source.inside(file)?;
                    let to = clone_destination(&clone, file)?;
                    disks::copy_sparse(&from, &to)?;
                }
            }
            if parent != self.dir {
                self.register(clone.root())?;
            }
            Ok(())
        })();
        if let Err(e) = filled {
            let _ = fs::remove_dir_all(clone.root());
            return Err(e);
        }
        Ok(clone)
    }

    /// The VMs other than `bundle` whose disks read through one of `images` directly.
    fn readers_of(
        &self,
        bundle: &Bundle,
        images: &[(PathBuf, DiskFormat)],
    ) -> Result<Vec<String>, LibraryError> {
        let images: Vec<PathBuf> =
            images.iter().filter_map(|(p, _)| fs::canonicalize(p).ok()).collect();
        self.vms_reading(bundle.root(), |backing| images.iter().any(|i| i == backing))
    }

    /// The VMs whose disks read through to files inside `root`.
    fn linked_clones_of(&self, root: &Path) -> Result<Vec<String>, LibraryError> {
        let inside = fs::canonicalize(root).map_err(io(root))?;
        self.vms_reading(root, |backing| backing.starts_with(&inside))
    }

    /// The VMs other than the one in `root` with a disk whose backing file (canonical)
    /// `reads` says is one of interest.
    fn vms_reading(
        &self,
        root: &Path,
        reads: impl Fn(&Path) -> bool,
    ) -> Result<Vec<String>, LibraryError> {
        let root = fs::canonicalize(root).map_err(io(root))?;
        let mut names = Vec::new();
        for entry in self.list()? {
            let Entry::Ok(other) = entry else { continue };
            if fs::canonicalize(other.root()).is_ok_and(|r| r == root) {
                continue;
            }
            let uses = other.config.disks.iter().any(|d| {
                disks::backing_file(&other.resolve(&d.file), d.format)
                    .ok()
                    .flatten()
                    .and_then(|b| fs::canonicalize(b).ok())
                    .is_some_and(|b| reads(&b))
            });
            if uses {
                names.push(other.config.name.clone());
            }
        }
        Ok(names)
    }

    /// Turns each of `bundle`'s disks into a read-only base under a qcow2 overlay the VM
    /// writes from now on (once; a disk that already has a base keeps it).
    fn make_bases(&self, bundle: &mut Bundle) -> Result<(), LibraryError> {
        for i in 0..bundle.config.disks.len() {
            let disk = &bundle.config.disks[i];
            let path = bundle.inside(&disk.file)?;
            let base = base_of(&path);
            if base.exists() {
                continue;
            }
            fs::rename(&path, &base).map_err(io(&path))?;
            let made = (|| -> Result<(), LibraryError> {
                let mut perms = fs::metadata(&base).map_err(io(&base))?.permissions();
                perms.set_readonly(true);
                fs::set_permissions(&base, perms).map_err(io(&base))?;
                // The overlay names its base relative to itself: the bundle stays movable.
                let relative = Path::new(base.file_name().expect("a file name"));
                disks::create(
                    &path,
                    DiskFormat::Qcow2,
                    disk.size_bytes,
                    Some((relative, disk.format)),
                )?;
                Ok(())
            })();
            if let Err(e) = made {
                let _ = fs::rename(&base, &path);
                return Err(e);
            }
            bundle.config.disks[i].format = DiskFormat::Qcow2;
        }
        bundle.save()?;
        Ok(())
    }

    /// Changes the configuration of a VM that is not running: `change` edits it in place,
    /// then the result must pass validation against the host, or nothing changes (the
    /// file on disk is untouched and the error lists every problem). The name, uuid,
    /// schema version and creation time are not changed this way (renaming goes through
    /// `rename`, since the folder follows the name).
    pub fn update(
        &self,
        name: &str,
        host: &Host,
        change: impl FnOnce(&mut VmConfig) -> Result<(), LibraryError>,
    ) -> Result<Bundle, LibraryError> {
        let mut bundle = self.find(name)?;
        let _running = bundle.lock_running().map_err(|_| LibraryError::Running(name.into()))?;
        let mut config = bundle.config.clone();
        change(&mut config)?;
        let fixed = [
            ("name", config.name != bundle.config.name),
            ("uuid", config.uuid != bundle.config.uuid),
            ("schema_version", config.schema_version != bundle.config.schema_version),
            ("created", config.created != bundle.config.created),
        ];
        let problems: Vec<Problem> = fixed
            .iter()
            .filter(|(_, changed)| *changed)
            .map(|(field, _)| Problem {
                field: field.to_string(),
                message: "is not edited this way (use rename for the name)".into(),
            })
            .chain(validate(&config, bundle.root(), host))
            .collect();
        if !problems.is_empty() {
            return Err(LibraryError::Invalid(problems));
        }
        bundle.config = config;
        bundle.save()?;
        Ok(bundle)
    }

    /// Changes settings of a VM that is not running from `key=value` text (`vessel set`):
    /// each sets a field of its configuration (dotted for sections: `display.width=1280`),
    /// the result must parse, then `update` checks and saves it.
    pub fn edit(
        &self,
        name: &str,
        changes: &[(String, String)],
        host: &Host,
    ) -> Result<Bundle, LibraryError> {
        self.update(name, host, |config| {
            let mut table = toml::Table::try_from(&*config).expect("a VmConfig is a table");
            for (key, value) in changes {
                if matches!(
                    key.as_str(),
                    "name" | "uuid" | "schema_version" | "created" | "modified"
                ) {
                    return Err(LibraryError::Invalid(vec![Problem {
                        field: key.clone(),
                        message: "is not edited this way (use rename for the name)".into(),
                    }]));
                }
                // A value is TOML when it parses as one (2048, true, "text"), else plain text.
                let parsed = format!("v = {value}")
                    .parse::<toml::Table>()
                    .ok()
                    .and_then(|mut t| t.remove("v"))
                    .unwrap_or_else(|| toml::Value::String(value.clone()));
                let mut at = &mut table;
                let mut parts: Vec<&str> = key.split('.').collect();
                let last = parts.pop().unwrap_or_default();
                for part in parts {
                    at = at
                        .entry(part.to_string())
                        .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                        .as_table_mut()
                        .ok_or_else(|| {
                            LibraryError::Invalid(vec![Problem {
                                field: key.clone(),
                                message: format!("{part} is not a section"),
                            }])
                        })?;
                }
                at.insert(last.to_string(), parsed);
            }
            *config = VmConfig::from_toml(&toml::to_string(&table).expect("a table serializes"))
                .map_err(|e| {
                    LibraryError::Invalid(vec![Problem {
                        field: "settings".into(),
                        message: e.to_string(),
                    }])
                })?;
            Ok(())
        })
    }

    /// Grows disk `index` of a VM that is off to `new_size` bytes, file and configuration.
    pub fn grow_disk(
        &self,
        name: &str,
        index: usize,
        new_size: u64,
    ) -> Result<Bundle, LibraryError> {
        let mut bundle = self.find(name)?;
        let _running = bundle.lock_running().map_err(|_| LibraryError::Running(name.into()))?;
        let Some(disk) = bundle.config.disks.get(index) else {
            return Err(LibraryError::Invalid(vec![Problem {
                field: format!("disks[{index}]"),
                message: format!("{name} has {} disks (counted from 0)", bundle.config.disks.len()),
            }]));
        };
        disks::grow(&bundle.inside(&disk.file)?, disk.format, new_size)?;
        bundle.config.disks[index].size_bytes = new_size;
        bundle.save()?;
        Ok(bundle)
    }

    /// Copies an existing raw or qcow2 image into a VM's `disks/` and attaches it. Its
    /// format is the one stated, or else the one its name says (see
    /// `disks::format_of_import`).
    pub fn add_disk(
        &self,
        name: &str,
        image: &Path,
        format: Option<DiskFormat>,
        read_only: bool,
    ) -> Result<Bundle, LibraryError> {
        let mut bundle = self.find(name)?;
        let _running = bundle.lock_running().map_err(|_| LibraryError::Running(name.into()))?;
        let format = disks::format_of_import(image, format)?;
        let disks_dir = bundle.inside(Path::new("disks"))?;
        let (copy, info) = disks::import(image, format, &disks_dir)?;
        let file = Path::new("disks").join(copy.file_name().unwrap_or_default());
        bundle.config.disks.push(crate::config::Disk {
            file,
            format: info.format,
            size_bytes: info.virtual_size,
            read_only,
            extra: Default::default(),
        });
        if let Err(e) = bundle.save() {
            let _ = fs::remove_file(&copy);
            return Err(e.into());
        }
        Ok(bundle)
    }

    /// Renames a VM: its configuration, and its folder when that carries the old name.
    pub fn rename(&self, name: &str, new_name: &str) -> Result<Bundle, LibraryError> {
        let mut bundle = self.find(name)?;
        if !name.eq_ignore_ascii_case(new_name) {
            self.check_name_free(new_name)?;
        } else {
            bundle::validate_name(new_name)?;
        }
        let _running = bundle.lock_running().map_err(|_| LibraryError::Running(name.into()))?;
        bundle.config.name = new_name.to_string();
        bundle.save()?;
        let old_root = bundle.root().to_path_buf();
        if old_root.file_name().is_some_and(|f| *f == *format!("{name}.{EXTENSION}")) {
            let new_root = old_root.with_file_name(format!("{new_name}.{EXTENSION}"));
            fs::rename(&old_root, &new_root).map_err(io(&old_root))?;
            let mut registry = self.registry()?;
            if let Some(p) = registry.bundles.iter_mut().find(|p| **p == old_root) {
                *p = new_root.clone();
                self.save_registry(&registry)?;
            }
            return Ok(Bundle::open(&new_root)?);
        }
        Ok(bundle)
    }

    /// Deletes a VM with all its files. `confirmed` must be the VM's name, so that a
    /// deletion is always an explicit decision.
    pub fn delete(&self, name: &str, confirmed: &str) -> Result<(), LibraryError> {
        let bundle = self.find(name)?;
        if confirmed != name {
            return Err(LibraryError::NotConfirmed(name.into()));
        }
        // Held while the files go, so nobody starts the VM meanwhile.
        let _lock = bundle.lock_running().map_err(|_| LibraryError::Running(name.into()))?;
        let root = bundle.root().to_path_buf();
        if let Some(clone) = self.linked_clones_of(&root)?.first() {
            return Err(LibraryError::HasLinkedClones { name: name.into(), clone: clone.clone() });
        }
        fs::remove_dir_all(&root).map_err(io(&root))?;
        self.unregister(&root)
    }
}

/// A VM's snapshots (`snapshots`), through the library: the VM held off while its
/// disks change, under the policy its disks open with.
impl Library {
    /// Runs `f` on the VM `name` while it is held off (its run lock), with the policy its
    /// disks are opened under.
    fn with_vm_off<T>(
        &self,
        name: &str,
        f: impl FnOnce(&mut Bundle, &BackingPolicy) -> Result<T, snapshots::SnapshotError>,
    ) -> Result<T, LibraryError> {
        let mut bundle = self.find(name)?;
        let _off = bundle.lock_running().map_err(|_| LibraryError::Running(name.to_string()))?;
        let policy = self.backing_policy(&bundle)?;
        Ok(f(&mut bundle, &policy)?)
    }

    /// The snapshots of the VM `name`.
    pub fn snapshots(&self, name: &str) -> Result<snapshots::Tree, LibraryError> {
        Ok(snapshots::list(&self.find(name)?)?)
    }

    /// Takes a snapshot of the VM `name`, which must be off or suspended (see `take`).
    pub fn take_snapshot(
        &self,
        name: &str,
        snapshot: &str,
        description: &str,
        screen: Option<&[u8]>,
    ) -> Result<snapshots::Snapshot, LibraryError> {
        self.with_vm_off(name, |b, p| snapshots::take(b, p, snapshot, description, screen))
    }

    /// Reverts the VM `name`, which must not be running, to `snapshot` (see `revert`).
    pub fn revert_snapshot(
        &self,
        name: &str,
        snapshot: &str,
    ) -> Result<snapshots::Snapshot, LibraryError> {
        self.with_vm_off(name, |b, p| snapshots::revert(b, p, snapshot))
    }

    /// Deletes `snapshot` of the VM `name`; while the VM runs, its disk space comes back
    /// at the next snapshot operation while the VM is off (see `delete`).
    pub fn delete_snapshot(
        &self,
        name: &str,
        snapshot: &str,
    ) -> Result<snapshots::Deleted, LibraryError> {
        // A linked clone made from it reads its images: they stay while it does.
        let bundle = self.find(name)?;
        let images = snapshots::images_of(&bundle, snapshot)?;
        if let Some(clone) = self.readers_of(&bundle, &images)?.first() {
            return Err(LibraryError::SnapshotHasLinkedClones {
                snapshot: snapshot.into(),
                clone: clone.clone(),
            });
        }
        match self.with_vm_off(name, |b, p| snapshots::delete(b, p, snapshot, false)) {
            Err(LibraryError::Running(_)) => {
                let mut bundle = self.find(name)?;
                let policy = self.backing_policy(&bundle)?;
                Ok(snapshots::delete(&mut bundle, &policy, snapshot, true)?)
            }
            done => done,
        }
    }

    /// Renames `snapshot` of the VM `name` (running or not).
    pub fn rename_snapshot(
        &self,
        name: &str,
        snapshot: &str,
        new_name: &str,
    ) -> Result<(), LibraryError> {
        Ok(snapshots::rename(&self.find(name)?, snapshot, new_name)?)
    }

    /// Finishes or undoes snapshot work a killed process left on the VM `name`, which is
    /// held off by the caller (before it powers on).
    pub fn recover_snapshots(&self, bundle: &mut Bundle) -> Result<(), LibraryError> {
        let policy = self.backing_policy(bundle)?;
        Ok(snapshots::recover(bundle, &policy)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::full;

    fn scratch(name: &str) -> PathBuf {
        crate::test_util::scratch("library", name)
    }

    fn named(name: &str) -> VmConfig {
        let mut c = full();
        c.name = name.into();
        c.uuid = uuid::Uuid::new_v4();
        c
    }

    #[test]
    fn lists_scanned_and_registered_bundles_and_the_inaccessible_ones() {
        let dir = scratch("list");
        let lib = Library::open(&dir.join("lib")).unwrap();
        lib.create(named("beta")).unwrap();
        lib.create(named("Alpha")).unwrap();
        // One elsewhere, registered.
        let elsewhere = dir.join("external");
        fs::create_dir_all(&elsewhere).unwrap();
        let ext = Bundle::create(&elsewhere, named("gamma")).unwrap();
        lib.register(ext.root()).unwrap();
        // A corrupt one and a registered one that went missing.
        let corrupt = lib.dir().join("broken.vessel");
        fs::create_dir_all(&corrupt).unwrap();
        fs::write(corrupt.join("vessel.toml"), "schema_version = 9\n").unwrap();
        let gone = Bundle::create(&elsewhere, named("delta")).unwrap();
        lib.register(gone.root()).unwrap();
        fs::remove_dir_all(gone.root()).unwrap();

        let entries = lib.list().unwrap();
        let names: Vec<String> = entries.iter().map(Entry::name).collect();
        assert_eq!(names, ["Alpha", "beta", "broken", "delta", "gamma"]);
        let reasons: Vec<&str> = entries
            .iter()
            .filter_map(|e| match e {
                Entry::Inaccessible { reason, .. } => Some(reason.as_str()),
                _ => None,
            })
            .collect();
        assert!(reasons[0].contains("newer Vessel"), "{reasons:?}");
        assert!(reasons[1].contains("missing"), "{reasons:?}");
        assert!(matches!(lib.create(named("ALPHA")), Err(LibraryError::NameTaken(_))));
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn rename_and_delete() {
        let dir = scratch("rename");
        let lib = Library::open(&dir).unwrap();
        lib.create(named("old")).unwrap();
        let renamed = lib.rename("old", "new").unwrap();
        assert_eq!(renamed.root(), dir.join("new.vessel"));
        assert_eq!(renamed.config.name, "new");
        assert!(matches!(lib.find("old"), Err(LibraryError::NoSuchVm(_))));
        // A running VM is neither renamed nor deleted.
        let lock = renamed.lock_running().unwrap();
        assert!(matches!(lib.delete("new", "new"), Err(LibraryError::Running(_))));
        drop(lock);
        assert!(matches!(lib.delete("new", "yes"), Err(LibraryError::NotConfirmed(_))));
        assert!(dir.join("new.vessel").exists());
        lib.delete("new", "new").unwrap();
        assert!(!dir.join("new.vessel").exists());
        assert!(lib.list().unwrap().is_empty());
        let _ = fs::remove_dir_all(dir);
    }

    fn qemu(tool: &str, args: &[&str], path: &Path) -> Vec<u8> {
        let out = std::process::Command::new(tool).args(args).arg(path).output().unwrap();
        assert!(
            out.status.success(),
            "{tool} {args:?} {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    fn raw_contents(dir: &Path, image: &Path) -> Vec<u8> {
        let raw = dir.join("contents.raw");
        let _ = fs::remove_file(&raw);
        let out = std::process::Command::new("qemu-img")
            .args(["convert", "-O", "raw"])
            .arg(image)
            .arg(&raw)
            .status()
            .unwrap();
        assert!(out.success());
        fs::read(raw).unwrap()
    }

    #[test]
    fn full_and_linked_clones() {
        let dir = scratch("clone");
        let lib = Library::open(&dir).unwrap();
        let mut config = named("source");
        config.boot = Boot::Uefi.into();
        config.disks.truncate(1);
        config.disks[0].file = "disks/disk0.raw".into();
        config.disks[0].format = DiskFormat::Raw;
        config.disks[0].size_bytes = 8 << 20;
        let source = lib.create(config).unwrap();
        let disk = source.resolve(Path::new("disks/disk0.raw"));
        disks::create(&disk, DiskFormat::Raw, 8 << 20, None).unwrap();
        std::os::unix::fs::FileExt::write_all_at(
            &fs::File::options().write(true).open(&disk).unwrap(),
            b"source data",
            4096,
        )
        .unwrap();

        let full = lib.clone_vm("source", "full copy", false).unwrap();
        assert_ne!(full.config.uuid, source.config.uuid);
        assert_ne!(full.config.network, source.config.network, "a new MAC");
        assert_eq!(
            fs::read(full.resolve(Path::new("disks/disk0.raw"))).unwrap(),
            fs::read(&disk).unwrap()
        );

        let linked = lib.clone_vm("source", "linked", true).unwrap();
        let source = lib.find("source").unwrap();
        assert_eq!(
            source.config.disks[0].format,
            DiskFormat::Qcow2,
            "the source now writes an overlay"
        );
        assert_eq!(linked.config.disks[0].format, DiskFormat::Qcow2);
        let (src_disk, clone_disk) = (
            source.resolve(&source.config.disks[0].file),
            linked.resolve(&linked.config.disks[0].file),
        );
        for image in [&src_disk, &clone_disk] {
            qemu("qemu-img", &["check", "-q"], image);
            assert_eq!(&raw_contents(&dir, image)[4096..4107], b"source data");
        }
        assert!(fs::metadata(base_of(&src_disk)).unwrap().permissions().readonly());
        // A write in the clone stays in the clone.
        qemu("qemu-io", &["-c", "write -P 0x5a 4096 4096"], &clone_disk);
        assert_eq!(raw_contents(&dir, &clone_disk)[4096], 0x5a);
        assert_eq!(&raw_contents(&dir, &src_disk)[4096..4107], b"source data");
        // A second linked clone reuses the base.
        lib.clone_vm("source", "linked 2", true).unwrap();
        assert!(matches!(lib.clone_vm("source", "linked", true), Err(LibraryError::NameTaken(_))));
        // The source cannot go while clones read its disks.
        match lib.delete("source", "source") {
            Err(LibraryError::HasLinkedClones { clone, .. }) => {
                assert!(clone.starts_with("linked"))
            }
            other => panic!("expected HasLinkedClones, got {other:?}"),
        }
        lib.delete("linked", "linked").unwrap();
        lib.delete("linked 2", "linked 2").unwrap();
        lib.delete("source", "source").unwrap();
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn settings_edits_are_validated_and_saved() {
        let dir = scratch("edit");
        let lib = Library::open(&dir).unwrap();
        let mut config = named("vm");
        config.boot = Boot::Uefi.into();
        config.disks.clear();
        config.cdrom = Default::default();
        lib.create(config).unwrap();
        let host = Host { cores: 4, memory_mib: 8192 };
        let set = |pairs: &[(&str, &str)]| {
            let changes: Vec<(String, String)> =
                pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            lib.edit("vm", &changes, &host)
        };
        let edited =
            set(&[("vcpus", "4"), ("memory_mib", "4096"), ("notes", "hello world")]).unwrap();
        assert_eq!((edited.config.vcpus, edited.config.memory_mib), (4, 4096));
        assert_eq!(lib.find("vm").unwrap().config.notes, "hello world");
        let err = set(&[("vcpus", "9")]).unwrap_err();
        assert!(err.to_string().starts_with("vcpus: 9 vCPUs"), "{err}");
        assert!(set(&[("vcpus", "many")]).unwrap_err().to_string().contains("vcpus"));
        assert!(set(&[("name", "other")]).is_err());
        set(&[("display.size", "fixed"), ("display.width", "1280"), ("display.height", "800")])
            .unwrap();
        assert_eq!(
            lib.find("vm").unwrap().config.display.value,
            crate::config::Display::Fixed { width: 1280, height: 800 }
        );
        assert_eq!(lib.find("vm").unwrap().config.vcpus, 4, "failed edits changed nothing");
        // The typed way in (the window's Settings): checked the same, saved the same.
        let updated = lib
            .update("vm", &host, |c| {
                c.vcpus = 2;
                c.notes = "typed".into();
                Ok(())
            })
            .unwrap();
        assert_eq!(
            (updated.config.vcpus, lib.find("vm").unwrap().config.notes.as_str()),
            (2, "typed")
        );
        let err = lib
            .update("vm", &host, |c| {
                c.memory_mib = 1 << 30;
                c.name = "renamed".into();
                Ok(())
            })
            .unwrap_err()
            .to_string();
        assert!(err.contains("name") && err.contains("memory"), "every problem named: {err}");
        assert_eq!(lib.find("vm").unwrap().config.memory_mib, 4096, "nothing saved");
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn disks_grow_and_existing_images_attach() {
        let dir = scratch("disks");
        let lib = Library::open(&dir.join("lib")).unwrap();
        let mut config = named("vm");
        config.boot = Boot::Uefi.into();
        config.cdrom = Default::default();
        config.disks.truncate(1);
        config.disks[0].file = "disks/d.qcow2".into();
        config.disks[0].size_bytes = 8 << 20;
        let vm = lib.create(config).unwrap();
        disks::create(&vm.resolve(Path::new("disks/d.qcow2")), DiskFormat::Qcow2, 8 << 20, None)
            .unwrap();
        let grown = lib.grow_disk("vm", 0, 32 << 20).unwrap();
        assert_eq!(grown.config.disks[0].size_bytes, 32 << 20);
        assert_eq!(
            disks::inspect(&grown.resolve(Path::new("disks/d.qcow2")), DiskFormat::Qcow2)
                .unwrap()
                .virtual_size,
            32 << 20
        );
        assert!(matches!(lib.grow_disk("vm", 3, 64 << 20), Err(LibraryError::Invalid(_))));
        assert!(
            matches!(lib.grow_disk("vm", 0, 16 << 20), Err(LibraryError::Disk(_))),
            "no shrinking"
        );
        let outside = dir.join("data.raw");
        disks::create(&outside, DiskFormat::Raw, 4 << 20, None).unwrap();
        let added = lib.add_disk("vm", &outside, None, true).unwrap();
        let disk = &added.config.disks[1];
        assert_eq!(
            (disk.file.as_path(), disk.format, disk.size_bytes, disk.read_only),
            (Path::new("disks/data.raw"), DiskFormat::Raw, 4 << 20, true)
        );
        assert!(
            added.resolve(&disk.file).exists() && outside.exists(),
            "a copy; the original stays"
        );
        assert!(lib.add_disk("vm", &outside, None, false).is_err(), "the same name twice");
        let _ = fs::remove_dir_all(dir);
    }

    /// A VM with one raw disk (disks/d.raw, 8 MiB) in `lib`'s folder or `parent`.
    fn vm_with_raw_disk(lib: &Library, name: &str, parent: Option<&Path>) -> Bundle {
        let mut config = named(name);
        config.boot = Boot::Uefi.into();
        config.cdrom = Default::default();
        config.disks.truncate(1);
        config.disks[0].file = "disks/d.raw".into();
        config.disks[0].format = DiskFormat::Raw;
        config.disks[0].size_bytes = 8 << 20;
        let vm = match parent {
            Some(dir) => Bundle::create(dir, config).unwrap(),
            None => lib.create(config).unwrap(),
        };
        disks::create(&vm.resolve(Path::new("disks/d.raw")), DiskFormat::Raw, 8 << 20, None)
            .unwrap();
        vm
    }

    #[test]
    fn a_vm_that_reaches_outside_its_folder_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = scratch("confined");
        let lib = Library::open(&dir.join("lib")).unwrap();
        let secret = dir.join("secret");
        fs::write(&secret, b"host file").unwrap();
        let elsewhere = dir.join("elsewhere");
        fs::create_dir_all(&elsewhere).unwrap();

        // Open VM: a disk named outside the folder ("../..", an absolute path, a symlink).
        let mut vm = vm_with_raw_disk(&lib, "outside", Some(&elsewhere));
        for bad in ["../../secret", secret.to_str().unwrap()] {
            vm.config.disks[0].file = bad.into();
            vm.save().unwrap();
            let err = lib.register(vm.root()).unwrap_err();
            assert!(err.to_string().contains("not inside the VM's folder"), "{bad}: {err}");
        }
        std::os::unix::fs::symlink(&secret, vm.root().join("disks/link.raw")).unwrap();
        vm.config.disks[0].file = "disks/link.raw".into();
        vm.save().unwrap();
        assert!(lib.register(vm.root()).is_err(), "a symlink out");
        // A qcow2 disk of the VM whose backing file is the host file.
        let overlay = vm.root().join("disks/o.qcow2");
        disks::create(&overlay, DiskFormat::Qcow2, 8 << 20, Some((&secret, DiskFormat::Raw)))
            .unwrap();
        vm.config.disks[0].file = "disks/o.qcow2".into();
        vm.config.disks[0].format = DiskFormat::Qcow2;
        vm.save().unwrap();
        let err = lib.register(vm.root()).unwrap_err();
        assert!(err.to_string().contains("outside this VM"), "{err}");
        assert!(lib.list().unwrap().is_empty(), "the library does not know it");
        // Powering on checks the same: every disk image is resolved under the policy.
        assert!(matches!(lib.disk_images(&vm), Err(LibraryError::Disk(DiskError::Refused { .. }))));
        assert_eq!(fs::read(&secret).unwrap(), b"host file");

        // Clone: a kernel named "../x" would have been copied onto itself (truncated).
        let mut source = vm_with_raw_disk(&lib, "source", None);
        let kernel = lib.dir().join("kernel-outside");
        fs::write(&kernel, b"a kernel").unwrap();
        source.config.boot =
            Boot::Direct { kernel: "../kernel-outside".into(), initrd: None, cmdline: "".into() }
                .into();
        source.save().unwrap();
        let err = lib.clone_vm("source", "copy", false).unwrap_err();
        assert!(err.to_string().contains("not inside the VM's folder"), "{err}");
        assert_eq!(fs::read(&kernel).unwrap(), b"a kernel", "nothing truncated");
        assert!(matches!(lib.find("copy"), Err(LibraryError::NoSuchVm(_))), "no half clone");

        // What Vessel creates is private whatever the umask.
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(source.root()), 0o700);
        assert_eq!(mode(&source.root().join("disks")), 0o700);
        assert_eq!(mode(&source.root().join("vessel.toml")), 0o600);
        assert_eq!(mode(&source.root().join("disks/d.raw")), 0o600);
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn a_planted_lock_symlink_does_not_redirect_the_write() {
        let dir = scratch("lock-link");
        let lib = Library::open(&dir).unwrap();
        let vm = vm_with_raw_disk(&lib, "vm", None);
        let victim = dir.join("victim");
        fs::write(&victim, b"keep").unwrap();
        std::os::unix::fs::symlink(&victim, vm.root().join(crate::bundle::LOCK_FILE)).unwrap();
        assert!(vm.lock_running().is_err());
        assert_eq!(fs::read(&victim).unwrap(), b"keep");
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn a_damaged_registry_is_reported() {
        let dir = scratch("registry");
        let lib = Library::open(&dir).unwrap();
        fs::write(dir.join(REGISTRY_FILE), "bundles = 3").unwrap();
        let err = lib.list().unwrap_err();
        assert!(err.to_string().contains("library.toml"), "{err}");
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn default_dir_follows_xdg() {
        // Read-only check of the rule on this machine's environment.
        let d = default_dir();
        match std::env::var_os("XDG_DATA_HOME") {
            Some(x) if !x.is_empty() => assert_eq!(d, PathBuf::from(x).join("vessel")),
            _ => assert!(d.ends_with(".local/share/vessel"), "{}", d.display()),
        }
    }
}
