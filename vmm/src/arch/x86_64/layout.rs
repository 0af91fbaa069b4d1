//! The guest-physical address map of a Vessel x86-64 machine.
//!
//! Low memory follows the PC conventions Linux expects (real-mode IVT/BDA, EBDA below
//! 640 KiB, the BIOS area up to 1 MiB); RAM then runs up to the 32-bit MMIO hole at
//! 3 GiB and continues above 4 GiB when the machine is large (`ram_ranges`); `e820_map`
//! describes it all to the guest.

use vm_memory::{Address, GuestAddress};

/// Start of the GDT the VMM builds for the boot vCPU.
pub const BOOT_GDT_START: u64 = 0x500;
/// Start of the (empty) IDT loaded for the boot vCPU.
pub const BOOT_IDT_START: u64 = 0x520;
/// PVH `hvm_start_info` structure.
pub const PVH_INFO_START: u64 = 0x6000;
/// PVH module list (the initrd), right after the start info.
pub const PVH_MODLIST_START: u64 = PVH_INFO_START + 0x100;
/// PVH memory map, after the module list.
pub const PVH_MEMMAP_START: u64 = PVH_MODLIST_START + 0x100;
/// Linux `boot_params` ("zero page").
pub const ZERO_PAGE_START: u64 = 0x7000;
/// Initial stack pointer of the boot vCPU for the 64-bit boot protocol.
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// Identity-mapping page tables for the 64-bit boot protocol: PML4, PDPT, 4 PDs.
pub const PML4_START: u64 = 0x9000;
pub const PDPTE_START: u64 = 0xa000;
pub const PDE_START: u64 = 0xb000;
/// The kernel command line.
pub const CMDLINE_START: u64 = 0x20000;
/// Largest command line Vessel writes (Linux's COMMAND_LINE_SIZE on x86 is 2048).
pub const CMDLINE_MAX_SIZE: usize = 2048;
/// Start of the extended BIOS data area; RAM below it is usable.
pub const EBDA_START: u64 = 0x9fc00;
/// The legacy BIOS area, reserved in the e820 map; the ACPI tables live in it.
pub const BIOS_AREA_START: u64 = 0xe0000;
pub const BIOS_AREA_END: u64 = 0x10_0000;
/// The RSDP sits at the start of the BIOS area, where a legacy scan also finds it.
pub const RSDP_START: u64 = BIOS_AREA_START;
/// First byte of "high" memory, where kernels are loaded.
pub const HIMEM_START: u64 = 0x10_0000;

/// The 32-bit MMIO hole: [MMIO_HOLE_START, 4 GiB) holds no RAM.
pub const MMIO_HOLE_START: u64 = 0xc000_0000;
pub const FOUR_GIB: u64 = 0x1_0000_0000;

/// Where the VMM places 32-bit PCI memory BARs, and the window the guest may use.
pub const PCI_MMIO32_START: u64 = MMIO_HOLE_START;
pub const PCI_MMIO32_END: u64 = 0xe000_0000;
/// ECAM (MMCONFIG) for PCI bus 0: 32 devices x 8 functions x 4 KiB.
pub const PCI_ECAM_START: u64 = 0xe000_0000;
pub const PCI_ECAM_SIZE: u64 = 1 << 20;
/// I/O ports the VMM assigns I/O BARs from.
pub const PCI_IO_START: u64 = 0xc000;
pub const PCI_IO_END: u64 = 0x1_0000;
/// PCI configuration mechanism #1 ports (0xCF8-0xCFF).
pub const PCI_CONFIG_PORT: u16 = 0xcf8;

/// Generic Event Device (ACPI0013) register block, in the MMIO hole.
/// The boot framebuffer (`display::boot_fb`), reserved in e820: in the 32-bit hole after
/// the ECAM window, below the IOAPIC and the GED.
pub const BOOT_FB_START: u64 = 0xf000_0000;

pub const GED_MMIO_BASE: u64 = 0xfed0_0000;
pub const GED_MMIO_SIZE: u64 = 0x1000;
/// IOAPIC and local APIC, where the in-kernel irqchip emulates them.
pub const IOAPIC_START: u64 = 0xfec0_0000;
pub const APIC_START: u64 = 0xfee0_0000;

/// KVM's private pages: the real-mode TSS (3 pages) and the EPT identity map page. They
/// must not overlap RAM or any device; they sit just below the BIOS ROM area.
pub const KVM_TSS_ADDRESS: u64 = 0xfffb_d000;
pub const KVM_IDENTITY_MAP_ADDRESS: u64 = 0xfffb_c000;

/// Interrupt lines (IOAPIC pins = GSIs) of the legacy devices.
/// The i8042's keyboard interrupt (ISA IRQ 1).
pub const KBD_GSI: u32 = 1;
/// Its mouse's interrupt (ISA IRQ 12).
pub const AUX_GSI: u32 = 12;
pub const COM1_GSI: u32 = 4;
pub const GED_GSI: u32 = 5;

/// I/O ports.
pub const COM1_PORT: u16 = 0x3f8;
pub const I8042_DATA_PORT: u16 = 0x60;
pub const I8042_COMMAND_PORT: u16 = 0x64;
pub const CMOS_PORT: u16 = 0x70;
/// Debug/milestone port: each byte the guest writes is a boot milestone (QEMU's
/// `-debugcon` uses the same port, so a guest marks milestones the same way under both).
pub const DEBUG_PORT: u16 = 0xe9;
/// QEMU's fw_cfg interface (selector, data, DMA address) for firmware boot.
pub const FW_CFG_PORT: u16 = 0x510;
pub const FW_CFG_LEN: u64 = 0x0c;
/// QEMU's debug console port, where SeaBIOS writes its log.
pub const FIRMWARE_DEBUG_PORT: u16 = 0x402;
/// ACPI hardware-reduced sleep control and status registers (ACPI 6.5 §4.8.3.7).
pub const SLEEP_CONTROL_PORT: u16 = 0x600;
pub const SLEEP_STATUS_PORT: u16 = 0x601;
/// PIIX/ICH reset control register; it is also the FADT's reset register.
pub const RESET_CONTROL_PORT: u16 = 0xcf9;
/// Value the FADT tells the OS to write to the reset register (SYS_RST | RST_CPU).
pub const RESET_VALUE: u8 = 0x06;
/// The SLP_TYP the DSDT's `_S5` package names; SLP_EN with this type powers off.
pub const S5_SLEEP_TYPE: u8 = 5;

/// The RAM ranges of a machine with `size` bytes: below the MMIO hole, then above 4 GiB.
pub fn ram_ranges(size: u64) -> Vec<(GuestAddress, usize)> {
    let low = size.min(MMIO_HOLE_START);
    let mut ranges = vec![(GuestAddress(0), low as usize)];
    if size > low {
        ranges.push((GuestAddress(FOUR_GIB), (size - low) as usize));
    }
    ranges
}

/// E820 entry types (ACPI 6.5 §15, "System Address Map Interfaces").
pub const E820_RAM: u32 = 1;
pub const E820_RESERVED: u32 = 2;

/// One entry of the BIOS-style memory map handed to the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct E820Entry {
    pub addr: u64,
    pub size: u64,
    pub kind: u32,
}

/// The e820 map of a machine with `size` bytes of RAM: usable RAM below the EBDA, the BIOS
/// area (ACPI tables) reserved, RAM from 1 MiB to the MMIO hole, the PCI ECAM window
/// reserved (PCI Firmware 3.2 §4.1.2 asks for it), the boot framebuffer's
/// `framebuffer_bytes` reserved if there is one, RAM above 4 GiB; in address order.
pub fn e820_map(size: u64, framebuffer_bytes: Option<u64>) -> Vec<E820Entry> {
    let mut map = vec![
        E820Entry { addr: 0, size: EBDA_START, kind: E820_RAM },
        E820Entry {
            addr: BIOS_AREA_START,
            size: BIOS_AREA_END - BIOS_AREA_START,
            kind: E820_RESERVED,
        },
    ];
    for (i, (start, len)) in ram_ranges(size).into_iter().enumerate() {
        let end = start.raw_value() + len as u64;
        // The first range starts at 0, but only RAM from 1 MiB up is free for the OS.
        let start = if i == 0 { HIMEM_START } else { start.raw_value() };
        if end > start {
            map.push(E820Entry { addr: start, size: end - start, kind: E820_RAM });
        }
    }
    map.push(E820Entry { addr: PCI_ECAM_START, size: PCI_ECAM_SIZE, kind: E820_RESERVED });
    if let Some(bytes) = framebuffer_bytes {
        map.push(E820Entry { addr: BOOT_FB_START, size: bytes, kind: E820_RESERVED });
    }
    map.sort_by_key(|e| e.addr);
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_machine_has_one_range_and_matching_e820() {
        let size = 256 << 20;
        assert_eq!(ram_ranges(size), vec![(GuestAddress(0), size as usize)]);
        let map = e820_map(size, None);
        assert_eq!(map[0], E820Entry { addr: 0, size: EBDA_START, kind: E820_RAM });
        assert_eq!(map[1].kind, E820_RESERVED);
        assert_eq!(
            map[2],
            E820Entry { addr: HIMEM_START, size: size - HIMEM_START, kind: E820_RAM }
        );
        assert_eq!(
            map[3],
            E820Entry { addr: PCI_ECAM_START, size: PCI_ECAM_SIZE, kind: E820_RESERVED }
        );
        assert_eq!(map.len(), 4);
    }

    #[test]
    fn large_machine_splits_around_the_hole() {
        let size = 5u64 << 30;
        let ranges = ram_ranges(size);
        assert_eq!(ranges[0], (GuestAddress(0), MMIO_HOLE_START as usize));
        assert_eq!(ranges[1], (GuestAddress(FOUR_GIB), (size - MMIO_HOLE_START) as usize));
        let map = e820_map(size, None);
        assert_eq!(map[2].addr + map[2].size, MMIO_HOLE_START);
        assert_eq!(
            map[3],
            E820Entry { addr: PCI_ECAM_START, size: PCI_ECAM_SIZE, kind: E820_RESERVED }
        );
        assert_eq!(
            map[4],
            E820Entry { addr: FOUR_GIB, size: size - MMIO_HOLE_START, kind: E820_RAM }
        );
        let ram: u64 = map.iter().filter(|e| e.kind == E820_RAM).map(|e| e.size).sum();
        // All RAM except the 384 KiB between the EBDA and 1 MiB is usable.
        assert_eq!(ram, size - (HIMEM_START - EBDA_START));
    }
}
