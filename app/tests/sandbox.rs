//! The VM process's sandbox (seccomp, Landlock), on the KVM path. Every kind of test guest
//! runs in it, driven as the window and the CLI drive VMs — disk, network (passt through the
//! helper), GPU (its frame read from the VM process's memory), input, a CD swapped for a
//! disc outside the VM's folder (handed over open), reboots, the power button. And it
//! bites: a device model that makes a forbidden system call ends its process, which says
//! which call; one that opens a file outside the VM's folder is refused.

mod common;
use common::{json, text, vessel};

use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use vessel::vmhost::client;
use vessel::vmhost::protocol::{self, Reply, Request, StopKind, VmState};
use vessel::vmhost::wire::{self, FrameReader};
use vessel_tests::{make_iso, testguest_elf};
use vmm::display::{FrameLayout, FrameMapping, PixelFormat};

fn create(lib: &Path, name: &str, test: &str, net: bool) -> PathBuf {
    let kernel = testguest_elf();
    let cmdline = format!("test={test}");
    let mut args =
        vec!["create", name, "--kernel", kernel.to_str().unwrap(), "--cmdline", &cmdline];
    args.extend(["--memory", "64M", "--disk-size", "8M"]);
    if !net {
        args.push("--no-net");
    }
    let out = vessel(lib, &args);
    assert!(out.status.success(), "create: {}", text(&out.stderr));
    let list = json(lib, &["list", "--json"]);
    let vm = list.as_array().unwrap().iter().find(|v| v["name"] == name).unwrap().clone();
    PathBuf::from(vm["path"].as_str().unwrap())
}

/// `vessel start NAME` in the foreground until the VM stops, with the faulty test device.
fn start(lib: &Path, name: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vessel"))
        .arg("--library")
        .arg(lib)
        .args(["start", name])
        .env("VESSEL_TEST_DEVICES", "faulty")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn detach(lib: &Path, name: &str) {
    let out = vessel(lib, &["start", "--detach", name]);
    assert!(out.status.success(), "start {name}: {}", text(&out.stderr));
}

/// A client of a running VM's control socket, as the window is one.
struct Client {
    writer: UnixStream,
    reader: FrameReader,
    serial: String,
    state: Option<VmState>,
    frame: Option<(Arc<FrameMapping>, FrameLayout)>,
    pid: Option<u32>,
}

impl Client {
    fn attach(root: &Path, display: bool) -> Client {
        let stream = client::connect(root, "vm").unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
        let mut writer = stream.try_clone().unwrap();
        protocol::send(&mut writer, &Request::Subscribe { serial: true, display, debug: false })
            .unwrap();
        Client {
            writer,
            reader: FrameReader::new(stream),
            serial: String::new(),
            state: None,
            frame: None,
            pid: None,
        }
    }

    fn send(&mut self, request: &Request, fd: Option<&OwnedFd>) {
        wire::send_with_fd(&mut self.writer, request, fd).unwrap();
    }

    /// Reads what the VM process tells until `done` holds; false if it ended first.
    fn until(&mut self, done: impl Fn(&Client) -> bool) -> bool {
        while !done(self) {
            match self.reader.receive::<Reply>().expect("the VM process answers in time") {
                None => return false,
                Some(Reply::Serial { bytes }) => self.serial.push_str(&text(&bytes)),
                Some(Reply::StateChanged { state }) => self.state = Some(state),
                Some(Reply::Built { machine }) => self.pid = Some(machine.pid),
                Some(Reply::Frame { layout, new_memory: true, .. }) => {
                    let fd = self.reader.take_fd().expect("a new frame's memory");
                    let layout = FrameLayout {
                        width: layout.width,
                        height: layout.height,
                        stride: layout.stride,
                        offset: layout.offset,
                        format: PixelFormat::Bgrx,
                    };
                    let mapping = FrameMapping::map(fd, layout.bytes_needed().unwrap()).unwrap();
                    self.frame = Some((Arc::new(mapping), layout));
                }
                Some(_) => {}
            }
        }
        true
    }

    fn powered_off(&mut self) -> bool {
        self.until(|c| matches!(c.state, Some(VmState::Stopped { .. })));
        matches!(
            self.state,
            Some(VmState::Stopped { kind: StopKind::PoweredOff | StopKind::ForcedOff, .. })
        )
    }
}

#[test]
fn a_forbidden_call_ends_the_vm_process_and_says_which() {
    let lib = common::scratch("sandbox-syscall");
    let _vms = common::KillsVms(lib.clone());
    create(&lib, "syscall", "fault-syscall", false);
    let out = start(&lib, "syscall");
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    // (What the guest wrote just before may die with the process.)
    assert!(!stdout.contains("FAULT SURVIVED"), "the process went on: {stdout}");
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("SIGSYS"), "{stderr}");
    assert!(stderr.contains("system call 135 (personality)"), "{stderr}");
    assert_eq!(json(&lib, &["list", "--json"])[0]["state"], "off", "its lock went with it");
    let _ = std::fs::remove_dir_all(lib);
}

#[test]
fn files_outside_the_vm_are_refused() {
    let lib = common::scratch("sandbox-open");
    let _vms = common::KillsVms(lib.clone());
    create(&lib, "open", "fault-open", false);
    // This test's own process can read the file: the refusal is the sandbox's.
    assert!(std::fs::File::open("/etc/passwd").is_ok());
    let out = start(&lib, "open");
    let stdout = text(&out.stdout);
    assert!(stdout.contains("FAULT OPEN DENIED"), "{stdout}\n{}", text(&out.stderr));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let _ = std::fs::remove_dir_all(lib);
}

#[test]
fn every_kind_of_test_guest_runs_in_the_sandbox() {
    let lib = common::scratch("sandbox-guests");
    let _vms = common::KillsVms(lib.clone());
    let discs = lib.join("discs"); // outside every VM's folder
    std::fs::create_dir_all(&discs).unwrap();
    let one = make_iso(&discs, "ONE", "hello from the first disc");
    let two = make_iso(&discs, "TWO", "second");

    // Disk and network (passt, started by the helper outside the sandbox): to the end.
    create(&lib, "blk", "virtio-blk", false);
    create(&lib, "net", "virtio-net", true);
    for (name, says) in [("blk", "BLK CAPACITY"), ("net", "NET ARP")] {
        let out = start(&lib, name);
        let stdout = text(&out.stdout);
        assert!(stdout.contains(says) && !stdout.contains("VIRTIO FAIL"), "{name}: {stdout}");
        assert!(out.status.success(), "{name}: {}", text(&out.stderr));
    }

    // The GPU: its frame read straight from the VM process's memory; then a resize.
    let gpu = create(&lib, "gpu", "gpu", false);
    detach(&lib, "gpu");
    let mut window = Client::attach(&gpu, true);
    assert!(window.until(|c| c.serial.contains("GPU WAIT RESIZE")), "{}", window.serial);
    // The white rectangle at (32, 16) of its 128x96 frame, as the window reads it.
    let white = |c: &Client| {
        c.frame.as_ref().is_some_and(|(memory, l)| {
            let at = l.offset + 16 * l.stride + 32 * 4;
            l.width == 128 && memory.bytes()[at..at + 3] == [0xff, 0xff, 0xff]
        })
    };
    assert!(window.until(white), "{}", window.serial);
    // Each thread has its own system call filter on top of the main thread's (seccomp
    // counts them in /proc): vCPUs, device threads, the controller, the clients' threads.
    let filters = seccomp_filters(window.pid.expect("its pid"));
    // (Counted from the main thread's: a test run inside a container may bring its own.)
    let main = filters.iter().find(|(name, _)| name == "vessel-vm").map(|(_, n)| *n);
    let main = main.filter(|&n| n >= 1).expect("the main thread has its filter");
    for kind in ["vessel-vcpu0", "vessel-virtio", "vessel-machine", "vessel-client-"] {
        assert!(filters.iter().any(|(name, _)| name.starts_with(kind)), "{kind}: {filters:?}");
    }
    // (KVM's own kernel threads of the process, kvm-*, are not Vessel's.)
    let threads =
        filters.iter().filter(|(name, _)| name.starts_with("vessel-") && name != "vessel-vm");
    for (name, count) in threads {
        assert!(*count > main, "{name} has no filter of its own: {filters:?}");
    }
    // The control socket's readers (keys, the pointer) run with short time slices, where
    // the kernel has them (/proc shows se.slice); the vCPU keeps the default.
    let slices = time_slices(window.pid.unwrap());
    let reader = slices.iter().find(|(name, _)| name == "vessel-client-i").map(|(_, s)| *s);
    let vcpu = slices.iter().find(|(name, _)| name == "vessel-vcpu0").map(|(_, s)| *s);
    if let Some(Some(reader)) = reader {
        assert_eq!(reader, vmm::sched::SHORT_SLICE_NS, "{slices:?}");
        assert!(vcpu.flatten().is_some_and(|v| v > reader), "{slices:?}");
    } else {
        assert!(reader.is_some(), "a reader thread runs: {slices:?}");
    }
    window.send(&Request::Resize { width: 800, height: 600 }, None);
    assert!(window.powered_off(), "{}", window.serial);
    assert!(window.serial.contains("GPU MODE 0000000000000320 0000000000000258"), "resized");

    // Input: a key pressed in the window reaches the guest's driver.
    let input = create(&lib, "input", "input", false);
    detach(&lib, "input");
    let mut window = Client::attach(&input, false);
    assert!(window.until(|c| c.serial.contains("INPUT READY")), "{}", window.serial);
    // A second into its run the VM process lets go of its start-up's pages (code and
    // read-only data); the key's path through it comes back from the page cache.
    let log = input.join("vessel.log");
    let released = || {
        let log = std::fs::read_to_string(&log).unwrap_or_default();
        let line = log.lines().find_map(|l| l.split_once("let go of the start-up's pages ("));
        line.and_then(|(_, kib)| kib.split(' ').next()?.parse::<u64>().ok())
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while released().is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(released().is_some_and(|kib| kib > 0), "{:?}", std::fs::read_to_string(&log));
    window.send(&Request::Key { code: 30, down: true }, None);
    window.send(&Request::Key { code: 30, down: false }, None);
    assert!(
        window.until(|c| c.serial.matches("EV 0000000000000001 000000000000001e").count() == 2)
    );
    window.send(&Request::PowerOff, None);
    assert!(window.powered_off());

    // The CD: the guest locks its tray; forced out, and a disc from outside the VM's folder
    // (which the sandbox keeps it from opening) handed over open, as the window does.
    let cd = create(&lib, "cd", "atapi", false);
    let iso = format!("cdrom.iso={}", one.display());
    assert!(vessel(&lib, &["set", "cd", &iso]).status.success());
    detach(&lib, "cd");
    let mut window = Client::attach(&cd, false);
    assert!(window.until(|c| c.serial.contains("ATAPI WAIT SWAP")), "{}", window.serial);
    window.send(&Request::EjectCd { force: true }, None);
    let disc: OwnedFd = std::fs::File::open(&two).unwrap().into();
    window.send(&Request::InsertCd { iso: two.clone() }, Some(&disc));
    assert!(window.powered_off(), "{}", window.serial);
    assert!(window.serial.contains("ATAPI SWAPPED"), "{}", window.serial);
    assert!(window.serial.contains("ATAPI VOLUME TWO"), "{}", window.serial);

    // Reboots (the machine rebuilt inside the sandbox), then the power button.
    let reboot = create(&lib, "reboot", "reboot-acpi", false);
    detach(&lib, "reboot");
    let mut window = Client::attach(&reboot, false);
    assert!(window.until(|c| c.serial.matches("VESSEL-TESTGUEST").count() >= 3));
    window.send(&Request::PowerOff, None);
    assert!(window.powered_off());
    let button = create(&lib, "button", "powerbutton", false);
    detach(&lib, "button");
    let mut window = Client::attach(&button, false);
    assert!(window.until(|c| c.serial.contains("PWRBTN READY")), "{}", window.serial);
    window.send(&Request::Shutdown, None);
    assert!(window.powered_off(), "{}", window.serial);
    assert!(matches!(window.state, Some(VmState::Stopped { kind: StopKind::PoweredOff, .. })));

    // Firmware: SeaBIOS programs the PCI devices (memory slots, ioeventfds and interrupt
    // routes made from vCPUs) and the VGA draws its text screen (its dirty log read by the
    // refresh thread).
    let bios = lib.join("bios.vessel");
    let iso = vessel_tests::firmware_vga_iso(&discs);
    let args = ["create", "bios", "--iso", iso.to_str().unwrap(), "--memory", "128M"];
    let out = vessel(&lib, &[&args[..], &["--disk-size", "0", "--no-net"]].concat());
    assert!(out.status.success(), "create: {}", text(&out.stderr));
    detach(&lib, "bios");
    let mut window = Client::attach(&bios, true);
    let text_screen = |c: &Client| c.frame.as_ref().is_some_and(|(_, l)| l.width == 720);
    assert!(window.until(text_screen), "{}", window.serial);
    // A key held down on the PS/2 keyboard repeats from a thread a client's thread starts.
    window.send(&Request::Key { code: 30, down: true }, None);
    std::thread::sleep(Duration::from_millis(800));
    let filters = seccomp_filters(window.pid.expect("its pid"));
    let repeat = filters.iter().find(|(name, _)| name.starts_with("vessel-typemati"));
    assert!(repeat.is_some_and(|(_, n)| *n >= main + 2), "{filters:?}");
    window.send(&Request::Key { code: 30, down: false }, None);
    window.send(&Request::PowerOff, None);
    assert!(window.powered_off(), "{}", window.serial);

    // None of them met the sandbox's trap.
    for name in ["blk", "net", "gpu", "input", "cd", "reboot", "button", "bios"] {
        let log = std::fs::read_to_string(lib.join(format!("{name}.vessel/vessel.log")));
        assert!(!log.unwrap_or_default().contains("sandbox stopped"), "{name}");
    }
    let _ = std::fs::remove_dir_all(lib);
}

/// Each thread of process `pid`: its name and how many seccomp filters it has.
/// Each thread of `pid`: its name and its time slice in nanoseconds, where /proc says.
fn time_slices(pid: u32) -> Vec<(String, Option<u64>)> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().flatten();
    tasks
        .map(|task| {
            let name = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            let sched = std::fs::read_to_string(task.path().join("sched")).unwrap_or_default();
            let slice = (sched.lines())
                .find(|l| l.starts_with("se.slice"))
                .and_then(|l| l.rsplit(':').next()?.trim().parse().ok());
            (name.trim().to_string(), slice)
        })
        .collect()
}

fn seccomp_filters(pid: u32) -> Vec<(String, u32)> {
    let mut threads = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().flatten() {
        let name = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        let filters = status
            .lines()
            .find_map(|l| l.strip_prefix("Seccomp_filters:"))
            .and_then(|n| n.trim().parse().ok());
        if let Some(filters) = filters {
            threads.push((name.trim().to_string(), filters));
        }
    }
    threads
}
