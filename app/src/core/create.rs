//! Making a VM: `NewVm` says what the user chose (anything left out gets the defaults of
//! the OS found on its ISO, else Vessel's), `create_bundle` makes its folder,
//! configuration, disks and boot files in the library — or nothing at all. The New VM
//! wizard and `vessel create` both come here.

use std::path::{Path, PathBuf};

use vm_library::bundle::{Bundle, BundleError};
use vm_library::config::{
    Boot, Cdrom, Disk, DiskFormat, Display, Extra, Forward, Network, SCHEMA_VERSION, VmConfig,
};
use vm_library::disks::DiskError;
use vm_library::iso::IsoError;
use vm_library::iso::os::OsGuess;
use vm_library::library::{Library, LibraryError, mac_for};
use vm_library::validate::{Host, Problem, validate};

use super::iso::{self, IsoFacts};

/// A VM to make.
#[derive(Clone, Debug, PartialEq)]
pub struct NewVm {
    /// Its name (also its folder's name).
    pub name: String,
    /// vCPUs [default: what the ISO's OS needs, else 1].
    pub vcpus: Option<u32>,
    /// Memory in bytes [default: what the ISO's OS needs, else 1 GiB].
    pub memory_bytes: Option<u64>,
    /// Its disk's size in bytes, 0 for no disk [default: what the ISO's OS needs, else
    /// 16 GiB].
    pub disk_bytes: Option<u64>,
    /// The disk's format (qcow2 unless raw is asked for).
    pub disk_format: DiskFormat,
    /// A Linux kernel to boot directly (copied into the VM's folder), its initrd and
    /// command line.
    pub kernel: Option<PathBuf>,
    pub initrd: Option<PathBuf>,
    pub cmdline: String,
    /// An ISO for the CD drive; its OS sets the defaults.
    pub iso: Option<PathBuf>,
    /// Boot the Linux on `iso` directly (its kernel taken off the disc at every power-on)
    /// instead of through the BIOS: quicker, and what a host without hardware
    /// virtualization can run, but it cannot boot what gets installed on the disk.
    pub quick_linux: bool,
    /// A network card on NAT, with these port forwards; None for no card.
    pub network: Option<Vec<Forward>>,
    /// Its folder's parent, instead of the library folder (the library remembers it).
    pub location: Option<PathBuf>,
}

impl NewVm {
    /// A VM called `name` with every default: a qcow2 disk, a network card, nothing to
    /// boot until a kernel or ISO is given.
    pub fn named(name: impl Into<String>) -> Self {
        NewVm {
            name: name.into(),
            vcpus: None,
            memory_bytes: None,
            disk_bytes: None,
            disk_format: DiskFormat::Qcow2,
            kernel: None,
            initrd: None,
            cmdline: "console=ttyS0".into(),
            iso: None,
            quick_linux: false,
            network: Some(Vec::new()),
            location: None,
        }
    }

    /// A VM that boots `kernel` directly with `cmdline`: one vCPU, `memory` bytes, no disk,
    /// no network card (test guests, benchmarks).
    pub fn test_guest(name: &str, kernel: PathBuf, cmdline: &str, memory: u64) -> Self {
        NewVm {
            vcpus: Some(1),
            memory_bytes: Some(memory),
            disk_bytes: Some(0),
            kernel: Some(kernel),
            cmdline: cmdline.into(),
            network: None,
            ..NewVm::named(name)
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error("{} is not an ISO image Vessel can use ({source}); choose an .iso file", path.display())]
    Iso {
        path: PathBuf,
        #[source]
        source: IsoError,
    },
    #[error("{}", problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n"))]
    Invalid { problems: Vec<Problem> },
    #[error("the {what} {} cannot be read", path.display())]
    Unreadable {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{} has no Linux kernel Vessel can boot directly (none in its isolinux or GRUB \
         configuration); create the VM without Quick Linux boot, to boot it through the BIOS",
        iso.display()
    )]
    NotLinux { iso: PathBuf },
    #[error("Quick Linux boot takes the kernel off a Linux ISO: give the ISO (--iso FILE)")]
    QuickLinuxWithoutIso,
    #[error(transparent)]
    Library(#[from] LibraryError),
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error("cannot make the folder {}", path.display())]
    Folder {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot copy {} into the VM", path.display())]
    Copy {
        path: PathBuf,
        #[source]
        source: DiskError,
    },
    #[error(transparent)]
    Disk(#[from] DiskError),
}

/// Makes the VM `new` describes in `lib` (its folder, configuration, disks and boot
/// files), or nothing at all; with the OS found on its ISO, if any.
pub fn create_bundle(lib: &Library, new: &NewVm) -> Result<(Bundle, Option<OsGuess>), CreateError> {
    let uuid = uuid::Uuid::new_v4();
    let facts = match &new.iso {
        Some(path) => {
            iso::inspect(path).map_err(|source| CreateError::Iso { path: path.clone(), source })?
        }
        None => IsoFacts { os: None, linux: false },
    };
    let recommended = facts.os.as_ref().map(|g| g.recommended);
    let vcpus = new.vcpus.or(recommended.map(|r| r.vcpus)).unwrap_or(1);
    let memory_mib =
        new.memory_bytes.map(|m| m >> 20).or(recommended.map(|r| r.memory_mib)).unwrap_or(1024);
    let disk_size = new.disk_bytes.or(recommended.map(|r| r.disk_gib << 30)).unwrap_or(16 << 30);
    let boot = match &new.kernel {
        Some(_) => Boot::Direct {
            kernel: "boot/kernel".into(),
            initrd: new.initrd.as_ref().map(|_| "boot/initrd".into()),
            cmdline: new.cmdline.clone(),
        },
        // Quick Linux boot: the kernel the disc's boot configuration names, directly.
        None if new.quick_linux => {
            match &new.iso {
                None => return Err(CreateError::QuickLinuxWithoutIso),
                Some(iso) if !facts.linux => {
                    return Err(CreateError::NotLinux { iso: iso.clone() });
                }
                Some(_) => {}
            }
            Boot::Cdrom
        }
        // Everything else boots as a PC does: the BIOS tries the disk, then the CD, so an
        // installer on the CD installs to the empty disk, and the installed system boots.
        None => Boot::Bios(Default::default()),
    };
    let disks = if disk_size > 0 {
        let file = match new.disk_format {
            DiskFormat::Raw => "disks/disk0.raw",
            DiskFormat::Qcow2 => "disks/disk0.qcow2",
        };
        vec![Disk {
            file: file.into(),
            format: new.disk_format,
            size_bytes: disk_size,
            read_only: false,
            extra: Extra::new(),
        }]
    } else {
        Vec::new()
    };
    let network = match &new.network {
        None => Network::None,
        Some(forwards) => {
            Network::Nat { mac: mac_for(&uuid), forwards: forwards.clone(), host_access: false }
        }
    };
    let iso =
        match &new.iso {
            Some(p) => Some(std::fs::canonicalize(p).map_err(|source| {
                CreateError::Unreadable { what: "ISO", path: p.clone(), source }
            })?),
            None => None,
        };
    let config = VmConfig {
        schema_version: SCHEMA_VERSION,
        uuid,
        name: new.name.clone(),
        os: match (&facts.os, &new.kernel) {
            (Some(g), _) => g.id.clone(),
            (None, Some(_)) => "linux".into(),
            (None, None) => "unknown".into(),
        },
        vcpus,
        memory_mib,
        boot: boot.into(),
        disks,
        cdrom: Cdrom { iso, extra: Extra::new() },
        network: network.into(),
        display: Display::FollowWindow.into(),
        notes: String::new(),
        created: String::new(),
        modified: String::new(),
        extra: Extra::new(),
    };
    // Everything but the files the bundle will hold is checked before anything is made.
    let problems: Vec<_> = validate(&config, Path::new("/"), &Host::this())
        .into_iter()
        .filter(|p| !p.field.starts_with("disks[") && !p.field.starts_with("boot."))
        .collect();
    if !problems.is_empty() {
        return Err(CreateError::Invalid { problems });
    }
    for (what, file) in [("kernel", &new.kernel), ("initrd", &new.initrd)] {
        if let Some(file) = file {
            std::fs::metadata(file).map_err(|source| CreateError::Unreadable {
                what,
                path: file.clone(),
                source,
            })?;
        }
    }
    let bundle = match &new.location {
        Some(dir) => {
            let bundle = Bundle::create(dir, config)?;
            if let Err(e) = lib.register(bundle.root()) {
                let _ = std::fs::remove_dir_all(bundle.root());
                return Err(e.into());
            }
            bundle
        }
        None => lib.create(config)?,
    };
    if let Err(e) = fill(&bundle, new) {
        let _ = std::fs::remove_dir_all(bundle.root());
        let _ = lib.unregister(bundle.root());
        return Err(e);
    }
    Ok((bundle, facts.os))
}

/// The files of a new bundle: its boot files (copies private to the user, as every file
/// of a bundle) and empty disks.
fn fill(bundle: &Bundle, new: &NewVm) -> Result<(), CreateError> {
    for (from, to) in [(&new.kernel, "boot/kernel"), (&new.initrd, "boot/initrd")] {
        if let Some(from) = from {
            let dir = bundle.root().join("boot");
            vm_library::files::create_dir_private(&dir)
                .map_err(|source| CreateError::Folder { path: dir.clone(), source })?;
            vm_library::disks::copy_sparse(from, &bundle.root().join(to))
                .map_err(|source| CreateError::Copy { path: from.clone(), source })?;
        }
    }
    for disk in &bundle.config.disks {
        vm_library::disks::create(&bundle.resolve(&disk.file), disk.format, disk.size_bytes, None)?;
    }
    Ok(())
}
