//! The library verbs (`vessel list | create | show | set | disk-grow | disk-add | rename |
//! start | stop | pause | resume | reset | clone | export | import | delete | iso-info`),
//! headless, like VMware's vmrun or VBoxManage.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use vm_library::bundle::Bundle;
use vm_library::config::DiskFormat;
use vm_library::library::{Entry, Library, default_dir};
use vm_library::validate::Host;

use vmm::devices::virtio::VirtioDevice;

use super::args::{CreateArgs, VhostUserArgs};
use crate::core::create::create_bundle;
use crate::core::launch::image_spec;
use crate::core::state::VmState;
use crate::core::units::size_text;
use crate::vmhost::client::{self, ClientError};
use crate::vmhost::protocol::{self, Reply, Request};

pub fn library(dir: Option<PathBuf>) -> anyhow::Result<Library> {
    let dir = dir.unwrap_or_else(default_dir);
    Library::open(&dir).with_context(|| format!("cannot open the VM library at {}", dir.display()))
}

/// "off", "starting", "running" or "paused" (with the VM process's pid), or why it cannot
/// be told: the run lock says whether a process runs the VM, its control socket how.
fn run_state(bundle: &Bundle) -> (String, Option<String>) {
    match bundle.running() {
        Ok(None) if crate::core::suspend::is_suspended(bundle.root()) => ("suspended".into(), None),
        Ok(None) => (VmState::Off.id().into(), None),
        Ok(Some(pid)) => match client::request(bundle.root(), &bundle.config.name, Request::Status)
        {
            Ok(Reply::Status { state, .. }) => (live_state(&state).into(), Some(pid)),
            // Locked, no socket yet: the process is still setting up.
            Err(ClientError::NotRunning { .. }) => ("starting".into(), Some(pid)),
            Ok(_) => ("running".into(), Some(pid)),
            Err(e) => (format!("unknown ({e})"), Some(pid)),
        },
        Err(e) => (format!("unknown ({e})"), None),
    }
}

/// The word for a VM process's state in `vessel list`.
fn live_state(state: &protocol::VmState) -> &'static str {
    match state {
        protocol::VmState::Starting => "starting",
        protocol::VmState::Running => "running",
        protocol::VmState::Paused => "paused",
        protocol::VmState::Stopped { .. } => "stopping",
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

pub fn create(lib: &Library, args: CreateArgs, json: bool) -> anyhow::Result<()> {
    let (bundle, guess) = create_bundle(lib, &args.into())?;
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
                .map(|d| format!(", {} disk", size_text(d.size_bytes)))
                .unwrap_or_default()
        ),
    )
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
pub(super) fn say(json: bool, value: serde_json::Value, line: String) -> anyhow::Result<()> {
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

pub fn start(lib: &Library, name: &str, detach: bool) -> anyhow::Result<i32> {
    super::remote::start(lib, name, detach)
}

/// Sends a control request to the running VM `name`; what it answered.
fn control(lib: &Library, name: &str, request: Request) -> anyhow::Result<Reply> {
    let bundle = lib.find(name)?;
    // Its control socket answers for a VM process without its run lock too: one whose
    // migration was not confirmed let the lock go and waits, paused, to be resumed or
    // powered off.
    let locked = bundle.running()?.is_some();
    match client::request(bundle.root(), &bundle.config.name, request) {
        Err(ClientError::NotRunning { .. }) if !locked => bail!("{name} is not running"),
        answer => Ok(answer?),
    }
}

pub fn stop(lib: &Library, name: &str, force: bool, json: bool) -> anyhow::Result<()> {
    let (request, asked, line) = if force {
        (Request::PowerOff, "power-off", format!("{name}: powered off"))
    } else {
        (
            Request::Shutdown,
            "acpi-shutdown",
            format!("{name}: the power button was pressed; the guest shuts down"),
        )
    };
    control(lib, name, request)?;
    say(json, serde_json::json!({ "name": name, "asked": asked }), line)
}

/// `vessel suspend`: the VM's state saved in its folder, its process ended.
pub fn suspend(lib: &Library, name: &str, json: bool) -> anyhow::Result<()> {
    let bundle = lib.find(name)?;
    save_state(lib, name, json)?;
    // Back when its process has let go of it: `vessel start` may follow at once.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while bundle.running()?.is_some() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let line = format!("{name}: suspended; `vessel start {name}` resumes it");
    say(json, serde_json::json!({ "name": name, "asked": "suspend" }), line)
}

/// `vessel screenshot NAME FILE`: what the running VM shows, as a PNG file.
pub fn screenshot(lib: &Library, name: &str, file: &Path, json: bool) -> anyhow::Result<()> {
    let bundle = lib.find(name)?;
    if bundle.running()?.is_none() {
        bail!("{name} is not running: its screen shows only while it runs (`vessel start {name}`)");
    }
    let display = client::screen(bundle.root(), name)?;
    let Some(image) = display.as_ref().and_then(crate::core::screenshot::capture_whole) else {
        bail!("{name}'s guest shows nothing on its screen yet");
    };
    let png = crate::core::screenshot::png(&image).context("cannot encode the picture as PNG")?;
    std::fs::write(file, png).with_context(|| format!("cannot write {}", file.display()))?;
    let (width, height) = image.dimensions();
    let line = format!("{name}: its screen ({width}x{height}) is in {}", file.display());
    let value = serde_json::json!({ "name": name, "file": file, "width": width, "height": height });
    say(json, value, line)
}

/// Asks the running VM `name` to save its state and stop (a suspend), saying on a
/// terminal how far its memory is.
pub(super) fn save_state(lib: &Library, name: &str, json: bool) -> anyhow::Result<()> {
    let bundle = lib.find(name)?;
    if bundle.running()?.is_none() {
        bail!("{name} is not running");
    }
    use std::io::{IsTerminal, Write};
    let show = !json && std::io::stderr().is_terminal();
    let mut shown = false;
    let progress = |reply: &crate::vmhost::protocol::Reply| {
        if let crate::vmhost::protocol::Reply::Saving { done, total } = reply
            && show
        {
            let percent = done.saturating_mul(100) / (*total).max(1);
            eprint!("\r{name}: saving its state… {percent}%");
            let _ = std::io::stderr().flush();
            shown = true;
        }
    };
    let answer = client::request_watching(bundle.root(), name, Request::Suspend, progress);
    if shown {
        eprintln!();
    }
    answer?;
    Ok(())
}

/// `vessel pause | resume | reset`.
pub fn pause_resume_reset(
    lib: &Library,
    name: &str,
    request: Request,
    json: bool,
) -> anyhow::Result<()> {
    let (asked, line) = match request {
        Request::Pause => ("pause", format!("{name}: paused")),
        Request::Resume => ("resume", format!("{name}: running")),
        _ => ("reset", format!("{name}: reset")),
    };
    control(lib, name, request)?;
    say(json, serde_json::json!({ "name": name, "asked": asked }), line)
}

pub fn set(
    lib: &Library,
    name: &str,
    settings: &[(String, String)],
    json: bool,
) -> anyhow::Result<()> {
    if crate::core::suspend::is_suspended(lib.find(name)?.root()) {
        bail!(
            "{name} is suspended, and its saved state fits its hardware as it is: `vessel start \
             {name}` resumes it (then shut it down to change its settings), or `vessel \
             discard-state {name}` discards what it was doing"
        );
    }
    let bundle = lib.edit(name, settings, &Host::this())?;
    report(&bundle, json, format!("{name}: saved"))
}

/// `vessel discard-state`: a suspended VM's saved state goes; it boots afresh next time.
pub fn discard_state(lib: &Library, name: &str, json: bool) -> anyhow::Result<()> {
    let bundle = lib.find(name)?;
    if bundle.running()?.is_some() {
        bail!("{name} is running: its saved state is its own until it ends");
    }
    if !crate::core::suspend::is_suspended(bundle.root()) {
        bail!("{name} is not suspended");
    }
    crate::core::suspend::discard(bundle.root())
        .with_context(|| format!("cannot discard {name}'s saved state"))?;
    let line = format!("{name}: its suspended state is discarded; it boots afresh next time");
    say(json, serde_json::json!({ "name": name, "asked": "discard-state" }), line)
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
    snapshot: Option<&str>,
    json: bool,
) -> anyhow::Result<()> {
    let clone = match snapshot {
        Some(at) => lib.clone_snapshot(name, at, new_name, linked)?,
        None => lib.clone_vm(name, new_name, linked)?,
    };
    let how = match snapshot {
        Some(at) if linked => format!("Linked clone of {name} at snapshot {at:?}"),
        Some(at) => format!("Copy of {name} at snapshot {at:?}"),
        None if linked => format!("Linked clone of {name}"),
        None => format!("Copy of {name}"),
    };
    let line = format!("{how}: {} in {}", clone.config.name, clone.root().display());
    report(&clone, json, line)
}

pub fn export(
    lib: &Library,
    name: &str,
    dest: &Path,
    format: super::args::ExportFormat,
    json: bool,
) -> anyhow::Result<()> {
    use super::args::ExportFormat;
    use vm_library::foreign::{libvirt, ovf};
    let bundle = lib.find(name)?;
    let exported = match format {
        ExportFormat::Vessel => {
            vm_library::archive::export(&bundle, dest)?;
            let line = format!("Exported {name} to {}", dest.display());
            return say(json, serde_json::json!({ "name": name, "archive": dest }), line);
        }
        ExportFormat::Ova => ovf::export(lib, &bundle, dest, ovf::Packaging::Ova)?,
        ExportFormat::Ovf => ovf::export(lib, &bundle, dest, ovf::Packaging::Ovf)?,
        ExportFormat::Libvirt => libvirt::export(lib, &bundle, dest)?,
    };
    let mut line = format!("Exported {name} to {}", dest.display());
    for file in &exported.files {
        line.push_str(&format!("\n  {}", file.display()));
    }
    for note in &exported.notes {
        line.push_str(&format!("\nNote: {note}"));
    }
    let value = serde_json::json!({
        "name": name, "files": exported.files, "notes": exported.notes,
    });
    say(json, value, line)
}

pub fn import(lib: &Library, archive: &Path, json: bool) -> anyhow::Result<()> {
    // An OVF package (VMware, VirtualBox) by its name; anything else is Vessel's archive.
    let ovf = archive
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("ova") || e.eq_ignore_ascii_case("ovf"));
    let imported = if ovf {
        vm_library::foreign::ovf_import::import(archive, lib)?
    } else {
        vm_library::archive::import(archive, lib)?
    };
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

/// A locally administered MAC (QEMU's prefix).
const VHOST_USER_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

/// `vessel vhost-user`: one device model behind a vhost-user socket, until the frontend
/// disconnects.
pub fn vhost_user(args: VhostUserArgs) -> anyhow::Result<()> {
    let device: Box<dyn VirtioDevice> = if let Some(image) = &args.blk {
        // Only the image itself: a qcow2 image's backing file is not followed here.
        let spec = image_spec(image.clone(), args.format.into(), Vec::new());
        let chain = vm_library::disks::backing_chain(
            image,
            args.format.into(),
            &vm_library::disks::BackingPolicy::none(),
        );
        chain.context("cannot serve the disk")?;
        Box::new(
            vmm::devices::virtio::block::Block::open(&spec, args.read_only, "vessel-vhost0")
                .context("cannot open the disk")?,
        )
    } else if args.net {
        let passt = vmm::devices::net::passt::Passt::spawn(&args.forward, args.host_access)?;
        // The frontend owns the card's configuration space, MAC included; this one is only
        // what the model would report if asked.
        Box::new(vmm::devices::virtio::net::Net::new(VHOST_USER_MAC, Box::new(passt)))
    } else {
        Box::new(vmm::devices::virtio::rng::Rng)
    };
    vmm::vhost_user::serve(device, &args.socket).context("vhost-user")?;
    Ok(())
}
