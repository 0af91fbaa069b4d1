//! virtio-blk throughput at queue depth 1, driven by the test guest (test=blk-bench,
//! polling the used ring): sequential 256 KiB writes and reads over 64 MiB, random 4 KiB
//! reads and writes, then sequential writes and reads again in 1 MiB requests (where a
//! request's fixed cost, the exits, weighs less), and in 1 MiB requests with two in
//! flight (as readahead and writeback keep them), which hides that fixed cost. Compared
//! in the same run with the same pattern done directly on the host file (pread/pwrite)
//! and with QEMU's virtio-blk (-accel kvm) driven by the same guest. Phase times come
//! from the guest's debug-port milestones, timestamped on arrival.
//!
//! Run: cargo bench -p vessel-tests --bench blk_throughput

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use vessel_tests::{GuestSpec, TIMEOUT};
use vmm::{DeviceConfig, Event, ImageSpec, Machine, MachineState};

const SEQ_BYTES: usize = 262_144;
const SEQ_COUNT: u64 = 256;
const RAND_COUNT: u64 = 4096;
const SPAN_SECTORS: u64 = 131_072;
const BIG_BYTES: usize = 1 << 20;
const BIG_COUNT: u64 = 64;
const PHASES: [&str; 8] = [
    "sequential write",
    "sequential read",
    "random 4K read",
    "random 4K write",
    "seq write 1 MiB",
    "seq read 1 MiB",
    "seq write 1M QD2",
    "seq read 1M QD2",
];
const MARKS: usize = 2 * PHASES.len();

/// Phase durations from milestone times (0x10..=0x1f → 8 phases).
fn phases(marks: &[Option<Duration>; MARKS]) -> [Duration; 8] {
    std::array::from_fn(|i| {
        let (start, end) =
            (marks[2 * i].expect("phase start"), marks[2 * i + 1].expect("phase end"));
        end - start
    })
}

fn vessel(image: &Path) -> [Duration; 8] {
    let mut spec = GuestSpec::new("blk-bench");
    spec.devices = vec![DeviceConfig::Block { image: ImageSpec::raw(image), read_only: false }];
    let handle = Machine::build(spec.config(), None).expect("machine builds");
    handle.start().unwrap();
    let mut marks = [None; MARKS];
    while let Ok(event) = handle.events().recv_timeout(TIMEOUT) {
        match event {
            Event::DebugMarker { code: code @ 0x10..=0x1f, since_build } => {
                marks[usize::from(code - 0x10)] = Some(since_build)
            }
            Event::StateChanged(MachineState::Stopped(_)) => break,
            _ => {}
        }
    }
    phases(&marks)
}

const ROUNDS: usize = 5;

/// Each phase's median over several runs.
fn median(mut runs: Vec<[Duration; 8]>) -> [Duration; 8] {
    std::array::from_fn(|phase| {
        runs.sort_by_key(|r| r[phase]);
        runs[runs.len() / 2][phase]
    })
}

fn lcg(state: &mut u64) -> u64 {
    *state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
    (*state >> 33) & (SPAN_SECTORS - 8)
}

fn host(image: &Path) -> [Duration; 8] {
    let file = std::fs::OpenOptions::new().read(true).write(true).open(image).unwrap();
    let mut buf = vec![0x5au8; BIG_BYTES];
    let mut out = [Duration::ZERO; 8];
    let t = Instant::now();
    for i in 0..SEQ_COUNT {
        file.write_all_at(&buf[..SEQ_BYTES], i * SEQ_BYTES as u64).unwrap();
    }
    out[0] = t.elapsed();
    let t = Instant::now();
    for i in 0..SEQ_COUNT {
        file.read_exact_at(&mut buf[..SEQ_BYTES], i * SEQ_BYTES as u64).unwrap();
    }
    out[1] = t.elapsed();
    let mut state = 12_345;
    let t = Instant::now();
    for _ in 0..RAND_COUNT {
        file.read_exact_at(&mut buf[..4096], lcg(&mut state) * 512).unwrap();
    }
    out[2] = t.elapsed();
    let t = Instant::now();
    for _ in 0..RAND_COUNT {
        file.write_all_at(&buf[..4096], lcg(&mut state) * 512).unwrap();
    }
    out[3] = t.elapsed();
    let t = Instant::now();
    for i in 0..BIG_COUNT {
        file.write_all_at(&buf, i * BIG_BYTES as u64).unwrap();
    }
    out[4] = t.elapsed();
    let t = Instant::now();
    for i in 0..BIG_COUNT {
        file.read_exact_at(&mut buf, i * BIG_BYTES as u64).unwrap();
    }
    out[5] = t.elapsed();
    // Two requests in flight, as the guest keeps them: two threads, each with every other
    // 1 MiB block.
    let two = |write: bool| {
        let t = Instant::now();
        std::thread::scope(|scope| {
            for half in 0..2u64 {
                let file = &file;
                scope.spawn(move || {
                    let mut buf = vec![0x5au8; BIG_BYTES];
                    for i in (half..BIG_COUNT).step_by(2) {
                        let at = i * BIG_BYTES as u64;
                        if write {
                            file.write_all_at(&buf, at).unwrap();
                        } else {
                            file.read_exact_at(&mut buf, at).unwrap();
                        }
                    }
                });
            }
        });
        t.elapsed()
    };
    out[6] = two(true);
    out[7] = two(false);
    out
}

fn qemu(image: &Path) -> Option<[Duration; 8]> {
    let drive = format!("file={},format=raw,if=none,id=d0", image.display());
    let device = ["-drive", &drive, "-device", "virtio-blk-pci,drive=d0,disable-legacy=on"];
    let mut marks = [None; MARKS];
    for (code, at) in vessel_tests::qemu_kvm_milestones("test=blk-bench", &device)? {
        if (0x10..=0x1f).contains(&code) {
            marks[usize::from(code - 0x10)] = Some(at);
        }
    }
    marks.iter().all(Option::is_some).then(|| phases(&marks))
}

fn rate(phase: usize, d: Duration) -> (f64, &'static str) {
    let mib = |count: u64, bytes: usize| (count as f64 * bytes as f64) / (1 << 20) as f64;
    match phase {
        0 | 1 => (mib(SEQ_COUNT, SEQ_BYTES) / d.as_secs_f64(), "MiB/s"),
        4..=7 => (mib(BIG_COUNT, BIG_BYTES) / d.as_secs_f64(), "MiB/s"),
        _ => (RAND_COUNT as f64 / d.as_secs_f64(), "IOPS"),
    }
}

fn main() {
    let image = std::env::temp_dir().join(format!("vessel-blk-bench-{}.raw", std::process::id()));
    let data: Vec<u8> =
        (0..64u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(&image, data).unwrap();
    let _ = vessel(&image); // warm-up: page cache, KVM
    // Each phase takes milliseconds, so one scheduling hiccup on the host can halve a
    // phase's figure: Vessel and the host are measured ROUNDS times, and each phase's
    // median reported.
    let v = median((0..ROUNDS).map(|_| vessel(&image)).collect());
    let h = median((0..ROUNDS).map(|_| host(&image)).collect());
    let q = qemu(&image);
    println!(
        "blk_throughput: queue depth 1, 64 MiB span, page-cached image, medians of {ROUNDS} runs"
    );
    for (i, name) in PHASES.iter().enumerate() {
        let (vr, unit) = rate(i, v[i]);
        let (hr, _) = rate(i, h[i]);
        let mut line = format!(
            "  {name:<17} vessel {vr:>9.0} {unit:<5} host {hr:>9.0}  vessel/host {:.2}",
            vr / hr
        );
        if let Some(q) = &q {
            let (qr, _) = rate(i, q[i]);
            line += &format!("  qemu {qr:>9.0}  vessel/qemu {:.2}", vr / qr);
        }
        println!("{line}");
    }
    if q.is_none() {
        println!("  (qemu-system-x86_64 -accel kvm did not run; no QEMU column)");
    }
    let _ = std::fs::remove_file(image);
}
