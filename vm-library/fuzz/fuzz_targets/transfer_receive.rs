//! A live migration's folder stream from a sender (a peer with the token, perhaps an
//! attacker): a VM arrives in the library, confined to its folder, or nothing is left.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    vm_library_fuzz::transfer_receive(data);
});
