//! Shared by the CLI tests: running `vessel` against a library folder.

// Each test binary compiles this module and uses a part of it.
#![allow(dead_code)]

pub mod journal;

use std::path::Path;
use std::process::{Command, Output, Stdio};

/// An empty folder for test `name` of this process.
pub fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("vessel-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Kills, when dropped, every VM process of library `0` still running: a test that fails
/// half-way leaves no guest spinning on for the tests after it. Then removes the folder.
pub struct KillsVms(pub std::path::PathBuf);

impl Drop for KillsVms {
    fn drop(&mut self) {
        let library = self.0.as_os_str().as_encoded_bytes();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
            let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
            let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
            let ours = args.windows(2).any(|w| w[0] == b"--library" && w[1] == library);
            if ours && args.first().is_some_and(|a| a.ends_with(b"vessel-vm")) {
                // SAFETY: kill(2) of a process of this library's VMs.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `vessel --library LIB ARGS...` with no input.
pub fn vessel(lib: &Path, args: &[&str]) -> Output {
    vessel_with(&[], lib, args)
}

/// `vessel`, with these environment variables set.
pub fn vessel_with(env: &[(&str, &std::ffi::OsStr)], lib: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vessel"))
        .envs(env.iter().copied())
        .arg("--library")
        .arg(lib)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Bytes a process wrote, as text.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `vessel --library LIB ARGS...`'s JSON output; it must succeed.
pub fn json(lib: &Path, args: &[&str]) -> serde_json::Value {
    let out = vessel(lib, args);
    assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `vessel --library LIB start NAME` running, its terminal output collected as it comes.
pub struct Started {
    child: std::process::Child,
    keys: Option<std::process::ChildStdin>,
    seen: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Started {
    pub fn new(lib: &Path, name: &str) -> Started {
        Self::spawn(lib, name, false)
    }

    /// As `new`, with a keyboard: `type_keys` writes to its terminal input.
    pub fn with_keys(lib: &Path, name: &str) -> Started {
        Self::spawn(lib, name, true)
    }

    /// Types `bytes` on its terminal.
    pub fn type_keys(&mut self, bytes: &[u8]) {
        use std::io::Write;
        let keys = self.keys.as_mut().expect("started with_keys");
        keys.write_all(bytes).unwrap();
        keys.flush().unwrap();
    }

    fn spawn(lib: &Path, name: &str, keys: bool) -> Started {
        use std::io::Read;
        let mut child = Command::new(env!("CARGO_BIN_EXE_vessel"))
            .arg("--library")
            .arg(lib)
            .args(["start", name])
            .stdin(if keys { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
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
        let keys = child.stdin.take();
        Started { child, keys, seen, reader: Some(reader) }
    }

    /// What it printed so far.
    pub fn seen(&self) -> String {
        String::from_utf8_lossy(&self.seen.lock().unwrap()).into_owned()
    }

    /// Waits until `done` holds for the output or the process ended; false if `timeout`
    /// passed first.
    pub fn wait_until(
        &mut self,
        timeout: std::time::Duration,
        done: impl Fn(&str) -> bool,
    ) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        while !done(&self.seen()) {
            if std::time::Instant::now() > deadline {
                return false;
            }
            if self.child.try_wait().unwrap().is_some() {
                return done(&self.seen());
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        true
    }

    /// Waits for the process to end: its exit status, all it printed and its stderr.
    pub fn finish(mut self) -> (std::process::ExitStatus, String, String) {
        use std::io::Read;
        let status = self.child.wait().unwrap();
        if let Some(reader) = self.reader.take() {
            reader.join().unwrap();
        }
        let mut stderr = String::new();
        self.child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
        (status, self.seen(), stderr)
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The ticks the test guest printed so far ("TICK <hex>" lines), complete ones.
pub fn ticks(output: &str) -> Vec<u64> {
    let complete = &output[..output.rfind('\n').map_or(0, |i| i + 1)];
    complete
        .lines()
        .filter_map(|l| l.trim().strip_prefix("TICK "))
        .filter_map(|t| u64::from_str_radix(t.trim(), 16).ok())
        .collect()
}
