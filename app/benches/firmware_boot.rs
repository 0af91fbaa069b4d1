//! Firmware boot time, process to process: from spawning `vessel start` on a VM that boots
//! an El Torito CD through SeaBIOS to SeaBIOS's banner and to the first byte the disc's
//! boot image prints (tests/guests/firmware/cd-hello.S: "HI!" on COM1), against spawning
//! `qemu-system-x86_64 -accel kvm -nographic -cdrom` on the same ISO with the same memory
//! and the same SeaBIOS (Debian's), in the same run. Both mirror SeaBIOS's screen to the
//! serial port, read here from their stdout as it arrives. On PVM hosts SeaBIOS's ring-0
//! code is emulated for both; the ratio is what compares.
//!
//! Run: cargo bench -p vessel --bench firmware_boot [-- ROUNDS]

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The guest's memory, for both.
const MEMORY_MIB: u64 = 128;
/// A round that has not booted by then failed.
const LIMIT: Duration = Duration::from_secs(120);

struct Sample {
    banner: Duration,
    boot_sector: Duration,
}

/// Reads `child`'s stdout until the boot image's first byte: the first 'H' after
/// "Booting from DVD/CD" (SeaBIOS's own line has none), then ends the child.
fn sample(mut child: Child, started: Instant) -> Option<Sample> {
    let mut stdout = child.stdout.take()?;
    let (mut seen, mut banner) = (Vec::new(), None);
    let mut buf = [0u8; 4096];
    let found = loop {
        if started.elapsed() > LIMIT {
            break None;
        }
        let n = match stdout.read(&mut buf) {
            Ok(0) | Err(_) => break None,
            Ok(n) => n,
        };
        seen.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&seen);
        if banner.is_none() && text.contains("SeaBIOS (version") {
            banner = Some(started.elapsed());
        }
        if let Some(at) = text.find("Booting from DVD/CD")
            && text[at..].contains('H')
        {
            break Some(started.elapsed());
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    Some(Sample { banner: banner?, boot_sector: found? })
}

/// Spawns `command` with its stdout to read, timing from the spawn.
fn timed(command: &mut Command) -> Option<Sample> {
    let started = Instant::now();
    let child =
        command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().ok()?;
    sample(child, started)
}

fn vessel_once(lib: &Path) -> Option<Sample> {
    timed(
        Command::new(env!("CARGO_BIN_EXE_vessel"))
            .arg("--library")
            .arg(lib)
            .args(["start", "hello"]),
    )
}

fn qemu_once(iso: &Path) -> Option<Sample> {
    timed(
        Command::new("qemu-system-x86_64")
            .args(["-accel", "kvm", "-nographic", "-m", &format!("{MEMORY_MIB}M")])
            .args(["-no-reboot", "-net", "none", "-boot", "d", "-cdrom"])
            .arg(iso),
    )
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    let rounds: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(5);
    let dir = std::env::temp_dir().join(format!("vessel-fw-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let iso = vessel_tests::firmware_hello_iso(&dir);
    let lib = dir.join("library");
    // The same machine as QEMU's: the CD first, no disk, no network card.
    let memory = format!("{MEMORY_MIB}M");
    let made = Command::new(env!("CARGO_BIN_EXE_vessel"))
        .arg("--library")
        .arg(&lib)
        .args(["create", "hello", "--disk-size", "0", "--no-net", "--memory", &memory, "--iso"])
        .arg(&iso)
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let set = Command::new(env!("CARGO_BIN_EXE_vessel"))
        .arg("--library")
        .arg(&lib)
        .args(["set", "hello", "boot.order=cd"])
        .output()
        .unwrap();
    assert!(set.status.success(), "{}", String::from_utf8_lossy(&set.stderr));

    let vessel: Vec<Sample> = (0..rounds).filter_map(|_| vessel_once(&lib)).collect();
    let qemu: Vec<Sample> = (0..rounds).filter_map(|_| qemu_once(&iso)).collect();
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "firmware_boot: {rounds} rounds each, process spawn to SeaBIOS's banner and to the \
         boot sector's first byte, medians"
    );
    let line = |name: &str, samples: &[Sample]| {
        let banner = median(samples.iter().map(|s| s.banner).collect());
        let boot = median(samples.iter().map(|s| s.boot_sector).collect());
        println!(
            "  {name:<6} banner {:>9.1} ms   boot sector {:>9.1} ms   ({} failed)",
            ms(banner),
            ms(boot),
            rounds - samples.len()
        );
        (banner, boot)
    };
    if vessel.is_empty() {
        println!("  vessel every round failed");
        return;
    }
    let (v_banner, v_boot) = line("vessel", &vessel);
    if qemu.is_empty() {
        println!("  qemu   every round failed; is qemu-system-x86 installed and /dev/kvm usable?");
        return;
    }
    let (q_banner, q_boot) = line("qemu", &qemu);
    println!(
        "  ratio (qemu / vessel): banner {:.2}x, boot sector {:.2}x",
        q_banner.as_secs_f64() / v_banner.as_secs_f64(),
        q_boot.as_secs_f64() / v_boot.as_secs_f64()
    );
}
