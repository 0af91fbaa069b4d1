//! ACPI for firmware through QEMU's linker/loader (`etc/table-loader`, QEMU
//! `hw/acpi/bios-linker-loader.c`): the tables go to the firmware as fw_cfg files with
//! offsets where addresses belong, and a script of 128-byte commands tells it to allocate
//! each file (ALLOCATE), add a file's final address to the pointers in another
//! (ADD_POINTER), fix checksums (ADD_CHECKSUM) and tell the VMM where a file went
//! (WRITE_POINTER). SeaBIOS and OVMF both run it; the tables are the ones direct boot
//! writes (`arch::x86_64::acpi`).

use crate::arch::x86_64::acpi;

pub const FILE_TABLES: &str = "etc/acpi/tables";
pub const FILE_RSDP: &str = "etc/acpi/rsdp";
pub const FILE_LOADER: &str = "etc/table-loader";

/// Bytes of one command (a u32 and a 124-byte union).
pub const COMMAND_LEN: usize = 128;
/// The file name field (as fw_cfg's, NUL-padded).
pub const NAME_LEN: usize = 56;

pub const CMD_ALLOCATE: u32 = 1;
pub const CMD_ADD_POINTER: u32 = 2;
pub const CMD_ADD_CHECKSUM: u32 = 3;
pub const CMD_WRITE_POINTER: u32 = 4;

/// Where ALLOCATE puts a file: anywhere in RAM (HIGH) or the 0xF0000 segment (FSEG, where
/// an RSDP must be for a legacy scan).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Zone {
    High = 1,
    Fseg = 2,
}

/// A linker/loader script being written.
#[derive(Default)]
pub struct Loader {
    script: Vec<u8>,
}

fn name(file: &str) -> [u8; NAME_LEN] {
    let mut n = [0u8; NAME_LEN];
    let len = file.len().min(NAME_LEN - 1);
    n[..len].copy_from_slice(&file.as_bytes()[..len]);
    n
}

impl Loader {
    fn command(&mut self, kind: u32, body: &[u8]) {
        let mut c = [0u8; COMMAND_LEN];
        c[0..4].copy_from_slice(&kind.to_le_bytes());
        c[4..4 + body.len()].copy_from_slice(body);
        self.script.extend_from_slice(&c);
    }

    /// Load `file` into memory aligned to `align` bytes in `zone`.
    pub fn allocate(&mut self, file: &str, align: u32, zone: Zone) {
        let mut b = name(file).to_vec();
        b.extend_from_slice(&align.to_le_bytes());
        b.push(zone as u8);
        self.command(CMD_ALLOCATE, &b);
    }

    /// Add the address `src` was loaded at to the `size`-byte little-endian value at
    /// `offset` in `dest`.
    pub fn add_pointer(&mut self, dest: &str, src: &str, offset: u32, size: u8) {
        let mut b = name(dest).to_vec();
        b.extend_from_slice(&name(src));
        b.extend_from_slice(&offset.to_le_bytes());
        b.push(size);
        self.command(CMD_ADD_POINTER, &b);
    }

    /// Make the bytes `start..start + length` of `file` sum to zero by setting the byte at
    /// `offset`.
    pub fn add_checksum(&mut self, file: &str, offset: u32, start: u32, length: u32) {
        let mut b = name(file).to_vec();
        for v in [offset, start, length] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        self.command(CMD_ADD_CHECKSUM, &b);
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.script
    }
}

/// The fw_cfg files that carry ACPI to the firmware.
pub struct AcpiFiles {
    pub tables: Vec<u8>,
    pub rsdp: Vec<u8>,
    pub loader: Vec<u8>,
}

/// The tables direct boot writes, as `etc/acpi/tables` and `etc/acpi/rsdp` with the
/// script that places and links them.
pub fn acpi_files(vcpu_count: u8) -> AcpiFiles {
    // Built for address 0: every pointer holds an offset into the tables file.
    let image = acpi::table_image(vcpu_count, 0);
    let rsdp = acpi::rsdp(image.xsdt);
    let mut loader = Loader::default();
    // The RSDP where a legacy scan finds it; the tables anywhere.
    loader.allocate(FILE_RSDP, 16, Zone::Fseg);
    loader.allocate(FILE_TABLES, 16, Zone::High);
    for (offset, size) in image.pointers() {
        loader.add_pointer(FILE_TABLES, FILE_TABLES, offset as u32, size);
    }
    for (at, len) in image.tables() {
        loader.add_checksum(FILE_TABLES, (at + 9) as u32, at as u32, len as u32);
    }
    // RSDP: XsdtAddress at 24; the ACPI 1.0 checksum over 20 bytes at 8, the extended
    // one over all 36 at 32 (ACPI 6.5 §5.2.5.3).
    loader.add_pointer(FILE_RSDP, FILE_TABLES, 24, 8);
    loader.add_checksum(FILE_RSDP, 8, 0, 20);
    loader.add_checksum(FILE_RSDP, 32, 0, rsdp.len() as u32);
    AcpiFiles { tables: image.bytes, rsdp, loader: loader.into_bytes() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::x86_64::layout::RSDP_START;
    use vm_memory::{Bytes, GuestAddress};

    /// A reader of the script written from QEMU's description, independent of `Loader`:
    /// places each file where `place` says, then links and checksums as a firmware does
    /// (SeaBIOS's romfile_loader_execute).
    fn run_script(
        files: &[(&str, Vec<u8>)],
        script: &[u8],
        place: impl Fn(&str) -> u64,
    ) -> Vec<(String, u64, Vec<u8>)> {
        let cstr = |b: &[u8]| {
            let end = b.iter().position(|c| *c == 0).unwrap_or(b.len());
            String::from_utf8(b[..end].to_vec()).unwrap()
        };
        let u32_at = |b: &[u8], at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
        let mut loaded: Vec<(String, u64, Vec<u8>)> = Vec::new();
        assert_eq!(script.len() % 128, 0);
        for c in script.chunks(128) {
            let body = &c[4..];
            match u32_at(c, 0) {
                1 => {
                    let file = cstr(&body[..56]);
                    let align = u64::from(u32_at(body, 56));
                    let at = place(&file);
                    assert_eq!(at % align, 0, "{file} aligned to {align}");
                    let data = files.iter().find(|(n, _)| *n == file).unwrap().1.clone();
                    loaded.push((file, at, data));
                }
                2 => {
                    let (dest, src) = (cstr(&body[..56]), cstr(&body[56..112]));
                    let (offset, size) = (u32_at(body, 112) as usize, body[116] as usize);
                    let src_at = loaded.iter().find(|l| l.0 == src).unwrap().1;
                    let d = &mut loaded.iter_mut().find(|l| l.0 == dest).unwrap().2;
                    let mut v = [0u8; 8];
                    v[..size].copy_from_slice(&d[offset..offset + size]);
                    let patched = (u64::from_le_bytes(v) + src_at).to_le_bytes();
                    d[offset..offset + size].copy_from_slice(&patched[..size]);
                }
                3 => {
                    let file = cstr(&body[..56]);
                    let (offset, start, len) = (
                        u32_at(body, 56) as usize,
                        u32_at(body, 60) as usize,
                        u32_at(body, 64) as usize,
                    );
                    let d = &mut loaded.iter_mut().find(|l| l.0 == file).unwrap().2;
                    let sum = d[start..start + len].iter().fold(0u8, |s, b| s.wrapping_add(*b));
                    d[offset] = d[offset].wrapping_sub(sum);
                }
                other => panic!("unknown command {other}"),
            }
        }
        loaded
    }

    #[test]
    fn the_loader_yields_the_tables_direct_boot_writes() {
        for vcpus in [1, 4, crate::machine::MAX_VCPUS] {
            let files = acpi_files(vcpus);
            // Direct boot: RSDP at 0xE0000, tables right after it.
            let mem = crate::vstate::memory::create_guest_memory(64 << 20).unwrap();
            let layout = acpi::write_tables(&mem, vcpus).unwrap();
            let tables_at = layout.dsdt;
            // The script run with the files placed at the same addresses.
            let loaded = run_script(
                &[(FILE_TABLES, files.tables.clone()), (FILE_RSDP, files.rsdp.clone())],
                &files.loader,
                |f| if f == FILE_RSDP { RSDP_START } else { tables_at },
            );
            for (file, at, bytes) in loaded {
                let mut direct = vec![0u8; bytes.len()];
                mem.read_slice(&mut direct, GuestAddress(at)).unwrap();
                assert_eq!(bytes, direct, "{file} for {vcpus} vCPUs");
            }
        }
    }

    #[test]
    fn tables_placed_anywhere_are_linked_and_checksummed() {
        let files = acpi_files(2);
        let loaded = run_script(
            &[(FILE_TABLES, files.tables.clone()), (FILE_RSDP, files.rsdp.clone())],
            &files.loader,
            |f| if f == FILE_RSDP { 0xf5a10 } else { 0x7fe_0000 },
        );
        let tables = &loaded.iter().find(|l| l.0 == FILE_TABLES).unwrap().2;
        let rsdp = &loaded.iter().find(|l| l.0 == FILE_RSDP).unwrap().2;
        let sum = |b: &[u8]| b.iter().fold(0u8, |s, x| s.wrapping_add(*x));
        assert_eq!((sum(&rsdp[..20]), sum(&rsdp[..36])), (0, 0), "both RSDP checksums");
        let xsdt = u64::from_le_bytes(rsdp[24..32].try_into().unwrap());
        let at = |addr: u64| (addr - 0x7fe_0000) as usize;
        assert_eq!(&tables[at(xsdt)..at(xsdt) + 4], b"XSDT");
        let len = |off: usize| u32::from_le_bytes(tables[off + 4..off + 8].try_into().unwrap());
        assert_eq!(sum(&tables[at(xsdt)..at(xsdt) + len(at(xsdt)) as usize]), 0);
        let entries = (len(at(xsdt)) as usize - 36) / 8;
        let mut signatures = Vec::new();
        for i in 0..entries {
            let e = at(xsdt) + 36 + 8 * i;
            let table = at(u64::from_le_bytes(tables[e..e + 8].try_into().unwrap()));
            assert_eq!(sum(&tables[table..table + len(table) as usize]), 0);
            signatures.push(String::from_utf8(tables[table..table + 4].to_vec()).unwrap());
            if &tables[table..table + 4] == b"FACP" {
                let dsdt =
                    at(u64::from_le_bytes(tables[table + 140..table + 148].try_into().unwrap()));
                assert_eq!(&tables[dsdt..dsdt + 4], b"DSDT");
                assert_eq!(sum(&tables[dsdt..dsdt + len(dsdt) as usize]), 0);
            }
        }
        assert_eq!(signatures, ["FACP", "APIC", "MCFG"]);
    }
}
