//! The default Linux guest (assets/linux-guest) is a good image: QEMU boots it to its ready
//! marker with the modules later devices need. (KVM here is PVM and cannot run a stock
//! kernel; see DESIGN.md §3. On VT-x/AMD-V hosts `vessel run` boots the same files.)

use vessel_tests::*;

#[test]
fn default_linux_guest_boots_under_qemu() {
    assert!(have_qemu(), "qemu-system-x86_64 is needed: apt-get install qemu-system-x86");
    let (kernel, initrd) = default_linux_guest();
    let out = run_qemu(
        &kernel,
        "console=ttyS0 panic=-1 quiet vessel.selftest",
        &["-initrd", initrd.to_str().unwrap()],
    );
    assert!(out.contains("VESSEL-GUEST-READY"), "no ready marker:\n{out}");
    for module in
        ["virtio_pci", "virtio_blk", "virtio_net", "virtio_input", "virtio_gpu", "evdev", "sr_mod"]
    {
        assert!(out.contains(&format!("MODULE {module} loaded")), "{module} did not load:\n{out}");
    }
    assert!(out.contains("reboot: Power down"), "the guest powers off cleanly:\n{out}");
}
