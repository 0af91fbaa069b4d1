//! A VM process's own control group, where the host has a systemd user session: the
//! launcher starts it through `systemd-run --user --scope`, a transient scope unit with
//! `MemoryMax` = guest RAM + `OVERHEAD`. The VM process and its children (the helper,
//! passt) are accounted and limited together, and it is this VM the kernel's OOM killer
//! ends when it runs over, not another VM or the window. Without a user session it runs
//! in its starter's group; its log says so (`Placement`).

use std::path::{Path, PathBuf};
use std::process::Command;

/// What a VM process may use beyond its guest's RAM: the GPU's resources (256 MiB at
/// most, `GpuLimits`), the VGA's 16 MiB, the frames it shares with the window, passt,
/// and the program itself; the page cache of its disks is reclaimed before the limit.
pub const OVERHEAD: u64 = 512 << 20;

/// The name the launcher gives a VM process's scope starts with this.
pub const UNIT_PREFIX: &str = "vessel-";

/// Why a VM process gets no scope of its own.
#[derive(Debug, thiserror::Error)]
pub enum Unavailable {
    #[error("XDG_RUNTIME_DIR is not set, so there is no systemd user session to ask")]
    NoRuntimeDir,
    #[error("no systemd user manager answers at {}", .0.display())]
    NoUserManager(PathBuf, #[source] std::io::Error),
    #[error("systemd-run is not installed (Debian: apt install systemd)")]
    NoSystemdRun,
}

/// A transient scope for one VM process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub unit: String,
    pub memory_max: u64,
    description: String,
    systemd_run: PathBuf,
}

impl Scope {
    /// A scope for VM `name` with `memory_mib` of guest RAM, if a systemd user manager
    /// answers (its private socket in `$XDG_RUNTIME_DIR`) and `systemd-run` is at hand.
    pub fn plan(name: &str, memory_mib: u64) -> Result<Scope, Unavailable> {
        let runtime = std::env::var_os("XDG_RUNTIME_DIR").ok_or(Unavailable::NoRuntimeDir)?;
        let private = Path::new(&runtime).join("systemd/private");
        std::os::unix::net::UnixStream::connect(&private)
            .map_err(|e| Unavailable::NoUserManager(private.clone(), e))?;
        let systemd_run = find_in_path("systemd-run").ok_or(Unavailable::NoSystemdRun)?;
        Ok(Scope {
            unit: unit_name(name),
            memory_max: memory_max(memory_mib),
            description: format!("Vessel VM {name}"),
            systemd_run,
        })
    }

    /// `systemd-run` starting the scope and, in it, what follows: append the program and
    /// its arguments. systemd-run runs it in its own process (the pid stays the same).
    pub fn command(&self) -> Command {
        let mut command = Command::new(&self.systemd_run);
        command
            .args(["--user", "--scope", "--quiet", "--collect"])
            .arg(format!("--unit={}", self.unit))
            .arg(format!("--description={}", self.description))
            .arg(format!("--property=MemoryMax={}", self.memory_max))
            .arg("--");
        command
    }
}

/// The limit for a guest of `memory_mib` MiB.
pub fn memory_max(memory_mib: u64) -> u64 {
    memory_mib.saturating_mul(1 << 20).saturating_add(OVERHEAD)
}

/// A unit name for VM `name`: what systemd allows of it, and this process's id, a count
/// and the time, so that a VM started again while its last scope is still going gets a
/// new one.
fn unit_name(name: &str) -> String {
    static COUNT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let count = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let readable: String =
        (name.chars()).map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).take(64).collect();
    let nanos = (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH))
        .map_or(0, |d| d.as_nanos() as u64);
    format!("{UNIT_PREFIX}{readable}-{}-{count}-{nanos:x}.scope", std::process::id())
}

fn find_in_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(program)).find(|p| {
        use std::os::unix::fs::PermissionsExt;
        p.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

/// Where a process is: its systemd unit, if a scope Vessel made, and the memory limit
/// the kernel enforces on its group, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub unit: Option<String>,
    pub memory_limit: Option<u64>,
}

impl Placement {
    /// This process's.
    pub fn of_this_process() -> Placement {
        let cgroups = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        Placement::read(&cgroups, &mounts, |p| std::fs::read_to_string(p).ok())
    }

    /// From `/proc/PID/cgroup` and `/proc/PID/mountinfo`, reading limits with `read`.
    pub fn read(cgroups: &str, mounts: &str, read: impl Fn(&Path) -> Option<String>) -> Placement {
        let groups: Vec<(&str, &str)> = (cgroups.lines())
            .filter_map(|line| {
                let mut fields = line.splitn(3, ':');
                let _id = fields.next()?;
                Some((fields.next()?, fields.next()?))
            })
            .collect();
        // The unit: the last part of the unified (or systemd's named) hierarchy's path.
        let unit = (groups.iter())
            .find(|(c, _)| c.is_empty())
            .or_else(|| groups.iter().find(|(c, _)| *c == "name=systemd"))
            .and_then(|(_, path)| path.rsplit('/').next())
            .filter(|last| last.starts_with(UNIT_PREFIX) && last.ends_with(".scope"))
            .map(str::to_string);
        let limit = |file: &Path| {
            let text = read(file)?;
            let value = text.trim().parse::<u64>().ok()?;
            // cgroup v1 says "no limit" with a huge number, v2 with "max".
            (value < 1 << 62).then_some(value)
        };
        let v1 = (groups.iter()).find(|(c, _)| c.split(',').any(|c| c == "memory")).and_then(
            |(_, path)| {
                let mount = mount_point(mounts, |fs, opts| {
                    fs == "cgroup" && opts.split(',').any(|o| o == "memory")
                })?;
                limit(&mount.join(path.trim_start_matches('/')).join("memory.limit_in_bytes"))
            },
        );
        let v2 = (groups.iter()).find(|(c, _)| c.is_empty()).and_then(|(_, path)| {
            let mount = mount_point(mounts, |fs, _| fs == "cgroup2")?;
            limit(&mount.join(path.trim_start_matches('/')).join("memory.max"))
        });
        Placement { unit, memory_limit: v2.or(v1) }
    }
}

/// The mount point of the first mount whose file system type and super options match.
fn mount_point(mountinfo: &str, matches: impl Fn(&str, &str) -> bool) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let mut right = right.split(' ');
        let (fs, _source, opts) = (right.next()?, right.next()?, right.next().unwrap_or(""));
        let point = left.split(' ').nth(4)?;
        matches(fs, opts).then(|| PathBuf::from(point.replace("\\040", " ")))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn a_scope_and_its_v1_limit_are_found() {
        let cgroups = "\
9:name=systemd:/user.slice/app.slice/vessel-Demo-12-abc.scope
4:memory:/user.slice/app.slice/vessel-Demo-12-abc.scope
0::/user.slice/app.slice/vessel-Demo-12-abc.scope
";
        let placement = Placement::read(cgroups, HYBRID, |p| {
            (p == Path::new(
                "/sys/fs/cgroup/memory/user.slice/app.slice/vessel-Demo-12-abc.scope/memory.limit_in_bytes",
            ))
            .then(|| "2684354560\n".to_string())
        });
        assert_eq!(placement.unit.as_deref(), Some("vessel-Demo-12-abc.scope"));
        assert_eq!(placement.memory_limit, Some(2684354560));
    }

    #[test]
    fn a_v2_limit_wins_and_max_is_none() {
        let mounts = "24 1 0:21 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";
        let cgroups = "0::/user.slice/vessel-x-1-2.scope\n";
        let read = |value: &'static str| {
            move |p: &Path| {
                (p == Path::new("/sys/fs/cgroup/user.slice/vessel-x-1-2.scope/memory.max"))
                    .then(|| value.to_string())
            }
        };
        let limited = Placement::read(cgroups, mounts, read("1048576\n"));
        assert_eq!(limited.memory_limit, Some(1 << 20));
        assert_eq!(limited.unit.as_deref(), Some("vessel-x-1-2.scope"));
        assert_eq!(Placement::read(cgroups, mounts, read("max\n")).memory_limit, None);
    }

    #[test]
    fn another_group_is_no_scope_of_ours_and_unlimited_v1_is_none() {
        let cgroups = "9:name=systemd:/\n4:memory:/process_api/f5e6\n0::/\n";
        let placement =
            Placement::read(cgroups, HYBRID, |_| Some("9223372036854771712\n".to_string()));
        assert_eq!(placement, Placement { unit: None, memory_limit: None });
    }

    #[test]
    fn unit_names_are_what_systemd_takes_and_differ() {
        let a = unit_name("Demo Linux/../ü");
        assert!(a.starts_with("vessel-Demo_Linux_____-"), "{a}");
        assert!(a.ends_with(".scope"));
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)), "{a}");
        assert_ne!(a, unit_name("Demo Linux/../ü"));
        // systemd takes names of up to 255 bytes.
        assert!(unit_name(&"x".repeat(500)).len() < 128);
    }

    #[test]
    fn the_limit_is_the_guests_ram_and_the_overhead() {
        assert_eq!(memory_max(2048), (2048 << 20) + OVERHEAD);
        assert_eq!(memory_max(u64::MAX), u64::MAX);
        let scope = Scope {
            unit: "vessel-a-1-2.scope".into(),
            memory_max: memory_max(64),
            description: "Vessel VM a".into(),
            systemd_run: "/usr/bin/systemd-run".into(),
        };
        let command = scope.command();
        let args: Vec<_> = command.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        assert_eq!(command.get_program(), "/usr/bin/systemd-run");
        assert!(args.starts_with(&["--user".into(), "--scope".into()]), "{args:?}");
        assert!(args.contains(&format!("--property=MemoryMax={}", (64 << 20) + OVERHEAD)));
        assert!(args.contains(&"--unit=vessel-a-1-2.scope".to_string()));
        assert_eq!(args.last().map(String::as_str), Some("--"));
    }
}
