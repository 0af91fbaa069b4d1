//! A VM made from a disc that is not Linux boots through the BIOS (SeaBIOS): `vessel
//! start` shows the firmware's screen, mirrored to the serial console, on the terminal,
//! and the disc's boot image runs.

use std::time::Duration;

mod common;
use common::{Started, scratch, vessel};

#[test]
fn a_vm_from_a_non_linux_disc_boots_it_through_the_bios() {
    let dir = scratch("bios-boot");
    let iso = vessel_tests::firmware_hello_iso(&dir);
    let lib = dir.join("library");
    let out =
        vessel(&lib, &["create", "hello", "--iso", iso.to_str().unwrap(), "--disk-size", "0"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = vessel(&lib, &["--json", "show", "hello"]);
    let vm: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(vm["boot"]["kind"], "bios", "{vm}");
    // Quick Linux boot needs Linux on the disc.
    let out =
        vessel(&lib, &["create", "quick", "--iso", iso.to_str().unwrap(), "--boot", "quick-linux"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("has no Linux kernel"), "{err}");
    assert!(err.contains("without Quick Linux boot"), "{err}");
    assert!(!lib.join("quick.vessel").exists(), "nothing was made");

    let mut start = Started::new(&lib, "hello");
    // The boot image halts: the VM runs until it is stopped. Wait for its last word
    // (SeaBIOS's own lines interleave with its bytes), then power it off the way a user
    // would from another terminal.
    assert!(
        start.wait_until(Duration::from_secs(120), |seen| seen.contains("I!")),
        "no boot image output in 120 s: {:?}",
        start.seen()
    );
    let out = vessel(&lib, &["stop", "hello", "--force"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (status, seen, stderr) = start.finish();
    assert!(seen.contains("SeaBIOS (version"), "the firmware's banner: {seen:?}\n{stderr}");
    let after = &seen[seen.find("Booting from DVD/CD").expect("it boots the disc")..];
    let said: String = after.chars().filter(|c| "HI!".contains(*c)).take(3).collect();
    assert_eq!(said, "HI!", "the disc's boot image ran: {seen:?}");
    assert_eq!(status.code(), Some(5), "powered off on request: {stderr}");
    let _ = std::fs::remove_dir_all(dir);
}

/// The library's boot order, as a user meets it: a new VM's empty disk falls through to the
/// CD; once a disk has a system, the disk boots; `boot.order=cd,disk` boots the CD again,
/// and `boot.next=cd` does it once.
#[test]
fn the_vm_boots_its_disk_or_its_cd_as_its_boot_order_says() {
    let dir = scratch("bios-order");
    let iso = vessel_tests::firmware_hello_iso(&dir);
    let lib = dir.join("library");
    let out = vessel(
        &lib,
        &["create", "pc", "--iso", iso.to_str().unwrap(), "--disk-size", "64M", "--raw"],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // What one power-on boots: "cd" or "disk", by what the boot image printed.
    let boots = |lib: &std::path::Path| -> &'static str {
        let mut start = Started::new(lib, "pc");
        let said = |seen: &str, word: &str| {
            let chars: String = seen.chars().filter(|c| word.contains(*c)).collect();
            chars.contains(word)
        };
        let done = start.wait_until(Duration::from_secs(120), |seen| {
            seen.contains("Booting from") && (said(seen, "HI!") || said(seen, "MBR!"))
        });
        let seen = start.seen();
        assert!(done, "nothing booted in 120 s: {seen:?}");
        let out = vessel(lib, &["stop", "pc", "--force"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let (status, _, _) = start.finish();
        assert_eq!(status.code(), Some(5));
        let last = &seen[seen.rfind("Booting from").unwrap()..];
        if last.starts_with("Booting from DVD/CD") { "cd" } else { "disk" }
    };
    assert_eq!(boots(&lib), "cd", "the empty disk falls through to the CD");
    // What an installer does: it writes a system with its boot sector onto the disk.
    let system = std::fs::read(vessel_tests::firmware_hello_disk(&dir)).unwrap();
    let disk = lib.join("pc.vessel/disks/disk0.raw");
    let mut file = std::fs::OpenOptions::new().write(true).open(&disk).unwrap();
    std::io::Write::write_all(&mut file, &system).unwrap();
    drop(file);
    assert_eq!(boots(&lib), "disk", "the installed system boots");
    let out = vessel(&lib, &["set", "pc", "boot.next=cd"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // A power-on whose machine cannot be built (its disk is in another machine's use)
    // leaves "next time" for the next try.
    let held = std::fs::OpenOptions::new().read(true).write(true).open(&disk).unwrap();
    vmm::devices::storage::lock::ofd_lock(&held, &disk, true).unwrap();
    let out = vessel(&lib, &["start", "pc"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("is in use by another virtual machine"), "{err}");
    drop(held);
    let out = vessel(&lib, &["--json", "show", "pc"]);
    let vm: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(vm["boot"]["next"], "cd", "still to come: {vm}");
    assert_eq!(boots(&lib), "cd", "boot from the CD next time");
    assert_eq!(boots(&lib), "disk", "and only that time");
    let out = vessel(&lib, &["set", "pc", "boot.order=cd,disk"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(boots(&lib), "cd", "the CD first");
    let _ = std::fs::remove_dir_all(dir);
}

/// `vessel start` passes the terminal's keys to the firmware: with boot.menu=true, Esc
/// typed on the terminal opens SeaBIOS's boot menu.
#[test]
fn the_boot_menu_answers_keys_typed_on_the_terminal() {
    let dir = scratch("bios-menu");
    let iso = vessel_tests::firmware_hello_iso(&dir);
    let lib = dir.join("library");
    let out = vessel(&lib, &["create", "menu", "--iso", iso.to_str().unwrap(), "--disk-size", "0"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = vessel(&lib, &["set", "menu", "boot.menu=true"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut start = Started::with_keys(&lib, "menu");
    let prompt = |seen: &str| seen.contains("Press ESC for boot menu");
    assert!(start.wait_until(Duration::from_secs(120), prompt), "{:?}", start.seen());
    start.type_keys(b"\x1b");
    let menu = |seen: &str| seen.contains("Select boot device");
    assert!(start.wait_until(Duration::from_secs(60), menu), "the menu: {:?}", start.seen());
    let out = vessel(&lib, &["stop", "menu", "--force"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (status, _, stderr) = start.finish();
    assert_eq!(status.code(), Some(5), "{stderr}");
    let _ = std::fs::remove_dir_all(dir);
}

/// The whole path of a user installing an OS: a VM made from an installer disc boots the
/// disc (its new disk is empty), the installer copies the system onto the disk and
/// reboots, and the firmware boots the installed system from the disk, then and at every
/// power-on after. QEMU does the same with the same disc and a disk of its own.
#[test]
fn an_installer_disc_installs_a_system_that_then_boots_from_the_disk() {
    let dir = scratch("bios-install");
    let iso = vessel_tests::firmware_testguest_iso(&dir, "test=install");
    let lib = dir.join("library");
    let out = vessel(&lib, &["create", "pc", "--iso", iso.to_str().unwrap(), "--disk-size", "64M"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // What one power-on shows, until the installed system powers the VM off.
    let power_on = || -> String {
        let mut start = Started::new(&lib, "pc");
        let done = start.wait_until(Duration::from_secs(240), |seen| seen.contains("INSTALLED"));
        let (status, seen, stderr) = start.finish();
        assert!(done, "the installed system did not run in 240 s: {seen:?}\n{stderr}");
        assert_eq!(status.code(), Some(0), "powered off by the guest: {seen:?}\n{stderr}");
        seen
    };
    let seen = power_on();
    let install = seen.find("INSTALL 0").expect("the installer ran");
    let cd = seen.find("Booting from DVD/CD").expect("the disc booted");
    let disk = seen.rfind("Booting from Hard Disk").expect("then the disk");
    assert!(cd < install && install < disk, "disc, install, reboot, disk: {seen:?}");
    assert_eq!(seen.matches("SeaBIOS (version").count(), 2, "the reboot ran the firmware again");
    let seen = power_on();
    assert!(!seen.contains("INSTALL 0"), "the next power-on boots the disk: {seen:?}");
    assert!(!seen.contains("Booting from DVD/CD"), "{seen:?}");

    // QEMU, as the reference: -no-reboot ends its first run at the installer's reset.
    assert!(vessel_tests::have_qemu(), "qemu-system-x86_64 is needed (tools/install-deps)");
    let disk = dir.join("qemu-disk.raw");
    std::fs::File::create(&disk).unwrap().set_len(64 << 20).unwrap();
    let drive = format!("if=none,id=disk,format=raw,file={}", disk.display());
    let device = "virtio-blk-pci,drive=disk,disable-legacy=on";
    let args = ["-cdrom", iso.to_str().unwrap(), "-drive", &drive, "-device", device];
    let first = vessel_tests::run_qemu_firmware(128, &args);
    assert!(first.contains("Booting from DVD/CD") && first.contains("INSTALL 0"), "{first}");
    let second = vessel_tests::run_qemu_firmware(128, &args);
    assert!(second.contains("Booting from Hard Disk") && second.contains("INSTALLED"), "{second}");
    let _ = std::fs::remove_dir_all(dir);
}
