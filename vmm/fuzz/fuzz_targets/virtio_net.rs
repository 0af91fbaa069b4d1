//! virtio-net transmit and receive from a hostile driver, with frames from a backend the fuzzer scripts (and that is full every third send).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmm_fuzz::targets;

fuzz_target!(|input: targets::NetInput| {
    targets::virtio_net(&input);
});
