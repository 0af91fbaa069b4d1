//! The guest-physical address map of a Vessel x86-64 machine.
//!
//! Low memory follows the PC conventions Linux expects (real-mode IVT/BDA, EBDA below
//! 640 KiB, the BIOS area up to 1 MiB); RAM then runs up to the 32-bit MMIO hole at
//! 3 GiB and continues above 4 GiB when the machine is large.

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
/// ACPI hardware-reduced sleep control and status registers (ACPI 6.5 §4.8.3.7).
pub const SLEEP_CONTROL_PORT: u16 = 0x600;
pub const SLEEP_STATUS_PORT: u16 = 0x601;
/// PIIX/ICH reset control register; it is also the FADT's reset register.
pub const RESET_CONTROL_PORT: u16 = 0xcf9;
/// Value the FADT tells the OS to write to the reset register (SYS_RST | RST_CPU).
pub const RESET_VALUE: u8 = 0x06;
/// The SLP_TYP the DSDT's `_S5` package names; SLP_EN with this type powers off.
pub const S5_SLEEP_TYPE: u8 = 5;
