//! The boot protocols, checked by what the test guest finds: entry registers, e820,
//! command line, initrd, and ACPI tables reached from the RSDP with valid checksums.

use vessel_tests::*;

#[test]
fn pvh_boot_report() {
    let mut run = GuestSpec::new("boot").boot();
    run.expect_output("DONE");
    let reason = run.expect_stopped();
    println!("{}", run.output());
    assert!(matches!(reason, vmm::StopReason::PoweredOff), "{reason:?}");
}
