//! The vhost-user relay's message parser and router: framed messages of any kind and size from a hostile frontend, then a torn trailer.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmm_fuzz::targets;

fuzz_target!(|input: targets::RelayInput| {
    targets::vhost_user_relay(&input);
});
