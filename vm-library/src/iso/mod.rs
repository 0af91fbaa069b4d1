//! ISO 9660 inspection (ECMA-119, with Joliet, Rock Ridge/SUSP and El Torito), read with
//! bounded positional reads: an ISO is never loaded into memory, and a damaged or hostile
//! one gives an error, never a panic, a hang or a huge allocation.

pub mod boot_config;
pub mod os;

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

pub const SECTOR: u64 = 2048;
/// Largest directory read (bytes), and most entries taken from one.
const MAX_DIR_BYTES: u32 = 16 << 20;
const MAX_DIR_ENTRIES: usize = 65_536;
/// Most volume descriptors looked at before the terminator.
const MAX_DESCRIPTORS: u64 = 64;
/// Most boot catalog sectors read.
const MAX_CATALOG_SECTORS: u64 = 4;
/// Deepest path followed.
const MAX_DEPTH: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum IsoError {
    #[error("{path}: {cause}")]
    Io { path: PathBuf, cause: std::io::Error },
    #[error("{0} is not an ISO 9660 image (no CD001 volume descriptor); choose a .iso file")]
    NotIso(PathBuf),
    #[error("{0} is truncated or damaged: {1}")]
    Damaged(PathBuf, String),
}

/// An El Torito boot entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootEntry {
    pub platform: Platform,
    pub bootable: bool,
    /// 0 no emulation, 1-3 floppy, 4 hard disk.
    pub emulation: u8,
    pub load_rba: u32,
    pub sectors: u16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Platform {
    Bios,
    Uefi,
    Other(u8),
}

impl Platform {
    fn from_id(id: u8) -> Platform {
        match id {
            0 => Platform::Bios,
            0xef => Platform::Uefi,
            other => Platform::Other(other),
        }
    }
}

/// What the primary volume descriptor and the extensions say.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IsoInfo {
    pub volume_id: String,
    pub system_id: String,
    pub publisher_id: String,
    pub application_id: String,
    pub size_bytes: u64,
    pub joliet: bool,
    pub rock_ridge: bool,
    pub boot: Vec<BootEntry>,
}

/// A file or directory on the disc.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub is_dir: bool,
    pub extent: u32,
    pub size: u32,
}

#[derive(Clone, Copy, Debug)]
struct DirRef {
    extent: u32,
    size: u32,
}

/// An open ISO image.
pub struct Iso {
    file: File,
    path: PathBuf,
    len: u64,
    info: IsoInfo,
    /// The tree names are read from: Rock Ridge names in the primary tree, else Joliet's
    /// UCS-2 tree, else plain ISO 9660 names.
    root: DirRef,
    joliet_names: bool,
}

fn trimmed(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).trim_end_matches([' ', '\0']).to_string()
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

impl Iso {
    pub fn open(path: &Path) -> Result<Iso, IsoError> {
        let file =
            File::open(path).map_err(|source| IsoError::Io { path: path.into(), cause: source })?;
        let meta =
            file.metadata().map_err(|source| IsoError::Io { path: path.into(), cause: source })?;
        if !meta.is_file() {
            return Err(IsoError::NotIso(path.into()));
        }
        let mut iso = Iso {
            file,
            path: path.into(),
            len: meta.len(),
            info: IsoInfo::default(),
            root: DirRef { extent: 0, size: 0 },
            joliet_names: false,
        };
        let mut primary = None;
        let mut joliet = None;
        let mut catalog = None;
        for n in 0..MAX_DESCRIPTORS {
            let sector = match iso.read(16 + n, 1) {
                Ok(s) => s,
                Err(_) if n == 0 => return Err(IsoError::NotIso(path.into())),
                Err(e) => return Err(e),
            };
            if &sector[1..6] != b"CD001" {
                if n == 0 {
                    return Err(IsoError::NotIso(path.into()));
                }
                return Err(iso.damaged("a volume descriptor without CD001"));
            }
            match sector[0] {
                0 if &sector[7..30] == b"EL TORITO SPECIFICATION" => {
                    catalog = Some(le32(&sector, 71))
                }
                1 if primary.is_none() => primary = Some(sector),
                // A supplementary descriptor with a Joliet escape sequence (UCS-2 level 1-3).
                2 if sector[88] == 0x25
                    && sector[89] == 0x2f
                    && matches!(sector[90], 0x40 | 0x43 | 0x45) =>
                {
                    joliet = Some(sector)
                }
                255 => break,
                _ => {}
            }
        }
        let pvd = primary.ok_or_else(|| iso.damaged("no primary volume descriptor"))?;
        iso.info.system_id = trimmed(&pvd[8..40]);
        iso.info.volume_id = trimmed(&pvd[40..72]);
        iso.info.publisher_id = trimmed(&pvd[318..446]);
        iso.info.application_id = trimmed(&pvd[574..702]);
        iso.info.size_bytes = u64::from(le32(&pvd, 80)) * SECTOR;
        let primary_root = DirRef { extent: le32(&pvd, 156 + 2), size: le32(&pvd, 156 + 10) };
        iso.root = primary_root;
        iso.info.rock_ridge = iso.has_rock_ridge(primary_root);
        if let Some(svd) = &joliet {
            iso.info.joliet = true;
            if !iso.info.rock_ridge {
                iso.root = DirRef { extent: le32(svd, 156 + 2), size: le32(svd, 156 + 10) };
                iso.joliet_names = true;
            }
        }
        if let Some(lba) = catalog {
            iso.info.boot = iso.boot_catalog(lba)?;
        }
        Ok(iso)
    }

    pub fn info(&self) -> &IsoInfo {
        &self.info
    }

    fn damaged(&self, why: &str) -> IsoError {
        IsoError::Damaged(self.path.clone(), why.to_string())
    }

    /// `count` sectors from `lba`, which must lie inside the file.
    fn read(&self, lba: u64, count: u64) -> Result<Vec<u8>, IsoError> {
        let (start, len) = (lba * SECTOR, count * SECTOR);
        if start.checked_add(len).is_none_or(|end| end > self.len) {
            return Err(self.damaged(&format!("sector {lba} lies past the end of the file")));
        }
        let mut buf = vec![0u8; len as usize];
        self.file
            .read_exact_at(&mut buf, start)
            .map_err(|source| IsoError::Io { path: self.path.clone(), cause: source })?;
        Ok(buf)
    }

    fn boot_catalog(&self, lba: u32) -> Result<Vec<BootEntry>, IsoError> {
        let sectors =
            MAX_CATALOG_SECTORS.min(self.len / SECTOR - u64::from(lba).min(self.len / SECTOR));
        if sectors == 0 {
            return Err(self.damaged("the boot catalog lies past the end"));
        }
        let cat = self.read(u64::from(lba), sectors)?;
        // Validation entry: header 1, key 55 AA, 16-bit words summing to zero.
        let sum = cat[..32].chunks(2).fold(0u16, |s, w| s.wrapping_add(le16(w, 0)));
        if cat[0] != 1 || cat[30] != 0x55 || cat[31] != 0xaa || sum != 0 {
            return Err(self.damaged("the El Torito boot catalog fails its validation entry"));
        }
        let entry = |e: &[u8], platform| BootEntry {
            platform,
            bootable: e[0] == 0x88,
            emulation: e[1] & 0x0f,
            load_rba: le32(e, 8),
            sectors: le16(e, 6),
        };
        let mut entries = vec![entry(&cat[32..64], Platform::from_id(cat[1]))];
        let mut at = 64;
        while at + 32 <= cat.len() {
            let header = &cat[at..at + 32];
            if header[0] != 0x90 && header[0] != 0x91 {
                break;
            }
            let platform = Platform::from_id(header[1]);
            let count = usize::from(le16(header, 2));
            at += 32;
            let mut taken = 0;
            while taken < count && at + 32 <= cat.len() {
                let e = &cat[at..at + 32];
                at += 32;
                if e[0] == 0x44 {
                    continue; // an extension of the previous entry
                }
                entries.push(entry(e, platform));
                taken += 1;
            }
            if header[0] == 0x91 {
                break;
            }
        }
        Ok(entries)
    }

    /// Does the root's "." record carry SUSP with a Rock Ridge extension?
    fn has_rock_ridge(&self, root: DirRef) -> bool {
        let Ok(sector) = self.read(u64::from(root.extent), 1) else { return false };
        let len = usize::from(sector[0]);
        if len < 34 || len > sector.len() {
            return false;
        }
        let name_len = usize::from(sector[32]);
        let su_start = 33 + name_len + (1 - name_len % 2);
        let su = sector.get(su_start..len).unwrap_or(&[]);
        let mut rr = false;
        for_each_susp(su, |sig, _| rr |= matches!(sig, b"RR" | b"PX" | b"NM" | b"ER"));
        rr
    }

    /// The entries of a directory, "." and ".." left out.
    fn entries(&self, dir: DirRef) -> Result<Vec<Entry>, IsoError> {
        if dir.size > MAX_DIR_BYTES {
            return Err(self.damaged("a directory is implausibly large"));
        }
        let sectors = u64::from(dir.size).div_ceil(SECTOR);
        let data = self.read(u64::from(dir.extent), sectors)?;
        let mut out = Vec::new();
        let mut at = 0usize;
        while at < dir.size as usize && at < data.len() {
            let len = usize::from(data[at]);
            if len == 0 {
                // Records never cross a sector: go on at the next one.
                at = (at / SECTOR as usize + 1) * SECTOR as usize;
                continue;
            }
            let Some(rec) = data.get(at..at + len) else { break };
            at += len;
            if len < 34 {
                continue;
            }
            let name_len = usize::from(rec[32]);
            let Some(raw_name) = rec.get(33..33 + name_len) else { continue };
            if raw_name == [0] || raw_name == [1] {
                continue; // "." and ".."
            }
            let su = rec.get(33 + name_len + (1 - name_len % 2)..).unwrap_or(&[]);
            let name = if self.joliet_names {
                let units: Vec<u16> =
                    raw_name.chunks_exact(2).map(|c| u16::from_be_bytes([c[0], c[1]])).collect();
                String::from_utf16_lossy(&units)
            } else {
                rock_ridge_name(su).unwrap_or_else(|| iso9660_name(raw_name))
            };
            let name = name.trim_end_matches(";1").to_string();
            out.push(Entry {
                name,
                is_dir: rec[25] & 2 != 0,
                extent: le32(rec, 2),
                size: le32(rec, 10),
            });
            if out.len() >= MAX_DIR_ENTRIES {
                break;
            }
        }
        Ok(out)
    }

    /// The entries of the directory at `path` ("/" for the root).
    pub fn list(&self, path: &str) -> Result<Vec<Entry>, IsoError> {
        if path.trim_matches('/').is_empty() {
            return self.entries(self.root);
        }
        match self.find(path)? {
            Some(e) if e.is_dir => self.entries(DirRef { extent: e.extent, size: e.size }),
            _ => Ok(Vec::new()),
        }
    }

    /// The entry at `path`; names match exactly, else without regard to case (plain ISO
    /// 9660 names are upper case).
    pub fn find(&self, path: &str) -> Result<Option<Entry>, IsoError> {
        let mut dir = self.root;
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        if parts.len() > MAX_DEPTH {
            return Ok(None);
        }
        for (i, part) in parts.iter().enumerate() {
            let entries = self.entries(dir)?;
            let found = entries
                .iter()
                .find(|e| e.name == *part)
                .or_else(|| entries.iter().find(|e| e.name.eq_ignore_ascii_case(part)));
            let Some(found) = found else { return Ok(None) };
            if i + 1 == parts.len() {
                return Ok(Some(found.clone()));
            }
            if !found.is_dir {
                return Ok(None);
            }
            dir = DirRef { extent: found.extent, size: found.size };
        }
        Ok(None)
    }

    /// Copies a file's contents to `out` (kernels, initrds), a MiB at a time; returns the
    /// bytes copied.
    pub fn copy_file(&self, entry: &Entry, out: &mut impl std::io::Write) -> Result<u64, IsoError> {
        if entry.is_dir {
            return Err(self.damaged(&format!("{} is a directory", entry.name)));
        }
        const CHUNK: u64 = 512; // sectors
        let size = u64::from(entry.size);
        let (mut lba, mut left) = (u64::from(entry.extent), size);
        while left > 0 {
            let sectors = left.div_ceil(SECTOR).min(CHUNK);
            let data = self.read(lba, sectors)?;
            let n = left.min(sectors * SECTOR) as usize;
            out.write_all(&data[..n])
                .map_err(|source| IsoError::Io { path: self.path.clone(), cause: source })?;
            lba += sectors;
            left -= n as u64;
        }
        Ok(size)
    }

    /// A file's contents, if it is at most `max` bytes (config files, not kernels).
    pub fn read_file(&self, entry: &Entry, max: usize) -> Result<Vec<u8>, IsoError> {
        let size = entry.size as usize;
        if entry.is_dir || size > max {
            return Err(self.damaged(&format!("{} is not a small file", entry.name)));
        }
        let mut data = self.read(u64::from(entry.extent), (size as u64).div_ceil(SECTOR).max(1))?;
        data.truncate(size);
        Ok(data)
    }
}

/// Calls `f(signature, data)` for each SUSP entry in a system use area.
fn for_each_susp(mut su: &[u8], mut f: impl FnMut(&[u8], &[u8])) {
    while su.len() >= 4 {
        let len = usize::from(su[2]);
        if len < 4 || len > su.len() {
            return;
        }
        f(&su[..2], &su[4..len]);
        su = &su[len..];
    }
}

/// The Rock Ridge name (NM entries, continued) in a record's system use area.
fn rock_ridge_name(su: &[u8]) -> Option<String> {
    let mut name: Option<Vec<u8>> = None;
    for_each_susp(su, |sig, data| {
        if sig == b"NM" && !data.is_empty() && data[0] & 0b110 == 0 {
            name.get_or_insert_with(Vec::new).extend_from_slice(&data[1..]);
        }
    });
    name.map(|n| String::from_utf8_lossy(&n).into_owned())
}

/// A plain ISO 9660 name, without version and trailing dot.
fn iso9660_name(raw: &[u8]) -> String {
    let name = String::from_utf8_lossy(raw);
    let name = name.split(';').next().unwrap_or_default();
    name.trim_end_matches('.').to_string()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::process::Command;

    /// Builds an ISO with xorriso (as distributions do) from `files` (path, contents).
    pub fn make_iso(dir: &Path, name: &str, files: &[(&str, &[u8])], args: &[&str]) -> PathBuf {
        let tree = dir.join(format!("{name}-tree"));
        let _ = std::fs::remove_dir_all(&tree);
        for (path, data) in files {
            let p = tree.join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, data).unwrap();
        }
        let iso = dir.join(format!("{name}.iso"));
        let _ = std::fs::remove_file(&iso);
        let out = Command::new("xorriso")
            .args(["-as", "mkisofs", "-quiet", "-o"])
            .arg(&iso)
            .args(args)
            .arg(&tree)
            .output()
            .expect("xorriso is needed: apt-get install xorriso");
        assert!(out.status.success(), "xorriso: {}", String::from_utf8_lossy(&out.stderr));
        iso
    }

    pub fn scratch(name: &str) -> PathBuf {
        crate::test_util::scratch("iso", name)
    }

    const LONG: &str = "A Long File Name With Spaces.txt";

    fn tree() -> Vec<(&'static str, &'static [u8])> {
        vec![
            ("boot/isolinux/isolinux.bin", &[0u8; 2048]),
            ("EFI/boot/efiboot.img", &[0u8; 65536]),
            ("boot/vmlinuz", b"kernel"),
            ("docs/A Long File Name With Spaces.txt", b"long name file\n"),
        ]
    }

    #[test]
    fn volume_ids_names_and_both_boot_entries() {
        let dir = scratch("full");
        let iso = make_iso(
            &dir,
            "full",
            &tree(),
            &[
                "-V",
                "DEBIAN_12_AMD64",
                "-publisher",
                "Debian",
                "-A",
                "Vessel test",
                "-sysid",
                "LINUX",
                "-J",
                "-R",
                "-b",
                "boot/isolinux/isolinux.bin",
                "-c",
                "boot/isolinux/boot.cat",
                "-no-emul-boot",
                "-boot-load-size",
                "4",
                "-boot-info-table",
                "-eltorito-alt-boot",
                "-e",
                "EFI/boot/efiboot.img",
                "-no-emul-boot",
            ],
        );
        let image = Iso::open(&iso).unwrap();
        let info = image.info();
        assert_eq!(info.volume_id, "DEBIAN_12_AMD64");
        assert_eq!(info.system_id, "LINUX");
        // The primary descriptor holds a-characters: upper case.
        assert_eq!(info.publisher_id, "DEBIAN");
        assert_eq!(info.application_id, "VESSEL TEST");
        assert!(info.joliet && info.rock_ridge);
        assert_eq!(info.size_bytes, std::fs::metadata(&iso).unwrap().len());
        let platforms: Vec<_> = info.boot.iter().map(|b| (b.platform, b.bootable)).collect();
        assert_eq!(platforms, [(Platform::Bios, true), (Platform::Uefi, true)]);
        assert_eq!(info.boot[0].sectors, 4);
        let file = image.find(&format!("/docs/{LONG}")).unwrap().expect("the long name");
        assert_eq!(image.read_file(&file, 1024).unwrap(), b"long name file\n");
        let names: Vec<_> = image.list("/boot").unwrap().into_iter().map(|e| e.name).collect();
        assert!(names.contains(&"vmlinuz".to_string()) && names.contains(&"isolinux".to_string()));
    }

    #[test]
    fn joliet_only_and_plain_names() {
        let dir = scratch("joliet");
        // xorriso writes Rock Ridge unless told not to.
        let joliet = make_iso(&dir, "joliet", &tree(), &["-V", "J", "-J", "--norock"]);
        let image = Iso::open(&joliet).unwrap();
        assert!(image.info().joliet && !image.info().rock_ridge);
        assert!(image.find(&format!("docs/{LONG}")).unwrap().is_some(), "Joliet's long name");
        let plain = make_iso(&dir, "plain", &[("boot/vmlinuz", b"k")], &["-V", "P", "--norock"]);
        let image = Iso::open(&plain).unwrap();
        assert!(!image.info().joliet && !image.info().rock_ridge && image.info().boot.is_empty());
        let kernel = image.find("/boot/vmlinuz").unwrap().expect("found without regard to case");
        assert_eq!(image.read_file(&kernel, 16).unwrap(), b"k");
    }

    #[test]
    fn not_an_iso_truncated_and_garbage() {
        let dir = scratch("bad");
        let text = dir.join("notes.txt");
        std::fs::write(&text, "hello").unwrap();
        assert!(matches!(Iso::open(&text), Err(IsoError::NotIso(_))));
        assert!(matches!(Iso::open(&dir), Err(IsoError::NotIso(_))));
        assert!(matches!(Iso::open(&dir.join("missing.iso")), Err(IsoError::Io { .. })));
        let iso = make_iso(&dir, "t", &tree(), &["-J", "-R"]);
        let bytes = std::fs::read(&iso).unwrap();
        let cut = dir.join("cut.iso");
        std::fs::write(&cut, &bytes[..17 * 2048]).unwrap();
        assert!(Iso::open(&cut).is_err_and(|e| e.to_string().contains("truncated")));
        // Every byte of the descriptors and the root directory scrambled in turn: errors
        // or odd names, never a panic.
        for at in (16 * 2048..bytes.len().min(40 * 2048)).step_by(97) {
            let mut b = bytes.clone();
            b[at] ^= 0xff;
            std::fs::write(&cut, &b).unwrap();
            if let Ok(image) = Iso::open(&cut) {
                let _ = image.list("/");
                let _ = image.find("/docs/x");
            }
        }
    }
}
