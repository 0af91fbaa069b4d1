//! A VM bundle: one folder per VM, `<Name>.vessel/`, that can be moved or copied whole.
//!
//! ```text
//! Debian 12.vessel/
//!   vessel.toml        the configuration (config.rs); vessel.toml.bak, the previous one
//!   vessel.lock        held (OFD lock) while the VM runs; holds the runner's pid
//!   disks/             disk images, referred to relative to the bundle
//!   snapshots/
//!   logs/
//! ```

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crate::config::{ConfigError, VmConfig, rfc3339};
use crate::files::{self, PathError};
use crate::safe_write;

pub const EXTENSION: &str = "vessel";
pub const CONFIG_FILE: &str = "vessel.toml";
pub const LOCK_FILE: &str = "vessel.lock";
/// Present while the VM's folder is arriving by live migration (`transfer`): such a VM is
/// not opened as one of the library's until the migration completes.
pub const ARRIVING_FILE: &str = "vessel.arriving";
pub const FOLDERS: [&str; 3] = ["disks", "snapshots", "logs"];
/// Longest VM name, in characters.
pub const MAX_NAME: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("{path}: {cause}")]
    Io { path: PathBuf, cause: std::io::Error },
    #[error("{path}: {cause}")]
    Config { path: PathBuf, cause: ConfigError },
    #[error("{0} is not a Vessel VM (no {CONFIG_FILE} in it)")]
    NotABundle(PathBuf),
    #[error("{0} already exists; choose another name or location")]
    Exists(PathBuf),
    #[error("invalid name {name:?}: {why}")]
    Name { name: String, why: &'static str },
    #[error("this VM is already running (pid {pid})")]
    AlreadyRunning { pid: String },
    #[error(
        "{0} is arriving by live migration; if no migration to this library is under way, \
         an interrupted one left it: delete the folder"
    )]
    Arriving(PathBuf),
    #[error(transparent)]
    Path(#[from] PathError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BundleError + '_ {
    move |source| BundleError::Io { path: path.to_path_buf(), cause: source }
}

/// Checks a VM name: it becomes a folder name, so it must be one.
pub fn validate_name(name: &str) -> Result<(), BundleError> {
    let bad = |why| Err(BundleError::Name { name: name.to_string(), why });
    if name.trim().is_empty() {
        return bad("it is empty; give the VM a name");
    }
    if name.chars().count() > MAX_NAME {
        return bad("it is longer than 64 characters; shorten it");
    }
    if name.contains('/') || name.contains('\0') {
        return bad("it contains '/' or a NUL character; remove them");
    }
    if name.starts_with('.') {
        return bad("it starts with '.', which would hide the folder; remove the dot");
    }
    if name != name.trim() {
        return bad("it starts or ends with spaces; remove them");
    }
    if name.chars().any(char::is_control) {
        return bad("it contains control characters; remove them");
    }
    Ok(())
}

/// A VM's folder and its configuration.
#[derive(Clone, Debug)]
pub struct Bundle {
    root: PathBuf,
    pub config: VmConfig,
}

impl Bundle {
    /// Makes `<parent>/<name>.vessel/` with its folders and configuration. Nothing is left
    /// behind if it fails half-way.
    pub fn create(parent: &Path, mut config: VmConfig) -> Result<Bundle, BundleError> {
        validate_name(&config.name)?;
        let root = parent.join(format!("{}.{EXTENSION}", config.name));
        if root.exists() {
            return Err(BundleError::Exists(root));
        }
        fs::create_dir(&root).map_err(io(&root))?;
        let made = (|| {
            files::create_dir_private(&root).map_err(io(&root))?;
            for folder in FOLDERS {
                let path = root.join(folder);
                files::create_dir_private(&path).map_err(io(&path))?;
            }
            let now = rfc3339(std::time::SystemTime::now());
            config.created = now.clone();
            config.modified = now;
            let bundle = Bundle { root: root.clone(), config };
            bundle.write_config()?;
            Ok(bundle)
        })();
        if made.is_err() {
            let _ = fs::remove_dir_all(&root);
        }
        made
    }

    /// Opens the bundle at `root` (refused while it arrives by live migration).
    pub fn open(root: &Path) -> Result<Bundle, BundleError> {
        let bundle = Bundle::open_arriving(root)?;
        if bundle.is_arriving() {
            return Err(BundleError::Arriving(root.to_path_buf()));
        }
        Ok(bundle)
    }

    /// Whether the VM's folder is still arriving by live migration.
    pub fn is_arriving(&self) -> bool {
        fs::symlink_metadata(self.root.join(ARRIVING_FILE)).is_ok()
    }

    /// The VM has arrived (it runs here): it is the library's like any other.
    pub fn arrived(&self) -> Result<(), BundleError> {
        let path = self.root.join(ARRIVING_FILE);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(&path)(e)),
            _ => Ok(()),
        }
    }

    /// Opens the bundle at `root`, arriving or not: for the VM process that receives it.
    pub fn open_arriving(root: &Path) -> Result<Bundle, BundleError> {
        let path = root.join(CONFIG_FILE);
        // A regular file only: a FIFO planted as vessel.toml must not hang a library scan.
        let text = match files::open_regular(&path, false).and_then(safe_write::read_small) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(BundleError::NotABundle(root.to_path_buf()));
            }
            Err(e) => return Err(io(&path)(e)),
        };
        let config = VmConfig::from_toml(&text)
            .map_err(|source| BundleError::Config { path, cause: source })?;
        Ok(Bundle { root: root.to_path_buf(), config })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A path from the configuration: relative ones are inside the bundle. For the CD's
    /// ISO, which may be anywhere; the bundle's own files go through `inside`.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        self.root.join(path)
    }

    /// A file of the bundle the configuration names (a disk, kernel or initrd): checked to
    /// be inside the bundle, symlinks resolved (see `files::inside`).
    pub fn inside(&self, path: &Path) -> Result<PathBuf, BundleError> {
        Ok(files::inside(&self.root, path)?)
    }

    /// Writes the configuration back, crash-safely, with a new modification time.
    pub fn save(&mut self) -> Result<(), BundleError> {
        self.config.modified = rfc3339(std::time::SystemTime::now());
        self.write_config()
    }

    fn write_config(&self) -> Result<(), BundleError> {
        let path = self.root.join(CONFIG_FILE);
        safe_write::replace(&path, self.config.to_toml().as_bytes()).map_err(io(&path))
    }

    /// Marks the VM as running for as long as the returned lock lives. The kernel drops
    /// the lock when the holder exits, however it exits, so it never goes stale.
    pub fn lock_running(&self) -> Result<RunLock, BundleError> {
        let mut lock = self.open_run_lock()?;
        // A lock this process just let go of can linger for a moment: a child process
        // forked meanwhile (by any thread) shares the open file description until it
        // execs. So a held lock whose holder is this process is tried again, briefly.
        let mut tries = 0;
        loop {
            match lock.try_take() {
                Err(BundleError::AlreadyRunning { pid })
                    if pid == std::process::id().to_string() && tries < 50 =>
                {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
                other => return other.map(|()| lock),
            }
        }
    }

    /// The run lock's file, opened but not locked: a VM process receiving the VM by live
    /// migration takes it (`RunLock::take`) once the sending one lets it go.
    pub fn open_run_lock(&self) -> Result<RunLock, BundleError> {
        let path = self.root.join(LOCK_FILE);
        // Never through a symlink planted in its place: the pid would be written there.
        let file = files::open_nofollow(&path).map_err(io(&path))?;
        Ok(RunLock { _file: file, path })
    }
}

impl Bundle {
    /// The pid of the process running this VM, if one is: asks the kernel whether a lock
    /// is held (F_OFD_GETLK) without taking it, so looking never gets in a start's way.
    pub fn running(&self) -> Result<Option<String>, BundleError> {
        let path = self.root.join(LOCK_FILE);
        let mut file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(&path)(e)),
        };
        let mut probe = libc::flock {
            l_type: libc::F_RDLCK as libc::c_short,
            l_whence: libc::SEEK_SET as libc::c_short,
            l_start: 0,
            l_len: 0,
            l_pid: 0,
        };
        // SAFETY: F_OFD_GETLK fills the flock struct passed; the fd is open for the call.
        if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_GETLK, &mut probe) } != 0 {
            return Err(io(&path)(std::io::Error::last_os_error()));
        }
        if probe.l_type == libc::F_UNLCK as libc::c_short {
            return Ok(None);
        }
        let mut pid = String::new();
        let _ = file.read_to_string(&mut pid);
        let pid = pid.trim();
        Ok(Some(if pid.is_empty() { "unknown".into() } else { pid.into() }))
    }
}

/// Held while a VM runs (see `Bundle::lock_running`).
#[derive(Debug)]
pub struct RunLock {
    _file: File,
    path: PathBuf,
}

impl RunLock {
    /// Takes the lock now, recording this process's pid in the file; `AlreadyRunning`
    /// (with the holder's pid) if another holds it.
    fn try_take(&mut self) -> Result<(), BundleError> {
        if let Err(e) = self.set(libc::F_WRLCK) {
            let file = &mut self._file;
            if matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EACCES)) {
                let mut pid = String::new();
                let _ = file.seek(SeekFrom::Start(0));
                let _ = file.read_to_string(&mut pid);
                let pid = pid.trim();
                return Err(BundleError::AlreadyRunning {
                    pid: if pid.is_empty() { "unknown".into() } else { pid.into() },
                });
            }
            return Err(io(&self.path)(e));
        }
        let file = &mut self._file;
        let record = (|| {
            file.set_len(0)?;
            file.seek(SeekFrom::Start(0))?;
            writeln!(file, "{}", std::process::id())?;
            file.sync_data()
        })();
        record.map_err(io(&self.path))
    }

    /// Takes the lock, waiting up to `wait` for its holder to let go (a VM process that
    /// hands the VM over by live migration lets go at the switch-over).
    pub fn take(&mut self, wait: std::time::Duration) -> Result<(), BundleError> {
        let deadline = std::time::Instant::now() + wait;
        loop {
            match self.try_take() {
                Err(BundleError::AlreadyRunning { .. }) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
                other => return other,
            }
        }
    }

    /// Lets the lock go, keeping the file open (and so able to `take` it again): a VM
    /// process handing its VM to another by live migration.
    pub fn release(&self) -> Result<(), BundleError> {
        self.set(libc::F_UNLCK).map_err(io(&self.path))
    }

    /// Sets (or, `F_UNLCK`, drops) this open file description's lock of `kind` on the
    /// whole file, without waiting.
    fn set(&self, kind: libc::c_int) -> std::io::Result<()> {
        let lock = libc::flock {
            l_type: kind as libc::c_short,
            l_whence: libc::SEEK_SET as libc::c_short,
            l_start: 0,
            l_len: 0,
            l_pid: 0,
        };
        // SAFETY: F_OFD_SETLK reads the flock struct passed; the fd is open for the call.
        if unsafe { libc::fcntl(self._file.as_raw_fd(), libc::F_OFD_SETLK, &lock) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// The lock's open file: a process forked with it holds the lock too (it is the file
    /// description's), until it and this both let go.
    pub fn file(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self._file.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::full;
    use std::process::{Command, Stdio};

    fn scratch(name: &str) -> PathBuf {
        crate::test_util::scratch("bundle", name)
    }

    #[test]
    fn create_open_save() {
        let dir = scratch("create");
        let bundle = Bundle::create(&dir, full()).unwrap();
        assert_eq!(bundle.root(), dir.join("Debian 12.vessel"));
        for folder in FOLDERS {
            assert!(bundle.root().join(folder).is_dir(), "{folder}");
        }
        assert!(bundle.config.created.starts_with("20"), "{}", bundle.config.created);
        let mut again = Bundle::open(bundle.root()).unwrap();
        assert_eq!(again.config, bundle.config);
        again.config.notes = "changed".into();
        again.save().unwrap();
        assert_eq!(Bundle::open(bundle.root()).unwrap().config.notes, "changed");
        assert!(bundle.root().join("vessel.toml.bak").exists(), "the previous config is kept");
        assert_eq!(bundle.resolve(Path::new("disks/a.raw")), bundle.root().join("disks/a.raw"));
        assert!(matches!(Bundle::create(&dir, full()), Err(BundleError::Exists(_))));
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn a_moved_bundle_still_opens() {
        let dir = scratch("moved");
        let bundle = Bundle::create(&dir, full()).unwrap();
        let moved = dir.join("elsewhere.vessel");
        fs::rename(bundle.root(), &moved).unwrap();
        let opened = Bundle::open(&moved).unwrap();
        assert_eq!(
            opened.resolve(Path::new("disks/system.qcow2")),
            moved.join("disks/system.qcow2")
        );
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn bad_bundles_and_names_say_why() {
        let dir = scratch("bad");
        assert!(matches!(Bundle::open(&dir), Err(BundleError::NotABundle(_))));
        fs::write(dir.join(CONFIG_FILE), "schema_version = 1\nname = ").unwrap();
        let err = Bundle::open(&dir).unwrap_err();
        assert!(err.to_string().contains("vessel.toml"), "{err}");
        for name in ["", "  ", "a/b", ".hidden", " padded ", "tab\there", &"x".repeat(65)] {
            assert!(validate_name(name).is_err(), "{name:?}");
        }
        validate_name("Windows 11 (work) — ünïcode").unwrap();
        // A FIFO planted as the configuration: an error at once, not a hang.
        let fifo_vm = dir.join("fifo.vessel");
        fs::create_dir_all(&fifo_vm).unwrap();
        let c_path = std::ffi::CString::new(fifo_vm.join(CONFIG_FILE).to_str().unwrap()).unwrap();
        // SAFETY: mkfifo reads the NUL-terminated path; the result is checked.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        assert!(matches!(Bundle::open(&fifo_vm), Err(BundleError::Io { .. })));
        let mut config = full();
        config.name = "a/b".into();
        assert!(matches!(Bundle::create(&dir, config), Err(BundleError::Name { .. })));
        let _ = fs::remove_dir_all(dir);
    }

    /// Not a test on its own: the child of `a_second_runner_is_told_who_runs_the_vm`.
    #[test]
    #[ignore = "run by a_second_runner_is_told_who_runs_the_vm"]
    fn child_runner() {
        let Some(root) = std::env::var_os("VESSEL_BUNDLE_RUNNER") else { return };
        let bundle = Bundle::open(Path::new(&root)).unwrap();
        let _lock = bundle.lock_running().unwrap();
        println!("locked");
        std::thread::sleep(std::time::Duration::from_secs(60));
    }

    #[test]
    fn a_second_runner_is_told_who_runs_the_vm() {
        use std::io::BufRead;
        let dir = scratch("lock");
        let bundle = Bundle::create(&dir, full()).unwrap();
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "bundle::tests::child_runner", "--ignored", "--nocapture"])
            .env("VESSEL_BUNDLE_RUNNER", bundle.root())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        assert!(lines.any(|l| l.unwrap().contains("locked")), "the child took the lock");
        match bundle.lock_running() {
            Err(BundleError::AlreadyRunning { pid }) => assert_eq!(pid, child.id().to_string()),
            other => panic!("expected AlreadyRunning, got {other:?}"),
        }
        assert_eq!(bundle.running().unwrap(), Some(child.id().to_string()));
        // The runner dies without cleaning up: the lock goes with it.
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(bundle.running().unwrap(), None);
        let lock = bundle.lock_running().expect("no stale lock after a crash");
        // And within one process, a second runner is refused too.
        assert!(matches!(bundle.lock_running(), Err(BundleError::AlreadyRunning { .. })));
        drop(lock);
        bundle.lock_running().unwrap();
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn a_run_lock_is_handed_over_and_taken_back() {
        let dir = scratch("handover");
        let bundle = Bundle::create(&dir, full()).unwrap();
        let mut sender = bundle.lock_running().unwrap();
        let mut receiver = bundle.open_run_lock().unwrap();
        let short = std::time::Duration::from_millis(20);
        assert!(matches!(receiver.take(short), Err(BundleError::AlreadyRunning { .. })));
        // The sender lets go at the switch-over: the receiver takes it, and is the runner.
        sender.release().unwrap();
        assert_eq!(bundle.running().unwrap(), None);
        receiver.take(short).unwrap();
        assert_eq!(bundle.running().unwrap(), Some(std::process::id().to_string()));
        assert!(matches!(sender.take(short), Err(BundleError::AlreadyRunning { .. })));
        // A migration that failed: the receiver lets go, the sender takes it back.
        receiver.release().unwrap();
        sender.take(short).unwrap();
        assert!(matches!(bundle.lock_running(), Err(BundleError::AlreadyRunning { .. })));
        let _ = fs::remove_dir_all(dir);
    }
}
