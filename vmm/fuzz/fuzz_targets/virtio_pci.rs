//! The virtio-pci transport's registers from a hostile driver: common configuration, ISR, device configuration, notifications, the MSI-X table and PBA, configuration space, in any order, with queues brought up and kicked on the rings the input lays out.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmm_fuzz::targets;

fuzz_target!(|input: targets::PciInput| {
    targets::virtio_pci(&input);
});
