//! virtio-rng requests from a hostile driver.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmm_fuzz::targets;

fuzz_target!(|input: vmm_fuzz::QueueInput| {
    targets::virtio_rng(&input);
});
