//! What a machine's firmware (SeaBIOS, later OVMF) reads from the VMM: the fw_cfg
//! interface (`fw_cfg`), the SMBIOS tables (`smbios`) and ACPI through the linker/loader
//! (`acpi_loader`); and the firmware image itself (`image`), mapped as the machine's ROM.

pub mod acpi_loader;
pub mod fw_cfg;
pub mod image;
pub mod smbios;

use crate::arch::x86_64::layout::{
    E820_RAM, E820_RESERVED, PCI_ECAM_SIZE, PCI_ECAM_START, ram_ranges,
};
use crate::vstate::memory::GuestMem;
use fw_cfg::{FwCfg, FwCfgError};

/// An option ROM by its fw_cfg name, and its bytes.
pub type OptionRom = (String, Vec<u8>);

/// What the firmware is told about the machine through fw_cfg.
#[derive(Clone, Debug)]
pub struct FirmwareSetup {
    pub vcpus: u8,
    pub memory_bytes: u64,
    /// The VM's UUID (RFC 4122 byte order).
    pub uuid: [u8; 16],
    /// OpenFirmware device paths to boot from, in order (`bootorder`).
    pub boot_order: Vec<String>,
    /// Show the firmware's boot menu (Esc) for this many milliseconds; None: no menu.
    pub boot_menu_ms: Option<u16>,
    /// The I/O port the firmware mirrors its text screen to (SeaBIOS's serial console,
    /// `etc/sercon-port`), e.g. COM1's 0x3f8; None: none.
    pub serial_console: Option<u16>,
    /// Option ROMs by fw_cfg name: `pciVVVV,DDDD.rom` is the ROM of the PCI device with
    /// those IDs, which SeaBIOS runs with the device's address (as a ROM BAR's).
    pub option_roms: Vec<OptionRom>,
    pub smbios: smbios::SmbiosConfig,
}

/// The e820 map the firmware starts from (`etc/e820`, entries of address, length and type,
/// little-endian): the RAM ranges, and the ECAM window reserved. The firmware adds its
/// own reservations (its image, the EBDA) before it hands the map on.
pub fn e820(memory_bytes: u64) -> Vec<u8> {
    let mut entries: Vec<(u64, u64, u32)> = ram_ranges(memory_bytes)
        .into_iter()
        .map(|(start, len)| (vm_memory::Address::raw_value(&start), len as u64, E820_RAM))
        .collect();
    entries.push((PCI_ECAM_START, PCI_ECAM_SIZE, E820_RESERVED));
    entries.sort_by_key(|e| e.0);
    let mut out = Vec::with_capacity(entries.len() * 20);
    for (addr, len, kind) in entries {
        out.extend_from_slice(&addr.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&kind.to_le_bytes());
    }
    out
}

/// The fw_cfg device for a firmware boot of the machine `setup` describes: the legacy
/// items (RAM size, CPUs, UUID, boot menu), `etc/e820`, `bootorder`, `etc/boot-menu-wait`,
/// `etc/sercon-port`, the SMBIOS anchor and tables, and ACPI through the linker/loader.
pub fn fw_cfg(mem: GuestMem, setup: &FirmwareSetup) -> Result<FwCfg, FwCfgError> {
    let mut cfg = FwCfg::new(mem);
    cfg.set(fw_cfg::KEY_RAM_SIZE, setup.memory_bytes.to_le_bytes().to_vec());
    cfg.set(fw_cfg::KEY_NB_CPUS, u16::from(setup.vcpus).to_le_bytes().to_vec());
    cfg.set(fw_cfg::KEY_MAX_CPUS, u16::from(setup.vcpus).to_le_bytes().to_vec());
    cfg.set(fw_cfg::KEY_UUID, setup.uuid.to_vec());
    cfg.set(fw_cfg::KEY_NOGRAPHIC, 0u16.to_le_bytes().to_vec());
    // The timer (ISA IRQ 0) is IOAPIC pin 2 here, as the MADT's override says; SeaBIOS's
    // MP table says so too when told.
    cfg.set(fw_cfg::KEY_IRQ0_OVERRIDE, 1u32.to_le_bytes().to_vec());
    cfg.set(fw_cfg::KEY_BOOT_MENU, u16::from(setup.boot_menu_ms.is_some()).to_le_bytes().to_vec());
    cfg.add_file("etc/e820", e820(setup.memory_bytes), false)?;
    // One path a line, NUL-terminated, as QEMU writes it.
    let mut order = setup.boot_order.join("\n").into_bytes();
    order.push(0);
    cfg.add_file("bootorder", order, false)?;
    if let Some(ms) = setup.boot_menu_ms {
        cfg.add_file("etc/show-boot-menu", vec![1], false)?;
        cfg.add_file("etc/boot-menu-wait", ms.to_le_bytes().to_vec(), false)?;
    } else {
        cfg.add_file("etc/show-boot-menu", vec![0], false)?;
    }
    if let Some(port) = setup.serial_console {
        cfg.add_file("etc/sercon-port", port.to_le_bytes().to_vec(), false)?;
    }
    for (name, rom) in &setup.option_roms {
        cfg.add_file(name, rom.clone(), false)?;
    }
    let tables = smbios::build(&setup.smbios);
    cfg.add_file("etc/smbios/smbios-anchor", tables.entry_point(0).to_vec(), false)?;
    cfg.add_file("etc/smbios/smbios-tables", tables.tables, false)?;
    let acpi = acpi_loader::acpi_files(setup.vcpus);
    cfg.add_file(acpi_loader::FILE_TABLES, acpi.tables, false)?;
    cfg.add_file(acpi_loader::FILE_RSDP, acpi.rsdp, false)?;
    cfg.add_file(acpi_loader::FILE_LOADER, acpi.loader, false)?;
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> FirmwareSetup {
        FirmwareSetup {
            vcpus: 2,
            memory_bytes: 5 << 30,
            uuid: [7; 16],
            boot_order: vec!["/pci@i0cf8/*@5".into(), "/pci@i0cf8/ide@1,1/drive@1/disk@0".into()],
            boot_menu_ms: Some(2500),
            serial_console: Some(0x3f8),
            option_roms: vec![("pci1234,1111.rom".into(), vec![0x55, 0xaa, 1])],
            smbios: smbios::SmbiosConfig {
                uuid: [7; 16],
                product: "Vessel Virtual Machine".into(),
                serial: "S".into(),
                bios_version: "1".into(),
                bios_date: "01/01/2026".into(),
                vcpus: 2,
                processor_id: (0, 0),
                ram: vec![(0, 3 << 30), (4 << 30, 2 << 30)],
            },
        }
    }

    #[test]
    fn the_firmware_finds_what_seabios_reads() {
        let mem = crate::vstate::memory::create_guest_memory(16 << 20).unwrap();
        let cfg = fw_cfg(mem, &setup()).unwrap();
        // etc/e820: RAM to the hole, the ECAM window reserved, RAM above 4 GiB.
        let e820 = cfg.file("etc/e820").unwrap();
        let entry = |i: usize| {
            let e = &e820[20 * i..20 * (i + 1)];
            (
                u64::from_le_bytes(e[0..8].try_into().unwrap()),
                u64::from_le_bytes(e[8..16].try_into().unwrap()),
                u32::from_le_bytes(e[16..20].try_into().unwrap()),
            )
        };
        assert_eq!(e820.len(), 60);
        assert_eq!(entry(0), (0, 3 << 30, E820_RAM));
        assert_eq!(entry(1), (PCI_ECAM_START, PCI_ECAM_SIZE, E820_RESERVED));
        assert_eq!(entry(2), (4 << 30, 2 << 30, E820_RAM));
        assert_eq!(
            cfg.file("bootorder").unwrap(),
            b"/pci@i0cf8/*@5\n/pci@i0cf8/ide@1,1/drive@1/disk@0\0"
        );
        assert_eq!(cfg.file("etc/sercon-port").unwrap(), [0xf8, 0x03]);
        assert_eq!(cfg.file("pci1234,1111.rom").unwrap(), [0x55, 0xaa, 1]);
        assert_eq!(cfg.file("etc/boot-menu-wait").unwrap(), 2500u16.to_le_bytes());
        assert_eq!(&cfg.file("etc/smbios/smbios-anchor").unwrap()[..5], b"_SM3_");
        let loader = cfg.file(acpi_loader::FILE_LOADER).unwrap();
        assert_eq!(loader.len() % acpi_loader::COMMAND_LEN, 0);
        assert_eq!(&cfg.file(acpi_loader::FILE_RSDP).unwrap()[..8], b"RSD PTR ");
    }
}
