//! Getting a library VM ready to power on, in one order of steps for the window and the
//! CLI: check its configuration against this host, take its run lock (nobody else runs
//! it meanwhile), then build the `vmm::MachineConfig` — which takes a CD-booted VM's
//! kernel off its disc into its folder, so that happens under the lock. Every file the
//! machine opens is checked here: the VM's own files inside its folder, its disks'
//! backing files under the library's policy.

use std::path::{Path, PathBuf};

use vm_library::bundle::{Bundle, BundleError, RunLock};
use vm_library::config::{Boot, BootDevice as BootKind, DiskFormat, Network};
use vm_library::iso::boot_config::{self, CdBootError};
use vm_library::library::{Library, LibraryError};
use vm_library::validate::{Host, Problem, validate};
use vmm::display::boot_fb::FramebufferMode;
use vmm::{BootSource, DeviceConfig, MachineConfig, RebootPolicy};

/// Where a VM that boots from its CD keeps the kernel and initrd taken off the disc.
pub const CD_BOOT_DIR: &str = "cache/cd-boot";

/// The PC BIOS a firmware VM boots (Debian's seabios package).
pub const SEABIOS: &str = "/usr/share/seabios/bios-256k.bin";

/// The VGA BIOS of a firmware VM's standard VGA (Debian's seabios package too).
pub const VGABIOS: &str = "/usr/share/seabios/vgabios-stdvga.bin";

/// How long the firmware's boot menu waits for Esc, when the VM asks for it.
pub const BOOT_MENU_MS: u16 = 5000;

/// A VM ready to power on: its run lock (held until this is dropped) and its machine.
pub struct Launch {
    pub lock: RunLock,
    pub config: MachineConfig,
    /// A one-time boot device this power-on takes; `used` once the machine is built.
    pub one_time: OneTimeBoot,
}

/// "Boot from the CD next time", taken by this power-on: once the machine is built, the
/// setting is cleared, so the VM boots as usual after it. A machine that fails to build
/// leaves it for the next try.
pub struct OneTimeBoot(Option<Bundle>);

impl OneTimeBoot {
    /// The machine is built: the one-time boot device (if any) is used up.
    pub fn used(self) -> Result<(), LaunchError> {
        match self.0 {
            Some(mut cleared) => cleared.save().map_err(LaunchError::Save),
            None => Ok(()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error(
        "{name} cannot start:\n{}",
        problems.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n")
    )]
    Invalid { name: String, problems: Vec<Problem> },
    /// Its run lock is taken (another Vessel runs it), or cannot be taken.
    #[error(transparent)]
    Lock(BundleError),
    #[error(
        "{name} boots from its CD drive, which is empty; attach an ISO: vessel set {name} \
         cdrom.iso=FILE"
    )]
    EmptyCd { name: String },
    #[error(
        "{name} boots from UEFI firmware, which this Vessel cannot do yet; boot it through \
         the BIOS instead: vessel set {name} boot.kind=bios"
    )]
    Uefi { name: String },
    #[error(
        "{name} boots through the BIOS, and {SEABIOS} is missing; install it: sudo apt-get \
         install seabios"
    )]
    NoBios { name: String },
    #[error(transparent)]
    CdBoot(#[from] CdBootError),
    /// Its configuration cannot be written (to clear a one-time boot device).
    #[error(transparent)]
    Save(BundleError),
    /// A file the configuration names is outside the VM's folder.
    #[error(transparent)]
    Outside(BundleError),
    #[error(transparent)]
    Disks(#[from] LibraryError),
    #[error("network.mac {0:?} is not a MAC address (six hex bytes, 52:54:00:12:34:56)")]
    Mac(String),
    #[error("vcpus: {0} is more than a Vessel machine can have")]
    Vcpus(u32),
}

/// Locks `bundle` as running, finishes snapshot work a killed process left on it (which
/// may change its disks), checks it and builds its machine's configuration.
pub fn prepare(lib: &Library, bundle: &Bundle) -> Result<Launch, LaunchError> {
    let lock = bundle.lock_running().map_err(LaunchError::Lock)?;
    let mut bundle = bundle.clone();
    lib.recover_snapshots(&mut bundle)?;
    let bundle = &bundle;
    let problems = validate(&bundle.config, bundle.root(), &Host::this());
    if !problems.is_empty() {
        return Err(LaunchError::Invalid { name: bundle.config.name.clone(), problems });
    }
    let config = machine_config(lib, bundle)?;
    let one_time = match &bundle.config.boot.value {
        Boot::Bios(settings) if settings.next.is_some() => {
            let mut cleared = bundle.clone();
            if let Boot::Bios(settings) = &mut cleared.config.boot.value {
                settings.next = None;
            }
            OneTimeBoot(Some(cleared))
        }
        _ => OneTimeBoot(None),
    };
    Ok(Launch { lock, config, one_time })
}

/// `prepare` for a VM process that receives the VM by live migration from another that
/// runs it: the run lock is opened, not taken (the sender lets it go at the switch-over,
/// `RunLock::take`), and nothing is changed on disk meanwhile (no snapshot recovery, no
/// one-time boot device: the machine runs on, it does not boot).
pub fn prepare_incoming(lib: &Library, bundle: &Bundle) -> Result<Launch, LaunchError> {
    let lock = bundle.open_run_lock().map_err(LaunchError::Lock)?;
    let problems = validate(&bundle.config, bundle.root(), &Host::this());
    if !problems.is_empty() {
        return Err(LaunchError::Invalid { name: bundle.config.name.clone(), problems });
    }
    let config = machine_config(lib, bundle)?;
    Ok(Launch { lock, config, one_time: OneTimeBoot(None) })
}

/// A disk image as the machine opens it: the format the configuration states, and the
/// images it reads through as the library checked them.
pub fn image_spec(
    path: PathBuf,
    format: DiskFormat,
    backing: Vec<vm_library::disks::Layer>,
) -> vmm::ImageSpec {
    let format_of = |format| match format {
        DiskFormat::Raw => vmm::ImageFormat::Raw,
        DiskFormat::Qcow2 => vmm::ImageFormat::Qcow2,
    };
    vmm::ImageSpec {
        path,
        format: format_of(format),
        backing: backing
            .into_iter()
            .map(|l| vmm::Layer { path: l.path, format: format_of(l.format) })
            .collect(),
    }
}

/// What Vessel's machine is made of, from the VM's configuration.
pub fn machine_config(lib: &Library, bundle: &Bundle) -> Result<MachineConfig, LaunchError> {
    let c = &bundle.config;
    let inside = |path: &Path| bundle.inside(path).map_err(LaunchError::Outside);
    let iso = c.cdrom.iso.as_ref().map(|i| bundle.resolve(i));
    let boot = match &c.boot.value {
        Boot::Direct { kernel, initrd, cmdline } => vmm::Boot::Kernel(BootSource {
            kernel: inside(kernel)?,
            initrd: initrd.as_deref().map(inside).transpose()?,
            cmdline: cmdline.clone(),
        }),
        Boot::Cdrom => {
            let Some(iso) = &iso else {
                return Err(LaunchError::EmptyCd { name: c.name.clone() });
            };
            // The disc's kernel and initrd, taken off it at every power-on (the disc may
            // have changed), into the bundle.
            let dir = inside(Path::new(CD_BOOT_DIR))?;
            let boot = boot_config::extract_linux_boot(iso, &dir)?;
            vmm::Boot::Kernel(BootSource {
                kernel: boot.kernel,
                initrd: boot.initrd,
                cmdline: boot.cmdline,
            })
        }
        // In the VM's boot order (disks, then the CD, unless the user changed it). Its
        // text screen goes to the serial console.
        Boot::Bios(settings) => {
            if !Path::new(SEABIOS).is_file() {
                return Err(LaunchError::NoBios { name: c.name.clone() });
            }
            let devices = |order: &[BootKind]| -> Vec<vmm::BootDevice> {
                order
                    .iter()
                    .flat_map(|kind| match kind {
                        BootKind::Disk => (0..c.disks.len()).map(vmm::BootDevice::Disk).collect(),
                        BootKind::Cd => vec![vmm::BootDevice::Cd],
                    })
                    .collect()
            };
            vmm::Boot::Firmware(vmm::FirmwareBoot {
                image: SEABIOS.into(),
                uuid: *c.uuid.as_bytes(),
                boot_order: devices(&settings.order),
                first_boot_order: settings.next.map(|_| devices(&settings.next_order())),
                boot_menu_ms: settings.menu.then_some(BOOT_MENU_MS),
                serial_console: true,
            })
        }
        Boot::Uefi => return Err(LaunchError::Uefi { name: c.name.clone() }),
    };
    // A firmware VM's screen is a standard VGA (at 00:02.0, where a PC has it) until the
    // guest's GPU driver starts. Every machine has a CD drive, empty or not, so discs can
    // be put in while it runs.
    let mut devices = Vec::new();
    if matches!(boot, vmm::Boot::Firmware(_)) {
        let rom = Some(PathBuf::from(VGABIOS));
        devices.push(DeviceConfig::Vga(vmm::devices::vga::VgaConfig { rom }));
    }
    devices.extend([DeviceConfig::Rng, DeviceConfig::CdRom { iso }]);
    for disk in lib.disk_images(bundle)? {
        devices.push(DeviceConfig::Block {
            image: image_spec(disk.path, disk.format, disk.backing),
            read_only: disk.read_only,
        });
    }
    if let Network::Nat { mac, forwards, host_access } = &c.network.value {
        devices.push(DeviceConfig::Net {
            mac: parse_mac(mac).ok_or_else(|| LaunchError::Mac(mac.clone()))?,
            forwards: forwards
                .iter()
                .map(|f| vmm::devices::net::passt::PortForward {
                    udp: f.udp,
                    address: f.address,
                    host: f.host,
                    guest: f.guest,
                })
                .collect(),
            host_access: *host_access,
        });
    }
    // The screen and what types into it: a GPU starting in the configured size (or
    // 1024x768 when it follows the window, which then asks for its own size), a boot
    // framebuffer for the console before the GPU driver loads, keyboard, tablet, mouse.
    let mode = match c.display.value {
        vm_library::config::Display::Fixed { width, height } => (width, height),
        vm_library::config::Display::FollowWindow => (1024, 768),
    };
    devices.push(DeviceConfig::Gpu(vmm::devices::virtio::gpu::GpuConfig {
        mode,
        ..Default::default()
    }));
    // Nothing in a user's build; a test's faulty device in the integration tests' builds.
    devices.extend(vmm::machine::config::test_devices_from_env());
    // The keyboard last: the test guest drives the last input device it finds (the app's
    // end-to-end test types into it); guests do not care about the order.
    for kind in [vmm::InputKind::Mouse, vmm::InputKind::Tablet, vmm::InputKind::Keyboard] {
        devices.push(DeviceConfig::Input(kind));
    }
    let fb = FramebufferMode { width: mode.0, height: mode.1 };
    let boot_framebuffer = Some(if fb.check().is_ok() {
        fb
    } else {
        FramebufferMode { width: 1024, height: 768 } // too large for the boot framebuffer
    });
    Ok(MachineConfig {
        vcpus: u8::try_from(c.vcpus).map_err(|_| LaunchError::Vcpus(c.vcpus))?,
        memory_bytes: c.memory_mib << 20,
        boot,
        on_guest_reboot: RebootPolicy::Restart,
        devices,
        boot_framebuffer,
    })
}

/// "52:54:00:12:34:56" as bytes.
fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut bytes = [0u8; 6];
    let mut parts = text.split(':');
    for b in &mut bytes {
        let part = parts.next()?;
        if part.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(part, 16).ok()?;
    }
    parts.next().is_none().then_some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_are_six_hex_bytes() {
        assert_eq!(parse_mac("52:54:00:12:34:5f"), Some([0x52, 0x54, 0, 0x12, 0x34, 0x5f]));
        for bad in
            ["", "52:54:00:12:34", "52:54:00:12:34:56:78", "52:54:00:12:34:zz", "5:4:0:1:3:5"]
        {
            assert_eq!(parse_mac(bad), None, "{bad}");
        }
    }
}
