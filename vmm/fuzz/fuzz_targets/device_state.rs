//! A device's saved state, as a state file (a suspended VM's, maybe imported) holds it: the
//! first byte picks the device (serial, i8042, CMOS, IDE, virtio PCI transport, GPU, boot
//! framebuffer), the rest is its state's encoding. Restores check everything; none panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmm_fuzz::targets;

fuzz_target!(|data: &[u8]| {
    targets::device_state(data);
});
