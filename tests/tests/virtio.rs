//! PCI and virtio as the test guest's ring-3 drivers see them: a bus scan, the modern
//! virtio transport with MSI-X, and virtio-rng answering requests.

use vessel_tests::*;
use vmm::StopReason;

fn check_rng_report(out: &str) {
    let lines = |key: &str| -> Vec<String> {
        let prefix = format!("{key} ");
        out.lines().filter_map(|l| l.strip_prefix(&prefix).map(str::to_string)).collect()
    };
    assert!(lines("RNG FAIL").is_empty(), "{out}");
    let requests: Vec<Vec<u64>> = lines("RNG")
        .iter()
        .filter(|l| !l.starts_with("IRQS"))
        .map(|l| l.split_whitespace().map(hex).collect())
        .collect();
    assert_eq!(requests.len(), 2, "{out}");
    for r in &requests {
        assert_eq!(r[0], 64, "the device filled the whole buffer");
        assert!(r[1] != 0 || r[2] != 0, "random bytes, not zeros");
    }
    assert_ne!(requests[0][1..], requests[1][1..], "two requests, two different answers");
    assert_eq!(hex(lines("RNG IRQS")[0].trim()), 2, "one MSI-X interrupt per request");
}

#[test]
fn virtio_rng_with_msix_on_vessel() {
    let mut run = GuestSpec::new("virtio-rng").boot();
    run.expect_output("RNG IRQS");
    assert!(matches!(run.expect_stopped(), StopReason::PoweredOff));
    let out = run.output();
    // The host bridge at 00:00.0 and the virtio-rng function after it.
    let pci: Vec<String> = run.lines_with("PCI");
    assert_eq!(pci, vec!["0000000000000000 0000000012378086", "0000000000000001 0000000010441af4"]);
    check_rng_report(&out);
}

#[test]
fn virtio_rng_with_msix_under_qemu() {
    assert!(have_qemu(), "qemu-system-x86_64 is needed: apt-get install qemu-system-x86");
    let out = run_qemu(
        &testguest_elf(),
        "test=virtio-rng",
        &["-device", "virtio-rng-pci,disable-legacy=on"],
    );
    check_rng_report(&out);
}

#[test]
fn no_devices_no_rng() {
    let mut spec = GuestSpec::new("virtio-rng");
    spec.devices = Vec::new();
    let mut run = spec.boot();
    run.expect_output("RNG FAIL");
    assert_eq!(run.lines_with("PCI").len(), 1, "only the host bridge");
}
