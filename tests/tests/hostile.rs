//! Guests that attack the host through their devices, on the KVM path: the VMM must keep
//! them inside their VM.

use std::path::{Path, PathBuf};
use std::process::Command;

use vessel_tests::*;
use vmm::{ImageSpec, RebootPolicy, StopReason};

/// Where the test guest (hostile.c) finds the image to plant, and what it copies.
const PAYLOAD_SECTOR: usize = 2048;
const PAYLOAD_SECTORS: usize = 640;
const PROBE_SECTOR: usize = 1024;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vessel-hostile-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn qemu_img(args: &[&str]) {
    let out = Command::new("qemu-img")
        .args(args)
        .output()
        .expect("qemu-img (apt-get install qemu-utils)");
    assert!(out.status.success(), "qemu-img {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A 2 MiB raw disk holding, at PAYLOAD_SECTOR, the qcow2 image `evil` for the guest to
/// plant at its start, and a marker at PROBE_SECTOR.
fn raw_disk_with_payload(dir: &Path, evil: &Path) -> PathBuf {
    let payload = std::fs::read(evil).unwrap();
    assert!(payload.len() <= PAYLOAD_SECTORS * 512, "the qcow2 image fits the payload area");
    let mut disk = vec![0u8; 2 << 20];
    disk[PAYLOAD_SECTOR * 512..][..payload.len()].copy_from_slice(&payload);
    disk[PROBE_SECTOR * 512..][..8].copy_from_slice(b"PROBEDAT");
    let path = dir.join("disk.raw");
    std::fs::write(&path, disk).unwrap();
    path
}

fn value(out: &str, key: &str) -> u64 {
    let prefix = format!("HOSTILE {key} ");
    let line = out
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {key}:\n{out}"));
    hex(line.trim())
}

/// Boots the guest on `disk` (raw, as its configuration says): it plants the qcow2 image,
/// reboots through the in-process rebuild, and reports what it sees.
fn plant_and_reboot(disk: &Path) -> String {
    let mut spec = GuestSpec::new("blk-hostile");
    spec.on_guest_reboot = RebootPolicy::Restart;
    spec.devices.push(vmm::DeviceConfig::Block { image: ImageSpec::raw(disk), read_only: false });
    let mut run = spec.boot();
    assert!(matches!(run.expect_stopped(), StopReason::PoweredOff), "{}", run.output());
    let out = run.output();
    assert!(out.contains("HOSTILE PLANTED"), "{out}");
    assert!(!out.contains("HOSTILE FAIL"), "{out}");
    out
}

/// What the guest must see after the reboot: its own disk, byte for byte.
fn check_guest_sees_its_own_disk(out: &str, disk: &Path, planted: &[u8]) {
    assert_eq!(value(out, "CAPACITY"), 4096, "still the 2 MiB raw disk:\n{out}");
    assert_eq!(value(out, "SECTOR0"), u64::from_be_bytes(planted[..8].try_into().unwrap()));
    assert_eq!(value(out, "PROBE"), u64::from_be_bytes(*b"PROBEDAT"), "its own probe sector");
    assert_eq!(value(out, "SAME"), 1);
    let bytes = std::fs::read(disk).unwrap();
    assert_eq!(&bytes[..planted.len()], planted, "the planted image is plain data on the disk");
    let pattern: Vec<u8> = (0..512u32).map(|i| (i * 5 + 1) as u8).collect();
    assert_eq!(&bytes[PROBE_SECTOR * 512..][..512], &pattern[..], "the write reached the raw file");
}

/// The attack end to end: `evil_args` are qemu-img's arguments that make the qcow2 image
/// (at EVIL) that reads the host file VICTIM; the guest plants it on its raw disk and
/// reboots. The guest must see its own bytes and the victim must not change.
fn attack(name: &str, evil_args: &[&str]) {
    let dir = scratch(name);
    let victim = dir.join("victim");
    let evil = dir.join("evil.qcow2");
    let (victim_name, evil_name) = (victim.to_str().unwrap(), evil.to_str().unwrap());
    let args: Vec<String> = evil_args
        .iter()
        .map(|a| a.replace("VICTIM", victim_name).replace("EVIL", evil_name))
        .collect();
    let secret = vec![0x5au8; 2 << 20];
    std::fs::write(&victim, &secret).unwrap();
    qemu_img(&args.iter().map(String::as_str).collect::<Vec<_>>());
    // (Again: qemu-img empties a data file it is told of.)
    std::fs::write(&victim, &secret).unwrap();
    let planted = std::fs::read(&evil).unwrap();
    let disk = raw_disk_with_payload(&dir, &evil);
    let out = plant_and_reboot(&disk);
    check_guest_sees_its_own_disk(&out, &disk, &planted);
    assert!(std::fs::read(&victim).unwrap().iter().all(|b| *b == 0x5a), "the victim is unchanged");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_raw_disk_stays_raw_when_its_guest_writes_a_qcow2_header_naming_a_backing_file() {
    attack("backing", &["create", "-q", "-f", "qcow2", "-F", "raw", "-b", "VICTIM", "EVIL", "2M"]);
}

#[test]
fn a_raw_disk_stays_raw_when_its_guest_writes_a_qcow2_header_naming_a_data_file() {
    attack("data-file", &["create", "-q", "-f", "qcow2", "-o", "data_file=VICTIM", "EVIL", "2M"]);
}
