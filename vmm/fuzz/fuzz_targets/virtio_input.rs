//! virtio-input: config selections, host events, event buffers and LED status reports from a hostile driver.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmm_fuzz::targets;

fuzz_target!(|input: targets::InputInput| {
    targets::virtio_input(&input);
});
