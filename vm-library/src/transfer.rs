//! A running VM's folder sent to another library, for a live migration that copies the
//! VM's disks (`vessel migrate --copy-disks`, hosts without shared storage).
//!
//! The folder goes as an export does (`archive`: a tar with a SHA-256 manifest, checked
//! and confined on the way in), over the migration's connection in length-prefixed
//! chunks, but without what the running VM writes: its writable disks go as fresh images
//! of the same format, size and backing file (the side file lists them), which the
//! machine's migration fills while the guest runs (`vmm::migration::disks`); its logs stay.
//! Snapshots' frozen images are read-only while the VM runs, and go whole.
//!
//! On the receiving side the folder lands in the library marked as arriving
//! (`bundle::ARRIVING_FILE`): not the library's VM (not listed as one, not started) until
//! the VM process that receives it says it runs, or removed if the migration fails.

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::archive::{self, ArchiveError, SIDE_FILE, Unpacked};
use crate::bundle::{ARRIVING_FILE, Bundle};
use crate::config::DiskFormat;
use crate::disks::{self, BackingPolicy};
use crate::library::{Library, LibraryError};

/// Largest chunk of the stream.
const MAX_CHUNK: usize = 1 << 20;
/// Largest disk a copy may create (64 TiB, sparse).
const MAX_FRESH_DISK: u64 = 1 << 46;

/// A writable disk that goes apart from the folder: made fresh on the receiving side.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FreshDisk {
    /// As the configuration names it.
    pub file: PathBuf,
    pub format: DiskFormat,
    /// The size the guest sees.
    pub size: u64,
    /// The backing file its header names (relative to its folder), and that file's format.
    pub backing: Option<(PathBuf, DiskFormat)>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Side {
    disks: Vec<FreshDisk>,
}

fn cannot_move(bundle: &Bundle, why: String) -> ArchiveError {
    ArchiveError::CannotMove { name: bundle.config.name.clone(), why }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ArchiveError + '_ {
    move |cause| ArchiveError::Io { path: path.to_path_buf(), cause }
}

/// Checks the running VM in `bundle` can go to a library without its files; its writable
/// disks, to make fresh there.
pub fn fresh_disks(bundle: &Bundle) -> Result<Vec<FreshDisk>, ArchiveError> {
    if let Some(iso) = &bundle.config.cdrom.iso
        && bundle.inside(iso).is_err()
    {
        return Err(cannot_move(
            bundle,
            format!(
                "its CD drive holds {}, a file outside the VM, which the other host may not \
                 have; eject the CD first",
                iso.display()
            ),
        ));
    }
    let own = BackingPolicy::within(bundle.root())?;
    let mut fresh = Vec::new();
    for disk in &bundle.config.disks {
        let path = bundle.inside(&disk.file)?;
        // Every image it reads through must go with it: inside the VM's folder.
        disks::backing_chain(&path, disk.format, &own).map_err(|e| {
            cannot_move(bundle, format!("{e} (a linked clone: move a full clone of it)"))
        })?;
        if disk.read_only {
            continue;
        }
        fresh.push(FreshDisk {
            file: disk.file.clone(),
            format: disk.format,
            size: disks::inspect(&path, disk.format)?.virtual_size,
            backing: disks::backing_name(&path, disk.format)?,
        });
    }
    Ok(fresh)
}

/// Sends the folder of the running VM in `bundle` over `out`, its writable disks as
/// `fresh` (`fresh_disks`) and its logs left out.
pub fn send(bundle: &Bundle, fresh: &[FreshDisk], out: impl Write) -> Result<(), ArchiveError> {
    let root = bundle.root();
    let apart: Vec<PathBuf> = fresh.iter().map(|d| d.file.clone()).collect();
    let files: Vec<PathBuf> = archive::files_of(root)?
        .into_iter()
        .filter(|rel| !apart.contains(rel) && !rel.starts_with("logs"))
        .filter(|rel| rel != Path::new(ARRIVING_FILE))
        .collect();
    let top = PathBuf::from(root.file_name().unwrap_or_default());
    let label = Path::new("the connection");
    let mut tar = tar::Builder::new(Chunks { out, buf: Vec::with_capacity(MAX_CHUNK) });
    let manifest = archive::append_files(&mut tar, root, &top, files)?;
    let side = toml::to_string(&Side { disks: fresh.to_vec() }).expect("the list serializes");
    archive::append_bytes(&mut tar, SIDE_FILE, side.as_bytes()).map_err(io_err(label))?;
    archive::append_bytes(&mut tar, archive::MANIFEST, manifest.as_bytes())
        .map_err(io_err(label))?;
    let chunks = tar.into_inner().map_err(io_err(label))?;
    chunks.finish().map_err(io_err(label))
}

/// Takes the folder of the VM `uuid` that comes over `input` (`send`) into `library`:
/// checked as an import is, its fresh disks made, marked as arriving. Nothing is left of
/// it on failure.
pub fn receive(
    input: impl Read,
    library: &Library,
    uuid: uuid::Uuid,
) -> Result<Bundle, ArchiveError> {
    let label = Path::new("the migration's copy of the VM");
    let staging = library.dir().join(format!(".arriving-{}", std::process::id()));
    let _ = fs::remove_dir_all(&staging);
    crate::files::create_dir_private(&staging).map_err(io_err(&staging))?;
    let mut input = Unchunks { input, left: 0, done: false };
    let result = archive::unpack_and_check(&mut input, label, &staging)
        .and_then(|unpacked| {
            // What follows the archive's end (its padding), to the stream's end.
            let rest = io::copy(&mut (&mut input).take(MAX_CHUNK as u64 + 1), &mut io::sink());
            match rest {
                Ok(n) if n <= MAX_CHUNK as u64 && input.done => Ok(unpacked),
                Ok(_) => Err(damaged(label, "more follows the archive's end".into())),
                Err(e) => Err(damaged(label, e.to_string())),
            }
        })
        .and_then(|Unpacked { top, side }| {
            let unpacked = staging.join(&top);
            let side = side.ok_or_else(|| damaged(label, "it does not list its disks".into()))?;
            let side: Side = toml::from_str(&side).map_err(|e| damaged(label, e.to_string()))?;
            let bundle = make_ready(&unpacked, &side.disks, uuid)?;
            let dest = library.dir().join(&top);
            check_new(library, &bundle, &dest)?;
            fs::rename(&unpacked, &dest).map_err(io_err(&dest))?;
            Ok(Bundle::open_arriving(&dest)?)
        });
    let _ = fs::remove_dir_all(&staging);
    result
}

/// Removes the folder of a VM that was arriving and did not come: only such a folder,
/// once no process runs it (a VM process that failed to take it may take `wait` to end).
/// Whether it was removed.
pub fn discard(root: &Path, wait: std::time::Duration) -> bool {
    let deadline = std::time::Instant::now() + wait;
    loop {
        let Ok(bundle) = Bundle::open_arriving(root) else { return false };
        if !bundle.is_arriving() {
            return false;
        }
        if matches!(bundle.running(), Ok(None)) {
            return fs::remove_dir_all(root).is_ok();
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn damaged(archive: &Path, why: String) -> ArchiveError {
    ArchiveError::Damaged { archive: archive.to_path_buf(), why }
}

/// The unpacked folder at `root` made ready to receive the VM `uuid`: its fresh disks
/// made (exactly its writable disks, as its configuration states them), everything it
/// uses checked to be its own, marked as arriving.
fn make_ready(root: &Path, fresh: &[FreshDisk], uuid: uuid::Uuid) -> Result<Bundle, ArchiveError> {
    let mut bundle = Bundle::open_arriving(root)?;
    if bundle.config.uuid != uuid {
        return Err(cannot_move(&bundle, "its folder is not the VM's that was offered".into()));
    }
    let writable: Vec<_> = bundle.config.disks.iter().filter(|d| !d.read_only).collect();
    let listed_once = fresh.len() == writable.len()
        && writable.iter().all(|d| {
            fresh.iter().filter(|f| f.file == d.file && f.format == d.format).count() == 1
        });
    if !listed_once {
        return Err(cannot_move(&bundle, "the disks sent apart are not its writable disks".into()));
    }
    for disk in fresh {
        let path = bundle.inside(&disk.file)?;
        if fs::symlink_metadata(&path).is_ok() {
            return Err(cannot_move(
                &bundle,
                format!("{} came with the folder, and apart from it", disk.file.display()),
            ));
        }
        if disk.size > MAX_FRESH_DISK {
            return Err(cannot_move(&bundle, format!("{} is too large", disk.file.display())));
        }
        if let Some(dir) = path.parent() {
            crate::files::create_dir_private(dir).map_err(io_err(dir))?;
        }
        let backing = disk.backing.as_ref().map(|(name, format)| (name.as_path(), *format));
        disks::create_image(&path, disk.format, disk.size, backing)?;
    }
    // Its disks read through nothing outside it; a CD outside it would be emptied, which
    // the running guest would notice: refused instead (the sender ejects it first).
    let notes = archive::confine(&mut bundle)?;
    if let Some(note) = notes.first() {
        return Err(cannot_move(&bundle, note.clone()));
    }
    let marker = root.join(ARRIVING_FILE);
    crate::files::create_private(&marker).map_err(io_err(&marker))?;
    Ok(bundle)
}

/// Checks the arriving VM is new to `library` and its folder can go to `dest`; a folder
/// an interrupted migration left there (arriving, nothing running it) is removed.
fn check_new(library: &Library, bundle: &Bundle, dest: &Path) -> Result<(), ArchiveError> {
    let config = &bundle.config;
    for entry in library.list()? {
        if let crate::library::Entry::Ok(other) = entry {
            if other.config.uuid == config.uuid {
                return Err(cannot_move(
                    bundle,
                    format!(
                        "it is in this library already ({}): migrate without --copy-disks",
                        other.root().display()
                    ),
                ));
            }
            if other.config.name.eq_ignore_ascii_case(&config.name) {
                return Err(LibraryError::NameTaken(config.name.clone()).into());
            }
        }
    }
    if fs::symlink_metadata(dest).is_ok() {
        match Bundle::open_arriving(dest) {
            Ok(left) if left.is_arriving() && matches!(left.running(), Ok(None)) => {
                fs::remove_dir_all(dest).map_err(io_err(dest))?;
            }
            _ => return Err(LibraryError::NameTaken(config.name.clone()).into()),
        }
    }
    Ok(())
}

/// A writer that sends what it is given as chunks: a length (u32, little-endian), that
/// many bytes; a zero length ends the stream.
struct Chunks<W: Write> {
    out: W,
    buf: Vec<u8>,
}

impl<W: Write> Chunks<W> {
    fn send(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            self.out.write_all(&(self.buf.len() as u32).to_le_bytes())?;
            self.out.write_all(&self.buf)?;
            self.buf.clear();
        }
        Ok(())
    }

    fn finish(mut self) -> io::Result<()> {
        self.send()?;
        self.out.write_all(&0u32.to_le_bytes())?;
        self.out.flush()
    }
}

impl<W: Write> Write for Chunks<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(MAX_CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == MAX_CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()?;
        self.out.flush()
    }
}

/// Reads what `Chunks` sent, to its end (and not a byte further).
struct Unchunks<R: Read> {
    input: R,
    left: usize,
    done: bool,
}

impl<R: Read> Read for Unchunks<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            if self.done {
                return Ok(0);
            }
            let mut len = [0u8; 4];
            self.input.read_exact(&mut len)?;
            self.left = u32::from_le_bytes(len) as usize;
            if self.left > MAX_CHUNK {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "a chunk too long"));
            }
            if self.left == 0 {
                self.done = true;
                return Ok(0);
            }
        }
        let n = buf.len().min(self.left);
        let n = self.input.read(&mut buf[..n])?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.left -= n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::full;

    fn scratch(name: &str) -> PathBuf {
        crate::test_util::scratch("transfer", name)
    }

    /// A VM with a qcow2 disk over a frozen image (a snapshot's), a raw disk and a log.
    fn vm(lib: &Library) -> Bundle {
        let mut config = full();
        config.cdrom.iso = None;
        config.disks.truncate(1);
        config.disks[0].file = "disks/disk0.qcow2".into();
        config.disks[0].size_bytes = 16 << 20;
        let mut raw = config.disks[0].clone();
        raw.file = "disks/data.raw".into();
        raw.format = DiskFormat::Raw;
        config.disks.push(raw);
        let bundle = lib.create(config).unwrap();
        let base = bundle.resolve(Path::new("snapshots/base.qcow2"));
        disks::create(&base, DiskFormat::Qcow2, 16 << 20, None).unwrap();
        let top = bundle.resolve(Path::new("disks/disk0.qcow2"));
        let backing = Some((Path::new("../snapshots/base.qcow2"), DiskFormat::Qcow2));
        disks::create(&top, DiskFormat::Qcow2, 16 << 20, backing).unwrap();
        let raw = bundle.resolve(Path::new("disks/data.raw"));
        disks::create(&raw, DiskFormat::Raw, 16 << 20, None).unwrap();
        fs::write(&raw, vec![1u8; 4096]).unwrap();
        fs::OpenOptions::new().write(true).open(&raw).unwrap().set_len(16 << 20).unwrap();
        fs::write(bundle.root().join("logs/run.log"), "a log line\n").unwrap();
        bundle
    }

    fn sent(bundle: &Bundle) -> Vec<u8> {
        let fresh = fresh_disks(bundle).unwrap();
        let mut stream = Vec::new();
        send(bundle, &fresh, &mut stream).unwrap();
        stream
    }

    #[test]
    fn a_folder_arrives_with_fresh_disks_and_is_the_librarys_once_it_has_arrived() {
        let dir = scratch("arrives");
        let here = Library::open(&dir.join("here")).unwrap();
        let bundle = vm(&here);
        let fresh = fresh_disks(&bundle).unwrap();
        assert_eq!(fresh.len(), 2);
        assert_eq!(
            fresh[0].backing,
            Some((PathBuf::from("../snapshots/base.qcow2"), DiskFormat::Qcow2))
        );
        let mut stream = sent(&bundle);
        // What follows the stream is not read: the migration goes on over the same link.
        stream.extend_from_slice(b"NEXT");
        let mut input = &stream[..];

        let there = Library::open(&dir.join("there")).unwrap();
        let arrived = receive(&mut input, &there, bundle.config.uuid).unwrap();
        assert_eq!(input, b"NEXT");
        assert!(arrived.is_arriving());
        assert_eq!(arrived.config, bundle.config);
        // Not the library's VM yet: listed with the reason, not found, not startable.
        assert!(there.find(&bundle.config.name).is_err());
        let listed = there.list().unwrap();
        assert!(
            matches!(&listed[..], [crate::library::Entry::Inaccessible { reason, .. }]
                if reason.contains("arriving by live migration")),
            "{listed:?}"
        );
        // The frozen image came whole; the writable disks are fresh, of the same size and
        // backing; the log stayed.
        let root = arrived.root();
        assert_eq!(
            fs::read(root.join("snapshots/base.qcow2")).unwrap(),
            fs::read(bundle.root().join("snapshots/base.qcow2")).unwrap()
        );
        let top = root.join("disks/disk0.qcow2");
        assert_eq!(disks::inspect(&top, DiskFormat::Qcow2).unwrap().virtual_size, 16 << 20);
        let chain =
            disks::backing_chain(&top, DiskFormat::Qcow2, &BackingPolicy::within(root).unwrap());
        assert_eq!(chain.unwrap().len(), 1);
        let raw = fs::read(root.join("disks/data.raw")).unwrap();
        assert_eq!(raw.len(), 16 << 20);
        assert!(raw.iter().all(|b| *b == 0), "made fresh, for the machine's copy to fill");
        assert!(!root.join("logs/run.log").exists());

        arrived.arrived().unwrap();
        assert_eq!(there.find(&bundle.config.name).unwrap().config, bundle.config);
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn what_cannot_arrive_is_refused_and_nothing_is_left() {
        let dir = scratch("refused");
        let here = Library::open(&dir.join("here")).unwrap();
        let bundle = vm(&here);
        let stream = sent(&bundle);
        let there = Library::open(&dir.join("there")).unwrap();
        let nothing_left = || {
            let names: Vec<_> = fs::read_dir(there.dir()).unwrap().flatten().collect();
            assert!(names.is_empty(), "{names:?}");
        };

        // Another VM than the one offered.
        let error = receive(&stream[..], &there, uuid::Uuid::new_v4()).unwrap_err();
        assert!(error.to_string().contains("not the VM's that was offered"), "{error}");
        nothing_left();
        // Cut short.
        let error = receive(&stream[..stream.len() / 2], &there, bundle.config.uuid).unwrap_err();
        assert!(matches!(error, ArchiveError::Damaged { .. }), "{error}");
        nothing_left();
        // A chunk longer than any.
        let mut long = stream.clone();
        long[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(receive(&long[..], &there, bundle.config.uuid).is_err());
        nothing_left();
        // Into its own library: it is there already.
        let error = receive(&stream[..], &here, bundle.config.uuid).unwrap_err();
        assert!(error.to_string().contains("in this library already"), "{error}");

        // A CD from outside the VM: refused before anything goes.
        let mut with_cd = bundle.clone();
        with_cd.config.cdrom.iso = Some("/tmp/some.iso".into());
        let error = fresh_disks(&with_cd).unwrap_err();
        assert!(error.to_string().contains("eject the CD"), "{error}");
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn a_folder_an_interrupted_migration_left_is_replaced_and_discard_removes_only_those() {
        let dir = scratch("leftover");
        let here = Library::open(&dir.join("here")).unwrap();
        let bundle = vm(&here);
        let stream = sent(&bundle);
        let there = Library::open(&dir.join("there")).unwrap();
        let first = receive(&stream[..], &there, bundle.config.uuid).unwrap();
        // The receiver died: its folder is left, arriving. The next try replaces it.
        let again = receive(&stream[..], &there, bundle.config.uuid).unwrap();
        assert_eq!(again.root(), first.root());
        // Not while a process runs it.
        let held = again.lock_running().unwrap();
        assert!(!discard(again.root(), std::time::Duration::from_millis(50)));
        drop(held);
        assert!(discard(again.root(), std::time::Duration::ZERO));
        assert!(!again.root().exists());
        // A VM that is the library's is never discarded.
        assert!(!discard(bundle.root(), std::time::Duration::ZERO));
        assert!(bundle.root().exists());
        let _ = fs::remove_dir_all(dir);
    }
}
