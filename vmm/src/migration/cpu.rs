//! Whether this host can run a guest that already runs elsewhere: every CPU feature the
//! guest was shown (its CPUID) must be one this host's KVM offers, or the guest, which
//! checked its CPU once at boot, would meet an instruction that faults (#UD) after the
//! move. Checked before any memory moves; a missing feature is named.

use kvm_bindings::kvm_cpuid_entry2;
use serde::{Deserialize, Serialize};

/// One CPUID leaf as the guest sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leaf {
    pub function: u32,
    pub index: u32,
    pub eax: u32,
    pub ebx: u32,
    pub ecx: u32,
    pub edx: u32,
}

impl From<&kvm_cpuid_entry2> for Leaf {
    fn from(e: &kvm_cpuid_entry2) -> Leaf {
        Leaf {
            function: e.function,
            index: e.index,
            eax: e.eax,
            ebx: e.ebx,
            ecx: e.ecx,
            edx: e.edx,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reg {
    Eax,
    Ebx,
    Ecx,
    Edx,
}

/// The feature-flag words (leaf, subleaf, register), and the bits in them that are no
/// feature of the CPU but of the moment (set by KVM as the guest changes CR4: OSXSAVE,
/// OSPKE) and so are not compared.
const FEATURE_WORDS: &[(u32, u32, Reg, u32)] = &[
    (0x1, 0, Reg::Ecx, 1 << 27),
    (0x1, 0, Reg::Edx, 0),
    (0x7, 0, Reg::Ebx, 0),
    (0x7, 0, Reg::Ecx, 1 << 4),
    (0x7, 0, Reg::Edx, 0),
    (0x7, 1, Reg::Eax, 0),
    (0xd, 1, Reg::Eax, 0),
    (0x8000_0001, 0, Reg::Ecx, 0),
    (0x8000_0001, 0, Reg::Edx, 0),
];

/// Names of the features people know by name (as Linux's /proc/cpuinfo has them).
const NAMES: &[(u32, u32, Reg, u32, &str)] = &[
    (0x1, 0, Reg::Ecx, 0, "sse3"),
    (0x1, 0, Reg::Ecx, 1, "pclmulqdq"),
    (0x1, 0, Reg::Ecx, 9, "ssse3"),
    (0x1, 0, Reg::Ecx, 12, "fma"),
    (0x1, 0, Reg::Ecx, 13, "cx16"),
    (0x1, 0, Reg::Ecx, 19, "sse4_1"),
    (0x1, 0, Reg::Ecx, 20, "sse4_2"),
    (0x1, 0, Reg::Ecx, 21, "x2apic"),
    (0x1, 0, Reg::Ecx, 22, "movbe"),
    (0x1, 0, Reg::Ecx, 23, "popcnt"),
    (0x1, 0, Reg::Ecx, 24, "tsc_deadline_timer"),
    (0x1, 0, Reg::Ecx, 25, "aes"),
    (0x1, 0, Reg::Ecx, 26, "xsave"),
    (0x1, 0, Reg::Ecx, 28, "avx"),
    (0x1, 0, Reg::Ecx, 29, "f16c"),
    (0x1, 0, Reg::Ecx, 30, "rdrand"),
    (0x1, 0, Reg::Edx, 0, "fpu"),
    (0x1, 0, Reg::Edx, 4, "tsc"),
    (0x1, 0, Reg::Edx, 5, "msr"),
    (0x1, 0, Reg::Edx, 6, "pae"),
    (0x1, 0, Reg::Edx, 8, "cx8"),
    (0x1, 0, Reg::Edx, 9, "apic"),
    (0x1, 0, Reg::Edx, 11, "sep"),
    (0x1, 0, Reg::Edx, 15, "cmov"),
    (0x1, 0, Reg::Edx, 19, "clflush"),
    (0x1, 0, Reg::Edx, 23, "mmx"),
    (0x1, 0, Reg::Edx, 24, "fxsr"),
    (0x1, 0, Reg::Edx, 25, "sse"),
    (0x1, 0, Reg::Edx, 26, "sse2"),
    (0x7, 0, Reg::Ebx, 0, "fsgsbase"),
    (0x7, 0, Reg::Ebx, 3, "bmi1"),
    (0x7, 0, Reg::Ebx, 4, "hle"),
    (0x7, 0, Reg::Ebx, 5, "avx2"),
    (0x7, 0, Reg::Ebx, 7, "smep"),
    (0x7, 0, Reg::Ebx, 8, "bmi2"),
    (0x7, 0, Reg::Ebx, 9, "erms"),
    (0x7, 0, Reg::Ebx, 10, "invpcid"),
    (0x7, 0, Reg::Ebx, 11, "rtm"),
    (0x7, 0, Reg::Ebx, 16, "avx512f"),
    (0x7, 0, Reg::Ebx, 17, "avx512dq"),
    (0x7, 0, Reg::Ebx, 18, "rdseed"),
    (0x7, 0, Reg::Ebx, 19, "adx"),
    (0x7, 0, Reg::Ebx, 20, "smap"),
    (0x7, 0, Reg::Ebx, 21, "avx512ifma"),
    (0x7, 0, Reg::Ebx, 23, "clflushopt"),
    (0x7, 0, Reg::Ebx, 24, "clwb"),
    (0x7, 0, Reg::Ebx, 28, "avx512cd"),
    (0x7, 0, Reg::Ebx, 29, "sha_ni"),
    (0x7, 0, Reg::Ebx, 30, "avx512bw"),
    (0x7, 0, Reg::Ebx, 31, "avx512vl"),
    (0x7, 0, Reg::Ecx, 1, "avx512vbmi"),
    (0x7, 0, Reg::Ecx, 2, "umip"),
    (0x7, 0, Reg::Ecx, 3, "pku"),
    (0x7, 0, Reg::Ecx, 6, "avx512_vbmi2"),
    (0x7, 0, Reg::Ecx, 8, "gfni"),
    (0x7, 0, Reg::Ecx, 9, "vaes"),
    (0x7, 0, Reg::Ecx, 10, "vpclmulqdq"),
    (0x7, 0, Reg::Ecx, 11, "avx512_vnni"),
    (0x7, 0, Reg::Ecx, 12, "avx512_bitalg"),
    (0x7, 0, Reg::Ecx, 14, "avx512_vpopcntdq"),
    (0x7, 0, Reg::Ecx, 16, "la57"),
    (0x7, 0, Reg::Ecx, 22, "rdpid"),
    (0x7, 0, Reg::Ecx, 27, "movdiri"),
    (0x7, 0, Reg::Ecx, 28, "movdir64b"),
    (0x7, 0, Reg::Edx, 4, "fsrm"),
    (0x7, 0, Reg::Edx, 14, "serialize"),
    (0x7, 0, Reg::Edx, 23, "avx512_fp16"),
    (0x7, 0, Reg::Edx, 24, "amx_tile"),
    (0x7, 1, Reg::Eax, 4, "avx_vnni"),
    (0x7, 1, Reg::Eax, 5, "avx512_bf16"),
    (0xd, 1, Reg::Eax, 0, "xsaveopt"),
    (0xd, 1, Reg::Eax, 1, "xsavec"),
    (0xd, 1, Reg::Eax, 3, "xsaves"),
    (0x8000_0001, 0, Reg::Ecx, 0, "lahf_lm"),
    (0x8000_0001, 0, Reg::Ecx, 5, "abm"),
    (0x8000_0001, 0, Reg::Ecx, 6, "sse4a"),
    (0x8000_0001, 0, Reg::Ecx, 8, "3dnowprefetch"),
    (0x8000_0001, 0, Reg::Ecx, 11, "xop"),
    (0x8000_0001, 0, Reg::Ecx, 16, "fma4"),
    (0x8000_0001, 0, Reg::Ecx, 21, "tbm"),
    (0x8000_0001, 0, Reg::Edx, 11, "syscall"),
    (0x8000_0001, 0, Reg::Edx, 20, "nx"),
    (0x8000_0001, 0, Reg::Edx, 22, "mmxext"),
    (0x8000_0001, 0, Reg::Edx, 26, "pdpe1gb"),
    (0x8000_0001, 0, Reg::Edx, 27, "rdtscp"),
    (0x8000_0001, 0, Reg::Edx, 29, "lm"),
];

fn reg(leaf: &Leaf, reg: Reg) -> u32 {
    match reg {
        Reg::Eax => leaf.eax,
        Reg::Ebx => leaf.ebx,
        Reg::Ecx => leaf.ecx,
        Reg::Edx => leaf.edx,
    }
}

fn find(leaves: &[Leaf], function: u32, index: u32) -> Option<&Leaf> {
    // Leaves without subleaves (1, 0x8000_0001) are looked up by function alone.
    leaves
        .iter()
        .find(|l| l.function == function && l.index == index)
        .or_else(|| (index == 0).then(|| leaves.iter().find(|l| l.function == function)).flatten())
}

/// A feature's name: its Linux name, else where it is.
fn name(function: u32, index: u32, r: Reg, bit: u32) -> String {
    NAMES
        .iter()
        .find(|n| (n.0, n.1, n.2, n.3) == (function, index, r, bit))
        .map(|n| n.4.to_string())
        .unwrap_or_else(|| format!("CPUID leaf {function:#x}.{index} {r:?} bit {bit}"))
}

/// The features `guest` (the guest's CPUID) has that `host` (what this host's KVM gives a
/// new guest, the same way) lacks, by name; empty if this host can run the guest.
pub fn missing(guest: &[Leaf], host: &[Leaf]) -> Vec<String> {
    let mut missing = Vec::new();
    for &(function, index, r, ignored) in FEATURE_WORDS {
        let Some(wanted) = find(guest, function, index).map(|l| reg(l, r) & !ignored) else {
            continue;
        };
        let offered = find(host, function, index).map_or(0, |l| reg(l, r));
        let lacking = wanted & !offered;
        missing.extend(
            (0..32).filter(|b| lacking & (1 << b) != 0).map(|b| name(function, index, r, b)),
        );
    }
    // The largest standard and extended leaves: a guest shown leaves the host lacks.
    for base in [0, 0x8000_0000] {
        let guest_max = find(guest, base, 0).map_or(0, |l| l.eax);
        let host_max = find(host, base, 0).map_or(0, |l| l.eax);
        if guest_max > host_max {
            missing
                .push(format!("CPUID leaves up to {guest_max:#x} (this host has {host_max:#x})"));
        }
    }
    missing
}

/// Clears the features `names` (Linux names) in `host`: counted as missing there. An
/// unknown name is refused.
pub fn hide(host: &mut [Leaf], names: &[String]) -> Result<(), String> {
    for wanted in names {
        let found = NAMES.iter().find(|n| n.4 == wanted.as_str());
        let Some(&(function, index, r, bit, _)) = found else {
            return Err(format!("no CPU feature is called {wanted:?}"));
        };
        for leaf in host.iter_mut().filter(|l| l.function == function && l.index == index) {
            let value = match r {
                Reg::Eax => &mut leaf.eax,
                Reg::Ebx => &mut leaf.ebx,
                Reg::Ecx => &mut leaf.ecx,
                Reg::Edx => &mut leaf.edx,
            };
            *value &= !(1 << bit);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(function: u32, index: u32, ebx: u32, ecx: u32, edx: u32) -> Leaf {
        Leaf { function, index, eax: 0, ebx, ecx, edx }
    }

    #[test]
    fn features_the_host_lacks_are_named_and_moment_bits_are_not() {
        let host = vec![
            Leaf { eax: 0xd, ..leaf(0, 0, 0, 0, 0) },
            leaf(0x1, 0, 0, (1 << 28) | (1 << 20), 1 << 26),
            leaf(0x7, 0, 1 << 3, 0, 0),
        ];
        // The same guest runs; OSXSAVE (set once the guest enabled XSAVE) is no feature.
        let mut guest = host.clone();
        guest[1].ecx |= 1 << 27;
        assert!(missing(&guest, &host).is_empty(), "{:?}", missing(&guest, &host));
        // AVX2 (7.0 EBX 5), AES (1 ECX 25) and an unnamed bit are missing.
        guest[2].ebx |= (1 << 5) | (1 << 22);
        guest[1].ecx |= 1 << 25;
        let lacking = missing(&guest, &host);
        assert_eq!(lacking, vec!["aes", "avx2", "CPUID leaf 0x7.0 Ebx bit 22"]);
        // A guest shown more standard leaves than the host has.
        guest[0].eax = 0x1f;
        assert!(missing(&guest, &host).last().unwrap().contains("0x1f"));
    }
}
