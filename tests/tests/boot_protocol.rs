//! The boot protocols, checked by what the test guest finds: entry registers, e820,
//! command line, initrd, and ACPI tables reached from the RSDP with valid checksums.

use vessel_tests::*;
use vmm::StopReason;
use vmm::arch::x86_64::layout::e820_map;
use vmm::arch::x86_64::layout::{PVH_INFO_START, ZERO_PAGE_START};

const CR0_PE: u64 = 1;
const CR0_PG: u64 = 1 << 31;
const EFER_LMA: u64 = 1 << 10;

fn test_initrd() -> (std::path::PathBuf, Vec<u8>) {
    let bytes: Vec<u8> =
        (0..300_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    let path = std::env::temp_dir().join(format!("vessel-test-initrd-{}", std::process::id()));
    std::fs::write(&path, &bytes).unwrap();
    (path, bytes)
}

/// Boots `spec`, waits for the report and checks everything the guest saw against what
/// the machine was configured with.
fn check_report(spec: &GuestSpec, proto: &str) -> GuestRun {
    let before = host_date();
    let mut run = spec.boot();
    run.expect_output("DONE");
    let reason = run.expect_stopped();
    assert!(matches!(reason, StopReason::PoweredOff), "{reason:?}\n{}", run.output());
    let out = run.output();
    // The banner is written with `rep outsb`: string port I/O arrives whole and in order.
    assert!(out.starts_with("VESSEL-TESTGUEST\n"), "{out}");

    assert_eq!(run.lines_with("PROTO"), vec![proto.to_string()], "{out}");
    assert_eq!(run.lines_with("MAGIC"), vec!["ok"], "boot info magic\n{out}");

    // Entry registers: PVH enters in protected mode without paging, EBX = start info;
    // the 64-bit protocol in long mode with paging, RSI = boot_params.
    let entry = run.lines_with("ENTRY");
    let fields: Vec<&str> = entry[0].split_whitespace().collect();
    let (ptr, cr0, efer) = (hex(fields[0]), hex(fields[2]), hex(fields[6]));
    assert_ne!(cr0 & CR0_PE, 0);
    if proto == "pvh" {
        assert_eq!(ptr, PVH_INFO_START);
        assert_eq!(cr0 & CR0_PG, 0, "PVH enters with paging off");
        assert_eq!(efer & EFER_LMA, 0);
    } else {
        assert_eq!(ptr, ZERO_PAGE_START);
        assert_ne!(cr0 & CR0_PG, 0, "64-bit entry has paging on");
        assert_ne!(efer & EFER_LMA, 0, "64-bit entry is in long mode");
    }

    // The e820 map is exactly the one the VMM computes for this memory size.
    let seen: Vec<(u64, u64, u32)> = run
        .lines_with("E820")
        .iter()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (hex(f[0]), hex(f[1]), hex(f[2]) as u32)
        })
        .collect();
    let expected: Vec<(u64, u64, u32)> =
        e820_map(spec.memory_bytes, None).iter().map(|e| (e.addr, e.size, e.kind)).collect();
    assert_eq!(seen, expected, "e820\n{out}");

    assert_eq!(run.lines_with("CMDLINE"), vec![spec.cmdline.clone()]);

    // ACPI: every table reached from the RSDP has a valid checksum, and the ones the
    // platform needs are there.
    assert!(run.lines_with("RSDP")[0].ends_with(" ok"), "{out}");
    let tables = run.lines_with("ACPI");
    for t in &tables {
        assert!(t.ends_with(" ok"), "bad table {t}\n{out}");
    }
    let sigs: Vec<&str> = tables.iter().map(|t| &t[..4]).collect();
    for sig in ["XSDT", "FACP", "DSDT", "APIC"] {
        assert!(sigs.contains(&sig), "no {sig} in {sigs:?}");
    }
    assert_eq!(hex(&run.lines_with("S5")[0]), 5);
    assert_eq!(hex(run.lines_with("SLEEPCTL")[0].split_whitespace().next().unwrap()), 0x600);
    let reset: Vec<u64> = run.lines_with("RESETREG")[0].split_whitespace().map(hex).collect();
    assert_eq!(reset, vec![0xcf9, 6]);
    assert_eq!(hex(&run.lines_with("CPUS")[0]), u64::from(spec.vcpus));

    // CPUID as normalised for this vCPU: APIC id 0 on the boot vCPU, the package's
    // logical processor count, the hypervisor bit, VMX hidden; KVM's paravirtual leaves
    // with the kvmclock features.
    let leaf1: Vec<u64> = run.lines_with("CPUID1")[0].split_whitespace().map(hex).collect();
    let (ebx, ecx) = (leaf1[0], leaf1[1]);
    assert_eq!(ebx >> 24, 0, "boot vCPU APIC id");
    assert_eq!((ebx >> 16) & 0xff, u64::from(spec.vcpus), "logical processors");
    assert_ne!(ecx & (1 << 31), 0, "hypervisor bit");
    assert_eq!(ecx & (1 << 5), 0, "VMX hidden");
    let hv = run.lines_with("HYPERVISOR");
    let hv: Vec<&str> = hv[0].split_whitespace().collect();
    assert_eq!(hv[0], "KVMKVMKVM");
    let features = hex(hv[2]);
    assert_ne!(features & (1 << 3), 0, "KVM_FEATURE_CLOCKSOURCE2 (kvmclock)");

    // The CMOS clock reads the host's date (UTC, BCD).
    let bcd = |v: u64| (v >> 4) * 10 + (v & 0xf);
    let rtc: Vec<u64> = run.lines_with("RTC")[0].split_whitespace().map(|f| bcd(hex(f))).collect();
    let guest_date = (rtc[0] * 100 + rtc[1], rtc[2], rtc[3]);
    let after = host_date();
    assert!(guest_date == before || guest_date == after, "RTC {guest_date:?}, host {before:?}");
    run
}

/// Today's (year, month, day) in UTC, from `date`.
fn host_date() -> (u64, u64, u64) {
    let out = std::process::Command::new("date").args(["-u", "+%Y %m %d"]).output().unwrap();
    let f: Vec<u64> = String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect();
    (f[0], f[1], f[2])
}

fn check_initrd(run: &GuestRun, bytes: &[u8], memory: u64) {
    let f: Vec<u64> = run.lines_with("INITRD")[0].split_whitespace().map(hex).collect();
    let (addr, size, hash) = (f[0], f[1], f[2]);
    assert_eq!(size, bytes.len() as u64);
    assert_eq!(hash, fnv1a(bytes), "the guest read different initrd bytes");
    assert_eq!(addr & 0xfff, 0, "initrd is page-aligned");
    assert!(addr + size <= memory.min(0xc000_0000), "initrd inside low RAM");
    assert!(addr >= 0x10_0000);
}

#[test]
fn pvh_entry_with_initrd() {
    let (initrd, bytes) = test_initrd();
    let mut spec = GuestSpec::new("boot");
    spec.initrd = Some(initrd);
    spec.cmdline = "test=boot console=ttyS0 some.option=with-value".into();
    spec.vcpus = 2;
    let run = check_report(&spec, "pvh");
    check_initrd(&run, &bytes, spec.memory_bytes);
}

#[test]
fn linux_64bit_entry_with_initrd() {
    let (initrd, bytes) = test_initrd();
    let mut spec = GuestSpec::new("boot");
    spec.kernel = testguest_bzimage();
    spec.initrd = Some(initrd);
    spec.memory_bytes = 256 << 20;
    let run = check_report(&spec, "linux64");
    check_initrd(&run, &bytes, spec.memory_bytes);
}

#[test]
fn large_memory_is_split_around_the_mmio_hole() {
    // 5 GiB: RAM below 3 GiB and from 4 GiB; memory is only reserved, never touched.
    let mut spec = GuestSpec::new("boot");
    spec.memory_bytes = 5 << 30;
    let run = check_report(&spec, "pvh");
    let e820 = run.lines_with("E820");
    assert!(e820.iter().any(|l| l.starts_with("0000000100000000 0000000080000000 ")), "{e820:?}");
}

#[test]
fn no_initrd_reports_none() {
    let run = check_report(&GuestSpec::new("boot"), "pvh");
    let f: Vec<u64> = run.lines_with("INITRD")[0].split_whitespace().map(hex).collect();
    assert_eq!((f[0], f[1]), (0, 0));
}
