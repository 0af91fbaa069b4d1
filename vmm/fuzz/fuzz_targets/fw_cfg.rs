//! fw_cfg under any sequence of selector, data-port and DMA accesses.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmm_fuzz::targets;

fuzz_target!(|input: targets::FwCfgInput| {
    targets::fw_cfg(&input);
});
