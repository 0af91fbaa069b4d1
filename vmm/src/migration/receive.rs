//! The receiving side: checks the machine can run here, takes its memory pass after pass,
//! builds it from its state, and runs it once the sender has let go.

use std::time::Instant;

use vm_memory::{Bytes, GuestAddress};

use super::wire::{self, Tag, WireError};
use super::{Connection, MigrationError, Requirements, cpu, disks};
use crate::machine::{Machine, MachineConfig, MachineHandle, WakeFn};
use crate::persist::memory::MemoryLayout;
use crate::vstate::memory::{GuestMem, create_guest_memory};

/// How the receiving side judges what comes.
#[derive(Clone, Debug, Default)]
pub struct ReceiveOptions {
    /// CPU features (Linux names, as `cpu` knows them) to count as missing on this host
    /// although its KVM offers them: to keep a machine movable to an older host, and to
    /// test the refusal.
    pub hide_cpu_features: Vec<String>,
    /// The machine's disks here are fresh copies to fill (the VM's folder came with the
    /// migration): the sender must send its disks. Else the sender must not: the disks
    /// here are the sender's own, on shared storage, and never written by a sender.
    pub copy_disks: bool,
}

/// What the receiver has got, for a progress display.
#[derive(Clone, Copy, Debug, Default)]
pub struct Received {
    pub passes: u32,
    pub bytes: u64,
}

/// Takes the machine that comes over `conn` as the machine `config` describes (built
/// here: its disks, its devices). Returns it running; on any failure nothing of it is
/// left and the sender's machine runs on.
pub fn receive(
    config: MachineConfig,
    wake: Option<WakeFn>,
    conn: &mut dyn Connection,
    options: &ReceiveOptions,
    progress: &dyn Fn(Received),
) -> Result<MachineHandle, MigrationError> {
    receive_with(config, wake, conn, options, progress, &mut || Ok(()))
}

/// `receive`, calling `before_build` once the machine's state has come and before the
/// machine is built (taking its disks): what the receiving side takes over first (a VM
/// process's run lock, which the sender let go at the switch-over).
pub fn receive_with(
    config: MachineConfig,
    wake: Option<WakeFn>,
    conn: &mut dyn Connection,
    options: &ReceiveOptions,
    progress: &dyn Fn(Received),
    before_build: &mut dyn FnMut() -> Result<(), String>,
) -> Result<MachineHandle, MigrationError> {
    let result = receive_inner(config, wake, conn, options, progress, before_build);
    if let Err(error) = &result {
        // The sender hears why (unless it is the one who ended it, or was told already).
        if !matches!(
            error,
            MigrationError::Incompatible(_)
                | MigrationError::SenderCancelled
                | MigrationError::SenderFailed(_)
                | MigrationError::Wire(WireError::Io(_))
        ) {
            let _ = wire::send_text(conn, Tag::Failed, &error.to_string());
        }
    }
    result
}

fn receive_inner(
    config: MachineConfig,
    wake: Option<WakeFn>,
    conn: &mut dyn Connection,
    options: &ReceiveOptions,
    progress: &dyn Fn(Received),
    before_build: &mut dyn FnMut() -> Result<(), String>,
) -> Result<MachineHandle, MigrationError> {
    wire::greet(conn, &crate::persist::format::writer())?;
    wire::read_greeting(conn)?;
    let requirements: Requirements = match wire::read_frame(conn)? {
        (Tag::Requirements, body) => wire::decode(Tag::Requirements, &body)?,
        (found, _) => Err(WireError::Unexpected { found, expected: "Requirements" })?,
    };
    let targets = check(&config, &requirements, options).and_then(|()| match &requirements.disks {
        Some(sizes) => disks::Targets::open(&writable_disks(&config), sizes),
        None => Ok(disks::Targets::default()),
    });
    let mut targets = match targets {
        Ok(targets) => targets,
        Err(why) => {
            wire::send_text(conn, Tag::Refuse, &why)?;
            return Err(MigrationError::Incompatible(why));
        }
    };
    let mem = create_guest_memory(config.memory_bytes)
        .map_err(|e| MigrationError::Machine(crate::machine::error_chain(&e)))?;
    wire::send(conn, Tag::Accept, &[])?;
    conn.flush().map_err(WireError::Io)?;

    let state = receive_memory(conn, &requirements.memory, &mem, &mut targets, progress)?;
    targets.finish()?;
    let state: crate::persist::machine::MachineState = crate::persist::format::decode(&state)
        .map_err(|e| MigrationError::Protocol(format!("the machine's state: {e}")))?;
    if state.memory != requirements.memory {
        return Err(MigrationError::Protocol(
            "the state's memory layout is not the one stated".into(),
        ));
    }
    before_build().map_err(MigrationError::Machine)?;
    let built = Instant::now();
    let handle = Machine::from_migration(config, wake, state, mem)
        .map_err(|e| MigrationError::Machine(crate::machine::error_chain(&e)))?;
    log::info!("the migrated machine was built in {:?}", built.elapsed());
    wire::send(conn, Tag::Ready, &[])?;
    conn.flush().map_err(WireError::Io)?;
    match wire::read_frame(conn)? {
        (Tag::Go, _) => {}
        (found, body) => return Err(ended(found, &body, "Go")),
    }
    handle.start().map_err(|e| MigrationError::Machine(crate::machine::error_chain(&e)))?;
    // The machine runs here now, whatever becomes of the sender's hearing it.
    if let Err(e) =
        wire::send(conn, Tag::Running, &[]).and_then(|()| conn.flush().map_err(WireError::Io))
    {
        log::warn!("the machine runs; the sender did not hear it: {e}");
    }
    Ok(handle)
}

/// What a frame other than the `expected` one means: the sender ended the migration, or
/// broke the protocol.
fn ended(found: Tag, body: &[u8], expected: &'static str) -> MigrationError {
    match found {
        Tag::Cancel => MigrationError::SenderCancelled,
        Tag::Failed => MigrationError::SenderFailed(wire::text(body)),
        found => WireError::Unexpected { found, expected }.into(),
    }
}

/// The guest's memory as the sender sends it, pass after pass, into `mem` (laid out as
/// `layout`, which this host checked against the machine's configuration), until the
/// machine's state comes: its bytes. Every address is checked against `layout`; every
/// frame is bounded (`wire`).
pub fn receive_memory(
    conn: &mut dyn Connection,
    layout: &MemoryLayout,
    mem: &GuestMem,
    disks: &mut disks::Targets,
    progress: &dyn Fn(Received),
) -> Result<Vec<u8>, MigrationError> {
    let mut received = Received::default();
    loop {
        let (tag, len) = wire::read_head(conn)?;
        match tag {
            Tag::Pages => {
                let body = wire::read_body(conn, len)?;
                let (gpa, bytes) = body.split_at(8.min(body.len()));
                let gpa = u64::from_le_bytes(gpa.try_into().map_err(|_| short(tag))?);
                within(layout, gpa, bytes.len() as u64)?;
                mem.write_slice(bytes, GuestAddress(gpa))
                    .map_err(|e| MigrationError::Protocol(format!("pages at {gpa:#x}: {e}")))?;
                received.bytes += bytes.len() as u64;
            }
            Tag::Zero => {
                let body = wire::read_body(conn, len)?;
                let word = |at: usize| {
                    body.get(at..at + 8)
                        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
                        .ok_or_else(|| short(tag))
                };
                let (gpa, len) = (word(0)?, word(8)?);
                within(layout, gpa, len)?;
                zero(mem, gpa, len)?;
            }
            Tag::DiskData => {
                received.bytes += disks.data(&wire::read_body(conn, len)?)?;
            }
            Tag::DiskZero => disks.zero(&wire::read_body(conn, len)?)?,
            Tag::PassEnd => {
                wire::read_body(conn, len)?;
                received.passes += 1;
                progress(received);
            }
            Tag::State => return Ok(wire::read_body(conn, len)?),
            found => return Err(ended(found, &wire::read_body(conn, len)?, "memory or the state")),
        }
    }
}

fn short(tag: Tag) -> MigrationError {
    MigrationError::Protocol(format!("a {tag:?} frame too short for its fields"))
}

/// Whether this host can run the machine `requirements` describes as `config` does; why
/// not.
fn check(
    config: &MachineConfig,
    requirements: &Requirements,
    options: &ReceiveOptions,
) -> Result<(), String> {
    let expected = crate::machine::memory_layout(config.memory_bytes);
    if requirements.memory != expected {
        return Err(format!(
            "the machine's memory ({} MiB) is not what its configuration here says ({} MiB)",
            requirements.memory.total() >> 20,
            expected.total() >> 20
        ));
    }
    if requirements.vcpus != config.vcpus {
        return Err(format!(
            "the machine has {} vCPUs; its configuration here says {}",
            requirements.vcpus, config.vcpus
        ));
    }
    match (&requirements.disks, options.copy_disks) {
        (Some(_), false) => {
            return Err("the sender copies the VM's disks (--copy-disks), but the VM is in \
                        this library already: migrate without --copy-disks (its disks are on \
                        storage both hosts share)"
                .into());
        }
        (None, true) => {
            return Err("the VM's disks are not here: migrate with --copy-disks".into());
        }
        _ => {}
    }
    let mut host = crate::machine::host_cpuid(config.vcpus).map_err(|e| e.to_string())?;
    cpu::hide(&mut host, &options.hide_cpu_features)?;
    let missing = cpu::missing(&requirements.cpuid, &host);
    if !missing.is_empty() {
        return Err(format!(
            "the guest uses CPU features this host lacks: {}; migrate it to a host with them, \
             or power it off and boot it here",
            missing.join(", ")
        ));
    }
    Ok(())
}

/// The machine's writable disks, in the order of its configuration (the sender's order).
fn writable_disks(config: &MachineConfig) -> Vec<&crate::devices::storage::image::ImageSpec> {
    (config.devices.iter())
        .filter_map(|d| match d {
            crate::machine::DeviceConfig::Block { image, read_only: false } => Some(image),
            _ => None,
        })
        .collect()
}

/// Refuses a range outside the stated guest RAM (a hostile or broken sender).
fn within(layout: &MemoryLayout, gpa: u64, len: u64) -> Result<(), MigrationError> {
    let end = gpa.checked_add(len);
    let inside = layout
        .regions
        .iter()
        .any(|&(start, size)| gpa >= start && end.is_some_and(|end| end <= start + size));
    if inside {
        Ok(())
    } else {
        Err(MigrationError::Protocol(format!(
            "memory at {gpa:#x} (+{len:#x}) is outside the machine's RAM"
        )))
    }
}

/// Makes `len` bytes at `gpa` zero (bounded: a megabyte at a time).
fn zero(mem: &GuestMem, gpa: u64, len: u64) -> Result<(), MigrationError> {
    let zeros = vec![0u8; 1 << 20];
    let mut done = 0;
    while done < len {
        let n = (len - done).min(zeros.len() as u64);
        mem.write_slice(&zeros[..n as usize], GuestAddress(gpa + done))
            .map_err(|e| MigrationError::Protocol(format!("zero at {gpa:#x}: {e}")))?;
        done += n;
    }
    Ok(())
}
