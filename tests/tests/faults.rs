//! A bug in a device model, or a device stuck in a blocking call, ends only its own
//! machine, with an error naming the thread; power-off completes anyway; other machines in
//! the process run on. The faulty test device (vmm's `test-devices` feature) provides the
//! faults: the guest asks for them by writing its port.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use vessel_tests::*;
use vmm::devices::faulty::HANGING;
use vmm::{DeviceConfig, MachineState, StopReason};

fn ticks(run: &mut GuestRun) -> usize {
    run.drain();
    run.lines_with("TICK").len()
}

/// How many mappings of exactly `len` bytes this process has (a machine's guest memory).
fn mappings_of(len: u64) -> usize {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    maps.lines()
        .filter_map(|l| l.split_whitespace().next()?.split_once('-'))
        .filter(|(a, b)| {
            let (a, b) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16));
            matches!((a, b), (Ok(a), Ok(b)) if b - a == len)
        })
        .count()
}

#[test]
fn a_faulty_device_ends_only_its_own_machine() {
    // A machine that keeps running throughout.
    let mut bystander = GuestSpec::new("ticks").boot();
    bystander.expect_output("TICK");

    // A device model that panics on the vCPU thread: the machine stops with an error that
    // names the thread and the panic.
    let mut spec = GuestSpec::new("fault-panic");
    spec.devices.push(DeviceConfig::Faulty);
    let mut run = spec.boot();
    match run.expect_stopped() {
        StopReason::Error(message) => {
            assert!(message.contains("vessel-vcpu0"), "{message}");
            assert!(message.contains("panics on command"), "{message}");
        }
        other => panic!("expected an error, got {other:?}\n{}", run.output()),
    }
    assert!(run.output().contains("FAULT PANIC") && !run.output().contains("FAULT SURVIVED"));
    // It can be started again (a fresh instance), and fails the same way.
    run.handle.start().unwrap();
    assert!(matches!(run.expect_stopped(), StopReason::Error(_)));
    drop(run);

    // A device stuck in a blocking call: power-off does not wait for it. A memory size no
    // other machine here has, to find its mapping.
    let memory = 136 << 20;
    let mut spec = GuestSpec::new("fault-hang");
    spec.memory_bytes = memory;
    spec.devices.push(DeviceConfig::Faulty);
    let mut run = spec.boot();
    run.expect_output("FAULT HANG");
    // The guest prints before it writes the port: wait until its vCPU is in the device.
    let deadline = Instant::now() + TIMEOUT;
    while HANGING.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "the vCPU never reached the faulty device");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(mappings_of(memory), 1, "the guest's memory is mapped");
    run.handle.power_off().unwrap();
    match run.expect_stopped() {
        StopReason::Error(message) => {
            assert!(
                message.contains("vessel-vcpu0") && message.contains("did not stop"),
                "{message}"
            );
        }
        other => panic!("expected the stuck vCPU to be named, got {other:?}"),
    }
    // The abandoned thread finishes the device's call later and exits; the guest's memory
    // goes with it.
    let deadline = Instant::now() + TIMEOUT;
    while mappings_of(memory) != 0 {
        assert!(Instant::now() < deadline, "the guest's memory was never freed");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!run.output().contains("FAULT SURVIVED"), "the guest did not run on");
    drop(run);

    // The bystander ran on through both.
    let before = ticks(&mut bystander);
    assert!(bystander.wait_until(TIMEOUT, |r| r.lines_with("TICK").len() > before + 2));
    assert!(matches!(bystander.handle.state(), MachineState::Running));
    bystander.handle.power_off().unwrap();
}
