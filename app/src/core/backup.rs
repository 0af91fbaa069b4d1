//! Backing up a VM whether it runs or not, as `vessel backup` and the window's VM ▸ Back
//! Up… do: a VM that is off is frozen and read by `vm_library::backup` alone; a running
//! one's machine switches its disks to the freeze's overlays (its process does, over the
//! control socket, while the guest pauses), and the copy is read while it runs on.

use std::path::{Path, PathBuf};
use std::time::Duration;

use vm_library::backup::{self, Point, Progress};
use vm_library::bundle::Bundle;
use vm_library::library::Library;

use crate::vmhost::client;
use crate::vmhost::protocol::{Reply, Request};

/// A backup made.
#[derive(Debug)]
pub struct Done {
    pub point: Point,
    /// How long the guest was paused for it, if it ran.
    pub paused: Option<Duration>,
}

/// Backs up the VM `name` of `lib` into the set `set`, telling `progress` how far it is.
pub fn back_up(
    lib: &Library,
    name: &str,
    set: &Path,
    progress: &mut dyn FnMut(Progress),
) -> anyhow::Result<Done> {
    let mut bundle = lib.find(name)?;
    let mut paused = None;
    let point = if bundle.running()?.is_some() {
        let root = bundle.root().to_path_buf();
        let mut freeze = |_: &Bundle, overlays: &[PathBuf]| -> Result<(), String> {
            let request = Request::FreezeDisks { overlays: overlays.to_vec() };
            match client::request(&root, name, request) {
                Ok(Reply::Frozen { paused_us }) => {
                    paused = Some(Duration::from_micros(paused_us));
                    Ok(())
                }
                Ok(Reply::Failed { error }) => Err(error),
                Ok(other) => Err(format!("its process answered {other:?}")),
                Err(e) => Err(e.to_string()),
            }
        };
        backup::backup(lib, &mut bundle, set, Some(&mut freeze), progress)?
    } else {
        backup::backup(lib, &mut bundle, set, None, progress)?
    };
    Ok(Done { point, paused })
}
