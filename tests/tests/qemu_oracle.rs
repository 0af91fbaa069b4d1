//! The same test guest under QEMU (TCG), the reference implementation: what the guest
//! checks holds there too, so a pass against Vessel means Vessel behaves like a PC.

use vessel_tests::*;

fn lines(out: &str, key: &str) -> Vec<String> {
    let prefix = format!("{key} ");
    out.lines().filter_map(|l| l.strip_prefix(&prefix).map(str::to_string)).collect()
}

#[test]
fn boot_report_under_qemu() {
    assert!(have_qemu(), "qemu-system-x86_64 is needed: apt-get install qemu-system-x86");
    let out = run_qemu(&testguest_elf(), "test=boot", &[]);
    assert!(out.contains("DONE"), "{out}");
    assert_eq!(lines(&out, "PROTO"), vec!["pvh"]);
    assert_eq!(lines(&out, "MAGIC"), vec!["ok"]);
    assert_eq!(lines(&out, "CMDLINE"), vec!["test=boot"]);
    assert!(lines(&out, "RSDP")[0].ends_with(" ok"), "{out}");
    let tables = lines(&out, "ACPI");
    assert!(tables.len() >= 3, "{out}");
    for t in &tables {
        assert!(t.ends_with(" ok"), "{t}");
    }
    assert_eq!(hex(&lines(&out, "CPUS")[0]), 1);
}

#[test]
fn smp_under_qemu() {
    assert!(have_qemu(), "qemu-system-x86_64 is needed: apt-get install qemu-system-x86");
    let out = run_qemu(&testguest_elf(), "test=smp", &["-smp", "2"]);
    assert_eq!(hex(&lines(&out, "SMP")[0]), 2, "{out}");
    let mut cpus = lines(&out, "CPU");
    cpus.sort();
    assert_eq!(cpus, vec!["0000000000000000 up bsp", "0000000000000001 up ap"]);
}
