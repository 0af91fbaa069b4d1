//! qcow2 images of any bytes under the strict backing policy: nothing outside the VM is ever accepted.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    vm_library_fuzz::qcow2_policy(data);
});
