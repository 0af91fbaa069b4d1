//! Sequential read throughput of a disc through the CD drive (IDE/ATAPI), driven by the
//! test guest: READ(10) over the whole disc, by bus-master DMA in 128 KiB requests
//! (test=atapi-dma, as Linux's ata_piix does) and 1 MiB ones (test=atapi-dma-1m, where the
//! data path counts more than the register accesses), and by 32-bit PIO in 32 KiB requests
//! (test=atapi-bench, as firmware does), against reading the same image file on the host
//! in reads of the same size, and
//! against QEMU's IDE CD-ROM (-accel kvm) with the same guest. With PIO every 32-bit data
//! register access is a VM exit; with DMA a request is a handful of register accesses.
//!
//! Run: cargo bench -p vessel-tests --bench cd_read

use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use vessel_tests::{GuestSpec, TIMEOUT};
use vmm::{DeviceConfig, Event, Machine, MachineState};

const DISC_BYTES: usize = 16 << 20;

fn vessel(test: &str, iso: &std::path::Path) -> Duration {
    let mut spec = GuestSpec::new(test);
    spec.devices = vec![DeviceConfig::CdRom { iso: Some(iso.to_path_buf()) }];
    let handle = Machine::build(spec.config(), None).expect("machine builds");
    handle.start().unwrap();
    let (mut start, mut end) = (None, None);
    while let Ok(event) = handle.events().recv_timeout(TIMEOUT) {
        match event {
            Event::DebugMarker { code: 0x40, since_build } => start = Some(since_build),
            Event::DebugMarker { code: 0x41, since_build } => end = Some(since_build),
            Event::StateChanged(MachineState::Stopped(_)) => break,
            _ => {}
        }
    }
    end.expect("end milestone") - start.expect("start milestone")
}

fn host(iso: &std::path::Path, request: usize) -> Duration {
    let file = std::fs::File::open(iso).unwrap();
    let mut buf = vec![0u8; request];
    let t = Instant::now();
    for at in (0..DISC_BYTES).step_by(buf.len()) {
        file.read_exact_at(&mut buf, at as u64).unwrap();
    }
    t.elapsed()
}

fn qemu(test: &str, iso: &std::path::Path) -> Option<Duration> {
    let cmdline = format!("test={test}");
    let marks = vessel_tests::qemu_kvm_milestones(&cmdline, &["-cdrom", iso.to_str()?])?;
    let at = |code| marks.iter().find(|(c, _)| *c == code).map(|(_, t)| *t);
    Some(at(0x41)? - at(0x40)?)
}

fn main() {
    let iso = std::env::temp_dir().join(format!("vessel-cd-bench-{}.iso", std::process::id()));
    let data: Vec<u8> =
        (0..DISC_BYTES as u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect();
    std::fs::write(&iso, data).unwrap();
    let _ = host(&iso, 1 << 20); // page cache
    let mib_s = |d: Duration| DISC_BYTES as f64 / (1 << 20) as f64 / d.as_secs_f64();
    println!("cd_read: sequential read of a 16 MiB disc");
    let rows =
        [("DMA", "atapi-dma", 128), ("DMA", "atapi-dma-1m", 1024), ("PIO", "atapi-bench", 32)];
    for (name, test, request) in rows {
        let v = vessel(test, &iso);
        let h = host(&iso, request << 10);
        let q = qemu(test, &iso);
        let mut line = format!(
            "  {name} {request:>4} KiB  vessel {:>8.1} MiB/s  host file {:>8.1} MiB/s  vessel/host {:.4}",
            mib_s(v),
            mib_s(h),
            mib_s(v) / mib_s(h)
        );
        match q {
            Some(q) => {
                line += &format!(
                    "  qemu {:>8.1} MiB/s  vessel/qemu {:.2}",
                    mib_s(q),
                    mib_s(v) / mib_s(q)
                )
            }
            None => line += "  (qemu-system-x86_64 -accel kvm did not run)",
        }
        println!("{line}");
    }
    let _ = std::fs::remove_file(iso);
}
