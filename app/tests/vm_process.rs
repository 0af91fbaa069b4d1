//! Each running VM in a process of its own (`vessel-vm`), as people meet it: the CLI
//! starts one in the background; the window (egui_kittest, real VM processes) shows it and
//! starts another; a VM process killed with SIGKILL shows as Crashed, with the reason,
//! while the other VM and the window carry on; the window let go (Run in Background)
//! leaves its VM running; the CLI stops it through its control socket.

mod common;
use common::{json, text, vessel};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use egui_kittest::Harness;
use vessel::ui::{Options, VesselApp};
use vessel::vmhost::client::Launcher;
use vessel_tests::testguest_elf;

fn create(lib: &Path, name: &str) {
    let kernel = testguest_elf();
    let args = ["create", name, "--kernel", kernel.to_str().unwrap(), "--cmdline", "test=echo"];
    let more = ["--memory", "64M", "--disk-size", "8M", "--no-net"];
    let out = vessel(lib, &[&args[..], &more[..]].concat());
    assert!(out.status.success(), "create: {}", text(&out.stderr));
}

/// The folder of the VM called `name`.
fn root_of(lib: &Path, name: &str) -> PathBuf {
    let list = json(lib, &["list", "--json"]);
    let vm = list.as_array().unwrap().iter().find(|v| v["name"] == name).unwrap().clone();
    PathBuf::from(vm["path"].as_str().unwrap())
}

/// `vessel list --json`'s entry for `name`: its state and its VM process's pid.
fn listed(lib: &Path, name: &str) -> (String, Option<u32>) {
    let list = json(lib, &["list", "--json"]);
    let vm = list.as_array().unwrap().iter().find(|v| v["name"] == name).unwrap().clone();
    let pid = vm["pid"].as_str().map(|p| p.parse().unwrap());
    (vm["state"].as_str().unwrap().to_string(), pid)
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn window(lib: &Path) -> Harness<'static, VesselApp> {
    let lib = lib.to_path_buf();
    let mut h =
        Harness::builder().with_size([1180.0, 760.0]).with_max_steps(8).build_eframe(move |cc| {
            VesselApp::new(
                &cc.egui_ctx,
                Options {
                    library: Some(lib.clone()),
                    prefs_path: lib.join("prefs.toml"),
                    launcher: Launcher::Process(env!("CARGO_BIN_EXE_vessel-vm").into()),
                },
            )
        });
    step_until(&mut h, "the library scan", |h| h.state().library_read());
    h
}

fn step_until(
    h: &mut Harness<'static, VesselApp>,
    what: &str,
    done: impl Fn(&Harness<'static, VesselApp>) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done(h) {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        h.step();
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn state(h: &Harness<'static, VesselApp>, name: &str) -> (String, Option<String>) {
    h.state().vm_state(name).unwrap()
}

/// Whether `pid` runs `vessel-vm`.
fn is_vm_process(pid: u32) -> bool {
    let vm_program = std::fs::canonicalize(env!("CARGO_BIN_EXE_vessel-vm")).unwrap();
    std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|p| p == vm_program)
}

#[test]
fn vms_live_in_processes_of_their_own() {
    let lib: PathBuf = common::scratch("vm-process");
    let _vms = common::KillsVms(lib.clone());
    create(&lib, "cli");
    create(&lib, "window");

    // The CLI starts one in the background and returns.
    let started = vessel(&lib, &["start", "--detach", "cli"]);
    assert!(started.status.success(), "{}", text(&started.stderr));
    assert!(text(&started.stdout).contains("running in the background"));
    let (listed_state, cli_pid) = listed(&lib, "cli");
    assert_eq!(listed_state, "running");
    let cli_pid = cli_pid.unwrap();
    assert!(is_vm_process(cli_pid), "pid {cli_pid} is a vessel-vm");
    // Its control socket is the user's alone.
    let root = root_of(&lib, "cli");
    let socket = vessel::vmhost::paths::socket_for(&root).unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&socket), 0o600);
    assert_eq!(mode(socket.parent().unwrap()), 0o700);

    // The window shows it (attached), and starts the other in a process of its own.
    let mut h = window(&lib);
    step_until(&mut h, "the CLI's VM in the window", |h| state(h, "cli").0 == "Running");
    assert!(h.state_mut().power_on_by_name("window"));
    step_until(&mut h, "the window's VM", |h| state(h, "window").0 == "Running");
    let (_, window_pid) = listed(&lib, "window");
    let window_pid = window_pid.unwrap();
    assert!(is_vm_process(window_pid) && window_pid != cli_pid);
    assert_ne!(window_pid, std::process::id(), "not the window's own process");

    // Killed with SIGKILL (a guest-triggered bug, the OOM killer): Crashed, with why; the
    // other VM and the window carry on, and the run lock is free again.
    // SAFETY: kill only sends a signal, to the VM process this test just looked up.
    assert_eq!(unsafe { libc::kill(window_pid as i32, libc::SIGKILL) }, 0);
    step_until(&mut h, "the crash to show", |h| state(h, "window").0 == "Crashed");
    let reason = state(&h, "window").1.unwrap_or_default();
    assert!(reason.contains("SIGKILL"), "{reason}");
    assert_eq!(state(&h, "cli").0, "Running");
    // Its helper (outside the sandbox, holding the run lock too) removes the dead process's
    // socket, then lets the lock go.
    let window_socket = vessel::vmhost::paths::socket_for(&root_of(&lib, "window")).unwrap();
    wait_for("the run lock to be free", || listed(&lib, "window").0 == "off");
    assert!(!window_socket.exists(), "the dead VM process's socket was removed");
    assert_eq!(listed(&lib, "cli"), ("running".to_string(), Some(cli_pid)));

    // The window closes with Run in Background: the VM it showed runs on; a new window
    // shows it again, its console live.
    h.state_mut().run_in_background();
    drop(h);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(listed(&lib, "cli"), ("running".to_string(), Some(cli_pid)));
    let mut h = window(&lib);
    step_until(&mut h, "the VM in the new window", |h| state(h, "cli").0 == "Running");
    h.state_mut().select_by_name("cli");
    step_until(&mut h, "its console", |h| h.state().console_size().is_some_and(|s| s[0] > 0));
    h.state_mut().run_in_background();
    drop(h);

    // The CLI drives it through its socket: pause, resume, reset, then power off.
    for (verb, after) in [("pause", "paused"), ("resume", "running"), ("reset", "running")] {
        let out = vessel(&lib, &[verb, "cli"]);
        assert!(out.status.success(), "{verb}: {}", text(&out.stderr));
        wait_for(after, || listed(&lib, "cli").0 == after);
    }
    let stop = vessel(&lib, &["stop", "--force", "cli"]);
    assert!(stop.status.success(), "{}", text(&stop.stderr));
    wait_for("the VM process to end", || !is_vm_process(cli_pid));
    assert_eq!(listed(&lib, "cli").0, "off");
    assert!(!socket.exists(), "its socket went with it");
    let again = vessel(&lib, &["stop", "cli"]);
    assert!(text(&again.stderr).contains("cli is not running"), "{}", text(&again.stderr));
    let _ = std::fs::remove_dir_all(lib);
}

#[test]
fn a_vm_process_powers_off_when_signalled_as_a_shutdown_would() {
    let lib: PathBuf = common::scratch("vm-signal");
    let _vms = common::KillsVms(lib.clone());
    create(&lib, "signalled");
    let started = vessel(&lib, &["start", "--detach", "signalled"]);
    assert!(started.status.success(), "{}", text(&started.stderr));
    let pid = listed(&lib, "signalled").1.expect("a running VM has a pid");
    // SIGTERM presses the power button (this guest does not answer it: it runs on).
    // SAFETY: kill only sends a signal, to the VM process this test just looked up.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGTERM) }, 0);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(listed(&lib, "signalled"), ("running".to_string(), Some(pid)));
    // SIGUSR1 powers it off, cleanly: its log says no more than that.
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGUSR1) }, 0);
    wait_for("the VM to be off", || listed(&lib, "signalled").0 == "off");
    assert!(vessel::vmhost::client::last_log_line(&root_of(&lib, "signalled")).is_none());
}
