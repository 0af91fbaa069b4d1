//! ACPI tables for a hardware-reduced x86 platform (ACPI 6.5): RSDP → XSDT → FADT (→ DSDT)
//! and MADT, written into the BIOS area where both the RSDP pointer in the boot protocol
//! and a legacy scan find them.

use acpi_tables::aml;
use acpi_tables::fadt::{FADTBuilder, Flags};
use acpi_tables::gas::{AccessSize, AddressSpace, GAS};
use acpi_tables::rsdp::Rsdp;
use acpi_tables::sdt::Sdt;
use acpi_tables::xsdt::XSDT;
use acpi_tables::{Aml, AmlSink};
use vm_memory::{Bytes, GuestAddress};

use super::layout::{
    APIC_START, AUX_GSI, BIOS_AREA_END, CMOS_PORT, COM1_GSI, COM1_PORT, GED_GSI, GED_MMIO_BASE,
    GED_MMIO_SIZE, I8042_COMMAND_PORT, I8042_DATA_PORT, IOAPIC_START, KBD_GSI, PCI_CONFIG_PORT,
    PCI_ECAM_START, PCI_MMIO32_END, PCI_MMIO32_START, RESET_CONTROL_PORT, RESET_VALUE, RSDP_START,
    S5_SLEEP_TYPE, SLEEP_CONTROL_PORT, SLEEP_STATUS_PORT,
};
use crate::vstate::memory::GuestMem;

const OEM_ID: [u8; 6] = *b"VESSEL";
const OEM_TABLE_ID: [u8; 8] = *b"VESSELVM";
const OEM_REVISION: u32 = 1;

/// GED event bits, in the 32-bit event register at `GED_MMIO_BASE` (read clears them).
pub const GED_EVENT_POWER_BUTTON: u32 = 1 << 0;

#[derive(Debug, thiserror::Error)]
pub enum AcpiError {
    #[error("the ACPI tables ({0} bytes) do not fit in the BIOS area")]
    TooLarge(usize),
    #[error("cannot write the ACPI tables to guest memory")]
    Memory(#[from] vm_memory::GuestMemoryError),
}

fn io_gas(port: u16, width_bits: u8) -> GAS {
    let access = if width_bits == 8 { AccessSize::ByteAccess } else { AccessSize::DwordAccess };
    GAS::new(AddressSpace::SystemIo, width_bits, 0, access, u64::from(port))
}

/// The DSDT: processors, COM1, the i8042's keyboard and mouse, the RTC, the GED and its power button, `_S5`.
pub fn dsdt(vcpu_count: u8) -> Vec<u8> {
    let mut sb_children: Vec<Box<dyn Aml>> = Vec::new();

    for cpu in 0..vcpu_count {
        sb_children.push(Box::new(OwnedDevice::new(
            format!("C{cpu:03X}"),
            vec![
                Box::new(aml::Name::new("_HID".into(), &"ACPI0007")),
                Box::new(aml::Name::new("_UID".into(), &u32::from(cpu))),
                Box::new(StaticMethod::returning("_STA", 0xf)),
            ],
        )));
    }

    sb_children.push(Box::new(legacy_device("COM1", "PNP0501", &[(COM1_PORT, 8)], Some(COM1_GSI))));
    sb_children.push(Box::new(legacy_device(
        "PS2K",
        "PNP0303",
        &[(I8042_DATA_PORT, 1), (I8042_COMMAND_PORT, 1)],
        Some(KBD_GSI),
    )));
    // Its mouse: the same ports, its own interrupt.
    sb_children.push(Box::new(legacy_device("PS2M", "PNP0F13", &[], Some(AUX_GSI))));
    sb_children.push(Box::new(legacy_device("RTC_", "PNP0B00", &[(CMOS_PORT, 2)], Some(8))));

    // Power button: a control-method button (PNP0C0C) the GED notifies.
    sb_children.push(Box::new(OwnedDevice::new(
        "PWRB".to_string(),
        vec![
            Box::new(aml::Name::new("_HID".into(), &aml::EISAName::new("PNP0C0C"))),
            Box::new(aml::Name::new("_UID".into(), &0u8)),
        ],
    )));
    sb_children.push(Box::new(GedDevice));
    sb_children.push(Box::new(PciHostBridge));

    let sb_refs: Vec<&dyn Aml> = sb_children.iter().map(|c| c.as_ref()).collect();
    let sb = aml::Scope::new("\\_SB_".into(), sb_refs);
    let s5 = aml::Name::new("_S5_".into(), &aml::Package::new(vec![&S5_SLEEP_TYPE, &0u8]));

    let mut table = Sdt::new(*b"DSDT", 36, 6, OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    let mut body = Vec::new();
    sb.to_aml_bytes(&mut body);
    s5.to_aml_bytes(&mut body);
    table.append_slice(&body);
    table.as_slice().to_vec()
}

/// A device with a fixed `_HID`, I/O port ranges and an interrupt in its `_CRS`.
fn legacy_device(name: &str, hid: &str, ports: &[(u16, u8)], irq: Option<u32>) -> OwnedDevice {
    let ios: Vec<aml::IO> =
        ports.iter().map(|&(base, len)| aml::IO::new(base, base, 1, len)).collect();
    let interrupt = irq.map(|gsi| aml::Interrupt::new(true, true, false, false, gsi));
    let mut resources: Vec<&dyn Aml> = ios.iter().map(|io| io as &dyn Aml).collect();
    if let Some(int) = &interrupt {
        resources.push(int);
    }
    let mut crs = Vec::new();
    aml::Name::new("_CRS".into(), &aml::ResourceTemplate::new(resources)).to_aml_bytes(&mut crs);
    OwnedDevice::new(
        name.to_string(),
        vec![
            Box::new(aml::Name::new("_HID".into(), &aml::EISAName::new(hid))),
            Box::new(aml::Name::new("_UID".into(), &0u8)),
            Box::new(RawAml(crs)),
        ],
    )
}

/// The Generic Event Device (ACPI 6.5 §5.6.9): an interrupt whose `_EVT` reads the event
/// register and notifies the power button.
struct GedDevice;

impl Aml for GedDevice {
    fn to_aml_bytes(&self, sink: &mut dyn AmlSink) {
        let irq = aml::Interrupt::new(true, true, false, false, GED_GSI);
        let mmio = aml::Memory32Fixed::new(true, GED_MMIO_BASE as u32, GED_MMIO_SIZE as u32);
        let crs = aml::ResourceTemplate::new(vec![&irq, &mmio]);
        let base = GED_MMIO_BASE as u32;
        let len = 4u32;
        let region =
            aml::OpRegion::new("GDST".into(), aml::OpRegionSpace::SystemMemory, &base, &len);
        let field = aml::Field::new(
            "GDST".into(),
            aml::FieldAccessType::DWord,
            aml::FieldLockRule::NoLock,
            aml::FieldUpdateRule::WriteAsZeroes,
            vec![aml::FieldEntry::Named(*b"GDAT", 32)],
        );
        let event_bits = aml::Local(0);
        let gdat = aml::Path::new("GDAT");
        let read = aml::Store::new(&event_bits, &gdat);
        let power_bit = GED_EVENT_POWER_BUTTON;
        let masked = aml::And::new(&aml::ZERO, &event_bits, &power_bit);
        let pwrb = aml::Path::new("\\_SB_.PWRB");
        let notify = aml::Notify::new(&pwrb, &0x80u8);
        let if_power = aml::If::new(&masked, vec![&notify]);
        let evt = aml::Method::new("_EVT".into(), 1, true, vec![&read, &if_power]);
        aml::Device::new(
            "GED_".into(),
            vec![
                &aml::Name::new("_HID".into(), &"ACPI0013"),
                &aml::Name::new("_UID".into(), &0u8),
                &aml::Name::new("_CRS".into(), &crs),
                &region,
                &field,
                &evt,
            ],
        )
        .to_aml_bytes(sink);
    }
}

/// The PCI root bridge (PCI Firmware 3.2 §4.1.1): bus 0, its config ports, the I/O and
/// 32-bit memory windows BARs may use.
struct PciHostBridge;

impl Aml for PciHostBridge {
    fn to_aml_bytes(&self, sink: &mut dyn AmlSink) {
        let buses = aml::AddressSpace::new_bus_number(0u16, 0u16);
        let config_ports = aml::IO::new(PCI_CONFIG_PORT, PCI_CONFIG_PORT, 1, 8);
        let io_low = aml::AddressSpace::new_io(0u16, PCI_CONFIG_PORT - 1, None);
        let io_high = aml::AddressSpace::new_io(PCI_CONFIG_PORT + 8, 0xffffu16, None);
        let mem32 = aml::AddressSpace::new_memory(
            aml::AddressSpaceCacheable::NotCacheable,
            true,
            PCI_MMIO32_START as u32,
            (PCI_MMIO32_END - 1) as u32,
            None,
        );
        let crs =
            aml::ResourceTemplate::new(vec![&buses, &config_ports, &io_low, &io_high, &mem32]);
        // _PRT (§6.2.13): every slot's INTA-INTD straight to a GSI, no link devices.
        let routes: Vec<PrtEntry> = (1..crate::devices::pci::root::SLOTS)
            .flat_map(|slot| (0..4u8).map(move |pin| PrtEntry { slot: slot as u32, pin }))
            .collect();
        let route_refs: Vec<&dyn Aml> = routes.iter().map(|r| r as &dyn Aml).collect();
        let prt = aml::Package::new(route_refs);
        aml::Device::new(
            "PCI0".into(),
            vec![
                &aml::Name::new("_HID".into(), &aml::EISAName::new("PNP0A08")),
                &aml::Name::new("_CID".into(), &aml::EISAName::new("PNP0A03")),
                &aml::Name::new("_UID".into(), &0u8),
                &aml::Name::new("_SEG".into(), &0u8),
                &aml::Name::new("_BBN".into(), &0u8),
                &aml::Name::new("_CRS".into(), &crs),
                &aml::Name::new("_PRT".into(), &prt),
            ],
        )
        .to_aml_bytes(sink);
    }
}

/// One _PRT entry: Package { address (slot << 16 | 0xFFFF), pin, source 0, GSI }.
struct PrtEntry {
    slot: u32,
    pin: u8,
}

impl Aml for PrtEntry {
    fn to_aml_bytes(&self, sink: &mut dyn AmlSink) {
        let address = (self.slot << 16) | 0xffff;
        let gsi = crate::devices::pci::root::intx_gsi(self.slot as usize, self.pin);
        aml::Package::new(vec![&address, &self.pin, &0u8, &gsi]).to_aml_bytes(sink);
    }
}

/// The MCFG (PCI Firmware 3.2 §4.1.2): where ECAM is for bus 0.
pub fn mcfg() -> Vec<u8> {
    let mut table = acpi_tables::mcfg::MCFG::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    table.add_ecam(PCI_ECAM_START, 0, 0, 0);
    let mut bytes = Vec::new();
    table.to_aml_bytes(&mut bytes);
    bytes
}

/// AML bytes made elsewhere.
struct RawAml(Vec<u8>);

impl Aml for RawAml {
    fn to_aml_bytes(&self, sink: &mut dyn AmlSink) {
        sink.vec(&self.0);
    }
}

/// A `Method(NAME) { Return (value) }`.
struct StaticMethod {
    name: &'static str,
    value: u32,
}

impl StaticMethod {
    fn returning(name: &'static str, value: u32) -> Self {
        StaticMethod { name, value }
    }
}

impl Aml for StaticMethod {
    fn to_aml_bytes(&self, sink: &mut dyn AmlSink) {
        let ret = aml::Return::new(&self.value);
        aml::Method::new(self.name.into(), 0, false, vec![&ret]).to_aml_bytes(sink);
    }
}

/// A `Device` that owns its children (aml::Device borrows them).
struct OwnedDevice {
    name: String,
    children: Vec<Box<dyn Aml>>,
}

impl OwnedDevice {
    fn new(name: String, children: Vec<Box<dyn Aml>>) -> Self {
        OwnedDevice { name, children }
    }
}

impl Aml for OwnedDevice {
    fn to_aml_bytes(&self, sink: &mut dyn AmlSink) {
        let refs: Vec<&dyn Aml> = self.children.iter().map(|c| c.as_ref()).collect();
        aml::Device::new(self.name.as_str().into(), refs).to_aml_bytes(sink);
    }
}

/// The FADT of a hardware-reduced platform (ACPI 6.5 §5.2.9, §4.1).
pub fn fadt(dsdt_addr: u64) -> Vec<u8> {
    let mut fadt = FADTBuilder::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION)
        .dsdt_64(dsdt_addr)
        .flag(Flags::HwReducedAcpi)
        .flag(Flags::ResetRegSup)
        // Power and sleep buttons are control-method devices, not fixed features.
        .flag(Flags::PwrButton)
        .flag(Flags::SlpButton);
    fadt.sleep_control_reg = io_gas(SLEEP_CONTROL_PORT, 8);
    fadt.sleep_status_reg = io_gas(SLEEP_STATUS_PORT, 8);
    fadt.reset_reg = io_gas(RESET_CONTROL_PORT, 8);
    fadt.reset_value = RESET_VALUE;
    // IA-PC boot architecture flags (§5.2.9.3): an 8042 is present, VGA is not.
    fadt.iapc_boot_arch = ((1u16 << 1) | (1 << 2)).into();
    let mut bytes = Vec::new();
    fadt.finalize().to_aml_bytes(&mut bytes);
    bytes
}

/// The MADT (ACPI 6.5 §5.2.12): local APICs, the IOAPIC, the ISA IRQ0 → GSI2 override
/// and LINT1 as NMI on every processor.
pub fn madt(vcpu_count: u8) -> Vec<u8> {
    const PCAT_COMPAT: u32 = 1;
    let mut table = Sdt::new(*b"APIC", 44, 5, OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    table.write_u32(36, APIC_START as u32);
    table.write_u32(40, PCAT_COMPAT);
    for cpu in 0..vcpu_count {
        // Type 0, length 8: UID, APIC id, flags (enabled).
        table.append_slice(&[0, 8, cpu, cpu, 1, 0, 0, 0]);
    }
    // Type 1, length 12: IOAPIC id, reserved, address, GSI base 0.
    let ioapic_id = vcpu_count;
    let mut ioapic = vec![1, 12, ioapic_id, 0];
    ioapic.extend_from_slice(&(IOAPIC_START as u32).to_le_bytes());
    ioapic.extend_from_slice(&0u32.to_le_bytes());
    table.append_slice(&ioapic);
    // Type 2, length 10: bus 0 (ISA), source IRQ 0 → GSI 2, flags 0 (conforming).
    let mut iso = vec![2, 10, 0, 0];
    iso.extend_from_slice(&2u32.to_le_bytes());
    iso.extend_from_slice(&0u16.to_le_bytes());
    table.append_slice(&iso);
    // Type 4, length 6: local APIC NMI on all processors (0xff), flags 0, LINT1.
    table.append_slice(&[4, 6, 0xff, 0, 0, 1]);
    table.as_slice().to_vec()
}

/// Where each table landed, for tests and the boot protocol.
#[derive(Clone, Copy, Debug)]
pub struct AcpiLayout {
    pub rsdp: u64,
    pub xsdt: u64,
    pub fadt: u64,
    pub dsdt: u64,
    pub madt: u64,
    pub mcfg: u64,
    pub end: u64,
}

/// The tables after the RSDP, one after the other from `base` (16-byte aligned), with
/// every pointer between them made for that base.
pub struct TableImage {
    pub bytes: Vec<u8>,
    /// Offsets in `bytes`.
    pub dsdt: u64,
    pub fadt: u64,
    pub madt: u64,
    pub mcfg: u64,
    pub xsdt: u64,
}

impl TableImage {
    /// Where the pointers between the tables are: (offset in `bytes`, width in bytes).
    /// Each holds `base` plus an offset, so moving the image means adding to them.
    pub fn pointers(&self) -> Vec<(u64, u8)> {
        // FADT X_DSDT (ACPI 6.5 §5.2.9, offset 140), then the XSDT's entries.
        let mut pointers = vec![(self.fadt + 140, 8)];
        for i in 0..3 {
            pointers.push((self.xsdt + 36 + 8 * i, 8));
        }
        pointers
    }

    /// The tables: (offset in `bytes`, length), each with its checksum byte at +9.
    pub fn tables(&self) -> Vec<(u64, u64)> {
        [self.dsdt, self.fadt, self.madt, self.mcfg, self.xsdt]
            .iter()
            .map(|&at| {
                let len = &self.bytes[at as usize + 4..at as usize + 8];
                (at, u64::from(u32::from_le_bytes(len.try_into().expect("4 bytes"))))
            })
            .collect()
    }
}

/// DSDT, FADT, MADT, MCFG and XSDT laid out from `base`.
pub fn table_image(vcpu_count: u8, base: u64) -> TableImage {
    let align = |addr: u64| (addr + 15) & !15;
    let mut bytes = Vec::new();
    let place = |table: &[u8], bytes: &mut Vec<u8>| {
        let at = align(bytes.len() as u64);
        bytes.resize(at as usize, 0);
        bytes.extend_from_slice(table);
        at
    };
    let dsdt = place(&dsdt(vcpu_count), &mut bytes);
    let fadt = place(&fadt(base + dsdt), &mut bytes);
    let madt = place(&madt(vcpu_count), &mut bytes);
    let mcfg = place(&mcfg(), &mut bytes);
    let mut xsdt_table = XSDT::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    for at in [fadt, madt, mcfg] {
        xsdt_table.add_entry(base + at);
    }
    let mut xsdt_bytes = Vec::new();
    xsdt_table.to_aml_bytes(&mut xsdt_bytes);
    let xsdt = place(&xsdt_bytes, &mut bytes);
    TableImage { bytes, dsdt, fadt, madt, mcfg, xsdt }
}

/// The RSDP (ACPI 6.5 §5.2.5, revision 2) naming the XSDT at `xsdt`.
pub fn rsdp(xsdt: u64) -> Vec<u8> {
    let mut bytes = Vec::new();
    Rsdp::new(OEM_ID, xsdt).to_aml_bytes(&mut bytes);
    bytes
}

/// Writes all tables to guest memory; returns where they are.
pub fn write_tables(mem: &GuestMem, vcpu_count: u8) -> Result<AcpiLayout, AcpiError> {
    let rsdp_at = RSDP_START;
    let base = (rsdp_at + Rsdp::len() as u64 + 15) & !15;
    let image = table_image(vcpu_count, base);
    let end = base + image.bytes.len() as u64;
    if end > BIOS_AREA_END {
        return Err(AcpiError::TooLarge((end - rsdp_at) as usize));
    }
    mem.write_slice(&rsdp(base + image.xsdt), GuestAddress(rsdp_at))?;
    mem.write_slice(&image.bytes, GuestAddress(base))?;
    Ok(AcpiLayout {
        rsdp: rsdp_at,
        xsdt: base + image.xsdt,
        fadt: base + image.fadt,
        dsdt: base + image.dsdt,
        madt: base + image.madt,
        mcfg: base + image.mcfg,
        end,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checksum_ok(table: &[u8]) -> bool {
        table.iter().fold(0u8, |a, b| a.wrapping_add(*b)) == 0
    }

    #[test]
    fn tables_have_valid_checksums_and_lengths() {
        for table in [dsdt(4), fadt(0x1000), madt(4), mcfg()] {
            let len = u32::from_le_bytes(table[4..8].try_into().unwrap()) as usize;
            assert_eq!(len, table.len());
            assert!(checksum_ok(&table), "bad checksum in {:?}", &table[0..4]);
        }
    }

    #[test]
    fn tables_for_the_largest_machine_fit() {
        let mem = crate::vstate::memory::create_guest_memory(64 << 20).unwrap();
        let layout = write_tables(&mem, crate::machine::MAX_VCPUS).unwrap();
        assert!(layout.end <= BIOS_AREA_END);
    }

    #[test]
    fn madt_lists_every_cpu() {
        let madt = madt(3);
        let mut off = 44;
        let mut apic_ids = Vec::new();
        while off < madt.len() {
            let (kind, len) = (madt[off], madt[off + 1] as usize);
            if kind == 0 {
                apic_ids.push(madt[off + 3]);
            }
            off += len;
        }
        assert_eq!(off, madt.len());
        assert_eq!(apic_ids, vec![0, 1, 2]);
    }
}
