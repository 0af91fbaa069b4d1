//! `vessel export NAME --format ova FILE` and `--format ovf DIR`: an OVF 2.0 package
//! (DMTF DSP0243) as VMware Workstation/ESXi and VirtualBox import them: the descriptor
//! (`NAME.ovf`: References, DiskSection, NetworkSection, and a VirtualSystem with its
//! OperatingSystemSection and VirtualHardwareSection), each disk as a streamOptimized
//! VMDK, and a manifest of SHA-256 checksums (`NAME.mf`). An OVA is those files in one
//! tar, the descriptor first and the manifest next (as DSP0243 asks).
//!
//! The hardware is the one both import: an AHCI (SATA) controller with the disks, an IDE
//! controller with the CD drive, an E1000 network card on NAT (neither has virtio-net).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use sha2::Sha256;

use super::{Exported, ForeignError, common_notes, convert, file_stem, io_err, xml};
use crate::bundle::Bundle;
use crate::config::{Boot, Network};
use crate::library::Library;

/// One file (an OVA) or a folder of files (OVF).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Packaging {
    Ova,
    Ovf,
}

/// Where the descriptor says each disk's data is.
const VMDK_STREAM: &str =
    "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized";

/// Writes the stopped VM in `bundle` as an OVF package: an OVA file at `dest`, or the
/// files of one in the folder `dest` (made if missing). Nothing is overwritten; a failed
/// export leaves nothing of itself.
pub fn export(
    lib: &Library,
    bundle: &Bundle,
    dest: &Path,
    packaging: Packaging,
) -> Result<Exported, ForeignError> {
    let _not_running = bundle.lock_running()?;
    let stem = file_stem(&bundle.config.name);
    let mut exported = Exported { notes: common_notes(bundle), ..Default::default() };
    match packaging {
        Packaging::Ovf => {
            crate::files::create_dir_private(dest).map_err(io_err(dest))?;
            let written = write_package(lib, bundle, dest, &stem, &mut exported);
            if written.is_err() {
                for file in &exported.files {
                    let _ = std::fs::remove_file(file);
                }
            }
            written.map(|()| exported)
        }
        Packaging::Ova => {
            if std::fs::symlink_metadata(dest).is_ok() {
                return Err(ForeignError::Exists(dest.to_path_buf()));
            }
            let name = dest.file_name().unwrap_or_default().to_string_lossy().into_owned();
            let staging = dest.with_file_name(format!(".{name}.partial"));
            let _ = std::fs::remove_dir_all(&staging);
            crate::files::create_dir_private(&staging).map_err(io_err(&staging))?;
            let packed = write_package(lib, bundle, &staging, &stem, &mut exported)
                .and_then(|()| pack(&exported.files, dest));
            let _ = std::fs::remove_dir_all(&staging);
            exported.files = vec![dest.to_path_buf()];
            packed.map(|()| exported)
        }
    }
}

/// Writes the descriptor, the disks and the manifest into `dir`; `exported.files` lists
/// them in the order an OVA holds them.
fn write_package(
    lib: &Library,
    bundle: &Bundle,
    dir: &Path,
    stem: &str,
    exported: &mut Exported,
) -> Result<(), ForeignError> {
    let ovf_path = dir.join(format!("{stem}.ovf"));
    let mf_path = dir.join(format!("{stem}.mf"));
    for path in [&ovf_path, &mf_path] {
        if std::fs::symlink_metadata(path).is_ok() {
            return Err(ForeignError::Exists(path.clone()));
        }
    }
    let mut disks = Vec::new();
    for (index, disk) in bundle.config.disks.iter().enumerate() {
        let dest = dir.join(format!("{stem}-disk{}.vmdk", index + 1));
        let out = ["-O", "vmdk", "-o", "subformat=streamOptimized"];
        let converted = convert(lib, bundle, disk, &dest, &out)?;
        exported.files.push(converted.path.clone());
        let size = std::fs::metadata(&dest).map_err(io_err(&dest))?.len();
        disks.push((converted, size));
    }
    let descriptor = descriptor(bundle, &disks, &mut exported.notes);
    write_new(&ovf_path, descriptor.as_bytes())?;
    exported.files.insert(0, ovf_path.clone());
    let mut manifest = String::new();
    for file in &exported.files {
        let name = file.file_name().unwrap_or_default().to_string_lossy();
        let _ = writeln!(manifest, "SHA256({name})= {}", super::hash_file::<Sha256>(file)?);
    }
    write_new(&mf_path, manifest.as_bytes())?;
    exported.files.insert(1, mf_path);
    Ok(())
}

fn write_new(path: &Path, bytes: &[u8]) -> Result<(), ForeignError> {
    let mut out = crate::files::create_private(path).map_err(io_err(path))?;
    std::io::Write::write_all(&mut out, bytes).map_err(io_err(path))
}

/// Packs `files` (descriptor, manifest, disks) into the OVA `dest`: a POSIX (ustar) tar.
fn pack(files: &[PathBuf], dest: &Path) -> Result<(), ForeignError> {
    let temp = dest.with_extension("ova.partial");
    let packed = (|| -> Result<(), ForeignError> {
        let _ = std::fs::remove_file(&temp);
        let out = crate::files::create_private(&temp).map_err(io_err(&temp))?;
        let mut tar = tar::Builder::new(std::io::BufWriter::new(out));
        for file in files {
            let mut source = crate::files::open_regular(file, false).map_err(io_err(file))?;
            let mut header = tar::Header::new_ustar();
            header.set_size(source.metadata().map_err(io_err(file))?.len());
            header.set_mode(0o644);
            header.set_mtime(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
            );
            let name = file.file_name().unwrap_or_default();
            tar.append_data(&mut header, name, &mut source).map_err(io_err(file))?;
        }
        let out = tar.into_inner().map_err(io_err(&temp))?;
        out.into_inner()
            .map_err(|e| io_err(&temp)(e.into_error()))?
            .sync_all()
            .map_err(io_err(&temp))
    })();
    match packed {
        Ok(()) => std::fs::rename(&temp, dest).map_err(io_err(dest)),
        Err(e) => {
            let _ = std::fs::remove_file(&temp);
            Err(e)
        }
    }
}

/// The guest OS as CIM (DSP8023's OperatingSystemSection id), VMware (`vmw:osType`) and
/// VirtualBox (`vbox:OSType`) name it, from Vessel's libosinfo-style id.
fn os_ids(os: &str) -> (u16, &'static str, &'static str) {
    let os = os.to_ascii_lowercase();
    if os.starts_with("debian") {
        (96, "debian11_64Guest", "Debian_64")
    } else if os.starts_with("ubuntu") {
        (94, "ubuntu64Guest", "Ubuntu_64")
    } else if os.starts_with("win11") {
        (102, "windows11_64Guest", "Windows11_64")
    } else if os.starts_with("win") {
        (102, "windows9_64Guest", "Windows10_64")
    } else if os.starts_with("fedora") {
        (101, "fedora64Guest", "Fedora_64")
    } else if ["rhel", "centos", "rocky", "alma"].iter().any(|p| os.starts_with(p)) {
        (80, "rhel9_64Guest", "RedHat_64")
    } else if os.contains("suse") || os.starts_with("sles") {
        (83, "opensuse64Guest", "OpenSUSE_64")
    } else if os.contains("linux") || os.starts_with("arch") || os.starts_with("alpine") {
        (101, "otherLinux64Guest", "Linux26_64")
    } else {
        (102, "otherGuest64", "Other_64")
    }
}

/// The OVF 2.0 descriptor of the VM, its disks converted as `disks` (file, its size).
fn descriptor(
    bundle: &Bundle,
    disks: &[(super::Converted, u64)],
    notes: &mut Vec<String>,
) -> String {
    let c = &bundle.config;
    let name = xml(&c.name);
    let mut references = String::new();
    let mut disk_section = String::new();
    for (index, (disk, size)) in disks.iter().enumerate() {
        let n = index + 1;
        let href = xml(&disk.path.file_name().unwrap_or_default().to_string_lossy());
        let _ = writeln!(
            references,
            "    <File ovf:id=\"file{n}\" ovf:href=\"{href}\" ovf:size=\"{size}\"/>"
        );
        let _ = writeln!(
            disk_section,
            "    <Disk ovf:capacity=\"{}\" ovf:capacityAllocationUnits=\"byte\" \
             ovf:diskId=\"vmdisk{n}\" ovf:fileRef=\"file{n}\" ovf:format=\"{VMDK_STREAM}\"/>",
            disk.capacity
        );
    }
    let (cim, vmware, vbox) = os_ids(&c.os);
    let nat = matches!(c.network.value, Network::Nat { .. });
    // Instance ids: 1 CPU, 2 memory, 3 SATA, 4 IDE, then the disks, the CD, the NIC.
    let mut hardware = String::new();
    let _ = write!(
        hardware,
        "      <Item>\n        <rasd:AllocationUnits>hertz * 10^6</rasd:AllocationUnits>\n        \
         <rasd:Description>Number of virtual CPUs</rasd:Description>\n        \
         <rasd:ElementName>{v} virtual CPU(s)</rasd:ElementName>\n        \
         <rasd:InstanceID>1</rasd:InstanceID>\n        <rasd:ResourceType>3</rasd:ResourceType>\n        \
         <rasd:VirtualQuantity>{v}</rasd:VirtualQuantity>\n      </Item>\n      <Item>\n        \
         <rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits>\n        \
         <rasd:Description>Memory size</rasd:Description>\n        <rasd:ElementName>{m} MB of \
         memory</rasd:ElementName>\n        <rasd:InstanceID>2</rasd:InstanceID>\n        \
         <rasd:ResourceType>4</rasd:ResourceType>\n        \
         <rasd:VirtualQuantity>{m}</rasd:VirtualQuantity>\n      </Item>\n      <Item>\n        \
         <rasd:Address>0</rasd:Address>\n        <rasd:Description>SATA \
         controller</rasd:Description>\n        <rasd:ElementName>SATA \
         controller</rasd:ElementName>\n        <rasd:InstanceID>3</rasd:InstanceID>\n        \
         <rasd:ResourceSubType>AHCI</rasd:ResourceSubType>\n        \
         <rasd:ResourceType>20</rasd:ResourceType>\n      </Item>\n      <Item>\n        \
         <rasd:Address>0</rasd:Address>\n        <rasd:Description>IDE \
         controller</rasd:Description>\n        <rasd:ElementName>IDE \
         controller</rasd:ElementName>\n        <rasd:InstanceID>4</rasd:InstanceID>\n        \
         <rasd:ResourceSubType>PIIX4</rasd:ResourceSubType>\n        \
         <rasd:ResourceType>5</rasd:ResourceType>\n      </Item>\n",
        v = c.vcpus,
        m = c.memory_mib,
    );
    let mut id = 5;
    for index in 0..disks.len() {
        let _ = write!(
            hardware,
            "      <StorageItem>\n        <sasd:AddressOnParent>{index}</sasd:AddressOnParent>\n        \
             <sasd:ElementName>Disk {n}</sasd:ElementName>\n        \
             <sasd:HostResource>ovf:/disk/vmdisk{n}</sasd:HostResource>\n        \
             <sasd:InstanceID>{id}</sasd:InstanceID>\n        <sasd:Parent>3</sasd:Parent>\n        \
             <sasd:ResourceType>17</sasd:ResourceType>\n      </StorageItem>\n",
            n = index + 1
        );
        id += 1;
    }
    let _ = write!(
        hardware,
        "      <StorageItem>\n        <sasd:AddressOnParent>0</sasd:AddressOnParent>\n        \
         <sasd:AutomaticAllocation>false</sasd:AutomaticAllocation>\n        \
         <sasd:ElementName>CD drive</sasd:ElementName>\n        \
         <sasd:InstanceID>{id}</sasd:InstanceID>\n        <sasd:Parent>4</sasd:Parent>\n        \
         <sasd:ResourceType>15</sasd:ResourceType>\n      </StorageItem>\n"
    );
    id += 1;
    if nat {
        let _ = write!(
            hardware,
            "      <EthernetPortItem>\n        \
             <epasd:AutomaticAllocation>true</epasd:AutomaticAllocation>\n        \
             <epasd:Connection>NAT</epasd:Connection>\n        <epasd:ElementName>Network \
             adapter</epasd:ElementName>\n        <epasd:InstanceID>{id}</epasd:InstanceID>\n        \
             <epasd:ResourceSubType>E1000</epasd:ResourceSubType>\n        \
             <epasd:ResourceType>10</epasd:ResourceType>\n      </EthernetPortItem>\n"
        );
        notes.push(
            "its network card is an E1000 there (neither VMware nor VirtualBox has \
             virtio-net); its disks are on SATA"
                .into(),
        );
    }
    if matches!(c.boot.value, Boot::Uefi) {
        hardware.push_str(
            "      <vmw:Config ovf:required=\"false\" vmw:key=\"firmware\" vmw:value=\"efi\"/>\n",
        );
        notes.push("it boots with UEFI: in VirtualBox, tick Enable EFI in its settings".into());
    }
    if matches!(c.boot.value, Boot::Direct { .. }) {
        notes.push(
            "it boots a kernel of its own directly, which OVF cannot say: there it boots \
             from its disk with a BIOS"
                .into(),
        );
    }
    let networks = if nat {
        "  <NetworkSection>\n    <Info>The logical networks the VM uses</Info>\n    <Network \
         ovf:name=\"NAT\">\n      <Description>NAT to the outside world</Description>\n    \
         </Network>\n  </NetworkSection>\n"
    } else {
        "  <NetworkSection>\n    <Info>The logical networks the VM uses (none)</Info>\n  \
         </NetworkSection>\n"
    };
    let annotation = match c.notes.trim() {
        "" => String::new(),
        text => format!(
            "    <AnnotationSection>\n      <Info>Notes</Info>\n      \
             <Annotation>{}</Annotation>\n    </AnnotationSection>\n",
            xml(text)
        ),
    };
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!-- Written by Vessel {version} -->\n\
         <Envelope ovf:version=\"2.0\" xml:lang=\"en-US\" \
         xmlns=\"http://schemas.dmtf.org/ovf/envelope/2\" \
         xmlns:ovf=\"http://schemas.dmtf.org/ovf/envelope/2\" \
         xmlns:rasd=\"http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData\" \
         xmlns:vssd=\"http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData\" \
         xmlns:sasd=\"http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_StorageAllocationSettingData\" \
         xmlns:epasd=\"http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_EthernetPortAllocationSettingData\" \
         xmlns:vmw=\"http://www.vmware.com/schema/ovf\" \
         xmlns:vbox=\"http://www.virtualbox.org/ovf/machine\">\n  <References>\n{references}  \
         </References>\n  <DiskSection>\n    <Info>The VM's virtual disks</Info>\n\
         {disk_section}  </DiskSection>\n{networks}  <VirtualSystem ovf:id=\"{name}\">\n    \
         <Info>A virtual machine</Info>\n    <Name>{name}</Name>\n{annotation}    \
         <OperatingSystemSection ovf:id=\"{cim}\" vmw:osType=\"{vmware}\">\n      <Info>The \
         guest operating system</Info>\n      <Description>{os}</Description>\n      \
         <vbox:OSType ovf:required=\"false\">{vbox}</vbox:OSType>\n    \
         </OperatingSystemSection>\n    <VirtualHardwareSection>\n      <Info>The VM's \
         virtual hardware</Info>\n      <System>\n        <vssd:ElementName>Virtual Hardware \
         Family</vssd:ElementName>\n        <vssd:InstanceID>0</vssd:InstanceID>\n        \
         <vssd:VirtualSystemIdentifier>{name}</vssd:VirtualSystemIdentifier>\n        \
         <vssd:VirtualSystemType>vmx-14 virtualbox-2.2</vssd:VirtualSystemType>\n      \
         </System>\n{hardware}    </VirtualHardwareSection>\n  </VirtualSystem>\n</Envelope>\n",
        version = env!("CARGO_PKG_VERSION"),
        os = xml(&c.os),
    )
}
