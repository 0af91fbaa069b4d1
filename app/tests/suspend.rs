//! `vessel suspend`: a running VM's state and memory saved in its folder by its VM process
//! (inside its sandbox), the process ended; the next `vessel start` resumes it where it
//! was, then lets the saved state go.

mod common;

use std::time::Duration;

use common::journal::state_of;
use common::{Started, text, ticks, vessel};
use vessel_tests::testguest_elf;

/// A VM "Ticker" of the test guest that counts on its serial port until it reads 'q'.
fn create_ticker(lib: &std::path::Path) {
    let kernel = testguest_elf();
    let args = ["create", "Ticker", "--kernel", kernel.to_str().unwrap(), "--cmdline"];
    let more = ["test=ticks", "--memory", "64M", "--disk-size", "8M", "--no-net"];
    let out = vessel(lib, &[&args[..], &more[..]].concat());
    assert!(out.status.success(), "create: {}", text(&out.stderr));
}

#[test]
fn a_suspended_vm_resumes_where_it_was() {
    let lib = common::scratch("suspend");
    let _vms = common::KillsVms(lib.clone());
    create_ticker(&lib);

    // A symlink planted where the suspend writes its memory: removed, never written
    // through (the file it points to, outside the VM's folder, stays as it was).
    let outside = lib.join("outside");
    std::fs::write(&outside, b"not the guest's").unwrap();
    let folder = lib.join("Ticker.vessel");
    std::os::unix::fs::symlink(&outside, folder.join("suspended-memory.new")).unwrap();
    let mut first = Started::new(&lib, "Ticker");
    assert!(first.wait_until(Duration::from_secs(60), |s| ticks(s).len() >= 3), "{}", first.seen());
    // A window watching it hears how far the saving of its memory is.
    let watcher = {
        use vessel::vmhost::{client, protocol};
        let mut stream = client::connect(&folder, "Ticker").unwrap();
        let subscribe =
            protocol::Request::Subscribe { serial: false, display: false, debug: false };
        protocol::send(&mut stream, &subscribe).unwrap();
        std::thread::spawn(move || {
            let mut saving = Vec::new();
            while let Ok(Some(reply)) = protocol::receive::<protocol::Reply>(&mut stream) {
                if let protocol::Reply::Saving { done, total } = reply {
                    saving.push((done, total));
                }
            }
            saving
        })
    };
    let out = vessel(&lib, &["suspend", "Ticker"]);
    assert!(out.status.success(), "suspend: {}", text(&out.stderr));
    assert!(text(&out.stdout).contains("suspended"), "{}", text(&out.stdout));
    let saving = watcher.join().unwrap();
    assert!(saving.windows(2).all(|w| w[0].0 <= w[1].0), "it only goes forward: {saving:?}");
    assert_eq!(saving.last(), Some(&(64 << 20, 64 << 20)), "all of its 64 MiB: {saving:?}");
    let (_, seen, _) = first.finish();
    let before = *ticks(&seen).last().unwrap();
    assert_eq!(state_of(&lib, "Ticker"), "suspended");
    assert!(folder.join("suspended-state").is_file() && folder.join("suspended-memory").is_file());
    assert_eq!(std::fs::read(&outside).unwrap(), b"not the guest's");
    // Guest memory is the user's alone.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(folder.join("suspended-memory")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    // Its hardware is not changed while it is suspended.
    let out = vessel(&lib, &["set", "Ticker", "vcpus=2"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("discard-state"), "{}", text(&out.stderr));

    // As after the host restarted: no process of the VM's left, and nothing of its saved
    // files in the page cache (they are read from the disk).
    for name in ["suspended-state", "suspended-memory"] {
        let file = std::fs::File::open(folder.join(name)).unwrap();
        file.sync_all().unwrap();
        use std::os::fd::AsRawFd;
        // SAFETY: advice on a file this test opened.
        let dropped =
            unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        assert_eq!(dropped, 0);
    }
    // Started again: the guest's count goes on, it does not boot again.
    let mut second = Started::with_keys(&lib, "Ticker");
    assert!(
        second.wait_until(Duration::from_secs(60), |s| ticks(s).len() >= 2),
        "{}",
        second.seen()
    );
    let after = ticks(&second.seen());
    assert!(after[0] > before && after[0] <= before + 2, "{before} then {after:?}");
    assert!(!second.seen().contains("VESSEL-TESTGUEST"), "{}", second.seen());
    // Resumed: the saved state is gone (the next start boots afresh).
    assert!(!folder.join("suspended-state").exists() && !folder.join("suspended-memory").exists());
    assert_eq!(state_of(&lib, "Ticker"), "running");
    // Its serial port takes the terminal's keys: 'q' ends the guest.
    second.type_keys(b"q");
    let (status, seen, stderr) = second.finish();
    assert!(status.success(), "{seen}\n{stderr}");
    let log = std::fs::read_to_string(folder.join("vessel.log")).unwrap_or_default();
    assert!(log.contains("resumed from its suspended state"), "{log}");
    let _ = std::fs::remove_dir_all(lib);
}

#[test]
fn a_discarded_state_boots_afresh() {
    let lib = common::scratch("suspend-discard");
    let _vms = common::KillsVms(lib.clone());
    create_ticker(&lib);
    let mut first = Started::new(&lib, "Ticker");
    assert!(first.wait_until(Duration::from_secs(60), |s| ticks(s).len() >= 3), "{}", first.seen());
    assert!(vessel(&lib, &["suspend", "Ticker"]).status.success());
    drop(first.finish());
    let out = vessel(&lib, &["discard-state", "Ticker"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(state_of(&lib, "Ticker"), "off");
    let out = vessel(&lib, &["discard-state", "Ticker"]);
    assert!(text(&out.stderr).contains("not suspended"), "{}", text(&out.stderr));
    // It boots again: the banner, then the count from 1.
    let mut second = Started::with_keys(&lib, "Ticker");
    assert!(
        second.wait_until(Duration::from_secs(60), |s| !ticks(s).is_empty()),
        "{}",
        second.seen()
    );
    assert!(second.seen().contains("VESSEL-TESTGUEST"), "{}", second.seen());
    assert_eq!(ticks(&second.seen())[0], 1);
    second.type_keys(b"q");
    drop(second.finish());
    let _ = std::fs::remove_dir_all(lib);
}

/// A saved state Vessel cannot take (another state format, cut short, damaged, or memory
/// cut short) is refused by `vessel start`, which names why and `vessel discard-state`;
/// nothing changes: the files stay as they were and the VM stays suspended. Put back, the
/// state resumes.
#[test]
fn a_state_it_cannot_take_is_refused_and_nothing_changes() {
    let lib = common::scratch("suspend-refused");
    let _vms = common::KillsVms(lib.clone());
    create_ticker(&lib);
    let mut first = Started::new(&lib, "Ticker");
    assert!(first.wait_until(Duration::from_secs(60), |s| ticks(s).len() >= 3), "{}", first.seen());
    assert!(vessel(&lib, &["suspend", "Ticker"]).status.success());
    let (_, seen, _) = first.finish();
    let before = *ticks(&seen).last().unwrap();
    let folder = lib.join("Ticker.vessel");
    let (state, memory) = (folder.join("suspended-state"), folder.join("suspended-memory"));
    let saved = std::fs::read(&state).unwrap();
    let saved_memory = std::fs::read(&memory).unwrap();
    let memory_len = saved_memory.len() as u64;

    // The header: mark, format version (u32 at 8), flags, length, CRC-32; then the writer.
    let mut other_format = saved.clone();
    other_format[8..12].copy_from_slice(&1u32.to_le_bytes());
    let mut damaged = saved.clone();
    let last = damaged.len() - 1;
    damaged[last] ^= 0x40;
    let cases: [(&str, Vec<u8>, u64, &str); 4] = [
        ("another format", other_format, memory_len, "in state format 1; this Vessel"),
        ("cut short", saved[..saved.len() / 2].to_vec(), memory_len, "cut short"),
        ("damaged", damaged, memory_len, "damaged"),
        ("memory cut short", saved.clone(), memory_len / 2, "the memory file is"),
    ];
    for (case, bytes, memory_bytes, says) in cases {
        std::fs::write(&state, &bytes).unwrap();
        std::fs::write(&memory, &saved_memory[..memory_bytes as usize]).unwrap();
        let memory_then = std::fs::read(&memory).unwrap();
        let out = vessel(&lib, &["start", "Ticker", "--detach"]);
        let error = text(&out.stderr);
        assert!(!out.status.success(), "{case}: started");
        assert!(error.contains(says) && error.contains("discard-state"), "{case}: {error}");
        assert_eq!(state_of(&lib, "Ticker"), "suspended", "{case}");
        assert!(std::fs::read(&state).unwrap() == bytes, "{case}: the state changed");
        assert!(std::fs::read(&memory).unwrap() == memory_then, "{case}: the memory changed");
    }

    // The state as it was saved: it resumes where it was.
    std::fs::write(&state, &saved).unwrap();
    std::fs::write(&memory, &saved_memory).unwrap();
    let mut second = Started::with_keys(&lib, "Ticker");
    let resumed = |s: &str| ticks(s).len() >= 2;
    assert!(second.wait_until(Duration::from_secs(60), resumed), "{}", second.seen());
    let after = ticks(&second.seen());
    assert!(after[0] > before && after[0] <= before + 2, "{before} then {after:?}");
    second.type_keys(b"q");
    let (status, seen, stderr) = second.finish();
    assert!(status.success(), "{seen}\n{stderr}");
    let _ = std::fs::remove_dir_all(lib);
}

#[test]
fn symlinks_in_place_of_a_suspended_state_are_no_suspended_state() {
    let lib = common::scratch("suspend-symlink");
    let _vms = common::KillsVms(lib.clone());
    create_ticker(&lib);
    let folder = lib.join("Ticker.vessel");
    for (name, target) in [("suspended-state", "state"), ("suspended-memory", "memory")] {
        std::fs::write(lib.join(target), b"outside the VM's folder").unwrap();
        std::os::unix::fs::symlink(lib.join(target), folder.join(name)).unwrap();
    }
    assert_eq!(state_of(&lib, "Ticker"), "off");
    // It boots afresh, reading nothing through them.
    let mut run = Started::with_keys(&lib, "Ticker");
    assert!(run.wait_until(Duration::from_secs(60), |s| !ticks(s).is_empty()), "{}", run.seen());
    assert!(run.seen().contains("VESSEL-TESTGUEST"), "{}", run.seen());
    run.type_keys(b"q");
    drop(run.finish());
    let _ = std::fs::remove_dir_all(lib);
}

#[test]
fn a_vm_that_is_not_running_cannot_be_suspended() {
    let lib = common::scratch("suspend-off");
    let out = vessel(&lib, &["create", "Idle", "--disk-size", "0", "--no-net"]);
    assert!(out.status.success(), "create: {}", text(&out.stderr));
    let out = vessel(&lib, &["suspend", "Idle"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("not running"), "{}", text(&out.stderr));
    let _ = std::fs::remove_dir_all(lib);
}
