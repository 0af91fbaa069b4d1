//! Guest memory in a file of its own, next to the state file: saved sparse (pages that
//! are all zero stay holes, so an idle 4 GiB guest takes what it uses), and restored by
//! mapping the file copy-on-write (`MAP_PRIVATE`), so a restore reads only the pages the
//! guest touches, when it touches them, and never writes the file.
//!
//! A memory file that a restored machine maps must not change while it runs (its pages
//! not yet copied would change under the guest): a new save writes a new file.

use std::fs::File;
use std::os::unix::fs::FileExt;

use serde::{Deserialize, Serialize};
use vm_memory::{
    Address, FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion,
    GuestRegionMmap, MmapRegion,
};

use crate::vstate::memory::GuestMem;
use crate::vstate::written::WrittenPages;

const PAGE: usize = 4096;
/// Most guest memory written at a time while saving.
const CHUNK: usize = 2 << 20;

/// Where guest RAM lies: (guest address, length) of each region, in order. The memory
/// file holds them one after another.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryLayout {
    pub regions: Vec<(u64, u64)>,
}

impl MemoryLayout {
    pub fn of(mem: &GuestMem) -> MemoryLayout {
        MemoryLayout {
            regions: mem.iter().map(|r| (r.start_addr().raw_value(), r.len())).collect(),
        }
    }

    /// The memory file's length.
    pub fn total(&self) -> u64 {
        self.regions.iter().map(|&(_, len)| len).sum()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MemoryFileError {
    #[error("cannot write the guest's memory to its file")]
    Write(#[source] std::io::Error),
    #[error("cannot read the guest's memory at {0:#x}")]
    Read(u64, #[source] vm_memory::GuestMemoryError),
    #[error(
        "the saved memory is laid out for another machine ({saved:?}) than this one \
         ({expected:?}): was the VM's memory size changed after the save?"
    )]
    OtherLayout { saved: MemoryLayout, expected: MemoryLayout },
    #[error("the memory file is {found} bytes; the saved state needs {expected}: it is damaged")]
    Size { found: u64, expected: u64 },
    #[error("cannot map the memory file")]
    Map(#[source] std::io::Error),
    #[error("cannot map the memory file: {0}")]
    Mapping(String),
}

/// What a save wrote: bytes of pages with data, and bytes left as holes (all zero).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Saved {
    pub data: u64,
    pub holes: u64,
}

/// Writes every region of `mem` into `file` (empty or not; it is cut to the memory's
/// size), leaving pages that are all zero as holes. The machine is paused: nothing
/// writes guest memory meanwhile. Pages are written straight from guest memory; pages the
/// guest never touched (anonymous memory not present nor swapped out, as the kernel's
/// page map says; or memory mapped from a file, not present, over a hole of the file) are
/// not even read.
pub fn save(
    mem: &GuestMem,
    file: &File,
    progress: &dyn Fn(u64, u64),
) -> Result<Saved, MemoryFileError> {
    let layout = MemoryLayout::of(mem);
    let total = layout.total();
    // A sparse file of the right size: what is not written below reads as zero.
    file.set_len(0).map_err(MemoryFileError::Write)?;
    file.set_len(layout.total()).map_err(MemoryFileError::Write)?;
    let mut saved = Saved::default();
    let mut offset = 0u64;
    for region in mem.iter() {
        let len = region.len() as usize;
        let at = region.start_addr().raw_value();
        let slice = region
            .get_slice(vm_memory::MemoryRegionAddress(0), len)
            .map_err(|e| MemoryFileError::Read(at, e))?;
        // SAFETY: the region's whole mapping, alive while `mem` is borrowed; the machine
        // is paused and its I/O threads are stopped, so nothing writes it while it is
        // read here as bytes.
        let bytes = unsafe { std::slice::from_raw_parts(slice.ptr_guard().as_ptr(), len) };
        // Anonymous memory: pages never touched are zero. Memory mapped from a file (a
        // restored machine's): pages not present hold the file's data, which is zero
        // where the file has a hole.
        let touched = pages_maybe_with_data(region);
        let has_data = |page: usize| {
            touched.as_ref().is_none_or(|t| t.get(page).copied().unwrap_or(true))
                && !is_zero(&bytes[page * PAGE..((page + 1) * PAGE).min(len)])
        };
        let pages = len.div_ceil(PAGE);
        let mut page = 0;
        while page < pages {
            if !has_data(page) {
                saved.holes += (((page + 1) * PAGE).min(len) - page * PAGE) as u64;
                page += 1;
                continue;
            }
            // A run of pages with data, written as one (at most a chunk at a time).
            let first = page;
            while page < pages && page - first < CHUNK / PAGE && has_data(page) {
                page += 1;
            }
            let run = &bytes[first * PAGE..(page * PAGE).min(len)];
            file.write_all_at(run, offset + (first * PAGE) as u64)
                .map_err(MemoryFileError::Write)?;
            saved.data += run.len() as u64;
            progress(offset + (page * PAGE).min(len) as u64, total);
        }
        offset += len as u64;
        progress(offset, total);
    }
    Ok(saved)
}

/// For each page of `region`, whether it may hold data (else it is zero without being
/// read). Anonymous memory: pages never touched are zero. Memory mapped from a file (a
/// restored machine's): pages not present hold the file's data, which is zero where the
/// file has a hole. None if the kernel cannot say (every page may then hold data).
pub(crate) fn pages_maybe_with_data(region: &GuestRegionMmap<WrittenPages>) -> Option<Vec<bool>> {
    let (at, len) = (region.as_ptr() as usize, region.len() as usize);
    match region.file_offset() {
        None => touched_pages(at, len),
        Some(from) => touched_pages(at, len)
            .zip(file_data_pages(from.file(), from.start(), len))
            .map(|(present, data)| present.iter().zip(&data).map(|(p, d)| *p || *d).collect()),
    }
}

/// For each page of `file` from `start` for `len` bytes, whether the file has data there
/// (SEEK_DATA/SEEK_HOLE; pages in holes read as zero). None if the file cannot say.
/// Bounded: one step per extent, at most one per page.
fn file_data_pages(file: &File, start: u64, len: usize) -> Option<Vec<bool>> {
    use std::os::fd::AsRawFd;
    let pages = len.div_ceil(PAGE);
    let mut data = vec![false; pages];
    let end = start.checked_add(len as u64)?;
    let mut at = start;
    for _ in 0..=pages {
        if at >= end {
            break;
        }
        let Ok(offset) = libc::off_t::try_from(at) else { return None };
        // SAFETY: lseek on a file this function borrows; the result is checked.
        let found = unsafe { libc::lseek(file.as_raw_fd(), offset, libc::SEEK_DATA) };
        if found < 0 {
            // ENXIO: only a hole remains; anything else: the file cannot say.
            return (std::io::Error::last_os_error().raw_os_error() == Some(libc::ENXIO))
                .then_some(data);
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(file.as_raw_fd(), found, libc::SEEK_HOLE) };
        if hole < 0 {
            return None;
        }
        let (from, to) = ((found as u64).max(start), (hole as u64).min(end));
        if from < to {
            let first = ((from - start) / PAGE as u64) as usize;
            let last = ((to - start).div_ceil(PAGE as u64) as usize).min(pages);
            data[first..last].iter_mut().for_each(|d| *d = true);
        }
        at = (hole as u64).max(at + 1);
    }
    Some(data)
}

/// For each page of the `len` bytes at `at` (page-aligned anonymous memory of this
/// process), whether it may hold data: present, or swapped out. None if the page map
/// cannot be read (every page is then looked at). Bounded: one 8-byte entry per page of
/// the mapping. The memory itself is not read.
fn touched_pages(at: usize, len: usize) -> Option<Vec<bool>> {
    const PRESENT: u64 = 1 << 63;
    const SWAPPED: u64 = 1 << 62;
    let pagemap = File::open("/proc/self/pagemap").ok()?;
    let first = at as u64 / PAGE as u64;
    let pages = len.div_ceil(PAGE);
    let mut touched = Vec::with_capacity(pages);
    let mut buf = vec![0u8; 8 * 4096];
    while touched.len() < pages {
        let n = (pages - touched.len()).min(4096);
        let entries = &mut buf[..n * 8];
        pagemap.read_exact_at(entries, (first + touched.len() as u64) * 8).ok()?;
        for entry in entries.chunks_exact(8) {
            let entry = u64::from_ne_bytes(entry.try_into().expect("8 bytes"));
            touched.push(entry & (PRESENT | SWAPPED) != 0);
        }
    }
    Some(touched)
}

/// Whether `bytes` are all zero (ORed a word at a time: no branch a byte).
pub(crate) fn is_zero(bytes: &[u8]) -> bool {
    let (words, rest) = bytes.split_at(bytes.len() / 16 * 16);
    let ored = words
        .chunks_exact(16)
        .fold(0u128, |acc, w| acc | u128::from_ne_bytes(w.try_into().expect("16 bytes")));
    ored == 0 && rest.iter().all(|&b| b == 0)
}

/// Guest memory mapped copy-on-write from `file`, which a save wrote with `saved` as its
/// layout; `expected`: the layout of the machine it goes into (from its configuration),
/// which must be the same.
pub fn restore(
    file: &File,
    saved: &MemoryLayout,
    expected: &MemoryLayout,
) -> Result<GuestMem, MemoryFileError> {
    if saved != expected {
        return Err(MemoryFileError::OtherLayout {
            saved: saved.clone(),
            expected: expected.clone(),
        });
    }
    let found = file.metadata().map_err(MemoryFileError::Map)?.len();
    if found != expected.total() {
        return Err(MemoryFileError::Size { found, expected: expected.total() });
    }
    let mut regions = Vec::with_capacity(expected.regions.len());
    let mut offset = 0u64;
    for &(start, len) in &expected.regions {
        let file = file.try_clone().map_err(MemoryFileError::Map)?;
        let mapping = MmapRegion::build(
            Some(FileOffset::new(file, offset)),
            len as usize,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_NORESERVE | libc::MAP_PRIVATE,
        )
        .map_err(|e| MemoryFileError::Mapping(e.to_string()))?;
        let region = GuestRegionMmap::new(mapping, GuestAddress(start))
            .ok_or_else(|| MemoryFileError::Mapping(format!("a region at {start:#x} overflows")))?;
        // Never in a core dump, as freshly made guest RAM.
        // SAFETY: the range is exactly this region's mapping, alive as long as `region`;
        // MADV_DONTDUMP only marks it.
        unsafe { libc::madvise(region.as_ptr().cast(), len as usize, libc::MADV_DONTDUMP) };
        regions.push(region);
        offset += len;
    }
    GuestMemoryMmap::from_regions(regions).map_err(|e| MemoryFileError::Mapping(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vstate::memory::create_guest_memory;
    use std::os::unix::fs::MetadataExt;
    use vm_memory::Bytes;

    #[test]
    fn memory_saves_sparse_and_restores_copy_on_write() {
        let mem = create_guest_memory(64 << 20).unwrap();
        let layout = MemoryLayout::of(&mem);
        let end = GuestAddress(layout.regions.last().map(|&(s, l)| s + l).unwrap());
        let marks: [(u64, &[u8]); 4] = [
            (0, b"the first page"),
            (0x9_0ffe, b"across a page boundary"),
            (16 << 20, &[0xa5; 3 * PAGE]),
            (end.raw_value() - 5, b"last!"),
        ];
        for (at, bytes) in marks {
            mem.write_slice(bytes, GuestAddress(at)).unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("memory");
        let file = File::create_new(&path).unwrap();
        let saved = save(&mem, &file, &|_, _| {}).unwrap();
        assert_eq!(saved.data + saved.holes, layout.total());
        // Seven pages hold data: the first, the two the run across a boundary spans, three
        // of 0xa5, the last; the rest of the 64 MiB are holes, on disk too.
        assert_eq!(saved.data, 7 * PAGE as u64, "{saved:?}");
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.len(), layout.total());
        assert!(meta.blocks() * 512 < 1 << 20, "{} bytes on disk", meta.blocks() * 512);

        let file = File::open(&path).unwrap();
        let back = restore(&file, &layout, &layout).unwrap();
        // KVM takes the restored memory as guest RAM.
        if let Ok(kvm) = crate::vstate::kvm::open_kvm() {
            let vm = kvm.create_vm().unwrap();
            crate::vstate::memory::register_with_kvm(&vm, &back).unwrap();
        }
        for (at, bytes) in marks {
            let mut read = vec![0u8; bytes.len()];
            back.read_slice(&mut read, GuestAddress(at)).unwrap();
            assert_eq!(read, bytes, "at {at:#x}");
        }
        let mut zero = [0xffu8; 64];
        back.read_slice(&mut zero, GuestAddress(32 << 20)).unwrap();
        assert_eq!(zero, [0; 64]);
        // The guest's writes stay in its memory, never in the file.
        back.write_slice(b"after the restore", GuestAddress(0)).unwrap();
        let mut on_disk = [0u8; 14];
        file.read_exact_at(&mut on_disk, 0).unwrap();
        assert_eq!(&on_disk, b"the first page");

        // Saved again, restored memory keeps what it read from its file (pages it never
        // touched are not present, yet hold data) as well as what was written since.
        let again_path = dir.path().join("again");
        let again = File::create_new(&again_path).unwrap();
        assert_eq!(save(&back, &again, &|_, _| {}).unwrap().data, 7 * PAGE as u64);
        let twice = restore(&File::open(&again_path).unwrap(), &layout, &layout).unwrap();
        for (at, bytes) in &marks[1..] {
            let mut read = vec![0u8; bytes.len()];
            twice.read_slice(&mut read, GuestAddress(*at)).unwrap();
            assert_eq!(read, *bytes, "at {at:#x}");
        }
        let mut first = [0u8; 17];
        twice.read_slice(&mut first, GuestAddress(0)).unwrap();
        assert_eq!(&first, b"after the restore");
    }

    #[test]
    fn pages_the_guest_never_touched_are_not_read_and_let_go_ones_are_holes() {
        let mem = create_guest_memory(64 << 20).unwrap();
        let region = mem.iter().next().unwrap();
        let slice = region.get_slice(vm_memory::MemoryRegionAddress(0), 8 << 20).unwrap();
        // SAFETY: the region's first 8 MiB, owned by this test.
        let bytes = unsafe { std::slice::from_raw_parts(slice.ptr_guard().as_ptr(), 8 << 20) };
        let touched = touched_pages(bytes.as_ptr() as usize, bytes.len()).expect("the page map");
        assert!(touched.iter().all(|t| !t), "fresh memory is untouched");
        mem.write_slice(&[1u8; 3], GuestAddress(5 * PAGE as u64)).unwrap();
        let touched = touched_pages(bytes.as_ptr() as usize, bytes.len()).unwrap();
        // The page written, and at most the huge page around it (transparent huge pages).
        assert!(touched[5]);
        assert!(touched.iter().filter(|t| **t).count() <= 512);
        assert!(!touched[1024..].iter().any(|t| *t), "the memory beyond is untouched");
        // Written, then let go of (as a balloon or a discard would): zero, a hole.
        mem.write_slice(&[2u8; 3], GuestAddress(9 * PAGE as u64)).unwrap();
        // SAFETY: one page of the region, which the test owns.
        unsafe {
            libc::madvise(
                slice.ptr_guard().as_ptr().add(9 * PAGE).cast_mut().cast(),
                PAGE,
                libc::MADV_DONTNEED,
            )
        };
        let file = File::create_new(tempfile::tempdir().unwrap().path().join("m")).unwrap();
        assert_eq!(save(&mem, &file, &|_, _| {}).unwrap().data, PAGE as u64, "page 5 alone");
    }

    #[test]
    fn a_memory_file_for_another_machine_or_damaged_is_refused() {
        let mem = create_guest_memory(32 << 20).unwrap();
        let layout = MemoryLayout::of(&mem);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("memory");
        let file = File::create_new(&path).unwrap();
        save(&mem, &file, &|_, _| {}).unwrap();
        let other = MemoryLayout::of(&create_guest_memory(64 << 20).unwrap());
        let error = restore(&file, &layout, &other).unwrap_err();
        assert!(matches!(error, MemoryFileError::OtherLayout { .. }), "{error}");
        assert!(error.to_string().contains("memory size changed"), "{error}");
        file.set_len(layout.total() - PAGE as u64).unwrap();
        let error = restore(&file, &layout, &layout).unwrap_err();
        assert!(matches!(error, MemoryFileError::Size { .. }), "{error}");
    }
}
