//! Booting a Linux ISO (DESIGN.md §3 for why under QEMU): an ISO made from the default Linux
//! guest like distributions make theirs (xorriso, isolinux with El Torito, and a GRUB
//! configuration). With Quick Linux boot, the kernel, initrd and command line Vessel
//! takes off the disc boot under `qemu-system-x86_64 -accel tcg` with the ISO in the CD
//! drive, and Linux finds the drive as /dev/sr0 and mounts the disc. Through the BIOS (the
//! default), SeaBIOS boots the disc's ISOLINUX.

use std::path::{Path, PathBuf};
use std::process::Command;

mod common;
use common::{Started, vessel};

use vessel_tests::{default_linux_guest, have_qemu, run_qemu};
use vm_library::iso::boot_config::extract_linux_boot;

const CMDLINE: &str = "console=ttyS0 panic=-1 quiet vessel.selftest vessel.cd";

/// The default Linux guest as a bootable ISO in `dir`.
fn linux_iso(dir: &Path) -> PathBuf {
    let (kernel, initrd) = default_linux_guest();
    let tree = dir.join("tree");
    for sub in ["isolinux", "live", "boot/grub"] {
        std::fs::create_dir_all(tree.join(sub)).unwrap();
    }
    std::fs::copy(&kernel, tree.join("live/vmlinuz")).unwrap();
    std::fs::copy(&initrd, tree.join("live/initrd.gz")).unwrap();
    std::fs::copy("/usr/lib/ISOLINUX/isolinux.bin", tree.join("isolinux/isolinux.bin"))
        .expect("isolinux.bin (tools/install-deps installs isolinux)");
    std::fs::write(
        tree.join("isolinux/isolinux.cfg"),
        format!("default live\nlabel live\n  kernel /live/vmlinuz\n  append initrd=/live/initrd.gz {CMDLINE}\n"),
    )
    .unwrap();
    std::fs::write(
        tree.join("boot/grub/grub.cfg"),
        format!("menuentry 'Vessel live' {{\n  linux /live/vmlinuz {CMDLINE}\n  initrd /live/initrd.gz\n}}\n"),
    )
    .unwrap();
    let iso = dir.join("vessel-live.iso");
    let out = Command::new("xorriso")
        .args(["-as", "mkisofs", "-quiet", "-R", "-J", "-V", "VESSEL_LIVE", "-o"])
        .arg(&iso)
        .args(["-b", "isolinux/isolinux.bin", "-c", "isolinux/boot.cat"])
        .args(["-no-emul-boot", "-boot-load-size", "4", "-boot-info-table"])
        .arg(&tree)
        .output()
        .expect("xorriso");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    iso
}

#[test]
fn a_linux_iso_boots_from_the_cd_drive() {
    assert!(have_qemu(), "qemu-system-x86_64 is needed: apt-get install qemu-system-x86");
    let dir = std::env::temp_dir().join(format!("vessel-iso-boot-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let iso = linux_iso(&dir);
    let lib = dir.join("library");

    // Quick Linux boot: a VM that boots the Linux on its CD directly, with the ISO in it.
    let out = vessel(
        &lib,
        &[
            "create",
            "live",
            "--iso",
            iso.to_str().unwrap(),
            "--boot",
            "quick-linux",
            "--disk-size",
            "0",
        ],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = vessel(&lib, &["--json", "show", "live"]);
    let vm: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(vm["boot"]["kind"], "cdrom", "{vm}");
    assert_eq!(vm["cdrom"]["iso"], iso.canonicalize().unwrap().to_str().unwrap());

    // What Vessel takes off the disc at power-on (isolinux's default entry)...
    let boot = extract_linux_boot(&iso, &dir.join("cd-boot")).unwrap();
    assert_eq!(boot.entry.kernel, "/live/vmlinuz");
    assert_eq!(boot.cmdline, CMDLINE);
    let (kernel, initrd) = default_linux_guest();
    assert_eq!(std::fs::read(&boot.kernel).unwrap(), std::fs::read(kernel).unwrap());
    let initrd_bytes = std::fs::read(initrd).unwrap();
    let taken = std::fs::read(boot.initrd.as_ref().unwrap()).unwrap();
    assert_eq!(taken[..initrd_bytes.len()], initrd_bytes[..], "the initrd, padded to 4 bytes");

    // ...boots, with the ISO in the CD drive, and Linux finds the drive and the disc.
    let out = run_qemu(
        &boot.kernel,
        &boot.cmdline,
        &[
            "-initrd",
            boot.initrd.as_ref().unwrap().to_str().unwrap(),
            "-cdrom",
            iso.to_str().unwrap(),
        ],
    );
    let cd =
        out.lines().find(|l| l.starts_with("CD ")).unwrap_or_else(|| panic!("no CD line:\n{out}"));
    assert!(cd.starts_with("CD SR0 "), "{out}");
    assert!(cd.contains("live") && cd.contains("isolinux"), "the disc's files: {cd}");

    // A disc that is not Linux: `vessel start` says firmware boot is needed.
    let plain = dir.join("plain.iso");
    let tree = dir.join("plain");
    std::fs::create_dir_all(&tree).unwrap();
    std::fs::write(tree.join("README.TXT"), "hi").unwrap();
    let made = Command::new("xorriso")
        .args(["-as", "mkisofs", "-quiet", "-o"])
        .arg(&plain)
        .arg(&tree)
        .output()
        .unwrap();
    assert!(made.status.success());
    let out = vessel(&lib, &["set", "live", &format!("cdrom.iso={}", plain.display())]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = vessel(&lib, &["start", "live"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("firmware boot"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

/// The default for a Linux ISO is the BIOS: SeaBIOS boots the disc's ISOLINUX, as on a PC.
/// On a host whose KVM emulates the guest's ring 0 (PVM, these CI machines) ISOLINUX
/// stops at an instruction KVM cannot emulate, and Vessel must stop by itself and say why
/// (QEMU/KVM stops at the same place); with VT-x or AMD-V, ISOLINUX boots the kernel.
#[test]
fn a_linux_iso_boots_through_the_bios_by_default() {
    let dir = std::env::temp_dir().join(format!("vessel-iso-bios-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let iso = linux_iso(&dir);
    let lib = dir.join("library");
    let out =
        vessel(&lib, &["create", "installer", "--iso", iso.to_str().unwrap(), "--disk-size", "0"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = vessel(&lib, &["--json", "show", "installer"]);
    let vm: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(vm["boot"]["kind"], "bios", "{vm}");
    assert_eq!(vm["boot"]["order"], serde_json::json!(["disk", "cd"]), "{vm}");

    let mut start = Started::new(&lib, "installer");
    let booted = |seen: &str| seen.contains("Linux version") || seen.contains("VESSEL");
    let reached = start.wait_until(std::time::Duration::from_secs(300), |seen| {
        seen.contains("ISOLINUX") && booted(seen)
    });
    let seen = start.seen();
    assert!(seen.contains("SeaBIOS (version"), "{seen:?}");
    assert!(seen.contains("Booting from DVD/CD"), "{seen:?}");
    assert!(seen.contains("ISOLINUX"), "ISOLINUX's banner: {seen:?}");
    if reached {
        // Hardware virtualization: ISOLINUX loaded the kernel.
        let _ = vessel(&lib, &["stop", "installer", "--force"]);
        return;
    }
    let (status, _, stderr) = start.finish();
    assert!(!status.success(), "it stopped with an error: {stderr}");
    assert!(stderr.contains("could not emulate"), "says what happened: {stderr}");
    assert!(stderr.contains("VT-x"), "and what runs it: {stderr}");
    let _ = std::fs::remove_dir_all(dir);
}
