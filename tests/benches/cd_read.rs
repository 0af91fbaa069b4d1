//! Sequential read throughput of a disc through the CD drive (IDE/ATAPI), driven by the
//! test guest: READ(10) over the whole disc, by bus-master DMA in 128 KiB requests
//! (test=atapi-dma, as Linux's ata_piix does) and 1 MiB ones (test=atapi-dma-1m, where the
//! data path counts more than the register accesses), and by 32-bit PIO in 32 KiB requests
//! (test=atapi-bench, as firmware does), against reading the same image file on the host
//! in reads of the same size, and
//! against QEMU's IDE CD-ROM (-accel kvm) with the same guest. With PIO every 32-bit data
//! register access is a VM exit; with DMA a request is a handful of register accesses
//! (`DMA_REQUEST_ACCESSES` VM exits). The guest also times status register reads (one exit
//! each), so each DMA row says how much of a request's time its exits take on this host.
//!
//! Run: cargo bench -p vessel-tests --bench cd_read

use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use vessel_tests::{GuestSpec, TIMEOUT};
use vmm::{DeviceConfig, Event, Machine, MachineState};

const DISC_BYTES: usize = 16 << 20;
/// Status register reads the guest times (STATUS_READS in tests/guests/atapi_dma.c).
const STATUS_READS: u32 = 4096;
/// VM exits of one DMA request at the least (atapi_dma.c's dma_packet): seven register
/// writes to set it up, a status read, the CDB's six words (one string write, but KVM
/// emulates OUTS a word at a time: six exits, counted), start, a status read and stop.
const DMA_REQUEST_ACCESSES: u32 = 17;

/// How long the disc's reads took, and one register access (if the test times them).
struct Timing {
    reads: Duration,
    access: Option<Duration>,
}

impl Timing {
    fn from_marks(at: impl Fn(u8) -> Option<Duration>) -> Option<Timing> {
        let access = at(0x43).zip(at(0x42)).map(|(end, start)| (end - start) / STATUS_READS);
        Some(Timing { reads: at(0x41)? - at(0x40)?, access })
    }

    /// "per request N µs, K exits at X µs: M µs (P%)".
    fn breakdown(&self, request: usize) -> String {
        let Some(access) = self.access else { return String::new() };
        let requests = DISC_BYTES.div_ceil(request) as u32;
        let per_request = self.reads / requests;
        let exits = access * DMA_REQUEST_ACCESSES;
        format!(
            "; per request {} µs, {DMA_REQUEST_ACCESSES} VM exits at {:.1} µs: {} µs ({:.0}%)",
            per_request.as_micros(),
            access.as_secs_f64() * 1e6,
            exits.as_micros(),
            100.0 * exits.as_secs_f64() / per_request.as_secs_f64()
        )
    }
}

fn vessel(test: &str, iso: &std::path::Path) -> Timing {
    let mut spec = GuestSpec::new(test);
    spec.devices = vec![DeviceConfig::CdRom { iso: Some(iso.to_path_buf()) }];
    let handle = Machine::build(spec.config(), None).expect("machine builds");
    handle.start().unwrap();
    let mut marks = Vec::new();
    while let Ok(event) = handle.events().recv_timeout(TIMEOUT) {
        match event {
            Event::DebugMarker { code, since_build } => marks.push((code, since_build)),
            Event::StateChanged(MachineState::Stopped(_)) => break,
            _ => {}
        }
    }
    let at = |code| marks.iter().find(|(c, _)| *c == code).map(|(_, t)| *t);
    Timing::from_marks(at).expect("the read milestones")
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

fn qemu(test: &str, iso: &std::path::Path) -> Option<Timing> {
    let cmdline = format!("test={test}");
    let marks = vessel_tests::qemu_kvm_milestones(&cmdline, &["-cdrom", iso.to_str()?])?;
    let at = |code| marks.iter().find(|(c, _)| *c == code).map(|(_, t)| *t);
    Timing::from_marks(at)
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
            mib_s(v.reads),
            mib_s(h),
            mib_s(v.reads) / mib_s(h)
        );
        match &q {
            Some(q) => {
                line += &format!(
                    "  qemu {:>8.1} MiB/s  vessel/qemu {:.2}",
                    mib_s(q.reads),
                    mib_s(v.reads) / mib_s(q.reads)
                )
            }
            None => line += "  (qemu-system-x86_64 -accel kvm did not run)",
        }
        println!("{line}");
        if name == "DMA" {
            println!("      vessel{}", v.breakdown(request << 10));
            if let Some(q) = q {
                println!("      qemu{}", q.breakdown(request << 10));
            }
        }
    }
    let _ = std::fs::remove_file(iso);
}
