//! The standard VGA (its registers, DISPI, the legacy window, both BARs) and its renderer
//! under any sequence of accesses and frames.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmm_fuzz::targets;

fuzz_target!(|input: targets::VgaInput| {
    targets::vga(&input);
});
