//! Boot-time vCPU state: segment registers and page tables for each boot protocol, MSRs,
//! FPU and the local APIC's LINT pins.

use kvm_bindings::{Msrs, kvm_fpu, kvm_msr_entry, kvm_regs, kvm_segment, kvm_sregs};
use kvm_ioctls::VcpuFd;
use vm_memory::{Bytes, GuestAddress};

use super::layout::{
    BOOT_GDT_START, BOOT_IDT_START, BOOT_STACK_POINTER, PDE_START, PDPTE_START, PML4_START,
};
use crate::vstate::memory::GuestMem;

#[derive(Debug, thiserror::Error)]
pub enum RegsError {
    #[error("cannot {what} of vCPU")]
    Kvm {
        what: &'static str,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("KVM set only {0} of the {1} boot MSRs")]
    PartialMsrs(usize, usize),
    #[error("cannot write boot structures to guest memory")]
    Memory(#[from] vm_memory::GuestMemoryError),
}

fn kvm(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> RegsError {
    move |source| RegsError::Kvm { what, source }
}

/// How the boot vCPU enters the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryMode {
    /// Linux 64-bit boot protocol: long mode, identity-mapped, RSI = boot_params.
    Linux64 { entry: u64, boot_params: u64 },
    /// PVH: 32-bit protected mode, paging off, EBX = hvm_start_info.
    Pvh { entry: u64, start_info: u64 },
}

// Control register and EFER bits (Intel SDM Vol. 3A §2.5, §2.2.1).
const CR0_PE: u64 = 1 << 0;
const CR0_ET: u64 = 1 << 4;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;

/// GDT selectors of the boot GDT.
const CODE_SELECTOR: u16 = 0x08;
const DATA_SELECTOR: u16 = 0x10;
const TSS_SELECTOR: u16 = 0x18;

/// Builds a GDT descriptor from flags (the high nibble of byte 6 plus access byte), base
/// and limit.
pub const fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    ((base as u64 & 0xff00_0000) << 32)
        | ((base as u64 & 0x00ff_ffff) << 16)
        | (limit as u64 & 0x0000_ffff)
        | ((limit as u64 & 0x000f_0000) << 32)
        | ((flags as u64 & 0xf0ff) << 40)
}

/// The `kvm_segment` KVM wants for a GDT descriptor.
fn segment_from_gdt(entry: u64, selector: u16) -> kvm_segment {
    let flag = |shift: u32, mask: u64| ((entry >> shift) & mask) as u8;
    let limit = (((entry >> 32) & 0x000f_0000) | (entry & 0xffff)) as u32;
    let g = flag(55, 1);
    kvm_segment {
        base: ((entry >> 16) & 0x00ff_ffff) | ((entry >> 32) & 0xff00_0000),
        limit: if g == 1 { (limit << 12) | 0xfff } else { limit },
        selector,
        type_: flag(40, 0xf),
        present: flag(47, 1),
        dpl: flag(45, 0x3),
        db: flag(54, 1),
        s: flag(44, 1),
        l: flag(53, 1),
        g,
        avl: flag(52, 1),
        unusable: u8::from(flag(47, 1) == 0),
        padding: 0,
    }
}

/// Writes the boot GDT and an empty IDT, and returns the code, data and TSS descriptors.
fn write_gdt(mem: &GuestMem, long_mode: bool) -> Result<[u64; 4], RegsError> {
    let code = if long_mode {
        gdt_entry(0xa09b, 0, 0xfffff) // 64-bit code, present, DPL 0
    } else {
        gdt_entry(0xc09b, 0, 0xfffff) // 32-bit flat code
    };
    let gdt = [
        0,
        code,
        gdt_entry(0xc093, 0, 0xfffff), // flat data, read/write, accessed
        gdt_entry(0x008b, 0, 0x67),    // busy 32-bit TSS (PVH requires one in TR)
    ];
    for (i, entry) in gdt.iter().enumerate() {
        mem.write_obj(*entry, GuestAddress(BOOT_GDT_START + 8 * i as u64))?;
    }
    mem.write_obj(0u64, GuestAddress(BOOT_IDT_START))?;
    Ok(gdt)
}

/// Identity-maps the low 4 GiB with 2 MiB pages, as the 64-bit boot protocol requires
/// for the kernel, boot_params, command line and initrd wherever they were put.
fn write_identity_page_tables(mem: &GuestMem) -> Result<(), RegsError> {
    const PRESENT_RW: u64 = 0x3;
    const PAGE_SIZE_2M: u64 = 0x80;
    mem.write_obj(PDPTE_START | PRESENT_RW, GuestAddress(PML4_START))?;
    for gib in 0..4u64 {
        let pd = PDE_START + gib * 0x1000;
        mem.write_obj(pd | PRESENT_RW, GuestAddress(PDPTE_START + gib * 8))?;
        for i in 0..512u64 {
            let phys = (gib << 30) | (i << 21);
            mem.write_obj(phys | PRESENT_RW | PAGE_SIZE_2M, GuestAddress(pd + i * 8))?;
        }
    }
    Ok(())
}

/// Sets the boot vCPU's segment and control registers and general registers for `mode`.
pub fn setup_boot_vcpu(vcpu: &VcpuFd, mem: &GuestMem, mode: EntryMode) -> Result<(), RegsError> {
    let long_mode = matches!(mode, EntryMode::Linux64 { .. });
    let gdt = write_gdt(mem, long_mode)?;
    let mut sregs: kvm_sregs = vcpu.get_sregs().map_err(kvm("read special registers"))?;
    sregs.gdt.base = BOOT_GDT_START;
    sregs.gdt.limit = (gdt.len() * 8 - 1) as u16;
    sregs.idt.base = BOOT_IDT_START;
    sregs.idt.limit = 7;
    let code = segment_from_gdt(gdt[1], CODE_SELECTOR);
    let data = segment_from_gdt(gdt[2], DATA_SELECTOR);
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = segment_from_gdt(gdt[3], TSS_SELECTOR);

    let mut regs = kvm_regs { rflags: 0x2, ..Default::default() };
    match mode {
        EntryMode::Linux64 { entry, boot_params } => {
            write_identity_page_tables(mem)?;
            sregs.cr3 = PML4_START;
            sregs.cr4 |= CR4_PAE;
            sregs.cr0 |= CR0_PE | CR0_PG | CR0_ET;
            sregs.efer |= EFER_LME | EFER_LMA;
            regs.rip = entry;
            regs.rsi = boot_params;
            regs.rsp = BOOT_STACK_POINTER;
            regs.rbp = BOOT_STACK_POINTER;
        }
        EntryMode::Pvh { entry, start_info } => {
            // PVH ABI: protected mode, paging disabled, flat 32-bit segments, a valid TR.
            sregs.cr0 = CR0_PE | CR0_ET;
            sregs.cr4 = 0;
            sregs.efer = 0;
            regs.rip = entry;
            regs.rbx = start_info;
        }
    }
    vcpu.set_sregs(&sregs).map_err(kvm("set special registers"))?;
    vcpu.set_regs(&regs).map_err(kvm("set registers"))?;
    Ok(())
}

/// FPU state after FNINIT, with SSE exceptions masked (Intel SDM Vol. 1 §8.1.5, §10.2.3.1).
pub fn setup_fpu(vcpu: &VcpuFd) -> Result<(), RegsError> {
    let fpu = kvm_fpu { fcw: 0x37f, mxcsr: 0x1f80, ..Default::default() };
    vcpu.set_fpu(&fpu).map_err(kvm("set FPU state"))
}

pub mod msr_index {
    pub const IA32_SYSENTER_CS: u32 = 0x174;
    pub const IA32_SYSENTER_ESP: u32 = 0x175;
    pub const IA32_SYSENTER_EIP: u32 = 0x176;
    pub const IA32_TSC: u32 = 0x10;
    pub const IA32_MISC_ENABLE: u32 = 0x1a0;
    pub const IA32_MTRR_DEF_TYPE: u32 = 0x2ff;
    pub const STAR: u32 = 0xc000_0081;
    pub const LSTAR: u32 = 0xc000_0082;
    pub const CSTAR: u32 = 0xc000_0083;
    pub const SYSCALL_MASK: u32 = 0xc000_0084;
    pub const KERNEL_GS_BASE: u32 = 0xc000_0102;
}

/// MSR values of a CPU coming out of reset, as a kernel expects to find them.
pub fn setup_msrs(vcpu: &VcpuFd) -> Result<(), RegsError> {
    use msr_index::*;
    const MISC_ENABLE_FAST_STRING: u64 = 1;
    const MTRR_ENABLE: u64 = 1 << 11;
    const MTRR_MEM_TYPE_WB: u64 = 6;
    let entries = [
        (IA32_SYSENTER_CS, 0),
        (IA32_SYSENTER_ESP, 0),
        (IA32_SYSENTER_EIP, 0),
        (STAR, 0),
        (CSTAR, 0),
        (KERNEL_GS_BASE, 0),
        (SYSCALL_MASK, 0),
        (LSTAR, 0),
        (IA32_TSC, 0),
        (IA32_MISC_ENABLE, MISC_ENABLE_FAST_STRING),
        (IA32_MTRR_DEF_TYPE, MTRR_ENABLE | MTRR_MEM_TYPE_WB),
    ]
    .map(|(index, data)| kvm_msr_entry { index, data, ..Default::default() });
    let msrs = Msrs::from_entries(&entries).expect("a fixed list of 11 MSRs fits");
    let set = vcpu.set_msrs(&msrs).map_err(kvm("set MSRs"))?;
    if set != entries.len() {
        return Err(RegsError::PartialMsrs(set, entries.len()));
    }
    Ok(())
}

/// Wires the local APIC's LINT0 to ExtINT (the legacy PIC) and LINT1 to NMI, as a BIOS
/// does for virtual-wire mode (Intel MP spec §3.6.2.2).
pub fn setup_lint(vcpu: &VcpuFd) -> Result<(), RegsError> {
    const APIC_LVT0: usize = 0x350;
    const APIC_LVT1: usize = 0x360;
    const MODE_NMI: u32 = 0x4;
    const MODE_EXTINT: u32 = 0x7;
    let mut lapic = vcpu.get_lapic().map_err(kvm("read local APIC"))?;
    let mut set_mode = |offset: usize, mode: u32| {
        let bytes: &mut [u8] = {
            let regs = &mut lapic.regs[offset..offset + 4];
            // SAFETY: `regs` is a slice of `c_char` (i8 here); u8 has the same size and
            // alignment, and every bit pattern is valid for both.
            unsafe { std::slice::from_raw_parts_mut(regs.as_mut_ptr().cast::<u8>(), 4) }
        };
        let value = u32::from_le_bytes(bytes.try_into().expect("4 bytes"));
        let value = (value & !0x700) | (mode << 8);
        bytes.copy_from_slice(&value.to_le_bytes());
    };
    set_mode(APIC_LVT0, MODE_EXTINT);
    set_mode(APIC_LVT1, MODE_NMI);
    vcpu.set_lapic(&lapic).map_err(kvm("set local APIC"))
}

/// The general and special registers of a vCPU, for crash reports.
#[derive(Clone, Debug, Default)]
pub struct VcpuRegisters {
    pub regs: kvm_regs,
    pub sregs: kvm_sregs,
}

impl std::fmt::Display for VcpuRegisters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let r = &self.regs;
        let s = &self.sregs;
        let rows: [[(&str, u64); 4]; 4] = [
            [("RIP", r.rip), ("RFLAGS", r.rflags), ("RSP", r.rsp), ("RBP", r.rbp)],
            [("RAX", r.rax), ("RBX", r.rbx), ("RCX", r.rcx), ("RDX", r.rdx)],
            [("RSI", r.rsi), ("RDI", r.rdi), ("R8", r.r8), ("R9", r.r9)],
            [("R10", r.r10), ("R11", r.r11), ("R12", r.r12), ("R13", r.r13)],
        ];
        for row in rows {
            let cells: Vec<String> =
                row.iter().map(|(name, v)| format!("{name:<3}={v:016x}")).collect();
            writeln!(f, "{}", cells.join(" "))?;
        }
        writeln!(f, "R14={:016x} R15={:016x}", r.r14, r.r15)?;
        writeln!(
            f,
            "CS={:04x} SS={:04x} CR0={:x} CR2={:x} CR3={:x} CR4={:x} EFER={:x}",
            s.cs.selector, s.ss.selector, s.cr0, s.cr2, s.cr3, s.cr4, s.efer
        )?;
        write!(f, "GDT={:x}/{:x} IDT={:x}/{:x}", s.gdt.base, s.gdt.limit, s.idt.base, s.idt.limit)
    }
}

/// Reads a vCPU's registers for a report; fields KVM will not give stay zero.
pub fn read_registers(vcpu: &VcpuFd) -> VcpuRegisters {
    VcpuRegisters {
        regs: vcpu.get_regs().unwrap_or_default(),
        sregs: vcpu.get_sregs().unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gdt_entries_decode() {
        let code64 = segment_from_gdt(gdt_entry(0xa09b, 0, 0xfffff), 0x08);
        assert_eq!((code64.l, code64.db, code64.g, code64.present), (1, 0, 1, 1));
        assert_eq!(code64.type_, 0xb);
        assert_eq!(code64.limit, 0xffff_ffff);
        let code32 = segment_from_gdt(gdt_entry(0xc09b, 0, 0xfffff), 0x08);
        assert_eq!((code32.l, code32.db), (0, 1));
        let tss = segment_from_gdt(gdt_entry(0x008b, 0x1234_5678, 0x67), 0x18);
        assert_eq!((tss.base, tss.limit, tss.type_, tss.s), (0x1234_5678, 0x67, 0xb, 0));
        let null = segment_from_gdt(0, 0);
        assert_eq!(null.unusable, 1);
    }
}
