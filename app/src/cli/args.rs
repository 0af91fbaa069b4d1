//! The command line's arguments (clap), and the parsers of its values.

use std::path::PathBuf;

use clap::{ArgGroup, Args, Parser, Subcommand};
use vm_library::config::{DiskFormat, Forward};

use crate::core::create::NewVm;

#[derive(Parser, Debug)]
#[command(
    name = "vessel",
    version,
    about = "Vessel: virtual machines on your Linux desktop, on KVM"
)]
pub struct Cli {
    /// The VM library folder (default: $XDG_DATA_HOME/vessel, or ~/.local/share/vessel).
    #[arg(long, global = true, value_name = "DIR", env = "VESSEL_LIBRARY")]
    pub library: Option<PathBuf>,
    /// Print results as JSON, for scripts (the library verbs and iso-info).
    #[arg(long, global = true)]
    pub json: bool,
    /// Without a command, the desktop window opens.
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Boot a Linux kernel headless, with the guest's serial console on this terminal.
    ///
    /// Keys: Ctrl-A x quits (powers the guest off), Ctrl-A s presses the ACPI power button,
    /// Ctrl-A r resets, Ctrl-A p pauses or resumes, Ctrl-A h lists these, Ctrl-A Ctrl-A
    /// sends a Ctrl-A to the guest.
    ///
    /// Exit status: 0 the guest powered off, 1 Vessel failed, 2 bad arguments, 3 the guest
    /// crashed (triple fault), 4 the guest rebooted with --no-reboot, 5 quit with Ctrl-A x.
    Run(RunArgs),
    /// Serve one of Vessel's virtio devices over vhost-user, for QEMU or another VMM.
    ///
    /// Example: vessel vhost-user --socket /tmp/blk.sock --blk disk.qcow2, then
    /// qemu-system-x86_64 ... -object memory-backend-memfd,id=m,size=1G,share=on
    /// -numa node,memdev=m -chardev socket,id=c,path=/tmp/blk.sock
    /// -device vhost-user-blk-pci,chardev=c
    VhostUser(VhostUserArgs),
    /// List the VMs in the library with their state.
    List,
    /// Create a VM in the library.
    Create(CreateArgs),
    /// Show a VM's configuration.
    Show { name: String },
    /// Start a VM in a process of its own, its serial console on this terminal (the keys
    /// and exit statuses of `vessel run`; Ctrl-A d detaches and leaves it running).
    /// --detach leaves it running in the background at once; the window shows it too.
    Start {
        name: String,
        #[arg(long)]
        detach: bool,
    },
    /// Ask a running VM to shut down (the ACPI power button); --force powers it off.
    Stop {
        name: String,
        #[arg(long)]
        force: bool,
    },
    /// Pause a running VM (its vCPUs stop; it keeps its memory).
    Pause { name: String },
    /// Save a picture of what a running VM's screen shows, pixel for pixel, as a PNG file.
    Screenshot { name: String, file: PathBuf },
    /// Resume a paused VM.
    Resume { name: String },
    /// Suspend a running VM: its whole state and memory are saved in its folder and it
    /// stops; `vessel start NAME` resumes it where it was.
    Suspend { name: String },
    /// Discard a suspended VM's saved state: it boots afresh next time (what it was doing
    /// is lost).
    DiscardState { name: String },
    /// Back up a VM, running or not, into a backup set (by default `backups/NAME` in the
    /// library): its disks at one point (a running guest pauses only while its disks
    /// switch to overlays, and runs on during the copy), in chunks stored once per set;
    /// after the first, a backup reads only what the guest wrote since. `vessel backup
    /// verify NAME|DIR` re-reads every chunk against its checksum.
    #[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
    Backup {
        #[command(subcommand)]
        verb: Option<BackupVerb>,
        #[arg(required = true)]
        name: Option<String>,
        /// The backup set's folder.
        #[arg(long, value_name = "DIR")]
        to: Option<PathBuf>,
        /// Keep the newest N points of the set, and the chunks they need.
        #[arg(long, value_name = "N")]
        keep: Option<usize>,
        /// With its running state: a running VM is suspended for the backup (then
        /// resumed), and the point restores to the guest running where it was.
        #[arg(long)]
        memory: bool,
    },
    /// A VM's backup points (its set: `backups/NAME` in the library, or --to DIR).
    Backups {
        name: String,
        #[arg(long, value_name = "DIR")]
        to: Option<PathBuf>,
    },
    /// Restore a backup point (the newest unless --point) from a VM's set (NAME) or a set
    /// folder (DIR): over the VM, which must be off (kept as it was until the restore has
    /// completed), or as a new VM (--as NEW_NAME). Every chunk is checked first.
    Restore {
        #[arg(value_name = "NAME|DIR")]
        backup: String,
        #[arg(long, value_name = "ID")]
        point: Option<String>,
        #[arg(long = "as", value_name = "NEW_NAME")]
        as_name: Option<String>,
    },
    /// A VM's snapshots: points it can go back to, kept as a tree.
    Snapshot {
        #[command(subcommand)]
        action: SnapshotAction,
    },
    /// Move a running VM to another Vessel by live migration: its memory goes over while
    /// it runs, then it pauses briefly and runs on there (its disks on shared storage);
    /// here it stops. On any failure it runs on here.
    Migrate {
        name: String,
        /// Where the receiving Vessel listens (`vessel receive`): unix:PATH or
        /// tcp:HOST:PORT.
        #[arg(long, value_name = "ADDRESS")]
        to: String,
        /// The pause the guest may have, in milliseconds.
        #[arg(long, value_name = "MS", default_value_t = 300)]
        downtime_ms: u64,
        /// Most passes over memory while the guest runs.
        #[arg(long, value_name = "N", default_value_t = 30)]
        max_passes: u32,
        /// At the pass limit (a guest changing its memory faster than the link carries
        /// it): complete with the pause it takes, or cancel (the VM runs on here).
        #[arg(long, value_enum, default_value_t = OnLimit::Complete)]
        on_limit: OnLimit,
        /// Allow TCP to another host, where the guest's memory crosses the network
        /// unencrypted.
        #[arg(long)]
        insecure: bool,
        /// The receiver's token (the first line of this file): `vessel receive` prints
        /// one, or takes one with its own --token-file.
        #[arg(long, value_name = "FILE")]
        token_file: Option<PathBuf>,
        /// Send the VM's folder and disks too, for a receiver that does not share the
        /// VM's storage (its writes during the copy go again). The VM's folder here stays,
        /// as it was at the move.
        #[arg(long)]
        copy_disks: bool,
    },
    /// Wait for one VM to come by live migration (`vessel migrate` on the host that runs
    /// it) and run it here. The VM's folder is in this library too (its disks on storage
    /// both hosts share), or comes with it (`vessel migrate --copy-disks`).
    Receive {
        /// Where to listen: unix:PATH or tcp:ADDR:PORT (port 0: any free one, printed).
        #[arg(long, value_name = "ADDRESS", required_unless_present = "stdio")]
        listen: Option<String>,
        /// The migration comes on standard input and output: what `vessel migrate --to
        /// ssh://HOST` runs on the other host through ssh. Messages go to stderr.
        #[arg(long, conflicts_with = "listen")]
        stdio: bool,
        /// The token the sender must give (the first line of this file). Over TCP one is
        /// made and printed if none is given.
        #[arg(long, value_name = "FILE")]
        token_file: Option<PathBuf>,
        /// Allow listening on an address off this host (the guest's memory comes over
        /// the network unencrypted).
        #[arg(long)]
        insecure: bool,
    },
    /// Reset a running VM, as its reset button would.
    Reset { name: String },
    /// Change settings of a VM that is off: KEY=VALUE pairs, as in `vessel show`
    /// (vcpus=2 memory_mib=4096 display.width=1280 notes="..."). Checked before saving.
    Set {
        name: String,
        #[arg(required = true, value_name = "KEY=VALUE", value_parser = parse_setting)]
        settings: Vec<(String, String)>,
    },
    /// Grow a VM's disk (counted from 0) to SIZE (e.g. 64G); the guest sees the new size.
    DiskGrow {
        name: String,
        index: usize,
        #[arg(value_parser = parse_memory)]
        size: u64,
    },
    /// Copy an existing raw or qcow2 image into a VM and attach it. Its format is the one
    /// --format gives, else the one its name says (.qcow2, else raw); the file's bytes never
    /// decide it.
    DiskAdd {
        name: String,
        image: PathBuf,
        #[arg(long, value_enum)]
        format: Option<Format>,
        #[arg(long)]
        read_only: bool,
    },
    /// Give a VM another name (its folder follows).
    Rename { name: String, new_name: String },
    /// Copy a VM under a new name (new uuid and MAC). --linked shares its disks through
    /// qcow2 overlays instead of copying them; --snapshot copies the VM as it was at one
    /// of its snapshots (linked: reading that snapshot's disks, which then stay).
    Clone {
        name: String,
        new_name: String,
        #[arg(long)]
        linked: bool,
        #[arg(long, value_name = "SNAPSHOT")]
        snapshot: Option<String>,
    },
    /// Write a stopped VM (configuration and disks) to one archive file with checksums
    /// (Vessel's own), or for another hypervisor: an OVA file or OVF folder (VMware,
    /// VirtualBox), or a libvirt domain folder (virsh define; OpenStack, Proxmox, oVirt).
    Export {
        name: String,
        /// The archive or OVA file, or the OVF or libvirt folder.
        #[arg(value_name = "PATH")]
        archive: PathBuf,
        #[arg(long, value_enum, default_value_t = ExportFormat::Vessel)]
        format: ExportFormat,
    },
    /// Restore a VM from an archive made by `vessel export`, checking its checksums; or
    /// import an OVA file or OVF descriptor (VMware, VirtualBox), its disks converted to
    /// qcow2, saying what of its hardware did not map.
    Import { archive: PathBuf },
    /// Inspect an ISO: volume ids, El Torito boot entries, the Linux kernel it boots and
    /// the OS it installs, with the resources to give it.
    IsoInfo { iso: PathBuf },
    /// Delete a VM with all its files.
    Delete {
        name: String,
        /// Confirm: the VM and its disks are deleted for good.
        #[arg(long)]
        yes: bool,
    },
}

/// `vessel backup verify`.
#[derive(Debug, clap::Subcommand)]
pub enum BackupVerb {
    /// Re-read every chunk of a backup set (a VM's, by NAME, or a set folder) against its
    /// checksum; name the damaged ones and the points they break.
    Verify {
        #[arg(value_name = "NAME|DIR")]
        backup: String,
    },
}

/// What `vessel export` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// Vessel's own archive (`vessel import` restores it).
    Vessel,
    /// One OVA file: OVF 2.0 with streamOptimized VMDK disks and a SHA-256 manifest.
    Ova,
    /// The same as a folder of files.
    Ovf,
    /// A libvirt domain XML with standalone qcow2 disks, in a folder.
    Libvirt,
}

/// What a migration does at its pass limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OnLimit {
    Complete,
    Cancel,
}

/// `vessel snapshot ...`.
#[derive(Subcommand, Debug)]
pub enum SnapshotAction {
    /// Take a snapshot of the VM's disks and settings as they are now, and, if it runs or
    /// is suspended, of its whole running state (a running VM pauses while its memory is
    /// saved, then runs on).
    Take {
        name: String,
        snapshot: String,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List the VM's snapshots as a tree, with where it is now.
    List { name: String },
    /// Go back to a snapshot: the VM's disks, settings and (if kept) running state as they
    /// were then. Its present state is lost; a running VM is powered off first.
    Revert { name: String, snapshot: String },
    /// Delete a snapshot; the VM's present state is not touched. Its disk space comes
    /// back at once (while the VM runs, at the next snapshot operation while it is off).
    Delete { name: String, snapshot: String },
    /// Give a snapshot another name.
    Rename { name: String, snapshot: String, new_name: String },
}

/// `vessel create --boot`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BootChoice {
    Bios,
    QuickLinux,
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// The VM's name (also its folder's name).
    pub name: String,
    /// Number of vCPUs [default: what the ISO's OS needs, else 1].
    #[arg(long, value_name = "N")]
    pub cpus: Option<u32>,
    /// Memory: a number of MiB, or with a unit (512M, 2G) [default: what the ISO's OS
    /// needs, else 1G].
    #[arg(long, value_name = "SIZE", value_parser = parse_memory)]
    pub memory: Option<u64>,
    /// Size of the VM's disk (a qcow2 image in the bundle); 0 for no disk [default: what
    /// the ISO's OS needs, else 16G].
    #[arg(long, value_name = "SIZE", value_parser = parse_size_or_zero)]
    pub disk_size: Option<u64>,
    /// Use a sparse raw image instead of qcow2.
    #[arg(long)]
    pub raw: bool,
    /// Boot this Linux kernel directly (copied into the bundle).
    #[arg(long, value_name = "FILE")]
    pub kernel: Option<PathBuf>,
    /// Initial ramdisk for --kernel (copied into the bundle).
    #[arg(long, value_name = "FILE", requires = "kernel")]
    pub initrd: Option<PathBuf>,
    /// Kernel command line for --kernel.
    #[arg(long, value_name = "TEXT", default_value = "console=ttyS0", requires = "kernel")]
    pub cmdline: String,
    /// An ISO for the CD drive; its OS is detected and sets the defaults above.
    #[arg(long, value_name = "FILE")]
    pub iso: Option<PathBuf>,
    /// How the VM boots: bios (the PC BIOS boots the disk, then the CD, as a PC does: an
    /// installer installs, and the installed system boots), or quick-linux (the kernel
    /// the Linux ISO's boot configuration names, booted directly: quicker, and what a
    /// host without VT-x/AMD-V runs, but it cannot boot what gets installed).
    #[arg(long, value_enum, default_value = "bios", conflicts_with = "kernel")]
    pub boot: BootChoice,
    /// No network card.
    #[arg(long)]
    pub no_net: bool,
    /// Forward a host port to the guest: tcp:HOST:GUEST or udp:HOST:GUEST (repeatable),
    /// on 127.0.0.1; tcp:ADDRESS:HOST:GUEST listens on ADDRESS.
    #[arg(long, value_name = "SPEC", value_parser = parse_forward)]
    pub forward: Vec<vmm::devices::net::passt::PortForward>,
    /// Put the VM's folder here instead of the library folder (the library remembers it).
    #[arg(long, value_name = "DIR")]
    pub location: Option<PathBuf>,
}

impl From<CreateArgs> for NewVm {
    fn from(a: CreateArgs) -> NewVm {
        NewVm {
            name: a.name,
            vcpus: a.cpus,
            memory_bytes: a.memory,
            disk_bytes: a.disk_size,
            disk_format: if a.raw { DiskFormat::Raw } else { DiskFormat::Qcow2 },
            kernel: a.kernel,
            initrd: a.initrd,
            cmdline: a.cmdline,
            iso: a.iso,
            quick_linux: a.boot == BootChoice::QuickLinux,
            network: (!a.no_net).then(|| {
                a.forward
                    .iter()
                    .map(|f| Forward {
                        udp: f.udp,
                        address: f.address,
                        host: f.host,
                        guest: f.guest,
                    })
                    .collect()
            }),
            location: a.location,
        }
    }
}

/// "key=value".
pub fn parse_setting(text: &str) -> Result<(String, String), String> {
    let (k, v) = text.split_once('=').ok_or_else(|| format!("{text:?}: write KEY=VALUE"))?;
    if k.trim().is_empty() {
        return Err(format!("{text:?}: the key is empty"));
    }
    Ok((k.trim().to_string(), v.to_string()))
}

/// A size like parse_memory's, where 0 means none.
pub fn parse_size_or_zero(text: &str) -> Result<u64, String> {
    if text.trim() == "0" { Ok(0) } else { parse_memory(text) }
}

#[derive(Args, Debug)]
#[command(group(ArgGroup::new("device").required(true).args(["blk", "rng", "net"])))]
pub struct VhostUserArgs {
    /// Where to listen for the vhost-user frontend.
    #[arg(long, value_name = "PATH")]
    pub socket: PathBuf,
    /// Serve a virtio-blk disk on this image (raw unless --format qcow2).
    #[arg(long, value_name = "FILE")]
    pub blk: Option<PathBuf>,
    /// The format of the --blk image (never guessed from its bytes).
    #[arg(long, value_enum, default_value = "raw", requires = "blk")]
    pub format: Format,
    /// Serve the disk read-only.
    #[arg(long, requires = "blk")]
    pub read_only: bool,
    /// Serve a virtio-rng device.
    #[arg(long)]
    pub rng: bool,
    /// Serve a virtio-net card on user-mode NAT through passt (QEMU: -netdev
    /// vhost-user,id=n,chardev=c -device virtio-net-pci,netdev=n; add vectors=0 on QEMU 7.2).
    #[arg(long)]
    pub net: bool,
    /// With --net: forward a host port to the guest: tcp:HOST_PORT:GUEST_PORT (on
    /// 127.0.0.1), tcp:ADDRESS:HOST_PORT:GUEST_PORT or udp:...
    #[arg(long, value_name = "SPEC", value_parser = parse_forward)]
    pub forward: Vec<vmm::devices::net::passt::PortForward>,
    /// With --net: the guest may reach this computer's loopback services through the
    /// gateway address.
    #[arg(long, requires = "net")]
    pub host_access: bool,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Kernel to boot: a bzImage, or an ELF vmlinux (booted through PVH).
    #[arg(long, value_name = "FILE")]
    pub kernel: PathBuf,
    /// Initial ramdisk.
    #[arg(long, value_name = "FILE")]
    pub initrd: Option<PathBuf>,
    /// Kernel command line.
    #[arg(long, value_name = "TEXT", default_value = "console=ttyS0")]
    pub cmdline: String,
    /// Guest memory: a number of MiB, or with a unit (512M, 2G).
    #[arg(long, value_name = "SIZE", default_value = "512M", value_parser = parse_memory)]
    pub memory: u64,
    /// Number of vCPUs.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=254))]
    pub cpus: u8,
    /// A disk image for a virtio-blk disk (repeat for more disks): FILE or
    /// FILE,format=raw|qcow2; without a format, a .qcow2 file is qcow2 and any other raw.
    #[arg(long, value_name = "FILE[,format=F]", value_parser = parse_disk)]
    pub disk: Vec<DiskArg>,
    /// A disk image attached read-only (repeatable; as --disk).
    #[arg(long, value_name = "FILE[,format=F]", value_parser = parse_disk)]
    pub disk_ro: Vec<DiskArg>,
    /// No network card (by default the guest gets one on user-mode NAT through passt).
    #[arg(long)]
    pub no_net: bool,
    /// Forward a host port to the guest: tcp:HOST:GUEST or udp:HOST:GUEST (repeatable),
    /// listening on 127.0.0.1; tcp:ADDRESS:HOST:GUEST listens on ADDRESS (0.0.0.0: every
    /// network the computer is on).
    #[arg(long, value_name = "SPEC", value_parser = parse_forward)]
    pub forward: Vec<vmm::devices::net::passt::PortForward>,
    /// Let the guest reach services on this computer's loopback through its gateway
    /// address (off: the guest reaches the internet, not the host itself).
    #[arg(long, conflicts_with = "no_net")]
    pub host_access: bool,
    /// Stop (exit status 4) when the guest reboots instead of restarting it.
    #[arg(long)]
    pub no_reboot: bool,
    /// Write the bytes the guest writes to the debug port (0xE9) to FILE (as QEMU's
    /// -debugcon; /dev/stderr works).
    #[arg(long, value_name = "FILE")]
    pub debugcon: Option<PathBuf>,
}

/// A disk image format, as given on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Raw,
    Qcow2,
}

impl From<Format> for vm_library::config::DiskFormat {
    fn from(f: Format) -> Self {
        match f {
            Format::Raw => vm_library::config::DiskFormat::Raw,
            Format::Qcow2 => vm_library::config::DiskFormat::Qcow2,
        }
    }
}

/// A `--disk` of `vessel run`: an image and its format.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskArg {
    pub path: PathBuf,
    pub format: vm_library::config::DiskFormat,
}

/// Parses "FILE" or "FILE,format=qcow2". Without a format the file's name says it
/// (.qcow2 is qcow2, anything else raw): what the user named it, never its bytes.
pub fn parse_disk(text: &str) -> Result<DiskArg, String> {
    use vm_library::config::DiskFormat;
    let (path, format) = match text.rsplit_once(",format=") {
        Some((path, "raw")) => (path, Some(DiskFormat::Raw)),
        Some((path, "qcow2")) => (path, Some(DiskFormat::Qcow2)),
        Some((_, other)) => return Err(format!("format={other}: give format=raw or format=qcow2")),
        None => (text, None),
    };
    if path.is_empty() {
        return Err("no file given; write FILE or FILE,format=raw|qcow2".into());
    }
    let path = PathBuf::from(path);
    let format = format.unwrap_or_else(|| {
        if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("qcow2")) {
            DiskFormat::Qcow2
        } else {
            DiskFormat::Raw
        }
    });
    Ok(DiskArg { path, format })
}

/// Parses "tcp:8080:80", "udp:5353:53", or with the host address to listen on:
/// "tcp:0.0.0.0:8080:80", "tcp:[::1]:8080:80" (without one, 127.0.0.1: this computer only).
pub fn parse_forward(text: &str) -> Result<vmm::devices::net::passt::PortForward, String> {
    let bad = || {
        format!(
            "{text:?} is not a port forward; write tcp:HOST_PORT:GUEST_PORT, \
             tcp:ADDRESS:HOST_PORT:GUEST_PORT (e.g. tcp:0.0.0.0:8080:80) or udp:..."
        )
    };
    let (proto, rest) = text.split_once(':').ok_or_else(bad)?;
    let udp = match proto {
        "tcp" => false,
        "udp" => true,
        _ => return Err(bad()),
    };
    // The two ports are the last two fields; what comes before them is the address.
    let (before, guest) = rest.rsplit_once(':').ok_or_else(bad)?;
    let (address, host) = match before.rsplit_once(':') {
        Some((address, host)) => (Some(address), host),
        None => (None, before),
    };
    let address = match address {
        None => None,
        Some(a) => Some(
            a.trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .map_err(|_| format!("{a:?} in {text:?} is not an IP address"))?,
        ),
    };
    let port = |p: &str| p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(bad);
    Ok(vmm::devices::net::passt::PortForward {
        udp,
        address,
        host: port(host)?,
        guest: port(guest)?,
    })
}

/// Parses "512", "512M", "2G", "1024K", "1T" (binary units; a bare number is MiB).
pub fn parse_memory(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let (digits, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => (&t[..i], t[i..].trim()),
        None => (t, "M"),
    };
    let n: u64 =
        digits.parse().map_err(|_| format!("{text:?} is not a size; write e.g. 512M or 2G"))?;
    let shift = match unit.to_ascii_uppercase().trim_end_matches("IB").trim_end_matches('B') {
        "K" => 10,
        "M" | "" => 20,
        "G" => 30,
        "T" => 40,
        _ => {
            return Err(format!("unknown unit {unit:?} in {text:?}; use K, M, G or T"));
        }
    };
    n.checked_mul(1 << shift).filter(|b| *b > 0).ok_or_else(|| format!("{text:?} is out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_forwards() {
        let f = parse_forward("tcp:8080:80").unwrap();
        assert_eq!((f.udp, f.address, f.host, f.guest), (false, None, 8080, 80));
        assert_eq!(f.listen_address().to_string(), "127.0.0.1", "this computer only");
        assert!(parse_forward("udp:53:53").unwrap().udp);
        let any = parse_forward("tcp:0.0.0.0:8080:80").unwrap();
        assert_eq!(any.listen_address().to_string(), "0.0.0.0");
        let v6 = parse_forward("tcp:[::1]:2222:22").unwrap();
        assert_eq!((v6.listen_address().to_string(), v6.host, v6.guest), ("::1".into(), 2222, 22));
        for bad in
            ["tcp:8080", "sctp:1:2", "tcp:99999:1", "tcp:1:2:3", "tcp:0:80", "", "tcp:x.y:1:2"]
        {
            assert!(parse_forward(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn memory_sizes() {
        assert_eq!(parse_memory("512"), Ok(512 << 20));
        assert_eq!(parse_memory("512M"), Ok(512 << 20));
        assert_eq!(parse_memory("2G"), Ok(2 << 30));
        assert_eq!(parse_memory("2GiB"), Ok(2 << 30));
        assert_eq!(parse_memory("1024k"), Ok(1 << 20));
        assert!(parse_memory("lots").is_err());
        assert!(parse_memory("5Q").is_err());
        assert!(parse_memory("0").is_err());
        assert!(parse_memory("99999999999999T").is_err());
    }
}
