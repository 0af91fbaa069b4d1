//! The sending side: passes over guest memory while the guest runs, then the switch-over.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

use super::disks::{self, ChunkBits};
use super::wire::{self, Tag};
use super::{
    Connection, Controls, MigrateOptions, Migrated, MigrationError, OnLimit, Phase, Progress,
};
use crate::persist::memory::{is_zero, pages_maybe_with_data};
use crate::vstate::dirty::{PageBits, is_set, pages};
use crate::vstate::memory::GuestMem;

const PAGE: u64 = 4096;
/// Pages read and sent as one frame at most.
const RUN: u64 = (wire::MAX_PAGES as u64) / PAGE;
/// Frames are gathered up to this much before a write.
const BUFFER: usize = 4 << 20;

/// Moves the machine `controls` drives over `conn`; `progress` hears how far it is.
pub fn send(
    controls: &dyn Controls,
    conn: &mut dyn Connection,
    options: &MigrateOptions,
    progress: &dyn Fn(&Progress),
) -> Result<Migrated, MigrationError> {
    let started = Instant::now();
    let source = controls.begin().map_err(MigrationError::Machine)?;
    let mut sender =
        Sender { conn, out: Vec::with_capacity(BUFFER), mem: source.log.memory(), released: false };
    let result = sender.run(controls, &source, options, progress, started);
    if let Err(e) = source.log.stop() {
        log::warn!("cannot turn KVM's dirty log off again: {e}");
    }
    if options.copy_disks {
        source.disks.track(false);
    }
    match result {
        Ok(migrated) => {
            controls.done();
            Ok(migrated)
        }
        Err(error) => {
            if !error.source_runs_on() {
                controls.unconfirmed();
            }
            if error.source_runs_on() {
                if let (true, Some(hand_over)) = (sender.released, &options.hand_over)
                    && let Err(e) = (hand_over.0)(false)
                {
                    log::error!("after a failed migration, cannot take back what was let go: {e}");
                }
                controls.abort();
                // The receiver hears why, if it still listens (it may be why).
                let why = match &error {
                    MigrationError::Cancelled | MigrationError::DidNotConverge { .. } => None,
                    other => Some(other.to_string()),
                };
                let _ = match why {
                    None => wire::send(&mut sender.conn, Tag::Cancel, &[]),
                    Some(why) => wire::send_text(&mut sender.conn, Tag::Failed, &why),
                };
                let _ = sender.conn.flush();
            }
            Err(error)
        }
    }
}

/// What the sending side reads of a running machine: its memory and dirty log, what it
/// needs of the receiver, and which instance it is (a guest reboot makes another).
pub struct Source {
    pub log: crate::vstate::dirty::DirtyLog,
    /// The machine's writable disks, for a migration that copies them.
    pub disks: super::disks::Disks,
    pub requirements: super::Requirements,
    pub generation: u64,
}

struct Sender<'a> {
    conn: &'a mut dyn Connection,
    out: Vec<u8>,
    mem: GuestMem,
    /// The owner's hand-over let go (`MigrateOptions::hand_over`).
    released: bool,
}

impl Sender<'_> {
    fn run(
        &mut self,
        controls: &dyn Controls,
        source: &Source,
        options: &MigrateOptions,
        progress: &dyn Fn(&Progress),
        started: Instant,
    ) -> Result<Migrated, MigrationError> {
        wire::greet(&mut self.conn, &crate::persist::format::writer())?;
        wire::read_greeting(&mut self.conn)?;
        let mut requirements = source.requirements.clone();
        if options.copy_disks {
            requirements.disks = Some(source.disks.sizes());
        }
        wire::send_value(&mut self.conn, Tag::Requirements, &requirements)?;
        self.conn.flush().map_err(wire::WireError::Io)?;
        match wire::read_frame(&mut self.conn)? {
            (Tag::Accept, _) => {}
            (Tag::Refuse, why) => return Err(MigrationError::Refused(wire::text(&why))),
            (found, _) => Err(wire::WireError::Unexpected { found, expected: "Accept" })?,
        }

        // Pass 1: every page that may hold data, with the dirty log already on, so that
        // what the guest changes behind it is sent again.
        source.log.start().map_err(|e| MigrationError::Machine(e.to_string()))?;
        // The copied disks likewise: what the guest writes from here on goes again.
        if options.copy_disks {
            source.disks.track(true);
        }
        progress(&Progress { pass: 1, ..Progress::default() });
        let pass_start = Instant::now();
        let first: PageBits = self.mem.iter().map(first_pass_pages).collect();
        let mut sent = self.send_pages(&first, true, options)?;
        let mut disk_sent = 0;
        if options.copy_disks {
            let cancelled = || options.cancel.load(Ordering::Relaxed);
            disk_sent = source.disks.send_all(&mut |t, p| self.frame(t, p), &cancelled)?;
        }
        self.end_pass(1)?;
        let mut bandwidth = rate(sent + disk_sent, pass_start.elapsed());
        // Disk chunks written and not sent yet.
        let mut disk_dirty = ChunkBits::new();

        // Then the pages changed since, until what is left is small enough.
        let mut pass = 1;
        let mut dirty;
        // What a look at the log finds was changed since the look before (the first: since
        // the log began, with pass 1).
        let mut since = pass_start;
        let converged = loop {
            dirty = source.log.take().map_err(|e| MigrationError::Machine(e.to_string()))?;
            if options.copy_disks {
                source.disks.take_written(&mut disk_dirty);
            }
            let interval = since.elapsed();
            since = Instant::now();
            let remaining = count(&dirty) * PAGE + disks::bytes_of(&disk_dirty);
            let estimate = duration_for(remaining, bandwidth);
            let report = Progress {
                phase: Phase::Copying,
                pass,
                sent: sent + disk_sent,
                remaining,
                dirty_rate: rate(remaining, interval),
                bandwidth,
                downtime_estimate: estimate,
            };
            progress(&report);
            if estimate <= options.downtime {
                break true;
            }
            if pass >= options.max_passes || started.elapsed() >= options.timeout {
                if options.on_limit == OnLimit::Cancel {
                    return Err(MigrationError::DidNotConverge { passes: pass, estimate });
                }
                break false;
            }
            pass += 1;
            let pass_start = Instant::now();
            let bytes = self.send_pages(&dirty, false, options)?;
            let disk_bytes = self.send_disks(source, &mut disk_dirty, options)?;
            self.end_pass(pass)?;
            bandwidth = rate(bytes + disk_bytes, pass_start.elapsed()).max(1);
            sent += bytes;
            disk_sent += disk_bytes;
        };

        // The switch-over: the machine stops here, the rest goes, the receiver takes it.
        let paused = Instant::now();
        let remaining = count(&dirty) * PAGE + disks::bytes_of(&disk_dirty);
        let mut report = Progress {
            phase: Phase::Stopping,
            pass: pass + 1,
            sent: sent + disk_sent,
            remaining,
            ..Default::default()
        };
        progress(&report);
        let state = controls.freeze(source.generation).map_err(MigrationError::Machine)?;
        if let Some(hand_over) = &options.hand_over {
            (hand_over.0)(true).map_err(MigrationError::Machine)?;
            self.released = true;
        }
        let last_changes = source.log.take().map_err(|e| MigrationError::Machine(e.to_string()))?;
        for (words, more) in dirty.iter_mut().zip(&last_changes) {
            words.iter_mut().zip(more).for_each(|(w, m)| *w |= m);
        }
        sent += self.send_pages(&dirty, false, options)?;
        if options.copy_disks {
            // The device threads are stopped and the disks flushed: this is all of it.
            source.disks.take_written(&mut disk_dirty);
            disk_sent += self.send_disks(source, &mut disk_dirty, options)?;
        }
        self.end_pass(pass + 1)?;
        self.flush()?;
        wire::send(&mut self.conn, Tag::State, &[&state])?;
        self.conn.flush().map_err(wire::WireError::Io)?;
        report =
            Progress { phase: Phase::HandingOver, sent: sent + disk_sent, remaining: 0, ..report };
        progress(&report);
        match wire::read_frame(&mut self.conn)? {
            (Tag::Ready, _) => {}
            (Tag::Failed, why) => return Err(MigrationError::ReceiverFailed(wire::text(&why))),
            (found, _) => Err(wire::WireError::Unexpected { found, expected: "Ready" })?,
        }
        // From here on the machine never runs here again.
        let unconfirmed = |e: &dyn std::fmt::Display| MigrationError::Unconfirmed(e.to_string());
        wire::send(&mut self.conn, Tag::Go, &[]).map_err(|e| unconfirmed(&e))?;
        self.conn.flush().map_err(|e| unconfirmed(&e))?;
        match wire::read_frame(&mut self.conn) {
            Ok((Tag::Running, _)) => {}
            Ok((Tag::Failed, why)) => return Err(unconfirmed(&wire::text(&why))),
            Ok((found, _)) => return Err(unconfirmed(&format!("it sent {found:?}"))),
            Err(e) => return Err(unconfirmed(&e)),
        }
        Ok(Migrated {
            passes: pass + 1,
            memory_bytes: sent,
            state_bytes: state.len() as u64,
            disk_bytes: disk_sent,
            total: started.elapsed(),
            downtime: paused.elapsed(),
            converged,
        })
    }

    /// Sends the pages `bits` marks, each run of pages with data as `Pages`; runs that are
    /// all zero go as `Zero` unless `skip_zero` (the receiver's memory is zero there yet).
    /// Bytes of memory sent.
    fn send_pages(
        &mut self,
        bits: &PageBits,
        skip_zero: bool,
        options: &MigrateOptions,
    ) -> Result<u64, MigrationError> {
        let mut sent = 0;
        let mut buf = vec![0u8; RUN as usize * PAGE as usize];
        for (region, words) in self.mem.clone().iter().zip(bits) {
            let base = region.start_addr().raw_value();
            let total = pages(region.len());
            let mut page = 0;
            while page < total {
                if !is_set(words, page) {
                    page += 1;
                    continue;
                }
                if options.cancel.load(Ordering::Relaxed) {
                    return Err(MigrationError::Cancelled);
                }
                let first = page;
                while page < total && page - first < RUN && is_set(words, page) {
                    page += 1;
                }
                let len = ((page * PAGE).min(region.len()) - first * PAGE) as usize;
                let at = base + first * PAGE;
                self.mem
                    .read_slice(&mut buf[..len], GuestAddress(at))
                    .map_err(|e| MigrationError::Machine(format!("reading guest memory: {e}")))?;
                sent += self.send_run(at, &buf[..len], skip_zero)?;
            }
        }
        Ok(sent)
    }

    /// One run of pages read from guest memory at `at`: pieces with data as `Pages`, all-
    /// zero pieces as `Zero` (or nothing).
    fn send_run(&mut self, at: u64, bytes: &[u8], skip_zero: bool) -> Result<u64, MigrationError> {
        let mut sent = 0;
        let mut chunks = bytes.chunks(PAGE as usize).enumerate().peekable();
        while let Some((index, chunk)) = chunks.next() {
            let zero = is_zero(chunk);
            let mut end = index * PAGE as usize + chunk.len();
            while let Some((_, next)) = chunks.peek() {
                if is_zero(next) != zero {
                    break;
                }
                end += next.len();
                chunks.next();
            }
            let start = index * PAGE as usize;
            let gpa = at + start as u64;
            if zero {
                if !skip_zero {
                    let len = (end - start) as u64;
                    self.frame(Tag::Zero, &[&gpa.to_le_bytes(), &len.to_le_bytes()])?;
                }
            } else {
                self.frame(Tag::Pages, &[&gpa.to_le_bytes(), &bytes[start..end]])?;
                sent += (end - start) as u64;
            }
        }
        Ok(sent)
    }

    /// The copied disks' chunks in `bits` (emptied); bytes of data sent.
    fn send_disks(
        &mut self,
        source: &Source,
        bits: &mut ChunkBits,
        options: &MigrateOptions,
    ) -> Result<u64, MigrationError> {
        if !options.copy_disks {
            return Ok(0);
        }
        let cancelled = || options.cancel.load(Ordering::Relaxed);
        source.disks.send_written(bits, &mut |t, p| self.frame(t, p), &cancelled)
    }

    fn end_pass(&mut self, pass: u32) -> Result<(), MigrationError> {
        self.frame(Tag::PassEnd, &[&pass.to_le_bytes()])?;
        self.flush()
    }

    /// Queues a frame, writing the queue out once it is large.
    fn frame(&mut self, tag: Tag, parts: &[&[u8]]) -> Result<(), MigrationError> {
        wire::send(&mut self.out, tag, parts)?;
        if self.out.len() >= BUFFER {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), MigrationError> {
        self.conn.write_all(&self.out).map_err(wire::WireError::Io)?;
        self.out.clear();
        self.conn.flush().map_err(wire::WireError::Io)?;
        Ok(())
    }
}

/// The first pass's pages: those that may hold data (all, if the kernel cannot say).
fn first_pass_pages(
    region: &vm_memory::GuestRegionMmap<crate::vstate::written::WrittenPages>,
) -> Vec<u64> {
    let total = pages(region.len());
    let mut words = vec![0u64; total.div_ceil(64) as usize];
    match pages_maybe_with_data(region) {
        Some(maybe) => {
            for (page, _) in maybe.iter().enumerate().filter(|(_, d)| **d) {
                words[page / 64] |= 1 << (page % 64);
            }
        }
        None => {
            for page in 0..total {
                words[(page / 64) as usize] |= 1 << (page % 64);
            }
        }
    }
    words
}

fn count(bits: &PageBits) -> u64 {
    bits.iter().flatten().map(|w| u64::from(w.count_ones())).sum()
}

/// Bytes a second.
fn rate(bytes: u64, took: Duration) -> u64 {
    (bytes as f64 / took.as_secs_f64().max(1e-6)) as u64
}

/// How long `bytes` take at `bandwidth` bytes a second.
fn duration_for(bytes: u64, bandwidth: u64) -> Duration {
    Duration::from_secs_f64(bytes as f64 / bandwidth.max(1) as f64)
}
