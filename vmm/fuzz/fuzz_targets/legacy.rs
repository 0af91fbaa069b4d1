//! The legacy port devices (serial, i8042, CMOS, ACPI sleep control, debug port, GED) under any sequence of accesses.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmm_fuzz::targets;

fuzz_target!(|input: targets::LegacyInput| {
    targets::legacy(&input);
});
