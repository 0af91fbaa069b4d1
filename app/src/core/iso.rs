//! Looking into an ISO before it becomes a VM's CD: the OS on it, with what to give it on
//! this host, and whether it boots a Linux kernel Vessel can start directly.

use std::path::Path;

use vm_library::iso::os::OsGuess;
use vm_library::iso::{Iso, IsoError, boot_config, os};
use vm_library::validate::Host;

/// What an ISO holds, as far as making a VM of it goes.
#[derive(Clone, Debug, PartialEq)]
pub struct IsoFacts {
    /// The OS it installs, with resources already fitted to this host.
    pub os: Option<OsGuess>,
    /// It has a Linux kernel (isolinux or GRUB entry) Vessel can boot directly.
    pub linux: bool,
}

/// Reads `iso`'s volume descriptors and boot configuration.
pub fn inspect(iso: &Path) -> Result<IsoFacts, IsoError> {
    let image = Iso::open(iso)?;
    let linux = boot_config::find_linux_boot(&image)?.is_some();
    let mut guess = os::detect(image.info(), linux);
    if let Some(g) = &mut guess {
        let host = Host::this();
        g.recommended.vcpus = g.recommended.vcpus.min(host.cores);
        // Leave the host at least half its memory.
        g.recommended.memory_mib = g.recommended.memory_mib.min(host.memory_mib / 2).max(256);
    }
    Ok(IsoFacts { os: guess, linux })
}
