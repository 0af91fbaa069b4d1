//! A machine whose host lacks passt still starts, without a network card, and says why and
//! what to install. (Its own test binary: it changes PATH for the whole process.)

use vessel_tests::*;
use vmm::{Event, StopReason};

#[test]
fn missing_passt_is_a_warning_not_a_failure() {
    let empty = std::env::temp_dir().join(format!("vessel-empty-path-{}", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    // SAFETY: this binary's only test runs alone; nothing else reads the environment now.
    unsafe { std::env::set_var("PATH", &empty) };
    let mut spec = GuestSpec::new("virtio-net");
    spec.devices.push(vmm::DeviceConfig::Net {
        mac: [2, 0, 0, 0, 0, 1],
        forwards: Vec::new(),
        host_access: false,
    });
    let mut run = spec.boot();
    assert!(matches!(run.expect_stopped(), StopReason::PoweredOff));
    let warning = run.events.iter().find_map(|e| match e {
        Event::Warning(w) => Some(w.clone()),
        _ => None,
    });
    let warning = warning.expect("the user is told");
    assert!(warning.contains("apt-get install passt"), "{warning}");
    // No network card: the guest finds only the host bridge and virtio-rng.
    assert!(run.output().contains("VIRTIO FAIL"), "{}", run.output());
    assert_eq!(run.lines_with("PCI").len(), 2);
}
