//! Disks that go with the machine, for hosts without shared storage (`--copy-disks`), the
//! way memory goes: while the guest runs, a first pass sends what each writable disk holds
//! of its own (`Extent`: a raw image's data, a qcow2 overlay's clusters, not what it reads
//! through to, which the receiver has as files already), each next pass the chunks the
//! guest wrote since (the device notes them before it writes), and the pause sends the
//! rest. The receiver writes them into fresh images of the same format and backing, so
//! that its disks read exactly as the sender's did at the pause.
//!
//! Data is read through the device's own image while holding the device (no other view
//! of a qcow2 image, whose metadata the device may hold in memory, would be consistent).

use std::fs::File;
use std::sync::{Arc, Mutex};

use super::MigrationError;
use super::wire::{MAX_DISK_DATA, Tag};
use crate::devices::storage::image::{DiskImage, Extent, ImageSpec};
use crate::devices::storage::{COPY_CHUNK, CopySource};
use crate::devices::virtio::pci::VirtioPciDevice;
use crate::vstate::dirty::is_set;

/// Chunks of written disk, per disk: a bit per `COPY_CHUNK` bytes.
pub type ChunkBits = Vec<Vec<u64>>;

/// The writable disks of a running machine, in the order of its configuration.
#[derive(Clone, Default)]
pub struct Disks(pub(crate) Vec<Arc<Mutex<VirtioPciDevice>>>);

/// Where a frame goes: the sender's queue.
pub type FrameSink<'a> = dyn FnMut(Tag, &[&[u8]]) -> Result<(), MigrationError> + 'a;

impl Disks {
    /// Runs `f` on disk `index`'s copy source (the device held meanwhile).
    fn with<T>(&self, index: usize, f: impl FnOnce(&mut dyn CopySource) -> T) -> Option<T> {
        let mut device = crate::sync::lock(&self.0[index]);
        device.copy_source().map(f)
    }

    /// Each disk's size in bytes.
    pub fn sizes(&self) -> Vec<u64> {
        (0..self.0.len()).map(|i| self.with(i, |d| d.copy_size()).unwrap_or(0)).collect()
    }

    /// Starts or stops noting what the guest writes.
    pub fn track(&self, on: bool) {
        for index in 0..self.0.len() {
            self.with(index, |d| d.track_writes(on));
        }
    }

    /// What was written since the last look, added to `pending`.
    pub fn take_written(&self, pending: &mut ChunkBits) {
        pending.resize(self.0.len(), Vec::new());
        for (index, bits) in pending.iter_mut().enumerate() {
            let more = self.with(index, |d| d.take_written()).unwrap_or_default();
            if bits.len() < more.len() {
                bits.resize(more.len(), 0);
            }
            bits.iter_mut().zip(&more).for_each(|(w, m)| *w |= m);
        }
    }

    /// The first pass: everything each disk holds of its own. Bytes of data sent.
    pub fn send_all(
        &self,
        frame: &mut FrameSink<'_>,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<u64, MigrationError> {
        let mut sent = 0;
        let mut buf = vec![0u8; MAX_DISK_DATA];
        for index in 0..self.0.len() {
            let mut at = 0u64;
            loop {
                if cancelled() {
                    return Err(MigrationError::Cancelled);
                }
                let extent = self.with(index, |d| d.copy_extent(at)).transpose();
                let Some((kind, len)) = extent.map_err(|e| disk_error(index, &e))?.flatten() else {
                    break;
                };
                match kind {
                    Extent::Unallocated => {}
                    Extent::Zero => send_zero(frame, index, at, len)?,
                    Extent::Data => {
                        // A piece at a time, the device free for the guest in between.
                        let end = at + len;
                        let mut piece_at = at;
                        while piece_at < end {
                            let n = (end - piece_at).min(MAX_DISK_DATA as u64) as usize;
                            sent += self.send_piece(frame, index, piece_at, &mut buf[..n])?;
                            piece_at += n as u64;
                        }
                    }
                }
                at += len;
            }
        }
        Ok(sent)
    }

    /// The chunks `bits` marks, read as the guest reads them now; `bits` is emptied.
    /// Bytes of data sent.
    pub fn send_written(
        &self,
        bits: &mut ChunkBits,
        frame: &mut FrameSink<'_>,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<u64, MigrationError> {
        let mut sent = 0;
        let mut buf = vec![0u8; MAX_DISK_DATA];
        let run_chunks = MAX_DISK_DATA as u64 / COPY_CHUNK;
        for (index, words) in bits.iter_mut().enumerate().take(self.0.len()) {
            let size = self.with(index, |d| d.copy_size()).unwrap_or(0);
            // Only as far as the bitmap goes, a word of nothing at a time.
            let total = size.div_ceil(COPY_CHUNK).min(words.len() as u64 * 64);
            let mut chunk = 0;
            while chunk < total {
                if words[(chunk / 64) as usize] == 0 {
                    chunk = (chunk / 64 + 1) * 64;
                    continue;
                }
                if !is_set(words, chunk) {
                    chunk += 1;
                    continue;
                }
                if cancelled() {
                    return Err(MigrationError::Cancelled);
                }
                let first = chunk;
                while chunk < total && chunk - first < run_chunks && is_set(words, chunk) {
                    chunk += 1;
                }
                let at = first * COPY_CHUNK;
                let n = ((chunk * COPY_CHUNK).min(size) - at) as usize;
                sent += self.send_piece(frame, index, at, &mut buf[..n])?;
            }
            words.clear();
        }
        Ok(sent)
    }

    /// Reads `buf.len()` bytes of disk `index` at `at` and sends them (as `DiskZero` if
    /// they are all zero). Bytes of data sent.
    fn send_piece(
        &self,
        frame: &mut FrameSink<'_>,
        index: usize,
        at: u64,
        buf: &mut [u8],
    ) -> Result<u64, MigrationError> {
        self.with(index, |d| d.copy_read(buf, at))
            .transpose()
            .map_err(|e| disk_error(index, &e))?;
        if crate::persist::memory::is_zero(buf) {
            send_zero(frame, index, at, buf.len() as u64)?;
            return Ok(0);
        }
        frame(Tag::DiskData, &[&(index as u32).to_le_bytes(), &at.to_le_bytes(), buf])?;
        Ok(buf.len() as u64)
    }
}

fn send_zero(
    frame: &mut FrameSink<'_>,
    index: usize,
    at: u64,
    len: u64,
) -> Result<(), MigrationError> {
    frame(Tag::DiskZero, &[&(index as u32).to_le_bytes(), &at.to_le_bytes(), &len.to_le_bytes()])
}

fn disk_error(index: usize, e: &std::io::Error) -> MigrationError {
    MigrationError::Machine(format!("reading disk {index} to copy it: {e}"))
}

/// Bytes the chunks in `bits` stand for.
pub fn bytes_of(bits: &ChunkBits) -> u64 {
    bits.iter().flatten().map(|w| u64::from(w.count_ones())).sum::<u64>() * COPY_CHUNK
}

/// The receiver's disks as the copy fills them: the machine's writable disks, opened
/// (and locked) until the machine itself opens them.
#[derive(Default)]
pub struct Targets {
    images: Vec<Box<dyn DiskImage>>,
    _locks: Vec<File>,
}

impl Targets {
    /// Wraps images already open (the fuzz target's, the tests').
    pub fn of(images: Vec<Box<dyn DiskImage>>) -> Self {
        Targets { images, _locks: Vec::new() }
    }

    /// Opens the machine's writable disks `specs`, which must be `sizes` bytes each (as
    /// the sender's are); why not, if they cannot take the copy.
    pub fn open(specs: &[&ImageSpec], sizes: &[u64]) -> Result<Self, String> {
        if specs.len() != sizes.len() {
            return Err(format!(
                "the sender copies {} writable disks; the VM's configuration here has {}",
                sizes.len(),
                specs.len()
            ));
        }
        let mut targets = Targets::default();
        for (spec, &size) in specs.iter().zip(sizes) {
            let path = spec.path.display();
            let file = crate::devices::storage::open_regular(&spec.path, true)
                .map_err(|e| format!("cannot open {path} to copy the disk into: {e}"))?;
            crate::devices::storage::lock::ofd_lock(&file, &spec.path, true)
                .map_err(|e| e.to_string())?;
            let image = spec.open(&file, true).map_err(|e| format!("{path}: {e}"))?;
            if image.size() != size {
                return Err(format!(
                    "{path} holds {} bytes; the sender's disk holds {size}",
                    image.size()
                ));
            }
            targets.images.push(image);
            targets._locks.push(file);
        }
        Ok(targets)
    }

    /// Writes a `DiskData` frame's bytes (disk, offset, data); bytes written.
    pub fn data(&mut self, body: &[u8]) -> Result<u64, MigrationError> {
        let (head, data) = body.split_at(12.min(body.len()));
        let (index, at) = fields(head, Tag::DiskData)?;
        let image = self.image(index, at, data.len() as u64)?;
        image.write_at(data, at).map_err(|e| write_error(index, &e))?;
        Ok(data.len() as u64)
    }

    /// Zeroes what a `DiskZero` frame names (disk, offset, length).
    pub fn zero(&mut self, body: &[u8]) -> Result<(), MigrationError> {
        let (index, at) = fields(body, Tag::DiskZero)?;
        let len = body
            .get(12..20)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
            .ok_or_else(|| short(Tag::DiskZero))?;
        let image = self.image(index, at, len)?;
        image.zero(at, len).map_err(|e| write_error(index, &e))
    }

    /// Makes everything written durable and lets the disks go (the machine opens them).
    pub fn finish(self) -> Result<(), MigrationError> {
        for (index, mut image) in self.images.into_iter().enumerate() {
            image.flush().map_err(|e| write_error(index as u32, &e))?;
        }
        Ok(())
    }

    /// Disk `index`, if `len` bytes at `at` lie inside it.
    fn image(
        &mut self,
        index: u32,
        at: u64,
        len: u64,
    ) -> Result<&mut Box<dyn DiskImage>, MigrationError> {
        let image = self.images.get_mut(index as usize).ok_or_else(|| {
            MigrationError::Protocol(format!("disk {index}: the machine has no such disk to copy"))
        })?;
        if at.checked_add(len).is_none_or(|end| end > image.size()) {
            return Err(MigrationError::Protocol(format!(
                "disk {index} at {at:#x} (+{len:#x}) is beyond its end"
            )));
        }
        Ok(image)
    }
}

/// A disk frame's disk index (u32) and offset (u64).
fn fields(body: &[u8], tag: Tag) -> Result<(u32, u64), MigrationError> {
    let index = body.get(0..4).ok_or_else(|| short(tag))?;
    let at = body.get(4..12).ok_or_else(|| short(tag))?;
    Ok((
        u32::from_le_bytes(index.try_into().expect("4 bytes")),
        u64::from_le_bytes(at.try_into().expect("8 bytes")),
    ))
}

fn short(tag: Tag) -> MigrationError {
    MigrationError::Protocol(format!("a {tag:?} frame too short for its fields"))
}

fn write_error(index: u32, e: &std::io::Error) -> MigrationError {
    MigrationError::Machine(format!("writing the copy of disk {index}: {e}"))
}
