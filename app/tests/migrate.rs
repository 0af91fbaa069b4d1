//! `vessel migrate`: a library VM running in its VM process (sandboxed) moves by live
//! migration to a receiver over a unix socket — here the test itself, taking the machine
//! with `vmm::migration::receive` — and goes on there where it was; its VM process ends.
//! A receiver that refuses leaves it running. (`vessel receive` as the receiving VM
//! process: to come.)

mod common;

use std::os::unix::net::UnixListener;
use std::time::Duration;

use common::{Started, text, vessel};
use vessel_tests::{GuestRun, testguest_elf};

/// The "MIGRATE" lines' ticks and boot ids.
fn ticks(output: &str) -> Vec<(u64, u64)> {
    let complete = &output[..output.rfind('\n').map_or(0, |i| i + 1)];
    assert!(!complete.contains("MIGRATE BAD") && !complete.contains("MIGRATE FAIL"), "{output}");
    complete
        .lines()
        .filter_map(|l| {
            let mut words = l.trim().strip_prefix("MIGRATE ")?.split(' ');
            let mut next = || u64::from_str_radix(words.next()?.trim(), 16).ok();
            Some((next()?, next()?))
        })
        .collect()
}

/// The library VM `name`'s machine configuration, as its VM process builds it.
fn machine_config(lib: &std::path::Path, name: &str) -> vmm::MachineConfig {
    let library = vm_library::library::Library::open(lib).unwrap();
    let bundle = library.find(name).unwrap();
    vessel::core::launch::machine_config(&library, &bundle).unwrap()
}

/// A receiver on a unix socket in `dir`: its address, and the machine it took.
fn receiver(
    dir: &std::path::Path,
    config: vmm::MachineConfig,
    options: vmm::migration::ReceiveOptions,
) -> (String, std::thread::JoinHandle<Result<vmm::MachineHandle, vmm::migration::MigrationError>>) {
    let path = dir.join("receive.sock");
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).unwrap();
    let thread = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        vmm::migration::receive(config, None, &mut conn, &options, &|_| {})
    });
    (format!("unix:{}", path.display()), thread)
}

#[test]
fn a_running_vm_moves_out_of_its_vm_process_and_goes_on() {
    let lib = common::scratch("migrate");
    let _vms = common::KillsVms(lib.clone());
    let kernel = testguest_elf();
    let args = ["create", "Mover", "--kernel", kernel.to_str().unwrap(), "--cmdline"];
    let more = ["test=migrate", "--memory", "256M", "--disk-size", "8M", "--no-net"];
    let out = vessel(&lib, &[&args[..], &more[..]].concat());
    assert!(out.status.success(), "create: {}", text(&out.stderr));
    let mut run = Started::new(&lib, "Mover");
    assert!(run.wait_until(Duration::from_secs(60), |s| ticks(s).len() >= 5), "{}", run.seen());

    // A receiver that lacks a feature the guest has: refused, and the VM runs on.
    let hide = vmm::migration::ReceiveOptions { hide_cpu_features: vec!["sse2".into()] };
    let (to, refusing) = receiver(&lib, machine_config(&lib, "Mover"), hide);
    let out = vessel(&lib, &["migrate", "Mover", "--to", &to]);
    assert!(!out.status.success());
    let said = text(&out.stderr);
    let log = std::fs::read_to_string(lib.join("Mover.vessel/vessel.log")).unwrap_or_default();
    assert!(said.contains("refused") && said.contains("sse2"), "{said}\nthe VM's log:\n{log}");
    assert!(refusing.join().unwrap().is_err());
    let seen = ticks(&run.seen()).len();
    assert!(run.wait_until(Duration::from_secs(30), |s| ticks(s).len() >= seen + 3), "runs on");

    // A receiver that takes it.
    let (to, taking) = receiver(&lib, machine_config(&lib, "Mover"), Default::default());
    let out = vessel(&lib, &["migrate", "Mover", "--to", &to, "--json"]);
    assert!(out.status.success(), "migrate: {}", text(&out.stderr));
    let figures: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    println!("{figures}");
    assert!(figures["passes"].as_u64().unwrap() >= 2, "{figures}");
    assert!(figures["memory_bytes"].as_u64().unwrap() >= 1 << 20, "{figures}");
    let handle = taking.join().unwrap().expect("the receiver runs the machine");

    // Its VM process ended, saying where the VM went; the VM is off in this library.
    let (status, before, stderr) = run.finish();
    assert!(status.success(), "{status}: {stderr}");
    assert!(stderr.contains("moved to another Vessel"), "{stderr}");
    let listed = text(&vessel(&lib, &["list"]).stdout);
    assert!(!listed.contains("running"), "{listed}");

    // The machine goes on in the receiver where it was: the next ticks, the same boot.
    let mut moved = GuestRun { handle, serial: Vec::new(), events: Vec::new() };
    assert!(moved.wait_until(vessel_tests::TIMEOUT, |r| ticks(&r.output()).len() >= 5));
    let all: Vec<(u64, u64)> = ticks(&format!("{before}{}", moved.output()));
    for pair in all.windows(2) {
        assert_eq!(pair[1].0, pair[0].0 + 1, "ticks one by one: {before}{}", moved.output());
        assert_eq!(pair[1].1, pair[0].1, "the same boot");
    }
    moved.handle.send_serial(b"q").unwrap();
    assert!(matches!(moved.expect_stopped(), vmm::StopReason::PoweredOff));
}
