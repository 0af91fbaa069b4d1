//! Boot-time benchmark, process to process: from spawning `vessel run` to the test guest's
//! first instruction and to its ready marker (debug port 0xE9: 1 = first instruction, 4 =
//! about to power off), against spawning `qemu-system-x86_64 -accel kvm` on the same guest
//! with the same memory, in the same run. Both write their debug-port bytes to a pipe
//! (Vessel's `--debugcon /dev/stderr`, QEMU's isa-debugcon on stdio), timed as they arrive.
//! QEMU rounds that fail are counted and reported.
//!
//! Run: cargo bench -p vessel-tests --bench boot_time [-- ROUNDS]

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vessel_tests::testguest_elf;

/// The guest's memory, for both.
const MEMORY: &str = "256M";

struct Sample {
    first_instruction: Duration,
    marker: Duration,
}

/// Milestones as (byte, time since spawn) from a child writing its debug port to `stream`.
fn milestones(
    mut child: std::process::Child,
    mut stream: impl Read,
    started: Instant,
) -> Vec<(u8, Duration)> {
    let mut marks = Vec::new();
    let mut byte = [0u8; 1];
    while stream.read(&mut byte).is_ok_and(|n| n == 1) {
        marks.push((byte[0], started.elapsed()));
    }
    let _ = child.wait();
    marks
}

fn sample(marks: &[(u8, Duration)]) -> Option<Sample> {
    let at = |code: u8| marks.iter().find(|(c, _)| *c == code).map(|(_, t)| *t);
    Some(Sample { first_instruction: at(1)?, marker: at(4)? })
}

fn vessel_once() -> Option<Sample> {
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_vessel"))
        .args(["run", "--kernel", testguest_elf().to_str().unwrap(), "--cmdline", "test=bench"])
        .args(["--memory", MEMORY, "--no-net", "--no-reboot", "--debugcon", "/dev/stderr"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    let stderr = child.stderr.take()?;
    sample(&milestones(child, stderr, started))
}

fn qemu_once() -> Option<Sample> {
    let started = Instant::now();
    let mut child = Command::new("qemu-system-x86_64")
        .args(["-accel", "kvm", "-m", MEMORY, "-nodefaults", "-display", "none", "-no-reboot"])
        .args(["-serial", "none", "-chardev", "stdio,id=dbg"])
        .args(["-device", "isa-debugcon,iobase=0xe9,chardev=dbg"])
        .args(["-kernel", testguest_elf().to_str().unwrap(), "-append", "test=bench"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let stdout = child.stdout.take()?;
    sample(&milestones(child, stdout, started))
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let rounds: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(20);
    // Warm up both (page cache, KVM module state) before measuring.
    let _ = vessel_once();
    let _ = qemu_once();

    let vessel: Vec<Sample> = (0..rounds).filter_map(|_| vessel_once()).collect();
    let qemu: Vec<Sample> = (0..rounds).filter_map(|_| qemu_once()).collect();
    let (v_failed, q_failed) = (rounds - vessel.len(), rounds - qemu.len());
    println!("boot_time: {rounds} rounds each, process spawn to debug-port byte, medians");
    if vessel.is_empty() {
        println!("  vessel  every round failed");
        return;
    }
    let v_first = median(vessel.iter().map(|s| s.first_instruction).collect());
    let v_marker = median(vessel.iter().map(|s| s.marker).collect());
    println!(
        "  vessel  first instruction {:>9.3} ms   marker {:>9.3} ms   ({v_failed} failed)",
        ms(v_first),
        ms(v_marker)
    );
    if qemu.is_empty() {
        println!(
            "  qemu    every round failed ({q_failed}); is qemu-system-x86 installed and /dev/kvm usable?"
        );
        return;
    }
    let q_first = median(qemu.iter().map(|s| s.first_instruction).collect());
    let q_marker = median(qemu.iter().map(|s| s.marker).collect());
    println!(
        "  qemu    first instruction {:>9.3} ms   marker {:>9.3} ms   ({q_failed} failed)",
        ms(q_first),
        ms(q_marker)
    );
    println!(
        "  ratio (qemu / vessel): first instruction {:.1}x, marker {:.1}x",
        q_first.as_secs_f64() / v_first.as_secs_f64(),
        q_marker.as_secs_f64() / v_marker.as_secs_f64()
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
