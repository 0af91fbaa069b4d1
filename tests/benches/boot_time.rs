//! Boot-time benchmark: from `Machine::build` to the test guest's first instruction and to
//! its ready marker (debug port 0xE9: 1 = first instruction, 4 = about to power off), for
//! Vessel and for `qemu-system-x86_64 -accel kvm` on the same guest in the same run.
//! QEMU's times are measured from process spawn to the byte arriving from its debugcon.
//!
//! Run: cargo bench -p vessel-tests --bench boot_time [-- ROUNDS]

use std::time::{Duration, Instant};

use vessel_tests::{GuestSpec, TIMEOUT};
use vmm::{Event, Machine, MachineState};

struct Sample {
    first_instruction: Duration,
    marker: Duration,
}

fn vessel_once() -> Sample {
    let spec = GuestSpec::new("bench");
    let started = Instant::now();
    let handle = Machine::build(spec.config(), None).expect("machine builds");
    handle.start().expect("machine starts");
    let (mut first, mut marker) = (None, None);
    while let Ok(event) = handle.events().recv_timeout(TIMEOUT) {
        match event {
            Event::DebugMarker { code: 1, since_build } => first = Some(since_build),
            Event::DebugMarker { code: 4, since_build } => marker = Some(since_build),
            Event::StateChanged(MachineState::Stopped(_)) => break,
            _ => {}
        }
    }
    // `since_build` counts from inside `build`; add the little before it for honesty.
    let lead = handle.built_at().duration_since(started);
    Sample {
        first_instruction: lead + first.expect("guest reached its first instruction"),
        marker: lead + marker.expect("guest reached its marker"),
    }
}

fn qemu_once() -> Option<Sample> {
    let marks = vessel_tests::qemu_kvm_milestones("test=bench", &[])?;
    let at = |code: u8| marks.iter().find(|(c, _)| *c == code).map(|(_, t)| *t);
    Some(Sample { first_instruction: at(1)?, marker: at(4)? })
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let rounds: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(20);
    // Warm up both (page cache, KVM module state) before measuring.
    vessel_once();
    let qemu_works = qemu_once().is_some();

    let vessel: Vec<Sample> = (0..rounds).map(|_| vessel_once()).collect();
    let qemu: Vec<Sample> =
        if qemu_works { (0..rounds).filter_map(|_| qemu_once()).collect() } else { Vec::new() };

    let v_first = median(vessel.iter().map(|s| s.first_instruction).collect());
    let v_marker = median(vessel.iter().map(|s| s.marker).collect());
    println!("boot_time: {rounds} rounds, medians");
    println!(
        "  vessel  first instruction {:>9.3} ms   marker {:>9.3} ms",
        ms(v_first),
        ms(v_marker)
    );
    if qemu.is_empty() {
        println!("  qemu    (qemu-system-x86_64 -accel kvm did not run; install qemu-system-x86)");
        return;
    }
    let q_first = median(qemu.iter().map(|s| s.first_instruction).collect());
    let q_marker = median(qemu.iter().map(|s| s.marker).collect());
    println!(
        "  qemu    first instruction {:>9.3} ms   marker {:>9.3} ms",
        ms(q_first),
        ms(q_marker)
    );
    println!(
        "  ratio (qemu / vessel): first instruction {:.1}x, marker {:.1}x (target: >= 5x to first instruction)",
        q_first.as_secs_f64() / v_first.as_secs_f64(),
        q_marker.as_secs_f64() / v_marker.as_secs_f64()
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
