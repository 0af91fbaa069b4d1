//! The journal guest (`test=journal`): what it prints and what its disk holds, and the
//! VM's state as `vessel list` says it, for the snapshot, suspend and backup tests.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::json;

/// One line of the journal guest: tick, boot id, checksum.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub tick: u64,
    pub boot: u64,
    pub sum: u64,
}

/// The complete "JOURNAL" lines printed.
pub fn journal(output: &str) -> Vec<Entry> {
    let complete = &output[..output.rfind('\n').map_or(0, |i| i + 1)];
    complete
        .lines()
        .filter_map(|l| {
            let mut words = l.trim().strip_prefix("JOURNAL ")?.split(' ');
            let mut next = || u64::from_str_radix(words.next()?.trim(), 16).ok();
            Some(Entry { tick: next()?, boot: next()?, sum: next()? })
        })
        .collect()
}

/// The guest's checksum after `tick` ticks.
pub fn sum_after(tick: u64) -> u64 {
    (1..=tick).fold(0u64, |sum, t| sum.wrapping_mul(31).wrapping_add(t))
}

/// Each 512-byte sector of a raw image as the guest wrote it (none: never written).
pub fn sectors(raw: &[u8]) -> Vec<Option<Entry>> {
    raw.chunks(512)
        .map(|s| {
            let word = |i: usize| u64::from_le_bytes(s[i..i + 8].try_into().unwrap());
            (word(0) != 0).then(|| Entry { tick: word(0), boot: word(8), sum: word(16) })
        })
        .collect()
}

/// What the VM's disk reads as now, through its snapshots' images (qemu-img's reading).
pub fn disk_now(lib: &Path, name: &str) -> Vec<u8> {
    let vm = json(lib, &["show", name, "--json"]);
    let folder = PathBuf::from(vm["path"].as_str().unwrap());
    let disk = folder.join(vm["disks"][0]["file"].as_str().unwrap());
    let format = vm["disks"][0]["format"].as_str().unwrap().to_string();
    convert(&disk, &format)
}

pub fn convert(image: &Path, format: &str) -> Vec<u8> {
    let out = image.with_extension("read.raw");
    let status = Command::new("qemu-img")
        .args(["convert", "-f", format, "-O", "raw"])
        .arg(image)
        .arg(&out)
        .status()
        .expect("qemu-img is needed: apt-get install qemu-utils");
    assert!(status.success(), "qemu-img convert {}", image.display());
    let bytes = std::fs::read(&out).unwrap();
    let _ = std::fs::remove_file(out);
    bytes
}

pub fn state_of(lib: &Path, name: &str) -> String {
    let list = json(lib, &["list", "--json"]);
    let vm = list.as_array().unwrap().iter().find(|v| v["name"] == name).unwrap().clone();
    vm["state"].as_str().unwrap().to_string()
}

pub fn wait_state(lib: &Path, name: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while state_of(lib, name) != want {
        assert!(Instant::now() < deadline, "{name} never became {want}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
