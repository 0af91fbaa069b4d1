//! Finds how a Linux ISO boots — kernel, initrds, command line — in its isolinux/syslinux
//! or GRUB configuration, so Vessel can boot it directly with the ISO left in the CD drive.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::{Iso, IsoError};

#[derive(Debug, thiserror::Error)]
pub enum CdBootError {
    #[error(transparent)]
    Iso(#[from] IsoError),
    #[error(
        "{0} has no Linux kernel Vessel can boot directly (no isolinux or GRUB entry naming \
         one); it needs firmware boot: set the VM's boot.kind to bios"
    )]
    NotLinux(PathBuf),
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A Linux boot taken off a disc: the kernel and initrd copied to files on the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExtractedBoot {
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub cmdline: String,
    /// The boot entry they came from.
    pub entry: LinuxBoot,
}

/// Finds the default Linux boot entry of the ISO at `iso_path` and copies its kernel and
/// initrds into `dir` (as `kernel` and `initrd`; several initrds are joined, each padded
/// to 4 bytes, as boot loaders pass them).
pub fn extract_linux_boot(iso_path: &Path, dir: &Path) -> Result<ExtractedBoot, CdBootError> {
    let iso = Iso::open(iso_path)?;
    let entry = find_linux_boot(&iso)?.ok_or_else(|| CdBootError::NotLinux(iso_path.into()))?;
    let write_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| CdBootError::Write { path, source }
    };
    crate::files::create_dir_private(dir).map_err(write_err(dir))?;
    let copy = |files: &[String], name: &str, pad: bool| -> Result<PathBuf, CdBootError> {
        let path = dir.join(name);
        let tmp = dir.join(format!(".{name}.tmp"));
        // Made anew, private, and never through a symlink planted under the name.
        let _ = std::fs::remove_file(&tmp);
        let file = crate::files::create_private(&tmp).map_err(write_err(&tmp))?;
        let mut out = std::io::BufWriter::new(file);
        for file in files {
            let found = iso.find(file)?.ok_or_else(|| {
                IsoError::Damaged(iso_path.into(), format!("{file} is named but missing"))
            })?;
            let n = iso.copy_file(&found, &mut out)?;
            if pad {
                let zeros = (4 - n % 4) % 4;
                out.write_all(&[0u8; 3][..zeros as usize]).map_err(write_err(&tmp))?;
            }
        }
        out.flush().map_err(write_err(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(write_err(&path))?;
        Ok(path)
    };
    let kernel = copy(std::slice::from_ref(&entry.kernel), "kernel", false)?;
    let initrd =
        if entry.initrds.is_empty() { None } else { Some(copy(&entry.initrds, "initrd", true)?) };
    Ok(ExtractedBoot { kernel, initrd, cmdline: entry.cmdline.clone(), entry })
}

/// Largest configuration file read.
const MAX_CONFIG: usize = 256 << 10;
/// Deepest chain of `include`s followed, and most text they may add up to (a file that
/// includes itself many times must not multiply without end).
const MAX_INCLUDES: usize = 8;
const MAX_EXPANDED: usize = 1 << 20;

const SYSLINUX: [&str; 6] = [
    "/isolinux/isolinux.cfg",
    "/boot/isolinux/isolinux.cfg",
    "/isolinux.cfg",
    "/syslinux/syslinux.cfg",
    "/boot/syslinux/syslinux.cfg",
    "/syslinux.cfg",
];
const GRUB: [&str; 5] = [
    "/boot/grub/grub.cfg",
    "/boot/grub2/grub.cfg",
    "/EFI/BOOT/grub.cfg",
    "/EFI/boot/grub.cfg",
    "/grub.cfg",
];

/// A Linux kernel to boot directly, with paths on the ISO.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinuxBoot {
    pub kernel: String,
    pub initrds: Vec<String>,
    pub cmdline: String,
    /// The configuration file it came from.
    pub config: String,
}

/// The ISO's default Linux boot entry, if its boot configuration names one whose kernel
/// exists on the disc.
pub fn find_linux_boot(iso: &Iso) -> Result<Option<LinuxBoot>, IsoError> {
    for path in SYSLINUX {
        if let Some(text) = read_text(iso, path)? {
            let dir =
                path.rsplit_once('/').map_or("/", |(d, _)| if d.is_empty() { "/" } else { d });
            let mut budget = MAX_EXPANDED;
            let text = with_includes(iso, &text, dir, 0, &mut budget)?;
            if let Some(boot) = parse_syslinux(&text, dir, path)
                && iso.find(&boot.kernel)?.is_some()
            {
                return Ok(Some(boot));
            }
        }
    }
    for path in GRUB {
        if let Some(text) = read_text(iso, path)? {
            for boot in parse_grub_entries(&text, path) {
                if iso.find(&boot.kernel)?.is_some() {
                    return Ok(Some(boot));
                }
            }
        }
    }
    Ok(None)
}

fn read_text(iso: &Iso, path: &str) -> Result<Option<String>, IsoError> {
    match iso.find(path)? {
        Some(e) if !e.is_dir && (e.size as usize) <= MAX_CONFIG => {
            Ok(Some(String::from_utf8_lossy(&iso.read_file(&e, MAX_CONFIG)?).into_owned()))
        }
        _ => Ok(None),
    }
}

/// `text` with its `include FILE` lines replaced by the files (as Debian's menus do),
/// within `budget` bytes of included text.
fn with_includes(
    iso: &Iso,
    text: &str,
    dir: &str,
    depth: usize,
    budget: &mut usize,
) -> Result<String, IsoError> {
    let mut out = String::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if let (Some(cmd), Some(file)) = (words.next(), words.next())
            && cmd.eq_ignore_ascii_case("include")
        {
            if depth < MAX_INCLUDES
                && let Some(inner) = read_text(iso, &resolve(dir, file))?
                && inner.len() <= *budget
            {
                *budget -= inner.len();
                out.push_str(&with_includes(iso, &inner, dir, depth + 1, budget)?);
            }
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    Ok(out)
}

/// A syslinux path: relative ones are relative to the configuration's folder.
fn resolve(dir: &str, path: &str) -> String {
    if path.starts_with('/') {
        path.to_string()
    } else {
        format!("{}/{path}", dir.trim_end_matches('/'))
    }
}

/// The DEFAULT label of a syslinux configuration (or its first label with a kernel).
pub fn parse_syslinux(text: &str, dir: &str, config: &str) -> Option<LinuxBoot> {
    struct Label {
        name: String,
        kernel: Option<String>,
        append: String,
        initrd: Option<String>,
    }
    let mut default = None;
    let mut labels: Vec<Label> = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        let (cmd, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let rest = rest.trim();
        match cmd.to_ascii_lowercase().as_str() {
            "default" => default = Some(rest.to_string()),
            "label" => labels.push(Label {
                name: rest.to_string(),
                kernel: None,
                append: String::new(),
                initrd: None,
            }),
            "kernel" | "linux" => {
                if let Some(l) = labels.last_mut() {
                    l.kernel = Some(rest.to_string())
                }
            }
            "append" => {
                if let Some(l) = labels.last_mut() {
                    l.append = rest.to_string()
                }
            }
            "initrd" => {
                if let Some(l) = labels.last_mut() {
                    l.initrd = Some(rest.to_string())
                }
            }
            _ => {}
        }
    }
    let chosen = default
        .as_ref()
        .and_then(|d| labels.iter().find(|l| l.name.eq_ignore_ascii_case(d) && l.kernel.is_some()))
        .or_else(|| labels.iter().find(|l| l.kernel.is_some()))?;
    let mut initrds: Vec<String> =
        chosen.initrd.iter().flat_map(|i| i.split(',')).map(str::to_string).collect();
    let mut args = Vec::new();
    for word in chosen.append.split_whitespace() {
        match word.strip_prefix("initrd=") {
            Some(list) => initrds.extend(list.split(',').map(str::to_string)),
            None => args.push(word),
        }
    }
    Some(LinuxBoot {
        kernel: resolve(dir, chosen.kernel.as_deref()?),
        initrds: initrds.iter().filter(|i| !i.is_empty()).map(|i| resolve(dir, i)).collect(),
        cmdline: args.join(" "),
        config: config.to_string(),
    })
}

/// The first menu entry of a GRUB configuration that boots a Linux kernel.
pub fn parse_grub(text: &str, config: &str) -> Option<LinuxBoot> {
    parse_grub_entries(text, config).into_iter().next()
}

/// The menu entries of a GRUB configuration that boot a Linux kernel, in order.
pub fn parse_grub_entries(text: &str, config: &str) -> Vec<LinuxBoot> {
    let mut found = Vec::new();
    let mut in_entry = false;
    let mut kernel: Option<(String, String)> = None;
    let mut initrds = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with("menuentry") {
            in_entry = true;
            kernel = None;
            initrds.clear();
        }
        if !in_entry {
            continue;
        }
        // A one-line entry puts its commands after '{', separated by ';'.
        let body = line.split_once('{').map_or(line, |(_, b)| b);
        for command in body.split(';') {
            let mut words = command.split_whitespace();
            match words.next() {
                Some("linux" | "linuxefi" | "linux16") => {
                    if let Some(path) = words.next() {
                        kernel = Some((path.to_string(), words.collect::<Vec<_>>().join(" ")));
                    }
                }
                Some("initrd" | "initrdefi" | "initrd16") => {
                    initrds.extend(words.map(str::to_string))
                }
                _ => {}
            }
        }
        if body.contains('}') {
            if let Some((path, args)) = kernel.take() {
                let abs =
                    |p: &str| if p.starts_with('/') { p.to_string() } else { format!("/{p}") };
                found.push(LinuxBoot {
                    kernel: abs(&path),
                    initrds: initrds.iter().map(|i| abs(i)).collect(),
                    cmdline: args,
                    config: config.to_string(),
                });
            }
            in_entry = false;
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::super::tests::{make_iso, scratch};
    use super::*;

    #[test]
    fn syslinux_default_label_with_includes_and_relative_paths() {
        let dir = scratch("syslinux");
        let iso = make_iso(
            &dir,
            "debianish",
            &[
                ("isolinux/isolinux.cfg", b"include menu.cfg\ndefault install\n"),
                (
                    "isolinux/menu.cfg",
                    b"label rescue\n  kernel /rescue/vmlinuz\nlabel install\n  kernel /install.amd/vmlinuz\n  append vga=788 initrd=/install.amd/initrd.gz --- quiet\n",
                ),
                ("install.amd/vmlinuz", b"k"),
                ("install.amd/initrd.gz", b"i"),
            ],
            &["-J", "-R"],
        );
        let boot = find_linux_boot(&Iso::open(&iso).unwrap()).unwrap().unwrap();
        assert_eq!(boot.kernel, "/install.amd/vmlinuz");
        assert_eq!(boot.initrds, ["/install.amd/initrd.gz"]);
        assert_eq!(boot.cmdline, "vga=788 --- quiet");
        assert_eq!(boot.config, "/isolinux/isolinux.cfg");
        let relative =
            parse_syslinux("LABEL x\nLINUX vmlinuz\nINITRD a.img,b.img\n", "/boot/isolinux", "c")
                .unwrap();
        assert_eq!(relative.kernel, "/boot/isolinux/vmlinuz");
        assert_eq!(relative.initrds, ["/boot/isolinux/a.img", "/boot/isolinux/b.img"]);
    }

    #[test]
    fn grub_first_linux_entry() {
        let dir = scratch("grub");
        let iso = make_iso(
            &dir,
            "grubby",
            &[
                (
                    "boot/grub/grub.cfg",
                    b"set timeout=5\nmenuentry 'Memtest' {\n  linux16 /memtest\n}\nmenuentry 'Install' --class os {\n\tlinux /casper/vmlinuz boot=casper quiet ---\n\tinitrd /casper/initrd\n}\n",
                ),
                ("casper/vmlinuz", b"k"),
                ("casper/initrd", b"i"),
            ],
            &["-R"],
        );
        let boot = find_linux_boot(&Iso::open(&iso).unwrap()).unwrap().unwrap();
        // The memtest entry's "kernel" does not exist on the disc, so the next one is taken.
        assert_eq!(boot.kernel, "/casper/vmlinuz");
        assert_eq!(boot.initrds, ["/casper/initrd"]);
        assert_eq!(boot.cmdline, "boot=casper quiet ---");
        let one_line = parse_grub("menuentry 'x' { linux /k a=b ; initrd /i }", "g").unwrap();
        assert_eq!((one_line.kernel.as_str(), one_line.cmdline.as_str()), ("/k", "a=b"));
    }

    #[test]
    fn extraction_copies_the_kernel_and_joins_the_initrds() {
        let dir = scratch("extract");
        let kernel: Vec<u8> = (0..300_000u32).map(|i| (i * 7) as u8).collect();
        let iso = make_iso(
            &dir,
            "live",
            &[
                ("boot/grub/grub.cfg", b"menuentry 'Live' {\n linux /live/vmlinuz boot=live\n initrd /live/ucode.img /live/initrd.img\n}\n"),
                ("live/vmlinuz", &kernel),
                ("live/ucode.img", b"ucode"),
                ("live/initrd.img", b"initrd"),
            ],
            &["-R"],
        );
        let out = dir.join("boot");
        let boot = extract_linux_boot(&iso, &out).unwrap();
        assert_eq!(std::fs::read(&boot.kernel).unwrap(), kernel, "the kernel as it is");
        assert_eq!(std::fs::read(boot.initrd.as_ref().unwrap()).unwrap(), b"ucode\0\0\0initrd\0\0");
        assert_eq!(boot.cmdline, "boot=live");
        // Again, over the old files.
        assert_eq!(extract_linux_boot(&iso, &out).unwrap(), boot);
        // A disc with no Linux to boot says what it needs.
        let plain = make_iso(&dir, "plain", &[("README.TXT", b"hi")], &[]);
        let err = extract_linux_boot(&plain, &out).unwrap_err();
        assert!(matches!(err, CdBootError::NotLinux(_)));
        assert!(err.to_string().contains("firmware boot"), "{err}");
    }

    #[test]
    fn a_config_that_includes_itself_stays_bounded() {
        let dir = scratch("bomb");
        let bomb = "include isolinux.cfg\n".repeat(200) + "label x\n kernel /k\n";
        let iso = make_iso(
            &dir,
            "bomb",
            &[("isolinux/isolinux.cfg", bomb.as_bytes()), ("k", b"k")],
            &["-R"],
        );
        let start = std::time::Instant::now();
        let boot = find_linux_boot(&Iso::open(&iso).unwrap()).unwrap().unwrap();
        assert_eq!(boot.kernel, "/k");
        assert!(start.elapsed() < std::time::Duration::from_secs(20), "{:?}", start.elapsed());
    }

    #[test]
    fn an_iso_without_linux_has_none() {
        let dir = scratch("nolinux");
        let iso = make_iso(&dir, "data", &[("README", b"data disc")], &["-J"]);
        assert_eq!(find_linux_boot(&Iso::open(&iso).unwrap()).unwrap(), None);
        assert_eq!(parse_syslinux("default x\n", "/", "c"), None);
        assert_eq!(parse_grub("menuentry 'a' {\n chainloader +1\n}\n", "g"), None);
    }
}
