//! Descriptor-chain parsing as the devices use it: a hostile driver's rings (laid out by vmm_fuzz::QueueInput), every chain popped, read, written and returned.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmm_fuzz::targets;

fuzz_target!(|input: vmm_fuzz::QueueInput| {
    targets::virtio_queue(&input);
});
