//! The library verbs as a script uses them: create, list, show, start, a second start,
//! stop, delete; JSON output; errors that name the problem.

mod common;
use common::{json, text, vessel};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vessel_tests::testguest_elf;

fn library(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vessel-cli-lib-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn create_test_vm(lib: &Path, name: &str, test: &str) {
    let kernel = testguest_elf();
    let cmdline = format!("test={test}");
    let out = vessel(
        lib,
        &[
            "create",
            name,
            "--kernel",
            kernel.to_str().unwrap(),
            "--cmdline",
            &cmdline,
            "--memory",
            "128M",
            "--disk-size",
            "16M",
            "--no-net",
        ],
    );
    assert!(out.status.success(), "create: {}", text(&out.stderr));
}

#[test]
fn create_list_show_delete() {
    let lib = library("basic");
    create_test_vm(&lib, "alpha", "boot");
    let list = json(&lib, &["list", "--json"]);
    assert_eq!(list[0]["name"], "alpha");
    assert_eq!(list[0]["state"], "off");
    let show = json(&lib, &["show", "alpha", "--json"]);
    assert_eq!(show["memory_mib"], 128);
    assert_eq!(show["boot"]["kind"], "direct");
    assert_eq!(show["disks"][0]["format"], "qcow2");
    let disk = lib.join("alpha.vessel/disks/disk0.qcow2");
    let check = Command::new("qemu-img").arg("check").arg("-q").arg(&disk).status().unwrap();
    assert!(check.success(), "the new disk is a clean qcow2");

    let set = vessel(&lib, &["set", "alpha", "memory_mib=256", "notes=edited by the CLI"]);
    assert!(set.status.success(), "{}", text(&set.stderr));
    assert_eq!(json(&lib, &["show", "alpha", "--json"])["memory_mib"], 256);
    let bad = vessel(&lib, &["set", "alpha", "vcpus=0"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(text(&bad.stderr).contains("vcpus: 0 vCPUs"), "{}", text(&bad.stderr));
    let grown = json(&lib, &["--json", "disk-grow", "alpha", "0", "32M"]);
    assert_eq!(grown["disks"][0]["size_bytes"], 32 << 20);
    let extra = lib.join("extra.raw");
    std::fs::File::create(&extra).unwrap().set_len(2 << 20).unwrap();
    let added =
        json(&lib, &["--json", "disk-add", "alpha", extra.to_str().unwrap(), "--read-only"]);
    assert_eq!(added["disks"][1]["file"], "disks/extra.raw");
    assert_eq!(added["disks"][1]["read_only"], true);
    assert!(vessel(&lib, &["rename", "alpha", "alpha2"]).status.success());
    assert!(lib.join("alpha2.vessel").exists());
    assert!(vessel(&lib, &["rename", "alpha2", "alpha"]).status.success());
    let again = vessel(&lib, &["create", "alpha"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(text(&again.stderr).contains("already in the library"), "{}", text(&again.stderr));
    let missing = vessel(&lib, &["show", "nope"]);
    assert!(text(&missing.stderr).contains("no VM named \"nope\""), "{}", text(&missing.stderr));
    let clone = json(&lib, &["clone", "alpha", "beta", "--linked", "--json"]);
    assert_eq!(clone["name"], "beta");
    assert_eq!(clone["state"], "off");
    let list = json(&lib, &["list", "--json"]);
    assert_eq!(list[1]["name"], "beta");
    assert_ne!(list[0]["uuid"], list[1]["uuid"]);
    let info = Command::new("qemu-img")
        .arg("info")
        .arg(lib.join("beta.vessel/disks/disk0.qcow2"))
        .output()
        .unwrap();
    assert!(text(&info.stdout).contains("disk0.qcow2.base"), "{}", text(&info.stdout));
    let unconfirmed = vessel(&lib, &["delete", "alpha"]);
    assert!(text(&unconfirmed.stderr).contains("--yes"));
    assert!(lib.join("alpha.vessel").exists());
    // Backup and restore into another library.
    let archive = lib.join("alpha.tar");
    let exported = vessel(&lib, &["export", "alpha", archive.to_str().unwrap()]);
    assert!(exported.status.success(), "{}", text(&exported.stderr));
    let other = library("restored");
    let imported = vessel(&other, &["import", archive.to_str().unwrap()]);
    assert!(imported.status.success(), "{}", text(&imported.stderr));
    assert_eq!(json(&other, &["show", "alpha", "--json"])["uuid"], list[0]["uuid"]);
    let linked = vessel(&lib, &["export", "beta", "/tmp/never.tar"]);
    assert!(text(&linked.stderr).contains("linked clone"), "{}", text(&linked.stderr));
    // For other hypervisors: a linked clone goes flattened, as a libvirt domain; an OVA
    // comes back as a new VM.
    let domain = lib.join("beta-libvirt");
    let out = vessel(&lib, &["export", "beta", domain.to_str().unwrap(), "--format", "libvirt"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let valid =
        Command::new("virt-xml-validate").arg(domain.join("beta.xml")).arg("domain").status();
    assert!(valid.unwrap().success());
    let ova = lib.join("alpha.ova");
    let out =
        vessel(&lib, &["--json", "export", "alpha", ova.to_str().unwrap(), "--format", "ova"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let said: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(said["files"], serde_json::json!([ova]));
    let again = library("from-ova");
    let imported = vessel(&again, &["import", ova.to_str().unwrap()]);
    assert!(imported.status.success(), "{}", text(&imported.stderr));
    let shown = json(&again, &["show", "alpha", "--json"]);
    assert_ne!(shown["uuid"], list[0]["uuid"], "a new VM");
    let _ = std::fs::remove_dir_all(again);
    // Backups: a point, listed, verified, restored as a new VM.
    let out = vessel(&lib, &["backup", "alpha"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(json(&lib, &["backups", "alpha", "--json"]).as_array().unwrap().len(), 1);
    let out = vessel(&lib, &["backup", "verify", "alpha"]);
    assert!(text(&out.stdout).contains("every chunk matches"), "{}", text(&out.stderr));
    let out = vessel(&lib, &["restore", "alpha", "--as", "alpha again"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_ne!(json(&lib, &["show", "alpha again", "--json"])["uuid"], list[0]["uuid"]);
    assert!(vessel(&lib, &["delete", "alpha again", "--yes"]).status.success());
    let _ = std::fs::remove_dir_all(other);
    let in_use = vessel(&lib, &["delete", "alpha", "--yes"]);
    assert!(
        text(&in_use.stderr).contains("\"beta\" is a linked clone"),
        "{}",
        text(&in_use.stderr)
    );
    assert_eq!(json(&lib, &["delete", "beta", "--yes", "--json"])["deleted"], true);
    assert!(vessel(&lib, &["delete", "alpha", "--yes"]).status.success());
    assert!(!lib.join("alpha.vessel").exists());
    assert_eq!(json(&lib, &["list", "--json"]), serde_json::json!([]));
    let _ = std::fs::remove_dir_all(lib);
}

#[test]
fn a_vm_starts_once_and_stops_on_request() {
    let lib = library("run");
    create_test_vm(&lib, "runner", "powerbutton");
    let mut start = Command::new(env!("CARGO_BIN_EXE_vessel"))
        .arg("--library")
        .arg(&lib)
        .args(["start", "runner"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut console = BufReader::new(start.stdout.take().unwrap());
    let mut line = String::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !line.contains("PWRBTN READY") {
        line.clear();
        assert!(console.read_line(&mut line).unwrap() > 0, "the guest's console ended");
        assert!(Instant::now() < deadline);
    }
    let list = json(&lib, &["list", "--json"]);
    assert_eq!(list[0]["state"], "running");
    // The VM lives in a process of its own, `vessel-vm`, which `vessel start` started.
    let pid = list[0]["pid"].as_str().unwrap().to_string();
    assert_ne!(pid, start.id().to_string());
    let program = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    assert_eq!(program, std::fs::canonicalize(env!("CARGO_BIN_EXE_vessel-vm")).unwrap());

    let second = vessel(&lib, &["start", "runner"]);
    assert_eq!(second.status.code(), Some(1));
    let err = text(&second.stderr);
    assert!(err.contains(&format!("already running (pid {pid})")), "{err}");

    // Pause and resume through the VM's control socket.
    let paused = vessel(&lib, &["pause", "runner"]);
    assert!(paused.status.success(), "{}", text(&paused.stderr));
    assert_eq!(json(&lib, &["list", "--json"])[0]["state"], "paused");
    let resumed = vessel(&lib, &["resume", "runner"]);
    assert!(resumed.status.success(), "{}", text(&resumed.stderr));
    assert_eq!(json(&lib, &["list", "--json"])[0]["state"], "running");

    let stop = vessel(&lib, &["stop", "runner"]);
    assert!(stop.status.success(), "{}", text(&stop.stderr));
    let status = start.wait().unwrap();
    assert_eq!(status.code(), Some(0), "the guest powered off after the power button");
    let deadline = Instant::now() + Duration::from_secs(10);
    while json(&lib, &["list", "--json"])[0]["state"] != "off" {
        assert!(Instant::now() < deadline, "the VM process still holds the VM");
        std::thread::sleep(Duration::from_millis(20));
    }
    let not_running = vessel(&lib, &["stop", "runner"]);
    assert!(text(&not_running.stderr).contains("not running"));
    let _ = std::fs::remove_dir_all(lib);
}

#[test]
fn a_damaged_vm_is_listed_with_the_reason_and_refuses_to_start() {
    let lib = library("damaged");
    create_test_vm(&lib, "broken", "boot");
    let config = lib.join("broken.vessel/vessel.toml");
    std::fs::write(&config, "schema_version = 1\nname = \"broken\"\n").unwrap();
    let list = json(&lib, &["list", "--json"]);
    assert_eq!(list[0]["state"], "inaccessible");
    assert!(list[0]["reason"].as_str().unwrap().contains("missing field"), "{list}");
    let plain = vessel(&lib, &["list"]);
    assert!(text(&plain.stdout).contains("inaccessible"));

    create_test_vm(&lib, "nokernel", "boot");
    std::fs::remove_file(lib.join("nokernel.vessel/boot/kernel")).unwrap();
    let start = vessel(&lib, &["start", "nokernel"]);
    assert_eq!(start.status.code(), Some(1));
    assert!(text(&start.stderr).contains("boot.kernel"), "{}", text(&start.stderr));
    let _ = std::fs::remove_dir_all(lib);
}

#[test]
fn iso_info_reads_what_distributions_build() {
    let dir = library("iso");
    let tree = dir.join("tree");
    std::fs::create_dir_all(tree.join("isolinux")).unwrap();
    std::fs::create_dir_all(tree.join("live")).unwrap();
    std::fs::write(
        tree.join("isolinux/isolinux.cfg"),
        "default live\nlabel live\n  kernel /live/vmlinuz\n  append initrd=/live/initrd.img boot=live quiet\n",
    )
    .unwrap();
    std::fs::write(tree.join("isolinux/isolinux.bin"), [0u8; 2048]).unwrap();
    std::fs::write(tree.join("live/vmlinuz"), b"kernel").unwrap();
    std::fs::write(tree.join("live/initrd.img"), b"initrd").unwrap();
    let iso = dir.join("debian.iso");
    let made = Command::new("xorriso")
        .args(["-as", "mkisofs", "-quiet", "-V", "Debian 12.8.0 amd64 n", "-J", "-R", "-o"])
        .arg(&iso)
        .args(["-b", "isolinux/isolinux.bin", "-c", "isolinux/boot.cat", "-no-emul-boot"])
        .arg(&tree)
        .status()
        .expect("xorriso is needed: apt-get install xorriso");
    assert!(made.success());
    let info = json(&dir, &["iso-info", iso.to_str().unwrap(), "--json"]);
    assert_eq!(info["volume_id"], "Debian 12.8.0 amd64 n");
    assert_eq!(info["boot"][0]["platform"], "bios");
    assert_eq!(info["linux"]["kernel"], "/live/vmlinuz");
    assert_eq!(info["linux"]["initrds"][0], "/live/initrd.img");
    assert_eq!(info["linux"]["cmdline"], "boot=live quiet");
    assert_eq!(info["os"]["id"], "debian12");
    let plain = vessel(&dir, &["iso-info", iso.to_str().unwrap()]);
    assert!(text(&plain.stdout).contains("Debian 12 (debian12)"), "{}", text(&plain.stdout));
    // A VM made for the ISO takes the detected OS and its recommendations.
    let show = json(
        &dir,
        &["--json", "create", "deb", "--iso", iso.to_str().unwrap(), "--disk-size", "0"],
    );
    assert_eq!(show["os"], "debian12");
    assert_eq!(
        show["vcpus"],
        info["os"]["vcpus"]
            .as_u64()
            .unwrap()
            .min(std::thread::available_parallelism().unwrap().get() as u64)
    );
    assert_eq!(show["cdrom"]["iso"], iso.canonicalize().unwrap().to_str().unwrap());
    // Every ISO boots through the BIOS unless Quick Linux boot is asked for: the disk, then
    // the CD. The order, the boot menu and a one-time CD boot are settings.
    assert_eq!(
        show["boot"],
        serde_json::json!({"kind": "bios", "order": ["disk", "cd"], "menu": false})
    );
    let set = |change: &str| vessel(&dir, &["set", "deb", change]);
    assert!(set("boot.order=cd,disk").status.success());
    assert!(set("boot.next=cd").status.success());
    assert!(set("boot.menu=true").status.success());
    let show = json(&dir, &["--json", "show", "deb"]);
    assert_eq!(
        show["boot"],
        serde_json::json!({"kind": "bios", "order": ["cd", "disk"], "menu": true, "next": "cd"})
    );
    let bad = set("boot.order=cd,floppy");
    assert!(!bad.status.success());
    assert!(text(&bad.stderr).contains("\"floppy\" is not a boot device"), "{}", text(&bad.stderr));
    assert_eq!(
        json(&dir, &["--json", "show", "deb"])["boot"]["order"],
        serde_json::json!(["cd", "disk"])
    );
    let quick = vessel(
        &dir,
        &[
            "--json",
            "create",
            "quick",
            "--iso",
            iso.to_str().unwrap(),
            "--boot",
            "quick-linux",
            "--disk-size",
            "0",
        ],
    );
    assert!(quick.status.success(), "{}", text(&quick.stderr));
    assert_eq!(json(&dir, &["--json", "show", "quick"])["boot"]["kind"], "cdrom");
    let not_iso = vessel(&dir, &["iso-info", "/etc/hostname"]);
    assert_eq!(not_iso.status.code(), Some(1));
    assert!(text(&not_iso.stderr).contains("not an ISO 9660 image"), "{}", text(&not_iso.stderr));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn disk_add_refuses_images_that_read_host_files_and_never_guesses() {
    let lib = library("disk-add");
    create_test_vm(&lib, "vm", "boot");
    let dir = lib.join("outside");
    std::fs::create_dir_all(&dir).unwrap();
    let secret = dir.join("secret.raw");
    std::fs::write(&secret, vec![9u8; 1 << 20]).unwrap();
    let overlay = dir.join("overlay.qcow2");
    let made = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
        .args([&secret, &overlay])
        .status()
        .expect("qemu-img (apt-get install qemu-utils)");
    assert!(made.success());
    let out = vessel(&lib, &["disk-add", "vm", overlay.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("secret.raw") && err.contains("qemu-img convert"), "{err}");
    assert!(!lib.join("vm.vessel/disks/overlay.qcow2").exists(), "nothing copied");
    // A file named raw that starts like a qcow2 image: the user must say which it is.
    let disguised = dir.join("disguised.img");
    std::fs::copy(&overlay, &disguised).unwrap();
    let out = vessel(&lib, &["disk-add", "vm", disguised.to_str().unwrap()]);
    assert!(text(&out.stderr).contains("--format"), "{}", text(&out.stderr));
    let out =
        vessel(&lib, &["--json", "disk-add", "vm", disguised.to_str().unwrap(), "--format", "raw"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let show = json(&lib, &["show", "vm", "--json"]);
    assert_eq!(show["disks"][1]["format"], "raw");
    let _ = std::fs::remove_dir_all(&lib);
}

#[test]
fn host_access_is_off_until_set_and_forwards_keep_their_address() {
    let lib = library("network");
    let out = vessel(
        &lib,
        &[
            "create",
            "net",
            "--disk-size",
            "0",
            "--forward",
            "tcp:2222:22",
            "--forward",
            "tcp:0.0.0.0:8080:80",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let show = json(&lib, &["show", "net", "--json"]);
    assert_eq!(show["network"]["host_access"], serde_json::Value::Null, "off by default");
    assert_eq!(show["network"]["forwards"][0]["address"], serde_json::Value::Null, "loopback");
    assert_eq!(show["network"]["forwards"][1]["address"], "0.0.0.0");
    let set = vessel(&lib, &["set", "net", "network.host_access=true"]);
    assert!(set.status.success(), "{}", text(&set.stderr));
    assert_eq!(json(&lib, &["show", "net", "--json"])["network"]["host_access"], true);
    let _ = std::fs::remove_dir_all(&lib);
}
