//! `vessel snapshot`: a running guest snapshotted with its machine, let go on, then taken
//! back to the snapshot: its memory (a checksum of every tick so far), its disk (a sector
//! per tick) and its count go on from the snapshot's point, in the same boot.

mod common;

use std::process::Command;
use std::time::Duration;

use common::journal::{
    Entry, convert, disk_now, journal, sectors, state_of, sum_after, wait_state,
};
use common::{Started, json, text, ticks, vessel};
use vessel_tests::testguest_elf;

#[test]
fn a_running_guest_goes_back_to_its_snapshot_in_memory_and_on_disk() {
    let lib = common::scratch("snapshot-tree");
    let _vms = common::KillsVms(lib.clone());
    let kernel = testguest_elf();
    let args = ["create", "Journal", "--kernel", kernel.to_str().unwrap(), "--cmdline"];
    let more = ["test=journal", "--memory", "64M", "--disk-size", "8M", "--no-net"];
    let out = vessel(&lib, &[&args[..], &more[..]].concat());
    assert!(out.status.success(), "create: {}", text(&out.stderr));

    // Running: a snapshot with its machine; it runs on at once.
    let mut run = Started::new(&lib, "Journal");
    assert!(run.wait_until(Duration::from_secs(60), |s| journal(s).len() >= 5), "{}", run.seen());
    let out = vessel(&lib, &["snapshot", "take", "Journal", "first", "--description", "ticking"]);
    assert!(out.status.success(), "take: {}", text(&out.stderr));
    assert!(text(&out.stdout).contains("with its running state"), "{}", text(&out.stdout));
    let (_, seen, _) = run.finish();
    let at = *journal(&seen).last().unwrap();
    assert_eq!(at.sum, sum_after(at.tick), "the guest's own count is right");
    assert_eq!(state_of(&lib, "Journal"), "running", "it runs on after the snapshot");
    let tree = json(&lib, &["snapshot", "list", "Journal", "--json"]);
    let first = &tree["snapshots"][0];
    assert_eq!((first["name"].as_str(), first["memory"].as_bool()), (Some("first"), Some(true)));
    assert_eq!(first["description"], "ticking");
    assert_eq!(tree["current"], first["id"]);

    // What the disk read at the snapshot's point: the snapshot's own images, copied now.
    let folder = lib.join("Journal.vessel");
    let id = first["id"].as_str().unwrap();
    let frozen: toml::Value = toml::from_str(
        &std::fs::read_to_string(folder.join("snapshots").join(id).join("vessel.toml")).unwrap(),
    )
    .unwrap();
    let frozen = folder.join(frozen["disks"][0]["file"].as_str().unwrap());
    let at_snapshot = convert(&frozen, "qcow2");
    let copy = lib.join("at-snapshot.raw");
    std::fs::write(&copy, &at_snapshot).unwrap();

    // It goes on in the same boot, then is powered off.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(vessel(&lib, &["stop", "--force", "Journal"]).status.success());
    wait_state(&lib, "Journal", "off");
    let later = sectors(&disk_now(&lib, "Journal"));
    let newest = later.iter().flatten().max_by_key(|e| e.tick).copied().unwrap();
    assert!(newest.tick >= at.tick + 10, "it ran on after the snapshot: {newest:?} after {at:?}");
    assert_eq!(newest.boot, at.boot, "resumed, not booted again");
    assert_eq!(newest.sum, sum_after(newest.tick));
    // The snapshot's images did not change meanwhile.
    assert!(convert(&frozen, "qcow2") == at_snapshot, "the frozen image changed");

    // Reverted: suspended at the snapshot, its disk as it was then.
    let out = vessel(&lib, &["snapshot", "revert", "Journal", "first"]);
    assert!(out.status.success(), "revert: {}", text(&out.stderr));
    assert!(text(&out.stdout).contains("suspended there"), "{}", text(&out.stdout));
    assert_eq!(state_of(&lib, "Journal"), "suspended");
    let vm = json(&lib, &["show", "Journal", "--json"]);
    let disk = folder.join(vm["disks"][0]["file"].as_str().unwrap());
    let compare = Command::new("qemu-img")
        .args(["compare", "-f", "qcow2", "-F", "raw"])
        .arg(&disk)
        .arg(&copy)
        .output()
        .unwrap();
    assert!(compare.status.success(), "qemu-img compare: {}", text(&compare.stdout));
    let back = sectors(&disk_now(&lib, "Journal"));
    for (sector, entry) in back.iter().enumerate().skip(1) {
        let sector = sector as u64;
        match entry {
            Some(e) => {
                assert!(sector <= at.tick + 1, "sector {sector} written after the snapshot");
                assert_eq!(*e, Entry { tick: sector, boot: at.boot, sum: sum_after(sector) });
            }
            None => assert!(sector > at.tick, "sector {sector} of tick {} lost", at.tick),
        }
    }

    // Powered on, it goes on from the snapshot's tick, its memory's checksum following.
    let mut resumed = Started::with_keys(&lib, "Journal");
    assert!(
        resumed.wait_until(Duration::from_secs(60), |s| journal(s).len() >= 3),
        "{}",
        resumed.seen()
    );
    let next = journal(&resumed.seen())[0];
    assert!((at.tick + 1..=at.tick + 3).contains(&next.tick), "{at:?} then {next:?}");
    assert_eq!(next.boot, at.boot, "the same boot");
    assert_eq!(next.sum, sum_after(next.tick), "its memory went back with it");
    assert!(!resumed.seen().contains("VESSEL-TESTGUEST"), "{}", resumed.seen());
    resumed.type_keys(b"q");
    drop(resumed.finish());
    wait_state(&lib, "Journal", "off");

    // A second snapshot, off: no memory, below the first; renamed; the first deleted.
    let second = json(&lib, &["snapshot", "take", "Journal", "second", "--json"]);
    assert_eq!(second["memory"], false);
    assert_eq!(second["parent"].as_str(), Some(id));
    let list = vessel(&lib, &["snapshot", "list", "Journal"]);
    let listed = text(&list.stdout);
    assert!(listed.contains("* first") && listed.contains("  * second"), "{listed}");
    assert!(listed.contains("you are here"), "{listed}");
    let out = vessel(&lib, &["snapshot", "rename", "Journal", "second", "after"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let deleted = json(&lib, &["snapshot", "delete", "Journal", "first", "--json"]);
    assert_eq!(deleted["deferred"], false);
    let tree = json(&lib, &["snapshot", "list", "Journal", "--json"]);
    let names: Vec<_> =
        tree["snapshots"].as_array().unwrap().iter().map(|s| s["name"].clone()).collect();
    assert_eq!(names, ["after"]);
    let out = vessel(&lib, &["snapshot", "revert", "Journal", "first"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("no snapshot named \"first\""), "{}", text(&out.stderr));
    // Back at "after": off, its disk as it was when the guest quit.
    let before = disk_now(&lib, "Journal");
    let out = vessel(&lib, &["snapshot", "revert", "Journal", "after"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("powered off"), "{}", text(&out.stdout));
    assert!(disk_now(&lib, "Journal") == before);
    assert_eq!(state_of(&lib, "Journal"), "off");
    // A copy of the VM as it was at "after": its disk reads the same, with no snapshots.
    let out = vessel(&lib, &["clone", "Journal", "Journal copy", "--snapshot", "after"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(disk_now(&lib, "Journal copy") == before);
    let tree = json(&lib, &["snapshot", "list", "Journal copy", "--json"]);
    assert_eq!(tree["snapshots"].as_array().map(Vec::len), Some(0));
    let _ = std::fs::remove_dir_all(lib);
}

/// A VM as a user makes one from a disc: booted through the BIOS (SeaBIOS, the VGA and its
/// BIOS, fw_cfg, the BIOS area's shadow RAM), snapshotted while it runs, gone back to: it
/// goes on counting where the snapshot was, without the firmware running again.
#[test]
fn a_vm_booted_through_the_bios_goes_back_to_its_running_snapshot() {
    let dir = common::scratch("snapshot-bios");
    let lib = dir.join("library");
    let _vms = common::KillsVms(lib.clone());
    let iso = vessel_tests::firmware_testguest_iso(&dir, "test=ticks");
    let out = vessel(&lib, &["create", "pc", "--iso", iso.to_str().unwrap(), "--disk-size", "0"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut run = Started::new(&lib, "pc");
    assert!(run.wait_until(Duration::from_secs(120), |s| ticks(s).len() >= 3), "{}", run.seen());
    let out = vessel(&lib, &["snapshot", "take", "pc", "running"]);
    assert!(out.status.success(), "take: {}", text(&out.stderr));
    assert!(text(&out.stdout).contains("with its running state"), "{}", text(&out.stdout));
    let (_, seen, _) = run.finish();
    assert!(seen.contains("SeaBIOS"), "it booted through the BIOS: {seen}");
    let before = *ticks(&seen).last().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(vessel(&lib, &["stop", "--force", "pc"]).status.success());
    wait_state(&lib, "pc", "off");
    let out = vessel(&lib, &["snapshot", "revert", "pc", "running"]);
    assert!(out.status.success(), "revert: {}", text(&out.stderr));
    let mut back = Started::with_keys(&lib, "pc");
    assert!(back.wait_until(Duration::from_secs(60), |s| ticks(s).len() >= 2), "{}", back.seen());
    let after = ticks(&back.seen());
    assert!((before + 1..=before + 3).contains(&after[0]), "{before} then {after:?}");
    assert!(!back.seen().contains("SeaBIOS"), "the firmware did not run again: {}", back.seen());
    back.type_keys(b"q");
    let (status, _, stderr) = back.finish();
    assert!(status.success(), "{stderr}");
    let _ = std::fs::remove_dir_all(dir);
}
