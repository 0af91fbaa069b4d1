//! `vessel migrate NAME --to ADDRESS`: connects to the receiving Vessel and hands the
//! connection to the VM's process, which moves the machine over it (`vmm::migration`);
//! says how far it is on a terminal, and what it took.

use std::io::{IsTerminal, Write};

use anyhow::bail;
use vm_library::library::Library;

use super::verbs::say;
use crate::core::migration::Address;
use crate::vmhost::client;
use crate::vmhost::protocol::{Reply, Request};

/// How the migration goes (`vessel migrate`'s options).
pub struct How {
    pub downtime_ms: u64,
    pub max_passes: u32,
    pub cancel_at_limit: bool,
    pub insecure: bool,
}

pub fn migrate(lib: &Library, name: &str, to: &str, how: &How, json: bool) -> anyhow::Result<()> {
    let address = Address::parse(to)?;
    let bundle = lib.find(name)?;
    if bundle.running()?.is_none() {
        bail!(
            "{name} is not running: only a running VM migrates (a VM that is off moves with `vessel export` and `vessel import`)"
        );
    }
    let conn = address.connect(how.insecure)?;
    let request = Request::Migrate {
        downtime_ms: how.downtime_ms,
        max_passes: how.max_passes,
        cancel_at_limit: how.cancel_at_limit,
    };
    let show = !json && std::io::stderr().is_terminal();
    let mut shown = false;
    let progress = |reply: &Reply| {
        if let Reply::Migrating {
            phase,
            pass,
            sent,
            remaining,
            dirty_rate,
            downtime_estimate_ms,
            ..
        } = reply
            && show
        {
            eprint!(
                "\r\x1b[K{name}: {phase}, pass {pass}: {} MiB sent, {} MiB left, changing {} MiB/s, \
                 pause now {downtime_estimate_ms} ms",
                sent >> 20,
                remaining >> 20,
                dirty_rate >> 20
            );
            let _ = std::io::stderr().flush();
            shown = true;
        }
    };
    let answer = client::request_with_fd_watching(bundle.root(), name, request, &conn, progress);
    drop(conn);
    if shown {
        eprintln!();
    }
    let Reply::Migrated { passes, memory_bytes, total_ms, downtime_ms, converged } = answer? else {
        bail!("{name}'s VM process gave no account of the migration");
    };
    let line = format!(
        "{name}: moved to {address} in {total_ms} ms ({passes} passes, {} MiB of memory); \
         paused {downtime_ms} ms{}",
        memory_bytes >> 20,
        if converged {
            ""
        } else {
            " (the guest changed its memory faster than the link carried it)"
        }
    );
    let value = serde_json::json!({
        "name": name,
        "to": address.to_string(),
        "passes": passes,
        "memory_bytes": memory_bytes,
        "total_ms": total_ms,
        "downtime_ms": downtime_ms,
        "converged": converged,
    });
    say(json, value, line)
}
