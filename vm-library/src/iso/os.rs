//! Which OS an ISO installs, from its volume descriptor, the way libosinfo matches media
//! (volume id patterns), with the resources to recommend for it. This is the built-in
//! table; libosinfo's database is richer and a later version reads it when installed.

use super::IsoInfo;

/// What to give a new VM for an OS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resources {
    pub vcpus: u32,
    pub memory_mib: u64,
    pub disk_gib: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OsGuess {
    /// libosinfo-style short id: "debian12", "ubuntu24.04", "fedora40", "win11", "linux".
    pub id: String,
    pub name: String,
    pub recommended: Resources,
}

const LINUX: Resources = Resources { vcpus: 2, memory_mib: 2048, disk_gib: 20 };
const DESKTOP_LINUX: Resources = Resources { vcpus: 2, memory_mib: 4096, disk_gib: 25 };
const WINDOWS: Resources = Resources { vcpus: 2, memory_mib: 4096, disk_gib: 64 };

/// The first number in `text` with up to one dot ("24.04", "12").
fn version(text: &str) -> Option<String> {
    let start = text.find(|c: char| c.is_ascii_digit())?;
    let rest = &text[start..];
    let mut dots = 0;
    let end = rest
        .find(|c: char| {
            if c == '.' {
                dots += 1;
                dots > 1
            } else {
                !c.is_ascii_digit()
            }
        })
        .unwrap_or(rest.len());
    Some(rest[..end].trim_end_matches('.').to_string())
}

/// Recognises the OS on the media, if the table knows it. `linux_boot` says whether the
/// ISO has a Linux boot configuration (a fallback for distributions not in the table).
pub fn detect(info: &IsoInfo, linux_boot: bool) -> Option<OsGuess> {
    let vol = info.volume_id.as_str();
    let lower = vol.to_ascii_lowercase();
    let guess = |id: String, name: String, recommended| Some(OsGuess { id, name, recommended });
    if let Some(rest) = lower.strip_prefix("debian ") {
        let major = version(rest)?.split('.').next()?.to_string();
        return guess(format!("debian{major}"), format!("Debian {major}"), LINUX);
    }
    if lower.starts_with("ubuntu") {
        let v = version(&lower)?;
        let desktop = !lower.contains("server");
        return guess(
            format!("ubuntu{v}"),
            format!("Ubuntu {v}"),
            if desktop { DESKTOP_LINUX } else { LINUX },
        );
    }
    if lower.starts_with("fedora") {
        // Fedora-WS-Live-40-1-14, Fedora-S-dvd-x86_64-40
        let v = lower.rsplit('-').find_map(|p| p.parse::<u32>().ok().filter(|n| *n > 20))?;
        return guess(format!("fedora{v}"), format!("Fedora {v}"), DESKTOP_LINUX);
    }
    if lower.starts_with("arch_") {
        return guess("archlinux".into(), "Arch Linux".into(), LINUX);
    }
    if lower.starts_with("alpine") {
        return guess(
            "alpinelinux".into(),
            "Alpine Linux".into(),
            Resources { vcpus: 1, memory_mib: 512, disk_gib: 8 },
        );
    }
    // Windows media: CCCOMA_X64FRE_EN-US_DV9 (10/11 consumer), CPBA_/CENA_ and friends;
    // the system id says Windows where the volume id does not.
    if ["cccoma_", "cpba_", "cena_", "ccsa_", "sss_"].iter().any(|p| lower.starts_with(p))
        || info.system_id.to_ascii_lowercase().contains("win32")
    {
        return guess("win11".into(), "Windows".into(), WINDOWS);
    }
    if linux_boot {
        return guess("linux".into(), format!("Linux ({})", vol.trim()), LINUX);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(volume_id: &str) -> IsoInfo {
        IsoInfo { volume_id: volume_id.into(), ..Default::default() }
    }

    #[test]
    fn known_media() {
        let cases = [
            ("Debian 12.5.0 amd64 n", "debian12"),
            ("Ubuntu 24.04 LTS amd64", "ubuntu24.04"),
            ("Ubuntu-Server 22.04.4 LTS amd64", "ubuntu22.04"),
            ("Fedora-WS-Live-40-1-14", "fedora40"),
            ("ARCH_202411", "archlinux"),
            ("CCCOMA_X64FRE_EN-US_DV9", "win11"),
        ];
        for (vol, id) in cases {
            assert_eq!(detect(&info(vol), false).map(|g| g.id).as_deref(), Some(id), "{vol}");
        }
        assert_eq!(detect(&info("Ubuntu-Server 22.04"), false).unwrap().recommended, LINUX);
        assert_eq!(detect(&info("Ubuntu 24.04"), false).unwrap().recommended, DESKTOP_LINUX);
    }

    #[test]
    fn unknown_media() {
        assert_eq!(detect(&info("MY_DATA"), false), None);
        assert_eq!(detect(&info("MYDISTRO"), true).unwrap().id, "linux");
        assert_eq!(detect(&info("Debian"), false), None, "no version, no guess");
    }
}
