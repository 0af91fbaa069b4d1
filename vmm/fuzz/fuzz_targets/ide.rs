//! The IDE controller and its ATAPI CD-ROM under a hostile driver: every byte pair is a
//! register access (which channel port, which register, read or write, the value), so the
//! fuzzer drives commands, packets (any CDB), transfers, resets and interrupt enables in
//! any order against a small disc.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use vmm::devices::bus::BusDevice;
use vmm::devices::storage::ide::{IdeController, PRIMARY_CMD, SECONDARY_CMD, SECONDARY_CTRL};
use vmm::devices::storage::mmc::{CdRom, Media};
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
    let mut ide = IdeController::new(Some(cd), [irq(), irq()]);
    for op in data.chunks(2) {
        let (a, value) = (op[0], op.get(1).copied().unwrap_or(0));
        let (base, len) = match a & 3 {
            0 => (u64::from(SECONDARY_CMD), 8),
            1 => (u64::from(SECONDARY_CTRL), 1),
            2 => (u64::from(SECONDARY_CMD), 8),
            _ => (u64::from(PRIMARY_CMD), 8),
        };
        let reg = u64::from(a >> 2) % len;
        let width = if a & 0x80 != 0 { 4 } else { 2 };
        if a & 0x40 != 0 {
            let mut buf = [0u8; 4];
            ide.read(base, reg, &mut buf[..if reg == 0 { width } else { 1 }]);
        } else {
            let buf = [value; 4];
            ide.write(base, reg, &buf[..if reg == 0 { width } else { 1 }]);
        }
    }
});
