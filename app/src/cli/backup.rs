//! `vessel backup NAME`, `vessel backups NAME`, `vessel backup verify`, `vessel restore`:
//! a VM's backup set (`vm_library::backup`) from the command line, with progress on a
//! terminal and a summary (bytes read, written, deduplicated, not read; the guest's pause;
//! time). A running VM is backed up as it runs (`core::backup`); with `--memory` it is
//! suspended for it instead, so the point holds its running state.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use vm_library::backup;
use vm_library::library::Library;

use super::verbs::say;
use crate::core::units::size_text;

/// The set `backup` names: a set folder, or the default set of the VM of that name.
fn set_of(lib: &Library, backup: &str) -> PathBuf {
    let path = Path::new(backup);
    if path.join("vessel-backup.toml").is_file() {
        path.to_path_buf()
    } else {
        backup::default_set(lib.dir(), backup)
    }
}

pub fn backup(
    lib: &Library,
    name: &str,
    to: Option<&Path>,
    keep: Option<usize>,
    memory: bool,
    json: bool,
) -> anyhow::Result<()> {
    let set = to.map_or_else(|| backup::default_set(lib.dir(), name), Path::to_path_buf);
    let show = !json && std::io::stderr().is_terminal();
    let started = Instant::now();
    let mut progress = |p: backup::Progress| {
        if show {
            eprint!("\r\x1b[K{name}: {} of {} read", size_text(p.read), size_text(p.to_read));
            let _ = std::io::stderr().flush();
        }
    };
    // With its memory, a running VM is suspended for the backup and resumed after it.
    let suspend = memory && lib.find(name)?.running()?.is_some();
    if suspend {
        super::verbs::save_state(lib, name, json)
            .with_context(|| format!("cannot save {name}'s running state for the backup"))?;
        super::snapshot::wait_off(lib, name)?;
    }
    let done = crate::core::backup::back_up(lib, name, &set, &mut progress);
    if suspend {
        super::remote::start_in_background(lib, name)
            .with_context(|| format!("{name} was suspended for the backup, and did not resume"))?;
    }
    if show {
        eprintln!();
    }
    let done = done?;
    let point = &done.point;
    let pruned = match keep {
        Some(n) => backup::prune(&set, n)?,
        None => Vec::new(),
    };
    let took = started.elapsed();
    let value = serde_json::json!({
        "name": name, "set": set, "point": point.id, "read": point.read,
        "written": point.written, "deduplicated": point.deduplicated,
        "unchanged": point.unchanged, "holes": point.holes, "full": point.full,
        "paused_us": done.paused.map(|d| d.as_micros() as u64),
        "memory": has_memory(point),
        "ms": took.as_millis() as u64, "pruned": pruned,
    });
    let mut line = format!(
        "{name}: backup point {} in {} ({} read, {} written, {} already in the set; not \
         read: {} unchanged, {} never written; {:.1} s)",
        point.id,
        set.display(),
        size_text(point.read),
        size_text(point.written),
        size_text(point.deduplicated),
        size_text(point.unchanged),
        size_text(point.holes),
        took.as_secs_f64()
    );
    if let Some(paused) = done.paused {
        line.push_str(&format!(
            "\nit ran on meanwhile, paused {:.1} ms",
            paused.as_secs_f64() * 1e3
        ));
    }
    if let Some(why) = &point.full {
        line.push_str(&format!("\nits disks were read whole: {why}"));
    }
    if !pruned.is_empty() {
        line.push_str(&format!("\nremoved the older points {}", pruned.join(", ")));
    }
    say(json, value, line)
}

/// Whether the point holds the VM's running state (its restore resumes the guest).
fn has_memory(point: &backup::Point) -> bool {
    point.files.iter().any(|f| f.file.as_os_str() == vm_library::suspended::STATE_FILE)
}

pub fn list(lib: &Library, name: &str, to: Option<&Path>, json: bool) -> anyhow::Result<()> {
    let set = to.map_or_else(|| backup::default_set(lib.dir(), name), Path::to_path_buf);
    let points = backup::points(&set)?;
    let value = serde_json::json!(
        points
            .iter()
            .map(|p| serde_json::json!({
                "id": p.id, "created": p.created, "read": p.read, "written": p.written,
                "unchanged": p.unchanged, "holes": p.holes, "full": p.full,
                "memory": has_memory(p), "disks": p.disks.len(), "snapshot": p.snapshot,
                "seconds": p.seconds,
            }))
            .collect::<Vec<_>>()
    );
    let mut text = format!("{} point(s) in {}", points.len(), set.display());
    for (n, p) in points.iter().enumerate() {
        // The first point of a set, or one read whole, stands on its own; the others
        // read only what changed since the point before.
        let kind =
            if n == 0 || p.full.is_some() || p.node.is_none() { "whole" } else { "since the last" };
        text.push_str(&format!(
            "\n  {}  {}  {kind}: {} read, {} stored by it{}{}",
            p.id,
            p.created,
            size_text(p.read),
            size_text(p.written),
            if has_memory(p) { ", with its running state" } else { "" },
            p.snapshot.as_ref().map(|s| format!(", after snapshot {s:?}")).unwrap_or_default()
        ));
    }
    say(json, value, text)
}

pub fn verify(lib: &Library, backup_name: &str, json: bool) -> anyhow::Result<()> {
    let set = set_of(lib, backup_name);
    let damaged = backup::verify(&set)?;
    let value = serde_json::json!({
        "set": set,
        "damaged": damaged.iter().map(|(c, p)| serde_json::json!({"chunk": c, "points": p})).collect::<Vec<_>>(),
    });
    if damaged.is_empty() {
        return say(json, value, format!("{}: every chunk matches its checksum", set.display()));
    }
    if json {
        println!("{value}");
    }
    let list: Vec<String> =
        damaged.iter().map(|(c, p)| format!("{c}, needed by point(s) {}", p.join(", "))).collect();
    bail!("{} is damaged:\n  {}", set.display(), list.join("\n  "))
}

pub fn restore(
    lib: &Library,
    backup_name: &str,
    point: Option<&str>,
    as_name: Option<&str>,
    json: bool,
) -> anyhow::Result<()> {
    let set = set_of(lib, backup_name);
    let bundle = backup::restore(lib, &set, point, as_name)?;
    let name = &bundle.config.name;
    let value = serde_json::json!({ "name": name, "path": bundle.root() });
    say(json, value, format!("Restored {name} into {}", bundle.root().display()))
}
