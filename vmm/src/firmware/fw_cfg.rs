//! QEMU's firmware configuration interface (fw_cfg), as SeaBIOS and OVMF read it
//! (QEMU `docs/specs/fw_cfg.rst`): a 16-bit selector at port 0x510, a byte-wide data port
//! at 0x511, and the DMA interface at 0x514 (big-endian address, high word at 0x514, low
//! word at 0x518; writing the low word starts the transfer). Items are numbered; files
//! (named items such as `etc/e820` or `bootorder`) are listed in the directory at 0x19.
//!
//! The guest drives the selector, the offsets and the DMA descriptors: every access is
//! bounded by the item's size or the guest's own memory, and a bad descriptor ends with
//! the ERROR bit, never a panic.

use std::collections::BTreeMap;
use std::sync::Arc;

use vm_memory::{Bytes, GuestAddress};

use crate::vstate::memory::GuestMem;

/// The I/O ports: selector (2 bytes), data (1), a gap, DMA address (8).
pub const PORT_BASE: u16 = 0x510;
pub const PORT_LEN: u64 = 0x0c;
const SELECTOR: u64 = 0;
const DATA: u64 = 1;
const DMA_HIGH: u64 = 4;
const DMA_LOW: u64 = 8;

/// Well-known items (fw_cfg.rst, "Firmware Configuration Items").
pub const KEY_SIGNATURE: u16 = 0x0000;
pub const KEY_ID: u16 = 0x0001;
pub const KEY_UUID: u16 = 0x0002;
pub const KEY_RAM_SIZE: u16 = 0x0003;
pub const KEY_NOGRAPHIC: u16 = 0x0004;
pub const KEY_NB_CPUS: u16 = 0x0005;
pub const KEY_BOOT_MENU: u16 = 0x000e;
pub const KEY_MAX_CPUS: u16 = 0x000f;
pub const KEY_FILE_DIR: u16 = 0x0019;
/// x86's own items start at 0x8000; this one says ISA IRQ 0 reaches IOAPIC pin 2.
pub const KEY_IRQ0_OVERRIDE: u16 = 0x8002;
/// The first item number files get.
pub const KEY_FILE_FIRST: u16 = 0x0020;

/// Bit 0 of the ID item: the traditional (port) interface; bit 1: the DMA interface.
const ID_TRADITIONAL: u32 = 1 << 0;
const ID_DMA: u32 = 1 << 1;

/// What a read of the DMA address register returns: "QEMU CFG", big-endian.
pub const DMA_SIGNATURE: u64 = u64::from_be_bytes(*b"QEMU CFG");

/// DMA control bits (struct FWCfgDmaAccess.control).
pub const DMA_ERROR: u32 = 0x01;
pub const DMA_READ: u32 = 0x02;
pub const DMA_SKIP: u32 = 0x04;
pub const DMA_SELECT: u32 = 0x08;
pub const DMA_WRITE: u32 = 0x10;

/// Longest file name, with its terminating NUL (struct FWCfgFile.name).
pub const NAME_LEN: usize = 56;
/// Files the directory holds at most (items 0x20..0x4000, as QEMU's FW_CFG_FILE_SLOTS).
pub const MAX_FILES: usize = 0x1000;
/// Bytes one item may hold (the firmware's tables and images fit many times over).
pub const MAX_ITEM_BYTES: usize = 64 << 20;
/// Zeroes written into guest memory per step when a DMA read runs past an item.
const ZERO_CHUNK: usize = 64 << 10;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FwCfgError {
    #[error("fw_cfg file name {0:?} is empty, longer than 55 bytes, or not ASCII")]
    BadName(String),
    #[error("fw_cfg file {0:?} is there already")]
    Duplicate(String),
    #[error("fw_cfg holds at most {MAX_FILES} files")]
    TooManyFiles,
    #[error("fw_cfg item {name:?} of {len} bytes is larger than {MAX_ITEM_BYTES} bytes")]
    TooLarge { name: String, len: usize },
}

struct Item {
    data: Arc<[u8]>,
    /// The guest may write it through DMA (as QEMU's writable files, e.g. for the
    /// linker/loader's WRITE_POINTER).
    writable: bool,
}

/// The fw_cfg device: its items, the selected one and the offset reached in it.
pub struct FwCfg {
    items: BTreeMap<u16, Item>,
    /// Files by name, with their item number, in the order they were added.
    files: Vec<(String, u16)>,
    selected: u16,
    offset: usize,
    /// The DMA address register as the guest wrote it (high word, then low).
    dma_high: u32,
    mem: GuestMem,
}

impl FwCfg {
    /// A device with the signature, the ID (port and DMA interfaces) and an empty file
    /// directory; `mem` is what DMA reads and writes.
    pub fn new(mem: GuestMem) -> Self {
        let mut cfg = FwCfg {
            items: BTreeMap::new(),
            files: Vec::new(),
            selected: 0,
            offset: 0,
            dma_high: 0,
            mem,
        };
        cfg.set(KEY_SIGNATURE, b"QEMU".to_vec());
        cfg.set(KEY_ID, (ID_TRADITIONAL | ID_DMA).to_le_bytes().to_vec());
        cfg.set(KEY_FILE_DIR, cfg.directory());
        cfg
    }

    /// Sets item `key` (a well-known number, below the files) to `data`.
    pub fn set(&mut self, key: u16, data: Vec<u8>) {
        self.items.insert(key, Item { data: data.into(), writable: false });
    }

    /// Adds the file `name` with `data`; the guest may write it by DMA if `writable`.
    /// Returns its item number.
    pub fn add_file(
        &mut self,
        name: &str,
        data: Vec<u8>,
        writable: bool,
    ) -> Result<u16, FwCfgError> {
        if name.is_empty() || name.len() >= NAME_LEN || !name.is_ascii() || name.contains('\0') {
            return Err(FwCfgError::BadName(name.into()));
        }
        if self.files.iter().any(|(n, _)| n == name) {
            return Err(FwCfgError::Duplicate(name.into()));
        }
        if self.files.len() >= MAX_FILES {
            return Err(FwCfgError::TooManyFiles);
        }
        if data.len() > MAX_ITEM_BYTES {
            return Err(FwCfgError::TooLarge { name: name.into(), len: data.len() });
        }
        let key = KEY_FILE_FIRST + self.files.len() as u16;
        self.items.insert(key, Item { data: data.into(), writable });
        self.files.push((name.to_string(), key));
        let directory = self.directory();
        self.set(KEY_FILE_DIR, directory);
        Ok(key)
    }

    /// The contents of the file `name` as they are now (the guest may have written it).
    pub fn file(&self, name: &str) -> Option<&[u8]> {
        let (_, key) = self.files.iter().find(|(n, _)| n == name)?;
        self.items.get(key).map(|i| &i.data[..])
    }

    /// The file directory (struct FWCfgFiles): a big-endian count, then for each file its
    /// big-endian size and item number, a reserved u16 and its NUL-padded name, sorted by
    /// name as QEMU sorts them.
    fn directory(&self) -> Vec<u8> {
        let mut files: Vec<&(String, u16)> = self.files.iter().collect();
        files.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out = Vec::with_capacity(4 + files.len() * 64);
        out.extend_from_slice(&(files.len() as u32).to_be_bytes());
        for (name, key) in files {
            let size = self.items.get(key).map_or(0, |i| i.data.len());
            out.extend_from_slice(&(size as u32).to_be_bytes());
            out.extend_from_slice(&key.to_be_bytes());
            out.extend_from_slice(&0u16.to_be_bytes());
            let mut padded = [0u8; NAME_LEN];
            padded[..name.len()].copy_from_slice(name.as_bytes());
            out.extend_from_slice(&padded);
        }
        out
    }

    fn select(&mut self, key: u16) {
        self.selected = key;
        self.offset = 0;
    }

    /// The next byte of the selected item through the data port; 0 past its end or for
    /// an item that does not exist.
    fn read_data(&mut self) -> u8 {
        let byte = self.items.get(&self.selected).and_then(|i| i.data.get(self.offset).copied());
        if byte.is_some() {
            self.offset += 1;
        }
        byte.unwrap_or(0)
    }

    /// Runs the DMA descriptor at `addr` (struct FWCfgDmaAccess, big-endian: control,
    /// length, address) and writes its control word back: 0 when done, ERROR otherwise.
    fn dma(&mut self, addr: u64) {
        let mut descriptor = [0u8; 16];
        if self.mem.read_slice(&mut descriptor, GuestAddress(addr)).is_err() {
            log::debug!("fw_cfg: DMA descriptor at {addr:#x} is outside guest memory");
            return;
        }
        let control = u32::from_be_bytes(descriptor[0..4].try_into().expect("4 bytes"));
        let length = u32::from_be_bytes(descriptor[4..8].try_into().expect("4 bytes"));
        let target = u64::from_be_bytes(descriptor[8..16].try_into().expect("8 bytes"));
        if control & DMA_SELECT != 0 {
            self.select((control >> 16) as u16);
        }
        let ok = if control & DMA_READ != 0 {
            self.dma_read(target, length as usize)
        } else if control & DMA_WRITE != 0 {
            self.dma_write(target, length as usize)
        } else if control & DMA_SKIP != 0 {
            self.offset = self.offset.saturating_add(length as usize);
            true
        } else {
            true
        };
        let done: u32 = if ok { 0 } else { DMA_ERROR };
        // The firmware polls the control word until it no longer has READ/WRITE/SKIP set.
        if self.mem.write_slice(&done.to_be_bytes(), GuestAddress(addr)).is_err() {
            log::debug!("fw_cfg: cannot complete the DMA descriptor at {addr:#x}");
        }
    }

    /// Copies `length` bytes of the selected item into guest memory at `target`; past the
    /// item's end the guest gets zeroes (as QEMU does).
    fn dma_read(&mut self, target: u64, length: usize) -> bool {
        let data = self.items.get(&self.selected).map(|i| i.data.clone());
        let available = data.as_ref().map_or(0, |d| d.len().saturating_sub(self.offset));
        let from_item = available.min(length);
        if from_item > 0 {
            let data = data.expect("available > 0");
            let bytes = &data[self.offset..self.offset + from_item];
            if self.mem.write_slice(bytes, GuestAddress(target)).is_err() {
                return false;
            }
            self.offset += from_item;
        }
        let zeros = [0u8; ZERO_CHUNK];
        let mut at = from_item;
        while at < length {
            let n = (length - at).min(ZERO_CHUNK);
            let Some(addr) = target.checked_add(at as u64) else { return false };
            if self.mem.write_slice(&zeros[..n], GuestAddress(addr)).is_err() {
                return false;
            }
            at += n;
        }
        true
    }

    /// Writes `length` bytes from guest memory at `target` into the selected item at the
    /// current offset: only a writable item, and only within its size.
    fn dma_write(&mut self, target: u64, length: usize) -> bool {
        let Some(item) = self.items.get_mut(&self.selected) else { return false };
        let end = self.offset.checked_add(length);
        if !item.writable || end.is_none_or(|end| end > item.data.len()) {
            return false;
        }
        let mut data = item.data.to_vec();
        let range = self.offset..self.offset + length;
        if self.mem.read_slice(&mut data[range], GuestAddress(target)).is_err() {
            return false;
        }
        item.data = data.into();
        self.offset += length;
        true
    }
}

/// What the guest changed of the fw_cfg device: the item selected and the offset in it,
/// the DMA address's high word, and the writable items' contents (the rest comes from the
/// machine's configuration, as it was built).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FwCfgState {
    selected: u16,
    offset: u64,
    dma_high: u32,
    writable: Vec<(u16, Vec<u8>)>,
}

impl crate::persist::Persist for FwCfg {
    type State = FwCfgState;

    fn save_state(&self) -> FwCfgState {
        let writable = (self.items.iter())
            .filter(|(_, item)| item.writable)
            .map(|(key, item)| (*key, item.data.to_vec()))
            .collect();
        FwCfgState {
            selected: self.selected,
            offset: self.offset as u64,
            dma_high: self.dma_high,
            writable,
        }
    }

    fn restore_state(
        &mut self,
        state: &FwCfgState,
    ) -> Result<(), crate::persist::DeviceStateError> {
        let problem = |p: String| crate::persist::DeviceStateError::new("fw_cfg device", p);
        for (key, data) in &state.writable {
            match self.items.get(key) {
                Some(item) if item.writable && item.data.len() == data.len() => {}
                _ => {
                    return Err(problem(format!(
                        "item {key:#x} of {} bytes was no writable item of that size",
                        data.len()
                    )));
                }
            }
        }
        for (key, data) in &state.writable {
            if let Some(item) = self.items.get_mut(key) {
                item.data = data.clone().into();
            }
        }
        self.selected = state.selected;
        // Any offset reads as past the item's end: zeroes.
        self.offset = usize::try_from(state.offset).unwrap_or(usize::MAX);
        self.dma_high = state.dma_high;
        Ok(())
    }
}

impl crate::devices::bus::BusDevice for FwCfg {
    fn read(&mut self, _base: u64, offset: u64, data: &mut [u8]) {
        match (offset, data.len()) {
            (DATA, _) => {
                // A wider read at the data port returns that many consecutive bytes.
                for byte in data.iter_mut() {
                    *byte = self.read_data();
                }
            }
            (o, n) if (DMA_HIGH..DMA_HIGH + 8).contains(&o) => {
                let signature = DMA_SIGNATURE.to_be_bytes();
                let start = (o - DMA_HIGH) as usize;
                let end = (start + n).min(8);
                data.fill(0);
                data[..end - start].copy_from_slice(&signature[start..end]);
            }
            _ => data.fill(0),
        }
    }

    fn write(&mut self, _base: u64, offset: u64, data: &[u8]) {
        match (offset, data.len()) {
            (SELECTOR, 2) => self.select(u16::from_le_bytes([data[0], data[1]])),
            // The data port is read-only since QEMU 2.4; writes are ignored.
            (DATA, _) => {}
            (DMA_HIGH, 4) => {
                self.dma_high = u32::from_be_bytes(data.try_into().expect("4 bytes"));
            }
            (DMA_LOW, 4) => {
                let low = u32::from_be_bytes(data.try_into().expect("4 bytes"));
                let addr = (u64::from(self.dma_high) << 32) | u64::from(low);
                self.dma_high = 0;
                self.dma(addr);
            }
            _ => log::debug!("fw_cfg: {}-byte write at offset {offset} ignored", data.len()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::bus::BusDevice;
    use crate::vstate::memory::create_guest_memory;

    fn device() -> (FwCfg, GuestMem) {
        let mem = create_guest_memory(16 << 20).unwrap();
        (FwCfg::new(mem.clone()), mem)
    }

    fn select(cfg: &mut FwCfg, key: u16) {
        cfg.write(0, SELECTOR, &key.to_le_bytes());
    }

    fn read_port(cfg: &mut FwCfg, n: usize) -> Vec<u8> {
        (0..n)
            .map(|_| {
                let mut b = [0u8];
                cfg.read(0, DATA, &mut b);
                b[0]
            })
            .collect()
    }

    /// Writes a descriptor at `at` and starts it the way SeaBIOS does (high word, then
    /// low word, each big-endian); returns the control word the device left.
    fn dma(cfg: &mut FwCfg, mem: &GuestMem, at: u64, control: u32, len: u32, target: u64) -> u32 {
        let mut d = Vec::new();
        d.extend_from_slice(&control.to_be_bytes());
        d.extend_from_slice(&len.to_be_bytes());
        d.extend_from_slice(&target.to_be_bytes());
        mem.write_slice(&d, GuestAddress(at)).unwrap();
        cfg.write(0, DMA_HIGH, &((at >> 32) as u32).to_be_bytes());
        cfg.write(0, DMA_LOW, &(at as u32).to_be_bytes());
        let mut c = [0u8; 4];
        mem.read_slice(&mut c, GuestAddress(at)).unwrap();
        u32::from_be_bytes(c)
    }

    #[test]
    fn signature_id_and_the_dma_signature() {
        let (mut cfg, _) = device();
        select(&mut cfg, KEY_SIGNATURE);
        assert_eq!(read_port(&mut cfg, 4), b"QEMU");
        assert_eq!(read_port(&mut cfg, 2), [0, 0], "past the end: zeroes");
        select(&mut cfg, KEY_ID);
        assert_eq!(read_port(&mut cfg, 4), [3, 0, 0, 0], "port and DMA interfaces");
        let mut sig = [0u8; 8];
        cfg.read(0, DMA_HIGH, &mut sig);
        assert_eq!(&sig, b"QEMU CFG");
        let mut low = [0u8; 4];
        cfg.read(0, DMA_LOW, &mut low);
        assert_eq!(&low, b" CFG");
        select(&mut cfg, 0x1234);
        assert_eq!(read_port(&mut cfg, 3), [0, 0, 0], "an item that does not exist");
    }

    #[test]
    fn files_are_listed_sorted_and_read_by_port_and_dma() {
        let (mut cfg, mem) = device();
        let b = cfg.add_file("etc/zeta", vec![9; 3], false).unwrap();
        let a = cfg.add_file("bootorder", b"/pci@i0cf8/*@3\n".to_vec(), false).unwrap();
        assert_eq!((b, a), (KEY_FILE_FIRST, KEY_FILE_FIRST + 1));
        select(&mut cfg, KEY_FILE_DIR);
        let dir = read_port(&mut cfg, 4 + 2 * 64);
        assert_eq!(u32::from_be_bytes(dir[0..4].try_into().unwrap()), 2);
        let entry = |i: usize| &dir[4 + 64 * i..4 + 64 * (i + 1)];
        assert_eq!(u32::from_be_bytes(entry(0)[0..4].try_into().unwrap()), 15);
        assert_eq!(u16::from_be_bytes(entry(0)[4..6].try_into().unwrap()), a);
        assert_eq!(&entry(0)[8..17], b"bootorder");
        assert_eq!(entry(0)[17], 0, "NUL-terminated");
        assert_eq!(&entry(1)[8..16], b"etc/zeta");
        // DMA: select and read in one descriptor, with a length past the item's end.
        let target = 0x20_0000;
        mem.write_slice(&[0xff; 32], GuestAddress(target)).unwrap();
        let control = (u32::from(a) << 16) | DMA_SELECT | DMA_READ;
        assert_eq!(dma(&mut cfg, &mem, 0x1000, control, 20, target), 0, "done");
        let mut got = [0u8; 21];
        mem.read_slice(&mut got, GuestAddress(target)).unwrap();
        assert_eq!(&got[..15], b"/pci@i0cf8/*@3\n");
        assert_eq!(&got[15..20], &[0; 5], "zeroes past the end");
        assert_eq!(got[20], 0xff, "nothing past the length");
        // Skip, then read on from the new offset through the port.
        select(&mut cfg, a);
        assert_eq!(dma(&mut cfg, &mem, 0x1000, DMA_SKIP, 5, 0), 0);
        assert_eq!(read_port(&mut cfg, 4), b"i0cf");
        assert_eq!(
            cfg.add_file("bootorder", Vec::new(), false),
            Err(FwCfgError::Duplicate("bootorder".into()))
        );
        assert!(matches!(
            cfg.add_file(&"x".repeat(56), Vec::new(), false),
            Err(FwCfgError::BadName(_))
        ));
    }

    #[test]
    fn only_writable_files_take_dma_writes_within_their_size() {
        let (mut cfg, mem) = device();
        let ro = cfg.add_file("etc/ro", vec![0; 8], false).unwrap();
        let rw = cfg.add_file("etc/rw", vec![0; 8], true).unwrap();
        mem.write_slice(&[1, 2, 3, 4, 5, 6, 7, 8, 9], GuestAddress(0x3000)).unwrap();
        let sel = |key: u16| (u32::from(key) << 16) | DMA_SELECT | DMA_WRITE;
        assert_eq!(dma(&mut cfg, &mem, 0x1000, sel(ro), 4, 0x3000), DMA_ERROR);
        assert_eq!(cfg.file("etc/ro"), Some(&[0u8; 8][..]));
        assert_eq!(dma(&mut cfg, &mem, 0x1000, sel(rw), 4, 0x3000), 0);
        assert_eq!(cfg.file("etc/rw"), Some(&[1, 2, 3, 4, 0, 0, 0, 0][..]));
        // On from offset 4; past the end is refused and changes nothing.
        assert_eq!(dma(&mut cfg, &mem, 0x1000, DMA_WRITE, 5, 0x3000), DMA_ERROR);
        assert_eq!(dma(&mut cfg, &mem, 0x1000, DMA_WRITE, 4, 0x3004), 0);
        assert_eq!(cfg.file("etc/rw"), Some(&[1, 2, 3, 4, 5, 6, 7, 8][..]));
    }

    #[test]
    fn hostile_descriptors_end_in_error_not_a_panic() {
        let (mut cfg, mem) = device();
        let key = cfg.add_file("etc/data", vec![7; 100], false).unwrap();
        let top = (16 << 20) - 16;
        let sel = (u32::from(key) << 16) | DMA_SELECT | DMA_READ;
        // A target outside guest memory; one running off its end; a 4 GiB read.
        assert_eq!(dma(&mut cfg, &mem, 0x1000, sel, 100, 1 << 40), DMA_ERROR);
        assert_eq!(dma(&mut cfg, &mem, 0x1000, sel, 100, top), DMA_ERROR);
        assert_eq!(dma(&mut cfg, &mem, 0x1000, sel, u32::MAX, 0x10_0000), DMA_ERROR);
        // A target address that wraps around.
        assert_eq!(dma(&mut cfg, &mem, 0x1000, sel, 100, u64::MAX - 10), DMA_ERROR);
        // A descriptor outside guest memory: nothing to answer, nothing happens.
        cfg.write(0, DMA_HIGH, &0x10u32.to_be_bytes());
        cfg.write(0, DMA_LOW, &0u32.to_be_bytes());
        // Skips past the end of an item leave reads at zero.
        select(&mut cfg, key);
        assert_eq!(dma(&mut cfg, &mem, 0x1000, DMA_SKIP, u32::MAX, 0), 0);
        assert_eq!(read_port(&mut cfg, 2), [0, 0]);
        // Odd-sized port accesses are ignored or read as zeroes.
        cfg.write(0, SELECTOR, &[1]);
        cfg.write(0, 2, &[1, 2]);
        let mut wide = [0xffu8; 2];
        cfg.read(0, 2, &mut wide);
        assert_eq!(wide, [0, 0]);
    }
}
