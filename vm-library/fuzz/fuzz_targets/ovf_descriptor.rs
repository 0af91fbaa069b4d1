//! An OVF descriptor of any bytes (VMware's, VirtualBox's, an attacker's): parsed within
//! bounds or refused; nothing panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    vm_library_fuzz::ovf_descriptor(data);
});
