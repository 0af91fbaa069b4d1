//! Live migration between two machines of this process over a unix socket pair
//! (`vmm::migration`): a guest that rewrites its memory, writes its disk and watches its
//! own clock (test=migrate) goes on on the receiver where it was on the sender; and every
//! way a migration can fail leaves the sender's machine running with nothing lost.
//! (Two VM processes over unix and TCP sockets: the app's tests.)

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::Mutex;
use std::time::Duration;

use vessel_tests::{GuestRun, GuestSpec, TIMEOUT, hex};
use vmm::migration::{
    self, MigrateOptions, MigrationError, OnLimit, Phase, Progress, ReceiveOptions,
};
use vmm::{DeviceConfig, MachineHandle, MachineState, StopReason};

/// One line the guest printed each tick.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Tick {
    tick: u64,
    boot: u64,
    sum: u64,
}

fn ticks(output: &str) -> Vec<Tick> {
    assert!(!output.contains("MIGRATE BAD") && !output.contains("MIGRATE FAIL"), "{output}");
    let complete = &output[..output.rfind('\n').map_or(0, |i| i + 1)];
    complete
        .lines()
        .filter_map(|l| l.strip_prefix("MIGRATE "))
        .map(|l| {
            let f: Vec<u64> = l.split(' ').map(hex).collect();
            Tick { tick: f[0], boot: f[1], sum: f[2] }
        })
        .collect()
}

/// A guest of `test` with 256 MiB and a 1 MiB disk in `dir`.
fn spec(test: &str, dir: &std::path::Path) -> GuestSpec {
    let disk = dir.join("disk.raw");
    std::fs::File::create(&disk).unwrap().set_len(1 << 20).unwrap();
    let mut spec = GuestSpec::new(test);
    spec.memory_bytes = 256 << 20;
    let image = vmm::devices::storage::image::ImageSpec::raw(&disk);
    spec.devices.push(DeviceConfig::Block { image, read_only: false });
    spec
}

/// Runs until the guest printed `n` more ticks.
fn more_ticks(run: &mut GuestRun, n: usize) {
    let have = ticks(&run.output()).len();
    let ok = run.wait_until(TIMEOUT, |r| ticks(&r.output()).len() >= have + n);
    assert!(ok, "the guest did not go on: {}", run.output());
}

/// Migrates `run`'s machine to a new one built from `config` with `receive` options;
/// the sender's outcome, the receiver's, and the progress reports.
fn migrate(
    run: &GuestRun,
    config: vmm::MachineConfig,
    options: &MigrateOptions,
    receive: ReceiveOptions,
) -> (
    Result<migration::Migrated, MigrationError>,
    Result<MachineHandle, MigrationError>,
    Vec<Progress>,
) {
    let (mut sender_end, mut receiver_end) = UnixStream::pair().unwrap();
    let receiver = std::thread::spawn(move || {
        migration::receive(config, None, &mut receiver_end, &receive, &|_| {})
    });
    let reports = Mutex::new(Vec::new());
    let sent =
        run.handle.migrate(&mut sender_end, options, |p| reports.lock().unwrap().push(p.clone()));
    drop(sender_end);
    (sent, receiver.join().unwrap(), reports.into_inner().unwrap())
}

#[test]
fn a_busy_guest_moves_and_goes_on_where_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec("migrate", dir.path());
    let mut run = spec.boot();
    // Once it has measured a whole second of the CMOS clock: the one it moves in shows
    // the pause.
    let measured = run.wait_until(TIMEOUT, |r| vessel_tests::has_whole_second(&r.output()));
    assert!(measured, "{}", run.output());
    let (sent, received, reports) =
        migrate(&run, spec.config(), &MigrateOptions::default(), ReceiveOptions::default());
    let migrated = sent.expect("the migration completes");
    let handle = received.expect("the receiver runs the machine");
    println!("{migrated:?}");
    assert!(reports.iter().any(|p| p.phase == Phase::Copying && p.pass == 1), "{reports:?}");
    assert!(reports.iter().any(|p| p.phase == Phase::HandingOver), "{reports:?}");
    assert!(migrated.memory_bytes >= 1 << 20, "the guest's memory went: {migrated:?}");

    // The sender's machine stopped, as migrated.
    assert!(matches!(run.expect_stopped(), StopReason::Migrated));
    let before = run.output();
    let mut moved = GuestRun { handle, serial: Vec::new(), events: Vec::new() };
    more_ticks(&mut moved, 10);
    // One guest's output across the two machines (a line may be cut between them).
    let both = format!("{before}{}", moved.output());
    let all = ticks(&both);
    assert!(!moved.output().contains("VESSEL-TESTGUEST"), "it did not boot again");
    for pair in all.windows(2) {
        assert_eq!(pair[1].tick, pair[0].tick + 1, "ticks go on one by one: {both}");
        assert_eq!(pair[1].boot, pair[0].boot, "the same boot: {both}");
        assert_eq!(pair[1].sum, pair[0].sum.wrapping_mul(31).wrapping_add(pair[1].tick));
    }
    // The guest's own measure of its pause (rough on a busy host: a vCPU thread the host
    // keeps waiting shows as a pause too).
    let hz = vessel_tests::tsc_hz();
    let pause = |r: &GuestRun| vessel_tests::guest_pause(&before, &r.output(), hz);
    assert!(moved.wait_until(TIMEOUT, |r| pause(r).is_some()), "{}", moved.output());
    let guest = pause(&moved).unwrap();
    println!(
        "migration: {:?} in all, {} passes, {} KiB of memory, {} KiB of state; paused {:?} \
         as the sender measured, {guest:?} as the guest measured",
        migrated.total,
        migrated.passes,
        migrated.memory_bytes >> 10,
        migrated.state_bytes >> 10,
        migrated.downtime,
    );
    moved.handle.send_serial(b"q").unwrap();
    assert!(matches!(moved.expect_stopped(), StopReason::PoweredOff));
    // The receiver wrote the disk (the shared storage): the last tick is in its sector.
    let last = *ticks(&format!("{before}{}", moved.output())).last().unwrap();
    let disk = std::fs::read(dir.path().join("disk.raw")).unwrap();
    let at = (last.tick % 2048) as usize * 512;
    let word = |i: usize| u64::from_le_bytes(disk[at + i..at + i + 8].try_into().unwrap());
    assert_eq!((word(0), word(8), word(16)), (last.tick, last.boot, last.sum));
}

/// The machine still runs on the sender, ticking and writing its disk.
fn runs_on(run: &mut GuestRun) {
    assert!(matches!(run.handle.state(), MachineState::Running), "{:?}", run.handle.state());
    more_ticks(run, 3);
}

#[test]
fn a_host_lacking_a_cpu_feature_the_guest_has_refuses_it_by_name_before_any_memory() {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec("migrate", dir.path());
    let mut run = spec.boot();
    more_ticks(&mut run, 2);
    let hide = ReceiveOptions { hide_cpu_features: vec!["sse2".into()], ..Default::default() };
    let (sent, received, reports) = migrate(&run, spec.config(), &MigrateOptions::default(), hide);
    let error = sent.unwrap_err();
    assert!(matches!(error, MigrationError::Refused(_)), "{error}");
    assert!(error.to_string().contains("sse2"), "{error}");
    assert!(matches!(received, Err(MigrationError::Incompatible(_))));
    assert!(reports.is_empty(), "no memory moved: {reports:?}");
    runs_on(&mut run);
}

/// A receiver's end that fails once it has read `left` bytes, as a receiver killed in the
/// middle of the copy.
struct DiesAfter {
    stream: UnixStream,
    left: usize,
}

impl Read for DiesAfter {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            let _ = self.stream.shutdown(std::net::Shutdown::Both);
            return Err(std::io::Error::other("killed"));
        }
        let n = buf.len().min(self.left);
        let n = self.stream.read(&mut buf[..n])?;
        self.left -= n;
        Ok(n)
    }
}

impl Write for DiesAfter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.stream.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.stream.flush()
    }
}

#[test]
fn a_receiver_dying_mid_copy_leaves_the_machine_running_and_movable() {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec("migrate", dir.path());
    let mut run = spec.boot();
    more_ticks(&mut run, 2);
    let (mut sender_end, receiver_end) = UnixStream::pair().unwrap();
    let config = spec.config();
    let receiver = std::thread::spawn(move || {
        // Well inside the first pass (the guest has written several MiB by then).
        let mut dying = DiesAfter { stream: receiver_end, left: 1 << 20 };
        migration::receive(config, None, &mut dying, &ReceiveOptions::default(), &|_| {})
    });
    let sent = run.handle.migrate(&mut sender_end, &MigrateOptions::default(), |_| {});
    let error = sent.unwrap_err();
    assert!(error.source_runs_on(), "{error}");
    assert!(receiver.join().unwrap().is_err());
    runs_on(&mut run);
    // And it moves when the receiver lives.
    let (sent, received, _) =
        migrate(&run, spec.config(), &MigrateOptions::default(), ReceiveOptions::default());
    sent.expect("the second migration completes");
    let mut moved = GuestRun { handle: received.unwrap(), serial: Vec::new(), events: Vec::new() };
    more_ticks(&mut moved, 3);
}

#[test]
fn a_guest_faster_than_the_link_stops_at_the_pass_limit_as_the_user_chose() {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec("migrate-storm", dir.path());
    let mut run = spec.boot();
    more_ticks(&mut run, 2);
    // A pause target no link meets for this guest: the limit decides. One pass: what the
    // guest and its disk changed while all of its memory went over is always some (a
    // later pass can be over in microseconds, with nothing changed meanwhile).
    let mut options = MigrateOptions {
        downtime: Duration::ZERO,
        max_passes: 1,
        on_limit: OnLimit::Cancel,
        ..MigrateOptions::default()
    };
    let (sent, received, reports) =
        migrate(&run, spec.config(), &options, ReceiveOptions::default());
    let error = sent.unwrap_err();
    assert!(matches!(error, MigrationError::DidNotConverge { passes: 1, .. }), "{error}");
    assert!(matches!(received, Err(MigrationError::SenderCancelled)), "{:?}", received.err());
    let last = reports.last().unwrap();
    println!("at the limit: {last:?}");
    assert!(last.dirty_rate > 0 && last.remaining > 0, "{last:?}");
    runs_on(&mut run);

    // Told to complete anyway: it does, with the pause it takes.
    options.on_limit = OnLimit::Complete;
    let (sent, received, _) = migrate(&run, spec.config(), &options, ReceiveOptions::default());
    let migrated = sent.expect("it completes at the limit");
    assert!(!migrated.converged && migrated.passes == 2, "{migrated:?}");
    println!("completed at the limit: paused {:?}", migrated.downtime);
    let mut moved = GuestRun { handle: received.unwrap(), serial: Vec::new(), events: Vec::new() };
    more_ticks(&mut moved, 3);
}

#[test]
fn a_cancelled_migration_leaves_the_machine_running() {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec("migrate", dir.path());
    let mut run = spec.boot();
    more_ticks(&mut run, 2);
    let options = MigrateOptions::default();
    let cancel = options.cancel.clone();
    let (mut sender_end, mut receiver_end) = UnixStream::pair().unwrap();
    let config = spec.config();
    let receiver = std::thread::spawn(move || {
        migration::receive(config, None, &mut receiver_end, &ReceiveOptions::default(), &|_| {})
    });
    // Cancelled as soon as the first pass begins.
    let sent = run.handle.migrate(&mut sender_end, &options, |_| {
        cancel.store(true, std::sync::atomic::Ordering::Relaxed)
    });
    assert!(matches!(sent, Err(MigrationError::Cancelled)), "{:?}", sent.err());
    assert!(matches!(receiver.join().unwrap(), Err(MigrationError::SenderCancelled)));
    runs_on(&mut run);
}

#[test]
fn a_hostile_sender_is_refused_and_nothing_runs() {
    use vmm::migration::wire::{self, Tag};
    let dir = tempfile::tempdir().unwrap();
    let spec = spec("migrate", dir.path());
    let config = spec.config();
    let (mut attacker, mut receiver_end) = UnixStream::pair().unwrap();
    let receiver_config = config.clone();
    let receiver = std::thread::spawn(move || {
        migration::receive(
            receiver_config,
            None,
            &mut receiver_end,
            &ReceiveOptions::default(),
            &|_| {},
        )
    });
    wire::greet(&mut attacker, "attacker").unwrap();
    wire::read_greeting(&mut attacker).unwrap();
    let requirements = migration::Requirements {
        memory: vmm::machine::memory_layout(config.memory_bytes),
        vcpus: config.vcpus,
        cpuid: Vec::new(),
        disks: None,
    };
    wire::send_value(&mut attacker, Tag::Requirements, &requirements).unwrap();
    assert_eq!(wire::read_frame(&mut attacker).unwrap().0, Tag::Accept);
    // Pages beyond the machine's RAM.
    let beyond = (1u64 << 40).to_le_bytes();
    wire::send(&mut attacker, Tag::Pages, &[&beyond, &[0xcc; 4096]]).unwrap();
    let error = receiver.join().unwrap().err().expect("refused");
    assert!(matches!(error, MigrationError::Protocol(_)), "{error}");
    let (tag, why) = wire::read_frame(&mut attacker).unwrap();
    assert_eq!(tag, Tag::Failed);
    assert!(wire::text(&why).contains("outside the machine's RAM"), "{}", wire::text(&why));
}

#[test]
fn a_sender_writes_no_disk_of_a_receiver_on_shared_storage() {
    use vmm::migration::wire::{self, Tag};
    let dir = tempfile::tempdir().unwrap();
    let config = spec("migrate", dir.path()).config();
    let disk = dir.path().join("disk.raw");
    std::fs::write(&disk, vec![0x11u8; 1 << 20]).unwrap();
    let requirements = |disks| migration::Requirements {
        memory: vmm::machine::memory_layout(config.memory_bytes),
        vcpus: config.vcpus,
        cpuid: Vec::new(),
        disks,
    };
    let attack = |requirements: &migration::Requirements| {
        let (mut attacker, mut receiver_end) = UnixStream::pair().unwrap();
        let receiver_config = config.clone();
        let receiver = std::thread::spawn(move || {
            let options = ReceiveOptions::default();
            migration::receive(receiver_config, None, &mut receiver_end, &options, &|_| {})
        });
        wire::greet(&mut attacker, "attacker").unwrap();
        wire::read_greeting(&mut attacker).unwrap();
        wire::send_value(&mut attacker, Tag::Requirements, requirements).unwrap();
        let (tag, _) = wire::read_frame(&mut attacker).unwrap();
        if tag == Tag::Accept {
            let at = (0u32.to_le_bytes(), 0u64.to_le_bytes());
            wire::send(&mut attacker, Tag::DiskData, &[&at.0, &at.1, &[0xcc; 4096]]).unwrap();
        }
        receiver.join().unwrap().err().expect("refused").to_string()
    };
    // Stating disks it would send: refused before anything comes.
    let error = attack(&requirements(Some(vec![1 << 20])));
    assert!(error.contains("without --copy-disks"), "{error}");
    // Sending disk data without stating any: refused, the disk untouched.
    let error = attack(&requirements(None));
    assert!(error.contains("no such disk"), "{error}");
    assert!(std::fs::read(&disk).unwrap().iter().all(|b| *b == 0x11));
}

#[test]
fn an_unconfirmed_migration_never_leaves_two_copies_running() {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec("migrate", dir.path());
    let mut run = spec.boot();
    more_ticks(&mut run, 2);
    let (mut sender_end, receiver_end) = UnixStream::pair().unwrap();
    let config = spec.config();
    let receiver = std::thread::spawn(move || {
        let mut losing = vessel_tests::LosesRunning(receiver_end);
        migration::receive(config, None, &mut losing, &ReceiveOptions::default(), &|_| {})
    });
    let error =
        run.handle.migrate(&mut sender_end, &MigrateOptions::default(), |_| {}).unwrap_err();
    assert!(matches!(error, MigrationError::Unconfirmed(_)), "{error}");
    assert!(!error.source_runs_on());
    // The receiver runs it (it was told Go); the sender's copy stays paused, and cannot
    // be resumed while the receiver holds its disk.
    let mut moved = GuestRun {
        handle: receiver.join().unwrap().unwrap(),
        serial: Vec::new(),
        events: Vec::new(),
    };
    more_ticks(&mut moved, 2);
    assert!(matches!(run.handle.state(), MachineState::Paused));
    let refused = run.handle.resume().unwrap_err().to_string();
    assert!(refused.contains("runs on the other Vessel"), "{refused}");
    assert!(matches!(run.handle.state(), MachineState::Paused));
    // Once the receiver's copy is gone, the sender's takes its disk back and runs on. (What
    // the receiver's copy did meanwhile is lost: that is the user's call to make; what the
    // test shows is that the disks' locks decide, so that two copies never run.)
    moved.handle.power_off().unwrap();
    drop(moved);
    run.handle.resume().unwrap();
    runs_on(&mut run);
}

#[test]
fn a_moved_machine_moves_again_with_the_cpu_it_was_given() {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec("migrate", dir.path());
    let mut run = spec.boot();
    more_ticks(&mut run, 2);
    let options = MigrateOptions::default();
    let (sent, received, _) = migrate(&run, spec.config(), &options, ReceiveOptions::default());
    sent.expect("the first move");
    let mut moved = GuestRun { handle: received.unwrap(), serial: Vec::new(), events: Vec::new() };
    more_ticks(&mut moved, 2);
    // Its CPUID is the one this VMM gave it at boot, not what KVM says it has (on PVM
    // that is the host's own, more than KVM offers a guest): the next host checks that.
    let (sent, received, _) = migrate(&moved, spec.config(), &options, ReceiveOptions::default());
    sent.expect("the second move");
    let mut again = GuestRun { handle: received.unwrap(), serial: Vec::new(), events: Vec::new() };
    more_ticks(&mut again, 2);
}

/// `qemu-img ARGS`; its output, and whether it succeeded.
fn qemu_img(args: &[&std::ffi::OsStr]) -> (bool, String) {
    let out = std::process::Command::new("qemu-img").args(args).output().expect("qemu-img runs");
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// The disks of a machine without shared storage, in `dir`: a qcow2 overlay (the disk
/// the guest writes) over a raw base image, and a raw data disk. `fresh`: as the receiver
/// makes them (the base a copy, the rest empty); else with data of their own.
fn disks_in(dir: &std::path::Path, fresh: bool, base: &[u8]) -> Vec<DeviceConfig> {
    use std::os::unix::fs::FileExt;
    use vmm::devices::storage::image::{ImageFormat, ImageSpec, Layer};
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("base.raw"), base).unwrap();
    let p = |name: &str| dir.join(name).into_os_string();
    let (ok, text) = qemu_img(&[
        "create".as_ref(),
        "-q".as_ref(),
        "-f".as_ref(),
        "qcow2".as_ref(),
        "-F".as_ref(),
        "raw".as_ref(),
        "-b".as_ref(),
        "base.raw".as_ref(),
        &p("disk0.qcow2"),
        "64M".as_ref(),
    ]);
    assert!(ok, "{text}");
    let data = std::fs::File::create(dir.join("data.raw")).unwrap();
    data.set_len(16 << 20).unwrap();
    let disk0 = ImageSpec {
        path: dir.join("disk0.qcow2"),
        format: ImageFormat::Qcow2,
        backing: vec![Layer { path: dir.join("base.raw"), format: ImageFormat::Raw }],
    };
    if !fresh {
        // Data of the overlay's own, over the base's and beside it; zeroes it states.
        let file = std::fs::File::options().read(true).write(true).open(&disk0.path).unwrap();
        let mut image = disk0.open(&file, true).unwrap();
        image.write_at(&[0xa5; 3 << 20], 1 << 20).unwrap();
        image.write_at(&[0x3c; 65536], 40 << 20).unwrap();
        image.zero(0, 65536).unwrap();
        image.flush().unwrap();
        data.write_all_at(&[0x42; 1 << 20], 5 << 20).unwrap();
        data.write_all_at(&[0x24; 4096], (16 << 20) - 4096).unwrap();
    }
    // The guest writes the disk it finds last on the bus: the overlay.
    vec![
        DeviceConfig::Block { image: ImageSpec::raw(dir.join("data.raw")), read_only: false },
        DeviceConfig::Block { image: disk0, read_only: false },
    ]
}

#[test]
fn disks_without_shared_storage_go_along_with_what_the_guest_writes_meanwhile() {
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("sender"), dir.path().join("receiver"));
    let base: Vec<u8> = (0..4u32 << 20).map(|i| (i / 4096) as u8 | 1).collect();
    let mut spec = GuestSpec::new("migrate");
    spec.memory_bytes = 256 << 20;
    spec.devices.extend(disks_in(&src, false, &base));
    let mut receiving = spec.config();
    receiving.devices = vec![DeviceConfig::Rng];
    receiving.devices.extend(disks_in(&dst, true, &base));
    let mut run = spec.boot();
    more_ticks(&mut run, 3);

    // At the switch-over, before the receiver's machine opens them: its disks read as the
    // sender's (paused, flushed) do, byte for byte.
    let compared = Mutex::new(Vec::new());
    let (mut sender_end, mut receiver_end) = UnixStream::pair().unwrap();
    let receiver = std::thread::scope(|scope| {
        let receiver = scope.spawn(|| {
            let options = ReceiveOptions { copy_disks: true, ..Default::default() };
            let mut compare = || {
                for (name, format) in [("disk0.qcow2", "qcow2"), ("data.raw", "raw")] {
                    let (a, b) = (src.join(name), dst.join(name));
                    let args = ["compare".as_ref(), "-f".as_ref(), format.as_ref()];
                    let (same, text) = qemu_img(
                        &[
                            &args[..],
                            &["-F".as_ref(), format.as_ref(), a.as_os_str(), b.as_os_str()],
                        ]
                        .concat(),
                    );
                    compared.lock().unwrap().push((name, same, text));
                }
                let (ok, text) = qemu_img(&["check".as_ref(), dst.join("disk0.qcow2").as_os_str()]);
                compared.lock().unwrap().push(("the copy's qcow2 metadata", ok, text));
                Ok(())
            };
            migration::receive_with(
                receiving,
                None,
                &mut receiver_end,
                &options,
                &|_| {},
                &mut compare,
            )
        });
        let options = MigrateOptions { copy_disks: true, ..Default::default() };
        let sent = run.handle.migrate(&mut sender_end, &options, |_| {});
        drop(sender_end);
        let migrated = sent.expect("the migration completes");
        println!("{migrated:?}");
        assert!(migrated.disk_bytes >= 4 << 20, "the disks' data went: {migrated:?}");
        receiver.join().unwrap()
    });
    let compared = compared.into_inner().unwrap();
    assert_eq!(compared.len(), 3);
    for (name, same, text) in compared {
        assert!(same, "{name}: not as the sender's at the switch-over: {text}");
    }

    // The guest goes on there, reading back from the copy what it wrote here.
    assert!(matches!(run.expect_stopped(), StopReason::Migrated));
    let before = run.output();
    let handle = receiver.expect("the receiver runs the machine");
    let mut moved = GuestRun { handle, serial: Vec::new(), events: Vec::new() };
    more_ticks(&mut moved, 5);
    let all = ticks(&format!("{before}{}", moved.output()));
    for pair in all.windows(2) {
        assert_eq!(pair[1].tick, pair[0].tick + 1, "ticks go on one by one");
    }
    moved.handle.send_serial(b"q").unwrap();
    assert!(matches!(moved.expect_stopped(), StopReason::PoweredOff));
    // The sender's disks are as they were at the switch-over; the copy went on from there.
    let (_, text) = qemu_img(&[
        "compare".as_ref(),
        src.join("data.raw").as_os_str(),
        dst.join("data.raw").as_os_str(),
    ]);
    assert!(text.contains("identical"), "the data disk, untouched by the guest: {text}");
}

#[test]
fn the_screen_moves_with_the_machine_and_its_gpu_driver_goes_on() {
    use vmm::devices::virtio::gpu::GpuConfig;
    let mut spec = GuestSpec::new("gpu");
    spec.devices = vec![DeviceConfig::Gpu(GpuConfig::default())];
    let mut run = spec.boot();
    // It has drawn its frame and set its cursor, and waits for the host to resize.
    run.expect_output("GPU WAIT RESIZE\n");
    let cursor = run.handle.display().cursor();
    let (sent, received, _) =
        migrate(&run, spec.config(), &MigrateOptions::default(), ReceiveOptions::default());
    sent.expect("the migration completes");
    let handle = received.expect("the receiver runs the machine");
    assert!(matches!(run.expect_stopped(), StopReason::Migrated));

    // The receiver's display shows the guest's frame and cursor at once, and the driver
    // goes on there.
    vessel_tests::assert_gpu_guest_screen(&handle.display(), &cursor);
    let mut moved = GuestRun { handle, serial: Vec::new(), events: Vec::new() };
    vessel_tests::expect_gpu_guest_resized(&mut moved);
}
