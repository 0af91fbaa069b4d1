//! Snapshot benchmark: a 1 GiB test guest that touched 256 MiB (test=snapbench), then
//! beats on the debug port every few tens of microseconds.
//! - Take: the paused machine's state and memory saved to files and synced; the memory
//!   file's size on disk (zero pages are holes).
//! - Revert: from the restore's start to the guest's next beat (its first instructions
//!   after the restore), guest memory mapped from the file copy-on-write; with the file in
//!   the page cache (just written, as a revert after a take finds it) and with it dropped.
//! - The reference, in the same run: QEMU's savevm and loadvm (stop, loadvm, cont, to its
//!   next beat) of the same guest with the same memory.
//!
//! Run: cargo bench -p vessel-tests --bench snapshot [-- ROUNDS]

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use vessel_tests::{GuestRun, GuestSpec, TIMEOUT, testguest_elf};
use vmm::{Event, Machine};

const MEMORY: u64 = 1 << 30;

struct Vessel {
    save: Duration,
    file_bytes: u64,
    restore_hot: Duration,
    restore_cold: Duration,
    /// What this host's KVM takes to register 1 GiB of memory with a new VM (part of
    /// every restore, and of every boot).
    register: Duration,
}

/// The time this host's KVM takes to take 1 GiB of anonymous memory as a new VM's RAM.
fn register_memory() -> Option<Duration> {
    let kvm = kvm_ioctls::Kvm::new().ok()?;
    let vm = kvm.create_vm().ok()?;
    let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE;
    // SAFETY: a fresh mapping, unmapped below; KVM is told its address.
    let addr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            MEMORY as usize,
            libc::PROT_READ | libc::PROT_WRITE,
            flags,
            -1,
            0,
        )
    };
    if addr == libc::MAP_FAILED {
        return None;
    }
    let region = kvm_bindings::kvm_userspace_memory_region {
        slot: 0,
        flags: 0,
        guest_phys_addr: 0,
        memory_size: MEMORY,
        userspace_addr: addr as u64,
    };
    let started = Instant::now();
    // SAFETY: the mapping is MEMORY bytes and outlives the VM (dropped first below).
    let done = unsafe { vm.set_user_memory_region(region) };
    let took = started.elapsed();
    drop(vm);
    // SAFETY: the mapping made above, no longer used.
    unsafe { libc::munmap(addr, MEMORY as usize) };
    done.ok().map(|()| took)
}

/// Waits for debug-port byte `code` from `run`'s machine; the time it was seen.
fn beat(run: &mut GuestRun, code: u8) -> Option<Instant> {
    let mut at = None;
    run.wait_until(TIMEOUT, |r| {
        if at.is_none()
            && r.events
                .iter()
                .rev()
                .any(|e| matches!(e, Event::DebugMarker { code: c, .. } if *c == code))
        {
            at = Some(Instant::now());
        }
        at.is_some()
    });
    at
}

/// From the start of a restore of `spec`'s machine from the files to its next beat.
fn restore(spec: &GuestSpec, state: &File, memory: &File) -> Option<Duration> {
    let started = Instant::now();
    let handle = Machine::restore(spec.config(), None, state, memory).ok()?;
    handle.start().ok()?;
    let mut run = GuestRun { handle, serial: Vec::new(), events: Vec::new() };
    let at = beat(&mut run, 6)?;
    let _ = run.handle.power_off();
    Some(at - started)
}

fn vessel_once(dir: &std::path::Path) -> Option<Vessel> {
    let mut spec = GuestSpec::new("snapbench");
    spec.memory_bytes = MEMORY;
    let mut run = spec.boot();
    beat(&mut run, 5)?;
    run.handle.pause().ok()?;
    let create = |name: &str| {
        let path = dir.join(name);
        let _ = std::fs::remove_file(&path);
        File::options().read(true).write(true).create_new(true).open(path).ok()
    };
    let (state, memory) = (create("state")?, create("memory")?);
    let started = Instant::now();
    run.handle.save_state(state.try_clone().ok()?, memory.try_clone().ok()?).ok()?;
    memory.sync_all().ok()?;
    state.sync_all().ok()?;
    let save = started.elapsed();
    let _ = run.handle.power_off();
    drop(run);
    let file_bytes = memory.metadata().ok()?.blocks() * 512;
    let restore_hot = restore(&spec, &state, &memory)?;
    // SAFETY: posix_fadvise on an open file; only advice.
    unsafe { libc::posix_fadvise(memory.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    let restore_cold = restore(&spec, &state, &memory)?;
    let register = register_memory()?;
    Some(Vessel { save, file_bytes, restore_hot, restore_cold, register })
}

/// A QMP connection to QEMU.
struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Qmp {
    fn connect(path: &std::path::Path) -> Option<Qmp> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(_) => return None,
            }
        };
        let mut qmp = Qmp { reader: BufReader::new(stream.try_clone().ok()?), writer: stream };
        qmp.answer()?; // the greeting
        qmp.execute("qmp_capabilities", None)?;
        Some(qmp)
    }

    /// The next line that is not an event.
    fn answer(&mut self) -> Option<String> {
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line).ok()? == 0 {
                return None;
            }
            if !line.contains("\"event\"") {
                return Some(line);
            }
        }
    }

    fn execute(&mut self, command: &str, hmp: Option<&str>) -> Option<String> {
        let request = match hmp {
            Some(text) => format!(
                "{{\"execute\":\"human-monitor-command\",\"arguments\":{{\"command-line\":\"{text}\"}}}}\n"
            ),
            None => format!("{{\"execute\":\"{command}\"}}\n"),
        };
        self.writer.write_all(request.as_bytes()).ok()?;
        let answer = self.answer()?;
        // HMP answers with its text; an error in it means the command failed.
        (answer.contains("\"return\"") && !answer.contains("Error")).then_some(answer)
    }
}

/// QEMU's savevm and loadvm (stop, loadvm, cont, to the next beat) of the same guest.
fn qemu_once(dir: &std::path::Path) -> Option<(Duration, Duration)> {
    let disk = dir.join("qemu.qcow2");
    let _ = std::fs::remove_file(&disk);
    let made = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&disk)
        .arg("64M")
        .status()
        .ok()?;
    if !made.success() {
        return None;
    }
    let socket = dir.join("qmp.sock");
    let _ = std::fs::remove_file(&socket);
    let mut child = Command::new("qemu-system-x86_64")
        .args(["-accel", "kvm", "-m", "1G", "-nodefaults", "-display", "none", "-no-reboot"])
        .args(["-serial", "none", "-chardev", "stdio,id=dbg"])
        .args(["-device", "isa-debugcon,iobase=0xe9,chardev=dbg"])
        .arg("-drive")
        .arg(format!("if=none,id=d0,format=qcow2,file={}", disk.display()))
        .arg("-qmp")
        .arg(format!("unix:{},server=on,wait=off", socket.display()))
        .args(["-kernel", testguest_elf().to_str()?, "-append", "test=snapbench"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    // The debug port's bytes, timed as they come.
    let (tx, bytes) = mpsc::channel();
    let mut stdout = child.stdout.take()?;
    std::thread::spawn(move || {
        let mut byte = [0u8; 1];
        while stdout.read(&mut byte).is_ok_and(|n| n == 1) {
            if tx.send((byte[0], Instant::now())).is_err() {
                break;
            }
        }
    });
    let result = (|| {
        let wait_for = |code: u8, after: Instant| -> Option<Instant> {
            let deadline = Instant::now() + TIMEOUT;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                let (c, at) = bytes.recv_timeout(left).ok()?;
                if c == code && at >= after {
                    return Some(at);
                }
            }
        };
        let mut qmp = Qmp::connect(&socket)?;
        wait_for(5, Instant::now() - Duration::from_secs(3600))?;
        let started = Instant::now();
        qmp.execute("", Some("savevm s1"))?;
        let save = started.elapsed();
        qmp.execute("stop", None)?;
        std::thread::sleep(Duration::from_millis(50));
        while bytes.try_recv().is_ok() {}
        let started = Instant::now();
        qmp.execute("", Some("loadvm s1"))?;
        qmp.execute("cont", None)?;
        let next = wait_for(6, started)?;
        let _ = qmp.execute("quit", None);
        Some((save, next - started))
    })();
    let _ = child.kill();
    let _ = child.wait();
    result
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
    let dir = tempfile::tempdir().expect("a scratch folder");
    let vessel: Vec<Vessel> = (0..rounds).filter_map(|_| vessel_once(dir.path())).collect();
    let qemu: Vec<(Duration, Duration)> =
        (0..rounds).filter_map(|_| qemu_once(dir.path())).collect();
    println!("snapshot: 1 GiB guest, 256 MiB touched; {rounds} rounds each, medians");
    if vessel.is_empty() {
        println!("  vessel  every round failed");
        return;
    }
    let save = median(vessel.iter().map(|v| v.save).collect());
    let hot = median(vessel.iter().map(|v| v.restore_hot).collect());
    let cold = median(vessel.iter().map(|v| v.restore_cold).collect());
    let bytes = vessel.iter().map(|v| v.file_bytes).max().unwrap_or(0);
    let register = median(vessel.iter().map(|v| v.register).collect());
    println!(
        "  vessel  take (state and memory saved, synced) {:>8.1} ms; memory file {} MiB on disk of {} MiB",
        ms(save),
        bytes >> 20,
        MEMORY >> 20
    );
    println!(
        "  vessel  restore to the guest's next instruction {:>8.2} ms (memory file cached), {:>8.2} ms (not cached)   ({} failed)",
        ms(hot),
        ms(cold),
        rounds - vessel.len()
    );
    println!(
        "          (this host's KVM takes {:>5.2} ms to register 1 GiB with a new VM)",
        ms(register)
    );
    if qemu.is_empty() {
        println!("  qemu    every round failed; is qemu-system-x86 installed and /dev/kvm usable?");
        return;
    }
    let q_save = median(qemu.iter().map(|q| q.0).collect());
    let q_load = median(qemu.iter().map(|q| q.1).collect());
    println!(
        "  qemu    savevm {:>8.1} ms; loadvm + cont to the next instruction {:>8.2} ms   ({} failed)",
        ms(q_save),
        ms(q_load),
        rounds - qemu.len()
    );
    println!(
        "  ratio (qemu / vessel): take {:.1}x, revert {:.1}x",
        q_save.as_secs_f64() / save.as_secs_f64(),
        q_load.as_secs_f64() / hot.as_secs_f64()
    );
}
