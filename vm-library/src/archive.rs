//! Export a VM to one file and import it back (backup and restore): a tar archive holding
//! the bundle's folder and a manifest of SHA-256 checksums, which an import checks before
//! the VM appears in the library. A failed import leaves nothing behind.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::bundle::{Bundle, BundleError, LOCK_FILE};
use crate::config::Boot;
use crate::disks::{self, BackingPolicy};
use crate::library::{Library, LibraryError};

/// The manifest's name in the archive: lines of "<sha256 hex>  <path>".
pub const MANIFEST: &str = "vessel-manifest.sha256";

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("{path}: {cause}")]
    Io { path: PathBuf, cause: io::Error },
    #[error(transparent)]
    Library(#[from] LibraryError),
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error(transparent)]
    Disk(#[from] disks::DiskError),
    #[error(
        "{name} is a linked clone (its disk {disk} reads {base}); export a full clone of it \
         instead (vessel clone)"
    )]
    LinkedClone { name: String, disk: String, base: String },
    #[error("{name} cannot move without shared storage: {why}")]
    CannotMove { name: String, why: String },
    #[error("{archive} is not a Vessel export: {why}")]
    NotAnExport { archive: PathBuf, why: String },
    #[error("{archive} is damaged: {why}; nothing was imported")]
    Damaged { archive: PathBuf, why: String },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ArchiveError + '_ {
    move |source| ArchiveError::Io { path: path.to_path_buf(), cause: source }
}

/// A reader that hashes what passes through it.
struct Hashing<R> {
    inner: R,
    hash: Sha256,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}

/// Bytes as lowercase hex (a checksum as manifests write it).
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bundle's files, relative to its root, in a stable order (the run lock left out).
pub(crate) fn files_of(root: &Path) -> Result<Vec<PathBuf>, ArchiveError> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = root.join(&rel);
        for item in fs::read_dir(&dir).map_err(io_err(&dir))? {
            let item = item.map_err(io_err(&dir))?;
            let kind = item.file_type().map_err(io_err(&dir))?;
            let path = rel.join(item.file_name());
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file() && path != Path::new(LOCK_FILE) {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Writes `bundle` to `archive` (replaced crash-safely). The VM must not be running.
pub fn export(bundle: &Bundle, archive: &Path) -> Result<(), ArchiveError> {
    let _not_running = bundle.lock_running()?;
    let own = BackingPolicy::within(bundle.root())?;
    for disk in &bundle.config.disks {
        let path = bundle.inside(&disk.file)?;
        if let Some(base) = disks::backing_file(&path, disk.format)?
            && !fs::canonicalize(&base).is_ok_and(|b| own.allows(&b))
        {
            return Err(ArchiveError::LinkedClone {
                name: bundle.config.name.clone(),
                disk: disk.file.display().to_string(),
                base: base.display().to_string(),
            });
        }
        disks::backing_chain(&path, disk.format, &own)?;
    }
    let top = PathBuf::from(bundle.root().file_name().unwrap_or_default());
    let temp = archive.with_extension("partial");
    let written = (|| -> Result<(), ArchiveError> {
        // Private (it holds the VM's disks), made anew, never through a symlink.
        let _ = fs::remove_file(&temp);
        let out = crate::files::create_private(&temp).map_err(io_err(&temp))?;
        let mut tar = tar::Builder::new(io::BufWriter::new(out));
        let manifest = append_files(&mut tar, bundle.root(), &top, files_of(bundle.root())?)?;
        append_bytes(&mut tar, MANIFEST, manifest.as_bytes()).map_err(io_err(&temp))?;
        let out = tar.into_inner().map_err(io_err(&temp))?;
        out.into_inner()
            .map_err(|e| io_err(&temp)(e.into_error()))?
            .sync_all()
            .map_err(io_err(&temp))
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&temp);
        return Err(e);
    }
    fs::rename(&temp, archive).map_err(io_err(archive))
}

/// Appends the files `rels` of the folder `root` to `tar` under `top`; the manifest's
/// lines for them. A file that changes size while it is read is refused.
pub(crate) fn append_files<W: io::Write>(
    tar: &mut tar::Builder<W>,
    root: &Path,
    top: &Path,
    rels: Vec<PathBuf>,
) -> Result<String, ArchiveError> {
    let mut manifest = String::new();
    for rel in rels {
        let path = root.join(&rel);
        let file = File::open(&path).map_err(io_err(&path))?;
        let meta = file.metadata().map_err(io_err(&path))?;
        let mut header = tar::Header::new_gnu();
        header.set_metadata(&meta);
        let mut reader = Hashing { inner: file.take(meta.len()), hash: Sha256::new() };
        tar.append_data(&mut header, top.join(&rel), &mut reader).map_err(io_err(&path))?;
        if reader.inner.limit() != 0 {
            let shrank = io::Error::other("it shrank while it was copied");
            return Err(io_err(&path)(shrank));
        }
        manifest.push_str(&format!("{}  {}\n", hex(&reader.hash.finalize()), rel.display()));
    }
    Ok(manifest)
}

/// Appends a file of `bytes` named `name` to `tar`.
pub(crate) fn append_bytes<W: io::Write>(
    tar: &mut tar::Builder<W>,
    name: &str,
    bytes: &[u8],
) -> io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_size(bytes.len() as u64);
    header.set_mode(0o644);
    tar.append_data(&mut header, name, bytes)
}

/// The one safe relative path an archive entry may have: plain names, no "..", not absolute.
fn safe_relative(path: &Path) -> bool {
    path.components().all(|c| matches!(c, Component::Normal(_))) && path.components().count() > 0
}

/// A VM restored from an archive, with what was changed on the way in.
#[derive(Debug)]
pub struct Imported {
    pub bundle: Bundle,
    /// What the import changed, for the user ("the CD drive was emptied: …").
    pub notes: Vec<String>,
}

/// Restores the VM in `archive` into `library`; checks every file against the manifest,
/// and that the VM uses only its own files, before the VM appears.
pub fn import(archive: &Path, library: &Library) -> Result<Imported, ArchiveError> {
    let staging = library.dir().join(format!(".import-{}", std::process::id()));
    let _ = fs::remove_dir_all(&staging);
    crate::files::create_dir_private(&staging).map_err(io_err(&staging))?;
    let unpacked = crate::files::open_regular(archive, false)
        .map_err(io_err(archive))
        .and_then(|file| unpack_and_check(io::BufReader::new(file), archive, &staging));
    let result = unpacked.and_then(|Unpacked { top, .. }| {
        let unpacked = staging.join(&top);
        let mut bundle = Bundle::open(&unpacked)?;
        let notes = confine(&mut bundle)?;
        let dest = library.dir().join(&top);
        if dest.exists() || library.find(&bundle.config.name).is_ok() {
            return Err(LibraryError::NameTaken(bundle.config.name.clone()).into());
        }
        fs::rename(&unpacked, &dest).map_err(io_err(&dest))?;
        Ok(Imported { bundle: Bundle::open(&dest)?, notes })
    });
    let _ = fs::remove_dir_all(&staging);
    result
}

/// Checks that an unpacked VM uses only its own files: its disks, kernel and initrd inside
/// its folder (else refused), its qcow2 disks reading through nothing outside it (else
/// refused); a CD that names a file outside is emptied. Returns what was changed.
pub(crate) fn confine(bundle: &mut Bundle) -> Result<Vec<String>, ArchiveError> {
    crate::library::check_confined(bundle, &BackingPolicy::within(bundle.root())?)?;
    let mut notes = Vec::new();
    if let Some(iso) = &bundle.config.cdrom.iso
        && bundle.inside(iso).is_err()
    {
        notes.push(format!(
            "the CD drive was emptied: the ISO path pointed outside the VM ({})",
            iso.display()
        ));
        bundle.config.cdrom.iso = None;
        if bundle.config.boot.value == Boot::Cdrom {
            notes.push("it booted from that CD: attach an ISO before powering it on".into());
        }
        bundle.save()?;
    }
    Ok(notes)
}

/// An archive unpacked: the bundle folder's name, and the side file (`SIDE_FILE`) if it
/// had one.
pub(crate) struct Unpacked {
    pub top: PathBuf,
    pub side: Option<String>,
}

/// A file beside the bundle's folder in an archive that is no export: what a live
/// migration's copy says of the disks it sends apart (`transfer`).
pub(crate) const SIDE_FILE: &str = "vessel-side.json";

/// Unpacks the archive `input` (named `archive`, for messages) into `staging`, hashing as
/// it goes.
pub(crate) fn unpack_and_check(
    input: impl Read,
    archive: &Path,
    staging: &Path,
) -> Result<Unpacked, ArchiveError> {
    let not_export = |why: &str| ArchiveError::NotAnExport {
        archive: archive.to_path_buf(),
        why: why.to_string(),
    };
    let damaged = |why: String| ArchiveError::Damaged { archive: archive.to_path_buf(), why };
    let mut tar = tar::Archive::new(input);
    let mut top: Option<PathBuf> = None;
    let mut hashes: BTreeMap<PathBuf, String> = BTreeMap::new();
    let mut manifest: Option<String> = None;
    let mut side: Option<String> = None;
    let entries = tar.entries().map_err(|e| not_export(&e.to_string()))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| damaged(e.to_string()))?;
        let path = entry.path().map_err(|e| damaged(e.to_string()))?.into_owned();
        if !safe_relative(&path) {
            return Err(damaged(format!("the entry {} points outside the VM", path.display())));
        }
        if path == Path::new(MANIFEST) {
            let text =
                crate::safe_write::read_small(&mut entry).map_err(|e| damaged(e.to_string()))?;
            manifest = Some(text);
            continue;
        }
        if path == Path::new(SIDE_FILE) {
            let text =
                crate::safe_write::read_small(&mut entry).map_err(|e| damaged(e.to_string()))?;
            side = Some(text);
            continue;
        }
        if entry.header().entry_type() != tar::EntryType::Regular {
            return Err(damaged(format!("{} is not a regular file", path.display())));
        }
        let mut components = path.components();
        let first = PathBuf::from(components.next().expect("a safe path has one").as_os_str());
        let rel = components.as_path().to_path_buf();
        match &top {
            None if first.extension().is_some_and(|e| e == crate::bundle::EXTENSION) => {
                top = Some(first.clone())
            }
            None => return Err(not_export("its files are not in a .vessel folder")),
            Some(t) if *t != first => return Err(not_export("it holds more than one VM")),
            Some(_) => {}
        }
        let dest = staging.join(&path);
        if let Some(dir) = dest.parent() {
            crate::files::create_dir_private(dir).map_err(io_err(dir))?;
        }
        // Private, and refused if the archive names the same file twice.
        let mut out = crate::files::create_private(&dest).map_err(io_err(&dest))?;
        let mut reader = Hashing { inner: &mut entry, hash: Sha256::new() };
        io::copy(&mut reader, &mut out).map_err(|e| damaged(e.to_string()))?;
        hashes.insert(rel, hex(&reader.hash.finalize()));
    }
    let manifest = manifest.ok_or_else(|| not_export("it has no manifest"))?;
    let top = top.ok_or_else(|| not_export("it holds no VM"))?;
    let mut listed = 0;
    for line in manifest.lines() {
        let (hash, rel) =
            line.split_once("  ").ok_or_else(|| damaged(format!("bad manifest line {line:?}")))?;
        listed += 1;
        match hashes.get(Path::new(rel)) {
            Some(h) if h == hash => {}
            Some(_) => return Err(damaged(format!("{rel} does not match its checksum"))),
            None => return Err(damaged(format!("{rel} is missing"))),
        }
    }
    if listed != hashes.len() {
        return Err(damaged("it holds files its manifest does not list".into()));
    }
    Ok(Unpacked { top, side })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::full;
    use crate::config::{Boot, DiskFormat};

    fn scratch(name: &str) -> PathBuf {
        crate::test_util::scratch("archive", name)
    }

    fn vm_with_disk(lib: &Library) -> Bundle {
        let mut config = full();
        config.boot = Boot::Uefi.into();
        config.disks.truncate(1);
        config.disks[0].file = "disks/disk0.qcow2".into();
        config.disks[0].size_bytes = 16 << 20;
        let bundle = lib.create(config).unwrap();
        let disk = bundle.resolve(Path::new("disks/disk0.qcow2"));
        disks::create(&disk, DiskFormat::Qcow2, 16 << 20, None).unwrap();
        fs::write(bundle.root().join("logs/run.log"), "a log line\n").unwrap();
        bundle
    }

    #[test]
    fn export_then_import_gives_the_same_vm() {
        let dir = scratch("roundtrip");
        let lib = Library::open(&dir.join("one")).unwrap();
        let bundle = vm_with_disk(&lib);
        let archive = dir.join("backup.vessel.tar");
        export(&bundle, &archive).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&archive).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the archive holds the disks: private");

        let fresh = Library::open(&dir.join("two")).unwrap();
        let Imported { bundle: restored, notes } = import(&archive, &fresh).unwrap();
        // Its ISO is a path on this computer, outside the VM: the drive comes back empty.
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].contains("the CD drive was emptied"), "{notes:?}");
        let mut expected = bundle.config.clone();
        expected.cdrom.iso = None;
        expected.modified = restored.config.modified.clone();
        assert_eq!(restored.config, expected);
        for rel in files_of(bundle.root()).unwrap() {
            if rel.to_string_lossy().starts_with("vessel.toml") {
                continue;
            }
            assert_eq!(
                fs::read(restored.root().join(&rel)).unwrap(),
                fs::read(bundle.root().join(&rel)).unwrap(),
                "{}",
                rel.display()
            );
        }
        // Importing it again is refused by name, and leaves no staging folder.
        assert!(matches!(
            import(&archive, &fresh),
            Err(ArchiveError::Library(LibraryError::NameTaken(_)))
        ));
        let names: Vec<_> =
            fs::read_dir(fresh.dir()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 1, "{names:?}");
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn a_damaged_archive_imports_nothing() {
        let dir = scratch("damaged");
        let lib = Library::open(&dir.join("one")).unwrap();
        let bundle = vm_with_disk(&lib);
        let archive = dir.join("backup.tar");
        export(&bundle, &archive).unwrap();
        // Flip a byte of the log file's contents inside the archive.
        let mut bytes = fs::read(&archive).unwrap();
        let at = bytes.windows(10).position(|w| w == b"a log line").unwrap();
        bytes[at] = b'A';
        let tampered = dir.join("tampered.tar");
        fs::write(&tampered, &bytes).unwrap();
        let fresh = Library::open(&dir.join("two")).unwrap();
        let err = import(&tampered, &fresh).unwrap_err();
        assert!(err.to_string().contains("logs/run.log does not match its checksum"), "{err}");
        assert_eq!(fs::read_dir(fresh.dir()).unwrap().count(), 0, "nothing left behind");
        // Not an archive at all.
        let junk = dir.join("junk.tar");
        fs::write(&junk, vec![7u8; 4096]).unwrap();
        assert!(import(&junk, &fresh).is_err());
        assert_eq!(fs::read_dir(fresh.dir()).unwrap().count(), 0);
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn entries_outside_the_vm_are_refused() {
        let dir = scratch("escape");
        let archive = dir.join("evil.tar");
        {
            let mut tar = tar::Builder::new(File::create(&archive).unwrap());
            let mut header = tar::Header::new_gnu();
            header.set_size(3);
            header.set_mode(0o644);
            // The tar crate refuses to write "..": write the name into the header directly.
            let name = b"x.vessel/../../escaped";
            header.as_old_mut().name[..name.len()].copy_from_slice(name);
            header.set_cksum();
            tar.append(&header, &b"bad"[..]).unwrap();
            tar.finish().unwrap();
        }
        let lib = Library::open(&dir.join("lib")).unwrap();
        let err = import(&archive, &lib).unwrap_err();
        assert!(err.to_string().contains("outside the VM"), "{err}");
        assert!(!dir.join("escaped").exists() && !dir.join("lib/escaped").exists());
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn a_linked_clone_is_not_exported_without_its_base() {
        let dir = scratch("linked");
        let lib = Library::open(&dir).unwrap();
        vm_with_disk(&lib);
        let clone = lib.clone_vm("Debian 12", "clone", true).unwrap();
        let err = export(&clone, &dir.join("clone.tar")).unwrap_err();
        assert!(matches!(err, ArchiveError::LinkedClone { .. }), "{err}");
        assert!(!dir.join("clone.tar").exists());
        let _ = fs::remove_dir_all(dir);
    }

    /// Packs `root` (a bundle) the way `export` does, without export's checks: what a
    /// hostile archive can hold.
    fn pack_unchecked(root: &Path, archive: &Path) {
        let top = PathBuf::from(root.file_name().unwrap());
        let mut tar = tar::Builder::new(File::create(archive).unwrap());
        let mut manifest = String::new();
        for rel in files_of(root).unwrap() {
            let bytes = fs::read(root.join(&rel)).unwrap();
            let mut header = tar::Header::new_gnu();
            header.set_size(bytes.len() as u64);
            header.set_mode(0o644);
            tar.append_data(&mut header, top.join(&rel), &bytes[..]).unwrap();
            manifest.push_str(&format!("{}  {}\n", hex(&Sha256::digest(&bytes)), rel.display()));
        }
        let mut header = tar::Header::new_gnu();
        header.set_size(manifest.len() as u64);
        header.set_mode(0o644);
        tar.append_data(&mut header, MANIFEST, manifest.as_bytes()).unwrap();
        tar.finish().unwrap();
    }

    #[test]
    fn an_archive_whose_vm_reaches_outside_imports_nothing() {
        let dir = scratch("hostile");
        let lib = Library::open(&dir.join("one")).unwrap();
        let mut bundle = vm_with_disk(&lib);
        let secret = dir.join("secret");
        fs::write(&secret, b"host file").unwrap();
        let fresh = Library::open(&dir.join("two")).unwrap();
        let attempt = |bundle: &Bundle, what: &str| {
            let archive = dir.join("evil.tar");
            pack_unchecked(bundle.root(), &archive);
            let err = import(&archive, &fresh).unwrap_err();
            assert!(err.to_string().contains(what), "{err}");
            assert_eq!(fs::read_dir(fresh.dir()).unwrap().count(), 0, "nothing left behind");
        };
        // A disk named outside the VM.
        bundle.config.disks[0].file = secret.clone();
        bundle.save().unwrap();
        attempt(&bundle, "not inside the VM's folder");
        // A kernel named outside.
        bundle.config.disks.clear();
        bundle.config.boot =
            Boot::Direct { kernel: "../../secret".into(), initrd: None, cmdline: String::new() }
                .into();
        bundle.save().unwrap();
        attempt(&bundle, "not inside the VM's folder");
        // A qcow2 disk inside whose backing file is the host file.
        bundle.config.boot = Boot::Uefi.into();
        let evil = bundle.resolve(Path::new("disks/evil.qcow2"));
        disks::create(&evil, DiskFormat::Qcow2, 16 << 20, Some((&secret, DiskFormat::Raw)))
            .unwrap();
        let mut disk = full().disks.remove(0);
        disk.file = "disks/evil.qcow2".into();
        disk.size_bytes = 16 << 20;
        bundle.config.disks = vec![disk];
        bundle.save().unwrap();
        attempt(&bundle, "outside this VM");
        assert_eq!(fs::read(&secret).unwrap(), b"host file");
        let _ = fs::remove_dir_all(dir);
    }
}
