//! A VM made from a disc that is not Linux boots through the BIOS (SeaBIOS): `vessel
//! start` shows the firmware's screen, mirrored to the serial console, on the terminal,
//! and the disc's boot image runs.

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;
use common::vessel;

#[test]
fn a_vm_from_a_non_linux_disc_boots_it_through_the_bios() {
    let dir = std::env::temp_dir().join(format!("vessel-bios-boot-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let iso = vessel_tests::firmware_hello_iso(&dir);
    let lib = dir.join("library");
    let out =
        vessel(&lib, &["create", "hello", "--iso", iso.to_str().unwrap(), "--disk-size", "0"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = vessel(&lib, &["--json", "show", "hello"]);
    let vm: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(vm["boot"]["kind"], "bios", "{vm}");

    let mut start = Command::new(env!("CARGO_BIN_EXE_vessel"))
        .arg("--library")
        .arg(&lib)
        .args(["start", "hello"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = start.stdout.take().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 256];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    // The boot image halts: the VM runs until it is stopped. Wait for its last word
    // (SeaBIOS's own lines interleave with its bytes), then power it off the way a user
    // would from another terminal.
    let deadline = Instant::now() + Duration::from_secs(120);
    while !String::from_utf8_lossy(&seen.lock().unwrap()).contains("I!") {
        assert!(
            Instant::now() < deadline,
            "no boot image output in 120 s: {:?}",
            String::from_utf8_lossy(&seen.lock().unwrap())
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = vessel(&lib, &["stop", "hello", "--force"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let status = start.wait().unwrap();
    reader.join().unwrap();
    let seen = String::from_utf8_lossy(&seen.lock().unwrap()).into_owned();
    let mut stderr = String::new();
    start.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert!(seen.contains("SeaBIOS (version"), "the firmware's banner: {seen:?}\n{stderr}");
    let after = &seen[seen.find("Booting from DVD/CD").expect("it boots the disc")..];
    let said: String = after.chars().filter(|c| "HI!".contains(*c)).take(3).collect();
    assert_eq!(said, "HI!", "the disc's boot image ran: {seen:?}");
    assert_eq!(status.code(), Some(5), "powered off on request: {stderr}");
    let _ = std::fs::remove_dir_all(dir);
}
