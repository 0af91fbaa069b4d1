//! vessel.toml parsing of any text: what parses writes back to itself and is checked.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    vm_library_fuzz::vessel_toml(data);
});
