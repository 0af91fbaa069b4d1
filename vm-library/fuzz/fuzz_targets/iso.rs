//! ISO inspection of hostile images (vm_library_fuzz::iso).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    vm_library_fuzz::iso(data);
});
