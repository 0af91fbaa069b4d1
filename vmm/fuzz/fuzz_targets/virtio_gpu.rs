//! virtio-gpu control and cursor commands from a hostile driver, under a small limit on resource memory.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmm_fuzz::targets;

fuzz_target!(|input: targets::GpuInput| {
    targets::virtio_gpu(&input);
});
