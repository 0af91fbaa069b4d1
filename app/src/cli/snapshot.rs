//! `vessel snapshot take | list | revert | delete | rename`: a VM's snapshot tree
//! (`vm_library::snapshots`), from the command line.
//!
//! A running VM is snapshotted with its machine: it is suspended (its state and memory
//! saved in its folder), the snapshot keeps that state, and it resumes at once from it.
//! Reverting a running VM powers it off first (its present state is given up, as the
//! revert says); a snapshot with memory then resumes where it was taken.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use vm_library::library::Library;
use vm_library::snapshots::{Snapshot, Tree};

use super::verbs::say;
use crate::vmhost::client;
use crate::vmhost::protocol::Request;

/// Waits until the VM `name`'s process has let go of it.
pub(super) fn wait_off(lib: &Library, name: &str) -> anyhow::Result<()> {
    let bundle = lib.find(name)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while bundle.running()?.is_some() {
        if Instant::now() > deadline {
            bail!("{name} did not stop within 30 s; `vessel stop --force {name}` powers it off");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Whether the VM `name` runs (its process holds its lock).
fn running(lib: &Library, name: &str) -> anyhow::Result<bool> {
    Ok(lib.find(name)?.running()?.is_some())
}

fn snapshot_json(snapshot: &Snapshot) -> serde_json::Value {
    serde_json::to_value(snapshot).unwrap_or_default()
}

/// A picture of the screen of the running VM `name` in `root`, a thumbnail's size, as PNG.
fn thumbnail(root: &std::path::Path, name: &str) -> Option<Vec<u8>> {
    let display = client::screen(root, name).ok()??;
    crate::core::screenshot::png(&crate::core::screenshot::capture(&display)?)
}

pub fn take(
    lib: &Library,
    name: &str,
    snapshot: &str,
    description: &str,
    json: bool,
) -> anyhow::Result<()> {
    let bundle = lib.find(name)?;
    let was_running = bundle.running()?.is_some();
    // A running VM's snapshot keeps a picture of its screen, as the window's does (none if
    // the screen cannot be had: the snapshot matters more than its picture).
    let picture = if was_running { thumbnail(bundle.root(), name) } else { None };
    if was_running {
        super::verbs::save_state(lib, name, json)
            .with_context(|| format!("cannot save {name}'s running state for the snapshot"))?;
        wait_off(lib, name)?;
    }
    let taken = lib.take_snapshot(name, snapshot, description, picture.as_deref());
    if was_running {
        // It goes on from its suspended state, whether or not the snapshot was taken.
        super::remote::start_in_background(lib, name).with_context(|| {
            format!("{name} was suspended for the snapshot, and did not resume")
        })?;
    }
    let taken = taken?;
    let with = if taken.memory { " with its running state" } else { "" };
    let line = format!("{name}: took snapshot {:?}{with}", taken.name);
    say(json, snapshot_json(&taken), line)
}

pub fn list(lib: &Library, name: &str, json: bool) -> anyhow::Result<()> {
    let tree = lib.snapshots(name)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&tree)?);
        return Ok(());
    }
    if tree.snapshots.is_empty() {
        println!("{name} has no snapshots; `vessel snapshot take {name:?} NAME` takes one");
        return Ok(());
    }
    print_level(&tree, None, 0);
    if tree.current.is_none() {
        println!("- you are here (no snapshot below)");
    }
    Ok(())
}

/// Prints the snapshots under `parent`, indented by depth; "you are here" below the
/// current one. Bounded by the tree's size (each snapshot printed once).
fn print_level(tree: &Tree, parent: Option<&str>, depth: usize) {
    for snap in tree.children(parent) {
        let pad = "  ".repeat(depth);
        let memory = if snap.memory { ", with memory" } else { "" };
        let about = if snap.description.is_empty() {
            String::new()
        } else {
            format!(": {}", snap.description)
        };
        println!("{pad}* {} ({}{memory}){about}", snap.name, snap.created);
        if depth < tree.snapshots.len() {
            print_level(tree, Some(&snap.id), depth + 1);
        }
        if tree.current.as_deref() == Some(snap.id.as_str()) {
            println!("{pad}  - you are here");
        }
    }
}

pub fn revert(lib: &Library, name: &str, snapshot: &str, json: bool) -> anyhow::Result<()> {
    // Refused before anything stops if there is no such snapshot.
    let target = lib.snapshots(name)?.find(snapshot).cloned().ok_or_else(|| {
        anyhow::anyhow!(
            "{name:?} has no snapshot named {snapshot:?} (`vessel snapshot list {name:?}`)"
        )
    })?;
    let was_running = running(lib, name)?;
    if was_running {
        let bundle = lib.find(name)?;
        client::request(bundle.root(), &bundle.config.name, Request::PowerOff)
            .with_context(|| format!("cannot power {name} off to revert it"))?;
        wait_off(lib, name)?;
    }
    let reverted = lib.revert_snapshot(name, &target.id)?;
    let line = if reverted.memory && was_running {
        super::remote::start_in_background(lib, name)?;
        format!("{name}: back at snapshot {:?}, running from there", reverted.name)
    } else if reverted.memory {
        format!(
            "{name}: back at snapshot {:?}, suspended there; `vessel start {name:?}` resumes it",
            reverted.name
        )
    } else {
        format!("{name}: back at snapshot {:?}, powered off", reverted.name)
    };
    say(json, snapshot_json(&reverted), line)
}

pub fn delete(lib: &Library, name: &str, snapshot: &str, json: bool) -> anyhow::Result<()> {
    let deleted = lib.delete_snapshot(name, snapshot)?;
    let line = if deleted.deferred {
        format!(
            "{name}: deleted snapshot {snapshot:?}; its disk space comes back at the next \
             snapshot operation while {name} is off"
        )
    } else {
        format!(
            "{name}: deleted snapshot {snapshot:?} ({} given back)",
            crate::core::units::size_text(deleted.reclaimed)
        )
    };
    let value = serde_json::json!({
        "name": name,
        "snapshot": snapshot,
        "reclaimed_bytes": deleted.reclaimed,
        "deferred": deleted.deferred,
    });
    say(json, value, line)
}

pub fn rename(
    lib: &Library,
    name: &str,
    snapshot: &str,
    new_name: &str,
    json: bool,
) -> anyhow::Result<()> {
    lib.rename_snapshot(name, snapshot, new_name)?;
    let line = format!("{name}: snapshot {snapshot:?} is now {new_name:?}");
    say(json, serde_json::json!({ "name": name, "snapshot": new_name }), line)
}
