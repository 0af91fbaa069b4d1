//! virtio-blk (virtio 1.2 §5.2) over a raw image file: reads, writes, FLUSH (fdatasync),
//! DISCARD and WRITE_ZEROES (hole punching), GET_ID, read-only media. The image is locked
//! with an OFD lock — exclusive when writable, shared when read-only — so two machines can
//! never write one disk.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use virtio_queue::{DescriptorChain, Queue, QueueT, Reader, Writer};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend};

use super::{CONFIG_CHANGED, TYPE_BLOCK, VirtioDevice, read_config_bytes};
use crate::devices::storage::image::{DiskImage, Extent, ImageFormat, ImageSpec};
use crate::devices::storage::lock::{LockError, ofd_lock, ofd_unlock};
use crate::devices::storage::{COPY_CHUNK, CopySource, PreparedImage, SwitchImage};
use crate::vstate::memory::{GuestMem, GuestSlice, Marks};

pub const SECTOR_SIZE: u64 = 512;

// Feature bits (§5.2.3).
const F_SIZE_MAX: u64 = 1 << 1;
const F_SEG_MAX: u64 = 1 << 2;
const F_RO: u64 = 1 << 5;
const F_BLK_SIZE: u64 = 1 << 6;
const F_FLUSH: u64 = 1 << 9;
const F_DISCARD: u64 = 1 << 13;
const F_WRITE_ZEROES: u64 = 1 << 14;

// Request types and status values (§5.2.6).
const T_IN: u32 = 0;
const T_OUT: u32 = 1;
const T_FLUSH: u32 = 4;
const T_GET_ID: u32 = 8;
const T_DISCARD: u32 = 11;
const T_WRITE_ZEROES: u32 = 13;
/// struct virtio_blk_req's header: type, reserved, sector.
const HEADER_BYTES: usize = 16;
const S_OK: u8 = 0;
const S_IOERR: u8 = 1;
const S_UNSUPP: u8 = 2;

/// Largest data transfer of one request; larger ones fail with IOERR rather than making
/// the VMM allocate whatever the guest asks for.
const MAX_REQUEST_BYTES: usize = 4 << 20;
const SIZE_MAX: u32 = 1 << 20;
const SEG_MAX: u32 = 126;
const MAX_DISCARD_SECTORS: u32 = (1 << 30) / 512;
const ID_BYTES: usize = 20;
const QUEUE_SIZE: u16 = 256;
/// How long the device thread watches the queue after a request (see `poll_window`).
const POLL_WINDOW: std::time::Duration = std::time::Duration::from_micros(50);

#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    #[error("cannot open disk image {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error("cannot read disk image {path} as {format:?}")]
    Image {
        path: PathBuf,
        format: ImageFormat,
        #[source]
        source: std::io::Error,
    },
}

pub struct Block {
    image: Box<dyn DiskImage>,
    /// Holds the OFD lock (for raw images the image reads through a clone of it).
    lock: File,
    /// Where the image is, for what its lock's errors say.
    path: PathBuf,
    /// inotify watch on the image: a grown image is announced to the guest (§5.2.2).
    watch: Option<OwnedFd>,
    read_only: bool,
    capacity_sectors: u64,
    id: [u8; ID_BYTES],
    features: u64,
    /// While a live migration copies the disk: the chunks written since it last looked.
    written: Option<Vec<u64>>,
}

/// Where the status byte goes: the last byte of the chain's last device-writable buffer.
fn status_address(chain: &DescriptorChain<&GuestMem>) -> Option<GuestAddress> {
    let last = chain.clone().writable().last()?;
    last.addr().checked_add(u64::from(last.len().checked_sub(1)?))
}

/// `len` bytes of the chain's device-writable (or device-readable) buffers, from `skip`
/// bytes in, as guest memory slices: the device reads and writes guest memory directly.
fn guest_slices<'m>(
    mem: &'m GuestMem,
    chain: &DescriptorChain<&'m GuestMem>,
    writable: bool,
    mut skip: usize,
    len: usize,
) -> Option<Vec<GuestSlice<'m>>> {
    let mut left = len;
    let mut slices = Vec::new();
    for desc in chain.clone().filter(|d| d.is_write_only() == writable) {
        if left == 0 {
            break;
        }
        let desc_len = desc.len() as usize;
        if skip >= desc_len {
            skip -= desc_len;
            continue;
        }
        let take = (desc_len - skip).min(left);
        let addr = desc.addr().checked_add(skip as u64)?;
        for slice in mem.get_slices(addr, take) {
            slices.push(slice.ok()?);
        }
        left -= take;
        skip = 0;
    }
    (left == 0).then_some(slices)
}

/// An inotify watch for size changes of `path`; none if inotify is unavailable (then the
/// guest sees a new size at its next boot).
fn watch_file(path: &Path) -> Option<OwnedFd> {
    // SAFETY: inotify_init1 takes flags only; the result is checked.
    let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
    if fd < 0 {
        return None;
    }
    // SAFETY: `fd` is a new inotify instance nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    add_watch(&fd, path).then_some(fd)
}

/// Watches `path` for size changes on the inotify instance `fd` too; false if it cannot.
fn add_watch(fd: &OwnedFd, path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_bytes()) else { return false };
    let mask = libc::IN_MODIFY | libc::IN_ATTRIB | libc::IN_CLOSE_WRITE;
    // SAFETY: a valid inotify fd and a NUL-terminated path.
    let wd = unsafe { libc::inotify_add_watch(fd.as_raw_fd(), c_path.as_ptr(), mask) };
    wd >= 0
}

impl Block {
    /// Opens the disk on `spec`, in the format it states (never guessed from the bytes).
    pub fn open(spec: &ImageSpec, read_only: bool, serial: &str) -> Result<Self, BlockError> {
        let path = spec.path.as_path();
        let open_err = |source| BlockError::Open { path: path.to_path_buf(), source };
        let file = crate::devices::storage::open_regular(path, !read_only).map_err(open_err)?;
        ofd_lock(&file, path, !read_only)?;
        let image = spec.open(&file, !read_only).map_err(|source| BlockError::Image {
            path: path.to_path_buf(),
            format: spec.format,
            source,
        })?;
        let size = image.size();
        let mut id = [0u8; ID_BYTES];
        let n = serial.len().min(ID_BYTES);
        id[..n].copy_from_slice(&serial.as_bytes()[..n]);
        let mut features = F_SIZE_MAX | F_SEG_MAX | F_BLK_SIZE | F_FLUSH;
        features |= if read_only { F_RO } else { F_DISCARD | F_WRITE_ZEROES };
        let watch = watch_file(path);
        Ok(Block {
            image,
            lock: file,
            path: path.to_path_buf(),
            watch,
            read_only,
            capacity_sectors: size / SECTOR_SIZE,
            id,
            features,
            written: None,
        })
    }

    /// Re-reads the image size; true if the capacity changed.
    fn refresh_capacity(&mut self) -> bool {
        let sectors = self.image.refresh_size() / SECTOR_SIZE;
        let changed = sectors != self.capacity_sectors;
        if changed {
            log::info!("virtio-blk: capacity {} -> {} sectors", self.capacity_sectors, sectors);
            self.capacity_sectors = sectors;
        }
        changed
    }

    /// Handles one request; returns (status, bytes written into the guest's buffers).
    fn request(&mut self, chain: DescriptorChain<&GuestMem>, mem: &GuestMem) -> (u8, u32) {
        let status_byte = status_address(&chain);
        let (Ok(mut reader), Ok(mut writer)) =
            (Reader::new(mem, chain.clone()), Writer::new(mem, chain.clone()))
        else {
            // A buffer outside guest memory: the request fails, and the driver still learns
            // so if its status byte itself is writable.
            return match status_byte.map(|at| mem.write_obj(S_IOERR, at)) {
                Some(Ok(())) => (S_IOERR, 1),
                _ => (S_IOERR, 0),
            };
        };
        // The status byte is the last writable byte of the chain.
        let Some(status_at) = writer.available_bytes().checked_sub(1) else { return (S_IOERR, 0) };
        let Ok(mut status_writer) = writer.split_at(status_at) else { return (S_IOERR, 0) };
        let (Ok(kind), Ok(_reserved), Ok(sector)) =
            (reader.read_obj::<u32>(), reader.read_obj::<u32>(), reader.read_obj::<u64>())
        else {
            let _ = status_writer.write_obj(S_IOERR);
            return (S_IOERR, 1);
        };
        // Data moves between the image and guest memory without a bounce buffer; the
        // Reader and Writer above only validated the chain and parsed the header.
        let data_in = writer.available_bytes();
        let data_out = reader.available_bytes();
        let (status, data_written) = match kind {
            T_IN => {
                let status = self.read(sector, guest_slices(mem, &chain, true, 0, data_in));
                (status, if status == S_OK { data_in } else { 0 })
            }
            T_OUT => {
                (self.write(sector, guest_slices(mem, &chain, false, HEADER_BYTES, data_out)), 0)
            }
            T_FLUSH if self.read_only => (S_OK, 0),
            T_FLUSH => (if self.image.flush().is_ok() { S_OK } else { S_IOERR }, 0),
            T_GET_ID => {
                let n = data_in.min(ID_BYTES);
                if writer.write_all(&self.id[..n]).is_ok() { (S_OK, n) } else { (S_IOERR, 0) }
            }
            T_DISCARD | T_WRITE_ZEROES => (self.discard(kind, &mut reader), 0),
            _ => (S_UNSUPP, 0),
        };
        let _ = status_writer.write_obj(status);
        (status, data_written as u32 + 1)
    }

    /// Byte offset of `sector`, if `len` bytes from there lie inside the disk.
    fn range(&self, sector: u64, len: usize) -> Option<u64> {
        if !(len as u64).is_multiple_of(SECTOR_SIZE) || len > MAX_REQUEST_BYTES {
            return None;
        }
        let end = sector.checked_add(len as u64 / SECTOR_SIZE)?;
        (end <= self.capacity_sectors).then(|| sector * SECTOR_SIZE)
    }

    fn read(&mut self, sector: u64, dst: Option<Vec<GuestSlice<'_>>>) -> u8 {
        let Some(dst) = dst else { return S_IOERR };
        let len = dst.iter().map(|s| s.len()).sum();
        let Some(offset) = self.range(sector, len) else { return S_IOERR };
        if self.image.read_to_guest(offset, &dst).is_err() {
            return S_IOERR;
        }
        S_OK
    }

    fn write(&mut self, sector: u64, src: Option<Vec<GuestSlice<'_>>>) -> u8 {
        if self.read_only {
            return S_IOERR;
        }
        let Some(src) = src else { return S_IOERR };
        let len = src.iter().map(|s| s.len()).sum();
        let Some(offset) = self.range(sector, len) else { return S_IOERR };
        self.note_written(offset, len as u64);
        if self.image.write_from_guest(offset, &src).is_err() {
            return S_IOERR;
        }
        S_OK
    }

    /// DISCARD and WRITE_ZEROES: a list of (sector, num_sectors, flags) segments (§5.2.6.2).
    fn discard(&mut self, kind: u32, reader: &mut Reader<'_, Marks<'_>>) -> u8 {
        if self.read_only {
            return S_IOERR;
        }
        let segments = reader.available_bytes() / 16;
        if segments != 1 || !reader.available_bytes().is_multiple_of(16) {
            return S_UNSUPP; // max_discard_seg / max_write_zeroes_seg are 1
        }
        let (Ok(sector), Ok(count), Ok(flags)) =
            (reader.read_obj::<u64>(), reader.read_obj::<u32>(), reader.read_obj::<u32>())
        else {
            return S_IOERR;
        };
        if flags & !1 != 0 || (kind == T_DISCARD && flags != 0) || count > MAX_DISCARD_SECTORS {
            return S_UNSUPP;
        }
        let Some(end) =
            sector.checked_add(u64::from(count)).filter(|e| *e <= self.capacity_sectors)
        else {
            return S_IOERR;
        };
        let (offset, len) = (sector * SECTOR_SIZE, (end - sector) * SECTOR_SIZE);
        self.note_written(offset, len);
        match self.image.zero(offset, len) {
            Ok(()) => S_OK,
            // Discard is a hint: failing to free space is no error for the guest.
            Err(_) if kind == T_DISCARD => S_OK,
            Err(_) => S_IOERR,
        }
    }

    /// Notes `len` bytes at `offset` as written, if a disk copy is under way.
    fn note_written(&mut self, offset: u64, len: u64) {
        let Some(words) = &mut self.written else { return };
        if len == 0 {
            return;
        }
        let (first, last) = (offset / COPY_CHUNK, (offset + len - 1) / COPY_CHUNK);
        // Within the disk's size (`range` checked it), so the bitmap stays that small.
        let needed = (last / 64 + 1) as usize;
        if words.len() < needed {
            words.resize(needed, 0);
        }
        for chunk in first..=last {
            words[(chunk / 64) as usize] |= 1 << (chunk % 64);
        }
    }

    fn config_bytes(&self) -> [u8; 60] {
        let mut c = [0u8; 60];
        c[0..8].copy_from_slice(&self.capacity_sectors.to_le_bytes());
        c[8..12].copy_from_slice(&SIZE_MAX.to_le_bytes());
        c[12..16].copy_from_slice(&SEG_MAX.to_le_bytes());
        c[20..24].copy_from_slice(&(SECTOR_SIZE as u32).to_le_bytes());
        c[34..36].copy_from_slice(&1u16.to_le_bytes()); // num_queues
        c[36..40].copy_from_slice(&MAX_DISCARD_SECTORS.to_le_bytes());
        c[40..44].copy_from_slice(&1u32.to_le_bytes()); // max_discard_seg
        c[44..48].copy_from_slice(&1u32.to_le_bytes()); // discard_sector_alignment
        c[48..52].copy_from_slice(&MAX_DISCARD_SECTORS.to_le_bytes());
        c[52..56].copy_from_slice(&1u32.to_le_bytes()); // max_write_zeroes_seg
        c[56] = 1; // write_zeroes_may_unmap
        c
    }
}

impl SwitchImage for Block {
    fn flush_image(&mut self) -> std::io::Result<()> {
        self.image.flush()
    }

    fn prepare_image(&self, spec: &ImageSpec) -> std::io::Result<PreparedImage> {
        let path = spec.path.as_path();
        let failed = |e: &dyn std::fmt::Display| {
            std::io::Error::other(format!("disk image {}: {e}", path.display()))
        };
        let file =
            crate::devices::storage::open_regular(path, !self.read_only).map_err(|e| failed(&e))?;
        ofd_lock(&file, path, !self.read_only).map_err(|e| failed(&e))?;
        let image = spec.open(&file, !self.read_only).map_err(|e| failed(&e))?;
        if image.size() != self.image.size() {
            return Err(failed(&format!(
                "it holds {} bytes, and the disk it takes the place of {}",
                image.size(),
                self.image.size()
            )));
        }
        Ok(PreparedImage { image, lock: file, path: path.to_path_buf() })
    }

    fn install_image(&mut self, prepared: PreparedImage) {
        let PreparedImage { image, lock, path } = prepared;
        // The same inotify instance (the device's thread waits on it) watches the new
        // image too: the image before is only read from now on, so it does not change.
        if let Some(watch) = &self.watch
            && !add_watch(watch, &path)
        {
            log::warn!("cannot watch {} for size changes", path.display());
        }
        self.image = image;
        self.lock = lock;
        self.path = path;
    }
}

impl CopySource for Block {
    fn copy_size(&self) -> u64 {
        self.image.size()
    }

    // The bitmap grows as far as the guest writes (`note_written`), not to the disk's
    // size: a large sparse disk written near its start keeps it small.
    fn track_writes(&mut self, on: bool) {
        self.written = on.then(Vec::new);
    }

    fn take_written(&mut self) -> Vec<u64> {
        self.written.as_mut().map(std::mem::take).unwrap_or_default()
    }

    fn copy_extent(&mut self, offset: u64) -> std::io::Result<Option<(Extent, u64)>> {
        self.image.extent(offset)
    }

    fn copy_read(&mut self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.image.read_at(buf, offset)
    }
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        TYPE_BLOCK
    }

    fn hand_over(&mut self, release: bool) -> Result<(), String> {
        // A read-only disk's lock is shared: the other machine takes it alongside.
        if self.read_only {
            return Ok(());
        }
        if release {
            self.image.flush().map_err(|e| format!("cannot flush {}: {e}", self.path.display()))?;
            return ofd_unlock(&self.lock, &self.path).map_err(|e| e.to_string());
        }
        // Taken back after a failed migration: the machine that was to take the disk over
        // may still be letting it go (a few milliseconds); one that runs holds it.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
        loop {
            match ofd_lock(&self.lock, &self.path, true) {
                Err(LockError::Locked { .. }) if std::time::Instant::now() < deadline => {}
                other => return other.map_err(|e| e.to_string()),
            }
        }
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn copy_source(&mut self) -> Option<&mut dyn CopySource> {
        if self.read_only { None } else { Some(self) }
    }

    fn switch_image(&mut self) -> Option<&mut dyn SwitchImage> {
        Some(self)
    }

    fn features(&self) -> u64 {
        self.features
    }

    fn pci_class(&self) -> u32 {
        0x01_80_00 // mass storage, other
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config_bytes(), offset, data);
    }

    fn backend_fd(&self) -> Option<RawFd> {
        self.watch.as_ref().map(|fd| fd.as_raw_fd())
    }

    /// The capacity the guest was told (its requests were completed before the save).
    fn save_state(&self) -> Vec<u8> {
        crate::persist::encode_part(&self.capacity_sectors)
    }

    /// The disk must be the size the guest knew: a driver told nothing would read and
    /// write by the old size.
    fn restore_state(&mut self, state: &[u8], _mem: &GuestMem) -> Result<(), String> {
        let saved: u64 = crate::persist::decode_part(state)?;
        if saved != self.capacity_sectors {
            return Err(format!(
                "the disk image holds {} sectors, and the saved machine knew it with {saved}: \
                 it was resized after the save",
                self.capacity_sectors
            ));
        }
        Ok(())
    }

    fn process_backend(&mut self, _queues: &mut [Queue], _mem: &GuestMem) -> u64 {
        if let Some(watch) = &self.watch {
            let mut events = [0u8; 4096];
            // Drain the notifications; what matters is the size now.
            // SAFETY: read into our own buffer from our own nonblocking fd.
            while unsafe { libc::read(watch.as_raw_fd(), events.as_mut_ptr().cast(), events.len()) }
                > 0
            {}
        }
        if self.refresh_capacity() { CONFIG_CHANGED } else { 0 }
    }

    /// A driver at queue depth 1 sends its next request within microseconds of the last
    /// completion; QEMU's iothreads poll up to 32 µs for the same reason.
    fn poll_window(&self) -> std::time::Duration {
        POLL_WINDOW
    }

    fn process_queue(&mut self, index: usize, queues: &mut [Queue], mem: &GuestMem) -> u64 {
        let Some(queue) = queues.get_mut(index) else { return 0 };
        let mut used_any = false;
        while let Some(chain) = queue.pop_descriptor_chain(mem) {
            let head = chain.head_index();
            let (_status, len) = self.request(chain, mem);
            if queue.add_used(mem, head, len).is_err() {
                log::warn!("virtio-blk: cannot update the used ring");
                break;
            }
            used_any = true;
        }
        u64::from(used_any) << index
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::test_util::{publish, put_desc, queue, used};
    use crate::vstate::memory::create_guest_memory;
    use std::os::unix::fs::FileExt;

    const R: u16 = 0;
    const W: u16 = 2;
    const N: u16 = 1;

    fn image(sectors: u64) -> PathBuf {
        let path = std::env::temp_dir().join(format!(
            "vessel-blk-{}-{:?}.raw",
            std::process::id(),
            std::thread::current().id()
        ));
        let f = File::create(&path).unwrap();
        f.set_len(sectors * SECTOR_SIZE).unwrap();
        path
    }

    fn header(mem: &GuestMem, at: u64, kind: u32, sector: u64) {
        mem.write_obj(kind, GuestAddress(at)).unwrap();
        mem.write_obj(0u32, GuestAddress(at + 4)).unwrap();
        mem.write_obj(sector, GuestAddress(at + 8)).unwrap();
    }

    fn status(mem: &GuestMem, at: u64) -> u8 {
        mem.read_obj(GuestAddress(at)).unwrap()
    }

    #[test]
    fn a_saved_disk_must_come_back_the_size_the_guest_knew() {
        let mem = create_guest_memory(16 << 20).unwrap();
        let path = image(64);
        let blk = Block::open(&ImageSpec::raw(&path), false, "vessel-disk-0").unwrap();
        let state = blk.save_state();
        drop(blk); // its lock: one machine opens an image at a time
        let mut same = Block::open(&ImageSpec::raw(&path), false, "vessel-disk-0").unwrap();
        same.restore_state(&state, &mem).unwrap();
        drop(same);
        File::options().write(true).open(&path).unwrap().set_len(128 * SECTOR_SIZE).unwrap();
        let mut grown = Block::open(&ImageSpec::raw(&path), false, "vessel-disk-0").unwrap();
        let error = grown.restore_state(&state, &mem).unwrap_err();
        assert!(error.contains("128 sectors") && error.contains("resized"), "{error}");
        assert!(grown.restore_state(&[0xff; 11], &mem).is_err());
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn write_read_flush_id_and_bounds() {
        let path = image(64);
        let mut blk = Block::open(&ImageSpec::raw(&path), false, "vessel-disk-0").unwrap();
        let mem = create_guest_memory(16 << 20).unwrap();
        let mut q = queue(&mem);
        // OUT sector 3 from a pattern.
        let pattern: Vec<u8> = (0..512u32).map(|i| (i * 7) as u8).collect();
        mem.write_slice(&pattern, GuestAddress(0x20000)).unwrap();
        header(&mem, 0x10000, T_OUT, 3);
        put_desc(&mem, 0, 0x10000, 16, R | N, 1);
        put_desc(&mem, 1, 0x20000, 512, R | N, 2);
        put_desc(&mem, 2, 0x30000, 1, W, 0);
        // IN sector 3 into another buffer.
        header(&mem, 0x11000, T_IN, 3);
        put_desc(&mem, 3, 0x11000, 16, R | N, 4);
        put_desc(&mem, 4, 0x40000, 512, W | N, 5);
        put_desc(&mem, 5, 0x30001, 1, W, 0);
        // FLUSH, GET_ID, and a read past the end.
        header(&mem, 0x12000, T_FLUSH, 0);
        put_desc(&mem, 6, 0x12000, 16, R | N, 7);
        put_desc(&mem, 7, 0x30002, 1, W, 0);
        header(&mem, 0x13000, T_GET_ID, 0);
        put_desc(&mem, 8, 0x13000, 16, R | N, 9);
        put_desc(&mem, 9, 0x50000, 20, W | N, 10);
        put_desc(&mem, 10, 0x30003, 1, W, 0);
        header(&mem, 0x14000, T_IN, 63);
        put_desc(&mem, 11, 0x14000, 16, R | N, 12);
        put_desc(&mem, 12, 0x60000, 1024, W | N, 13);
        put_desc(&mem, 13, 0x30004, 1, W, 0);
        publish(&mem, &[0, 3, 6, 8, 11]);
        assert_eq!(blk.process_queue(0, std::slice::from_mut(&mut q), &mem), 1);
        assert_eq!(
            (0..5).map(|i| status(&mem, 0x30000 + i)).collect::<Vec<_>>(),
            vec![S_OK, S_OK, S_OK, S_OK, S_IOERR]
        );
        let mut back = vec![0u8; 512];
        mem.read_slice(&mut back, GuestAddress(0x40000)).unwrap();
        assert_eq!(back, pattern);
        assert_eq!(used(&mem, 1), (3, 513));
        let mut id = [0u8; 13];
        mem.read_slice(&mut id, GuestAddress(0x50000)).unwrap();
        assert_eq!(&id, b"vessel-disk-0");
        // On the host, the sector holds the pattern.
        let mut on_disk = vec![0u8; 512];
        File::open(&path).unwrap().read_exact_at(&mut on_disk, 3 * 512).unwrap();
        assert_eq!(on_disk, pattern);
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn any_descriptor_layout_moves_the_right_bytes() {
        // virtio 1.2 §2.7.4: the header may share a buffer with the data, the data may be
        // split anywhere, and the status byte may end the last data buffer.
        let path = image(64);
        let mut blk = Block::open(&ImageSpec::raw(&path), false, "d").unwrap();
        let mem = create_guest_memory(16 << 20).unwrap();
        let mut q = queue(&mem);
        let pattern: Vec<u8> = (0..1024u32).map(|i| (i * 13 + 1) as u8).collect();
        // OUT sectors 5-6: header and the first 100 data bytes in one buffer, the rest in two.
        header(&mem, 0x10000, T_OUT, 5);
        mem.write_slice(&pattern[..100], GuestAddress(0x10010)).unwrap();
        mem.write_slice(&pattern[100..700], GuestAddress(0x20000)).unwrap();
        mem.write_slice(&pattern[700..], GuestAddress(0x21000)).unwrap();
        put_desc(&mem, 0, 0x10000, 16 + 100, R | N, 1);
        put_desc(&mem, 1, 0x20000, 600, R | N, 2);
        put_desc(&mem, 2, 0x21000, 324, R | N, 3);
        put_desc(&mem, 3, 0x30000, 1, W, 0);
        // IN the same sectors: 300 bytes, then 724 data bytes with the status byte after.
        header(&mem, 0x11000, T_IN, 5);
        put_desc(&mem, 4, 0x11000, 16, R | N, 5);
        put_desc(&mem, 5, 0x40000, 300, W | N, 6);
        put_desc(&mem, 6, 0x50000, 725, W, 0);
        publish(&mem, &[0, 4]);
        assert_eq!(blk.process_queue(0, std::slice::from_mut(&mut q), &mem), 1);
        assert_eq!(status(&mem, 0x30000), S_OK);
        assert_eq!(status(&mem, 0x50000 + 724), S_OK);
        assert_eq!(used(&mem, 1), (4, 1025));
        let mut back = vec![0u8; 1024];
        mem.read_slice(&mut back[..300], GuestAddress(0x40000)).unwrap();
        mem.read_slice(&mut back[300..], GuestAddress(0x50000)).unwrap();
        assert_eq!(back, pattern);
        let mut on_disk = vec![0u8; 1024];
        File::open(&path).unwrap().read_exact_at(&mut on_disk, 5 * 512).unwrap();
        assert_eq!(on_disk, pattern);
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn discard_punches_holes_and_read_only_refuses_writes() {
        let path = image(2048);
        std::fs::write(&path, vec![0xaa; 2048 * 512]).unwrap();
        {
            let mut blk = Block::open(&ImageSpec::raw(&path), false, "d").unwrap();
            let mem = create_guest_memory(16 << 20).unwrap();
            let mut q = queue(&mem);
            header(&mem, 0x10000, T_WRITE_ZEROES, 0);
            mem.write_obj(8u64, GuestAddress(0x20000)).unwrap();
            mem.write_obj(1024u32, GuestAddress(0x20008)).unwrap();
            mem.write_obj(1u32, GuestAddress(0x2000c)).unwrap(); // unmap
            put_desc(&mem, 0, 0x10000, 16, R | N, 1);
            put_desc(&mem, 1, 0x20000, 16, R | N, 2);
            put_desc(&mem, 2, 0x30000, 1, W, 0);
            publish(&mem, &[0]);
            blk.process_queue(0, std::slice::from_mut(&mut q), &mem);
            assert_eq!(status(&mem, 0x30000), S_OK);
        }
        let data = std::fs::read(&path).unwrap();
        assert!(data[8 * 512..1032 * 512].iter().all(|b| *b == 0));
        assert_eq!(data[7 * 512], 0xaa);
        assert_eq!(data[1032 * 512], 0xaa);

        let mut ro = Block::open(&ImageSpec::raw(&path), true, "d").unwrap();
        assert_ne!(ro.features() & F_RO, 0);
        let mem = create_guest_memory(16 << 20).unwrap();
        let mut q = queue(&mem);
        header(&mem, 0x10000, T_OUT, 0);
        put_desc(&mem, 0, 0x10000, 16, R | N, 1);
        put_desc(&mem, 1, 0x20000, 512, R | N, 2);
        put_desc(&mem, 2, 0x30000, 1, W, 0);
        publish(&mem, &[0]);
        ro.process_queue(0, std::slice::from_mut(&mut q), &mem);
        assert_eq!(status(&mem, 0x30000), S_IOERR);
        assert_eq!(std::fs::read(&path).unwrap()[0], 0xaa);
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn a_grown_image_is_announced() {
        let path = image(8);
        let mut blk = Block::open(&ImageSpec::raw(&path), false, "d").unwrap();
        let mem = create_guest_memory(16 << 20).unwrap();
        assert_eq!(blk.process_backend(&mut [], &mem), 0, "nothing changed yet");
        std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(16 * 512).unwrap();
        let fd = blk.backend_fd().expect("inotify watch");
        let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd.
        assert_eq!(unsafe { libc::poll(&mut pfd, 1, 5000) }, 1, "inotify reported the change");
        assert_eq!(blk.process_backend(&mut [], &mem), CONFIG_CHANGED);
        let mut capacity = [0u8; 8];
        blk.read_config(0, &mut capacity);
        assert_eq!(u64::from_le_bytes(capacity), 16);
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn a_buffer_outside_memory_still_gets_a_status() {
        let path = image(16);
        let mut blk = Block::open(&ImageSpec::raw(&path), false, "d").unwrap();
        let mem = create_guest_memory(16 << 20).unwrap();
        let mut q = queue(&mem);
        header(&mem, 0x10000, T_IN, 0);
        put_desc(&mem, 0, 0x10000, 16, R | N, 1);
        put_desc(&mem, 1, 0x7fff_0000_0000, 512, W | N, 2);
        put_desc(&mem, 2, 0x30000, 1, W, 0);
        mem.write_obj(0xffu8, GuestAddress(0x30000)).unwrap();
        publish(&mem, &[0]);
        blk.process_queue(0, std::slice::from_mut(&mut q), &mem);
        assert_eq!(status(&mem, 0x30000), S_IOERR);
        assert_eq!(used(&mem, 0), (0, 1));
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn a_disk_switches_to_an_overlay_and_its_image_is_only_read_then() {
        use crate::devices::storage::image::Layer;
        let base = image(64);
        std::fs::write(&base, vec![0x5a; 64 * 512]).unwrap();
        let mut blk = Block::open(&ImageSpec::raw(&base), false, "d").unwrap();
        blk.image.write_at(&[0x11; 512], 512).unwrap();
        let qcow2 = |name: &str, size: &str| {
            let path = base.with_extension(name);
            let made = std::process::Command::new("qemu-img")
                .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
                .arg(&base)
                .arg(&path)
                .arg(size)
                .status()
                .expect("qemu-img is needed: apt-get install qemu-utils");
            assert!(made.success());
            path
        };
        let overlay = qcow2("top.qcow2", "32K");
        let spec = |path: &Path| ImageSpec {
            path: path.to_path_buf(),
            format: ImageFormat::Qcow2,
            backing: vec![Layer { path: base.clone(), format: ImageFormat::Raw }],
        };
        // Another size than the disk's: refused, the disk stays on its image.
        let small = qcow2("small.qcow2", "16K");
        let error = blk.prepare_image(&spec(&small)).err().expect("refused").to_string();
        assert!(error.contains(&small.display().to_string()), "{error}");
        blk.flush_image().unwrap();
        let ready = blk.prepare_image(&spec(&overlay)).unwrap();
        blk.install_image(ready);
        blk.image.write_at(&[0x22; 512], 0).unwrap();
        let mut back = [0u8; 1024];
        blk.image.read_at(&mut back, 0).unwrap();
        assert_eq!((back[0], back[511], back[512], back[1023]), (0x22, 0x22, 0x11, 0x11));
        // The image before holds what was written before the switch, nothing after; its
        // lock went with it, and the overlay's is held.
        let before = std::fs::read(&base).unwrap();
        assert_eq!((before[0], before[512]), (0x5a, 0x11));
        drop(Block::open(&ImageSpec::raw(&base), false, "again").expect("let go of"));
        assert!(matches!(
            Block::open(&spec(&overlay), false, "other"),
            Err(BlockError::Lock(LockError::Locked { .. }))
        ));
        for path in [base, overlay, small] {
            let _ = std::fs::remove_file(path);
        }
    }

    #[test]
    fn locks_keep_two_writers_apart() {
        let path = image(8);
        let first = Block::open(&ImageSpec::raw(&path), false, "a").unwrap();
        assert!(matches!(
            Block::open(&ImageSpec::raw(&path), false, "b"),
            Err(BlockError::Lock(LockError::Locked { .. }))
        ));
        assert!(matches!(
            Block::open(&ImageSpec::raw(&path), true, "b"),
            Err(BlockError::Lock(LockError::Locked { .. }))
        ));
        drop(first);
        let r1 = Block::open(&ImageSpec::raw(&path), true, "a").unwrap();
        let _r2 = Block::open(&ImageSpec::raw(&path), true, "b").expect("readers share");
        assert!(matches!(
            Block::open(&ImageSpec::raw(&path), false, "c"),
            Err(BlockError::Lock(LockError::Locked { .. }))
        ));
        drop(r1);
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn only_a_regular_file_is_a_disk() {
        // A device or a FIFO as the image: refused at once (a FIFO is not waited on).
        let fifo = image(1).with_extension("fifo");
        let _ = std::fs::remove_file(&fifo);
        let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo reads the NUL-terminated path; the result is checked.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        for path in [fifo.as_path(), Path::new("/dev/zero")] {
            assert!(matches!(
                Block::open(&ImageSpec::raw(path), true, "x"),
                Err(BlockError::Open { .. })
            ));
        }
        let _ = std::fs::remove_file(fifo);
    }

    #[test]
    fn hostile_requests() {
        let path = image(16);
        let mut blk = Block::open(&ImageSpec::raw(&path), false, "d").unwrap();
        let mem = create_guest_memory(16 << 20).unwrap();
        let mut q = queue(&mem);
        // No status byte at all; a header that is too short; an unknown type; a data
        // length that is not a multiple of 512; a sector that overflows u64.
        put_desc(&mem, 0, 0x10000, 16, R, 0);
        put_desc(&mem, 1, 0x11000, 4, R | N, 2);
        put_desc(&mem, 2, 0x30001, 1, W, 0);
        header(&mem, 0x12000, 99, 0);
        put_desc(&mem, 3, 0x12000, 16, R | N, 4);
        put_desc(&mem, 4, 0x30002, 1, W, 0);
        header(&mem, 0x13000, T_IN, 0);
        put_desc(&mem, 5, 0x13000, 16, R | N, 6);
        put_desc(&mem, 6, 0x40000, 100, W | N, 7);
        put_desc(&mem, 7, 0x30003, 1, W, 0);
        header(&mem, 0x14000, T_IN, u64::MAX);
        put_desc(&mem, 8, 0x14000, 16, R | N, 9);
        put_desc(&mem, 9, 0x40000, 512, W | N, 10);
        put_desc(&mem, 10, 0x30004, 1, W, 0);
        // A data buffer of 4 GiB claimed in one descriptor.
        header(&mem, 0x15000, T_IN, 0);
        put_desc(&mem, 11, 0x15000, 16, R | N, 12);
        put_desc(&mem, 12, 0x100000, u32::MAX, W | N, 13);
        put_desc(&mem, 13, 0x30005, 1, W, 0);
        publish(&mem, &[0, 1, 3, 5, 8, 11]);
        blk.process_queue(0, std::slice::from_mut(&mut q), &mem);
        let statuses: Vec<u8> = (1..5).map(|i| status(&mem, 0x30000 + i)).collect();
        assert_eq!(statuses, vec![S_IOERR, S_UNSUPP, S_IOERR, S_IOERR]);
        assert_eq!(used(&mem, 0).1, 0, "no status byte: nothing written");
        let _ = std::fs::remove_file(path);
    }
}
