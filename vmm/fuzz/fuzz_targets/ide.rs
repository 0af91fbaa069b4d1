//! The IDE controller and its ATAPI CD-ROM under a hostile driver: every byte pair is a
//! register access (which channel port or bus-master register, which register, read or
//! write, the value), so the fuzzer drives commands, packets (any CDB), PIO and DMA
//! transfers, resets and interrupt enables in any order against a small disc. The input
//! itself is also guest memory from address 0, so a PRD table the bus master is pointed
//! at (an address whose bytes are all equal: 0, 0x01010101...) is fuzzer-made.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use vm_memory::{Bytes, GuestAddress};
use vmm::devices::bus::BusDevice;
use vmm::devices::pci::PciDevice;
use vmm::devices::storage::ide::{
    BUS_MASTER_BAR, IdeController, PRIMARY_CMD, SECONDARY_CMD, SECONDARY_CTRL,
};
use vmm::devices::storage::mmc::{CdRom, Media};
use vmm::vstate::memory::GuestMem;
use vmm_sys_util::eventfd::EventFd;

fn disc() -> &'static std::path::Path {
    static PATH: OnceLock<std::path::PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let path = std::env::temp_dir().join(format!("vessel-fuzz-ide-{}.iso", std::process::id()));
        std::fs::write(&path, vec![0x5a; 8 * 2048]).unwrap();
        path
    })
}

fuzz_target!(|data: &[u8]| {
    let mut cd = CdRom::new("fuzz");
    cd.insert(Media::open(disc()).unwrap());
    let irq = || EventFd::new(libc::EFD_NONBLOCK).unwrap();
    let mem = GuestMem::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
    mem.write_slice(&data[..data.len().min(1 << 20)], GuestAddress(0)).unwrap();
    let mut ide = IdeController::new(Some(cd), [irq(), irq()], Some(mem));
    ide.config_write(4, &[0x05, 0x00]); // I/O decoding, bus mastering
    for op in data.chunks(2) {
        let (a, value) = (op[0], op.get(1).copied().unwrap_or(0));
        let width = if a & 0x80 != 0 { 4 } else { 2 };
        if a & 3 == 2 {
            // The bus-master registers (BAR4), any width.
            let port = u64::from(a >> 2) % 16;
            let len = if a & 0x80 != 0 { 4 } else { 1 };
            if a & 0x40 != 0 {
                let mut buf = [0u8; 4];
                ide.bar_read(BUS_MASTER_BAR, port, &mut buf[..len]);
            } else {
                ide.bar_write(BUS_MASTER_BAR, port, &[value; 4][..len]);
            }
            continue;
        }
        let (base, len) = match a & 3 {
            0 => (u64::from(SECONDARY_CMD), 8),
            1 => (u64::from(SECONDARY_CTRL), 1),
            _ => (u64::from(PRIMARY_CMD), 8),
        };
        let reg = u64::from(a >> 2) % len;
        if a & 0x40 != 0 {
            let mut buf = [0u8; 4];
            ide.read(base, reg, &mut buf[..if reg == 0 { width } else { 1 }]);
        } else {
            let buf = [value; 4];
            ide.write(base, reg, &buf[..if reg == 0 { width } else { 1 }]);
        }
    }
});
