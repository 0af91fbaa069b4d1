//! Checks a VM configuration against itself and the host. Each problem names the field
//! and says how to fix it, so the wizard and the CLI can show it next to the field.

use std::collections::HashSet;
use std::path::Path;

use crate::bundle::validate_name;
use crate::config::{Boot, Display, Network, VmConfig};

/// Least memory a VM may have.
pub const MIN_MEMORY_MIB: u64 = 64;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The configuration field, as written in vessel.toml ("vcpus", "disks[1].file").
    pub field: String,
    /// What is wrong and what to do.
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// What the host has.
#[derive(Clone, Copy, Debug)]
pub struct Host {
    pub cores: u32,
    pub memory_mib: u64,
}

impl Host {
    /// This machine: its online CPUs and its RAM (MemTotal).
    pub fn this() -> Host {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
        let memory_mib = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|text| {
                let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
                line.split_whitespace().nth(1)?.parse::<u64>().ok()
            })
            .map_or(u64::MAX, |kib| kib / 1024);
        Host { cores, memory_mib }
    }
}

/// Is `text` a MAC address of the form 52:54:00:12:34:56, unicast?
fn valid_mac(text: &str) -> bool {
    let parts: Vec<_> = text.split(':').collect();
    parts.len() == 6
        && parts.iter().all(|p| p.len() == 2 && u8::from_str_radix(p, 16).is_ok())
        && u8::from_str_radix(parts[0], 16).is_ok_and(|b| b & 1 == 0)
}

/// Every problem of `config`; relative paths are looked up in `bundle_root`.
pub fn validate(config: &VmConfig, bundle_root: &Path, host: &Host) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut problem =
        |field: &str, message: String| problems.push(Problem { field: field.to_string(), message });
    let readable = |path: &Path| -> Result<(), String> {
        let full = bundle_root.join(path);
        match crate::files::open_regular(&full, false) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {
                Err(format!("{} is not a file; choose a file", full.display()))
            }
            Err(e) => {
                Err(format!("cannot read {} ({e}); choose a file that exists", full.display()))
            }
        }
    };
    // The VM's own files (disks, kernel, initrd) must be inside its folder; the CD's ISO
    // may be anywhere (it is only ever read).
    let own = |path: &Path| -> Result<(), String> {
        let full = crate::files::inside(bundle_root, path).map_err(|e| e.to_string())?;
        readable(&full)
    };

    if let Err(e) = validate_name(&config.name) {
        problem("name", e.to_string());
    }
    if config.vcpus == 0 || config.vcpus > host.cores {
        problem(
            "vcpus",
            format!(
                "{} vCPUs; this computer has {} cores: choose 1 to {}",
                config.vcpus, host.cores, host.cores
            ),
        );
    }
    if config.memory_mib < MIN_MEMORY_MIB || config.memory_mib > host.memory_mib {
        problem(
            "memory_mib",
            format!(
                "{} MiB; choose from {MIN_MEMORY_MIB} MiB to this computer's {} MiB",
                config.memory_mib, host.memory_mib
            ),
        );
    }
    if let Boot::Direct { kernel, initrd, .. } = &config.boot.value {
        if let Err(e) = own(kernel) {
            problem("boot.kernel", e);
        }
        if let Some(initrd) = initrd
            && let Err(e) = own(initrd)
        {
            problem("boot.initrd", e);
        }
    }
    if config.boot.value == Boot::Cdrom && config.cdrom.iso.is_none() {
        problem("boot", "boots from the CD drive, but no ISO is in it; set cdrom.iso".into());
    }
    let mut files = HashSet::new();
    for (i, disk) in config.disks.iter().enumerate() {
        if disk.size_bytes == 0 || !disk.size_bytes.is_multiple_of(1 << 20) {
            problem(
                &format!("disks[{i}].size_bytes"),
                "give the size in whole MiB, at least 1 MiB".into(),
            );
        }
        if let Err(e) = own(&disk.file) {
            problem(&format!("disks[{i}].file"), e);
        }
        if !files.insert(&disk.file) {
            problem(
                &format!("disks[{i}].file"),
                format!("{} is attached twice; remove one", disk.file.display()),
            );
        }
    }
    if let Some(iso) = &config.cdrom.iso
        && let Err(e) = readable(iso)
    {
        problem("cdrom.iso", e);
    }
    if let Network::Nat { mac, forwards, .. } = &config.network.value {
        if !valid_mac(mac) {
            problem(
                "network.mac",
                format!("{mac:?} is not a unicast MAC address like 52:54:00:12:34:56"),
            );
        }
        let mut host_ports = HashSet::new();
        for (i, f) in forwards.iter().enumerate() {
            if f.host == 0 || f.guest == 0 {
                problem(&format!("network.forwards[{i}]"), "ports run from 1 to 65535".into());
            }
            if !host_ports.insert((f.udp, f.host)) {
                problem(
                    &format!("network.forwards[{i}]"),
                    format!("host port {} is forwarded twice; remove one", f.host),
                );
            }
        }
    }
    if let Display::Fixed { width, height } = config.display.value
        && !((320..=8192).contains(&width) && (200..=8192).contains(&height))
    {
        problem("display", format!("{width}x{height}; choose from 320x200 to 8192x8192"));
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::full;
    use crate::config::{Cdrom, Forward};
    use std::path::PathBuf;

    const HOST: Host = Host { cores: 4, memory_mib: 8192 };

    fn bundle_with_files() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("vessel-validate-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("boot")).unwrap();
        std::fs::create_dir_all(dir.join("disks")).unwrap();
        for f in ["boot/vmlinuz", "boot/initrd.gz", "disks/system.qcow2", "disks/data.raw"] {
            std::fs::write(dir.join(f), b"x").unwrap();
        }
        dir
    }

    fn fields(problems: &[Problem]) -> Vec<&str> {
        problems.iter().map(|p| p.field.as_str()).collect()
    }

    #[test]
    fn a_good_config_has_no_problems() {
        let dir = bundle_with_files();
        let mut config = full();
        config.cdrom = Cdrom::default();
        assert_eq!(validate(&config, &dir, &HOST), []);
    }

    #[test]
    fn each_problem_names_its_field_and_the_fix() {
        let dir = bundle_with_files();
        let mut config = full();
        config.name = String::new();
        config.vcpus = 5;
        config.memory_mib = 16384;
        config.disks[1].file = "disks/system.qcow2".into();
        config.disks[0].size_bytes = 1000;
        config.cdrom.iso = Some("/no/such.iso".into());
        if let Network::Nat { mac, forwards, .. } = &mut config.network.value {
            *mac = "53:54:00:12:34:56".into(); // multicast
            forwards.push(Forward { udp: false, address: None, host: 2222, guest: 80 });
        }
        config.display = Display::Fixed { width: 10, height: 10 }.into();
        let problems = validate(&config, &dir, &HOST);
        assert_eq!(
            fields(&problems),
            [
                "name",
                "vcpus",
                "memory_mib",
                "disks[0].size_bytes",
                "disks[1].file",
                "cdrom.iso",
                "network.mac",
                "network.forwards[2]",
                "display"
            ]
        );
        let vcpus = &problems[1].message;
        assert!(vcpus.contains("4 cores") && vcpus.contains("1 to 4"), "{vcpus}");
        assert!(problems[5].message.contains("/no/such.iso"), "{}", problems[5]);
        let mut config = full();
        config.boot =
            Boot::Direct { kernel: "boot/missing".into(), initrd: None, cmdline: String::new() }
                .into();
        config.cdrom = Cdrom::default();
        assert_eq!(fields(&validate(&config, &dir, &HOST)), ["boot.kernel"]);
    }

    #[test]
    fn this_host_is_measured() {
        let host = Host::this();
        assert!(host.cores >= 1);
        assert!(host.memory_mib > 256 && host.memory_mib < u64::MAX, "{host:?}");
    }
}
