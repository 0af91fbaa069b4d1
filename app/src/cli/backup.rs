//! `vessel backup NAME`, `vessel backups NAME`, `vessel backup verify`, `vessel restore`:
//! a VM's backup set (`vm_library::backup`) from the command line, with progress on a
//! terminal and a summary (bytes read, written, deduplicated; time).

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::bail;
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
        backup::default_set(lib, backup)
    }
}

pub fn backup(
    lib: &Library,
    name: &str,
    to: Option<&Path>,
    keep: Option<usize>,
    json: bool,
) -> anyhow::Result<()> {
    let bundle = lib.find(name)?;
    if let Some(pid) = bundle.running()? {
        bail!(
            "{name} is running (pid {pid}): power it off or suspend it first (vessel suspend \
             {name:?}); backing up a running VM is not there yet"
        );
    }
    let set = to.map_or_else(|| backup::default_set(lib, name), Path::to_path_buf);
    let show = !json && std::io::stderr().is_terminal();
    let started = Instant::now();
    let mut progress = |done: u64, total: u64| {
        if show {
            eprint!("\r\x1b[K{name}: {} of {}", size_text(done), size_text(total));
            let _ = std::io::stderr().flush();
        }
    };
    let point = backup::backup(lib, &bundle, &set, &mut progress);
    if show {
        eprintln!();
    }
    let point = point?;
    let pruned = match keep {
        Some(n) => backup::prune(&set, n)?,
        None => Vec::new(),
    };
    let took = started.elapsed();
    let value = serde_json::json!({
        "name": name, "set": set, "point": point.id, "read": point.read,
        "written": point.written, "deduplicated": point.deduplicated,
        "ms": took.as_millis() as u64, "pruned": pruned,
    });
    let mut line = format!(
        "{name}: backup point {} in {} ({} read, {} written, {} already in the set; {:.1} s)",
        point.id,
        set.display(),
        size_text(point.read),
        size_text(point.written),
        size_text(point.deduplicated),
        took.as_secs_f64()
    );
    if !pruned.is_empty() {
        line.push_str(&format!("\nremoved the older points {}", pruned.join(", ")));
    }
    say(json, value, line)
}

pub fn list(lib: &Library, name: &str, to: Option<&Path>, json: bool) -> anyhow::Result<()> {
    let set = to.map_or_else(|| backup::default_set(lib, name), Path::to_path_buf);
    let points = backup::points(&set)?;
    let value = serde_json::json!(
        points
            .iter()
            .map(|p| serde_json::json!({
                "id": p.id, "created": p.created, "read": p.read, "written": p.written,
                "disks": p.disks.len(),
            }))
            .collect::<Vec<_>>()
    );
    let mut text = format!("{} point(s) in {}", points.len(), set.display());
    for p in &points {
        text.push_str(&format!(
            "\n  {}  {}  {} of disks, {} stored by it",
            p.id,
            p.created,
            size_text(p.read),
            size_text(p.written)
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
