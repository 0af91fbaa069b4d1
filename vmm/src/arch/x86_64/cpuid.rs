//! CPUID as each vCPU sees it: KVM's supported set, normalised for a virtual machine
//! (Intel SDM Vol. 2A "CPUID", AMD APM Vol. 3 appendix E).

use kvm_bindings::{CpuId, kvm_cpuid_entry2};

/// Leaf 1 ECX bits.
const ECX_VMX: u32 = 1 << 5;
const ECX_TSC_DEADLINE: u32 = 1 << 24;
const ECX_HYPERVISOR: u32 = 1 << 31;
/// Leaf 1 EDX bits.
const EDX_HTT: u32 = 1 << 28;
/// Leaf 0x8000_0001 ECX bits.
const ECX_SVM: u32 = 1 << 2;
const ECX_CMP_LEGACY: u32 = 1 << 1;

/// Leaf 0xB/0x1F level types.
const LEVEL_TYPE_SMT: u32 = 1;
const LEVEL_TYPE_CORE: u32 = 2;

/// Number of bits needed to give each of `count` items its own id.
fn id_bits(count: u32) -> u32 {
    if count <= 1 { 0 } else { 32 - (count - 1).leading_zeros() }
}

/// Rewrites `cpuid` (KVM's supported set) for vCPU `index` of a machine with `vcpu_count`
/// vCPUs: one package, one thread per core, `vcpu_count` cores, APIC id = index.
pub fn normalize(cpuid: &mut CpuId, index: u8, vcpu_count: u8, tsc_deadline: bool) {
    let apic_id = u32::from(index);
    let cores = u32::from(vcpu_count.max(1));
    let core_bits = id_bits(cores);
    let is_amd = cpuid
        .as_slice()
        .iter()
        .find(|e| e.function == 0)
        .is_some_and(|e| e.ebx == u32::from_le_bytes(*b"Auth"));

    for entry in cpuid.as_mut_slice().iter_mut() {
        normalize_entry(entry, apic_id, cores, core_bits, is_amd, tsc_deadline);
    }
}

fn normalize_entry(
    entry: &mut kvm_cpuid_entry2,
    apic_id: u32,
    cores: u32,
    core_bits: u32,
    is_amd: bool,
    tsc_deadline: bool,
) {
    match entry.function {
        0x1 => {
            // EBX[31:24] initial APIC id, [23:16] logical processors per package,
            // [15:8] CLFLUSH line size in quadwords.
            entry.ebx = (apic_id << 24) | (cores.min(255) << 16) | (8 << 8);
            entry.ecx &= !ECX_VMX;
            entry.ecx |= ECX_HYPERVISOR;
            if tsc_deadline {
                entry.ecx |= ECX_TSC_DEADLINE;
            } else {
                entry.ecx &= !ECX_TSC_DEADLINE;
            }
            if cores > 1 {
                entry.edx |= EDX_HTT;
            } else {
                entry.edx &= !EDX_HTT;
            }
        }
        0x4 if !is_amd => {
            // Deterministic cache parameters: EAX[31:26] = cores per package - 1,
            // EAX[25:14] = logical processors sharing this cache - 1. L1/L2 are per core,
            // L3 is shared by the package.
            let level = (entry.eax >> 5) & 0x7;
            entry.eax &= 0x3fff;
            if entry.eax & 0x1f != 0 {
                let sharing = if level >= 3 { cores - 1 } else { 0 };
                entry.eax |= ((cores - 1) << 26) | (sharing << 14);
            }
        }
        0xb | 0x1f => {
            entry.edx = apic_id;
            match entry.index {
                0 => {
                    entry.eax = 0; // one thread per core: shift 0
                    entry.ebx = 1;
                    entry.ecx = LEVEL_TYPE_SMT << 8;
                }
                1 => {
                    entry.eax = core_bits;
                    entry.ebx = cores;
                    entry.ecx = (LEVEL_TYPE_CORE << 8) | 1;
                }
                n => {
                    entry.eax = 0;
                    entry.ebx = 0;
                    entry.ecx = n; // level type 0: invalid, ends the enumeration
                }
            }
        }
        0x8000_0001 => {
            entry.ecx &= !ECX_SVM;
            if is_amd && cores > 1 {
                entry.ecx |= ECX_CMP_LEGACY;
            } else {
                entry.ecx &= !ECX_CMP_LEGACY;
            }
        }
        0x8000_0008 if is_amd => {
            // ECX[15:12] APIC id size, [7:0] number of cores - 1.
            entry.ecx = (core_bits << 12) | (cores - 1);
        }
        0x8000_001e if is_amd => {
            entry.eax = apic_id;
            entry.ebx = apic_id & 0xff; // core id; one thread per core
            entry.ecx = 0; // node 0
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(function: u32, index: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 { function, index, ..Default::default() }
    }

    fn build(entries: &[kvm_cpuid_entry2]) -> CpuId {
        CpuId::from_entries(entries).unwrap()
    }

    #[test]
    fn apic_ids_and_topology() {
        let mut leaf1 = entry(1, 0);
        leaf1.ecx = ECX_VMX;
        let base = [entry(0, 0), leaf1, entry(0xb, 0), entry(0xb, 1), entry(0xb, 2)];
        let mut cpuid = build(&base);
        normalize(&mut cpuid, 3, 4, true);
        let s = cpuid.as_slice();
        assert_eq!(s[1].ebx >> 24, 3);
        assert_eq!((s[1].ebx >> 16) & 0xff, 4);
        assert_eq!(s[1].ecx & ECX_VMX, 0, "VMX must be hidden");
        assert_ne!(s[1].ecx & ECX_HYPERVISOR, 0, "hypervisor bit must be set");
        assert_ne!(s[1].edx & EDX_HTT, 0);
        assert_eq!((s[2].edx, s[2].ebx, s[2].ecx >> 8), (3, 1, LEVEL_TYPE_SMT));
        assert_eq!((s[3].eax, s[3].ebx, s[3].ecx >> 8), (2, 4, LEVEL_TYPE_CORE));
        assert_eq!(s[4].ecx >> 8, 0, "level 2 ends the enumeration");
    }

    #[test]
    fn svm_hidden() {
        let mut ext = entry(0x8000_0001, 0);
        ext.ecx = ECX_SVM;
        let mut cpuid = build(&[entry(0, 0), ext]);
        normalize(&mut cpuid, 0, 1, false);
        assert_eq!(cpuid.as_slice()[1].ecx & ECX_SVM, 0);
    }

    #[test]
    fn id_bits_rounds_up() {
        assert_eq!(id_bits(1), 0);
        assert_eq!(id_bits(2), 1);
        assert_eq!(id_bits(3), 2);
        assert_eq!(id_bits(4), 2);
        assert_eq!(id_bits(5), 3);
    }
}
