//! Live-migration benchmark: a 1 GiB test guest idle (test=migrate-idle) and rewriting its
//! memory at a steady rate (test=migrate, migrate-100: the rate the sender measured is
//! printed), moved between two machines of this process over a unix socket pair and over
//! TCP on 127.0.0.1. For each: total time, passes, memory sent, the pause as the sender
//! measured it (from the pause to the receiver's Running) and as the guest measured it
//! (`vessel_tests::guest_pause`: its TSC and the CMOS clock; rough on a busy host), and
//! the pause against Cloud Hypervisor's default target, 300 ms, the bar for an idle
//! guest. The reference, in the same run: what each link
//! carries a second (256 MiB through it, nothing else done).
//!
//! Run: cargo bench -p vessel-tests --bench migration

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use vessel_tests::{GuestRun, GuestSpec, TIMEOUT, guest_pause, has_whole_second, tsc_hz};
use vmm::migration::{self, MigrateOptions, ReceiveOptions};
use vmm::{DeviceConfig, StopReason};

const MEMORY: u64 = 1 << 30;
const CLOUD_HYPERVISOR_DOWNTIME: Duration = Duration::from_millis(300);

/// A connected pair of the link's kind.
fn pair(tcp: bool) -> (Box<dyn migration::Connection>, Box<dyn migration::Connection>) {
    if tcp {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (b, _) = listener.accept().unwrap();
        a.set_nodelay(true).unwrap();
        b.set_nodelay(true).unwrap();
        (Box::new(a), Box::new(b))
    } else {
        let (a, b) = UnixStream::pair().unwrap();
        (Box::new(a), Box::new(b))
    }
}

/// Bytes a second the link carries.
fn link_rate(tcp: bool) -> f64 {
    let (mut a, mut b) = pair(tcp);
    let total = 256usize << 20;
    let reader = std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 20];
        let mut got = 0;
        while got < total {
            got += b.read(&mut buf).unwrap();
        }
    });
    let chunk = vec![0x5au8; 1 << 20];
    let start = Instant::now();
    for _ in 0..total / chunk.len() {
        a.write_all(&chunk).unwrap();
    }
    reader.join().unwrap();
    total as f64 / start.elapsed().as_secs_f64()
}

fn ticks(run: &GuestRun) -> usize {
    run.output().lines().filter(|l| l.starts_with("MIGRATE ")).count()
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk.raw");
    std::fs::File::create(&disk).unwrap().set_len(1 << 20).unwrap();
    let hz = tsc_hz();
    let links = [(false, "unix"), (true, "tcp")];
    for (tcp, name) in links {
        println!("{name} link, alone: {:.0} MiB/s", link_rate(tcp) / (1 << 20) as f64);
    }
    println!();
    for test in ["migrate-idle", "migrate", "migrate-100"] {
        for (tcp, link) in links {
            let mut spec = GuestSpec::new(test);
            spec.memory_bytes = MEMORY;
            let image = vmm::devices::storage::image::ImageSpec::raw(&disk);
            spec.devices.push(DeviceConfig::Block { image, read_only: false });
            let mut run = spec.boot();
            let ready = |r: &GuestRun| ticks(r) >= 20 && has_whole_second(&r.output());
            assert!(run.wait_until(TIMEOUT, ready), "{}", run.output());
            let (mut sender, mut receiver) = pair(tcp);
            let config = spec.config();
            let receiving = std::thread::spawn(move || {
                migration::receive(
                    config,
                    None,
                    &mut *receiver,
                    &ReceiveOptions::default(),
                    &|_| {},
                )
            });
            let reports = std::sync::Mutex::new(Vec::new());
            let migrated = run
                .handle
                .migrate(&mut *sender, &MigrateOptions::default(), |p| {
                    reports.lock().unwrap().push(p.clone())
                })
                .expect("the migration completes");
            let handle = receiving.join().unwrap().expect("the receiver runs it");
            assert!(matches!(run.expect_stopped(), StopReason::Migrated));
            let before = run.output();
            let mut moved = GuestRun { handle, serial: Vec::new(), events: Vec::new() };
            let measured = |r: &GuestRun| guest_pause(&before, &r.output(), hz);
            assert!(moved.wait_until(TIMEOUT, |r| measured(r).is_some()), "{}", moved.output());
            let guest = measured(&moved).unwrap_or_default();
            let rate = reports.lock().unwrap().iter().map(|p| p.dirty_rate).max().unwrap_or(0);
            println!(
                "{test:13} over {link:4}: total {:>7.1?}, {} passes, {:>6} KiB sent, dirtied \
                 {:>4} MiB/s; paused {:>6.1?} ({:>6.1?} as the guest measured): {:.3}x Cloud \
                 Hypervisor's 300 ms target",
                migrated.total,
                migrated.passes,
                migrated.memory_bytes >> 10,
                rate >> 20,
                migrated.downtime,
                guest,
                migrated.downtime.as_secs_f64() / CLOUD_HYPERVISOR_DOWNTIME.as_secs_f64()
            );
            moved.handle.send_serial(b"q").unwrap();
            moved.expect_stopped();
        }
    }
}
