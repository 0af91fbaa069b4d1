//! Configuration-space and BAR accesses from a hostile guest: the root bus with the host
//! bridge, a PC's multi-function slot 1 (the PIIX3's ISA bridge with its PIRQ registers as
//! function 0, a virtio-rng as function 1) and a virtio-rng in a slot of its own, reached
//! through ports 0xCF8/0xCFC, ECAM and the BARs wherever the guest moves them.
#![no_main]

use std::sync::{Arc, Mutex};

use libfuzzer_sys::fuzz_target;
use vmm::devices::bus::{Bus, BusDevice};
use vmm::devices::pci::isa_bridge::IsaBridge;
use vmm::devices::pci::root::{ConfigPorts, Ecam, PciRoot, Windows};
use vmm::devices::virtio::pci::VirtioPciDevice;
use vmm::devices::virtio::rng::Rng;
use vmm::sync::lock;

struct NoReset;

impl BusDevice for NoReset {
    fn read(&mut self, _: u64, _: u64, data: &mut [u8]) {
        data.fill(0);
    }
    fn write(&mut self, _: u64, _: u64, _: &[u8]) {}
}

fuzz_target!(|data: &[u8]| {
    let mmio = Arc::new(Bus::new("mmio"));
    let pio = Arc::new(Bus::new("pio"));
    let windows = Windows { mem32: (0xc000_0000, 0xe000_0000), io: (0xc000, 0x1_0000) };
    let root = Arc::new(Mutex::new(PciRoot::new(&mmio, &pio, windows)));
    pio.insert(
        0xcf8,
        8,
        Arc::new(Mutex::new(ConfigPorts::new(root.clone(), Arc::new(Mutex::new(NoReset))))),
    )
    .unwrap();
    mmio.insert(0xe000_0000, 1 << 20, Arc::new(Mutex::new(Ecam::new(root.clone())))).unwrap();
    let mem = vmm_fuzz::memory();
    let bridge = lock(&root).add_device(Arc::new(Mutex::new(IsaBridge::new(None)))).unwrap();
    let function = VirtioPciDevice::new(Box::new(Rng), mem.clone(), None, None).unwrap();
    lock(&root).add_function(bridge, 1, Arc::new(Mutex::new(function))).unwrap();
    let rng = VirtioPciDevice::new(Box::new(Rng), mem, None, None).unwrap();
    lock(&root).add_device(Arc::new(Mutex::new(rng))).unwrap();

    // Each access: kind, size, address (8 bytes), value (8 bytes).
    for op in data.chunks_exact(18) {
        let size = [1usize, 2, 4, 8][usize::from(op[1] % 4)];
        let addr = u64::from_le_bytes(op[2..10].try_into().unwrap());
        let value = op[10..18].to_vec();
        match op[0] % 6 {
            0 => pio.write(0xcf8 + addr % 8, &value[..size.min(4)]),
            1 => pio.read(0xcf8 + addr % 8, &mut vec![0; size.min(4)]),
            2 => mmio.write(0xe000_0000 + addr % (1 << 20), &value[..size]),
            3 => mmio.read(0xe000_0000 + addr % (1 << 20), &mut vec![0; size]),
            4 => mmio.write(0xc000_0000 + addr % (1 << 29), &value[..size]),
            _ => mmio.read(addr, &mut vec![0; size]),
        }
    }
});
