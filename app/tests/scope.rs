//! A VM process in a control group of its own where the host has a systemd user session:
//! a transient scope whose memory limit the kernel enforces (guest RAM + the VM process's
//! allowance), holding the helper too, gone when the VM stops. Where systemd-run cannot
//! make one the VM runs all the same and its log says why.
//!
//! The test brings its own user manager where none answers: `systemd --user` in a
//! control group of its own (it takes over the one it starts in) and a mount namespace
//! where /run/systemd/system exists (it refuses to run as a user instance without it).
//! Without systemd, or as a user without a session, the test says so and checks nothing.

mod common;
use common::{KillsVms, scratch, text};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use vessel::vmhost::scope::{OVERHEAD, UNIT_PREFIX};
use vessel_tests::testguest_elf;

/// `vessel` with the user session's runtime folder and `path` as PATH.
fn vessel(runtime: &Path, path: &OsString, lib: &Path, args: &[&str]) -> Output {
    common::vessel_with(&[("XDG_RUNTIME_DIR", runtime.as_os_str()), ("PATH", path)], lib, args)
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A systemd user manager of the test's own, ended (and its control groups removed) when
/// dropped.
struct UserManager {
    pid: i32,
    groups: Vec<PathBuf>,
}

impl UserManager {
    /// Starts one with `runtime` as its XDG_RUNTIME_DIR; None (and why) where it cannot.
    fn start(runtime: &Path) -> Result<UserManager, String> {
        let systemd = ["/lib/systemd/systemd", "/usr/lib/systemd/systemd"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .ok_or("systemd is not installed")?;
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("a user manager of the test's own needs root".into());
        }
        // A control group of its own in each hierarchy systemd uses.
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let name = format!("vessel-test-{}", std::process::id());
        let groups: Vec<PathBuf> = (mounts.lines())
            .filter_map(|line| {
                let (left, right) = line.split_once(" - ")?;
                let mut right = right.split(' ');
                let (fs, opts) = (right.next()?, right.nth(1).unwrap_or(""));
                let ours = fs == "cgroup2"
                    || (fs == "cgroup"
                        && (opts.split(','))
                            .any(|o| ["name=systemd", "memory", "pids"].contains(&o)));
                let point = left.split(' ').nth(4)?;
                ours.then(|| PathBuf::from(point).join(&name))
            })
            .collect();
        for group in &groups {
            std::fs::create_dir_all(group).map_err(|e| format!("{}: {e}", group.display()))?;
        }
        std::fs::create_dir_all(runtime).unwrap();
        let join: String =
            groups.iter().map(|g| format!("echo $$ > {}/cgroup.procs && ", g.display())).collect();
        let script = format!(
            "{join} mkdir -p /run/systemd && exec unshare --mount --propagation private sh -c \
             'mount -t tmpfs tmpfs /run/systemd && mkdir /run/systemd/system && exec {} --user'",
            systemd.display()
        );
        let child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .env("XDG_RUNTIME_DIR", runtime)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("sh: {e}"))?;
        let manager = UserManager { pid: child.id() as i32, groups };
        let private = runtime.join("systemd/private");
        wait_for("the user manager", || std::os::unix::net::UnixStream::connect(&private).is_ok());
        Ok(manager)
    }
}

impl Drop for UserManager {
    fn drop(&mut self) {
        // SAFETY: kill(2) of the manager this test started.
        unsafe { libc::kill(self.pid, libc::SIGKILL) };
        for group in &self.groups {
            // What is left below: the manager's own groups, once empty.
            for _ in 0..100 {
                let mut dirs: Vec<PathBuf> = walk(group);
                dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
                dirs.iter().for_each(|d| drop(std::fs::remove_dir(d)));
                if !group.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// `dir` and every folder below it.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut all = vec![dir.to_path_buf()];
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            all.extend(walk(&entry.path()));
        }
    }
    all
}

/// The memory limit on process `pid`'s group, read from the kernel's files.
fn memory_limit(pid: u32) -> Option<u64> {
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mount_of = |want: &dyn Fn(&str, &str) -> bool| {
        mounts.lines().find_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mut right = right.split(' ');
            let (fs, opts) = (right.next()?, right.nth(1).unwrap_or(""));
            want(fs, opts).then(|| PathBuf::from(left.split(' ').nth(4).unwrap()))
        })
    };
    for line in cgroups.lines() {
        let mut fields = line.splitn(3, ':').skip(1);
        let (controllers, path) = (fields.next()?, fields.next()?.trim_start_matches('/'));
        let file = if controllers.is_empty() {
            mount_of(&|fs, _| fs == "cgroup2")?.join(path).join("memory.max")
        } else if controllers.split(',').any(|c| c == "memory") {
            let v1 = mount_of(&|fs, opts| fs == "cgroup" && opts.split(',').any(|o| o == "memory"));
            v1?.join(path).join("memory.limit_in_bytes")
        } else {
            continue;
        };
        if let Some(limit) = std::fs::read_to_string(file).ok().and_then(|t| t.trim().parse().ok())
        {
            return Some(limit);
        }
    }
    None
}

/// The last part of process `pid`'s control group path (its unit, under systemd).
fn unit_of(pid: u32) -> String {
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let line = (cgroups.lines().find(|l| l.starts_with("0::")))
        .or_else(|| cgroups.lines().find(|l| l.contains(":name=systemd:")))
        .unwrap();
    line.rsplit('/').next().unwrap().to_string()
}

/// The pids whose parent is `pid`.
fn children(pid: u32) -> Vec<u32> {
    (std::fs::read_dir("/proc").unwrap().flatten())
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| {
            let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
            // The parent's pid is the second field after the command's closing parenthesis.
            let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
            after.split_whitespace().nth(1) == Some(&pid.to_string())
        })
        .collect()
}

#[test]
fn a_vm_process_has_a_scope_with_a_memory_limit_of_its_own() {
    let lib = scratch("scope");
    let session = scratch("scope-session");
    // A live user session: the one the test runs in, else one of the test's own.
    let ambient = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from);
    let live = |dir: &Path| std::os::unix::net::UnixStream::connect(dir.join("systemd/private"));
    let (runtime, _manager) = match ambient.filter(|dir| live(dir).is_ok()) {
        Some(runtime) => (runtime, None),
        None => {
            let runtime = session.join("runtime");
            match UserManager::start(&runtime) {
                Ok(manager) => (runtime, Some(manager)),
                Err(why) => {
                    eprintln!("skipped: no systemd user session to test with: {why}");
                    return;
                }
            }
        }
    };
    // Dropped before the manager: no VM left in its groups.
    let _kills = KillsVms(lib.clone());
    let path = std::env::var_os("PATH").unwrap_or_default();
    let kernel = testguest_elf();
    let out = vessel(
        &runtime,
        &path,
        &lib,
        &[
            "create",
            "Scoped VM",
            "--kernel",
            kernel.to_str().unwrap(),
            "--cmdline",
            "test=echo",
            "--memory",
            "64M",
            "--disk-size",
            "8M",
            "--no-net",
        ],
    );
    assert!(out.status.success(), "create: {}", text(&out.stderr));
    let pid_of = |lib: &Path| {
        let out = vessel(&runtime, &path, lib, &["list", "--json"]);
        let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let vm = list.as_array().unwrap().iter().find(|v| v["name"] == "Scoped VM").cloned();
        vm.and_then(|vm| vm["pid"].as_str().map(|p| p.parse::<u32>().unwrap()))
    };
    let out = vessel(&runtime, &path, &lib, &["list", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let log = PathBuf::from(list[0]["path"].as_str().unwrap()).join("vessel.log");

    // Started with a user session: a scope of its own, with the limit enforced.
    let out = vessel(&runtime, &path, &lib, &["start", "--detach", "Scoped VM"]);
    assert!(out.status.success(), "start: {}", text(&out.stderr));
    let pid = pid_of(&lib).expect("a running VM has a pid");
    let unit = unit_of(pid);
    assert!(unit.starts_with(&format!("{UNIT_PREFIX}Scoped_VM-")), "{unit}");
    assert!(unit.ends_with(".scope"), "{unit}");
    let limit = (64 << 20) + OVERHEAD;
    assert_eq!(memory_limit(pid), Some(limit), "the kernel's limit on {unit}");
    assert_eq!(self::systemctl(&runtime, &["show", "-P", "MemoryMax", &unit]), limit.to_string());
    let said = std::fs::read_to_string(&log).unwrap();
    let expect = format!("in scope {unit}; memory limit {} MiB: 64 MiB of guest RAM", limit >> 20);
    assert!(said.contains(&expect), "{said}");
    // The helper (and with it passt) shares it.
    let helpers = children(pid);
    assert!(!helpers.is_empty(), "the VM process has its helper");
    for helper in helpers {
        assert_eq!(unit_of(helper), unit, "the helper {helper} is in the VM's scope");
    }
    // Stopped: the scope goes.
    let out = vessel(&runtime, &path, &lib, &["stop", "--force", "Scoped VM"]);
    assert!(out.status.success(), "stop: {}", text(&out.stderr));
    wait_for("the scope to go", || {
        let state = self::systemctl(&runtime, &["show", "-P", "ActiveState", &unit]);
        state == "inactive" || state.is_empty()
    });

    // systemd-run fails: the VM runs all the same, without a scope, and says why.
    let fake = session.join("fake-bin");
    std::fs::create_dir_all(&fake).unwrap();
    let fake_run = fake.join("systemd-run");
    std::fs::write(
        &fake_run,
        "#!/bin/sh\necho 'Failed to start transient scope unit: no' >&2\nexit 1\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake_run, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut faked = fake.into_os_string();
    faked.push(":");
    faked.push(&path);
    let out = vessel(&runtime, &faked, &lib, &["start", "--detach", "Scoped VM"]);
    assert!(out.status.success(), "start without a scope: {}", text(&out.stderr));
    let pid = pid_of(&lib).expect("a running VM has a pid");
    assert!(!unit_of(pid).starts_with(UNIT_PREFIX), "{}", unit_of(pid));
    let said = std::fs::read_to_string(&log).unwrap();
    let expect = "no scope of its own, no memory limit: systemd-run could not make scope \
                  vessel-Scoped_VM-";
    assert!(said.contains(expect), "{said}");
    assert!(said.contains("Failed to start transient scope unit: no"), "{said}");
    let out = vessel(&runtime, &faked, &lib, &["stop", "--force", "Scoped VM"]);
    assert!(out.status.success(), "stop: {}", text(&out.stderr));

    // No user session: the same, and the log names what is missing.
    let none = session.join("no-session");
    std::fs::create_dir_all(&none).unwrap();
    let out = vessel(&none, &path, &lib, &["start", "--detach", "Scoped VM"]);
    assert!(out.status.success(), "start with no session: {}", text(&out.stderr));
    let said = std::fs::read_to_string(&log).unwrap();
    let expect = format!(
        "no scope of its own, no memory limit: no systemd user manager answers at {}",
        none.join("systemd/private").display()
    );
    assert!(said.contains(&expect), "{said}");
    let out = vessel(&none, &path, &lib, &["stop", "--force", "Scoped VM"]);
    assert!(out.status.success(), "stop: {}", text(&out.stderr));
    drop(_manager);
    let _ = std::fs::remove_dir_all(&session);
}

fn systemctl(runtime: &Path, args: &[&str]) -> String {
    let out = Command::new("systemctl")
        .env("XDG_RUNTIME_DIR", runtime)
        .arg("--user")
        .args(args)
        .output()
        .unwrap();
    text(&out.stdout).trim().to_string()
}
