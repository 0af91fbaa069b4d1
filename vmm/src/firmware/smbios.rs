//! SMBIOS 3.0 tables (DMTF DSP0134 3.0): what `dmidecode` in a guest reports of the
//! machine. Types 0 (BIOS), 1 (system: "Vessel", the VM's UUID and serial), 3 (enclosure),
//! 4 (the processor package), 16/17/19 (memory array, devices, mapped ranges), 32 (boot
//! status) and 127 (end). The 64-bit entry point ("_SM3_") and the structure table are
//! built separately: the firmware copies the table where it likes and sets its address
//! (SeaBIOS reads them from fw_cfg `etc/smbios/smbios-anchor` and `-tables`).

/// Bytes of the SMBIOS 3.0 entry point structure.
pub const ENTRY_POINT_LEN: usize = 0x18;

/// One memory device (type 17) covers at most this much RAM, as QEMU's DIMMs do.
const DIMM_BYTES: u64 = 16 << 30;

/// What the tables say about the machine.
#[derive(Clone, Debug)]
pub struct SmbiosConfig {
    /// The VM's UUID in RFC 4122 byte order (as `uuid::Uuid::as_bytes`).
    pub uuid: [u8; 16],
    pub product: String,
    pub serial: String,
    /// The firmware's version and release date (MM/DD/YYYY) for type 0.
    pub bios_version: String,
    pub bios_date: String,
    /// vCPUs: one package with this many cores, a thread each.
    pub vcpus: u8,
    /// CPUID leaf 1 EAX and EDX (type 4's processor ID).
    pub processor_id: (u32, u32),
    /// Guest RAM ranges: (start, length) in bytes.
    pub ram: Vec<(u64, u64)>,
}

/// The entry point and the structure table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Smbios {
    pub tables: Vec<u8>,
}

impl Smbios {
    /// The 64-bit entry point for a structure table placed at `table_address`, with its
    /// checksum.
    pub fn entry_point(&self, table_address: u64) -> [u8; ENTRY_POINT_LEN] {
        let mut e = [0u8; ENTRY_POINT_LEN];
        e[0..5].copy_from_slice(b"_SM3_");
        e[6] = ENTRY_POINT_LEN as u8;
        e[7] = 3; // major version
        e[8] = 0; // minor version
        e[9] = 0; // docrev
        e[10] = 1; // entry point revision: the 3.0 layout
        e[12..16].copy_from_slice(&(self.tables.len() as u32).to_le_bytes());
        e[16..24].copy_from_slice(&table_address.to_le_bytes());
        e[5] = checksum(&e);
        e
    }
}

/// The byte that makes `bytes` sum to zero (mod 256), given a zero in its place.
pub fn checksum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |sum, b| sum.wrapping_sub(*b))
}

/// One structure: its formatted area (after the 4-byte header) and its strings.
struct Structure {
    kind: u8,
    handle: u16,
    formatted: Vec<u8>,
    strings: Vec<String>,
}

impl Structure {
    fn new(kind: u8, handle: u16) -> Self {
        Structure { kind, handle, formatted: Vec::new(), strings: Vec::new() }
    }

    /// Adds a string and its number as a byte of the formatted area (0: no string).
    fn string(&mut self, text: &str) -> &mut Self {
        // Strings are NUL-terminated: a NUL inside one would cut it.
        let text: String = text.chars().filter(|c| *c != '\0').collect();
        if text.is_empty() {
            return self.u8(0);
        }
        self.strings.push(text);
        let n = self.strings.len() as u8;
        self.u8(n)
    }

    fn u8(&mut self, v: u8) -> &mut Self {
        self.formatted.push(v);
        self
    }

    fn u16(&mut self, v: u16) -> &mut Self {
        self.formatted.extend_from_slice(&v.to_le_bytes());
        self
    }

    fn u32(&mut self, v: u32) -> &mut Self {
        self.formatted.extend_from_slice(&v.to_le_bytes());
        self
    }

    fn u64(&mut self, v: u64) -> &mut Self {
        self.formatted.extend_from_slice(&v.to_le_bytes());
        self
    }

    fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.formatted.extend_from_slice(v);
        self
    }

    fn write(&self, out: &mut Vec<u8>) {
        out.push(self.kind);
        out.push((4 + self.formatted.len()) as u8);
        out.extend_from_slice(&self.handle.to_le_bytes());
        out.extend_from_slice(&self.formatted);
        // The string set: each NUL-terminated, then one more NUL (two if there are none).
        if self.strings.is_empty() {
            out.push(0);
        }
        for s in &self.strings {
            out.extend_from_slice(s.as_bytes());
            out.push(0);
        }
        out.push(0);
    }
}

/// The UUID as SMBIOS 2.6+ stores it: the first three fields little-endian (§7.2.1).
fn smbios_uuid(uuid: &[u8; 16]) -> [u8; 16] {
    let mut u = *uuid;
    u[0..4].reverse();
    u[4..6].reverse();
    u[6..8].reverse();
    u
}

pub fn build(c: &SmbiosConfig) -> Smbios {
    let mut all = Vec::new();
    let mut handle = 0u16;
    let mut next = || {
        handle += 1;
        handle - 1
    };

    // Type 0: BIOS information (§7.1), the 2.4 layout.
    let mut s = Structure::new(0, next());
    s.string("Vessel")
        .string(&c.bios_version)
        .u16(0xe800) // the runtime image's segment
        .string(&c.bios_date)
        .u8(0) // ROM size: 64 KiB
        .u64(1 << 3) // characteristics are not supported (as virtual firmware says)
        .u8(0)
        .u8(1 << 4) // extension byte 2: a virtual machine
        .u8(0) // system BIOS major release
        .u8(0)
        .u8(0xff) // no embedded controller
        .u8(0xff);
    all.push(s);

    // Type 1: system information (§7.2).
    let mut s = Structure::new(1, next());
    s.string("Vessel")
        .string(&c.product)
        .string(env!("CARGO_PKG_VERSION"))
        .string(&c.serial)
        .bytes(&smbios_uuid(&c.uuid))
        .u8(6) // wake-up type: power switch
        .string("") // SKU
        .string("Virtual Machine");
    all.push(s);

    // Type 3: system enclosure (§7.4), 2.7 layout with the SKU.
    let mut s = Structure::new(3, next());
    s.string("Vessel")
        .u8(1) // type: other
        .string(env!("CARGO_PKG_VERSION"))
        .string(&c.serial)
        .string("")
        .u8(3) // boot-up state: safe
        .u8(3) // power supply state: safe
        .u8(3) // thermal state: safe
        .u8(2) // security status: unknown
        .u32(0)
        .u8(0) // height: unspecified
        .u8(0) // power cords: unspecified
        .u8(0) // no contained elements
        .u8(0)
        .string("");
    all.push(s);

    // Type 4: the processor package (§7.5), 3.0 layout.
    let cores = c.vcpus.max(1);
    let mut s = Structure::new(4, next());
    s.string("CPU 0")
        .u8(3) // central processor
        .u8(0xfe) // family: see family 2
        .string("Vessel")
        .u32(c.processor_id.0)
        .u32(c.processor_id.1)
        .string("Vessel virtual CPU")
        .u8(0) // voltage
        .u16(0) // external clock: unknown
        .u16(2000) // max speed (MHz)
        .u16(2000) // current speed
        .u8(0x41) // socket populated, CPU enabled
        .u8(1) // upgrade: other
        .u16(0xffff)
        .u16(0xffff)
        .u16(0xffff) // no cache information
        .string("")
        .string("")
        .string("")
        .u8(cores)
        .u8(cores)
        .u8(cores)
        .u16(1 << 2) // characteristics: 64-bit capable
        .u16(1) // family 2: other
        .u16(u16::from(cores))
        .u16(u16::from(cores))
        .u16(u16::from(cores));
    all.push(s);

    // Type 16: the physical memory array (§7.17).
    let total: u64 = c.ram.iter().map(|(_, len)| len).sum();
    let dimms = total.div_ceil(DIMM_BYTES).max(1);
    let array = next();
    let mut s = Structure::new(16, array);
    s.u8(1) // location: other
        .u8(3) // use: system memory
        .u8(3) // error correction: none
        .u32(0x8000_0000) // maximum capacity: see the extended field
        .u16(0xfffe) // no error information
        .u16(dimms as u16)
        .u64(total);
    all.push(s);

    // Type 17: memory devices (§7.18), 16 GiB each, 2.8 layout.
    let mut left = total;
    for i in 0..dimms {
        let size = left.min(DIMM_BYTES);
        left -= size;
        let mib = size >> 20;
        let mut s = Structure::new(17, next());
        s.u16(array)
            .u16(0xfffe)
            .u16(64) // total width
            .u16(64) // data width
            .u16(if mib < 0x7fff { mib as u16 } else { 0x7fff }) // else: extended size
            .u8(9) // form factor: DIMM
            .u8(0)
            .string(&format!("DIMM {i}"))
            .string("")
            .u8(7) // type: RAM
            .u16(1 << 1) // type detail: other
            .u16(0) // speed: unknown
            .string("Vessel")
            .string("")
            .string("")
            .string("")
            .u8(0) // rank: unknown
            .u32(mib as u32) // extended size (MiB)
            .u16(0)
            .u16(0)
            .u16(0)
            .u16(0);
        all.push(s);
    }

    // Type 19: where the array's memory is mapped (§7.20), one per RAM range.
    for (start, len) in c.ram.iter().filter(|(_, len)| *len > 0) {
        let end = start + len - 1;
        let fits = end >> 10 < u64::from(u32::MAX);
        let mut s = Structure::new(19, next());
        s.u32(if fits { (start >> 10) as u32 } else { u32::MAX })
            .u32(if fits { (end >> 10) as u32 } else { u32::MAX })
            .u16(array)
            .u8(1) // partition width
            .u64(if fits { 0 } else { *start })
            .u64(if fits { 0 } else { end });
        all.push(s);
    }

    // Type 32: system boot information (§7.33): no errors.
    let mut s = Structure::new(32, next());
    s.bytes(&[0; 6]).u8(0);
    all.push(s);

    all.push(Structure::new(127, next()));
    let mut tables = Vec::new();
    for s in &all {
        s.write(&mut tables);
    }
    Smbios { tables }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> SmbiosConfig {
        SmbiosConfig {
            uuid: [
                0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66,
                0x77, 0x88,
            ],
            product: "Vessel Virtual Machine".into(),
            serial: "VESSEL-1234".into(),
            bios_version: "1.16.2".into(),
            bios_date: "04/01/2014".into(),
            vcpus: 4,
            processor_id: (0x000806ec, 0x178bfbff),
            // 3 GiB below the hole and 17 GiB above 4 GiB: 20 GiB, two DIMMs.
            ram: vec![(0, 3 << 30), (4 << 30, 17 << 30)],
        }
    }

    /// (type, length, handle, strings) of every structure, walking the table as a reader
    /// does.
    fn walk(t: &[u8]) -> Vec<(u8, u8, u16, Vec<String>)> {
        let mut out = Vec::new();
        let mut at = 0;
        while at < t.len() {
            let (kind, len) = (t[at], t[at + 1]);
            let handle = u16::from_le_bytes([t[at + 2], t[at + 3]]);
            let strings_at = at + usize::from(len);
            let end = strings_at + t[strings_at..].windows(2).position(|w| w == [0, 0]).unwrap();
            let strings = t[strings_at..end]
                .split(|b| *b == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8(s.to_vec()).unwrap())
                .collect();
            out.push((kind, len, handle, strings));
            at = end + 2;
        }
        out
    }

    #[test]
    fn the_tables_have_every_type_with_the_specs_lengths() {
        let smbios = build(&config());
        let all = walk(&smbios.tables);
        let kinds: Vec<u8> = all.iter().map(|s| s.0).collect();
        assert_eq!(kinds, [0, 1, 3, 4, 16, 17, 17, 19, 19, 32, 127]);
        let len = |k: u8| all.iter().find(|s| s.0 == k).unwrap().1;
        // DSP0134 3.0: the lengths of the layouts used.
        assert_eq!(
            [len(0), len(1), len(3), len(4), len(16), len(17), len(19), len(32), len(127)],
            [0x18, 0x1b, 0x16, 0x30, 0x17, 0x28, 0x1f, 0x0b, 4]
        );
        let handles: std::collections::BTreeSet<u16> = all.iter().map(|s| s.2).collect();
        assert_eq!(handles.len(), all.len(), "handles are unique");
        assert_eq!(
            all[1].3,
            [
                "Vessel",
                "Vessel Virtual Machine",
                env!("CARGO_PKG_VERSION"),
                "VESSEL-1234",
                "Virtual Machine"
            ]
        );
        let entry = smbios.entry_point(0x1000);
        assert_eq!(&entry[0..5], b"_SM3_");
        assert_eq!(entry.iter().fold(0u8, |s, b| s.wrapping_add(*b)), 0, "checksum");
        assert_eq!(
            u32::from_le_bytes(entry[12..16].try_into().unwrap()) as usize,
            smbios.tables.len()
        );
    }

    /// What `dmidecode` (an independent reader) makes of a dump: the entry point at 0,
    /// the table at 32, as `dmidecode --dump-bin` writes it.
    #[test]
    fn dmidecode_reads_a_vessel_machine_with_its_uuid() {
        let smbios = build(&config());
        let mut dump = smbios.entry_point(32).to_vec();
        dump.resize(32, 0);
        dump.extend_from_slice(&smbios.tables);
        let path = std::env::temp_dir().join(format!("vessel-smbios-{}.bin", std::process::id()));
        std::fs::write(&path, &dump).unwrap();
        let out = std::process::Command::new("dmidecode")
            .arg("--from-dump")
            .arg(&path)
            .output()
            .expect("dmidecode runs (tools/install-deps installs it)");
        let _ = std::fs::remove_file(&path);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
        for want in [
            "SMBIOS 3.0.0 present.",
            "Manufacturer: Vessel",
            "Product Name: Vessel Virtual Machine",
            "Serial Number: VESSEL-1234",
            "UUID: 12345678-9abc-def0-1122-334455667788",
            "Core Count: 4",
            "Thread Count: 4",
            "Size: 16 GB",
            "Size: 4 GB",
            "Maximum Capacity: 20 GB",
            "Ending Address: 0x000BFFFFFFF",
            "Starting Address: 0x00100000000",
            "System Boot Information",
            "End Of Table",
        ] {
            assert!(text.contains(want), "no {want:?} in:\n{text}");
        }
        assert!(!text.contains("Invalid") && !text.contains("wrong"), "{text}");
    }

    #[test]
    fn odd_names_and_huge_memory_stay_well_formed() {
        let mut c = config();
        c.product = "Bad\0Name".into();
        c.serial = String::new();
        c.ram = vec![(0, 1 << 30), (4 << 30, 8 << 40)];
        let all = walk(&build(&c).tables);
        assert_eq!(all[1].3[1], "BadName", "a NUL would end the string early");
        assert_eq!(all[1].3.len(), 4, "an empty serial is 'no string', not an empty one");
        // Memory past 4 TiB: the extended addresses (and 513 devices of 16 GiB).
        assert_eq!(all.iter().filter(|s| s.0 == 17).count(), 513);
        assert_eq!(all.last().unwrap().0, 127);
    }
}
