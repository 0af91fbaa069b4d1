//! The library verbs (`vessel list | create | show | set | disk-grow | disk-add | rename |
//! start | stop | clone | export | import | delete | iso-info`), headless, like
//! VMware's vmrun or VBoxManage, and the translation of a VM's configuration into a
//! `vmm::MachineConfig` at power-on.

use std::path::{Path, PathBuf};
use vmm::display::boot_fb::FramebufferMode;

use anyhow::{Context, bail};
use vm_library::bundle::Bundle;
use vm_library::config::{
    Boot, Cdrom, Disk, DiskFormat, Display, Extra, Forward, Network, SCHEMA_VERSION, VmConfig,
};
use vm_library::iso::boot_config;
use vm_library::library::{Entry, Library, default_dir, mac_for};
use vm_library::validate::{Host, validate};
use vmm::{BootSource, DeviceConfig, MachineConfig, RebootPolicy};

use crate::cli::CreateArgs;
use crate::run::{Outcome, console};

pub fn library(dir: Option<PathBuf>) -> anyhow::Result<Library> {
    let dir = dir.unwrap_or_else(default_dir);
    Library::open(&dir).with_context(|| format!("cannot open the VM library at {}", dir.display()))
}

/// "off", "running" (with the pid) or why it cannot be told.
fn run_state(bundle: &Bundle) -> (String, Option<String>) {
    match bundle.running() {
        Ok(None) => ("off".into(), None),
        Ok(Some(pid)) => ("running".into(), Some(pid)),
        Err(e) => (format!("unknown ({e})"), None),
    }
}

pub fn list(lib: &Library, json: bool) -> anyhow::Result<()> {
    let entries = lib.list()?;
    if json {
        let items: Vec<serde_json::Value> = entries
            .iter()
            .map(|e| match e {
                Entry::Ok(b) => {
                    let (state, pid) = run_state(b);
                    serde_json::json!({
                        "name": b.config.name, "path": b.root(), "state": state, "pid": pid,
                        "uuid": b.config.uuid, "os": b.config.os,
                        "vcpus": b.config.vcpus, "memory_mib": b.config.memory_mib,
                    })
                }
                Entry::Inaccessible { path, reason } => serde_json::json!({
                    "name": e.name(), "path": path, "state": "inaccessible", "reason": reason,
                }),
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&items)?);
        return Ok(());
    }
    if entries.is_empty() {
        println!("No VMs in {} yet; `vessel create NAME` makes one.", lib.dir().display());
    }
    for e in &entries {
        match e {
            Entry::Ok(b) => {
                let (state, pid) = run_state(b);
                let pid = pid.map(|p| format!(" (pid {p})")).unwrap_or_default();
                println!(
                    "{:<24} {state}{pid:<12} {} vCPU, {} MiB   {}",
                    b.config.name,
                    b.config.vcpus,
                    b.config.memory_mib,
                    b.root().display()
                );
            }
            Entry::Inaccessible { reason, .. } => {
                println!("{:<24} inaccessible: {reason}", e.name())
            }
        }
    }
    Ok(())
}

/// The OS on `iso` and what to give it, within what this host has; and whether it has a
/// Linux kernel Vessel can boot directly.
pub fn iso_defaults(iso: &Path) -> anyhow::Result<(Option<vm_library::iso::os::OsGuess>, bool)> {
    use vm_library::iso::{Iso, boot_config, os};
    let image = Iso::open(iso)?;
    let linux = boot_config::find_linux_boot(&image)?;
    let mut guess = os::detect(image.info(), linux.is_some());
    if let Some(g) = &mut guess {
        let host = Host::this();
        g.recommended.vcpus = g.recommended.vcpus.min(host.cores);
        // Leave the host at least half its memory.
        g.recommended.memory_mib = g.recommended.memory_mib.min(host.memory_mib / 2).max(256);
    }
    Ok((guess, linux.is_some()))
}

pub fn create(lib: &Library, args: CreateArgs, json: bool) -> anyhow::Result<()> {
    let (bundle, guess) = create_bundle(lib, &args)?;
    let detected = guess.as_ref().map(|g| format!("Detected {} on the ISO\n", g.name));
    report(
        &bundle,
        json,
        format!(
            "{}Created {} in {} ({} vCPU, {} MiB{})",
            detected.unwrap_or_default(),
            bundle.config.name,
            bundle.root().display(),
            bundle.config.vcpus,
            bundle.config.memory_mib,
            bundle
                .config
                .disks
                .first()
                .map(|d| format!(", {} GiB disk", d.size_bytes >> 30))
                .unwrap_or_default()
        ),
    )
}

/// Creates the VM `args` describe in `lib` (its folder, configuration, disks and boot
/// files), or nothing at all; with the OS found on its ISO, if any. For the CLI and the
/// New VM wizard.
pub fn create_bundle(
    lib: &Library,
    args: &CreateArgs,
) -> anyhow::Result<(Bundle, Option<vm_library::iso::os::OsGuess>)> {
    let uuid = uuid::Uuid::new_v4();
    let (guess, linux_boot) = match &args.iso {
        Some(iso) => iso_defaults(iso)?,
        None => (None, false),
    };
    let recommended = guess.as_ref().map(|g| g.recommended);
    let vcpus = args.cpus.or(recommended.map(|r| r.vcpus)).unwrap_or(1);
    let memory_mib =
        args.memory.map(|m| m >> 20).or(recommended.map(|r| r.memory_mib)).unwrap_or(1024);
    let disk_size = args.disk_size.or(recommended.map(|r| r.disk_gib << 30)).unwrap_or(16 << 30);
    let boot = match &args.kernel {
        Some(_) => Boot::Direct {
            kernel: "boot/kernel".into(),
            initrd: args.initrd.as_ref().map(|_| "boot/initrd".into()),
            cmdline: args.cmdline.clone(),
        },
        // A Linux ISO boots from the CD drive (directly, its kernel taken off the disc).
        None if linux_boot => Boot::Cdrom,
        None => Boot::Bios,
    };
    let disks = if disk_size > 0 {
        let format = if args.raw { DiskFormat::Raw } else { DiskFormat::Qcow2 };
        let file = if args.raw { "disks/disk0.raw" } else { "disks/disk0.qcow2" };
        vec![Disk {
            file: file.into(),
            format,
            size_bytes: disk_size,
            read_only: false,
            extra: Extra::new(),
        }]
    } else {
        Vec::new()
    };
    let network = if args.no_net {
        Network::None
    } else {
        Network::Nat {
            mac: mac_for(&uuid),
            forwards: args
                .forward
                .iter()
                .map(|f| Forward { udp: f.udp, address: f.address, host: f.host, guest: f.guest })
                .collect(),
            host_access: false,
        }
    };
    let iso = match &args.iso {
        Some(p) => Some(std::fs::canonicalize(p).with_context(|| format!("{}", p.display()))?),
        None => None,
    };
    let config = VmConfig {
        schema_version: SCHEMA_VERSION,
        uuid,
        name: args.name.clone(),
        os: match (&guess, &args.kernel) {
            (Some(g), _) => g.id.clone(),
            (None, Some(_)) => "linux".into(),
            (None, None) => "unknown".into(),
        },
        vcpus,
        memory_mib,
        boot: boot.into(),
        disks,
        cdrom: Cdrom { iso, extra: Extra::new() },
        network: network.into(),
        display: Display::FollowWindow.into(),
        notes: String::new(),
        created: String::new(),
        modified: String::new(),
        extra: Extra::new(),
    };
    // Everything but the files the bundle will hold is checked before anything is made.
    let problems: Vec<_> = validate(&config, Path::new("/"), &Host::this())
        .into_iter()
        .filter(|p| !p.field.starts_with("disks[") && !p.field.starts_with("boot."))
        .collect();
    if !problems.is_empty() {
        bail!("{}", problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n"));
    }
    for (flag, file) in [("--kernel", &args.kernel), ("--initrd", &args.initrd)] {
        if let Some(file) = file {
            std::fs::metadata(file)
                .with_context(|| format!("{flag} {}: cannot read it", file.display()))?;
        }
    }
    let bundle = match &args.location {
        Some(dir) => {
            let bundle = Bundle::create(dir, config)?;
            if let Err(e) = lib.register(bundle.root()) {
                let _ = std::fs::remove_dir_all(bundle.root());
                return Err(e.into());
            }
            bundle
        }
        None => lib.create(config)?,
    };
    let filled = (|| -> anyhow::Result<()> {
        // Copies private to the user, as every file of a bundle.
        for (from, to) in [(&args.kernel, "boot/kernel"), (&args.initrd, "boot/initrd")] {
            if let Some(from) = from {
                vm_library::files::create_dir_private(&bundle.root().join("boot"))?;
                vm_library::disks::copy_sparse(from, &bundle.root().join(to))
                    .with_context(|| format!("cannot copy {}", from.display()))?;
            }
        }
        for disk in &bundle.config.disks {
            vm_library::disks::create(
                &bundle.resolve(&disk.file),
                disk.format,
                disk.size_bytes,
                None,
            )?;
        }
        Ok(())
    })();
    if let Err(e) = filled {
        let _ = std::fs::remove_dir_all(bundle.root());
        let _ = lib.unregister(bundle.root());
        return Err(e);
    }
    Ok((bundle, guess))
}

/// A VM as scripts see it: its configuration with its folder and run state.
fn vm_json(bundle: &Bundle) -> anyhow::Result<serde_json::Value> {
    let mut value = serde_json::to_value(&bundle.config)?;
    let (state, pid) = run_state(bundle);
    value["path"] = serde_json::json!(bundle.root());
    value["state"] = serde_json::json!(state);
    value["pid"] = serde_json::json!(pid);
    Ok(value)
}

/// Reports a VM a verb made or changed: as JSON, or the line for people.
fn report(bundle: &Bundle, json: bool, line: String) -> anyhow::Result<()> {
    say(json, vm_json(bundle)?, line)
}

/// A verb's result: `value` as JSON, or the line for people.
fn say(json: bool, value: serde_json::Value, line: String) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        println!("{line}");
    }
    Ok(())
}

pub fn show(lib: &Library, name: &str, json: bool) -> anyhow::Result<()> {
    let bundle = lib.find(name)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&vm_json(&bundle)?)?);
    } else {
        println!("# {}", bundle.root().join(vm_library::bundle::CONFIG_FILE).display());
        print!("{}", bundle.config.to_toml());
    }
    Ok(())
}

/// Where a VM that boots from its CD keeps the kernel and initrd taken off the disc.
pub const CD_BOOT_DIR: &str = "cache/cd-boot";

/// A disk image as the machine opens it: the format the configuration states, and the
/// images it reads through as the library checked them.
pub fn image_spec(
    path: PathBuf,
    format: DiskFormat,
    backing: Vec<vm_library::disks::Layer>,
) -> vmm::ImageSpec {
    let format_of = |format| match format {
        DiskFormat::Raw => vmm::ImageFormat::Raw,
        DiskFormat::Qcow2 => vmm::ImageFormat::Qcow2,
    };
    vmm::ImageSpec {
        path,
        format: format_of(format),
        backing: backing
            .into_iter()
            .map(|l| vmm::Layer { path: l.path, format: format_of(l.format) })
            .collect(),
    }
}

/// What Vessel's machine is made of, from the VM's configuration. Every file the machine
/// opens is checked here: the VM's own files inside its folder, its disks' backing files
/// under the library's policy.
pub fn machine_config(lib: &Library, bundle: &Bundle) -> anyhow::Result<MachineConfig> {
    let c = &bundle.config;
    let iso = c.cdrom.iso.as_ref().map(|i| bundle.resolve(i));
    let boot = match &c.boot.value {
        Boot::Direct { kernel, initrd, cmdline } => BootSource {
            kernel: bundle.inside(kernel)?,
            initrd: initrd.as_ref().map(|i| bundle.inside(i)).transpose()?,
            cmdline: cmdline.clone(),
        },
        Boot::Cdrom => {
            let Some(iso) = &iso else {
                bail!(
                    "{} boots from its CD drive, which is empty; attach an ISO: vessel set {} \
                     cdrom.iso=FILE",
                    c.name,
                    c.name
                );
            };
            // The disc's kernel and initrd, taken off it at every power-on (the disc may
            // have changed), into the bundle.
            let dir = bundle.inside(Path::new(CD_BOOT_DIR))?;
            let boot = boot_config::extract_linux_boot(iso, &dir)?;
            BootSource { kernel: boot.kernel, initrd: boot.initrd, cmdline: boot.cmdline }
        }
        Boot::Bios | Boot::Uefi => bail!(
            "{} boots from firmware (BIOS/UEFI), which this Vessel cannot do yet; give it a \
             Linux kernel to boot directly, or a Linux ISO to boot from its CD drive",
            c.name
        ),
    };
    // Every machine has a CD drive, empty or not, so discs can be put in while it runs.
    let mut devices = vec![DeviceConfig::Rng, DeviceConfig::CdRom { iso }];
    for disk in lib.disk_images(bundle)? {
        devices.push(DeviceConfig::Block {
            image: image_spec(disk.path, disk.format, disk.backing),
            read_only: disk.read_only,
        });
    }
    if let Network::Nat { mac, forwards, host_access } = &c.network.value {
        let mut bytes = [0u8; 6];
        for (b, part) in bytes.iter_mut().zip(mac.split(':')) {
            *b = u8::from_str_radix(part, 16).context("network.mac")?;
        }
        devices.push(DeviceConfig::Net {
            mac: bytes,
            forwards: forwards
                .iter()
                .map(|f| vmm::devices::net::passt::PortForward {
                    udp: f.udp,
                    address: f.address,
                    host: f.host,
                    guest: f.guest,
                })
                .collect(),
            host_access: *host_access,
        });
    }
    // The screen and what types into it: a GPU starting in the configured size (or
    // 1024x768 when it follows the window, which then asks for its own size), a boot
    // framebuffer for the console before the GPU driver loads, keyboard, tablet, mouse.
    let mode = match c.display.value {
        vm_library::config::Display::Fixed { width, height } => (width, height),
        vm_library::config::Display::FollowWindow => (1024, 768),
    };
    devices.push(DeviceConfig::Gpu(vmm::devices::virtio::gpu::GpuConfig {
        mode,
        ..Default::default()
    }));
    // The keyboard last: the test guest drives the last input device it finds (the app's
    // end-to-end test types into it); guests do not care about the order.
    for kind in [vmm::InputKind::Mouse, vmm::InputKind::Tablet, vmm::InputKind::Keyboard] {
        devices.push(DeviceConfig::Input(kind));
    }
    let fb = FramebufferMode { width: mode.0, height: mode.1 };
    let boot_framebuffer = Some(if fb.check().is_ok() {
        fb
    } else {
        FramebufferMode { width: 1024, height: 768 } // too large for the boot framebuffer
    });
    Ok(MachineConfig {
        vcpus: u8::try_from(c.vcpus).context("vcpus")?,
        memory_bytes: c.memory_mib << 20,
        boot,
        on_guest_reboot: RebootPolicy::Restart,
        devices,
        boot_framebuffer,
    })
}

pub fn start(lib: &Library, name: &str) -> anyhow::Result<Outcome> {
    let bundle = lib.find(name)?;
    let problems = validate(&bundle.config, bundle.root(), &Host::this());
    if !problems.is_empty() {
        bail!(
            "{} cannot start:\n{}",
            name,
            problems.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n")
        );
    }
    let config = machine_config(lib, &bundle)?;
    let _running = bundle.lock_running()?;
    console(config, None)
}

pub fn stop(lib: &Library, name: &str, force: bool, json: bool) -> anyhow::Result<()> {
    let bundle = lib.find(name)?;
    let Some(pid) = bundle.running()? else { bail!("{name} is not running") };
    let pid: libc::pid_t =
        pid.parse().with_context(|| format!("the run lock names pid {pid:?}"))?;
    let signal = if force { libc::SIGUSR1 } else { libc::SIGTERM };
    // SAFETY: kill only sends a signal; the pid comes from the VM's run lock, which its
    // holder (a `vessel start`) wrote and still holds.
    if unsafe { libc::kill(pid, signal) } != 0 {
        bail!("cannot signal pid {pid}: {}", std::io::Error::last_os_error());
    }
    let (asked, line) = if force {
        ("power-off", format!("{name}: powering off"))
    } else {
        ("acpi-shutdown", format!("{name}: the power button was pressed; the guest shuts down"))
    };
    say(json, serde_json::json!({ "name": name, "pid": pid, "asked": asked }), line)
}

pub fn set(
    lib: &Library,
    name: &str,
    settings: &[(String, String)],
    json: bool,
) -> anyhow::Result<()> {
    let bundle = lib.edit(name, settings, &Host::this())?;
    report(&bundle, json, format!("{name}: saved"))
}

pub fn disk_grow(
    lib: &Library,
    name: &str,
    index: usize,
    size: u64,
    json: bool,
) -> anyhow::Result<()> {
    let bundle = lib.grow_disk(name, index, size)?;
    report(&bundle, json, format!("{name}: disk {index} is now {} MiB", size >> 20))
}

pub fn disk_add(
    lib: &Library,
    name: &str,
    image: &Path,
    format: Option<DiskFormat>,
    read_only: bool,
    json: bool,
) -> anyhow::Result<()> {
    let bundle = lib.add_disk(name, image, format, read_only)?;
    let n = bundle.config.disks.len() - 1;
    report(&bundle, json, format!("{name}: {} attached as disk {n}", image.display()))
}

pub fn rename(lib: &Library, name: &str, new_name: &str, json: bool) -> anyhow::Result<()> {
    let bundle = lib.rename(name, new_name)?;
    let line = format!("{name} is now {} ({})", bundle.config.name, bundle.root().display());
    report(&bundle, json, line)
}

pub fn clone(
    lib: &Library,
    name: &str,
    new_name: &str,
    linked: bool,
    json: bool,
) -> anyhow::Result<()> {
    let clone = lib.clone_vm(name, new_name, linked)?;
    let how = if linked { "Linked clone" } else { "Copy" };
    let line = format!("{how} of {name}: {} in {}", clone.config.name, clone.root().display());
    report(&clone, json, line)
}

pub fn export(lib: &Library, name: &str, archive: &Path, json: bool) -> anyhow::Result<()> {
    let bundle = lib.find(name)?;
    vm_library::archive::export(&bundle, archive)?;
    let line = format!("Exported {name} to {}", archive.display());
    say(json, serde_json::json!({ "name": name, "archive": archive }), line)
}

pub fn import(lib: &Library, archive: &Path, json: bool) -> anyhow::Result<()> {
    let imported = vm_library::archive::import(archive, lib)?;
    let bundle = &imported.bundle;
    let mut line = format!("Imported {} into {}", bundle.config.name, bundle.root().display());
    for note in &imported.notes {
        line.push_str(&format!("\nNote: {note}"));
    }
    let mut value = vm_json(bundle)?;
    value["notes"] = serde_json::json!(imported.notes);
    say(json, value, line)
}

pub fn iso_info(path: &Path, json: bool) -> anyhow::Result<()> {
    use vm_library::iso::{Iso, Platform, boot_config, os};
    let iso = Iso::open(path)?;
    let info = iso.info();
    let linux = boot_config::find_linux_boot(&iso)?;
    let guess = os::detect(info, linux.is_some());
    let platform = |p: Platform| match p {
        Platform::Bios => "bios".to_string(),
        Platform::Uefi => "uefi".to_string(),
        Platform::Other(id) => format!("platform {id:#x}"),
    };
    if json {
        let value = serde_json::json!({
            "volume_id": info.volume_id, "system_id": info.system_id,
            "publisher_id": info.publisher_id, "application_id": info.application_id,
            "size_bytes": info.size_bytes, "joliet": info.joliet, "rock_ridge": info.rock_ridge,
            "boot": info.boot.iter().map(|b| serde_json::json!({
                "platform": platform(b.platform), "bootable": b.bootable,
                "emulation": b.emulation, "load_rba": b.load_rba, "sectors": b.sectors,
            })).collect::<Vec<_>>(),
            "linux": linux.as_ref().map(|l| serde_json::json!({
                "kernel": l.kernel, "initrds": l.initrds, "cmdline": l.cmdline, "config": l.config,
            })),
            "os": guess.as_ref().map(|g| serde_json::json!({
                "id": g.id, "name": g.name, "vcpus": g.recommended.vcpus,
                "memory_mib": g.recommended.memory_mib, "disk_gib": g.recommended.disk_gib,
            })),
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    println!("Volume:      {}", info.volume_id);
    println!("System:      {}", info.system_id);
    println!("Publisher:   {}", info.publisher_id);
    println!("Application: {}", info.application_id);
    println!("Size:        {} MiB", info.size_bytes >> 20);
    println!(
        "Names:       {}{}",
        if info.rock_ridge { "Rock Ridge " } else { "" },
        if info.joliet { "Joliet" } else { "" }
    );
    if info.boot.is_empty() {
        println!("Boot:        not bootable (no El Torito catalog)");
    }
    for b in &info.boot {
        println!(
            "Boot:        {}{}",
            platform(b.platform),
            if b.bootable { "" } else { " (not bootable)" }
        );
    }
    match &linux {
        Some(l) => println!(
            "Linux:       {} initrd {} cmdline {:?} (from {})",
            l.kernel,
            l.initrds.join(","),
            l.cmdline,
            l.config
        ),
        None => println!("Linux:       no isolinux/GRUB entry; this ISO needs firmware boot"),
    }
    match &guess {
        Some(g) => println!(
            "OS:          {} ({}): {} vCPUs, {} MiB, {} GiB disk recommended",
            g.name, g.id, g.recommended.vcpus, g.recommended.memory_mib, g.recommended.disk_gib
        ),
        None => println!("OS:          not recognised"),
    }
    Ok(())
}

pub fn delete(lib: &Library, name: &str, yes: bool, json: bool) -> anyhow::Result<()> {
    if !yes {
        bail!("this deletes {name} and all its disks for good; add --yes to confirm");
    }
    lib.delete(name, name)?;
    say(json, serde_json::json!({ "name": name, "deleted": true }), format!("Deleted {name}"))
}
