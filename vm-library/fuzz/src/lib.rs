//! What each of vm-library's fuzz targets does with its input, and what it reached: the
//! fuzz targets (`fuzz_targets/*`) call these, and the reach test (`tests/reach.rs`) runs
//! every checked-in seed through them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use vm_library::config::{DiskFormat, VmConfig};
use vm_library::disks::{self, BackingPolicy};
use vm_library::iso::{Iso, boot_config, os};
use vm_library::library::Library;

/// What runs of a target reached: name → how many.
#[derive(Debug, Default)]
pub struct Reach(pub BTreeMap<&'static str, u64>);

impl Reach {
    fn count(&mut self, what: &'static str) {
        *self.0.entry(what).or_default() += 1;
    }

    pub fn add(&mut self, other: &Reach) {
        for (k, v) in &other.0 {
            *self.0.entry(k).or_default() += v;
        }
    }

    pub fn get(&self, what: &str) -> u64 {
        self.0.get(what).copied().unwrap_or(0)
    }
}

/// A scratch folder of this process for `name`, emptied.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vessel-fuzz-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// ISO inspection of a hostile image: the input is everything from sector 16 (the volume
/// descriptors) on.
pub fn iso(data: &[u8]) -> Reach {
    let mut reach = Reach::default();
    let path = std::env::temp_dir().join(format!("vessel-fuzz-iso-{}.iso", std::process::id()));
    let mut image = vec![0u8; 16 * 2048];
    image.extend_from_slice(data);
    std::fs::write(&path, &image).unwrap();
    if let Ok(iso) = Iso::open(&path) {
        reach.count("opened");
        let _ = iso.list("/");
        let _ = iso.find("/isolinux/isolinux.cfg");
        if let Ok(linux) = boot_config::find_linux_boot(&iso) {
            let _ = os::detect_builtin(iso.info(), linux.is_some());
        }
    }
    let text = String::from_utf8_lossy(data);
    let _ = boot_config::parse_syslinux(&text, "/isolinux", "fuzz");
    let _ = boot_config::parse_grub_entries(&text, "fuzz");
    reach
}

/// `vessel.toml` of any text: parsed; what parses writes back to itself, and is checked.
pub fn vessel_toml(data: &[u8]) -> Reach {
    let mut reach = Reach::default();
    let Ok(text) = std::str::from_utf8(data) else { return reach };
    match VmConfig::from_toml(text) {
        Ok(config) => {
            reach.count("parsed");
            let written = config.to_toml();
            let again = VmConfig::from_toml(&written).expect("what was read writes back");
            // Compared as written: a float NaN kept from an unknown table is not equal to
            // itself, but writes back the same.
            assert_eq!(again.to_toml(), written, "a rewrite keeps everything");
            let host = vm_library::validate::Host { cores: 4, memory_mib: 8192 };
            if vm_library::validate::validate(&config, Path::new("/nonexistent"), &host).is_empty()
            {
                reach.count("valid");
            }
        }
        Err(_) => reach.count("refused"),
    }
    reach
}

/// A qcow2 image of any bytes, in a VM's folder beside a file of its own and with a host
/// file outside: checked under the strict policy, then its size read.
pub fn qcow2_policy(data: &[u8]) -> Reach {
    let mut reach = Reach::default();
    let dir = scratch("qcow2");
    let vm = dir.join("vm.vessel");
    std::fs::create_dir_all(vm.join("disks")).unwrap();
    std::fs::write(vm.join("disks/base.raw"), vec![0u8; 1 << 16]).unwrap();
    std::fs::write(dir.join("secret"), b"host file").unwrap();
    let image = vm.join("disks/disk.qcow2");
    std::fs::write(&image, data).unwrap();
    let policy = BackingPolicy::within(&vm).unwrap();
    match disks::backing_chain(&image, DiskFormat::Qcow2, &policy) {
        Ok(chain) => {
            reach.count("accepted");
            if !chain.is_empty() {
                reach.count("backed");
            }
            for layer in &chain {
                assert!(policy.allows(&layer.path), "only what the policy allows: {layer:?}");
            }
            let _ = disks::inspect(&image, DiskFormat::Qcow2);
        }
        Err(disks::DiskError::Refused { .. }) => reach.count("refused"),
        Err(_) => reach.count("not qcow2"),
    }
    assert_eq!(std::fs::read(dir.join("secret")).unwrap(), b"host file");
    reach
}

/// An archive of any bytes, imported into an empty library: a VM, or nothing at all.
pub fn archive_import(data: &[u8]) -> Reach {
    let mut reach = Reach::default();
    let dir = scratch("archive");
    let archive = dir.join("in.vessel.tar");
    std::fs::write(&archive, data).unwrap();
    let lib = Library::open(&dir.join("lib")).unwrap();
    match vm_library::archive::import(&archive, &lib) {
        Ok(imported) => {
            reach.count("imported");
            let root = std::fs::canonicalize(imported.bundle.root()).unwrap();
            assert!(root.starts_with(std::fs::canonicalize(lib.dir()).unwrap()));
        }
        Err(_) => {
            reach.count("refused");
            let left = std::fs::read_dir(lib.dir()).unwrap().count();
            assert_eq!(left, 0, "a refused import leaves nothing behind");
        }
    }
    // Nothing was written outside the library.
    let outside: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let mut outside = outside;
    outside.sort();
    assert_eq!(outside, ["in.vessel.tar", "lib"], "nothing lands outside the library");
    reach
}

/// The VM the transfer_receive seeds carry (a migration's folder comes for one VM only).
pub const TRANSFER_SEED_UUID: &str = "bab9988e-4a26-4544-b0ef-e88e1d032552";

/// A live migration's folder stream of any bytes (`vm_library::transfer::receive`, what a
/// sender with the token sends): a VM arriving in an empty library, or nothing at all.
pub fn transfer_receive(data: &[u8]) -> Reach {
    let mut reach = Reach::default();
    let dir = scratch("transfer");
    let lib = Library::open(&dir.join("lib")).unwrap();
    let uuid = TRANSFER_SEED_UUID.parse().unwrap();
    let mut input = data;
    match vm_library::transfer::receive(&mut input, &lib, uuid) {
        Ok(bundle) => {
            reach.count("arrived");
            assert!(bundle.is_arriving());
            let root = std::fs::canonicalize(bundle.root()).unwrap();
            assert!(root.starts_with(std::fs::canonicalize(lib.dir()).unwrap()));
            // Its disks are its own, fresh, and read through nothing outside it.
            let policy = BackingPolicy::within(bundle.root()).unwrap();
            for disk in &bundle.config.disks {
                let path = bundle.inside(&disk.file).unwrap();
                disks::backing_chain(&path, disk.format, &policy).unwrap();
                reach.count("disk");
            }
        }
        Err(_) => {
            reach.count("refused");
            let left = std::fs::read_dir(lib.dir()).unwrap().count();
            assert_eq!(left, 0, "a refused folder leaves nothing behind");
        }
    }
    let outside: Vec<_> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(outside, ["lib"], "nothing lands outside the library");
    reach
}

/// Writes the transfer_receive seeds: the stream of a VM with a qcow2 disk (over a base
/// image of its own) and a raw one; the same with a byte of a file changed.
pub fn write_transfer_seeds(out: &Path) {
    let dir = scratch("transfer-seeds");
    let lib = Library::open(&dir.join("lib")).unwrap();
    let root = dir.join("lib/seedvm.vessel");
    for folder in ["disks", "snapshots", "logs"] {
        std::fs::create_dir_all(root.join(folder)).unwrap();
    }
    let toml = format!(
        "schema_version = 1\nuuid = \"{TRANSFER_SEED_UUID}\"\nname = \"seedvm\"\nos = \
         \"unknown\"\nvcpus = 1\nmemory_mib = 64\ncreated = \"2026-11-28T17:39:34Z\"\nmodified \
         = \"2026-11-28T17:39:34Z\"\n\n[boot]\nkind = \"bios\"\n\n[[disks]]\nfile = \
         \"disks/disk0.qcow2\"\nformat = \"qcow2\"\nsize_bytes = 1048576\n\n[[disks]]\nfile = \
         \"disks/data.raw\"\nformat = \"raw\"\nsize_bytes = 1048576\n\n[cdrom]\n\n[network]\nmode \
         = \"none\"\n\n[display]\nsize = \"follow-window\"\n"
    );
    VmConfig::from_toml(&toml).unwrap();
    std::fs::write(root.join("vessel.toml"), toml).unwrap();
    let base = root.join("snapshots/base.qcow2");
    disks::create(&base, DiskFormat::Qcow2, 1 << 20, None).unwrap();
    let backing = Some((Path::new("../snapshots/base.qcow2"), DiskFormat::Qcow2));
    disks::create(&root.join("disks/disk0.qcow2"), DiskFormat::Qcow2, 1 << 20, backing).unwrap();
    disks::create(&root.join("disks/data.raw"), DiskFormat::Raw, 1 << 20, None).unwrap();
    let bundle = lib.find("seedvm").unwrap();
    let fresh = vm_library::transfer::fresh_disks(&bundle).unwrap();
    let mut good = Vec::new();
    vm_library::transfer::send(&bundle, &fresh, &mut good).unwrap();
    std::fs::create_dir_all(out).unwrap();
    std::fs::write(out.join("good"), &good).unwrap();
    // A byte of vessel.toml's contents changed: its checksum no longer matches.
    let at = good.windows(7).position(|w| w == b"seedvm\"").unwrap();
    let mut tampered = good.clone();
    tampered[at] ^= 0x20;
    std::fs::write(out.join("tampered"), &tampered).unwrap();
    let _ = std::fs::remove_dir_all(dir);
}

/// An OVF descriptor of any bytes (from an OVA someone sent): parsed with bounds, or
/// refused; the disks it lists are bounded.
pub fn ovf_descriptor(data: &[u8]) -> Reach {
    let mut reach = Reach::default();
    let Ok(text) = std::str::from_utf8(data) else { return reach };
    match vm_library::foreign::ovf_import::parse(text) {
        Ok(d) => {
            reach.count("parsed");
            assert!(d.disks.len() <= 16);
            if !d.items.is_empty() {
                reach.count("items");
            }
        }
        Err(_) => reach.count("refused"),
    }
    reach
}
