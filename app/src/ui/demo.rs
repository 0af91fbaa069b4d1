//! The demo VM an empty library offers: Vessel's default Linux guest (a Debian kernel and a
//! busybox initramfs, `assets/linux-guest`), built from Debian packages on first use and
//! cached under ~/.cache/vessel, made into a library VM that boots it directly.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use vm_library::library::Library;

use super::progress::Progress;
use crate::core::create::{NewVm, create_bundle};

/// The recipe, carried in the binary so an installed `vessel` can build it.
const RECIPE: [(&str, &str); 3] = [
    ("build.sh", include_str!("../../../assets/linux-guest/build.sh")),
    ("init", include_str!("../../../assets/linux-guest/init")),
    ("drmdraw.c", include_str!("../../../assets/linux-guest/drmdraw.c")),
];

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("cannot make a temporary folder for the recipe")]
    Temp(#[source] std::io::Error),
    #[error("cannot write the recipe into {}", .0.display())]
    Write(PathBuf, #[source] std::io::Error),
    #[error("cannot run bash")]
    Bash(#[source] std::io::Error),
    #[error(
        "building the Linux guest failed ({status}). It needs apt-get (Debian or Ubuntu) and \
         the packages busybox-static, kmod, cpio and gcc with libdrm-dev; tools/install-deps \
         installs them.\n{tail}"
    )]
    Build { status: std::process::ExitStatus, tail: String },
    #[error("the guest recipe printed {0:?}, which has no vmlinuz")]
    NoKernel(PathBuf),
    #[error(transparent)]
    Library(#[from] vm_library::library::LibraryError),
    #[error(transparent)]
    Create(#[from] crate::core::create::CreateError),
}

/// Builds (or finds) the guest and creates the demo VM in the library at `dir`; returns its
/// folder.
pub fn make(dir: &Path, taken: &[String], progress: &Progress) -> Result<PathBuf, DemoError> {
    progress.set("building the Linux guest from Debian packages");
    let guest = build_guest(progress)?;
    progress.set("creating the VM");
    let name = super::wizard::free_name("Demo Linux", taken);
    let lib = Library::open(dir)?;
    let vm = NewVm {
        vcpus: Some(1),
        memory_bytes: Some(512 << 20),
        disk_bytes: Some(0),
        kernel: Some(guest.join("vmlinuz")),
        initrd: Some(guest.join("initrd.gz")),
        // Kernel messages on the serial port and the screen; the shell (/dev/console, the
        // last one) on the screen, typed into with the virtio keyboard.
        cmdline: "console=ttyS0 console=tty0".into(),
        ..NewVm::named(name)
    };
    let (bundle, _) = create_bundle(&lib, &vm)?;
    Ok(bundle.root().to_path_buf())
}

/// Runs the recipe; returns the folder with vmlinuz and initrd.gz.
fn build_guest(progress: &Progress) -> Result<PathBuf, DemoError> {
    // A private folder of a fresh random name (0700): a fixed name in /tmp could be made
    // beforehand by another user, who would then own the script that runs here.
    let temp = tempfile::Builder::new()
        .prefix("vessel-demo-recipe-")
        .tempdir()
        .map_err(DemoError::Temp)?;
    let work = temp.path().to_path_buf();
    for (name, text) in RECIPE {
        std::fs::write(work.join(name), text).map_err(|e| DemoError::Write(work.clone(), e))?;
    }
    let mut child = Command::new("bash")
        .arg(work.join("build.sh"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(DemoError::Bash)?;
    let stderr = child.stderr.take().expect("piped");
    let mut log = Vec::new();
    for line in BufReader::new(stderr).lines().map_while(Result::ok) {
        progress.set(line.chars().take(80).collect::<String>());
        log.push(line);
    }
    let output = child.wait_with_output().map_err(DemoError::Bash)?;
    drop(temp);
    if !output.status.success() {
        let tail: Vec<_> = log.iter().rev().take(6).rev().cloned().collect();
        return Err(DemoError::Build { status: output.status, tail: tail.join("\n") });
    }
    let dir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    if !dir.join("vmlinuz").is_file() {
        return Err(DemoError::NoKernel(dir));
    }
    Ok(dir)
}
