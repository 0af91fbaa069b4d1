//! The library: which VMs exist. Bundles live in the library folder
//! (`$XDG_DATA_HOME/vessel`, by default `~/.local/share/vessel`) or anywhere else, in which
//! case the library's registry (`library.toml`) remembers where. A bundle that is missing
//! or unreadable is listed as inaccessible with the reason, never dropped silently.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::bundle::{self, Bundle, BundleError, EXTENSION};
use crate::config::VmConfig;
use crate::safe_write;

pub const REGISTRY_FILE: &str = "library.toml";

#[derive(Debug, thiserror::Error)]
pub enum LibraryError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the library registry {path} is damaged ({why}); fix or remove it")]
    Registry { path: PathBuf, why: String },
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error("a VM named {0:?} is already in the library; choose another name")]
    NameTaken(String),
    #[error("no VM named {0:?} in the library (`vessel list` shows them)")]
    NoSuchVm(String),
    #[error("{0} is running; stop it first")]
    Running(String),
    #[error("deleting {0:?} removes all its files; confirm with the VM's name")]
    NotConfirmed(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LibraryError + '_ {
    move |source| LibraryError::Io { path: path.to_path_buf(), source }
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
        match fs::read_to_string(&path) {
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
        if path.parent() == Some(self.dir.as_path()) {
            return Ok(bundle); // already found by scanning
        }
        self.check_name_free(&bundle.config.name)?;
        let mut registry = self.registry()?;
        registry.bundles.push(path);
        self.save_registry(&registry)?;
        Ok(bundle)
    }

    /// Forgets a registered bundle without touching its files.
    pub fn unregister(&self, path: &Path) -> Result<(), LibraryError> {
        let mut registry = self.registry()?;
        registry.bundles.retain(|p| p != path);
        self.save_registry(&registry)
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
        fs::remove_dir_all(&root).map_err(io(&root))?;
        self.unregister(&root)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::full;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("vessel-library-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
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
