//! `vessel import FILE.ova` and `vessel import FILE.ovf`: a VM that VMware, VirtualBox or
//! another OVF tool exported (OVF 1.0 or 2.0) becomes a Vessel VM. Its hardware maps to
//! Vessel's (CPUs, memory, disks, a NIC on NAT, UEFI or BIOS); each disk (VMDK, VDI, VHD,
//! VHDX, as the descriptor states its format) is converted to qcow2 by `qemu-img`; what
//! does not map is said.
//!
//! An OVF package is someone else's file: every name in it must be a plain file name (no
//! folder, no `..`), an OVA's entries regular files, the manifest's checksums must match
//! (SHA-1, SHA-256 or SHA-512), the descriptor is read with bounds, and a disk that reads
//! another file (a VMDK descriptor naming its extents, a differencing image naming its
//! parent) is refused: only self-contained images are converted.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use quick_xml::Reader;
use quick_xml::events::Event;

use super::{ForeignError, hash_file, io_err};
use crate::archive::Imported;
use crate::bundle::Bundle;
use crate::config::{
    Boot, Cdrom, Disk, DiskFormat, Display, Extra, Firmware, Network, SCHEMA_VERSION, VmConfig,
};
use crate::library::Library;

/// Largest descriptor or manifest read.
const MAX_DESCRIPTOR: u64 = crate::safe_write::MAX_SMALL_FILE;
/// Most disks an imported VM may have.
const MAX_DISKS: usize = 16;
/// Most elements a descriptor may have (a real one has a few hundred).
const MAX_ELEMENTS: usize = 100_000;

/// What the descriptor says of the VM.
#[derive(Debug, Default, PartialEq)]
pub struct Descriptor {
    /// File id → file name (`References`).
    pub files: BTreeMap<String, String>,
    /// Disk id → (file id, format URI) (`DiskSection`), in document order.
    pub disks: Vec<(String, String, String)>,
    pub name: Option<String>,
    pub annotation: Option<String>,
    /// The OS as CIM's number, VMware's `osType`, VirtualBox's `OSType`, and its words.
    pub os_cim: Option<u16>,
    pub os_names: Vec<String>,
    /// The hardware items, in document order.
    pub items: Vec<Item>,
    /// The VM boots with UEFI (VMware's `firmware` config, VirtualBox's `Firmware`).
    pub efi: bool,
}

/// One `Item`, `StorageItem` or `EthernetPortItem` of the VirtualHardwareSection.
#[derive(Debug, Default, PartialEq, Clone)]
pub struct Item {
    pub resource_type: u32,
    pub quantity: Option<u64>,
    pub units: Option<String>,
    pub host_resource: Option<String>,
    pub subtype: Option<String>,
    pub element_name: Option<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DescriptorError(String);

/// Reads an OVF descriptor (1.0 or 2.0) of at most `MAX_DESCRIPTOR` bytes.
pub fn parse(text: &str) -> Result<Descriptor, DescriptorError> {
    let bad = |why: String| DescriptorError(format!("the OVF descriptor {why}"));
    if text.len() as u64 > MAX_DESCRIPTOR {
        return Err(bad("is too large".into()));
    }
    let mut reader = Reader::from_str(text);
    let mut d = Descriptor::default();
    let mut stack: Vec<String> = Vec::new();
    let mut item: Option<Item> = None;
    let mut elements = 0usize;
    let mut systems = 0usize;
    loop {
        let event = reader.read_event().map_err(|e| bad(format!("is not XML: {e}")))?;
        let (start, empty) = match &event {
            Event::Start(e) => (Some(e.clone()), false),
            Event::Empty(e) => (Some(e.clone()), true),
            _ => (None, false),
        };
        if let Some(e) = start {
            elements += 1;
            if elements > MAX_ELEMENTS || stack.len() > 64 {
                return Err(bad("is too large or too deep".into()));
            }
            let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
            let attr = |key: &str| {
                e.attributes()
                    .flatten()
                    .find(|a| a.key.local_name().as_ref() == key.as_bytes())
                    .map(|a| a.unescape_value().map(|v| v.into_owned()).unwrap_or_default())
            };
            match name.as_str() {
                "File" if stack.last().is_some_and(|p| p == "References") => {
                    if let (Some(id), Some(href)) = (attr("id"), attr("href")) {
                        d.files.insert(id, href);
                    }
                }
                "Disk" if stack.last().is_some_and(|p| p == "DiskSection") => {
                    let id = attr("diskId").unwrap_or_default();
                    let file = attr("fileRef").unwrap_or_default();
                    d.disks.push((id, file, attr("format").unwrap_or_default()));
                }
                "VirtualSystem" => {
                    systems += 1;
                    if d.name.is_none() {
                        d.name = attr("id");
                    }
                }
                "OperatingSystemSection" => {
                    d.os_cim = attr("id").and_then(|v| v.parse().ok());
                    d.os_names.extend(attr("osType"));
                }
                "Item" | "StorageItem" | "EthernetPortItem" => item = Some(Item::default()),
                "Config" if attr("key").as_deref() == Some("firmware") => {
                    d.efi |= attr("value").is_some_and(|v| v.eq_ignore_ascii_case("efi"));
                }
                "Firmware" => {
                    d.efi |=
                        attr("type").is_some_and(|v| v.to_ascii_uppercase().starts_with("EFI"));
                }
                _ => {}
            }
            if !empty {
                stack.push(name);
            } else if matches!(name.as_str(), "Item" | "StorageItem" | "EthernetPortItem") {
                d.items.extend(item.take());
            }
            continue;
        }
        match event {
            Event::End(_) => {
                if let Some(name) = stack.pop()
                    && matches!(name.as_str(), "Item" | "StorageItem" | "EthernetPortItem")
                {
                    d.items.extend(item.take());
                }
            }
            Event::Text(t) => {
                let Ok(value) = t.unescape() else { continue };
                let value = value.trim().to_string();
                if value.is_empty() {
                    continue;
                }
                let here = stack.last().map(String::as_str).unwrap_or("");
                let parent = stack.len().checked_sub(2).map(|i| stack[i].as_str()).unwrap_or("");
                match (parent, here) {
                    ("VirtualSystem", "Name") => d.name = Some(value),
                    ("AnnotationSection", "Annotation") => d.annotation = Some(value),
                    ("OperatingSystemSection", "Description" | "OSType") => d.os_names.push(value),
                    (_, field) if item.is_some() => {
                        let it = item.as_mut().expect("checked");
                        match field {
                            "ResourceType" => it.resource_type = value.parse().unwrap_or(0),
                            "VirtualQuantity" => it.quantity = value.parse().ok(),
                            "AllocationUnits" => it.units = Some(value),
                            "HostResource" => it.host_resource = Some(value),
                            "ResourceSubType" => it.subtype = Some(value),
                            "ElementName" => it.element_name = Some(value),
                            _ => {}
                        }
                    }
                    _ => {}
                }
            }
            Event::Eof if stack.is_empty() => break,
            Event::Eof => {
                return Err(bad(format!("is not XML: <{}> is never closed", stack.join("><"))));
            }
            _ => {}
        }
    }
    match systems {
        0 => return Err(bad("describes no VM (no VirtualSystem)".into())),
        1 => {}
        n => {
            return Err(bad(format!(
                "describes {n} VMs; import them one at a time (a collection is not supported)"
            )));
        }
    }
    if d.disks.len() > MAX_DISKS {
        return Err(bad(format!(
            "lists {} disks; Vessel takes {MAX_DISKS} at most",
            d.disks.len()
        )));
    }
    Ok(d)
}

/// Mebibytes of `quantity` in `units` (CIM's programmatic units, or VirtualBox's words).
fn mebibytes(quantity: u64, units: Option<&str>) -> Option<u64> {
    let units = units.unwrap_or("byte * 2^20").to_ascii_lowercase().replace(' ', "");
    let shift: i32 = match units.as_str() {
        "byte" | "bytes" => 0,
        "kilobytes" | "kb" | "byte*2^10" => 10,
        "megabytes" | "mb" | "byte*2^20" => 20,
        "gigabytes" | "gb" | "byte*2^30" => 30,
        _ => return None,
    };
    if shift >= 20 {
        quantity.checked_mul(1 << (shift - 20))
    } else {
        Some(quantity >> (20 - shift))
    }
}

/// Vessel's OS id for what the descriptor names.
fn os_id(d: &Descriptor) -> String {
    // A libosinfo-style id as it is (what Vessel's own export says: "debian12").
    let exact = regex::Regex::new(
        r"^(debian|ubuntu|fedora|win|rhel|centos|rocky|alma|opensuse|sles|alpine|arch)[0-9.]*$",
    )
    .expect("a valid expression");
    if let Some(id) =
        d.os_names.iter().map(|n| n.trim().to_ascii_lowercase()).find(|n| exact.is_match(n))
    {
        return id;
    }
    let words = d.os_names.join(" ").to_ascii_lowercase();
    let by_cim = match d.os_cim {
        Some(95 | 96) => Some("debian"),
        Some(93 | 94) => Some("ubuntu"),
        Some(79 | 80 | 106 | 107) => Some("rhel"),
        Some(36 | 97..=101) => Some("linux"),
        _ => None,
    };
    let by_words = [
        ("debian", "debian"),
        ("ubuntu", "ubuntu"),
        ("fedora", "fedora"),
        ("windows11", "win11"),
        ("windows 11", "win11"),
        ("win", "win10"),
        ("rhel", "rhel"),
        ("redhat", "rhel"),
        ("suse", "opensuse"),
        ("linux", "linux"),
    ]
    .iter()
    .find(|(key, _)| words.contains(key))
    .map(|(_, id)| *id);
    by_words.or(by_cim).unwrap_or("unknown").to_string()
}

/// The qemu-img format a DiskSection format URI names.
fn qemu_format(uri: &str) -> Option<&'static str> {
    let uri = uri.to_ascii_lowercase();
    if uri.contains("vmdk") {
        Some("vmdk")
    } else if uri.contains("vhdx") {
        Some("vhdx")
    } else if uri.contains("vhd") {
        Some("vpc")
    } else if uri.contains("vdi") || uri.contains("virtualbox") {
        Some("vdi")
    } else if uri.contains("raw") {
        Some("raw")
    } else {
        None
    }
}

fn refused(path: &Path, why: String) -> ForeignError {
    ForeignError::Refused { package: path.to_path_buf(), why }
}

/// A plain file name from the package (no folder, no `..`), or why not.
fn plain_name(package: &Path, name: &str) -> Result<String, ForeignError> {
    let ok = !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains('/')
        && !name.contains('\\')
        && !name.contains('\0');
    if ok {
        Ok(name.to_string())
    } else {
        Err(refused(package, format!("it names a file {name:?} outside the package")))
    }
}

/// Imports the OVA file or OVF descriptor at `path` into `library`.
pub fn import(path: &Path, library: &Library) -> Result<Imported, ForeignError> {
    let staging = library.dir().join(format!(".import-ovf-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    crate::files::create_dir_private(&staging).map_err(io_err(&staging))?;
    let result = import_into(path, library, &staging);
    let _ = std::fs::remove_dir_all(&staging);
    result
}

fn import_into(path: &Path, library: &Library, staging: &Path) -> Result<Imported, ForeignError> {
    let ova = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("ova"));
    // The package's files: name → where they are (unpacked into `staging`, for an OVA).
    let (descriptor_name, files) = if ova { unpack(path, staging)? } else { beside(path)? };
    let text = read_small(&files[&descriptor_name])?;
    let d = parse(&text).map_err(|e| refused(path, e.to_string()))?;
    let mut notes = check_manifest(path, &descriptor_name, &files, &d)?;

    // The disks, in the order the hardware names them.
    let mut order: Vec<usize> = Vec::new();
    for item in d.items.iter().filter(|i| i.resource_type == 17) {
        let id = item.host_resource.as_deref().unwrap_or("");
        let id = id.rsplit('/').next().unwrap_or("");
        if let Some(at) = d.disks.iter().position(|(disk, _, _)| disk == id)
            && !order.contains(&at)
        {
            order.push(at);
        }
    }
    let rest: Vec<usize> = (0..d.disks.len()).filter(|i| !order.contains(i)).collect();
    order.extend(rest);
    let mut converted = Vec::new();
    for (n, &at) in order.iter().enumerate() {
        let (id, file_ref, uri) = &d.disks[at];
        let href = d.files.get(file_ref).ok_or_else(|| {
            refused(path, format!("its disk {id} names a file {file_ref:?} it does not list"))
        })?;
        let href = plain_name(path, href)?;
        let source = files.get(&href).ok_or_else(|| {
            refused(path, format!("its disk {id} is in {href}, which the package does not hold"))
        })?;
        let format = qemu_format(uri).ok_or_else(|| {
            refused(path, format!("its disk {id} is in a format Vessel does not know ({uri})"))
        })?;
        let dest = staging.join(format!("disk{n}.qcow2"));
        let size = convert_in(path, source, format, &dest)?;
        converted.push((dest, size));
    }

    // The VM.
    let uuid = uuid::Uuid::new_v4();
    let cpus = d.items.iter().find(|i| i.resource_type == 3);
    let vcpus = cpus.and_then(|i| i.quantity).unwrap_or(1).clamp(1, 254) as u32;
    let memory = d.items.iter().find(|i| i.resource_type == 4);
    let memory_mib = memory
        .and_then(|i| mebibytes(i.quantity?, i.units.as_deref()))
        .unwrap_or(1024)
        .clamp(16, 1 << 20);
    let nics: Vec<&Item> = d.items.iter().filter(|i| i.resource_type == 10).collect();
    let network = match nics.first() {
        Some(_) => Network::Nat {
            mac: crate::library::mac_for(&uuid),
            forwards: Vec::new(),
            host_access: false,
        },
        None => Network::None,
    };
    if nics.len() > 1 {
        notes.push(format!("it had {} network cards; Vessel gives it one, on NAT", nics.len()));
    }
    if let Some(model) = nics.first().and_then(|n| n.subtype.clone()) {
        notes.push(format!(
            "its {model} network card is virtio-net here: Linux has the driver; Windows needs \
             the virtio-win drivers"
        ));
    }
    if !converted.is_empty() {
        notes.push(
            "its disks are virtio-blk here: Linux boots from them; Windows needs the \
             virtio-win storage driver, installed before it was exported"
                .into(),
        );
    }
    for item in &d.items {
        let what = match item.resource_type {
            14 => "a floppy drive",
            21 => "a serial port",
            22 => "a parallel port",
            23 => "a USB controller",
            35 => "a sound card",
            _ => continue,
        };
        notes.push(format!("it had {what}, which Vessel does not give it"));
    }
    let name = unique_name(library, d.name.as_deref().unwrap_or("Imported VM"));
    let config = VmConfig {
        schema_version: SCHEMA_VERSION,
        uuid,
        name: name.clone(),
        os: os_id(&d),
        vcpus,
        memory_mib,
        boot: if d.efi { Boot::Uefi } else { Boot::Bios(Firmware::default()) }.into(),
        disks: (0..converted.len())
            .map(|n| Disk {
                file: PathBuf::from(format!("disks/disk{n}.qcow2")),
                format: DiskFormat::Qcow2,
                size_bytes: converted[n].1,
                read_only: false,
                extra: Extra::new(),
            })
            .collect(),
        cdrom: Cdrom::default(),
        network: network.into(),
        display: Display::FollowWindow.into(),
        notes: d.annotation.clone().unwrap_or_default(),
        created: String::new(),
        modified: String::new(),
        extra: Extra::new(),
    };
    let bundle = library.create(config)?;
    let moved = (|| -> Result<(), ForeignError> {
        for (n, (file, _)) in converted.iter().enumerate() {
            let to = bundle.inside(Path::new(&format!("disks/disk{n}.qcow2")))?;
            std::fs::rename(file, &to).map_err(io_err(&to))?;
        }
        Ok(())
    })();
    if let Err(e) = moved {
        let _ = std::fs::remove_dir_all(bundle.root());
        return Err(e);
    }
    Ok(Imported { bundle: Bundle::open(bundle.root())?, notes })
}

/// A name for the VM not taken in `library`: `name`, else `name 2`, `name 3`, …
fn unique_name(library: &Library, name: &str) -> String {
    let base: String = name.chars().filter(|c| !c.is_control() && *c != '/').take(48).collect();
    let base = match base.trim() {
        "" => "Imported VM".to_string(),
        b => b.to_string(),
    };
    let taken =
        |n: &str| library.find(n).is_ok() || library.dir().join(format!("{n}.vessel")).exists();
    (1..1000)
        .map(|i| if i == 1 { base.clone() } else { format!("{base} {i}") })
        .find(|n| !taken(n))
        .unwrap_or(base)
}

fn read_small(path: &Path) -> Result<String, ForeignError> {
    let file = crate::files::open_regular(path, false).map_err(io_err(path))?;
    crate::safe_write::read_small(file).map_err(|e| refused(path, format!("it is unreadable: {e}")))
}

/// Unpacks the OVA at `path` into `staging`: the descriptor's name, and every file.
fn unpack(
    path: &Path,
    staging: &Path,
) -> Result<(String, BTreeMap<String, PathBuf>), ForeignError> {
    let file = crate::files::open_regular(path, false).map_err(io_err(path))?;
    let mut archive = tar::Archive::new(std::io::BufReader::new(file));
    let not_ova = |why: String| refused(path, why);
    let mut files = BTreeMap::new();
    let mut descriptor = None;
    for entry in archive.entries().map_err(|e| not_ova(format!("it is not an OVA (a tar): {e}")))? {
        let mut entry = entry.map_err(|e| not_ova(format!("its tar is damaged: {e}")))?;
        let name = entry.path().map_err(|e| not_ova(e.to_string()))?.to_string_lossy().into_owned();
        let name = plain_name(path, name.trim_start_matches("./"))?;
        if entry.header().entry_type() != tar::EntryType::Regular {
            return Err(not_ova(format!("{name} is not a regular file")));
        }
        if files.len() >= 4 * MAX_DISKS {
            return Err(not_ova("it holds too many files".into()));
        }
        let dest = staging.join(&name);
        // Refused if the OVA holds the same name twice.
        let mut out =
            crate::files::create_private(&dest).map_err(|e| not_ova(format!("{name}: {e}")))?;
        std::io::copy(&mut entry, &mut out).map_err(|e| not_ova(format!("{name}: {e}")))?;
        if name.to_ascii_lowercase().ends_with(".ovf") && descriptor.is_none() {
            descriptor = Some(name.clone());
        }
        files.insert(name, dest);
    }
    let descriptor = descriptor.ok_or_else(|| not_ova("it holds no .ovf descriptor".into()))?;
    Ok((descriptor, files))
}

/// The files beside the descriptor at `path` (an OVF folder): the descriptor's name, and
/// each regular file of the folder (no symlinks).
fn beside(path: &Path) -> Result<(String, BTreeMap<String, PathBuf>), ForeignError> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(dir).map_err(io_err(dir))?.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_file()) {
            files.insert(entry.file_name().to_string_lossy().into_owned(), entry.path());
        }
    }
    if !files.contains_key(&name) {
        return Err(refused(path, "it is not a regular file".into()));
    }
    Ok((name, files))
}

/// Checks the package's manifest (`NAME.mf`), if it has one: every file it lists is there
/// with its checksum, and it lists the descriptor and every disk. What to tell the user.
fn check_manifest(
    path: &Path,
    descriptor: &str,
    files: &BTreeMap<String, PathBuf>,
    d: &Descriptor,
) -> Result<Vec<String>, ForeignError> {
    let stem = descriptor.rsplit_once('.').map_or(descriptor, |(s, _)| s);
    let Some(mf) = files.get(&format!("{stem}.mf")) else {
        return Ok(vec!["it has no manifest, so its files' checksums were not checked".into()]);
    };
    let text = read_small(mf)?;
    let mut listed = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let parsed = line.split_once('(').and_then(|(algo, rest)| {
            let (name, hash) = rest.split_once(")=")?;
            Some((
                algo.trim().to_ascii_uppercase(),
                name.to_string(),
                hash.trim().to_ascii_lowercase(),
            ))
        });
        let Some((algo, name, hash)) = parsed else {
            return Err(refused(path, format!("its manifest has a line it cannot read: {line:?}")));
        };
        let name = plain_name(path, &name)?;
        let file = files.get(&name).ok_or_else(|| {
            refused(path, format!("its manifest lists {name}, which it does not hold"))
        })?;
        let found = match algo.as_str() {
            "SHA1" => hash_file::<sha1::Sha1>(file)?,
            "SHA256" => hash_file::<sha2::Sha256>(file)?,
            "SHA512" => hash_file::<sha2::Sha512>(file)?,
            other => {
                return Err(refused(
                    path,
                    format!("its manifest uses {other}, which Vessel does not check"),
                ));
            }
        };
        if found != hash {
            return Err(refused(
                path,
                format!("{name} does not match its checksum in the manifest: it is damaged"),
            ));
        }
        listed.push(name);
    }
    let mut needed = vec![descriptor.to_string()];
    needed.extend(d.disks.iter().filter_map(|(_, file_ref, _)| d.files.get(file_ref).cloned()));
    for name in needed {
        if !listed.contains(&name) {
            return Err(refused(path, format!("its manifest does not list {name}")));
        }
    }
    Ok(Vec::new())
}

/// Converts the package's disk `source` (in `format`) to qcow2 at `dest`; its size. An
/// image that reads another file is refused before qemu-img opens it for the copy.
fn convert_in(
    package: &Path,
    source: &Path,
    format: &str,
    dest: &Path,
) -> Result<u64, ForeignError> {
    let shown = source.file_name().unwrap_or_default().to_string_lossy().into_owned();
    let names_others = || {
        refused(
            package,
            format!(
                "{shown} names other files for its data (a VMDK descriptor, a differencing or \
                 external-data image); Vessel imports only self-contained disks"
            ),
        )
    };
    if format == "vmdk" {
        // A sparse VMDK (monolithicSparse, streamOptimized) holds its own data. A text
        // descriptor names extent files, and so does a sparse header of capacity 0 with a
        // descriptor embedded (qemu then reads that descriptor): either could name any file
        // of this computer, or a FIFO to hang on. Refused before qemu-img opens anything.
        let mut header = [0u8; 20];
        let mut file = crate::files::open_regular(source, false).map_err(io_err(source))?;
        let sparse = file.read_exact(&mut header).is_ok() && &header[..4] == b"KDMV";
        let capacity = u64::from_le_bytes(header[12..20].try_into().expect("8 bytes"));
        if !sparse || capacity == 0 {
            return Err(names_others());
        }
    }
    let info = Command::new("qemu-img")
        .args(["info", "--output=json", "-f", format])
        .arg(source)
        .output()
        .map_err(|e| ForeignError::Convert {
            disk: source.to_path_buf(),
            why: format!("{e} (install qemu-utils)"),
        })?;
    if !info.status.success() {
        return Err(refused(
            package,
            format!(
                "{shown} is not a {format} image: {}",
                String::from_utf8_lossy(&info.stderr).trim()
            ),
        ));
    }
    let info: serde_json::Value = serde_json::from_slice(&info.stdout)
        .map_err(|e| refused(package, format!("qemu-img's account of {shown}: {e}")))?;
    // Whatever qemu would read besides the file itself: a parent, an external data file,
    // extents elsewhere.
    let data = &info["format-specific"]["data"];
    let extents_elsewhere = data["extents"].as_array().is_some_and(|extents| {
        extents.iter().any(|e| e["filename"].as_str() != Some(&*source.to_string_lossy()))
    });
    if info.get("backing-filename").is_some()
        || data.get("data-file").is_some()
        || extents_elsewhere
    {
        return Err(names_others());
    }
    let size = info["virtual-size"]
        .as_u64()
        .filter(|n| (1..=crate::disks::MAX_DISK_BYTES).contains(n))
        .ok_or_else(|| refused(package, format!("{shown} has no size Vessel can take")))?;
    let out = Command::new("qemu-img")
        .args(["convert", "-q", "-f", format, "-O", "qcow2"])
        .arg(source)
        .arg(dest)
        .output()
        .map_err(|e| ForeignError::Convert { disk: source.to_path_buf(), why: e.to_string() })?;
    if !out.status.success() {
        let _ = std::fs::remove_file(dest);
        return Err(ForeignError::Convert {
            disk: source.to_path_buf(),
            why: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest;

    fn scratch(name: &str) -> PathBuf {
        crate::test_util::scratch("ovf-import", name)
    }

    fn qemu(program: &str, args: &[&str]) -> String {
        let out = Command::new(program).args(args).output().expect("qemu-utils is installed");
        assert!(
            out.status.success(),
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A streamOptimized VMDK made by qemu-img from a qcow2 image with data in it; the
    /// qcow2 image too.
    fn vmdk(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let qcow2 = dir.join(format!("{name}.qcow2"));
        let vmdk = dir.join(format!("{name}.vmdk"));
        let q = qcow2.to_str().unwrap();
        qemu("qemu-img", &["create", "-q", "-f", "qcow2", q, "16M"]);
        qemu("qemu-io", &["-f", "qcow2", "-c", "write -P 0x3c 1M 512k", q]);
        let v = vmdk.to_str().unwrap();
        qemu(
            "qemu-img",
            &["convert", "-f", "qcow2", "-O", "vmdk", "-o", "subformat=streamOptimized", q, v],
        );
        (qcow2, vmdk)
    }

    fn hex<H: Digest>(bytes: &[u8]) -> String {
        H::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
    }

    /// An OVA of `files` (name, bytes), in that order; names as given, even those a tar
    /// writer refuses (`..`).
    fn ova(path: &Path, files: &[(&str, Vec<u8>)]) {
        let mut tar = tar::Builder::new(std::fs::File::create(path).unwrap());
        for (name, bytes) in files {
            let mut header = tar::Header::new_ustar();
            header.set_size(bytes.len() as u64);
            header.set_mode(0o644);
            header.set_entry_type(tar::EntryType::Regular);
            header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
            header.set_cksum();
            tar.append(&header, &bytes[..]).unwrap();
        }
        tar.finish().unwrap();
    }

    /// A descriptor in VirtualBox's style (OVF 1.0): rasd Items for everything, its own
    /// Machine section, a BIOS, an E1000 on NAT, a disk on SATA, a sound card.
    fn virtualbox_ovf(vmdk_size: u64) -> String {
        format!(
            r#"<?xml version="1.0"?>
<Envelope ovf:version="1.0" xml:lang="en-US" xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:vbox="http://www.virtualbox.org/ovf/machine">
  <References>
    <File ovf:id="file1" ovf:href="Box-disk001.vmdk" ovf:size="{vmdk_size}"/>
  </References>
  <DiskSection>
    <Info>List of the virtual disks used in the package</Info>
    <Disk ovf:capacity="16777216" ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/>
  </DiskSection>
  <NetworkSection>
    <Info>Logical networks used in the package</Info>
    <Network ovf:name="NAT"><Description>Logical network used by this appliance.</Description></Network>
  </NetworkSection>
  <VirtualSystem ovf:id="Box">
    <Info>A virtual machine</Info>
    <OperatingSystemSection ovf:id="96">
      <Info>The kind of installed guest operating system</Info>
      <Description>Debian_64</Description>
      <vbox:OSType ovf:required="false">Debian_64</vbox:OSType>
    </OperatingSystemSection>
    <VirtualHardwareSection>
      <Info>Virtual hardware requirements for a virtual machine</Info>
      <System>
        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>
        <vssd:InstanceID>0</vssd:InstanceID>
        <vssd:VirtualSystemIdentifier>Box</vssd:VirtualSystemIdentifier>
        <vssd:VirtualSystemType>virtualbox-2.2</vssd:VirtualSystemType>
      </System>
      <Item><rasd:Caption>2 virtual CPU</rasd:Caption><rasd:ElementName>2 virtual CPU</rasd:ElementName><rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>2</rasd:VirtualQuantity></Item>
      <Item><rasd:AllocationUnits>MegaBytes</rasd:AllocationUnits><rasd:ElementName>1536 MB of memory</rasd:ElementName><rasd:InstanceID>2</rasd:InstanceID><rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>1536</rasd:VirtualQuantity></Item>
      <Item><rasd:Address>0</rasd:Address><rasd:ElementName>sataController0</rasd:ElementName><rasd:InstanceID>3</rasd:InstanceID><rasd:ResourceSubType>AHCI</rasd:ResourceSubType><rasd:ResourceType>20</rasd:ResourceType></Item>
      <Item><rasd:AutomaticAllocation>true</rasd:AutomaticAllocation><rasd:Connection>NAT</rasd:Connection><rasd:ElementName>Ethernet adapter on 'NAT'</rasd:ElementName><rasd:InstanceID>5</rasd:InstanceID><rasd:ResourceSubType>E1000</rasd:ResourceSubType><rasd:ResourceType>10</rasd:ResourceType></Item>
      <Item ovf:required="false"><rasd:AddressOnParent>3</rasd:AddressOnParent><rasd:AutomaticAllocation>false</rasd:AutomaticAllocation><rasd:ElementName>sound</rasd:ElementName><rasd:InstanceID>6</rasd:InstanceID><rasd:ResourceSubType>ensoniq1371</rasd:ResourceSubType><rasd:ResourceType>35</rasd:ResourceType></Item>
      <Item><rasd:AddressOnParent>0</rasd:AddressOnParent><rasd:ElementName>disk1</rasd:ElementName><rasd:HostResource>/disk/vmdisk1</rasd:HostResource><rasd:InstanceID>7</rasd:InstanceID><rasd:Parent>3</rasd:Parent><rasd:ResourceType>17</rasd:ResourceType></Item>
    </VirtualHardwareSection>
    <vbox:Machine ovf:required="false" version="1.16-linux" uuid="{{0b4dd6e7-4a0e-4a40-a2df-fed3c3d4b9c1}}" name="Box" OSType="Debian_64">
      <ovf:Info>Complete VirtualBox machine configuration in VirtualBox format</ovf:Info>
      <Hardware><Firmware type="BIOS"/></Hardware>
    </vbox:Machine>
  </VirtualSystem>
</Envelope>
"#
        )
    }

    /// A descriptor in VMware's style (OVF 1.0): an LSI Logic SCSI disk, a VMXNET3, a USB
    /// controller, UEFI in VMware's own config.
    fn vmware_ovf(vmdk_size: u64) -> String {
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<Envelope vmw:buildId="build-1" xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:cim="http://schemas.dmtf.org/wbem/wscim/1/common" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:vmw="http://www.vmware.com/schema/ovf" xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <References>
    <File ovf:href="web-disk1.vmdk" ovf:id="file1" ovf:size="{vmdk_size}"/>
  </References>
  <DiskSection>
    <Info>Virtual disk information</Info>
    <Disk ovf:capacity="16" ovf:capacityAllocationUnits="byte * 2^20" ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized" ovf:populatedSize="524288"/>
  </DiskSection>
  <NetworkSection>
    <Info>The list of logical networks</Info>
    <Network ovf:name="nat"><Description>The nat network</Description></Network>
  </NetworkSection>
  <VirtualSystem ovf:id="web">
    <Info>A virtual machine</Info>
    <Name>web &amp; db</Name>
    <OperatingSystemSection ovf:id="94" vmw:osType="ubuntu64Guest">
      <Info>The kind of installed guest operating system</Info>
    </OperatingSystemSection>
    <VirtualHardwareSection>
      <Info>Virtual hardware requirements</Info>
      <System>
        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>
        <vssd:InstanceID>0</vssd:InstanceID>
        <vssd:VirtualSystemIdentifier>web</vssd:VirtualSystemIdentifier>
        <vssd:VirtualSystemType>vmx-19</vssd:VirtualSystemType>
      </System>
      <Item><rasd:AllocationUnits>hertz * 10^6</rasd:AllocationUnits><rasd:Description>Number of Virtual CPUs</rasd:Description><rasd:ElementName>4 virtual CPU(s)</rasd:ElementName><rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>4</rasd:VirtualQuantity></Item>
      <Item><rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits><rasd:Description>Memory Size</rasd:Description><rasd:ElementName>4096MB of memory</rasd:ElementName><rasd:InstanceID>2</rasd:InstanceID><rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>4096</rasd:VirtualQuantity></Item>
      <Item><rasd:Address>0</rasd:Address><rasd:Description>SCSI Controller</rasd:Description><rasd:ElementName>SCSI controller 0</rasd:ElementName><rasd:InstanceID>3</rasd:InstanceID><rasd:ResourceSubType>lsilogic</rasd:ResourceSubType><rasd:ResourceType>6</rasd:ResourceType></Item>
      <Item ovf:required="false"><rasd:Address>0</rasd:Address><rasd:Description>USB Controller (EHCI)</rasd:Description><rasd:ElementName>USB controller</rasd:ElementName><rasd:InstanceID>4</rasd:InstanceID><rasd:ResourceSubType>vmware.usb.ehci</rasd:ResourceSubType><rasd:ResourceType>23</rasd:ResourceType></Item>
      <Item><rasd:AddressOnParent>0</rasd:AddressOnParent><rasd:ElementName>Hard disk 1</rasd:ElementName><rasd:HostResource>ovf:/disk/vmdisk1</rasd:HostResource><rasd:InstanceID>5</rasd:InstanceID><rasd:Parent>3</rasd:Parent><rasd:ResourceType>17</rasd:ResourceType></Item>
      <Item><rasd:AddressOnParent>7</rasd:AddressOnParent><rasd:AutomaticAllocation>true</rasd:AutomaticAllocation><rasd:Connection>nat</rasd:Connection><rasd:Description>VmxNet3 ethernet adapter on "nat"</rasd:Description><rasd:ElementName>Network adapter 1</rasd:ElementName><rasd:InstanceID>6</rasd:InstanceID><rasd:ResourceSubType>VmxNet3</rasd:ResourceSubType><rasd:ResourceType>10</rasd:ResourceType></Item>
      <vmw:Config ovf:required="false" vmw:key="firmware" vmw:value="efi"/>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
"#
        )
    }

    fn compare(a: &Path, a_format: &str, b: &Path) -> String {
        let out = Command::new("qemu-img")
            .args(["compare", "-f", a_format, "-F", "qcow2"])
            .arg(a)
            .arg(b)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    #[test]
    fn ovas_laid_out_as_virtualbox_and_vmware_write_them_import() {
        let dir = scratch("styles");
        let lib = Library::open(&dir.join("lib")).unwrap();
        let (qcow2, disk) = vmdk(&dir, "source");
        let bytes = std::fs::read(&disk).unwrap();

        // VirtualBox: SHA-1 manifest.
        let ovf = virtualbox_ovf(bytes.len() as u64);
        let mf = format!(
            "SHA1(Box.ovf)= {}\nSHA1(Box-disk001.vmdk)= {}\n",
            hex::<sha1::Sha1>(ovf.as_bytes()),
            hex::<sha1::Sha1>(&bytes)
        );
        let path = dir.join("box.ova");
        ova(
            &path,
            &[
                ("Box.ovf", ovf.into_bytes()),
                ("Box.mf", mf.into_bytes()),
                ("Box-disk001.vmdk", bytes.clone()),
            ],
        );
        let Imported { bundle, notes } = import(&path, &lib).unwrap();
        let c = &bundle.config;
        assert_eq!(
            (c.name.as_str(), c.os.as_str(), c.vcpus, c.memory_mib),
            ("Box", "debian", 2, 1536)
        );
        assert!(matches!(c.boot.value, Boot::Bios(_)));
        assert!(matches!(c.network.value, Network::Nat { .. }));
        assert_eq!(c.disks.len(), 1);
        assert_eq!(c.disks[0].size_bytes, 16 << 20);
        let imported = bundle.root().join(&c.disks[0].file);
        assert!(compare(&qcow2, "qcow2", &imported).contains("identical"));
        let notes = notes.join("\n");
        assert!(notes.contains("E1000") && notes.contains("sound card"), "{notes}");

        // VMware: SHA-256 manifest, UEFI, a USB controller.
        let ovf = vmware_ovf(bytes.len() as u64);
        let mf = format!(
            "SHA256(web.ovf)= {}\nSHA256(web-disk1.vmdk)= {}\n",
            hex::<sha2::Sha256>(ovf.as_bytes()),
            hex::<sha2::Sha256>(&bytes)
        );
        let path = dir.join("web.ova");
        ova(
            &path,
            &[
                ("web.ovf", ovf.into_bytes()),
                ("web.mf", mf.into_bytes()),
                ("web-disk1.vmdk", bytes),
            ],
        );
        let Imported { bundle, notes } = import(&path, &lib).unwrap();
        let c = &bundle.config;
        assert_eq!(
            (c.name.as_str(), c.os.as_str(), c.vcpus, c.memory_mib),
            ("web & db", "ubuntu", 4, 4096)
        );
        assert!(matches!(c.boot.value, Boot::Uefi));
        let imported = bundle.root().join(&c.disks[0].file);
        assert!(compare(&qcow2, "qcow2", &imported).contains("identical"));
        let notes = notes.join("\n");
        assert!(notes.contains("VmxNet3") && notes.contains("USB controller"), "{notes}");
        // The same again: another name.
        let again = import(&path, &lib).unwrap();
        assert_eq!(again.bundle.config.name, "web & db 2");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_vessel_ova_comes_back_as_it_went() {
        let dir = scratch("roundtrip");
        let lib = Library::open(&dir.join("lib")).unwrap();
        let (qcow2, _) = vmdk(&dir, "source");
        let mut config = crate::config::tests::full();
        config.boot = Boot::Uefi.into();
        config.disks.truncate(1);
        config.disks[0].size_bytes = 16 << 20;
        let bundle = lib.create(config).unwrap();
        std::fs::copy(&qcow2, bundle.resolve(Path::new("disks/system.qcow2"))).unwrap();
        let path = dir.join("out.ova");
        super::super::ovf::export(&lib, &bundle, &path, super::super::ovf::Packaging::Ova).unwrap();
        let other = Library::open(&dir.join("other")).unwrap();
        let Imported { bundle: back, .. } = import(&path, &other).unwrap();
        let (a, b) = (&bundle.config, &back.config);
        assert_eq!(
            (&a.name, &a.os, a.vcpus, a.memory_mib),
            (&b.name, &b.os, b.vcpus, b.memory_mib)
        );
        assert_eq!(b.boot.value, Boot::Uefi);
        assert_eq!(b.notes, a.notes);
        let imported = back.root().join(&b.disks[0].file);
        assert!(compare(&qcow2, "qcow2", &imported).contains("identical"));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn hostile_packages_are_refused_and_leave_nothing() {
        let dir = scratch("hostile");
        let lib = Library::open(&dir.join("lib")).unwrap();
        let (_, disk) = vmdk(&dir, "source");
        let bytes = std::fs::read(&disk).unwrap();
        let ovf = virtualbox_ovf(bytes.len() as u64);
        let manifest = |ovf: &str, disk: &[u8]| {
            format!(
                "SHA256(Box.ovf)= {}\nSHA256(Box-disk001.vmdk)= {}\n",
                hex::<sha2::Sha256>(ovf.as_bytes()),
                hex::<sha2::Sha256>(disk)
            )
        };
        let try_import = |name: &str, files: &[(&str, Vec<u8>)]| {
            let path = dir.join(name);
            ova(&path, files);
            let error = import(&path, &lib).unwrap_err().to_string();
            let left: Vec<_> =
                std::fs::read_dir(lib.dir()).unwrap().flatten().map(|e| e.file_name()).collect();
            assert!(left.is_empty(), "{name} left {left:?}");
            error
        };

        // A disk changed after the manifest was made.
        let mut damaged = bytes.clone();
        let last = damaged.len() - 600;
        damaged[last] ^= 0xff;
        let mf = manifest(&ovf, &bytes);
        let error = try_import(
            "damaged.ova",
            &[
                ("Box.ovf", ovf.clone().into_bytes()),
                ("Box.mf", mf.into_bytes()),
                ("Box-disk001.vmdk", damaged),
            ],
        );
        assert!(error.contains("Box-disk001.vmdk does not match its checksum"), "{error}");

        // A disk outside the package.
        let outside = ovf.replace("ovf:href=\"Box-disk001.vmdk\"", "ovf:href=\"../../etc/passwd\"");
        let error = try_import(
            "outside.ova",
            &[("Box.ovf", outside.into_bytes()), ("Box-disk001.vmdk", bytes.clone())],
        );
        assert!(error.contains("outside the package"), "{error}");

        // A VMDK that is a descriptor naming a file of this computer as its data.
        let flat = "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\n\nRW 2048 FLAT \"/etc/passwd\" 0\n";
        let error = try_import(
            "flat.ova",
            &[
                ("Box.ovf", ovf.clone().into_bytes()),
                ("Box-disk001.vmdk", flat.as_bytes().to_vec()),
            ],
        );
        assert!(error.contains("names other files"), "{error}");

        // A sparse VMDK whose header says capacity 0 and embeds a descriptor naming a file
        // of this computer (qemu would read that file as the disk).
        let mut evil = vec![0u8; 1024];
        evil[..4].copy_from_slice(b"KDMV");
        evil[4..8].copy_from_slice(&1u32.to_le_bytes());
        evil[28..36].copy_from_slice(&1u64.to_le_bytes()); // descriptor at sector 1
        evil[36..44].copy_from_slice(&1u64.to_le_bytes());
        let embedded = b"# Disk DescriptorFile\nversion=1\ncreateType=\"monolithicFlat\"\nRW 1 FLAT \"/etc/hostname\" 0\n";
        evil[512..512 + embedded.len()].copy_from_slice(embedded);
        let error = try_import(
            "embedded.ova",
            &[("Box.ovf", ovf.clone().into_bytes()), ("Box-disk001.vmdk", evil)],
        );
        assert!(error.contains("names other files"), "{error}");

        // A tar entry that climbs out.
        let error = try_import(
            "climbs.ova",
            &[("Box.ovf", ovf.clone().into_bytes()), ("../evil", b"x".to_vec())],
        );
        assert!(error.contains("outside the package"), "{error}");
        assert!(!dir.join("evil").exists());

        // Not an OVF at all.
        let error = try_import("junk.ova", &[("Box.ovf", b"<Envelope><unclosed>".to_vec())]);
        assert!(error.contains("not XML") || error.contains("OVF"), "{error}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
