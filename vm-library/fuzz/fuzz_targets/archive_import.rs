//! Archive import of any bytes: a VM inside the library, or nothing at all.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    vm_library_fuzz::archive_import(data);
});
