//! The CD drive on the KVM path: the test guest's ATAPI PIO driver identifies the drive,
//! reads the ISO's primary volume descriptor and a file through the root directory, sees
//! the host swap the disc (unit attention), and ejects it. The same guest passes under
//! QEMU with `-cdrom` (QEMU's IDE as the reference).

use std::path::{Path, PathBuf};

use vessel_tests::*;
use vmm::DeviceConfig;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vessel-cd-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn last_lba(iso: &Path) -> u64 {
    std::fs::metadata(iso).unwrap().len() / 2048 - 1
}

/// What both machines report alike; `first_tur` and the eject's ASCQ differ (see below).
fn check_common(lines: impl Fn(&str) -> Vec<String>, iso: &Path, out: &str) {
    let sig: Vec<u64> = lines("ATAPI SIG")[0].split_whitespace().map(hex).collect();
    assert_eq!(sig, [0x14, 0xeb], "a packet device's signature:\n{out}");
    assert_eq!(hex(&lines("ATAPI CAPACITY")[0]), last_lba(iso));
    // "CD001", version 1: the primary volume descriptor at sector 16.
    assert_eq!(lines("ATAPI PVD"), ["0043443030310100"]);
    assert_eq!(lines("ATAPI VOLUME")[0], "ONE");
    assert_eq!(lines("ATAPI FILE"), ["HELLO.TXT;1"]);
    assert_eq!(lines("ATAPI DATA"), [hex_of(b"hello fr")]);
    assert!(out.contains("ATAPI DONE"), "{out}");
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn the_guest_reads_swaps_and_ejects_discs_on_vessel() {
    let dir = scratch("vessel");
    let (one, two) =
        (make_iso(&dir, "ONE", "hello from the first disc"), make_iso(&dir, "TWO", "second"));
    let mut spec = GuestSpec::new("atapi");
    spec.devices = vec![DeviceConfig::CdRom { iso: Some(one.clone()) }];
    let mut run = spec.boot();
    run.expect_output("ATAPI WAIT SWAP\n");
    // The guest locked the tray: a swap or an eject is only a request it refuses...
    let locked = |r: Result<(), vmm::MachineError>| {
        matches!(r, Err(vmm::MachineError::Cd(vmm::devices::storage::mmc::MediaError::Locked)))
    };
    assert!(locked(run.handle.insert_cd(&two)));
    assert!(locked(run.handle.eject_cd(false)));
    // ...until the host forces it out; then the new disc goes in.
    run.handle.eject_cd(true).unwrap();
    run.handle.insert_cd(&two).unwrap();
    // A file that is not an ISO changes nothing.
    let bad = dir.join("notes.txt");
    std::fs::write(&bad, "not a disc").unwrap();
    let err = run.handle.insert_cd(&bad).unwrap_err();
    assert!(err.to_string().contains("not an ISO image"), "{err}");
    assert!(matches!(run.expect_stopped(), vmm::StopReason::PoweredOff));
    let out = run.output();
    check_common(|k| run.lines_with(k), &one, &out);
    assert_eq!(run.lines_with("ATAPI MODEL"), ["VESSEL Virtual CD-ROM"]);
    assert_eq!(hex(&run.lines_with("ATAPI TUR")[0]), 6, "the disc is news at power-on");
    // After the swap: the second disc's capacity and volume.
    assert!(out.contains("ATAPI SWAPPED"), "{out}");
    assert_eq!(hex(&run.lines_with("ATAPI CAPACITY")[1]), last_lba(&two));
    assert_eq!(run.lines_with("ATAPI VOLUME")[1], "TWO");
    // Ejected by the guest: NOT READY, medium not present, tray open.
    let sense: Vec<u64> = run.lines_with("ATAPI EJECTED")[0].split_whitespace().map(hex).collect();
    assert_eq!(sense, [2, 0x3a, 2]);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_same_guest_under_qemu() {
    assert!(have_qemu(), "qemu-system-x86_64 is needed: apt-get install qemu-system-x86");
    let dir = scratch("qemu");
    let one = make_iso(&dir, "ONE", "hello from the first disc");
    let out = run_qemu(&testguest_elf(), "test=atapi-noswap", &["-cdrom", one.to_str().unwrap()]);
    let lines = |key: &str| -> Vec<String> {
        let prefix = format!("{key} ");
        out.lines().filter_map(|l| l.strip_prefix(&prefix).map(str::to_string)).collect()
    };
    check_common(lines, &one, &out);
    // QEMU's firmware (SeaBIOS) polls the drive first and takes the unit attention; its
    // drive reports the eject as "medium not present" without the tray detail.
    let sense: Vec<u64> = lines("ATAPI EJECTED")[0].split_whitespace().map(hex).collect();
    assert_eq!(sense[..2], [2, 0x3a]);
    let _ = std::fs::remove_dir_all(dir);
}

/// The disc's bytes as the DMA guest adds them up: little-endian u64 words, wrapping.
fn disc_sum(iso: &Path) -> u64 {
    let bytes = std::fs::read(iso).unwrap();
    bytes.chunks(8).map(|w| u64::from_le_bytes(w.try_into().unwrap())).fold(0, u64::wrapping_add)
}

/// What a DMA run reports, checked against the disc itself.
fn check_dma(lines: impl Fn(&str) -> Vec<String>, iso: &Path, out: &str) {
    assert!(out.contains("DMA DONE"), "{out}");
    assert_eq!(hex(&lines("DMA CAPACITY")[0]), last_lba(iso), "{out}");
    // Type 1 (the primary volume descriptor), "CD001", version 1.
    assert_eq!(lines("DMA PVD"), ["0143443030310100"], "{out}");
    assert_eq!(hex(&lines("DMA SUM")[0]), disc_sum(iso), "every byte of the disc: {out}");
    assert_eq!(hex(&lines("DMA BM")[0]), 0, "no bus-master error, the table used up: {out}");
}

/// A disc larger than one request, with bytes that differ everywhere.
fn dma_iso(dir: &Path) -> PathBuf {
    let data: Vec<u8> =
        (0..3u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    iso_of(dir, "DMA", &[("DATA.BIN", &data)])
}

/// Bus-master DMA: the guest reads the whole disc through the PRD table, on Vessel and on
/// QEMU's PIIX3 IDE, with the same report.
#[test]
fn the_guest_reads_the_disc_by_dma_on_vessel_and_qemu() {
    assert!(have_qemu(), "qemu-system-x86_64 is needed: apt-get install qemu-system-x86");
    let dir = scratch("dma");
    let iso = dma_iso(&dir);
    let mut spec = GuestSpec::new("atapi-dma");
    spec.devices = vec![DeviceConfig::CdRom { iso: Some(iso.clone()) }];
    let mut run = spec.boot();
    assert!(matches!(run.expect_stopped(), vmm::StopReason::PoweredOff));
    let out = run.output();
    check_dma(|k| run.lines_with(k), &iso, &out);

    let out = run_qemu(&testguest_elf(), "test=atapi-dma", &["-cdrom", iso.to_str().unwrap()]);
    let lines = |key: &str| -> Vec<String> {
        let prefix = format!("{key} ");
        out.lines().filter_map(|l| l.strip_prefix(&prefix).map(str::to_string)).collect()
    };
    check_dma(lines, &iso, &out);
    let _ = std::fs::remove_dir_all(dir);
}
