//! `vessel run`: one machine, headless, its serial console on this terminal.

use std::io::{Read, Write};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::Context;
use vmm::{
    BootSource, DeviceConfig, Event, Machine, MachineConfig, MachineHandle, MachineState,
    RebootPolicy, StopReason,
};

use super::args::{DiskArg, RunArgs};
use super::terminal::{Escapes, RawMode, Typed};
use crate::core::launch::image_spec;

pub const EXIT_POWERED_OFF: i32 = 0;
pub const EXIT_VMM_ERROR: i32 = 1;
pub const EXIT_CRASHED: i32 = 3;
pub const EXIT_REBOOTED: i32 = 4;
pub const EXIT_QUIT: i32 = 5;

/// How the run ended.
pub enum Outcome {
    Stopped(StopReason),
    Quit,
}

impl Outcome {
    pub fn exit_code(&self) -> i32 {
        match self {
            // Moved away by live migration: it ended here as a machine powered off does.
            Outcome::Stopped(StopReason::PoweredOff | StopReason::Migrated) => EXIT_POWERED_OFF,
            Outcome::Stopped(StopReason::Crashed(_)) => EXIT_CRASHED,
            Outcome::Stopped(StopReason::Reset) => EXIT_REBOOTED,
            Outcome::Stopped(StopReason::Error(_)) => EXIT_VMM_ERROR,
            Outcome::Quit => EXIT_QUIT,
        }
    }
}

const HELP: &str = "\r\nvessel: Ctrl-A x quit (power off) | Ctrl-A s ACPI shutdown | Ctrl-A r reset | \
                    Ctrl-A p pause/resume | Ctrl-A Ctrl-A send Ctrl-A\r\n";

/// A locally administered MAC that stays the same for the same kernel path, so a guest
/// keeps its DHCP lease across runs.
fn stable_mac(seed: &std::path::Path) -> [u8; 6] {
    use std::os::unix::ffi::OsStrExt;
    // FNV-1a: the same on every build, unlike std's hasher.
    let h = seed
        .as_os_str()
        .as_bytes()
        .iter()
        .fold(0x811c_9dc5u32, |h, b| (h ^ u32::from(*b)).wrapping_mul(0x0100_0193));
    let v = h.to_le_bytes();
    [0x02, 0x56, 0x45, v[0], v[1], v[2]]
}

/// A `--disk` as the machine opens it: its backing files may be files of the image's
/// own folder (checked as for a library VM: stated formats, no data files, no loops).
fn disk_spec(disk: &DiskArg) -> anyhow::Result<vmm::ImageSpec> {
    let folder = match disk.path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => std::path::Path::new("."),
    };
    let policy = vm_library::disks::BackingPolicy::within(folder)?;
    let backing = vm_library::disks::backing_chain(&disk.path, disk.format, &policy)?;
    Ok(image_spec(disk.path.clone(), disk.format, backing))
}

pub fn run(args: RunArgs) -> anyhow::Result<Outcome> {
    let mac = stable_mac(&args.kernel);
    let mut disks = Vec::new();
    for (list, read_only) in [(&args.disk, false), (&args.disk_ro, true)] {
        for disk in list {
            disks.push(DeviceConfig::Block { image: disk_spec(disk)?, read_only });
        }
    }
    let config = MachineConfig {
        vcpus: args.cpus,
        memory_bytes: args.memory,
        boot: BootSource { kernel: args.kernel, initrd: args.initrd, cmdline: args.cmdline }.into(),
        on_guest_reboot: if args.no_reboot { RebootPolicy::Stop } else { RebootPolicy::Restart },
        devices: std::iter::once(DeviceConfig::Rng)
            .chain(disks)
            .chain((!args.no_net).then_some(DeviceConfig::Net {
                mac,
                forwards: args.forward,
                host_access: args.host_access,
            }))
            .collect(),
        // Headless: the serial console is the guest's screen.
        boot_framebuffer: None,
    };
    let debugcon = match &args.debugcon {
        Some(path) => Some(
            std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(path)
                .with_context(|| format!("--debugcon {}", path.display()))?,
        ),
        None => None,
    };
    console(Machine::build(config, None).context("cannot build the machine")?, debugcon)
}

/// Signals asking a headless machine to stop (`vessel stop`): SIGTERM presses the ACPI
/// power button, SIGUSR1 powers off at once.
static STOP_SIGNAL: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

extern "C" fn on_stop_signal(signal: libc::c_int) {
    STOP_SIGNAL.store(signal, std::sync::atomic::Ordering::Relaxed);
}

pub fn catch_stop_signals() {
    for signal in [libc::SIGTERM, libc::SIGUSR1] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { libc::signal(signal, on_stop_signal as *const () as libc::sighandler_t) };
    }
}

/// The stop signal received since the last call, if any.
pub fn take_stop_signal() -> Option<libc::c_int> {
    match STOP_SIGNAL.swap(0, std::sync::atomic::Ordering::Relaxed) {
        0 => None,
        signal => Some(signal),
    }
}

/// Runs the built machine `handle` with its serial console on this terminal until it stops; the
/// guest's debug-port (0xE9) bytes go to `debugcon`, if given, as QEMU's `-debugcon` does.
pub fn console(
    handle: MachineHandle,
    mut debugcon: Option<std::fs::File>,
) -> anyhow::Result<Outcome> {
    catch_stop_signals();
    let raw = RawMode::enable(libc::STDIN_FILENO);
    let interactive = raw.is_some();
    handle.start().context("cannot start the machine")?;

    let (keys_tx, keys) = mpsc::channel::<Vec<u8>>();
    std::thread::Builder::new()
        .name("vessel-stdin".into())
        .spawn(move || {
            let mut buf = [0u8; 256];
            let mut stdin = std::io::stdin().lock();
            while let Ok(n) = stdin.read(&mut buf) {
                if n == 0 || keys_tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        })
        .context("cannot start the input thread")?;

    let mut stdout = std::io::stdout().lock();
    let mut escapes = Escapes::new(interactive);
    loop {
        match handle.events().recv_timeout(Duration::from_millis(10)) {
            Ok(Event::Serial(bytes)) => {
                stdout.write_all(&bytes)?;
                stdout.flush()?;
            }
            Ok(Event::StateChanged(MachineState::Stopped(reason))) => {
                drop(raw);
                report_stop(&reason);
                return Ok(Outcome::Stopped(reason));
            }
            Ok(Event::DebugMarker { code, .. }) => {
                if let Some(out) = &mut debugcon {
                    out.write_all(&[code])?;
                }
            }
            Ok(Event::Rebooted) => log::info!("guest rebooted"),
            Ok(Event::Warning(message)) => eprint!("vessel: warning: {message}\r\n"),
            Ok(_) => {}
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => anyhow::bail!("the machine went away"),
        }
        match take_stop_signal().unwrap_or(0) {
            libc::SIGTERM => handle.request_shutdown().context("cannot press the power button")?,
            libc::SIGUSR1 => {
                handle.power_off().context("cannot power off")?;
                drop(raw);
                eprintln!("\nvessel: powered off on request");
                return Ok(Outcome::Quit);
            }
            _ => {}
        }
        while let Ok(bytes) = keys.try_recv() {
            for typed in escapes.feed(&bytes) {
                match typed {
                    Typed::Guest(bytes) => {
                        handle.send_serial(&bytes).context("cannot send input to the guest")?
                    }
                    Typed::Command(b'x') => {
                        handle.power_off().context("cannot power off")?;
                        drop(raw);
                        eprintln!("\nvessel: quit; the guest was powered off");
                        return Ok(Outcome::Quit);
                    }
                    Typed::Command(b's') => {
                        handle.request_shutdown().context("cannot press the power button")?
                    }
                    Typed::Command(b'r') => handle.reset().context("cannot reset")?,
                    Typed::Command(b'p') => match handle.state() {
                        MachineState::Paused => handle.resume().context("cannot resume")?,
                        _ => handle.pause().context("cannot pause")?,
                    },
                    Typed::Command(_) => {
                        stdout.write_all(HELP.as_bytes())?;
                        stdout.flush()?;
                    }
                }
            }
        }
    }
}

fn report_stop(reason: &StopReason) {
    match reason {
        StopReason::PoweredOff => {}
        StopReason::Reset => eprintln!("vessel: the guest rebooted (--no-reboot)"),
        StopReason::Crashed(report) => eprintln!(
            "vessel: the guest crashed (triple fault on vCPU {}):\n{}",
            report.vcpu, report.registers
        ),
        StopReason::Error(message) => eprintln!("vessel: error: {message}"),
        StopReason::Migrated => eprintln!("vessel: the machine moved to another Vessel"),
    }
}
