//! The machine's life as the guest and the host drive it: SMP bring-up, serial both ways,
//! power off and the power button, reboots, triple faults, pause and resume.

use std::time::Duration;

use vessel_tests::*;
use vmm::{Event, MachineError, MachineState, RebootPolicy, StopReason};

#[test]
fn every_vcpu_comes_up_through_init_sipi() {
    let mut spec = GuestSpec::new("smp");
    spec.vcpus = 4;
    let mut run = spec.boot();
    run.expect_output("SMP ");
    let reason = run.expect_stopped();
    assert!(matches!(reason, StopReason::PoweredOff));
    let mut ids: Vec<String> = run.lines_with("CPU");
    ids.sort();
    assert_eq!(
        ids,
        vec![
            "0000000000000000 up bsp",
            "0000000000000001 up ap",
            "0000000000000002 up ap",
            "0000000000000003 up ap",
        ],
        "{}",
        run.output()
    );
    assert_eq!(hex(&run.lines_with("SMP")[0]), 4);
}

#[test]
fn serial_echo_through_the_uart_interrupt() {
    let mut run = GuestSpec::new("echo").boot();
    run.expect_output("ECHO READY\n");
    run.handle.send_serial(b"hello, vessel\n").unwrap();
    run.expect_output("hello, vessel\n");
    // More than the UART's 64-byte FIFO at once: the rest waits for the guest to drain.
    let alphabet = b"abcdefghijklmnoprstuvwxyz0123456789"; // no 'q': it ends the test
    let long: String = (0..300).map(|i| char::from(alphabet[i % alphabet.len()])).collect();
    run.handle.send_serial(long.as_bytes()).unwrap();
    run.expect_output(&long);
    run.handle.send_serial(b"q").unwrap();
    run.expect_output("ECHO BYE IRQS ");
    assert!(matches!(run.expect_stopped(), StopReason::PoweredOff));
    let irqs = hex(run.lines_with("ECHO BYE IRQS")[0].trim());
    assert!(irqs >= 2, "the guest only reads on interrupts; it saw {irqs}");
}

#[test]
fn power_button_reaches_the_guest_through_the_ged() {
    let mut run = GuestSpec::new("powerbutton").boot();
    run.expect_output("PWRBTN READY\n");
    run.handle.request_shutdown().unwrap();
    run.expect_output("GED ");
    assert!(matches!(run.expect_stopped(), StopReason::PoweredOff));
    assert_eq!(hex(&run.lines_with("GED")[0]), 1, "power-button event bit");
    // The machine is off: the button does nothing now, and says so.
    let err = run.handle.request_shutdown().unwrap_err();
    assert!(matches!(err, MachineError::InvalidState { .. }), "{err}");
}

fn reboot_restarts(test: &str, banner: &str) {
    let mut spec = GuestSpec::new(test);
    spec.on_guest_reboot = RebootPolicy::Restart;
    let mut run = spec.boot();
    // The guest reboots itself each time it runs: seeing it twice, with a Rebooted event in
    // between, shows the machine restarted and ran the guest again.
    assert!(
        run.wait_until(TIMEOUT, |r| r.output().matches(banner).count() >= 2),
        "no second boot:\n{}",
        run.output()
    );
    assert!(run.events.iter().any(|e| matches!(e, Event::Rebooted)));
    assert!(run.output().matches("VESSEL-TESTGUEST").count() >= 2);
    run.handle.power_off().unwrap();
    assert!(matches!(run.expect_stopped(), StopReason::PoweredOff));
}

#[test]
fn reboot_by_keyboard_controller() {
    reboot_restarts("reboot-kbd", "REBOOT kbd");
}

#[test]
fn reboot_by_port_cf9() {
    reboot_restarts("reboot-cf9", "REBOOT cf9");
}

#[test]
fn reboot_by_acpi_reset_register() {
    reboot_restarts("reboot-acpi", "REBOOT acpi");
}

#[test]
fn reboot_can_stop_the_machine_instead() {
    let mut run = GuestSpec::new("reboot-kbd").boot();
    assert!(matches!(run.expect_stopped(), StopReason::Reset));
    // A stopped machine can be started again from scratch.
    run.handle.start().unwrap();
    assert!(run.wait_until(TIMEOUT, |r| r.output().matches("REBOOT kbd").count() >= 2));
}

#[test]
fn triple_fault_is_a_crash_with_registers_and_the_process_lives_on() {
    let mut run = GuestSpec::new("triple").boot();
    run.expect_output("TRIPLE");
    match run.expect_stopped() {
        StopReason::Crashed(report) => {
            assert_eq!(report.vcpu, 0);
            assert_eq!(report.registers.regs.r15, 0x7472_6970_6661_7574, "{}", report.registers);
        }
        other => panic!("expected a crash, got {other:?}"),
    }
    // Same process, new machine: everything still works.
    let mut again = GuestSpec::new("boot").boot();
    again.expect_output("DONE");
    assert!(matches!(again.expect_stopped(), StopReason::PoweredOff));
}

fn ticks(run: &GuestRun) -> Vec<u64> {
    run.lines_with("TICK").iter().map(|t| hex(t)).collect()
}

#[test]
fn pause_and_resume_keep_the_guest_state() {
    let mut run = GuestSpec::new("ticks").boot();
    assert!(run.wait_until(TIMEOUT, |r| ticks(r).len() >= 3));
    run.handle.pause().unwrap();
    assert!(matches!(run.handle.state(), MachineState::Paused));
    run.drain();
    let at_pause = ticks(&run).last().copied().unwrap();
    // Paused: no guest instruction runs, so no tick appears.
    std::thread::sleep(Duration::from_millis(300));
    run.drain();
    let after_wait = ticks(&run).last().copied().unwrap();
    // A tick line being printed when the pause hit may complete; nothing beyond it.
    assert!(after_wait <= at_pause + 1, "ticks while paused: {at_pause} -> {after_wait}");
    assert!(run.handle.pause().is_err(), "pausing twice is refused");
    let seen = ticks(&run).len();
    run.handle.resume().unwrap();
    assert!(run.wait_until(TIMEOUT, |r| ticks(r).len() >= seen + 3));
    // The counter went on from where it was: the guest kept its state.
    let all = ticks(&run);
    for pair in all.windows(2) {
        assert_eq!(pair[1], pair[0] + 1, "ticks must continue without a restart: {all:?}");
    }
    run.handle.send_serial(b"q").unwrap();
    assert!(matches!(run.expect_stopped(), StopReason::PoweredOff));
}
