//! `vessel migrate` and `vessel receive`: a library VM running in its (sandboxed) VM
//! process moves by live migration to a receiver — the test itself, taking the machine with
//! `vmm::migration::receive`; then a VM process that `vessel receive` started in the same
//! library (shared storage), over a unix socket and over TCP with a token — and goes on
//! there where it was; its old VM process ends. A receiver that refuses (a CPU feature, a
//! wrong token) leaves it running where it was.

mod common;

use std::os::unix::net::UnixListener;
use std::time::Duration;

use common::{Started, text, vessel};
use vessel_tests::{GuestRun, testguest_elf};

/// The "MIGRATE" lines' ticks and boot ids.
fn ticks(output: &str) -> Vec<(u64, u64)> {
    let complete = &output[..output.rfind('\n').map_or(0, |i| i + 1)];
    assert!(!complete.contains("MIGRATE BAD") && !complete.contains("MIGRATE FAIL"), "{output}");
    complete
        .lines()
        .filter_map(|l| {
            let mut words = l.trim().strip_prefix("MIGRATE ")?.split(' ');
            let mut next = || u64::from_str_radix(words.next()?.trim(), 16).ok();
            Some((next()?, next()?))
        })
        .collect()
}

/// The library VM `name`'s machine configuration, as its VM process builds it.
fn machine_config(lib: &std::path::Path, name: &str) -> vmm::MachineConfig {
    let library = vm_library::library::Library::open(lib).unwrap();
    let bundle = library.find(name).unwrap();
    vessel::core::launch::machine_config(&library, &bundle).unwrap()
}

/// A receiver on a unix socket in `dir`: its address, and the machine it took.
fn receiver(
    dir: &std::path::Path,
    config: vmm::MachineConfig,
    options: vmm::migration::ReceiveOptions,
) -> (String, std::thread::JoinHandle<Result<vmm::MachineHandle, vmm::migration::MigrationError>>) {
    let path = dir.join("receive.sock");
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).unwrap();
    let thread = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        // `vessel migrate` offers the VM first (`vessel receive`'s part): taken.
        use vessel::core::migration::{Answer, Offer};
        use vessel::vmhost::protocol;
        let offer: Offer = protocol::receive(&mut conn).unwrap().unwrap();
        assert_eq!(offer.name, "Mover");
        protocol::send(&mut conn, &Answer::Accept).unwrap();
        vmm::migration::receive(config, None, &mut conn, &options, &|_| {})
    });
    (format!("unix:{}", path.display()), thread)
}

/// "Mover" (test=migrate, 256 MiB, a disk) made in `lib` and started, ticking.
fn start_mover(lib: &std::path::Path) -> Started {
    let kernel = testguest_elf();
    let args = ["create", "Mover", "--kernel", kernel.to_str().unwrap(), "--cmdline"];
    let more = ["test=migrate", "--memory", "256M", "--disk-size", "8M", "--no-net"];
    let out = vessel(lib, &[&args[..], &more[..]].concat());
    assert!(out.status.success(), "create: {}", text(&out.stderr));
    let mut run = Started::new(lib, "Mover");
    // Its first sweep touches 64 MiB page by page: with the other tests of this file
    // doing the same on two cores, five ticks can take over a minute (one CI run saw
    // three in 60 s).
    let ticking = run.wait_until(Duration::from_secs(240), |s| ticks(s).len() >= 5);
    assert!(ticking, "{}", run.seen());
    run
}

#[test]
fn a_running_vm_moves_out_of_its_vm_process_and_goes_on() {
    let lib = common::scratch("migrate");
    let _vms = common::KillsVms(lib.clone());
    let mut run = start_mover(&lib);

    // A receiver that lacks a feature the guest has: refused, and the VM runs on.
    let hide = vmm::migration::ReceiveOptions {
        hide_cpu_features: vec!["sse2".into()],
        ..Default::default()
    };
    let (to, refusing) = receiver(&lib, machine_config(&lib, "Mover"), hide);
    let out = vessel(&lib, &["migrate", "Mover", "--to", &to]);
    assert!(!out.status.success());
    let said = text(&out.stderr);
    let log = std::fs::read_to_string(lib.join("Mover.vessel/vessel.log")).unwrap_or_default();
    assert!(said.contains("refused") && said.contains("sse2"), "{said}\nthe VM's log:\n{log}");
    assert!(refusing.join().unwrap().is_err());
    let seen = ticks(&run.seen()).len();
    let ran_on = run.wait_until(Duration::from_secs(60), |s| ticks(s).len() >= seen + 3);
    let log = std::fs::read_to_string(lib.join("Mover.vessel/vessel.log")).unwrap_or_default();
    assert!(ran_on, "it runs on after the refusal; the VM's log:\n{log}");

    // A receiver that takes it.
    let (to, taking) = receiver(&lib, machine_config(&lib, "Mover"), Default::default());
    let out = vessel(&lib, &["migrate", "Mover", "--to", &to, "--json"]);
    assert!(out.status.success(), "migrate: {}", text(&out.stderr));
    let figures: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    println!("{figures}");
    assert!(figures["passes"].as_u64().unwrap() >= 2, "{figures}");
    assert!(figures["memory_bytes"].as_u64().unwrap() >= 1 << 20, "{figures}");
    let handle = taking.join().unwrap().expect("the receiver runs the machine");

    // Its VM process ended, saying where the VM went; the VM is off in this library.
    let (status, before, stderr) = run.finish();
    assert!(status.success(), "{status}: {stderr}");
    assert!(stderr.contains("moved to another Vessel"), "{stderr}");
    let listed = text(&vessel(&lib, &["list"]).stdout);
    assert!(!listed.contains("running"), "{listed}");

    // The machine goes on in the receiver where it was: the next ticks, the same boot.
    let mut moved = GuestRun { handle, serial: Vec::new(), events: Vec::new() };
    assert!(moved.wait_until(vessel_tests::TIMEOUT, |r| ticks(&r.output()).len() >= 5));
    let all: Vec<(u64, u64)> = ticks(&format!("{before}{}", moved.output()));
    for pair in all.windows(2) {
        assert_eq!(pair[1].0, pair[0].0 + 1, "ticks one by one: {before}{}", moved.output());
        assert_eq!(pair[1].1, pair[0].1, "the same boot");
    }
    moved.handle.send_serial(b"q").unwrap();
    assert!(matches!(moved.expect_stopped(), vmm::StopReason::PoweredOff));
}

/// `vessel receive` started on `listen` in `lib`: the process, and what it printed first
/// (its address, and its token as JSON).
fn receive(lib: &std::path::Path, listen: &str) -> (std::process::Child, serde_json::Value) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_vessel"))
        .arg("--library")
        .arg(lib)
        .args(["--json", "receive", "--listen", listen])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    out.read_line(&mut first).unwrap();
    let said: serde_json::Value = serde_json::from_str(&first).expect(&first);
    // The rest (its verdict) is read when it ends.
    std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut out, &mut rest);
        rest
    });
    (child, said)
}

/// The serial output the running VM `name`'s process kept, once it holds `ticks` ticks.
fn serial_of(lib: &std::path::Path, name: &str, ticks_wanted: usize) -> String {
    use vessel::vmhost::protocol::{self, Reply, Request};
    let root = lib.join(format!("{name}.vessel"));
    let mut stream = vessel::vmhost::client::connect(&root, name).unwrap();
    protocol::send(&mut stream, &Request::Subscribe { serial: true, display: false, debug: false })
        .unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut serial = Vec::new();
    while ticks(&String::from_utf8_lossy(&serial)).len() < ticks_wanted {
        match protocol::receive::<Reply>(&mut stream).unwrap() {
            Some(Reply::Serial { bytes }) => serial.extend(bytes),
            Some(_) => {}
            None => panic!("{name}'s VM process ended: {}", String::from_utf8_lossy(&serial)),
        }
    }
    String::from_utf8_lossy(&serial).into_owned()
}

fn pid_of(lib: &std::path::Path, name: &str) -> Option<u64> {
    let list = common::json(lib, &["list", "--json"]);
    let vm = list.as_array().unwrap().iter().find(|v| v["name"] == name).unwrap().clone();
    vm["pid"].as_u64().or_else(|| vm["pid"].as_str().and_then(|p| p.parse().ok()))
}

#[test]
fn a_vm_moves_between_vm_processes_over_unix_tcp_and_ssh() {
    let lib = common::scratch("migrate-processes");
    let _vms = common::KillsVms(lib.clone());
    let run = start_mover(&lib);
    let first_pid = pid_of(&lib, "Mover");

    // A receiver whose library does not hold the VM (no shared storage): refused, named;
    // it waits on for the next offer, and the VM runs on here.
    let elsewhere = lib.join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let path = lib.join("elsewhere.sock");
    let (mut wrong_library, _) = receive(&elsewhere, &format!("unix:{}", path.display()));
    let out = vessel(&lib, &["migrate", "Mover", "--to", &format!("unix:{}", path.display())]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("not in this library"), "{}", text(&out.stderr));
    assert!(wrong_library.try_wait().unwrap().is_none(), "it waits for the next offer");
    let _ = wrong_library.kill();
    let _ = wrong_library.wait();
    assert_eq!(pid_of(&lib, "Mover"), first_pid, "it runs on where it was");

    // Over a unix socket, into a VM process of the same library (shared storage).
    let path = lib.join("in.sock");
    let (mut receiver, said) = receive(&lib, &format!("unix:{}", path.display()));
    assert_eq!(said["listening"], format!("unix:{}", path.display()));
    let out = vessel(&lib, &["migrate", "Mover", "--to", &format!("unix:{}", path.display())]);
    assert!(out.status.success(), "migrate: {}{}", text(&out.stdout), text(&out.stderr));
    println!("{}", text(&out.stdout));
    assert!(receiver.wait().unwrap().success(), "vessel receive");
    let (status, before, stderr) = run.finish();
    assert!(status.success() && stderr.contains("moved to another Vessel"), "{stderr}");
    let second_pid = pid_of(&lib, "Mover");
    assert!(second_pid.is_some() && second_pid != first_pid, "{first_pid:?} {second_pid:?}");
    let after = serial_of(&lib, "Mover", 5);
    let both = ticks(&format!("{before}{after}"));
    for pair in both.windows(2) {
        assert_eq!(pair[1].0, pair[0].0 + 1, "ticks one by one: {before}{after}");
        assert_eq!(pair[1].1, pair[0].1, "the same boot");
    }

    // Over TCP on this host, with the token the receiver made: a wrong one is refused
    // before anything moves, and the VM runs on.
    let (mut receiver, said) = receive(&lib, "tcp:127.0.0.1:0");
    let to = said["listening"].as_str().unwrap().to_string();
    let token = said["token"].as_str().unwrap().to_string();
    let wrong = lib.join("wrong-token");
    std::fs::write(&wrong, "0123456789abcdef0123456789abcdef\n").unwrap();
    let out =
        vessel(&lib, &["migrate", "Mover", "--to", &to, "--token-file", wrong.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("token"), "{}", text(&out.stderr));
    assert_eq!(pid_of(&lib, "Mover"), second_pid, "it runs on where it was");
    let right = lib.join("token");
    std::fs::write(&right, format!("{token}\n")).unwrap();
    let out = vessel(
        &lib,
        &["migrate", "Mover", "--to", &to, "--token-file", right.to_str().unwrap(), "--json"],
    );
    assert!(out.status.success(), "migrate over tcp: {}", text(&out.stderr));
    println!("{}", text(&out.stdout));
    assert!(receiver.wait().unwrap().success());
    let third_pid = pid_of(&lib, "Mover");
    assert!(third_pid.is_some() && third_pid != second_pid);
    let again = serial_of(&lib, "Mover", 3);
    let last_before = ticks(&after).last().copied().unwrap();
    let first_after = ticks(&again)[0];
    assert!(first_after.0 > last_before.0 && first_after.1 == last_before.1, "{after}\n{again}");

    // Over SSH: `vessel receive --stdio` on the other end of the user's ssh. No sshd on
    // the test machines: a stand-in `ssh` runs the remote command here, which is all the
    // transport asks of ssh (its keys and encryption are ssh's own).
    let ssh = lib.join("ssh");
    std::fs::write(
        &ssh,
        "#!/bin/sh\n# A stand-in for ssh: skips its options and the host, runs the command here.\n\
         while [ \"$1\" != \"--\" ]; do shift; done\nshift 2\nexec sh -c \"$1\"\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&ssh, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = common::vessel_with(
        &[
            ("VESSEL_SSH", ssh.as_os_str()),
            ("VESSEL_REMOTE_VESSEL", std::ffi::OsStr::new(env!("CARGO_BIN_EXE_vessel"))),
        ],
        &lib,
        &["migrate", "Mover", "--to", "ssh://me@elsewhere"],
    );
    assert!(out.status.success(), "migrate over ssh: {}", text(&out.stderr));
    println!("{}", text(&out.stdout));
    let fourth_pid = pid_of(&lib, "Mover");
    assert!(fourth_pid.is_some() && fourth_pid != third_pid);
    let last = serial_of(&lib, "Mover", 3);
    let last_before = ticks(&again).last().copied().unwrap();
    let first_after = ticks(&last)[0];
    assert!(first_after.0 > last_before.0 && first_after.1 == last_before.1, "{again}\n{last}");
    let out = vessel(&lib, &["stop", "--force", "Mover"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// The pid of the VM process receiving the VM in `root` (`vessel-vm --incoming`), once
/// there is one.
fn incoming_vm_process(root: &std::path::Path) -> u32 {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
            let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            let root = root.as_os_str().as_encoded_bytes();
            if args.contains(&&b"--incoming"[..]) && args.contains(&root) {
                return pid;
            }
        }
        assert!(std::time::Instant::now() < deadline, "no receiving VM process");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Stops the process `pid` at once (mid-copy: it cannot finish the migration without
/// answering), then kills it once the sender waits on it.
fn stop_then_kill(pid: u32) {
    // SAFETY: kill(2) of a process the test found; no memory is involved.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGSTOP) }, 0);
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
}

#[test]
fn a_receiving_vm_process_killed_mid_copy_leaves_the_vm_running_where_it_was() {
    let lib = common::scratch("migrate-killed");
    let _vms = common::KillsVms(lib.clone());
    let run = start_mover(&lib);
    let pid = pid_of(&lib, "Mover");
    let path = lib.join("in.sock");
    let (mut receiver, _) = receive(&lib, &format!("unix:{}", path.display()));
    // A pause target it never meets: it copies until the receiver is gone.
    let to = format!("unix:{}", path.display());
    let migrate = std::process::Command::new(env!("CARGO_BIN_EXE_vessel"))
        .arg("--library")
        .arg(&lib)
        .args(["migrate", "Mover", "--to", &to, "--downtime-ms", "0", "--max-passes", "100000"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let incoming = incoming_vm_process(&lib.join("Mover.vessel"));
    stop_then_kill(incoming);
    let out = migrate.wait_with_output().unwrap();
    assert!(!out.status.success(), "{}", text(&out.stdout));
    println!("migrate said: {}", text(&out.stderr));
    assert!(!receiver.wait().unwrap().success(), "vessel receive reports the failure");
    // The VM runs on in its VM process, ticking where it was.
    assert_eq!(pid_of(&lib, "Mover"), pid, "the same VM process");
    let before = ticks(&run.seen());
    let after = serial_of(&lib, "Mover", before.len() + 3);
    let all = ticks(&after);
    assert!(all.last().unwrap().0 > before.last().unwrap().0 + 1, "{after}");
    assert!(all.iter().all(|t| t.1 == before[0].1), "the same boot");
    drop(run);
}

#[test]
fn an_unconfirmed_move_resumes_here_only_once_nobody_runs_the_vm_elsewhere() {
    let lib = common::scratch("migrate-unconfirmed");
    let _vms = common::KillsVms(lib.clone());
    let mut run = start_mover(&lib);
    let path = lib.join("in.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let config = machine_config(&lib, "Mover");
    let root = lib.join("Mover.vessel");
    // A receiver that takes the VM's run lock as a VM process would, runs the machine,
    // and loses the link as it says so.
    let receiver = std::thread::spawn(move || {
        use vessel::core::migration::{Answer, Offer};
        use vessel::vmhost::protocol;
        let (mut conn, _) = listener.accept().unwrap();
        let _: Offer = protocol::receive(&mut conn).unwrap().unwrap();
        protocol::send(&mut conn, &Answer::Accept).unwrap();
        let bundle = vm_library::bundle::Bundle::open(&root).unwrap();
        let mut run_lock = bundle.open_run_lock().unwrap();
        let mut take = || run_lock.take(Duration::from_secs(10)).map_err(|e| e.to_string());
        let mut losing = vessel_tests::LosesRunning(conn);
        let options = vmm::migration::ReceiveOptions::default();
        let handle =
            vmm::migration::receive_with(config, None, &mut losing, &options, &|_| {}, &mut take)
                .unwrap();
        (handle, run_lock)
    });
    let out = vessel(&lib, &["migrate", "Mover", "--to", &format!("unix:{}", path.display())]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("did not confirm"), "{}", text(&out.stderr));
    let (handle, run_lock) = receiver.join().unwrap();
    assert!(matches!(handle.state(), vmm::MachineState::Running), "the receiver runs it");

    // Paused here, and not resumed while the other side holds it.
    let out = vessel(&lib, &["resume", "Mover"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("runs on the other Vessel"), "{}", text(&out.stderr));
    let seen = ticks(&run.seen()).len();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(ticks(&run.seen()).len(), seen, "still paused");

    // The other side's copy gone, it resumes here and goes on.
    handle.power_off().unwrap();
    drop(handle);
    drop(run_lock);
    let out = vessel(&lib, &["resume", "Mover"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let ran_on = run.wait_until(Duration::from_secs(60), |s| ticks(s).len() >= seen + 3);
    assert!(ran_on, "{}", run.seen());
}

/// The disk image of the VM `name` in `lib` as raw bytes (converted by qemu-img).
fn disk_bytes(lib: &std::path::Path, name: &str, scratch: &std::path::Path) -> Vec<u8> {
    let bundle = vm_library::library::Library::open(lib).unwrap().find(name).unwrap();
    let disk = &bundle.config.disks[0];
    let format = format!("{:?}", disk.format).to_lowercase();
    let raw = scratch.join("disk.raw");
    let out = std::process::Command::new("qemu-img")
        .args(["convert", "-f", &format, "-O", "raw"])
        .arg(bundle.root().join(&disk.file))
        .arg(&raw)
        .output()
        .unwrap();
    assert!(out.status.success(), "qemu-img convert: {}", text(&out.stderr));
    let bytes = std::fs::read(&raw).unwrap();
    std::fs::remove_file(&raw).unwrap();
    bytes
}

#[test]
fn a_vm_moves_with_its_folder_and_disks_to_a_library_without_them() {
    let lib = common::scratch("migrate-copy-disks");
    let other = lib.join("other");
    std::fs::create_dir_all(&other).unwrap();
    let _vms = (common::KillsVms(lib.clone()), common::KillsVms(other.clone()));
    let run = start_mover(&lib);
    let pid = pid_of(&lib, "Mover");
    let migrate = |to: &str, more: &[&str]| {
        let args = [&["migrate", "Mover", "--to", to, "--copy-disks"][..], more].concat();
        std::process::Command::new(env!("CARGO_BIN_EXE_vessel"))
            .arg("--library")
            .arg(&lib)
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };

    // Into its own library: it is there already.
    let path = lib.join("same.sock");
    let (mut receiver, _) = receive(&lib, &format!("unix:{}", path.display()));
    let out = migrate(&format!("unix:{}", path.display()), &[]).wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("in this library already"), "{}", text(&out.stderr));
    let _ = receiver.kill();
    let _ = receiver.wait();

    // The receiving VM process killed mid-copy: the folder that was arriving goes, and
    // the VM runs on where it was.
    let path = other.join("in.sock");
    let to = format!("unix:{}", path.display());
    let (mut receiver, _) = receive(&other, &to);
    let mover = migrate(&to, &["--downtime-ms", "0", "--max-passes", "100000"]);
    let arriving = other.join("Mover.vessel");
    let incoming = incoming_vm_process(&arriving);
    // SAFETY: kill(2) of the process found above; no memory is involved.
    assert_eq!(unsafe { libc::kill(incoming as i32, libc::SIGSTOP) }, 0);
    // Not the library's VM while it arrives: listed with the reason, not as one to start.
    assert!(arriving.join(vm_library::bundle::ARRIVING_FILE).exists());
    let out = vessel(&other, &["start", "Mover"]);
    assert!(!out.status.success(), "{}", text(&out.stdout));
    println!("start while arriving: {}", text(&out.stderr));
    let listed = text(&vessel(&other, &["list"]).stdout);
    assert!(listed.contains("arriving by live migration"), "{listed}");
    stop_then_kill(incoming);
    let out = mover.wait_with_output().unwrap();
    assert!(!out.status.success(), "{}", text(&out.stdout));
    assert!(!receiver.wait().unwrap().success(), "vessel receive reports the failure");
    assert!(!arriving.exists(), "nothing of it is left there");
    assert_eq!(pid_of(&lib, "Mover"), pid, "it runs on where it was");

    // Over a unix socket, to a library of its own: the VM comes with its folder and disks.
    let (mut receiver, _) = receive(&other, &to);
    let out = migrate(&to, &[]).wait_with_output().unwrap();
    assert!(out.status.success(), "migrate: {}{}", text(&out.stdout), text(&out.stderr));
    println!("{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("of disks"), "{}", text(&out.stdout));
    assert!(receiver.wait().unwrap().success(), "vessel receive");
    let (status, before, stderr) = run.finish();
    assert!(status.success() && stderr.contains("moved to another Vessel"), "{stderr}");
    assert!(!arriving.join(vm_library::bundle::ARRIVING_FILE).exists(), "it has arrived");
    assert!(pid_of(&other, "Mover").is_some(), "it runs in the other library");
    assert!(pid_of(&lib, "Mover").is_none(), "its folder here stays, off");
    let after = serial_of(&other, "Mover", 5);
    let both = ticks(&format!("{before}{after}"));
    for pair in both.windows(2) {
        assert_eq!(pair[1].0, pair[0].0 + 1, "ticks one by one: {before}{after}");
        assert_eq!(pair[1].1, pair[0].1, "the same boot");
    }

    // On over SSH to a third library, the one the address names (a stand-in `ssh` runs
    // the remote command here, as in the test above).
    let third = lib.join("third");
    std::fs::create_dir_all(&third).unwrap();
    let _third_vms = common::KillsVms(third.clone());
    let ssh = lib.join("ssh");
    std::fs::write(
        &ssh,
        "#!/bin/sh\nwhile [ \"$1\" != \"--\" ]; do shift; done\nshift 2\nexec sh -c \"$1\"\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&ssh, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = common::vessel_with(
        &[
            ("VESSEL_SSH", ssh.as_os_str()),
            ("VESSEL_REMOTE_VESSEL", std::ffi::OsStr::new(env!("CARGO_BIN_EXE_vessel"))),
        ],
        &other,
        &[
            "migrate",
            "Mover",
            "--copy-disks",
            "--to",
            &format!("ssh://me@elsewhere{}", third.display()),
        ],
    );
    assert!(out.status.success(), "migrate over ssh: {}", text(&out.stderr));
    println!("{}", text(&out.stdout));
    assert!(pid_of(&third, "Mover").is_some(), "it runs in the third library");
    let last = serial_of(&third, "Mover", 3);
    let (last_before, first_after) = (*ticks(&after).last().unwrap(), ticks(&last)[0]);
    assert!(first_after.0 > last_before.0 && first_after.1 == last_before.1, "{after}\n{last}");
    let out = vessel(&third, &["stop", "--force", "Mover"]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    // The copy of the copy holds everything the disk here held at the first move (the
    // guest wrote a sector a tick; where the two differ, the copy holds a tick written
    // after that move).
    let here = disk_bytes(&lib, "Mover", &lib);
    let there = disk_bytes(&third, "Mover", &third);
    assert_eq!(here.len(), there.len());
    let tick_of = |sector: &[u8]| u64::from_le_bytes(sector[..8].try_into().unwrap());
    let last_here = here.chunks(512).map(tick_of).max().unwrap();
    assert!(last_here > 0, "the guest wrote its disk here");
    let mut later = 0;
    for (a, b) in here.chunks(512).zip(there.chunks(512)) {
        if a != b {
            assert!(tick_of(b) > last_here, "a sector lost in the copy: {:?}", &b[..24]);
            later += 1;
        }
    }
    assert!(later > 0 && later < 1000, "{later} sectors written after the move");
}
