//! A live migration's frames as a sender sends them (a peer on the network, perhaps an
//! attacker): memory pass after pass into guest memory, then the state. Addresses are
//! checked against RAM, frames bounded; none panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmm_fuzz::targets;

fuzz_target!(|data: &[u8]| {
    targets::migration_receive(data);
});
