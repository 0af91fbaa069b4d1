//! VMs for other hypervisors: `vessel export --format libvirt|ovf|ova` writes a VM as
//! libvirt (KVM clusters: OpenStack, Proxmox, oVirt import its domain XML) or as OVF
//! (VMware Workstation/ESXi, VirtualBox) describe one, with its disks converted by
//! `qemu-img`, the field's converter (read through the VM's checked backing chain,
//! written as one image each). What Vessel's VM has and the other side cannot express is
//! said in the export's notes, never dropped silently.

pub mod libvirt;
pub mod ovf;
pub mod ovf_import;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::bundle::{Bundle, BundleError};
use crate::config::{Boot, Disk, DiskFormat, Network};
use crate::disks::{self, DiskError};
use crate::library::{Library, LibraryError};

#[derive(Debug, thiserror::Error)]
pub enum ForeignError {
    #[error("{path}: {cause}")]
    Io { path: PathBuf, cause: std::io::Error },
    #[error(transparent)]
    Library(#[from] LibraryError),
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error(transparent)]
    Disk(#[from] DiskError),
    #[error("{0} exists; choose another name or folder (nothing is overwritten)")]
    Exists(PathBuf),
    #[error("qemu-img could not convert {disk}: {why}")]
    Convert { disk: PathBuf, why: String },
    #[error("{package} was not imported: {why}; nothing was changed")]
    Refused { package: PathBuf, why: String },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ForeignError + '_ {
    move |cause| ForeignError::Io { path: path.to_path_buf(), cause }
}

/// What an export wrote, and what of the VM the format could not carry.
#[derive(Debug, Default)]
pub struct Exported {
    pub files: Vec<PathBuf>,
    pub notes: Vec<String>,
}

/// A disk converted for another hypervisor: its file and the size the guest sees.
struct Converted {
    path: PathBuf,
    capacity: u64,
}

/// Converts the VM's `disk` to `dest` (which must not exist) with `qemu-img convert` and
/// the output options `out` (`-O FORMAT ...`). The image is read in the format the
/// configuration states, through the backing chain the library checked (never a file
/// outside what the VM may read).
fn convert(
    lib: &Library,
    bundle: &Bundle,
    disk: &Disk,
    dest: &Path,
    out: &[&str],
) -> Result<Converted, ForeignError> {
    let source = bundle.inside(&disk.file)?;
    disks::backing_chain(&source, disk.format, &lib.backing_policy(bundle)?)?;
    let capacity = disks::inspect(&source, disk.format)?.virtual_size;
    if std::fs::symlink_metadata(dest).is_ok() {
        return Err(ForeignError::Exists(dest.to_path_buf()));
    }
    let format = match disk.format {
        DiskFormat::Raw => "raw",
        DiskFormat::Qcow2 => "qcow2",
    };
    let ran = Command::new("qemu-img")
        .args(["convert", "-q", "-f", format])
        .args(out)
        .arg(&source)
        .arg(dest)
        .output();
    let failed = |why: String| {
        let _ = std::fs::remove_file(dest);
        ForeignError::Convert { disk: source.clone(), why }
    };
    match ran {
        Ok(o) if o.status.success() => Ok(Converted { path: dest.to_path_buf(), capacity }),
        Ok(o) => Err(failed(String::from_utf8_lossy(&o.stderr).trim().to_string())),
        Err(e) => Err(failed(format!("{e} (install qemu-utils)"))),
    }
}

/// The hex digest of the file at `path` by `H` (SHA-1, SHA-256, SHA-512).
pub(crate) fn hash_file<H: sha2::Digest>(path: &Path) -> Result<String, ForeignError> {
    let mut file = crate::files::open_regular(path, false).map_err(io_err(path))?;
    let mut hash = H::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(io_err(path))?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
    }
    Ok(crate::archive::hex(&hash.finalize()))
}

/// Text for XML content and attribute values.
fn xml(text: &str) -> String {
    quick_xml::escape::escape(text).into_owned()
}

/// What of the VM's boot, CD and network the other side cannot carry.
fn common_notes(bundle: &Bundle) -> Vec<String> {
    let c = &bundle.config;
    let mut notes = Vec::new();
    if let Some(iso) = &c.cdrom.iso {
        notes.push(format!(
            "the CD drive is empty there: the ISO it held ({}) is a file of this computer",
            iso.display()
        ));
    }
    if matches!(c.boot.value, Boot::Cdrom) {
        notes.push(
            "it booted the Linux on its CD directly; there it boots from the CD drive with a \
             BIOS"
                .into(),
        );
    }
    if let Network::Nat { forwards, host_access, .. } = &c.network.value {
        if !forwards.is_empty() {
            notes.push(format!(
                "its {} port forward(s) are Vessel's own: set them up there again",
                forwards.len()
            ));
        }
        if *host_access {
            notes.push("its access to this computer's services is Vessel's own".into());
        }
    }
    notes
}

/// A file name made of the VM's name: its letters and digits, the rest as '-'.
fn file_stem(name: &str) -> String {
    let stem: String =
        name.chars().map(|c| if c.is_alphanumeric() || c == '.' { c } else { '-' }).collect();
    let stem = stem.trim_matches(|c| c == '-' || c == '.').to_string();
    if stem.is_empty() { "vm".into() } else { stem }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::full;
    use crate::config::{Boot, Firmware};

    fn scratch(name: &str) -> PathBuf {
        crate::test_util::scratch("foreign", name)
    }

    fn run(program: &str, args: &[&std::ffi::OsStr]) -> (bool, String) {
        let out = Command::new(program)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{program} is needed (tools/install-deps): {e}"));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    fn os(s: &str) -> &std::ffi::OsStr {
        s.as_ref()
    }

    /// A stopped VM whose system disk is a qcow2 overlay (with data of its own) over a
    /// base image with data, and a raw data disk; notes that need escaping.
    fn vm(lib: &Library, boot: Boot) -> Bundle {
        let mut config = full();
        config.boot = boot.into();
        config.notes = "a <test> & \"notes\"".into();
        config.disks[0].size_bytes = 8 << 20;
        config.disks[1].size_bytes = 4 << 20;
        let bundle = lib.create(config).unwrap();
        let base = bundle.resolve(Path::new("snapshots/base.qcow2"));
        disks::create(&base, DiskFormat::Qcow2, 8 << 20, None).unwrap();
        let top = bundle.resolve(Path::new("disks/system.qcow2"));
        let backing = Some((Path::new("../snapshots/base.qcow2"), DiskFormat::Qcow2));
        disks::create(&top, DiskFormat::Qcow2, 8 << 20, backing).unwrap();
        let qemu_io = |image: &Path, command: &str| {
            let args = [os("-f"), os("qcow2"), os("-c"), os(command), image.as_os_str()];
            let (ok, text) = run("qemu-io", &args);
            assert!(ok, "qemu-io: {text}");
        };
        qemu_io(&base, "write -P 0x5a 0 2M");
        qemu_io(&top, "write -P 0xa5 1M 64k");
        let raw = bundle.resolve(Path::new("disks/data.raw"));
        std::fs::write(&raw, vec![7u8; 4 << 20]).unwrap();
        if let Boot::Direct { kernel, initrd, .. } = &bundle.config.boot.value {
            std::fs::create_dir_all(bundle.resolve(Path::new("boot"))).unwrap();
            std::fs::write(bundle.resolve(kernel), b"a kernel").unwrap();
            std::fs::write(bundle.resolve(initrd.as_ref().unwrap()), b"an initrd").unwrap();
        }
        bundle
    }

    /// Whether the guest reads the same from `a` (in `a_format`) as from `b`.
    fn same_disk(a: &Path, a_format: &str, b: &Path, b_format: &str) -> String {
        let args = [os("compare"), os("-f"), os(a_format), os("-F"), os(b_format)];
        let (_, text) = run("qemu-img", &[&args[..], &[a.as_os_str(), b.as_os_str()]].concat());
        text
    }

    #[test]
    fn a_libvirt_domain_validates_and_its_disks_read_as_the_vms() {
        let dir = scratch("libvirt");
        let lib = Library::open(&dir.join("lib")).unwrap();
        for (name, boot) in [
            ("bios", Boot::Bios(Firmware::default())),
            ("uefi", Boot::Uefi),
            ("direct", full().boot.value),
        ] {
            let mut bundle = vm(&lib, boot);
            let out = dir.join(name);
            let exported = libvirt::export(&lib, &bundle, &out).unwrap();
            let xml_file = out.join("Debian-12.xml");
            assert!(exported.files.contains(&xml_file), "{exported:?}");
            let (valid, text) = run("virt-xml-validate", &[xml_file.as_os_str(), os("domain")]);
            assert!(
                valid,
                "virt-xml-validate: {text}\n{}",
                std::fs::read_to_string(&xml_file).unwrap()
            );
            let domain = std::fs::read_to_string(&xml_file).unwrap();
            assert!(domain.contains(&bundle.config.uuid.to_string()));
            assert!(domain.contains("a &lt;test&gt; &amp; &quot;notes&quot;"), "{domain}");
            // Each disk on its own (no backing file), reading what the VM's reads.
            let disk0 = out.join("Debian-12-disk0.qcow2");
            let system = bundle.resolve(Path::new("disks/system.qcow2"));
            let compared = same_disk(&system, "qcow2", &disk0, "qcow2");
            assert!(compared.contains("identical"), "{compared}");
            let data = bundle.resolve(Path::new("disks/data.raw"));
            let compared = same_disk(&data, "raw", &out.join("Debian-12-disk1.qcow2"), "qcow2");
            assert!(compared.contains("identical"), "{compared}");
            let (_, info) = run("qemu-img", &[os("info"), disk0.as_os_str()]);
            assert!(!info.contains("backing file"), "{info}");
            // What did not map is said.
            let notes = exported.notes.join("\n");
            assert!(
                notes.contains("port forward") && notes.contains("CD drive is empty"),
                "{notes}"
            );
            // Never over what is there; never while it runs.
            let again = libvirt::export(&lib, &bundle, &out).unwrap_err();
            assert!(matches!(again, ForeignError::Exists(_)), "{again}");
            let running = bundle.lock_running().unwrap();
            let error = libvirt::export(&lib, &bundle, &dir.join("other")).unwrap_err();
            assert!(error.to_string().contains("running"), "{error}");
            drop(running);
            lib.delete(&bundle.config.name, &bundle.config.name).unwrap();
            bundle.config.name.clear();
        }
        let _ = std::fs::remove_dir_all(dir);
    }

    /// The count of elements named `name` (any namespace) in the XML file, by xmllint (an
    /// XML parser of its own).
    fn count(file: &Path, name: &str) -> u32 {
        let query = format!("count(//*[local-name()='{name}'])");
        let (ok, text) = run("xmllint", &[os("--xpath"), os(&query), file.as_os_str()]);
        assert!(ok, "xmllint: {text}");
        text.trim().parse().unwrap()
    }

    #[test]
    fn an_ova_holds_every_section_and_a_manifest_that_matches() {
        let dir = scratch("ova");
        let lib = Library::open(&dir.join("lib")).unwrap();
        let bundle = vm(&lib, Boot::Uefi);
        let ova = dir.join("debian.ova");
        let exported = ovf::export(&lib, &bundle, &ova, ovf::Packaging::Ova).unwrap();
        assert_eq!(exported.files, std::slice::from_ref(&ova));

        // A POSIX tar: the descriptor first, the manifest next, then the disks.
        let mut archive = tar::Archive::new(std::fs::File::open(&ova).unwrap());
        let unpacked = dir.join("unpacked");
        std::fs::create_dir_all(&unpacked).unwrap();
        let mut names = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            assert!(entry.header().as_ustar().is_some(), "ustar headers");
            let name = entry.path().unwrap().to_string_lossy().into_owned();
            entry.unpack(unpacked.join(&name)).unwrap();
            names.push(name);
        }
        assert_eq!(
            names,
            ["Debian-12.ovf", "Debian-12.mf", "Debian-12-disk1.vmdk", "Debian-12-disk2.vmdk"]
        );
        let manifest = std::fs::read_to_string(unpacked.join("Debian-12.mf")).unwrap();
        for name in names.iter().filter(|n| !n.ends_with(".mf")) {
            let line = format!("SHA256({name})= {}", sha256(&unpacked.join(name)));
            assert!(manifest.lines().any(|l| l == line), "{line} in {manifest}");
        }
        assert_eq!(manifest.lines().count(), 3);

        // The descriptor parses, with every section VMware and VirtualBox need.
        let ovf_file = unpacked.join("Debian-12.ovf");
        let (ok, text) = run("xmllint", &[os("--noout"), ovf_file.as_os_str()]);
        assert!(ok, "xmllint: {text}");
        for (section, n) in [
            ("References", 1),
            ("File", 2),
            ("DiskSection", 1),
            ("Disk", 2),
            ("NetworkSection", 1),
            ("VirtualSystem", 1),
            ("OperatingSystemSection", 1),
            ("VirtualHardwareSection", 1),
            ("StorageItem", 3),
            ("EthernetPortItem", 1),
        ] {
            assert_eq!(count(&ovf_file, section), n, "{section}");
        }
        let descriptor = std::fs::read_to_string(&ovf_file).unwrap();
        assert!(descriptor.contains("<rasd:VirtualQuantity>2</rasd:VirtualQuantity>"));
        assert!(descriptor.contains("<rasd:VirtualQuantity>2048</rasd:VirtualQuantity>"));
        assert!(descriptor.contains("ovf:capacity=\"8388608\""), "{descriptor}");
        assert!(descriptor.contains("vmw:value=\"efi\""));

        // The disks are streamOptimized VMDKs that read as the VM's do.
        let vmdk = unpacked.join("Debian-12-disk1.vmdk");
        let (_, info) = run("qemu-img", &[os("info"), vmdk.as_os_str()]);
        assert!(info.contains("file format: vmdk") && info.contains("streamOptimized"), "{info}");
        let system = bundle.resolve(Path::new("disks/system.qcow2"));
        let compared = same_disk(&system, "qcow2", &vmdk, "vmdk");
        assert!(compared.contains("identical"), "{compared}");

        // As a folder (OVF), the same files.
        let folder = dir.join("ovf");
        let exported = ovf::export(&lib, &bundle, &folder, ovf::Packaging::Ovf).unwrap();
        let names: Vec<_> =
            exported.files.iter().map(|f| f.file_name().unwrap().to_owned()).collect();
        assert_eq!(names.len(), 4, "{names:?}");
        // And an OVA is never written over.
        let error = ovf::export(&lib, &bundle, &ova, ovf::Packaging::Ova).unwrap_err();
        assert!(matches!(error, ForeignError::Exists(_)), "{error}");
        let _ = std::fs::remove_dir_all(dir);
    }

    fn sha256(path: &Path) -> String {
        use sha2::Digest;
        let hash = sha2::Sha256::digest(std::fs::read(path).unwrap());
        hash.iter().map(|b| format!("{b:02x}")).collect()
    }
}
