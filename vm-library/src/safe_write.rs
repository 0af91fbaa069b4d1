//! Crash-safe file replacement: a process killed at any point, or a machine that loses
//! power, leaves either the old file or the new one — never a torn one — and the previous
//! version stays next to it as `<name>.bak`. And the bounded reading of such small files.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// Largest configuration-like file read (a VM's config, the registry, a manifest).
pub const MAX_SMALL_FILE: u64 = 4 << 20;

/// Reads a small text file from `reader`, refusing one past `MAX_SMALL_FILE` (a file
/// replaced by something huge, or a link to a device, must not exhaust memory or hang).
pub fn read_small(reader: impl Read) -> io::Result<String> {
    let mut text = String::new();
    reader.take(MAX_SMALL_FILE + 1).read_to_string(&mut text)?;
    if text.len() as u64 > MAX_SMALL_FILE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than {} MiB; it is not one of Vessel's files", MAX_SMALL_FILE >> 20),
        ));
    }
    Ok(text)
}

/// Where the previous version of `path` is kept.
pub fn backup_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".bak");
    path.with_file_name(name)
}

/// Replaces `path` with `contents`: the new text goes to a temporary file in the same
/// folder and is synced; the old file is kept as `<name>.bak` (a second link to it, so
/// `path` itself never disappears); a rename puts the new file in place; syncing the
/// folder makes the rename durable.
pub fn replace(path: &Path, contents: &[u8]) -> io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path.file_name().ok_or_else(|| io::Error::other("no file name"))?;
    let temp = |what: &str| {
        let mut n = std::ffi::OsString::from(".");
        n.push(name);
        n.push(format!(".{what}-{}", std::process::id()));
        dir.join(n)
    };

    let new = temp("new");
    let _ = fs::remove_file(&new); // a leftover of a killed writer with a recycled pid
    // Created private and never through a symlink someone planted under the temporary name.
    let mut file = crate::files::create_private(&new)?;
    let written = file.write_all(contents).and_then(|()| file.sync_all());
    drop(file);
    if let Err(e) = written {
        let _ = fs::remove_file(&new);
        return Err(e);
    }

    if path.exists() {
        // The backup is replaced atomically too: link the current file under a temporary
        // name, then rename that over the old backup.
        let old = temp("old");
        let _ = fs::remove_file(&old);
        fs::hard_link(path, &old)?;
        fs::rename(&old, backup_path(path))?;
    }
    fs::rename(&new, path)?;
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};
    use std::time::Duration;

    fn scratch(name: &str) -> PathBuf {
        crate::test_util::scratch("safe-write", name)
    }

    /// A self-checking file of generation `n`: its length and every line depend on `n`.
    fn generation(n: u64) -> Vec<u8> {
        let mut text = format!("generation = {n}\n");
        for i in 0..(2000 + n % 3000) {
            text.push_str(&format!("line_{i} = \"{}\"\n", n.wrapping_mul(2654435761) ^ i));
        }
        text.push_str(&format!("end = {n}\n"));
        text.into_bytes()
    }

    /// The generation a file holds, if it is a whole one.
    fn check(bytes: &[u8]) -> Option<u64> {
        let text = std::str::from_utf8(bytes).ok()?;
        let n: u64 = text.lines().next()?.strip_prefix("generation = ")?.parse().ok()?;
        (bytes == generation(n).as_slice()).then_some(n)
    }

    #[test]
    fn replaces_and_keeps_the_previous_version() {
        let dir = scratch("basic");
        let path = dir.join("vessel.toml");
        replace(&path, b"one").unwrap();
        assert!(!backup_path(&path).exists(), "nothing to back up the first time");
        replace(&path, b"two").unwrap();
        replace(&path, b"three").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"three");
        assert_eq!(fs::read(backup_path(&path)).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 2, "no temporary files left: {names:?}");
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn small_reads_are_bounded() {
        assert_eq!(read_small(&b"abc"[..]).unwrap(), "abc");
        let err = read_small(io::repeat(b'x')).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn a_folder_that_cannot_be_written_loses_nothing() {
        let dir = scratch("readonly");
        let path = dir.join("vessel.toml");
        replace(&path, b"kept").unwrap();
        let err = replace(&dir.join("missing/vessel.toml"), b"x").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert_eq!(fs::read(&path).unwrap(), b"kept");
        let _ = fs::remove_dir_all(dir);
    }

    /// Not a test on its own: the child process of `a_killed_writer_never_tears_the_file`.
    #[test]
    #[ignore = "run by a_killed_writer_never_tears_the_file"]
    fn child_writer() {
        let Some(path) = std::env::var_os("VESSEL_SAFE_WRITE_TARGET") else { return };
        let path = PathBuf::from(path);
        let start = check(&fs::read(&path).unwrap()).unwrap();
        for n in start + 1.. {
            replace(&path, &generation(n)).unwrap();
        }
    }

    #[test]
    fn a_killed_writer_never_tears_the_file() {
        let dir = scratch("kill");
        let path = dir.join("vessel.toml");
        replace(&path, &generation(0)).unwrap();
        let mut last = 0;
        for round in 0..40u64 {
            let mut child = Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "safe_write::tests::child_writer",
                    "--ignored",
                    "--test-threads=1",
                ])
                .env("VESSEL_SAFE_WRITE_TARGET", &path)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            // Kill at a different moment each round.
            std::thread::sleep(Duration::from_millis(20 + (round * 37) % 90));
            child.kill().unwrap();
            child.wait().unwrap();
            let now = check(&fs::read(&path).unwrap())
                .unwrap_or_else(|| panic!("round {round}: the file is torn"));
            assert!(now >= last, "round {round}: went back from {last} to {now}");
            if let Ok(bak) = fs::read(backup_path(&path)) {
                assert!(check(&bak).is_some(), "round {round}: the backup is torn");
            }
            last = now;
        }
        assert!(last > 0, "the child wrote something");
        let _ = fs::remove_dir_all(dir);
    }
}
