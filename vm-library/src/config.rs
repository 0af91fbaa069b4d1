//! A VM's configuration: `vessel.toml` in its bundle, human-readable and versioned.
//!
//! Compatibility rules:
//! - `schema_version` says which layout a file has. A file from a newer Vessel (a higher
//!   version) is refused with a message saying so; it is never rewritten by this version.
//! - Fields this version does not know, at the top level or inside a section, are kept and
//!   written back unchanged, so a rewrite by this version loses nothing.
//! - Paths inside the bundle are relative to it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The layout this version writes and understands.
pub const SCHEMA_VERSION: u32 = 1;

/// Fields a newer Vessel wrote that this one passes through untouched.
pub type Extra = BTreeMap<String, toml::Value>;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("the configuration is not valid TOML or misses a field: {0}")]
    Parse(String),
    #[error(
        "the configuration was written by a newer Vessel (schema version {found}; this \
         Vessel understands up to {SCHEMA_VERSION}); update Vessel to open this VM"
    )]
    TooNew { found: u32 },
    #[error("the configuration has no schema_version; it is not a Vessel VM configuration")]
    NoVersion,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VmConfig {
    pub schema_version: u32,
    pub uuid: uuid::Uuid,
    pub name: String,
    /// libosinfo-style id ("debian12", "win11", "linux" when unknown).
    pub os: String,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub boot: Section<Boot>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disks: Vec<Disk>,
    #[serde(default)]
    pub cdrom: Cdrom,
    pub network: Section<Network>,
    pub display: Section<Display>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub notes: String,
    /// RFC 3339, UTC.
    pub created: String,
    pub modified: String,
    #[serde(flatten)]
    pub extra: Extra,
}

/// A section whose shape depends on its kind, with the fields a newer Vessel added.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Section<T> {
    #[serde(flatten)]
    pub value: T,
    #[serde(flatten)]
    pub extra: Extra,
}

// serde's flatten hands a tagged enum every key without taking the ones it used, so the
// extras are found by difference: the section's keys that the value does not write back.
impl<'de, T: serde::de::DeserializeOwned + Serialize> Deserialize<'de> for Section<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let mut table = toml::Table::deserialize(d)?;
        let value: T = table.clone().try_into().map_err(D::Error::custom)?;
        let known = toml::Table::try_from(&value).map_err(D::Error::custom)?;
        table.retain(|key, _| !known.contains_key(key));
        Ok(Section { value, extra: table.into_iter().collect() })
    }
}

impl<T> From<T> for Section<T> {
    fn from(value: T) -> Self {
        Section { value, extra: Extra::new() }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Boot {
    /// A Linux kernel booted directly (paths relative to the bundle, or absolute).
    Direct {
        kernel: PathBuf,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        initrd: Option<PathBuf>,
        #[serde(default)]
        cmdline: String,
    },
    /// The Linux on the disc in the CD drive, booted directly: the kernel, initrd and
    /// command line its boot configuration (isolinux/GRUB) names, with the disc left in
    /// the drive for the installer.
    Cdrom,
    /// A PC BIOS (SeaBIOS) boots the disks or the CD, as a PC does.
    Bios(Firmware),
    /// UEFI firmware (a later Vessel boots these).
    Uefi,
}

/// How the firmware picks what to boot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Firmware {
    /// What to try, in order (`["disk", "cd"]`; `vessel set VM boot.order=cd,disk`). The
    /// firmware tries what is not listed after these. Disks first by default: an empty
    /// disk falls through to the installer's disc, and after the install the disk boots.
    #[serde(default = "Firmware::default_order", deserialize_with = "boot_order")]
    pub order: Vec<BootDevice>,
    /// Show the firmware's boot menu (press Esc) for a few seconds at power-on.
    #[serde(default)]
    pub menu: bool,
    /// Boot this first at the next power-on only (then the order above again): "boot
    /// from the CD next time". Cleared when the VM is powered on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<BootDevice>,
}

impl Firmware {
    fn default_order() -> Vec<BootDevice> {
        vec![BootDevice::Disk, BootDevice::Cd]
    }

    /// The order for the next power-on: `next` first, then `order` without it.
    pub fn next_order(&self) -> Vec<BootDevice> {
        let mut order: Vec<BootDevice> = self.next.into_iter().collect();
        order.extend(self.order.iter().filter(|d| Some(**d) != self.next));
        order
    }
}

impl Default for Firmware {
    fn default() -> Self {
        Firmware { order: Firmware::default_order(), menu: false, next: None }
    }
}

/// A kind of device the firmware boots from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BootDevice {
    /// The VM's disks, in their order.
    Disk,
    /// The CD drive.
    Cd,
}

impl BootDevice {
    pub const ALL: [BootDevice; 2] = [BootDevice::Disk, BootDevice::Cd];

    /// As `vessel.toml` and `vessel set` write it.
    pub fn name(self) -> &'static str {
        match self {
            BootDevice::Disk => "disk",
            BootDevice::Cd => "cd",
        }
    }

    /// As a person reads it.
    pub fn label(self) -> &'static str {
        match self {
            BootDevice::Disk => "disk",
            BootDevice::Cd => "CD",
        }
    }
}

/// A boot order as a TOML list (`["cd", "disk"]`) or as the text `vessel set` gives
/// (`cd,disk`): each device once, at least one.
fn boot_order<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<BootDevice>, D::Error> {
    use serde::de::Error;
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Form {
        List(Vec<String>),
        Text(String),
    }
    let names = match Form::deserialize(d)? {
        Form::List(names) => names,
        Form::Text(text) => text.split(',').map(|n| n.trim().to_string()).collect(),
    };
    let mut order = Vec::new();
    for name in names.iter().filter(|n| !n.is_empty()) {
        let device = BootDevice::ALL
            .into_iter()
            .find(|d| d.name() == name.to_ascii_lowercase())
            .ok_or_else(|| {
                D::Error::custom(format!(
                    "boot.order: {name:?} is not a boot device; write disk and cd in the \
                     order to try them (boot.order=cd,disk)"
                ))
            })?;
        if order.contains(&device) {
            return Err(D::Error::custom(format!("boot.order names {name} twice")));
        }
        order.push(device);
    }
    if order.is_empty() {
        return Err(D::Error::custom("boot.order is empty; write disk, cd or both (cd,disk)"));
    }
    Ok(order)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskFormat {
    Raw,
    Qcow2,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Disk {
    /// Relative to the bundle (normally under `disks/`).
    pub file: PathBuf,
    pub format: DiskFormat,
    pub size_bytes: u64,
    #[serde(default)]
    pub read_only: bool,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Cdrom {
    /// The inserted ISO; none (or an empty path: `vessel set VM cdrom.iso=""`) means an
    /// empty drive.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "empty_is_none")]
    pub iso: Option<PathBuf>,
    #[serde(flatten)]
    pub extra: Extra,
}

fn empty_is_none<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    let path = Option::<PathBuf>::deserialize(d)?;
    Ok(path.filter(|p| !p.as_os_str().is_empty()))
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "kebab-case")]
pub enum Network {
    /// User-mode NAT (passt), like VMware's NAT.
    Nat {
        /// "52:54:00:xx:xx:xx"
        mac: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        forwards: Vec<Forward>,
        /// The guest may reach services on this computer's loopback (through the gateway
        /// address, as VirtualBox's 10.0.2.2). Off unless the user turns it on.
        #[serde(default, skip_serializing_if = "is_false")]
        host_access: bool,
    },
    None,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Forward {
    #[serde(default, skip_serializing_if = "is_false")]
    pub udp: bool,
    /// The host address the forward listens on; none is 127.0.0.1 (this computer only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<std::net::IpAddr>,
    pub host: u16,
    pub guest: u16,
}

fn is_false(b: &bool) -> bool {
    !*b
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "size", rename_all = "kebab-case")]
pub enum Display {
    /// The guest's display follows the window (autofit).
    FollowWindow,
    Fixed {
        width: u32,
        height: u32,
    },
}

impl VmConfig {
    /// Parses a configuration, refusing one from a newer Vessel before looking further.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let table: toml::Table = text.parse().map_err(|e| ConfigError::Parse(format!("{e}")))?;
        match table.get("schema_version").and_then(toml::Value::as_integer) {
            None => return Err(ConfigError::NoVersion),
            Some(v) if v > i64::from(SCHEMA_VERSION) => {
                return Err(ConfigError::TooNew { found: u32::try_from(v).unwrap_or(u32::MAX) });
            }
            Some(_) => {}
        }
        table.try_into().map_err(|e: toml::de::Error| ConfigError::Parse(format!("{e}")))
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("a VmConfig always serializes")
    }
}

/// `time` as RFC 3339 in UTC, to the second.
pub fn rfc3339(time: std::time::SystemTime) -> String {
    let secs = time.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem / 60 % 60, rem % 60)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A configuration with every field set.
    pub fn full() -> VmConfig {
        VmConfig {
            schema_version: SCHEMA_VERSION,
            uuid: uuid::Uuid::new_v4(),
            name: "Debian 12".into(),
            os: "debian12".into(),
            vcpus: 2,
            memory_mib: 2048,
            boot: Boot::Direct {
                kernel: "boot/vmlinuz".into(),
                initrd: Some("boot/initrd.gz".into()),
                cmdline: "console=ttyS0 quiet".into(),
            }
            .into(),
            disks: vec![
                Disk {
                    file: "disks/system.qcow2".into(),
                    format: DiskFormat::Qcow2,
                    size_bytes: 20 << 30,
                    read_only: false,
                    extra: Extra::new(),
                },
                Disk {
                    file: "disks/data.raw".into(),
                    format: DiskFormat::Raw,
                    size_bytes: 1 << 30,
                    read_only: true,
                    extra: Extra::new(),
                },
            ],
            cdrom: Cdrom { iso: Some("/isos/debian-12.iso".into()), extra: Extra::new() },
            network: Network::Nat {
                mac: "52:54:00:ab:cd:ef".into(),
                forwards: vec![
                    Forward { udp: false, address: None, host: 2222, guest: 22 },
                    Forward {
                        udp: true,
                        address: Some([0, 0, 0, 0].into()),
                        host: 5353,
                        guest: 53,
                    },
                ],
                host_access: true,
            }
            .into(),
            display: Display::Fixed { width: 1920, height: 1080 }.into(),
            notes: "build box\nsecond line \"quoted\"".into(),
            created: "2026-11-26T10:00:00Z".into(),
            modified: "2026-11-26T11:30:00Z".into(),
            extra: Extra::new(),
        }
    }

    #[test]
    fn every_field_round_trips() {
        let config = full();
        let text = config.to_toml();
        assert_eq!(VmConfig::from_toml(&text).unwrap(), config, "{text}");
        // The other variants too.
        let mut other = full();
        other.boot = Boot::Uefi.into();
        other.network = Network::None.into();
        other.display = Display::FollowWindow.into();
        other.cdrom = Cdrom::default();
        other.disks.clear();
        other.notes.clear();
        assert_eq!(VmConfig::from_toml(&other.to_toml()).unwrap(), other);
    }

    #[test]
    fn firmware_boot_settings_and_their_defaults() {
        let bios = |extra: &str| {
            let text = full().to_toml();
            let start = text.find("[boot]").unwrap();
            let end = start + text[start..].find("\n\n").unwrap();
            let text =
                format!("{}[boot]\nkind = \"bios\"\n{extra}{}", &text[..start], &text[end..]);
            VmConfig::from_toml(&text).map(|c| c.boot.value)
        };
        // A file of an older Vessel: kind = "bios" alone boots the disks, then the CD.
        let Ok(Boot::Bios(fw)) = bios("") else { panic!() };
        assert_eq!(fw, Firmware::default());
        assert_eq!(fw.order, [BootDevice::Disk, BootDevice::Cd]);
        // As a list, or as `vessel set` text.
        for order in
            ["order = [\"cd\", \"disk\"]\n", "order = \"cd, disk\"\n", "order = \"CD,disk\"\n"]
        {
            let Ok(Boot::Bios(fw)) = bios(order) else { panic!("{order}") };
            assert_eq!(fw.order, [BootDevice::Cd, BootDevice::Disk], "{order}");
        }
        for (bad, says) in [
            ("order = \"cd,floppy\"\n", "\"floppy\" is not a boot device"),
            ("order = \"cd,cd\"\n", "names cd twice"),
            ("order = []\n", "boot.order is empty"),
            ("order = \"\"\n", "boot.order is empty"),
        ] {
            let err = bios(bad).unwrap_err().to_string();
            assert!(err.contains(says), "{bad}: {err}");
        }
        // The one-shot device goes first, once.
        let Ok(Boot::Bios(fw)) = bios("order = [\"disk\"]\nnext = \"cd\"\nmenu = true\n") else {
            panic!()
        };
        assert!(fw.menu);
        assert_eq!(fw.next_order(), [BootDevice::Cd, BootDevice::Disk]);
        let fw = Firmware { next: Some(BootDevice::Disk), ..Firmware::default() };
        assert_eq!(fw.next_order(), [BootDevice::Disk, BootDevice::Cd]);
        // Everything round-trips.
        let mut config = full();
        config.boot = Boot::Bios(Firmware {
            order: vec![BootDevice::Cd],
            menu: true,
            next: Some(BootDevice::Disk),
        })
        .into();
        assert_eq!(VmConfig::from_toml(&config.to_toml()).unwrap(), config);
    }

    #[test]
    fn an_empty_cd_path_is_an_empty_drive() {
        let text = full().to_toml().replace("iso = \"/isos/debian-12.iso\"", "iso = \"\"");
        assert!(text.contains("iso = \"\""));
        assert_eq!(VmConfig::from_toml(&text).unwrap().cdrom.iso, None);
    }

    #[test]
    fn unknown_fields_survive_a_rewrite() {
        let text = full()
            .to_toml()
            .replace("schema_version = 1\n", "schema_version = 1\nusb_controller = \"xhci\"\n")
            + "\n[tpm]\nversion = \"2.0\"\n";
        let text = text
            .replace("read_only = true\n", "read_only = true\ncache = \"writeback\"\n")
            .replace("kind = \"direct\"\n", "kind = \"direct\"\nmeasured = true\n")
            .replace("mode = \"nat\"\n", "mode = \"nat\"\nipv6 = false\n");
        let config = VmConfig::from_toml(&text).unwrap();
        assert_eq!(config.extra.get("usb_controller").and_then(|v| v.as_str()), Some("xhci"));
        assert!(config.extra.contains_key("tpm"));
        assert_eq!(config.disks[1].extra.get("cache").and_then(|v| v.as_str()), Some("writeback"));
        assert_eq!(config.boot.extra.keys().collect::<Vec<_>>(), ["measured"]);
        assert_eq!(config.network.extra.keys().collect::<Vec<_>>(), ["ipv6"]);
        let again = VmConfig::from_toml(&config.to_toml()).unwrap();
        assert_eq!(again, config);
    }

    #[test]
    fn a_newer_schema_is_refused_with_the_reason() {
        let text = full().to_toml().replace("schema_version = 1", "schema_version = 7");
        let err = VmConfig::from_toml(&text).unwrap_err();
        assert!(matches!(err, ConfigError::TooNew { found: 7 }));
        assert!(err.to_string().contains("newer Vessel"), "{err}");
    }

    #[test]
    fn broken_configs_say_what_is_wrong() {
        assert!(matches!(VmConfig::from_toml("name = "), Err(ConfigError::Parse(_))));
        assert!(matches!(VmConfig::from_toml("name = \"x\""), Err(ConfigError::NoVersion)));
        let missing = full().to_toml().replace("vcpus = 2\n", "");
        let err = VmConfig::from_toml(&missing).unwrap_err();
        assert!(err.to_string().contains("vcpus"), "{err}");
    }

    #[test]
    fn rfc3339_dates() {
        use std::time::{Duration, UNIX_EPOCH};
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)), "2000-02-29T00:00:00Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(1_795_690_542)),
            "2026-11-26T10:55:42Z"
        );
    }
}
