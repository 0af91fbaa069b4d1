//! Shared harness of Vessel's integration tests: paths to the test guests built by
//! `build.rs`, a runner that boots a guest through `vmm::MachineHandle` and collects what
//! it reports, and a QEMU runner for the same guests (the reference implementation).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vmm::{
    BootSource, DeviceConfig, Event, Machine, MachineConfig, MachineHandle, MachineState,
    RebootPolicy, StopReason,
};

/// The test guest as a PVH ELF.
pub fn testguest_elf() -> PathBuf {
    PathBuf::from(env!("VESSEL_TESTGUEST_ELF"))
}

/// The same guest wrapped as a bzImage (Linux 64-bit boot protocol).
pub fn testguest_bzimage() -> PathBuf {
    PathBuf::from(env!("VESSEL_TESTGUEST_BZIMAGE"))
}

/// Generous: these are not timing tests, only a guard against hanging forever.
pub const TIMEOUT: Duration = Duration::from_secs(120);

/// A machine booted from a test guest, with everything it has said so far.
pub struct GuestRun {
    pub handle: MachineHandle,
    pub serial: Vec<u8>,
    pub events: Vec<Event>,
}

pub struct GuestSpec {
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub cmdline: String,
    pub vcpus: u8,
    pub memory_bytes: u64,
    pub on_guest_reboot: RebootPolicy,
    pub devices: Vec<DeviceConfig>,
    pub boot_framebuffer: Option<vmm::display::boot_fb::FramebufferMode>,
}

impl GuestSpec {
    pub fn new(test: &str) -> Self {
        GuestSpec {
            kernel: testguest_elf(),
            initrd: None,
            cmdline: format!("test={test}"),
            vcpus: 1,
            memory_bytes: 128 << 20,
            on_guest_reboot: RebootPolicy::Stop,
            devices: vec![DeviceConfig::Rng],
            boot_framebuffer: None,
        }
    }

    pub fn config(&self) -> MachineConfig {
        MachineConfig {
            vcpus: self.vcpus,
            memory_bytes: self.memory_bytes,
            boot: BootSource {
                kernel: self.kernel.clone(),
                initrd: self.initrd.clone(),
                cmdline: self.cmdline.clone(),
            }
            .into(),
            on_guest_reboot: self.on_guest_reboot,
            devices: self.devices.clone(),
            boot_framebuffer: self.boot_framebuffer,
        }
    }

    /// Builds and starts the machine.
    pub fn boot(&self) -> GuestRun {
        let handle = Machine::build(self.config(), None).expect("machine builds");
        handle.start().expect("machine starts");
        GuestRun { handle, serial: Vec::new(), events: Vec::new() }
    }
}

impl GuestRun {
    fn take(&mut self, event: Event) {
        if let Event::Serial(bytes) = &event {
            self.serial.extend_from_slice(bytes);
        }
        self.events.push(event);
    }

    /// Takes events until `done` holds or `timeout` passes; true if it held.
    pub fn wait_until(
        &mut self,
        timeout: Duration,
        mut done: impl FnMut(&GuestRun) -> bool,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        while !done(self) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            match self.handle.events().recv_timeout(left.min(Duration::from_millis(100))) {
                Ok(event) => self.take(event),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(_) => return done(self),
            }
        }
        true
    }

    /// Takes whatever events are queued now, without waiting.
    pub fn drain(&mut self) {
        while let Ok(event) = self.handle.events().try_recv() {
            self.take(event);
        }
    }

    pub fn output(&self) -> String {
        String::from_utf8_lossy(&self.serial).into_owned()
    }

    /// Waits for `needle` in the serial output; panics with the transcript if it never comes.
    pub fn expect_output(&mut self, needle: &str) {
        if !self.wait_until(TIMEOUT, |r| r.output().contains(needle)) {
            panic!(
                "guest never printed {needle:?}; it printed:\n{}\nevents: {:?}",
                self.output(),
                self.events
            );
        }
    }

    /// Waits until the machine stops and returns why.
    pub fn expect_stopped(&mut self) -> StopReason {
        let stopped = |r: &GuestRun| {
            r.events.iter().rev().find_map(|e| match e {
                Event::StateChanged(MachineState::Stopped(reason)) => Some(reason.clone()),
                _ => None,
            })
        };
        if !self.wait_until(TIMEOUT, |r| stopped(r).is_some()) {
            panic!(
                "machine did not stop; guest printed:\n{}\nevents: {:?}",
                self.output(),
                self.events
            );
        }
        stopped(self).unwrap()
    }

    /// Complete lines of serial output starting with `key `, without the key.
    pub fn lines_with(&self, key: &str) -> Vec<String> {
        let prefix = format!("{key} ");
        let out = self.output();
        let complete = &out[..out.rfind('\n').map_or(0, |i| i + 1)];
        complete.lines().filter_map(|l| l.strip_prefix(&prefix).map(str::to_string)).collect()
    }
}

/// Parses a 16-digit hex field the guest printed.
pub fn hex(field: &str) -> u64 {
    u64::from_str_radix(field, 16).unwrap_or_else(|_| panic!("not hex: {field:?}"))
}

/// Checks the test guest's virtio-rng report: two 64-byte answers, random and different,
/// and one interrupt each.
pub fn check_rng_report(out: &str) {
    let lines = |key: &str| -> Vec<String> {
        let prefix = format!("{key} ");
        out.lines().filter_map(|l| l.strip_prefix(&prefix).map(str::to_string)).collect()
    };
    assert!(!out.contains("VIRTIO FAIL"), "{out}");
    let requests: Vec<Vec<u64>> = lines("RNG")
        .iter()
        .filter(|l| !l.starts_with("IRQS"))
        .map(|l| l.split_whitespace().map(hex).collect())
        .collect();
    assert_eq!(requests.len(), 2, "{out}");
    for r in &requests {
        assert_eq!(r[0], 64, "the device filled the whole buffer");
        assert!(r[1] != 0 || r[2] != 0, "random bytes, not zeros");
    }
    assert_ne!(requests[0][1..], requests[1][1..], "two requests, two different answers");
    assert_eq!(hex(lines("RNG IRQS")[0].trim()), 2, "one interrupt per request");
}

/// FNV-1a 32, as the guest computes it over the initrd.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u32 = 0x811c_9dc5;
    for b in bytes {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    u64::from(h)
}

/// An X server of the test's own (Xvfb, 1280x800, on a free display), gone when dropped.
pub struct Xvfb {
    child: std::process::Child,
    /// Its display name, for `DISPLAY`.
    pub display: String,
    /// What it printed on stderr.
    log: PathBuf,
}

impl Xvfb {
    /// A server that has said it is ready and that a client (`xdpyinfo`) has reached.
    pub fn start() -> Xvfb {
        // One server starts at a time on this host: two starting at once may pick the same
        // display, and the one that loses removes the other's socket as it gives up.
        let lock = std::fs::File::create(std::env::temp_dir().join("vessel-xvfb.lock"))
            .expect("a lock file in the temporary folder");
        lock.lock().expect("the Xvfb start lock");
        // One that fails anyway is started again.
        let mut failures = Vec::new();
        for attempt in 0..10 {
            let log = std::env::temp_dir()
                .join(format!("vessel-xvfb-{}-{attempt}.log", std::process::id()));
            // -noreset: a server resets itself when its last client leaves (and a client
            // arriving meanwhile is turned away), as when a check or xwininfo has been and gone.
            let mut child = Command::new("Xvfb")
                .args(["-displayfd", "1", "-screen", "0", "1280x800x24", "-nolisten", "tcp"])
                .arg("-noreset")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(std::fs::File::create(&log).expect("a log file for Xvfb"))
                .spawn()
                .expect("Xvfb runs (tools/install-deps installs xvfb)");
            // It writes its display number once it is ready for clients.
            let mut out = child.stdout.take().expect("Xvfb's stdout");
            let (mut number, mut byte) = (String::new(), [0u8; 1]);
            while out.read(&mut byte).is_ok_and(|n| n == 1) && byte[0] != b'\n' {
                number.push(byte[0] as char);
            }
            let mut xvfb = Xvfb { child, display: String::new(), log };
            if let Ok(number) = number.trim().parse::<u32>() {
                xvfb.display = format!(":{number}");
                match xvfb.check() {
                    Ok(()) => return xvfb,
                    Err(e) => failures.push(e),
                }
            } else {
                failures.push(format!("Xvfb wrote no display number: {}", xvfb.stderr()));
            }
            drop(xvfb);
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("Xvfb never started:\n{}", failures.join("\n"));
    }

    /// Whether the server still runs and answers a client; if not, why not.
    pub fn check(&mut self) -> Result<(), String> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Err(format!("Xvfb {} exited ({status}): {}", self.display, self.stderr()));
        }
        let out = Command::new("xdpyinfo").args(["-display", &self.display]).output();
        match out {
            Ok(out) if out.status.success() => Ok(()),
            Ok(out) => Err(format!(
                "xdpyinfo cannot reach Xvfb {}: {}; Xvfb said: {}",
                self.display,
                String::from_utf8_lossy(&out.stderr).trim(),
                self.stderr()
            )),
            Err(e) => Err(format!("xdpyinfo does not run ({e}); tools/install-deps installs it")),
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default().trim().to_string()
    }
}

impl Drop for Xvfb {
    fn drop(&mut self) {
        // SIGTERM, so that it removes its socket as it goes; SIGKILL if it does not.
        // SAFETY: kill(2) with a pid of our own child (not yet reaped) and no memory.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// The host's TSC ticks a second (its guests' TSC runs at the same rate), measured over
/// 300 ms of the host's clock.
pub fn tsc_hz() -> f64 {
    // SAFETY: rdtsc reads the time-stamp counter; no memory is touched.
    let read = || unsafe { core::arch::x86_64::_rdtsc() };
    let (t0, c0) = (Instant::now(), read());
    std::thread::sleep(Duration::from_millis(300));
    (read() - c0) as f64 / t0.elapsed().as_secs_f64()
}

/// The whole seconds of the CMOS clock a test=migrate guest measured in TSC ticks (the
/// last field of its "MIGRATE" lines), each once, in order.
fn whole_seconds(output: &str) -> Vec<u64> {
    let complete = &output[..output.rfind('\n').map_or(0, |i| i + 1)];
    let mut seconds: Vec<u64> = Vec::new();
    for line in complete.lines().filter_map(|l| l.trim().strip_prefix("MIGRATE ")) {
        let Some(last) = line.split(' ').nth(5) else { continue };
        let Ok(value) = u64::from_str_radix(last.trim(), 16) else { continue };
        if value != 0 && seconds.last() != Some(&value) {
            seconds.push(value);
        }
    }
    seconds
}

/// Whether a test=migrate guest has measured a whole second of the CMOS clock yet (a move
/// before that has no second to show its pause in).
pub fn has_whole_second(output: &str) -> bool {
    !whole_seconds(output).is_empty()
}

/// The pause a test=migrate guest lived through when it moved, as it measured it itself
/// (`before`: its output on the sender, `after`: on the receiver; `hz`: TSC ticks a
/// second). Two clocks, for two kinds of host: where the guest's TSC is the host's (PVM),
/// the pause is the largest step of its TSC in the first lines after the move; where its
/// TSC is restored as it was at the pause (KVM with TSC offsetting, as QEMU does it), the
/// TSC stood still while the CMOS clock, which follows the host's wall clock, did not, and
/// the first two whole seconds it measured after the move lack the pause between them.
/// The larger of the two; None until it has measured two whole seconds after the move.
pub fn guest_pause(before: &str, after: &str, hz: f64) -> Option<Duration> {
    let last_before = whole_seconds(before).last().copied();
    let seconds: Vec<u64> =
        whole_seconds(after).into_iter().skip_while(|s| Some(*s) == last_before).collect();
    let lacking: f64 = seconds.get(..2)?.iter().map(|&s| (hz - s as f64).max(0.0)).sum();
    // The lines from the one the move cut (begun on the sender, ended on the receiver).
    let both = format!("{before}{after}");
    let cut = before.rfind('\n').map_or(0, |i| i + 1);
    let step = both[cut..]
        .lines()
        .filter_map(|l| l.trim().strip_prefix("MIGRATE "))
        .take(3)
        .filter_map(|l| u64::from_str_radix(l.split(' ').nth(3)?.trim(), 16).ok())
        .max()
        .unwrap_or(0);
    Some(Duration::from_secs_f64(lacking.max(step as f64) / hz))
}

/// A live migration receiver's end of its connection that goes down as the receiver is
/// about to say `Running`: the sender is left not knowing whether the machine runs there.
pub struct LosesRunning(pub std::os::unix::net::UnixStream);

impl std::io::Read for LosesRunning {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

impl std::io::Write for LosesRunning {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // A frame's head: its tag, then its length.
        if buf.len() == 9 && buf[0] == vmm::migration::wire::Tag::Running as u8 {
            let _ = self.0.shutdown(std::net::Shutdown::Both);
            return Err(std::io::Error::other("the link went down"));
        }
        self.0.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// True if `qemu-system-x86_64` is installed.
pub fn have_qemu() -> bool {
    Command::new("qemu-system-x86_64").arg("--version").output().is_ok_and(|o| o.status.success())
}

/// Runs `kernel` under QEMU (TCG) with the serial port on stdout, until the guest powers
/// off; returns what it printed.
pub fn run_qemu(kernel: &Path, cmdline: &str, extra: &[&str]) -> String {
    run_qemu_watching(kernel, cmdline, extra, |_| {})
}

/// `run_qemu`, calling `on_line` with each console line as it arrives (to act on the
/// guest's progress).
pub fn run_qemu_watching(
    kernel: &Path,
    cmdline: &str,
    extra: &[&str],
    on_line: impl FnMut(&str) + Send + 'static,
) -> String {
    let mut qemu = Command::new("qemu-system-x86_64");
    qemu.args([
        "-accel",
        "tcg",
        "-m",
        "512",
        "-nographic",
        "-nodefaults",
        "-no-reboot",
        "-serial",
        "stdio",
    ])
    .args(["-kernel", kernel.to_str().unwrap(), "-append", cmdline])
    .args(extra);
    run_watching(qemu, "QEMU", on_line)
}

/// Runs QEMU (TCG) with its own SeaBIOS booting what `extra` gives it (`-cdrom`,
/// `-drive`), the serial port on stdout, until the guest powers off; returns what it
/// printed.
pub fn run_qemu_firmware(memory_mib: u64, extra: &[&str]) -> String {
    let mut qemu = Command::new("qemu-system-x86_64");
    qemu.args(["-accel", "tcg", "-nographic", "-nodefaults", "-no-reboot"])
        .args(["-m", &memory_mib.to_string(), "-serial", "stdio"])
        .args(extra);
    run_watching(qemu, "QEMU", |_| {})
}

/// `run_qemu_firmware`, calling `on_line` with each console line as it arrives.
pub fn run_qemu_firmware_watching(
    memory_mib: u64,
    extra: &[&str],
    on_line: impl FnMut(&str) + Send + 'static,
) -> String {
    let mut qemu = Command::new("qemu-system-x86_64");
    qemu.args(["-accel", "tcg", "-nodefaults", "-no-reboot", "-display", "none"])
        .args(["-m", &memory_mib.to_string(), "-serial", "stdio"])
        .args(extra);
    run_watching(qemu, "QEMU", on_line)
}

/// Runs a User-Mode Linux `kernel` (from `uml_kernel`) with `initrd` and `args` (kernel
/// parameters, including UML's own such as `virtio_uml.device=`), its console on stdout,
/// until the guest halts; calls `on_line` with each console line as it arrives and returns
/// what it printed.
pub fn run_uml_watching(
    kernel: &Path,
    initrd: &Path,
    args: &[&str],
    on_line: impl FnMut(&str) + Send + 'static,
) -> String {
    let mut uml = Command::new(kernel);
    uml.args(["mem=256M", "con=null", "con0=null,fd:1", "console=tty0"])
        .arg(format!("initrd={}", initrd.display()))
        .args(args)
        // UML maps its memory from a file under TMPDIR, best on tmpfs.
        .env(
            "TMPDIR",
            if Path::new("/dev/shm").is_dir() { "/dev/shm".into() } else { std::env::temp_dir() },
        );
    run_watching(uml, "UML", on_line)
}

/// Runs `command` with stdin closed, calling `on_line` for each line of its stdout, until it
/// exits (at most `TIMEOUT`); returns its stdout.
fn run_watching(
    mut command: Command,
    what: &str,
    mut on_line: impl FnMut(&str) + Send + 'static,
) -> String {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what} starts: {e}"));
    // Read both pipes while it runs: a full pipe would stall the guest.
    let stdout = {
        let pipe = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            use std::io::BufRead;
            let mut text = String::new();
            let mut reader = std::io::BufReader::new(pipe);
            let mut line = Vec::new();
            while reader.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
                let l = String::from_utf8_lossy(&line).into_owned();
                on_line(l.trim_end());
                text.push_str(&l);
                line.clear();
            }
            text
        })
    };
    let stderr = {
        let mut pipe = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            let mut text = Vec::new();
            let _ = pipe.read_to_end(&mut text);
            String::from_utf8_lossy(&text).into_owned()
        })
    };
    let deadline = Instant::now() + TIMEOUT;
    let finished = loop {
        if child.try_wait().unwrap().is_some() {
            break true;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break false;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = stdout.join().unwrap();
    let err = stderr.join().unwrap();
    assert!(finished, "{what} did not finish in {TIMEOUT:?}; its console said:\n{out}\n{err}");
    if !err.trim().is_empty() {
        eprintln!("{what} stderr: {err}");
    }
    out.replace("\r\n", "\n")
}

/// Builds (or finds in the cache) the default Linux guest from `assets/linux-guest`; returns
/// (vmlinuz, initrd.gz).
pub fn default_linux_guest() -> (PathBuf, PathBuf) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/linux-guest/build.sh");
    let out = Command::new("bash").arg(&script).output().expect("bash runs");
    assert!(
        out.status.success(),
        "building the default Linux guest failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    (dir.join("vmlinuz"), dir.join("initrd.gz"))
}

/// Builds (or finds in the cache) the User-Mode Linux kernel from `assets/uml`.
pub fn uml_kernel() -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/uml/build.sh");
    let out = Command::new("bash").arg(&script).output().expect("bash runs");
    assert!(
        out.status.success(),
        "building the UML kernel failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// Runs the test guest under `qemu-system-x86_64 -accel kvm` with QEMU's debugcon on the
/// debug port (0xE9), and returns each milestone byte with its arrival time since spawn.
/// None if QEMU could not run. For benchmarks comparing against Vessel's DebugMarker.
pub fn qemu_kvm_milestones(cmdline: &str, extra: &[&str]) -> Option<Vec<(u8, Duration)>> {
    let started = Instant::now();
    let mut child = Command::new("qemu-system-x86_64")
        .args(["-accel", "kvm", "-m", "256", "-nodefaults", "-display", "none", "-no-reboot"])
        .args([
            "-serial",
            "none",
            "-chardev",
            "stdio,id=dbg",
            "-device",
            "isa-debugcon,iobase=0xe9,chardev=dbg",
        ])
        .args(["-kernel", testguest_elf().to_str().unwrap(), "-append", cmdline])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let mut out = child.stdout.take()?;
    let mut marks = Vec::new();
    let mut byte = [0u8; 1];
    while out.read(&mut byte).ok()? == 1 {
        marks.push((byte[0], started.elapsed()));
    }
    let _ = child.wait();
    Some(marks)
}

/// Runs a build tool (binutils, xorriso), failing the test with its stderr.
fn run_tool(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e} (tools/install-deps)"));
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// The flat image of `tests/guests/firmware/NAME`, assembled with `defsyms` (name, value)
/// and linked at 0000:7C00, where firmware loads a boot sector.
fn firmware_image(dir: &Path, name: &str, defsyms: &[(&str, u64)]) -> Vec<u8> {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("guests/firmware").join(name);
    let stem = name.trim_end_matches(".S");
    let (object, linked, flat) = (
        dir.join(format!("{stem}.o")),
        dir.join(format!("{stem}.elf")),
        dir.join(format!("{stem}.bin")),
    );
    let mut assemble = Command::new("as");
    assemble.arg("-I").arg(source.parent().unwrap());
    for (name, value) in defsyms {
        assemble.arg(format!("--defsym={name}={value}"));
    }
    run_tool(assemble.arg("-o").arg(&object).arg(&source));
    run_tool(
        Command::new("ld").args(["-Ttext=0x7c00", "-e", "_start", "-o"]).arg(&linked).arg(&object),
    );
    run_tool(Command::new("objcopy").args(["-O", "binary", "-j", ".text"]).arg(&linked).arg(&flat));
    std::fs::read(&flat).unwrap()
}

/// An ISO in `dir` whose El Torito boot image (no emulation, loaded whole) is `image`.
fn el_torito_iso(dir: &Path, name: &str, volume: &str, image: &[u8]) -> PathBuf {
    let tree = dir.join(format!("{name}-tree"));
    std::fs::create_dir_all(&tree).unwrap();
    std::fs::write(tree.join("boot.img"), image).unwrap();
    let iso = dir.join(format!("{name}.iso"));
    let sectors = image.len().div_ceil(512).to_string();
    run_tool(
        Command::new("xorriso")
            .args(["-as", "mkisofs", "-quiet", "-V", volume, "-o"])
            .arg(&iso)
            .args(["-b", "boot.img", "-no-emul-boot", "-boot-load-size", &sectors])
            .arg(&tree),
    );
    iso
}

/// An ISO whose El Torito boot image is `tests/guests/firmware/cd-hello.S`, built with
/// binutils and xorriso (tools/install-deps installs them).
pub fn firmware_hello_iso(dir: &Path) -> PathBuf {
    el_torito_iso(dir, "hello", "HELLO", &firmware_image(dir, "cd-hello.S", &[]))
}

/// An ISO whose El Torito boot image is `tests/guests/firmware/vga.S`, the VGA test's three
/// screens.
pub fn firmware_vga_iso(dir: &Path) -> PathBuf {
    el_torito_iso(dir, "vga", "VGA", &firmware_image(dir, "vga.S", &[]))
}

/// A 1 MiB raw disk whose MBR boot sector is `tests/guests/firmware/mbr-hello.S` (it says
/// "MBR!" on COM1), built with binutils.
pub fn firmware_hello_disk(dir: &Path) -> PathBuf {
    let mut disk = firmware_image(dir, "mbr-hello.S", &[]);
    assert_eq!(disk.len(), 512, "one sector");
    disk.resize(1 << 20, 0);
    let path = dir.join("mbr-hello.raw");
    std::fs::write(&path, disk).unwrap();
    path
}

/// The test guest as a PC boots it (`tests/guests/firmware/pc-boot.S`) with `cmdline` (at
/// most 31 bytes): the boot sector, then the guest's flat image, padded to whole sectors.
/// The sector is told the image's size, first bytes and BSS end.
pub fn firmware_testguest_image(dir: &Path, cmdline: &str) -> Vec<u8> {
    let mut image = std::fs::read(env!("VESSEL_TESTGUEST_FLAT")).expect("the flat test guest");
    image.resize(image.len().div_ceil(512) * 512, 0);
    let signature = u32::from_le_bytes(image[..4].try_into().unwrap());
    let bss_end = env!("VESSEL_TESTGUEST_BSS_END").parse().unwrap();
    let mut boot = firmware_image(
        dir,
        "pc-boot.S",
        &[
            ("IMAGE_SECTORS", image.len() as u64 / 512),
            ("IMAGE_BYTES", image.len() as u64),
            ("BSS_END", bss_end),
            ("SIGNATURE", u64::from(signature)),
        ],
    );
    assert_eq!(boot.len(), 512, "one sector");
    // The command line's room (32 bytes, NUL-terminated) follows the default one.
    let at = boot.windows(13).position(|w| w == b"test=firmware").expect("the command line");
    assert!(cmdline.len() < 32, "{cmdline:?} is longer than the boot sector has room for");
    boot[at..at + 32].fill(0);
    boot[at..at + cmdline.len()].copy_from_slice(cmdline.as_bytes());
    boot.extend_from_slice(&image);
    boot
}

/// An ISO whose El Torito boot image (no emulation, loaded whole) is the firmware-booted
/// test guest with `cmdline`.
pub fn firmware_testguest_iso(dir: &Path, cmdline: &str) -> PathBuf {
    el_torito_iso(dir, "pc-boot", "VESSEL_PC", &firmware_testguest_image(dir, cmdline))
}

/// A 4 MiB raw disk that boots the firmware-booted test guest with `cmdline` from its MBR.
pub fn firmware_testguest_disk(dir: &Path, cmdline: &str) -> PathBuf {
    let mut disk = firmware_testguest_image(dir, cmdline);
    disk.resize(4 << 20, 0);
    let path = dir.join("pc-boot.raw");
    std::fs::write(&path, disk).unwrap();
    path
}

/// An ISO made with xorriso (as distributions make theirs) holding HELLO.TXT.
pub fn make_iso(dir: &Path, volume: &str, text: &str) -> PathBuf {
    iso_of(dir, volume, &[("HELLO.TXT", text.as_bytes())])
}

/// An ISO made with xorriso called `volume` holding `files`.
pub fn iso_of(dir: &Path, volume: &str, files: &[(&str, &[u8])]) -> PathBuf {
    let src = dir.join(volume);
    std::fs::create_dir_all(&src).unwrap();
    for (name, bytes) in files {
        std::fs::write(src.join(name), bytes).unwrap();
    }
    let iso = dir.join(format!("{volume}.iso"));
    let out = std::process::Command::new("xorriso")
        .args(["-as", "mkisofs", "-quiet", "-V", volume, "-o"])
        .arg(&iso)
        .arg(&src)
        .output()
        .expect("xorriso (tools/install-deps installs it)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    iso
}

/// Latencies from `InputSink::key` to the guest seeing the event, for `n` key presses.
pub fn input_latency(n: usize) -> Vec<Duration> {
    let mut spec = GuestSpec::new("input");
    spec.devices = vec![DeviceConfig::Input(vmm::InputKind::Keyboard)];
    let handle = vmm::Machine::build(spec.config(), None).expect("machine builds");
    handle.start().unwrap();
    let input = handle.input();
    let mut serial = String::new();
    while !serial.contains("INPUT READY") {
        let event = handle.events().recv_timeout(TIMEOUT).expect("the guest gets ready");
        if let vmm::Event::Serial(bytes) = event {
            serial.push_str(&String::from_utf8_lossy(&bytes));
        }
    }
    let mut latencies = Vec::new();
    for i in 0..n {
        let sent = handle.built_at().elapsed();
        input.key(vmm::input::evdev::KEY_A, i % 2 == 0);
        // Each report is the key and a SYN: the first arrival is the key.
        loop {
            let event = handle.events().recv_timeout(TIMEOUT).expect("the event arrives");
            if let vmm::Event::DebugMarker { code: 0x30, since_build } = event {
                latencies.push(since_build.saturating_sub(sent));
                break;
            }
        }
        // Let the SYN and the guest's printing settle before the next press.
        std::thread::sleep(Duration::from_millis(20));
        while handle.events().try_recv().is_ok() {}
    }
    let _ = handle.power_off();
    latencies
}

/// test=gpu's screen as it leaves it while it waits for a resize, on `display` (another
/// machine's, after a restore or a migration): its 128×96 frame with the white rectangle
/// it drew last at (32, 16), and the cursor it set, as `cursor` was. Panics otherwise.
pub fn assert_gpu_guest_screen(display: &vmm::Display, cursor: &vmm::display::Cursor) {
    assert_eq!(display.size(), Some((128, 96)));
    display
        .read(0, |f| {
            let at = 16 * f.stride + 32 * 4;
            assert_eq!(&f.pixels[at..at + 3], &[0xff; 3]);
        })
        .unwrap();
    let now = display.cursor();
    assert!(now.image.is_some() && now.image == cursor.image, "the cursor's image is there");
    assert_eq!((now.x, now.y), (cursor.x, cursor.y));
}

/// The host resizes test=gpu's display; its driver, waiting on its queues and interrupts,
/// takes the new mode (800×600) and the guest ends. Panics otherwise.
pub fn expect_gpu_guest_resized(run: &mut GuestRun) {
    run.handle.display().request_resize(800, 600);
    assert!(matches!(run.expect_stopped(), StopReason::PoweredOff), "{}", run.output());
    assert_eq!(run.lines_with("GPU MODE"), vec!["0000000000000320 0000000000000258"]);
    assert!(run.output().contains("GPU DONE"), "{}", run.output());
}
