//! What a VM in a process of its own costs, against the same VM run on a thread of the
//! caller's process (as the window ran VMs before), in the same run:
//! - power-on to the guest's first instruction (the test guest's debug-port milestone 1),
//!   from the moment the caller starts the VM;
//! - a key press to the guest's event buffer (milestone 0x30 as the guest sees the event);
//!   the VM process's way goes over its control socket;
//! - the VM process's memory beyond its guest RAM (its own, and what it maps of the vessel
//!   binary and libraries, which the page cache shares between processes), and whether it
//!   loaded GUI libraries.
//!
//! Markers are timed on CLOCK_MONOTONIC, which every process of the host shares.
//!
//! Run: cargo bench -p vessel --bench vm_process [-- ROUNDS]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use vessel::vmhost::client::{self, Launcher};
use vessel::vmhost::protocol::{self, Reply, Request, monotonic_ns};
use vessel::vmhost::wire::FrameReader;
use vessel_tests::testguest_elf;

const KEY_A: u16 = 30;

fn vessel(lib: &Path, args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_vessel"))
        .arg("--library")
        .arg(lib)
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A started VM: its connection, subscribed to serial and debug-port markers.
struct Vm {
    writer: std::os::unix::net::UnixStream,
    reader: FrameReader,
    serial: String,
    pid: Option<u32>,
}

impl Vm {
    fn start(launcher: &Launcher, lib: &Path, root: &Path) -> (Vm, u64) {
        let t0 = monotonic_ns();
        let started = client::start(launcher, lib, root).unwrap();
        let mut writer = started.stream.try_clone().unwrap();
        let subscribe = Request::Subscribe { serial: true, display: false, debug: true };
        protocol::send(&mut writer, &subscribe).unwrap();
        let reader = FrameReader::new(started.stream);
        // The child is reaped when it ends (its Child dropped; it is not waited here).
        let pid = started.child.as_ref().map(|c| c.id());
        std::mem::forget(started.child);
        (Vm { writer, reader, serial: String::new(), pid }, t0)
    }

    fn send(&mut self, request: &Request) {
        protocol::send(&mut self.writer, request).unwrap();
    }

    /// The next debug-port marker `code`, keeping the serial output seen meanwhile.
    fn marker(&mut self, code: u8) -> u64 {
        loop {
            match self.reader.receive::<Reply>().unwrap().expect("the VM runs") {
                Reply::DebugMarker { code: c, monotonic_ns } if c == code => return monotonic_ns,
                Reply::Serial { bytes } => self.serial.push_str(&String::from_utf8_lossy(&bytes)),
                _ => {}
            }
        }
    }

    fn until_serial(&mut self, text: &str) {
        while !self.serial.contains(text) {
            if let Reply::Serial { bytes } = self.reader.receive::<Reply>().unwrap().unwrap() {
                self.serial.push_str(&String::from_utf8_lossy(&bytes));
            }
        }
    }

    fn usage(&mut self) -> protocol::Usage {
        loop {
            if let Reply::Usage(u) = self.reader.receive::<Reply>().unwrap().unwrap() {
                return u;
            }
        }
    }

    /// Powers the VM off and waits until its process (or thread) let go of it.
    fn power_off(mut self) {
        self.send(&Request::PowerOff);
        loop {
            match self.reader.receive::<Reply>() {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => panic!("the VM's socket: {e}"),
            }
        }
    }
}

/// Half the median round trip of one byte between two processes over a socketpair, each
/// after 20 ms asleep (as a key press finds a VM process): the cost of waking a thread of
/// another process on this host, in microseconds.
fn idle_wake_up_us(rounds: usize) -> f64 {
    use std::io::{Read, Write};
    let (mut ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    let mut echo = Command::new("cat")
        .stdin(std::os::fd::OwnedFd::from(theirs.try_clone().unwrap()))
        .stdout(std::os::fd::OwnedFd::from(theirs.try_clone().unwrap()))
        .spawn()
        .unwrap();
    let mut byte = [0u8];
    let mut trips = Vec::new();
    for _ in 0..rounds {
        std::thread::sleep(Duration::from_millis(20));
        let sent = monotonic_ns();
        ours.write_all(b"x").unwrap();
        ours.read_exact(&mut byte).unwrap();
        trips.push((monotonic_ns() - sent) as f64 / 1e3);
    }
    let _ = theirs.shutdown(std::net::Shutdown::Both);
    drop(ours);
    let _ = echo.kill();
    let _ = echo.wait();
    median(trips) / 2.0
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn create(lib: &Path, name: &str, test: &str) -> PathBuf {
    let kernel = testguest_elf();
    let cmdline = format!("test={test}");
    let args = ["create", name, "--kernel", kernel.to_str().unwrap(), "--cmdline", &cmdline];
    vessel(lib, &[&args[..], &["--memory", "256M", "--disk-size", "8M", "--no-net"]].concat());
    lib.join(format!("{name}.vessel"))
}

fn main() {
    let rounds: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(10);
    let lib = std::env::temp_dir().join(format!("vessel-bench-vmproc-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&lib);
    let boot = create(&lib, "boot", "bench");
    let input = create(&lib, "input", "input");
    let process = Launcher::Process(env!("CARGO_BIN_EXE_vessel-vm").into());
    let launchers = [("thread of the caller", Launcher::InProcess), ("own process", process)];

    println!(
        "vm_process: a VM in its own process against a thread of the caller's ({rounds} rounds)"
    );
    let mut first = Vec::new();
    for (what, launcher) in &launchers {
        let mut times = Vec::new();
        for _ in 0..rounds {
            let (mut vm, t0) = Vm::start(launcher, &lib, &boot);
            times.push((vm.marker(1) - t0) as f64 / 1e6);
            vm.power_off();
        }
        let m = median(times);
        first.push(m);
        println!("  power-on -> first instruction, {what:<20}: median {m:7.2} ms");
    }
    println!("  ratio (own process / thread): {:.2}x", first[1] / first[0]);

    // A key press: to the machine's InputSink in the caller's own process (how the window
    // sent keys before), against over the VM process's control socket.
    let presses = rounds.max(20) * 4;
    let direct: Vec<f64> =
        vessel_tests::input_latency(presses).into_iter().map(|d| d.as_secs_f64() * 1e6).collect();
    let direct = median(direct);
    println!("  key press -> guest event buffer, InputSink in-process: median {direct:7.1} us");
    let (mut vm, _) = Vm::start(&launchers[1].1, &lib, &input);
    vm.until_serial("INPUT READY");
    let mut lat = Vec::new();
    for i in 0..presses {
        let sent = monotonic_ns();
        vm.send(&Request::Key { code: KEY_A, down: i % 2 == 0 });
        // The first arrival after the press (the last press's SYN came before it).
        let mut arrived = vm.marker(0x30);
        while arrived < sent {
            arrived = vm.marker(0x30);
        }
        lat.push((arrived - sent) as f64 / 1e3);
        std::thread::sleep(Duration::from_millis(20));
    }
    let socket = median(lat);
    println!("  key press -> guest event buffer, own process (socket): median {socket:7.1} us");
    println!("  the socket adds {:.1} us to a key press", socket - direct);
    let wake = idle_wake_up_us(presses);
    println!(
        "  reference: a thread of another process woken from idle through a socket, \
         {wake:.1} us; the socket adds {:.2} of them",
        (socket - direct) / wake
    );
    if let Some(pid) = vm.pid {
        // The largest of the reports over three seconds after the presses (the VM process
        // lets go of its start-up's pages a second into the run; what it uses comes back).
        let usage =
            (0..3).map(|_| vm.usage()).max_by_key(|u| u.process_overhead).expect("three reports");
        let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
        let gui: Vec<&str> =
            ["libX11", "libxcb", "libwayland", "libGL", "libEGL", "libvulkan", "libxkbcommon"]
                .into_iter()
                .filter(|l| maps.contains(l))
                .collect();
        let mib = |bytes: u64| bytes as f64 / (1 << 20) as f64;
        println!(
            "  VM process memory beyond guest RAM (RSS): {:.1} MiB, of which {:.1} MiB its own \
             and {:.1} MiB code and data mapped from files, shared with every vessel process \
             (guest RAM resident {:.1} MiB); GUI libraries loaded: {}",
            mib(usage.process_overhead),
            mib(usage.process_overhead.saturating_sub(usage.process_shared)),
            mib(usage.process_shared),
            mib(usage.memory_resident),
            if gui.is_empty() { "none".to_string() } else { gui.join(", ") }
        );
    }
    vm.power_off();
    let _ = std::fs::remove_dir_all(lib);
}
