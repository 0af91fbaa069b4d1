//! `vessel run` as a user runs it: exit statuses, errors on one line, the serial console.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use vessel_tests::testguest_elf;

fn vessel(args: &[&str], input: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vessel"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

fn run_guest(test: &str, extra: &[&str], input: &[u8]) -> Output {
    let kernel = testguest_elf();
    let cmdline = format!("test={test}");
    let mut args = vec![
        "run",
        "--kernel",
        kernel.to_str().unwrap(),
        "--cmdline",
        &cmdline,
        "--memory",
        "128M",
    ];
    args.extend_from_slice(extra);
    vessel(&args, input)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn help_lists_run() {
    let out = vessel(&["--help"], b"");
    assert!(out.status.success());
    assert!(stdout(&out).contains("run"), "{}", stdout(&out));
    let out = vessel(&["run", "--help"], b"");
    assert!(stdout(&out).contains("Ctrl-A x"), "the escape key is documented");
}

#[test]
fn guest_power_off_exits_zero() {
    let out = run_guest("boot", &["--cpus", "2"], b"");
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("CPUS 0000000000000002"));
    assert!(stdout(&out).contains("DONE"));
}

#[test]
fn serial_input_reaches_the_guest() {
    let out = run_guest("echo", &[], b"typed into vessel\nq");
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("typed into vessel"), "{}", stdout(&out));
}

#[test]
fn crash_and_reboot_have_their_own_statuses() {
    let out = run_guest("triple", &[], b"");
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("triple fault"), "{}", stderr(&out));
    let out = run_guest("reboot-cf9", &["--no-reboot"], b"");
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
}

#[test]
fn bad_input_gets_one_clear_line() {
    let out = vessel(&["run", "--kernel", "/no/such/vmlinuz"], b"");
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("/no/such/vmlinuz") && err.contains("vessel: error:"), "{err}");

    let not_a_kernel = env!("CARGO_MANIFEST_DIR").to_string() + "/Cargo.toml";
    let out = vessel(&["run", "--kernel", &not_a_kernel], b"");
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("is not a kernel"), "{}", stderr(&out));
    assert_eq!(stderr(&out).trim().lines().count(), 1);

    let out = vessel(&["run", "--kernel", &not_a_kernel, "--memory", "lots"], b"");
    assert_eq!(out.status.code(), Some(2), "usage errors are status 2");
    let out = vessel(&["run", "--kernel", &not_a_kernel, "--cpus", "0"], b"");
    assert_eq!(out.status.code(), Some(2));

    let kernel = testguest_elf();
    let out = vessel(&["run", "--kernel", kernel.to_str().unwrap(), "--memory", "4M"], b"");
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("too small"), "{}", stderr(&out));
}

#[test]
fn vhost_user_verb() {
    let out = vessel(&["vhost-user", "--help"], b"");
    assert!(stdout(&out).contains("vhost-user-blk-pci"), "the help shows how QEMU connects");
    let out = vessel(&["vhost-user", "--socket", "/tmp/x.sock"], b"");
    assert_eq!(out.status.code(), Some(2), "a device must be named");
    let out = vessel(&["vhost-user", "--socket", "/tmp/x.sock", "--blk", "/no/such/disk.raw"], b"");
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("/no/such/disk.raw"), "{}", stderr(&out));
    let out =
        vessel(&["vhost-user", "--socket", "/tmp/x.sock", "--rng", "--forward", "tcp:1:2"], b"");
    assert_eq!(out.status.code(), Some(2), "port forwards belong to a network card");
    assert!(stderr(&out).contains("--forward needs --net"), "{}", stderr(&out));
    let out = vessel(&["vhost-user", "--socket", "/tmp/x.sock", "--net", "--rng"], b"");
    assert_eq!(out.status.code(), Some(2), "one device per socket");
}
