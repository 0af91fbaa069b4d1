//! Vessel's ACPI tables read back on the host by independent parsers: the `acpi` crate for
//! the static tables and ACPICA's `iasl` disassembler for the DSDT.

use std::ptr::NonNull;

use acpi::madt::{Madt, MadtEntry};
use acpi::{AcpiHandler, AcpiTables, PhysicalMapping, fadt::Fadt};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};
use vmm::arch::x86_64::acpi::write_tables;
use vmm::arch::x86_64::layout::{IOAPIC_START, PCI_ECAM_START};
use vmm::vstate::memory::{GuestMem, create_guest_memory};

/// Maps guest-physical addresses to the host mapping of the first RAM region.
#[derive(Clone, Copy)]
struct GuestPhys {
    base: usize,
}

impl AcpiHandler for GuestPhys {
    unsafe fn map_physical_region<T>(
        &self,
        physical_address: usize,
        size: usize,
    ) -> PhysicalMapping<Self, T> {
        let ptr = NonNull::new((self.base + physical_address) as *mut T).unwrap();
        // SAFETY: the tables lie inside guest RAM, which stays mapped for the whole test.
        unsafe { PhysicalMapping::new(physical_address, ptr, size, size, *self) }
    }
    fn unmap_physical_region<T>(_region: &PhysicalMapping<Self, T>) {}
}

/// Guest memory holding Vessel's tables for `vcpus`, and the RSDP address.
fn tables(vcpus: u8) -> (GuestMem, usize, GuestPhys) {
    let mem = create_guest_memory(64 << 20).unwrap();
    let layout = write_tables(&mem, vcpus).unwrap();
    let base = mem.get_host_address(GuestAddress(0)).unwrap() as usize;
    (mem, layout.rsdp as usize, GuestPhys { base })
}

#[test]
fn static_tables_parse_and_describe_the_platform() {
    let (_mem, rsdp, handler) = tables(4);
    // SAFETY: `rsdp` points at an RSDP inside the mapped guest memory.
    let acpi = unsafe { AcpiTables::from_rsdp(handler, rsdp) }
        .expect("RSDP, XSDT and checksums are valid");
    let mut sigs: Vec<String> = acpi.headers().map(|h| h.signature.as_str().to_string()).collect();
    sigs.sort();
    assert_eq!(sigs, vec!["APIC", "FACP", "MCFG"]);

    let mcfg = acpi.find_table::<acpi::mcfg::Mcfg>().unwrap();
    let ecam: Vec<(u64, u16, u8, u8)> = mcfg
        .entries()
        .iter()
        .map(|e| (e.base_address, e.pci_segment_group, e.bus_number_start, e.bus_number_end))
        .collect();
    assert_eq!(ecam, vec![(PCI_ECAM_START, 0, 0, 0)]);

    let fadt = acpi.find_table::<Fadt>().unwrap();
    let flags = fadt.flags;
    assert!(flags.system_is_hw_reduced_acpi(), "hardware-reduced platform");
    assert!(flags.power_button_is_control_method());
    assert!(flags.supports_system_reset_via_fadt());
    let reset = fadt.reset_register().unwrap();
    assert_eq!(reset.address, 0xcf9);
    assert_eq!(fadt.reset_value, 6);
    let sleep = fadt.sleep_control_register().unwrap().expect("sleep control register");
    assert_eq!(sleep.address, 0x600);
    let status = fadt.sleep_status_register().unwrap().expect("sleep status register");
    assert_eq!(status.address, 0x601);

    let madt = acpi.find_table::<Madt>().unwrap();
    let mut apic_ids = Vec::new();
    let (mut ioapics, mut overrides, mut nmis) = (Vec::new(), Vec::new(), 0);
    for entry in madt.get().entries() {
        match entry {
            MadtEntry::LocalApic(l) => apic_ids.push((l.processor_id, l.apic_id, l.flags & 1)),
            MadtEntry::IoApic(io) => {
                ioapics.push((io.io_apic_address, io.global_system_interrupt_base))
            }
            MadtEntry::InterruptSourceOverride(o) => {
                overrides.push((o.irq, o.global_system_interrupt))
            }
            MadtEntry::LocalApicNmi(n) => {
                assert_eq!((n.processor_id, n.nmi_line), (0xff, 1));
                nmis += 1;
            }
            _ => panic!("unexpected MADT entry"),
        }
    }
    assert_eq!(apic_ids, vec![(0, 0, 1), (1, 1, 1), (2, 2, 1), (3, 3, 1)]);
    assert_eq!(ioapics, vec![(IOAPIC_START as u32, 0)]);
    assert_eq!(overrides, vec![(0, 2)]);
    assert_eq!(nmis, 1);
}

/// Disassembles `table` with ACPICA's `iasl` (the reference AML compiler) and returns the
/// ASL text; `iasl` refuses malformed AML.
fn disassemble(table: &[u8]) -> String {
    let dir = std::env::temp_dir().join(format!("vessel-iasl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let dat = dir.join("dsdt.dat");
    std::fs::write(&dat, table).unwrap();
    let out = std::process::Command::new("iasl")
        .arg("-d")
        .arg(&dat)
        .current_dir(&dir)
        .output()
        .expect("iasl runs (apt-get install acpica-tools)");
    assert!(
        out.status.success(),
        "iasl rejected the DSDT:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let asl = std::fs::read_to_string(dir.join("dsdt.dsl")).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    asl
}

#[test]
fn dsdt_disassembles_with_acpica() {
    let (mem, rsdp, handler) = tables(2);
    // SAFETY: as above.
    let acpi = unsafe { AcpiTables::from_rsdp(handler, rsdp) }.unwrap();
    let dsdt = acpi.dsdt().unwrap();
    // The whole table, header included (the AmlTable address skips the 36-byte header).
    let mut table = vec![0u8; dsdt.length as usize + 36];
    mem.read_slice(&mut table, GuestAddress(dsdt.address as u64 - 36)).unwrap();
    let asl = disassemble(&table);
    let squashed = normalize(&asl);
    for needle in [
        "Name (_S5, Package (0x02) { 0x05, Zero })",
        "Device (C000)",
        "Device (C001)",
        "Name (_HID, \"ACPI0007\")",
        "Device (COM1) { Name (_HID, EisaId (\"PNP0501\"))",
        "IO (Decode16, 0x03F8, 0x03F8, 0x01, 0x08,)",
        "Device (PS2K) { Name (_HID, EisaId (\"PNP0303\"))",
        "Device (RTC) { Name (_HID, EisaId (\"PNP0B00\"))",
        "Device (PWRB) { Name (_HID, EisaId (\"PNP0C0C\"))",
        "Device (GED) { Name (_HID, \"ACPI0013\")",
        "Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive,,,) { 0x00000005, } Memory32Fixed (ReadWrite, 0xFED00000, 0x00001000,)",
        "OperationRegion (GDST, SystemMemory, 0xFED00000, 0x04)",
        "Device (PCI0) { Name (_HID, EisaId (\"PNP0A08\")) Name (_CID, EisaId (\"PNP0A03\"))",
        "WordBusNumber (ResourceProducer, MinFixed, MaxFixed, PosDecode, 0x0000, 0x0000, 0x0000, 0x0000, 0x0001,,,)",
        "IO (Decode16, 0x0CF8, 0x0CF8, 0x01, 0x08,)",
        "Name (_PRT, Package (0x7C) { Package (0x04) { 0x0001FFFF, Zero, Zero, 0x11 }, Package (0x04) { 0x0001FFFF, One, Zero, 0x12 },",
        "Package (0x04) { 0x001FFFFF, 0x03, Zero, 0x12 } })",
        "DWordMemory (ResourceProducer, PosDecode, MinFixed, MaxFixed, NonCacheable, ReadWrite, 0x00000000, 0xC0000000, 0xDFFFFFFF, 0x00000000, 0x20000000,,,, AddressRangeMemory, TypeStatic)",
        "Method (_EVT, 1, Serialized) { Local0 = GDAT",
        "Notify (\\_SB.PWRB, 0x80)",
    ] {
        assert!(squashed.contains(needle), "DSDT lacks {needle:?}:\n{asl}");
    }
    assert!(!squashed.contains("Device (C002)"), "only 2 CPUs");
}

/// ASL without comments, whitespace runs collapsed, no space before `)` or `,`.
fn normalize(asl: &str) -> String {
    let mut text = String::new();
    let mut rest = asl;
    while let Some(start) = rest.find("/*") {
        text.push_str(&rest[..start]);
        rest = rest[start..].find("*/").map_or("", |end| &rest[start + end + 2..]);
    }
    text.push_str(rest);
    let text: String =
        text.lines().map(|l| l.split("//").next().unwrap()).collect::<Vec<_>>().join(" ");
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    text.replace(" )", ")").replace(" ,", ",")
}
