//! `vessel backup` of a running VM: the journal guest (a sector per tick on its disk, the
//! tick printed once the write completed) backed up again and again as it writes; each
//! point holds exactly its disk at one moment, the guest runs on through every backup,
//! increments read what changed (after the VM process was killed too), and a backup
//! killed part-way harms nothing.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::journal::{
    Entry, convert, disk_now, journal, sectors, state_of, sum_after, wait_state,
};
use common::{Started, json, text, vessel};
use vessel_tests::testguest_elf;

const MIB: u64 = 1 << 20;
/// `vm_library::backup::CHUNK`.
const CHUNK: u64 = 4 * MIB;
/// Where the journal guest's sectors are (it writes far fewer ticks than this).
const JOURNAL_AREA: u64 = 32 * MIB;

/// One at a time: each test's backups hash hundreds of MiB (a debug build's SHA-256 is
/// slow), and two at once on two cores starve the guests' terminal clients.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn create_journal(lib: &Path, disk: &str) {
    let kernel = testguest_elf();
    let args = ["create", "Journal", "--kernel", kernel.to_str().unwrap(), "--cmdline"];
    let more = ["test=journal", "--memory", "64M", "--disk-size", disk, "--no-net"];
    let out = vessel(lib, &[&args[..], &more[..]].concat());
    assert!(out.status.success(), "create: {}", text(&out.stderr));
}

/// The last tick the guest printed (its write to disk had completed).
fn last_tick(run: &Started) -> u64 {
    journal(&run.seen()).last().map_or(0, |e| e.tick)
}

/// The frozen image of point `id` of the set `set`: the disk at that point, as the VM's
/// tree keeps it until the set's next backup.
fn frozen_image(lib: &Path, set: &Path, id: &str) -> PathBuf {
    let point: toml::Value = toml::from_str(
        &std::fs::read_to_string(set.join("points").join(format!("{id}.toml"))).unwrap(),
    )
    .unwrap();
    let node = point["node"].as_str().expect("the point names its node");
    let folder = lib.join("Journal.vessel");
    let config = folder.join("snapshots").join(node).join("vessel.toml");
    let config: toml::Value = toml::from_str(&std::fs::read_to_string(config).unwrap()).unwrap();
    folder.join(config["disks"][0]["file"].as_str().unwrap())
}

/// The journal's sectors form one moment of the guest: ticks 1 to some T, each with its
/// checksum, of one boot, nothing beyond. T.
fn one_moment(disk: &[u8], boot: u64) -> u64 {
    let mut last = 0;
    let journal = &disk[..disk.len().min(JOURNAL_AREA as usize)];
    for (sector, entry) in sectors(journal).iter().enumerate().skip(1) {
        let sector = sector as u64;
        if let Some(e) = entry {
            assert_eq!(sector, last + 1, "sector {sector} written, {} not", last + 1);
            assert_eq!(*e, Entry { tick: sector, boot, sum: sum_after(sector) });
            last = sector;
        }
    }
    last
}

fn qemu_img_compare(a: &Path, a_format: &str, b: &Path, b_format: &str) {
    let compare = Command::new("qemu-img")
        .args(["compare", "-f", a_format, "-F", b_format])
        .arg(a)
        .arg(b)
        .output()
        .expect("qemu-img is needed: apt-get install qemu-utils");
    assert!(compare.status.success(), "qemu-img compare: {}", text(&compare.stdout));
}

#[test]
fn a_running_guest_is_backed_up_as_it_writes_and_every_point_restores_exactly() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let lib = common::scratch("backup-running");
    let _vms = common::KillsVms(lib.clone());
    create_journal(&lib, "64M");
    let mut run = Started::new(&lib, "Journal");
    assert!(run.wait_until(Duration::from_secs(60), |s| journal(s).len() >= 5), "{}", run.seen());
    let boot = journal(&run.seen())[0].boot;
    let set = lib.join("backups").join("Journal");
    let kernel = std::fs::metadata(testguest_elf()).unwrap().len();

    // Three backups as it runs, each a moment between the ticks printed before and after.
    let mut points = Vec::new();
    for n in 0..3 {
        let before = last_tick(&run);
        let point = json(&lib, &["backup", "Journal", "--json"]);
        let after = last_tick(&run);
        assert!(point["paused_us"].as_u64().is_some(), "it ran: {point}");
        let number = |key: &str| point[key].as_u64().unwrap();
        let (read, unchanged, holes) = (number("read"), number("unchanged"), number("holes"));
        // The disk, and the VM's kernel (read whole each time).
        assert_eq!(read + unchanged + holes, 64 * MIB + kernel, "{point}");
        if n == 0 {
            // Read whole: all but what was never written (the guest writes from the start).
            assert_eq!(unchanged, 0, "{point}");
            assert!(read >= CHUNK && holes >= 32 * MIB, "{point}");
        } else {
            // The guest writes a sector a tick, all within the first few MiB: only those
            // chunks are read, whatever the disk's size.
            assert!(point["full"].is_null(), "{point}");
            assert!(read <= 2 * CHUNK + kernel, "an increment read {read} bytes: {point}");
            assert_eq!(point["written"].as_u64().unwrap() % CHUNK, 0);
        }
        let id = point["point"].as_str().unwrap().to_string();
        let frozen = frozen_image(&lib, &set, &id);
        let bytes = convert(&frozen, "qcow2");
        let at = one_moment(&bytes, boot);
        assert!(at >= before, "point {n} lacks tick {before}, written before it: it has {at}");
        assert!(at <= after + 1, "point {n} has tick {at}, after {after}");
        let copy = lib.join(format!("point-{n}.raw"));
        std::fs::write(&copy, &bytes).unwrap();
        points.push((id, copy, at));
        runs_on(&mut run, &lib, after, boot);
    }
    let listed = json(&lib, &["backups", "Journal", "--json"]);
    assert_eq!(listed.as_array().map(Vec::len), Some(3), "{listed}");
    // With its memory, into a set of its own: suspended for it, then running again.
    let memory_set = lib.join("with-memory");
    let before = last_tick(&run);
    let args = ["backup", "Journal", "--memory", "--json", "--to", memory_set.to_str().unwrap()];
    let with_memory = json(&lib, &args);
    assert_eq!(with_memory["memory"], true, "{with_memory}");
    drop(run);
    assert_eq!(state_of(&lib, "Journal"), "running", "resumed after the backup");
    assert!(vessel(&lib, &["stop", "--force", "Journal"]).status.success());
    wait_state(&lib, "Journal", "off");
    let out = vessel(&lib, &["restore", memory_set.to_str().unwrap(), "--as", "Resumed"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(state_of(&lib, "Resumed"), "suspended");
    let mut resumed = Started::new(&lib, "Resumed");
    assert!(resumed.wait_until(Duration::from_secs(60), |s| !journal(s).is_empty()));
    let next = journal(&resumed.seen())[0];
    assert!(next.tick > before, "it goes on from the backup's point: {next:?} after {before}");
    assert_eq!((next.boot, next.sum), (boot, sum_after(next.tick)), "the same boot, its memory");
    assert!(vessel(&lib, &["stop", "--force", "Resumed"]).status.success());
    drop(resumed);
    // Its own disk holds everything the guest wrote, past the last point.
    let last = one_moment(&disk_now(&lib, "Journal"), boot);
    assert!(last > points[2].2, "{last} after {}", points[2].2);

    // Every point restores to exactly its moment (and a chunk flipped is caught).
    let verified = vessel(&lib, &["backup", "verify", "Journal"]);
    assert!(verified.status.success(), "{}", text(&verified.stderr));
    for (n, (id, copy, _)) in points.iter().enumerate() {
        let name = format!("Copy {n}");
        let out = vessel(&lib, &["restore", "Journal", "--point", id, "--as", &name]);
        assert!(out.status.success(), "restore {n}: {}", text(&out.stderr));
        let vm = json(&lib, &["show", &name, "--json"]);
        let folder = PathBuf::from(vm["path"].as_str().unwrap());
        let disk = folder.join(vm["disks"][0]["file"].as_str().unwrap());
        let format = vm["disks"][0]["format"].as_str().unwrap();
        qemu_img_compare(&disk, format, copy, "raw");
    }
    // A chunk of the newest point, which a restore takes by default.
    let newest = &points[2].0;
    let point: toml::Value = toml::from_str(
        &std::fs::read_to_string(set.join("points").join(format!("{newest}.toml"))).unwrap(),
    )
    .unwrap();
    let hash = point["disks"][0]["chunks"].as_array().unwrap()[0].as_str().unwrap().to_string();
    let chunk = set.join("chunks").join(&hash[..2]).join(&hash);
    let mut bytes = std::fs::read(&chunk).unwrap();
    bytes[7] ^= 0x40;
    std::fs::write(&chunk, bytes).unwrap();
    let name = chunk.file_name().unwrap().to_string_lossy().into_owned();
    let verified = vessel(&lib, &["backup", "verify", "Journal"]);
    assert!(!verified.status.success());
    assert!(text(&verified.stderr).contains(&name), "{}", text(&verified.stderr));
    let out = vessel(&lib, &["restore", "Journal", "--as", "Never"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains(&name), "{}", text(&out.stderr));
    assert!(!vessel(&lib, &["show", "Never"]).status.success(), "nothing was made");
    let _ = std::fs::remove_dir_all(lib);
}

/// The guest goes on past tick `after`, in the boot `boot`.
fn runs_on(run: &mut Started, lib: &Path, after: u64, boot: u64) {
    let going = |s: &str| journal(s).last().is_some_and(|e| e.tick >= after + 20);
    if !run.wait_until(Duration::from_secs(60), going) {
        let log = std::fs::read_to_string(lib.join("Journal.vessel/vessel.log"));
        panic!("the guest stopped at {after}: {}\nits log: {log:?}", run.seen());
    }
    assert_eq!(journal(&run.seen()).last().unwrap().boot, boot, "the same boot");
}

#[test]
fn a_backup_killed_part_way_leaves_the_vm_running_and_the_earlier_points_whole() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let lib = common::scratch("backup-killed");
    let _vms = common::KillsVms(lib.clone());
    // A disk with data beyond the journal, so that a set's first backup reads a while.
    create_journal(&lib, "128M");
    let disk = lib.join("Journal.vessel/disks/disk0.qcow2");
    let filled = Command::new("qemu-io")
        .args(["-f", "qcow2", "-c", "write -P 0x5a 32M 96M"])
        .arg(&disk)
        .output()
        .expect("qemu-io is needed: apt-get install qemu-utils");
    assert!(filled.status.success(), "{}", text(&filled.stderr));
    let mut run = Started::new(&lib, "Journal");
    assert!(run.wait_until(Duration::from_secs(60), |s| journal(s).len() >= 5), "{}", run.seen());
    let boot = journal(&run.seen())[0].boot;
    let first = json(&lib, &["backup", "Journal", "--json"]);
    let first_id = first["point"].as_str().unwrap().to_string();

    // Another set's first backup, killed once the disks are frozen and the copy runs.
    let other = lib.join("other-set");
    let mut killed = Command::new(env!("CARGO_BIN_EXE_vessel"))
        .arg("--library")
        .arg(&lib)
        .args(["backup", "Journal", "--to"])
        .arg(&other)
        .spawn()
        .unwrap();
    let tree = lib.join("Journal.vessel").join("snapshots").join("tree.toml");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut frozen = false;
    while Instant::now() < deadline && killed.try_wait().unwrap().is_none() {
        let set_id = std::fs::read_to_string(other.join("vessel-backup.toml"))
            .ok()
            .and_then(|t| toml::from_str::<toml::Value>(&t).ok())
            .and_then(|v| v["id"].as_str().map(str::to_string));
        let tree = std::fs::read_to_string(&tree).unwrap_or_default();
        if set_id.is_some_and(|id| tree.contains(&id)) && !tree.contains("pending") {
            frozen = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    killed.kill().unwrap();
    let status = killed.wait().unwrap();
    assert!(frozen && !status.success(), "the backup was not caught copying ({status})");
    assert_eq!(std::fs::read_dir(other.join("points")).unwrap().count(), 0, "no point made");

    // The guest runs on, the same boot; the first set is whole and goes on from its point.
    let now = last_tick(&run);
    runs_on(&mut run, &lib, now, boot);
    assert_eq!(state_of(&lib, "Journal"), "running");
    let verified = vessel(&lib, &["backup", "verify", "Journal"]);
    assert!(verified.status.success(), "{}", text(&verified.stderr));
    let next = json(&lib, &["backup", "Journal", "--json"]);
    assert!(next["full"].is_null(), "it went on from the first point: {next}");
    assert!(next["read"].as_u64().unwrap() <= 2 * CHUNK + MIB, "{next}");
    let listed = json(&lib, &["backups", "Journal", "--json"]);
    let ids: Vec<_> = listed.as_array().unwrap().iter().map(|p| p["id"].clone()).collect();
    assert_eq!(ids, [first["point"].clone(), next["point"].clone()]);
    let at = convert(
        &frozen_image(&lib, &lib.join("backups/Journal"), next["point"].as_str().unwrap()),
        "qcow2",
    );
    let copy = lib.join("next.raw");
    std::fs::write(&copy, &at).unwrap();
    // The VM process killed (as a crash ends it).
    let vm = json(&lib, &["show", "Journal", "--json"]);
    let pid: i32 = vm["pid"].as_str().and_then(|p| p.parse().ok()).expect("it runs");
    // SAFETY: kill(2) of the VM process this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    drop(run);
    wait_state(&lib, "Journal", "off");
    for (id, name) in [(first_id.as_str(), "First"), (next["point"].as_str().unwrap(), "Next")] {
        let out = vessel(&lib, &["restore", "Journal", "--point", id, "--as", name]);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let restored = disk_now(&lib, "Next");
    assert!(restored == at, "the point after the killed backup restores exactly");
    one_moment(&disk_now(&lib, "First"), boot);
    // After the crash the set goes on from its last point: what the guest wrote until it
    // was killed is all the next backup reads, and it restores to the disk as it is.
    let after_crash = json(&lib, &["backup", "Journal", "--json"]);
    assert!(after_crash["full"].is_null(), "{after_crash}");
    assert!(after_crash["read"].as_u64().unwrap() <= 2 * CHUNK + MIB, "{after_crash}");
    let out = vessel(&lib, &["restore", "Journal", "--as", "After crash"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(disk_now(&lib, "After crash") == disk_now(&lib, "Journal"));
    // Off now, the killed backup's images are folded away by the next one.
    let out = json(&lib, &["backup", "Journal", "--to", other.to_str().unwrap(), "--json"]);
    assert!(out["read"].as_u64().unwrap() > 0);
    let _ = std::fs::remove_dir_all(lib);
}
