//! virtio-blk requests from a hostile driver (reads, writes, flushes, ids, discards, anything else, and raw chains) against a small raw image.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmm_fuzz::targets;

fuzz_target!(|input: targets::BlkInput| {
    targets::virtio_blk(&input);
});
