//! Moving data between the images of a backing chain, as snapshots need: folding an
//! image into the one it reads through (deleting a snapshot), folding a raw base into the
//! qcow2 image above it, and flattening a chain into one image (a full clone).
//!
//! Each copy keeps what the image on top reads unchanged at every moment, so a process
//! killed part-way leaves every image reading as before and the copy can simply be done
//! again.

use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use imago::format::PreallocateMode;
use imago::qcow2::Qcow2;
use imago::raw::Raw;
use imago::{DenyImplicitOpenGate, FormatAccess, FormatDriverBuilder, ShallowMapping};

use super::{BackingPolicy, DiskError, Layer, backing_chain, io_err, open_qcow2, storage};
use crate::config::DiskFormat;

type Access = FormatAccess<imago::file::File>;

/// How much is copied at a time.
const CHUNK: u64 = 1 << 20;

/// Opens `path` (in `format`) with exactly the images it reads through, each checked
/// against `policy` (`backing_chain`); only the image itself is opened for writing.
pub(crate) fn open_chain(
    path: &Path,
    format: DiskFormat,
    policy: &BackingPolicy,
    writable: bool,
) -> Result<Access, DiskError> {
    let chain = backing_chain(path, format, policy)?;
    open_layers(path, format, &chain, writable)
}

fn open_layers(
    path: &Path,
    format: DiskFormat,
    below: &[Layer],
    writable: bool,
) -> Result<Access, DiskError> {
    let gate = DenyImplicitOpenGate::default();
    let file = storage(path, writable)?;
    let opened = match format {
        DiskFormat::Raw => Raw::<imago::file::File>::builder(file)
            .write(writable)
            .open(gate)
            .map(FormatAccess::new),
        DiskFormat::Qcow2 => {
            let backing = match below.split_first() {
                None => None,
                Some((layer, rest)) => Some(open_layers(&layer.path, layer.format, rest, false)?),
            };
            Qcow2::<imago::file::File>::builder(file)
                .write(writable)
                .backing(backing)
                .data_file(None)
                .open(gate)
                .map(FormatAccess::new)
        }
    };
    opened.map_err(io_err(path))
}

/// What a copy takes from the source image.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Take {
    /// Only what the image holds itself: its data and its explicit zeroes (which hide what
    /// is below them), not what it reads through.
    Own,
    /// What it reads through its backing images and does not hold itself; zeroes are left
    /// out (the target reads zeroes there once its backing is gone).
    Below,
    /// Everything it reads as, held or read through; zeroes are left out (the target is a
    /// new image, which reads zeroes).
    All,
}

/// Copies from `from` into `to` (at the same guest offsets) what `take` says; returns the
/// bytes written. Bounded by `from`'s size, in steps of at most `CHUNK`.
fn copy(from: &Access, to: &Access, take: Take) -> io::Result<u64> {
    #[derive(PartialEq)]
    enum What {
        Data,
        Below,
        Zeroes,
        Nothing,
        End,
    }
    let size = from.size();
    let mut buf = vec![0u8; CHUNK as usize];
    let (mut at, mut written) = (0u64, 0u64);
    while at < size {
        let want = (size - at).min(CHUNK);
        let (mapping, len) = from.get_shallow_mapping(at, want)?;
        let what = match mapping {
            ShallowMapping::Raw { .. } | ShallowMapping::Special { .. } => What::Data,
            ShallowMapping::Indirect { .. } => What::Below,
            ShallowMapping::Zero { explicit: true, .. } => What::Zeroes,
            ShallowMapping::Zero { .. } => What::Nothing,
            _ => What::End,
        };
        let len = len.min(want);
        if what == What::End || len == 0 {
            break;
        }
        let chunk = &mut buf[..len as usize];
        match (what, take) {
            (What::Data, Take::Own | Take::All) | (What::Below, Take::Below | Take::All) => {
                from.read(&mut *chunk, at)?;
                if take == Take::Own || chunk.iter().any(|&b| b != 0) {
                    to.write(&*chunk, at)?;
                    written += len;
                }
            }
            (What::Zeroes, Take::Own) => to.write_zeroes(at, len)?,
            _ => {}
        }
        at += len;
    }
    to.flush()?;
    to.sync()?;
    Ok(written)
}

/// The ranges (offset, length) of guest data the image at `path` holds itself, not
/// through its backing images: for qcow2 its allocated clusters and the zeroes it states
/// (what was written to it since it was made, as an overlay); for raw, all but its holes.
/// Adjacent ranges are merged; at most one range per cluster, so bounded by the image.
pub fn own_ranges(path: &Path, format: DiskFormat) -> Result<Vec<(u64, u64)>, DiskError> {
    let image = match format {
        DiskFormat::Raw => {
            let file = crate::files::open_regular(path, false).map_err(io_err(path))?;
            let len = file.metadata().map_err(io_err(path))?.len();
            return Ok(super::data_ranges(&file, len));
        }
        DiskFormat::Qcow2 => open_qcow2(path, false)?,
    };
    let size = image.size();
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    let mut at = 0u64;
    while at < size {
        let (mapping, len) = image.get_shallow_mapping(at, size - at).map_err(io_err(path))?;
        let len = len.min(size - at);
        let own = match mapping {
            ShallowMapping::Raw { .. } | ShallowMapping::Special { .. } => true,
            ShallowMapping::Zero { explicit, .. } => explicit,
            ShallowMapping::Indirect { .. } => false,
            _ => break,
        };
        if len == 0 {
            break;
        }
        if own {
            match ranges.last_mut() {
                Some((start, n)) if *start + *n == at => *n += len,
                _ => ranges.push((at, len)),
            }
        }
        at += len;
    }
    Ok(ranges)
}

/// Folds the qcow2 image `top` into `base`, the qcow2 image it reads through: `base` then
/// reads as `top` does (it grows to `top`'s size if `top` grew). `top` is only read, and
/// reads the same throughout (what it holds hides what is written below it), so the fold
/// can be done again after an interruption. Afterwards `base` can take `top`'s place.
pub fn commit_into(top: &Path, base: &Path, policy: &BackingPolicy) -> Result<u64, DiskError> {
    let from = open_qcow2(top, false)?;
    let into = open_chain(base, DiskFormat::Qcow2, policy, true)?;
    if into.size() < from.size() {
        into.resize_grow(from.size(), PreallocateMode::None).map_err(io_err(base))?;
    }
    copy(&from, &into, Take::Own).map_err(io_err(base))
}

/// Copies into the qcow2 image `top` everything it reads through its backing images, so it
/// no longer needs them (`drop_backing` then cuts the link). What `top` reads does not
/// change on the way.
pub fn pull_into(top: &Path, policy: &BackingPolicy) -> Result<u64, DiskError> {
    let image = open_chain(top, DiskFormat::Qcow2, policy, true)?;
    // Reading through the image itself, writing into it: `copy` reads a range before it
    // writes it, and only ranges the image does not hold itself are written.
    copy(&image, &image, Take::Below).map_err(io_err(top))
}

/// Makes the qcow2 image `path` read through nothing: one write of its header's backing
/// file offset and length (bytes 8 to 20, within one sector), so it happens whole or not.
pub fn drop_backing(path: &Path) -> Result<(), DiskError> {
    // The header is read as qcow2 first: this never writes into a file that is not one.
    drop(open_qcow2(path, false)?);
    let file = crate::files::open_regular(path, true).map_err(io_err(path))?;
    file.write_all_at(&[0u8; 12], 8).and_then(|()| file.sync_all()).map_err(io_err(path))
}

/// Writes a new standalone qcow2 image at `dest` that reads as `src` (in `format`, through
/// its chain under `policy`) does: a full copy of a disk with snapshots.
pub fn flatten(
    src: &Path,
    format: DiskFormat,
    policy: &BackingPolicy,
    dest: &Path,
) -> Result<u64, DiskError> {
    let from = open_chain(src, format, policy, false)?;
    super::create_image(dest, DiskFormat::Qcow2, from.size(), None)?;
    let copied = (|| {
        let to = open_qcow2(dest, true)?;
        copy(&from, &to, Take::All).map_err(io_err(dest))
    })();
    if copied.is_err() {
        let _ = std::fs::remove_file(dest);
    }
    copied
}
