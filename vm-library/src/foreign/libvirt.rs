//! `vessel export NAME --format libvirt DIR`: a libvirt domain (`NAME.xml`, which
//! `virsh define` takes and OpenStack, Proxmox and oVirt import) next to the VM's disks
//! as standalone qcow2 images. The machine is an i440fx PC (`pc`), as Vessel's is: its CD
//! on IDE, its disks, network card, GPU, input and RNG virtio; UEFI or BIOS as the VM
//! boots. The NIC joins libvirt's `default` network (NAT, as Vessel's).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::{Exported, ForeignError, common_notes, convert, file_stem, io_err, xml};
use crate::bundle::Bundle;
use crate::config::{Boot, BootDevice, Network};
use crate::library::Library;

/// Writes the stopped VM in `bundle` as a libvirt domain into the folder `dir` (made if
/// missing; nothing in it is overwritten).
pub fn export(lib: &Library, bundle: &Bundle, dir: &Path) -> Result<Exported, ForeignError> {
    let _not_running = bundle.lock_running()?;
    crate::files::create_dir_private(dir).map_err(io_err(dir))?;
    let dir = std::fs::canonicalize(dir).map_err(io_err(dir))?;
    let c = &bundle.config;
    let stem = file_stem(&c.name);
    let xml_path = dir.join(format!("{stem}.xml"));
    if std::fs::symlink_metadata(&xml_path).is_ok() {
        return Err(ForeignError::Exists(xml_path));
    }
    let mut exported = Exported { notes: common_notes(bundle), ..Default::default() };
    let written = write_all(lib, bundle, &dir, &stem, &xml_path, &mut exported);
    if written.is_err() {
        // Nothing half-made stays: only what this export wrote goes.
        for file in &exported.files {
            let _ = std::fs::remove_file(file);
        }
    }
    written.map(|()| exported)
}

fn write_all(
    lib: &Library,
    bundle: &Bundle,
    dir: &Path,
    stem: &str,
    xml_path: &Path,
    exported: &mut Exported,
) -> Result<(), ForeignError> {
    let c = &bundle.config;
    let mut disks = String::new();
    for (index, disk) in c.disks.iter().enumerate() {
        let dest = dir.join(format!("{stem}-disk{index}.qcow2"));
        let converted = convert(lib, bundle, disk, &dest, &["-O", "qcow2"])?;
        exported.files.push(converted.path.clone());
        let target = format!("vd{}", (b'a' + (index as u8 % 26)) as char);
        let _ = write!(
            disks,
            "    <disk type='file' device='disk'>\n      <driver name='qemu' type='qcow2' \
             discard='unmap'/>\n      <source file='{}'/>\n      <target dev='{target}' \
             bus='virtio'/>\n{}    </disk>\n",
            xml(&converted.path.to_string_lossy()),
            if disk.read_only { "      <readonly/>\n" } else { "" }
        );
    }
    let os = os_section(bundle, dir, stem, exported)?;
    let nic = match &c.network.value {
        Network::Nat { mac, .. } => format!(
            "    <interface type='network'>\n      <mac address='{}'/>\n      <source \
             network='default'/>\n      <model type='virtio'/>\n    </interface>\n",
            xml(mac)
        ),
        Network::None => String::new(),
    };
    let description = match c.notes.trim() {
        "" => String::new(),
        notes => format!("  <description>{}</description>\n", xml(notes)),
    };
    let domain = format!(
        "<domain type='kvm'>\n  <name>{name}</name>\n  <uuid>{uuid}</uuid>\n{description}  \
         <memory unit='MiB'>{mem}</memory>\n  <currentMemory unit='MiB'>{mem}</currentMemory>\n  \
         <vcpu placement='static'>{vcpus}</vcpu>\n{os}  <features>\n    <acpi/>\n    \
         <apic/>\n  </features>\n  <cpu mode='host-model' check='partial'/>\n  <clock \
         offset='utc'/>\n  <on_poweroff>destroy</on_poweroff>\n  \
         <on_reboot>restart</on_reboot>\n  <on_crash>destroy</on_crash>\n  <devices>\n{disks}    \
         <disk type='file' device='cdrom'>\n      <driver name='qemu' type='raw'/>\n      \
         <target dev='hdc' bus='ide'/>\n      <readonly/>\n    </disk>\n{nic}    <serial \
         type='pty'>\n      <target port='0'/>\n    </serial>\n    <console type='pty'>\n      \
         <target type='serial' port='0'/>\n    </console>\n    <input type='tablet' \
         bus='virtio'/>\n    <input type='keyboard' bus='virtio'/>\n    <graphics type='vnc' \
         port='-1' autoport='yes'/>\n    <video>\n      <model type='virtio' heads='1' \
         primary='yes'/>\n    </video>\n    <rng model='virtio'>\n      <backend \
         model='random'>/dev/urandom</backend>\n    </rng>\n  </devices>\n</domain>\n",
        name = xml(&c.name),
        uuid = c.uuid,
        mem = c.memory_mib,
        vcpus = c.vcpus,
    );
    let mut out = crate::files::create_private(xml_path).map_err(io_err(xml_path))?;
    exported.files.push(xml_path.to_path_buf());
    std::io::Write::write_all(&mut out, domain.as_bytes()).map_err(io_err(xml_path))?;
    exported.notes.push(format!(
        "the domain names its disks by their paths here ({}): if they move, change the \
         <source file=…> lines",
        dir.display()
    ));
    Ok(())
}

/// The `<os>` section: firmware, and what boots (a kernel of the VM's, copied beside).
fn os_section(
    bundle: &Bundle,
    dir: &Path,
    stem: &str,
    exported: &mut Exported,
) -> Result<String, ForeignError> {
    let machine = "    <type arch='x86_64' machine='pc'>hvm</type>\n";
    let boot = |order: &[BootDevice]| -> String {
        order
            .iter()
            .map(|d| match d {
                BootDevice::Disk => "    <boot dev='hd'/>\n",
                BootDevice::Cd => "    <boot dev='cdrom'/>\n",
            })
            .collect()
    };
    Ok(match &bundle.config.boot.value {
        Boot::Uefi => {
            format!("  <os firmware='efi'>\n{machine}{}  </os>\n", boot(&BootDevice::ALL))
        }
        Boot::Bios(fw) => format!(
            "  <os>\n{machine}{}{}  </os>\n",
            boot(&fw.order),
            if fw.menu { "    <bootmenu enable='yes'/>\n" } else { "" }
        ),
        Boot::Cdrom => format!("  <os>\n{machine}{}  </os>\n", boot(&[BootDevice::Cd])),
        Boot::Direct { kernel, initrd, cmdline } => {
            let mut copy = |file: &Path, what: &str| -> Result<PathBuf, ForeignError> {
                let from = bundle.inside(file)?;
                let to = dir.join(format!("{stem}-{what}"));
                if std::fs::symlink_metadata(&to).is_ok() {
                    return Err(ForeignError::Exists(to));
                }
                let mut source = crate::files::open_regular(&from, false).map_err(io_err(&from))?;
                let mut dest = crate::files::create_private(&to).map_err(io_err(&to))?;
                exported.files.push(to.clone());
                std::io::copy(&mut source, &mut dest).map_err(io_err(&to))?;
                Ok(to)
            };
            let mut os = format!("  <os>\n{machine}");
            let kernel = copy(kernel, "kernel")?;
            let _ = writeln!(os, "    <kernel>{}</kernel>", xml(&kernel.to_string_lossy()));
            if let Some(initrd) = initrd {
                let initrd = copy(initrd, "initrd")?;
                let _ = writeln!(os, "    <initrd>{}</initrd>", xml(&initrd.to_string_lossy()));
            }
            if !cmdline.is_empty() {
                let _ = writeln!(os, "    <cmdline>{}</cmdline>", xml(cmdline));
            }
            os.push_str("  </os>\n");
            os
        }
    })
}
