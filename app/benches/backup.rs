//! Backup and restore throughput, against `cp --sparse=always` of the same disk image in
//! the same run: a VM (off) with a qcow2 disk holding SIZE MiB of incompressible data
//! spread over twice that, then
//! - `cp --sparse=always` of the disk's image file (the reference: the fastest a plain
//!   copy of the disk reads and writes it; the best of three), and the same followed by
//!   `sync` of the copy (durable, as a backup's chunks are before its point is written);
//! - a full backup into a new set (every chunk read, hashed, stored);
//! - an incremental one after the guest's disk changed in 1% of its chunks;
//! - `vessel backup verify` (every chunk re-read and hashed);
//! - a restore of the newest point as a new VM.
//!
//! The page cache holds the disk throughout (as it does for the copy).
//!
//! Run: cargo bench -p vessel --bench backup [-- SIZE_MIB]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use vessel_tests::testguest_elf;

const MIB: u64 = 1 << 20;

fn vessel(lib: &Path, args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_vessel"))
        .arg("--library")
        .arg(lib)
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}

fn timed(f: impl FnOnce()) -> Duration {
    let t = Instant::now();
    f();
    t.elapsed()
}

fn run(program: &str, args: &[&str]) {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(out.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// `len` bytes no two 4 MiB chunks of which are alike (xorshift).
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn rate(bytes: u64, took: Duration) -> String {
    format!("{:7.0} MiB/s", bytes as f64 / MIB as f64 / took.as_secs_f64())
}

fn main() {
    let size: u64 = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(1024) * MIB;
    let dir = std::env::temp_dir().join(format!("vessel-bench-backup-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let lib = dir.join("lib");
    let kernel = testguest_elf();
    let disk_size = format!("{}M", 2 * size / MIB);
    vessel(
        &lib,
        &[
            "create",
            "Bench",
            "--kernel",
            kernel.to_str().unwrap(),
            "--disk-size",
            &disk_size,
            "--no-net",
        ],
    );
    let image = lib.join("Bench.vessel/disks/disk0.qcow2");
    // Data in every other 4 MiB of the disk: half of it was never written.
    let raw = dir.join("data.raw");
    {
        let file = std::fs::File::create(&raw).unwrap();
        file.set_len(2 * size).unwrap();
        let mut at = 0;
        while at < 2 * size {
            std::os::unix::fs::FileExt::write_all_at(&file, &noise(at + 1, 4 * MIB as usize), at)
                .unwrap();
            at += 8 * MIB;
        }
    }
    let (raw_s, image_s) = (raw.to_str().unwrap(), image.to_str().unwrap());
    run("qemu-img", &["convert", "-f", "raw", "-O", "qcow2", raw_s, image_s]);
    std::fs::remove_file(&raw).unwrap();

    let copy = dir.join("copy.qcow2");
    let copy_s = copy.to_str().unwrap();
    let cp = (0..3)
        .map(|_| {
            let _ = std::fs::remove_file(&copy);
            timed(|| run("cp", &["--sparse=always", image_s, copy_s]))
        })
        .min()
        .unwrap();
    // The same, made durable as a backup is (`sync FILE` fsyncs the copy).
    let cp_sync = (0..3)
        .map(|_| {
            let _ = std::fs::remove_file(&copy);
            run("sync", &[]);
            timed(|| {
                run("cp", &["--sparse=always", image_s, copy_s]);
                run("sync", &[copy_s]);
            })
        })
        .min()
        .unwrap();
    std::fs::remove_file(&copy).unwrap();

    let set = dir.join("set");
    let set_s = set.to_str().unwrap();
    let mut full = serde_json::Value::Null;
    let full_t = timed(|| full = vessel(&lib, &["backup", "Bench", "--to", set_s, "--json"]));
    // 1% of the chunks with data change, in the disk's image now (the backup froze the
    // one before: the VM goes on in an overlay).
    let vm = vessel(&lib, &["show", "Bench", "--json"]);
    let image = lib.join("Bench.vessel").join(vm["disks"][0]["file"].as_str().unwrap());
    let image_s = image.to_str().unwrap();
    let changes = (size / (4 * MIB) / 100).max(1);
    for n in 0..changes {
        let at = n * 97 * 8 * MIB % (2 * size);
        let write = format!("write -P {} {} 1M", n % 250 + 1, at);
        run("qemu-io", &["-f", "qcow2", "-c", &write, image_s]);
    }
    let mut inc = serde_json::Value::Null;
    let inc_t = timed(|| inc = vessel(&lib, &["backup", "Bench", "--to", set_s, "--json"]));
    let verify_t = timed(|| {
        vessel(&lib, &["backup", "verify", set_s]);
    });
    let restore_t = timed(|| {
        vessel(&lib, &["restore", set_s, "--as", "Restored"]);
    });

    let data = size;
    let n = |v: &serde_json::Value, k: &str| v[k].as_u64().unwrap_or(0);
    println!(
        "backup of a {} MiB disk holding {} MiB of data (qcow2, off):",
        2 * size / MIB,
        data / MIB
    );
    println!("  cp --sparse=always  {:8.3} s  {}  (reference)", cp.as_secs_f64(), rate(data, cp));
    println!(
        "  ... then sync       {:8.3} s  {}  (durable, as a backup's chunks are)",
        cp_sync.as_secs_f64(),
        rate(data, cp_sync)
    );
    println!(
        "  full backup         {:8.3} s  {}  {:.2}x cp's time, {:.2}x cp+sync's  (read {} MiB, stored {} MiB)",
        full_t.as_secs_f64(),
        rate(data, full_t),
        full_t.as_secs_f64() / cp.as_secs_f64(),
        full_t.as_secs_f64() / cp_sync.as_secs_f64(),
        n(&full, "read") / MIB,
        n(&full, "written") / MIB
    );
    println!(
        "  incremental (1%)    {:8.3} s  {:.2}x cp's time  (read {} MiB, stored {} MiB, {} MiB unchanged not read)",
        inc_t.as_secs_f64(),
        inc_t.as_secs_f64() / cp.as_secs_f64(),
        n(&inc, "read") / MIB,
        n(&inc, "written") / MIB,
        n(&inc, "unchanged") / MIB
    );
    println!(
        "  verify              {:8.3} s  {}  {:.2}x cp's time",
        verify_t.as_secs_f64(),
        rate(data, verify_t),
        verify_t.as_secs_f64() / cp.as_secs_f64()
    );
    println!(
        "  restore             {:8.3} s  {}  {:.2}x cp's time",
        restore_t.as_secs_f64(),
        rate(data, restore_t),
        restore_t.as_secs_f64() / cp.as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
