//! Which OS an ISO installs, from its volume descriptor, the way libosinfo matches media:
//! libosinfo's database (`/usr/share/osinfo`, Debian package osinfo-db) when it is
//! installed and knows the media, else a built-in table; with the resources to recommend.

use std::path::Path;

use super::IsoInfo;

/// Where osinfo-db installs its OS descriptions.
pub const OSINFO_DIR: &str = "/usr/share/osinfo";

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

/// Recognises the OS on the media: libosinfo's database first, then the built-in table.
/// `linux_boot` says whether the ISO has a Linux boot configuration (a last fallback).
pub fn detect(info: &IsoInfo, linux_boot: bool) -> Option<OsGuess> {
    osinfo::detect(info, Path::new(OSINFO_DIR)).or_else(|| detect_builtin(info, linux_boot))
}

/// The built-in table alone.
pub fn detect_builtin(info: &IsoInfo, linux_boot: bool) -> Option<OsGuess> {
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

pub mod osinfo {
    //! libosinfo's database: `os/<vendor>/<os>.xml` files, each with `<media>` entries whose
    //! `<iso>` ids are regular expressions, and `<resources>` with the recommendation.

    use std::path::Path;

    use quick_xml::Reader;
    use quick_xml::events::Event;

    use super::{IsoInfo, OsGuess, Resources};

    /// Most description files read (the database has about two thousand).
    const MAX_FILES: usize = 20_000;

    #[derive(Default)]
    struct Os {
        id: Option<String>,
        name: Option<String>,
        recommended: Option<Resources>,
        minimum_cpus: Option<u32>,
        /// (element, pattern) for each ISO id of each x86 medium.
        media: Vec<Vec<(String, String)>>,
    }

    /// The OS in `db` whose media match `info`, if any.
    pub fn detect(info: &IsoInfo, db: &Path) -> Option<OsGuess> {
        let mut files = Vec::new();
        for vendor in std::fs::read_dir(db.join("os")).ok()?.flatten() {
            for file in std::fs::read_dir(vendor.path()).into_iter().flatten().flatten() {
                if file.path().extension().is_some_and(|e| e == "xml") && files.len() < MAX_FILES {
                    files.push(file.path());
                }
            }
        }
        files.sort();
        files.iter().filter_map(|f| parse(f)).find(|os| matches(os, info)).and_then(|os| {
            let rec =
                os.recommended.unwrap_or(Resources { vcpus: 2, memory_mib: 2048, disk_gib: 20 });
            Some(OsGuess {
                id: os.id?,
                name: os.name.unwrap_or_default(),
                recommended: Resources {
                    vcpus: rec.vcpus.max(os.minimum_cpus.unwrap_or(1)),
                    ..rec
                },
            })
        })
    }

    fn matches(os: &Os, info: &IsoInfo) -> bool {
        os.media.iter().any(|ids| {
            !ids.is_empty()
                && ids.iter().all(|(what, pattern)| {
                    let field = match what.as_str() {
                        "volume-id" => &info.volume_id,
                        "system-id" => &info.system_id,
                        "publisher-id" => &info.publisher_id,
                        "application-id" => &info.application_id,
                        _ => return true,
                    };
                    regex::Regex::new(pattern).is_ok_and(|re| re.is_match(field))
                })
        })
    }

    fn parse(path: &Path) -> Option<Os> {
        let text = std::fs::read_to_string(path).ok()?;
        let mut reader = Reader::from_str(&text);
        let mut os = Os::default();
        let mut stack: Vec<String> = Vec::new();
        let mut lang = false;
        let mut x86_medium = false;
        let mut resources_apply = false;
        let mut rec = (None, None, None);
        let mut min_cpus = None;
        loop {
            match reader.read_event().ok()? {
                Event::Start(e) => {
                    let name = String::from_utf8_lossy(e.name().as_ref()).into_owned();
                    let attr = |key: &[u8]| {
                        e.attributes()
                            .flatten()
                            .find(|a| a.key.as_ref() == key)
                            .map(|a| String::from_utf8_lossy(&a.value).into_owned())
                    };
                    lang = attr(b"xml:lang").is_some();
                    match name.as_str() {
                        "media" if stack.len() == 2 => {
                            x86_medium =
                                matches!(attr(b"arch").as_deref(), Some("x86_64" | "i686") | None);
                            if x86_medium {
                                os.media.push(Vec::new());
                            }
                        }
                        "resources" if stack.len() == 2 => {
                            resources_apply =
                                matches!(attr(b"arch").as_deref(), Some("all" | "x86_64") | None);
                        }
                        _ => {}
                    }
                    stack.push(name);
                }
                Event::End(_) => {
                    stack.pop();
                }
                Event::Text(t) => {
                    let Ok(value) = t.unescape() else { continue };
                    let value = value.trim().to_string();
                    let path: Vec<&str> = stack.iter().map(String::as_str).collect();
                    match path.as_slice() {
                        ["libosinfo", "os", "short-id"] if os.id.is_none() => os.id = Some(value),
                        ["libosinfo", "os", "name"] if os.name.is_none() && !lang => {
                            os.name = Some(value)
                        }
                        ["libosinfo", "os", "media", "iso", id] if x86_medium => {
                            if let Some(m) = os.media.last_mut() {
                                m.push((id.to_string(), value));
                            }
                        }
                        ["libosinfo", "os", "resources", "recommended", what]
                            if resources_apply =>
                        {
                            match *what {
                                "n-cpus" => rec.0 = value.parse::<u32>().ok(),
                                "ram" => rec.1 = value.parse::<u64>().ok().map(|b| b >> 20),
                                "storage" => rec.2 = value.parse::<u64>().ok().map(|b| b >> 30),
                                _ => {}
                            }
                        }
                        ["libosinfo", "os", "resources", "minimum", "n-cpus"]
                            if resources_apply =>
                        {
                            min_cpus = value.parse::<u32>().ok()
                        }
                        _ => {}
                    }
                }
                Event::Eof => break,
                _ => {}
            }
        }
        if rec.1.is_some() || rec.2.is_some() {
            os.recommended = Some(Resources {
                vcpus: rec.0.unwrap_or(2),
                memory_mib: rec.1.unwrap_or(2048),
                disk_gib: rec.2.unwrap_or(20),
            });
        }
        os.minimum_cpus = min_cpus;
        Some(os)
    }
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
            assert_eq!(
                detect_builtin(&info(vol), false).map(|g| g.id).as_deref(),
                Some(id),
                "{vol}"
            );
        }
        assert_eq!(detect_builtin(&info("Ubuntu-Server 22.04"), false).unwrap().recommended, LINUX);
        assert_eq!(
            detect_builtin(&info("Ubuntu 24.04"), false).unwrap().recommended,
            DESKTOP_LINUX
        );
    }

    #[test]
    fn unknown_media() {
        assert_eq!(detect_builtin(&info("MY_DATA"), false), None);
        assert_eq!(detect_builtin(&info("MYDISTRO"), true).unwrap().id, "linux");
        assert_eq!(detect_builtin(&info("Debian"), false), None, "no version, no guess");
    }

    /// A database in libosinfo's layout, written by the test.
    #[test]
    fn libosinfo_database() {
        let db = std::env::temp_dir().join(format!("vessel-osinfo-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&db);
        std::fs::create_dir_all(db.join("os/example.org")).unwrap();
        std::fs::write(
            db.join("os/example.org/exos-3.xml"),
            r#"<?xml version="1.0" encoding="UTF-8"?>
<libosinfo version="0.0.1">
  <os id="http://example.org/exos/3">
    <short-id>exos3</short-id>
    <name>ExOS 3</name>
    <name xml:lang="de">ExOS drei</name>
    <resources arch="all">
      <minimum><n-cpus>2</n-cpus><ram>1073741824</ram></minimum>
      <recommended><ram>4294967296</ram><storage>42949672960</storage></recommended>
    </resources>
    <media arch="aarch64"><iso><volume-id>EXOS_3</volume-id></iso></media>
    <media arch="x86_64">
      <iso><volume-id>^EXOS_3\.\d+_X64$</volume-id><publisher-id>EXAMPLE</publisher-id></iso>
    </media>
  </os>
</libosinfo>"#,
        )
        .unwrap();
        let mut media = info("EXOS_3.1_X64");
        media.publisher_id = "EXAMPLE CORP".into();
        let guess = osinfo::detect(&media, &db).expect("the database knows it");
        assert_eq!((guess.id.as_str(), guess.name.as_str()), ("exos3", "ExOS 3"));
        assert_eq!(guess.recommended, Resources { vcpus: 2, memory_mib: 4096, disk_gib: 40 });
        media.publisher_id = "SOMEONE ELSE".into();
        assert_eq!(osinfo::detect(&media, &db), None, "every id of the medium must match");
        assert_eq!(osinfo::detect(&info("EXOS_3"), &db), None, "the aarch64 medium is not ours");
        assert_eq!(osinfo::detect(&media, Path::new("/no/such/db")), None);
        let _ = std::fs::remove_dir_all(db);
    }

    #[test]
    fn the_installed_database() {
        // osinfo-db (tools/install-deps installs it) knows Debian 11's media.
        assert!(
            Path::new(OSINFO_DIR).join("os/debian.org/debian-11.xml").exists(),
            "osinfo-db is needed: apt-get install osinfo-db"
        );
        let guess = detect(&info("Debian 11.7.0 amd64 n"), false).unwrap();
        assert_eq!(guess.id, "debian11");
        assert_eq!(guess.recommended.memory_mib, 1024);
    }
}
