//! The whole of a running guest goes back with its snapshot, on the KVM path. The
//! `test=snapshot` guest keeps busy at once: ring-3 work in memory (a 1 MiB area it checks
//! and rewrites each tick, and a checksum), disk writes one after another (so one is
//! nearly always in flight when the machine stops), a virtio-gpu screen painted a column a
//! tick, a partly typed serial line, and a TSC-deadline timer that is always armed.
//!
//! Snapshotted while it runs, let go on and changed, then reverted and resumed in a fresh
//! VM process: its count, memory, disk (`qemu-img compare` against a copy taken at the
//! snapshot), screen (`vessel screenshot`), timer and typed line all go on from the
//! snapshot's point. The same through `vessel suspend` and a start. And a tree of running
//! snapshots over two branches, its middle deleted, goes back to each node exactly.

mod common;

use std::io::Write as _;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::journal::{convert, disk_now, state_of, sum_after, wait_state};
use common::{Started, json, text, vessel};
use vessel::vmhost::protocol::{self, Reply, Request};
use vessel::vmhost::{client, wire::FrameReader};
use vessel_tests::testguest_elf;

/// Sectors of the journal (the tick `t` goes into sector `t % JOURNAL`).
const JOURNAL: usize = 2048;
/// Columns of the guest's screen.
const COLUMNS: u64 = 256;

/// A "SNAP" line: tick, boot id, checksum, characters of the line typed so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Snap {
    tick: u64,
    boot: u64,
    sum: u64,
    pending: u64,
}

/// The complete "SNAP" lines printed; a "SNAP BAD" (memory or disk not as the guest left
/// them) fails the test.
fn snaps(output: &str) -> Vec<Snap> {
    assert!(!output.contains("SNAP BAD"), "the guest found its state damaged: {output}");
    let complete = &output[..output.rfind('\n').map_or(0, |i| i + 1)];
    complete
        .lines()
        .filter_map(|l| {
            let mut words = l.trim().strip_prefix("SNAP ")?.split(' ');
            let mut next = || u64::from_str_radix(words.next()?.trim(), 16).ok();
            Some(Snap { tick: next()?, boot: next()?, sum: next()?, pending: next()? })
        })
        .collect()
}

/// The last "SNAP" line (all zero before the first).
fn last(output: &str) -> Snap {
    snaps(output).last().copied().unwrap_or(Snap { tick: 0, boot: 0, sum: 0, pending: 0 })
}

/// Where a VM was saved (a snapshot's point, or a suspend): the last tick on its disk's
/// journal, the last tick printed before the save was asked for, and what the guest had.
#[derive(Clone, Debug)]
struct Point {
    disk_tick: u64,
    printed: Snap,
    /// The disk then, raw.
    disk: PathBuf,
}

/// The last tick of boot `boot` the journal of a raw image holds (an earlier boot's
/// ticks may be there too).
fn journal_end(raw: &[u8], boot: u64) -> u64 {
    let word = |s: &[u8], at: usize| u64::from_le_bytes(s[at..at + 8].try_into().unwrap());
    raw.chunks(512).take(JOURNAL).filter(|s| word(s, 8) == boot).map(|s| word(s, 0)).max().unwrap()
}

/// A run resumed from `point` goes on from it: its first tick is the one after the last
/// the disk holds (or that one, if the save came between its write and its line), in the
/// same boot, its checksum following, its typed line as it was; it did not boot again.
fn goes_on_from(seen: &str, point: &Point) -> Snap {
    let run = snaps(seen);
    let first = run[0];
    assert!(!seen.contains("VESSEL-TESTGUEST"), "it booted again: {seen}");
    let want = point.disk_tick..=point.disk_tick + 1;
    assert!(want.contains(&first.tick), "{point:?}, then {first:?}");
    assert!(first.tick > point.printed.tick, "{point:?}, then {first:?}");
    assert_eq!((first.boot, first.pending), (point.printed.boot, point.printed.pending));
    for s in &run {
        assert_eq!(s.sum, sum_after(s.tick), "its memory's checksum follows: {s:?}");
    }
    *run.last().unwrap()
}

/// The tick each column of the guest's screen shows (its low 16 bits), None where black.
fn columns(png: &Path) -> Vec<Option<u64>> {
    let image = image::open(png).unwrap().to_rgba8();
    assert_eq!(image.dimensions(), (COLUMNS as u32, 64), "{}", png.display());
    (0..COLUMNS as u32)
        .map(|x| {
            let [r, g, b, _] = image.get_pixel(x, 32).0;
            match r {
                0x80 => Some(u64::from(g) << 8 | u64::from(b)),
                0 if g == 0 && b == 0 => None,
                _ => panic!("column {x} of {} is {r:02x}{g:02x}{b:02x}", png.display()),
            }
        })
        .collect()
}

/// The tick N in `lo..=hi` the screen shows the guest's drawing up to: each column the
/// last tick up to N painted into it, black if none.
fn screen_tick(columns: &[Option<u64>], lo: u64, hi: u64) -> Option<u64> {
    (lo..=hi).find(|&n| {
        columns.iter().enumerate().all(|(x, shown)| {
            let x = x as u64;
            let painted = (n >= x).then(|| n - (n - x) % COLUMNS).filter(|&t| t >= 1);
            *shown == painted.map(|t| t & 0xffff)
        })
    })
}

/// `vessel screenshot` while the guest runs on `seen`: the screen must be its drawing
/// up to a tick printed meanwhile.
fn screen_follows(lib: &Path, name: &str, seen: impl Fn() -> String) -> u64 {
    let lo = last(&seen()).tick;
    let file = lib.join("screen.png");
    let out = vessel(lib, &["screenshot", name, file.to_str().unwrap()]);
    assert!(out.status.success(), "screenshot: {}", text(&out.stderr));
    let hi = last(&seen()).tick + 1;
    let shown = columns(&file);
    screen_tick(&shown, lo, hi).unwrap_or_else(|| {
        panic!("the screen is not the guest's drawing at {lo}..={hi}: {shown:?}")
    })
}

/// A running VM's serial port over its control socket, as the window has it.
struct Console {
    stream: UnixStream,
    seen: Arc<Mutex<Vec<u8>>>,
}

impl Console {
    fn attach(lib: &Path, name: &str) -> Console {
        let root = folder(lib, name);
        let mut stream = client::connect(&root, name).unwrap();
        let subscribe = Request::Subscribe { serial: true, display: false, debug: false };
        protocol::send(&mut stream, &subscribe).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        let mut reader = FrameReader::new(stream.try_clone().unwrap());
        std::thread::spawn(move || {
            while let Ok(Some(reply)) = reader.receive::<Reply>() {
                if let Reply::Serial { bytes } = reply {
                    sink.lock().unwrap().extend_from_slice(&bytes);
                }
            }
        });
        Console { stream, seen }
    }

    fn seen(&self) -> String {
        String::from_utf8_lossy(&self.seen.lock().unwrap()).into_owned()
    }

    fn type_keys(&mut self, bytes: &[u8]) {
        protocol::send(&mut self.stream, &Request::SerialInput { bytes: bytes.to_vec() }).unwrap();
        self.stream.flush().unwrap();
    }

    fn wait_until(&self, what: &str, done: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !done(&self.seen()) {
            assert!(Instant::now() < deadline, "waited for {what}: {}", self.seen());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn folder(lib: &Path, name: &str) -> PathBuf {
    PathBuf::from(json(lib, &["show", name, "--json"])["path"].as_str().unwrap())
}

fn wait_for(run: &mut Started, what: &str, done: impl Fn(&str) -> bool) {
    assert!(run.wait_until(Duration::from_secs(60), done), "waited for {what}: {}", run.seen());
}

fn create(lib: &Path, name: &str) {
    let kernel = testguest_elf();
    let args = ["create", name, "--kernel", kernel.to_str().unwrap(), "--cmdline"];
    let more = ["test=snapshot", "--memory", "64M", "--disk-size", "8M", "--no-net"];
    let out = vessel(lib, &[&args[..], &more[..]].concat());
    assert!(out.status.success(), "create: {}", text(&out.stderr));
}

/// Starts `name` in the background and attaches a console once it ticks.
fn start_detached(lib: &Path, name: &str) -> Console {
    let out = vessel(lib, &["start", name, "--detach"]);
    assert!(out.status.success(), "start: {}", text(&out.stderr));
    let console = Console::attach(lib, name);
    console.wait_until("ticks", |s| !snaps(s).is_empty());
    console
}

/// Takes snapshot `snap` of the running `name` (watched on `console`, which ends with the
/// VM process it watched); the point it keeps, and a console on the VM running on.
fn take_running(lib: &Path, name: &str, snap: &str, console: Console) -> (Point, Console) {
    let printed = last(&console.seen());
    let out = vessel(lib, &["snapshot", "take", name, snap, "--json"]);
    assert!(out.status.success(), "take: {}", text(&out.stderr));
    let taken: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(taken["memory"], true, "{taken}");
    // Its disk at that point: the snapshot's own images, which never change.
    let root = folder(lib, name);
    let id = taken["id"].as_str().unwrap();
    let config = std::fs::read_to_string(root.join("snapshots").join(id).join("vessel.toml"));
    let config: toml::Value = toml::from_str(&config.unwrap()).unwrap();
    let frozen = root.join(config["disks"][0]["file"].as_str().unwrap());
    let raw = convert(&frozen, "qcow2");
    let disk = lib.join(format!("{snap}.raw"));
    std::fs::write(&disk, &raw).unwrap();
    let point = Point { disk_tick: journal_end(&raw, printed.boot), printed, disk };
    // It runs on from the snapshot, in the process the take started.
    let console = Console::attach(lib, name);
    console.wait_until("ticks after the snapshot", |s| !snaps(s).is_empty());
    (point, console)
}

/// The VM's disk reads exactly as `raw` does.
fn disk_is(lib: &Path, name: &str, raw: &Path) {
    let vm = json(lib, &["show", name, "--json"]);
    let disk = folder(lib, name).join(vm["disks"][0]["file"].as_str().unwrap());
    let format = vm["disks"][0]["format"].as_str().unwrap();
    let compare = Command::new("qemu-img")
        .args(["compare", "-f", format, "-F", "raw"])
        .arg(&disk)
        .arg(raw)
        .output()
        .unwrap();
    assert!(compare.status.success(), "qemu-img compare: {}", text(&compare.stdout));
}

/// Reverts to `snap` and starts the VM: it goes on from `point` (disk, count, memory,
/// timer, typed line). Returns the run, still going.
fn revert_and_resume(lib: &Path, name: &str, snap: &str, point: &Point) -> Started {
    let out = vessel(lib, &["snapshot", "revert", name, snap]);
    assert!(out.status.success(), "revert: {}", text(&out.stderr));
    assert!(text(&out.stdout).contains("suspended there"), "{}", text(&out.stdout));
    disk_is(lib, name, &point.disk);
    let mut run = Started::with_keys(lib, name);
    // The ticks go on: the timer armed at the snapshot fired in the new process.
    wait_for(&mut run, "three ticks", |s| snaps(s).len() >= 3);
    goes_on_from(&run.seen(), point);
    run
}

/// Every qcow2 image of the VM is consistent (`qemu-img check`); their bytes on disk.
fn images_checked(lib: &Path, name: &str) -> u64 {
    let mut used = 0;
    for entry in std::fs::read_dir(folder(lib, name).join("disks")).unwrap() {
        let path = entry.unwrap().path();
        used += std::fs::metadata(&path).unwrap().blocks() * 512;
        if path.extension().is_some_and(|e| e == "qcow2") {
            let out = Command::new("qemu-img").arg("check").arg(&path).output().unwrap();
            assert!(out.status.success(), "{}: {}", path.display(), text(&out.stdout));
        }
    }
    used
}

fn quit(mut run: Started) {
    run.type_keys(b"q\n");
    let (status, seen, stderr) = run.finish();
    assert!(status.success(), "{stderr}\n{seen}");
}

#[test]
fn a_running_guest_goes_back_whole_to_its_snapshot_and_through_suspend() {
    let lib = common::scratch("snapshot-machine");
    let _vms = common::KillsVms(lib.clone());
    let name = "Busy";
    create(&lib, name);

    // Running, its whole screen painted, "abc" typed and no newline yet: snapshot "first".
    let mut console = start_detached(&lib, name);
    console.wait_until("300 ticks", |s| last(s).tick >= 300);
    console.type_keys(b"abc");
    console.wait_until("the typed line", |s| last(s).pending == 3);
    let (point, mut console) = take_running(&lib, name, "first", console);
    assert!(point.disk_tick >= 300, "{point:?}");
    // The snapshot keeps a picture of the screen as it was.
    let tree = json(&lib, &["snapshot", "list", name, "--json"]);
    let thumbnail = PathBuf::from(tree["snapshots"][0]["screen"].as_str().expect("a picture"));
    let range = (point.printed.tick, point.disk_tick + 1);
    assert!(screen_tick(&columns(&thumbnail), range.0, range.1).is_some(), "{point:?}");

    // It runs on and changes everything: more ticks, disk, screen, and "zz" typed.
    let from = last(&console.seen()).tick;
    console.wait_until("30 more ticks", |s| last(s).tick >= from + 30);
    console.type_keys(b"zz");
    console.wait_until("the longer line", |s| last(s).pending == 5);
    assert!(vessel(&lib, &["stop", "--force", name]).status.success());
    wait_state(&lib, name, "off");
    let now = journal_end(&disk_now(&lib, name), point.printed.boot);
    assert!(now >= point.disk_tick + 30, "it wrote on");

    // Reverted, in a fresh process: it goes on from the snapshot. Its screen holds what
    // the guest drew before the snapshot (the columns it has not painted again since).
    let mut run = revert_and_resume(&lib, name, "first", &point);
    // (At least 200 of its columns were painted before the snapshot and not since.)
    let shown = screen_follows(&lib, name, || run.seen());
    assert!(shown < point.disk_tick + COLUMNS - 200, "{shown}: columns before the snapshot");
    // The line typed before the snapshot is still being typed.
    run.type_keys(b"def\n");
    wait_for(&mut run, "the line", |s| s.contains("LINE abcdef\n"));
    quit(run);
    wait_state(&lib, name, "off");

    // Suspended and started: the same, from where it was suspended.
    let mut console = start_detached(&lib, name);
    console.wait_until("20 ticks", |s| last(s).tick >= 20);
    console.type_keys(b"xy");
    console.wait_until("the typed line", |s| last(s).pending == 2);
    let printed = last(&console.seen());
    let out = vessel(&lib, &["suspend", name]);
    assert!(out.status.success(), "suspend: {}", text(&out.stderr));
    assert_eq!(state_of(&lib, name), "suspended");
    let raw = disk_now(&lib, name);
    let disk = lib.join("suspended.raw");
    std::fs::write(&disk, &raw).unwrap();
    let point = Point { disk_tick: journal_end(&raw, printed.boot), printed, disk };
    let mut run = Started::with_keys(&lib, name);
    wait_for(&mut run, "three ticks", |s| snaps(s).len() >= 3);
    goes_on_from(&run.seen(), &point);
    screen_follows(&lib, name, || run.seen());
    run.type_keys(b"!\n");
    wait_for(&mut run, "the line", |s| s.contains("LINE xy!\n"));
    quit(run);
    wait_state(&lib, name, "off");
    let out = vessel(&lib, &["screenshot", name, lib.join("off.png").to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("is not running"), "{}", text(&out.stderr));
    assert!(!lib.join("off.png").exists());
}

#[test]
fn a_tree_of_running_snapshots_goes_back_to_each_node_after_its_middle_is_deleted() {
    let lib = common::scratch("snapshot-machine-tree");
    let _vms = common::KillsVms(lib.clone());
    let name = "Tree";
    create(&lib, name);

    // A branch of three, each taken while the guest runs: a, b below it, c below b.
    let mut console = start_detached(&lib, name);
    let mut points = std::collections::HashMap::new();
    for snap in ["a", "b", "c"] {
        let from = last(&console.seen()).tick;
        console.wait_until("ticks", |s| last(s).tick >= from + 15);
        let (point, next) = take_running(&lib, name, snap, console);
        points.insert(snap, point);
        console = next;
    }
    drop(console);
    assert!(vessel(&lib, &["stop", "--force", name]).status.success());
    wait_state(&lib, name, "off");

    // Back to a; it runs on into another branch: d, below a.
    let run = revert_and_resume(&lib, name, "a", &points["a"]);
    let console = Console::attach(&lib, name);
    let from = points["a"].disk_tick;
    console.wait_until("ticks", |s| last(s).tick >= from + 15);
    let (point, console) = take_running(&lib, name, "d", console);
    points.insert("d", point);
    drop((run, console));
    assert!(vessel(&lib, &["stop", "--force", name]).status.success());
    wait_state(&lib, name, "off");
    let tree = json(&lib, &["snapshot", "list", name, "--json"]);
    let node = |n: &str| {
        let all = tree["snapshots"].as_array().unwrap();
        all.iter().find(|s| s["name"] == n).unwrap().clone()
    };
    assert_eq!(node("b")["parent"], node("a")["id"]);
    assert_eq!(node("c")["parent"], node("b")["id"]);
    assert_eq!(node("d")["parent"], node("a")["id"]);

    // b, the middle of the first branch, deleted: its space comes back, c hangs under a.
    let before = images_checked(&lib, name);
    let deleted = json(&lib, &["snapshot", "delete", name, "b", "--json"]);
    assert_eq!(deleted["deferred"], false, "{deleted}");
    let after = images_checked(&lib, name);
    assert!(after < before, "disk use {before} -> {after}");
    let tree = json(&lib, &["snapshot", "list", name, "--json"]);
    let c = tree["snapshots"].as_array().unwrap().iter().find(|s| s["name"] == "c").unwrap();
    assert_eq!(c["parent"], node("a")["id"]);

    // Every node left goes back exactly: disk, memory, count, timer.
    for snap in ["c", "a", "d", "c"] {
        let run = revert_and_resume(&lib, name, snap, &points[snap]);
        quit(run);
        wait_state(&lib, name, "off");
        images_checked(&lib, name);
    }
    let _ = std::fs::remove_dir_all(lib);
}
