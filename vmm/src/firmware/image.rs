//! The firmware image as a PC has it: a ROM just below 4 GiB (where the reset vector at
//! 0xFFFFFFF0 lands), mapped read-only, and its last 128 KiB also at 0xE0000–0xFFFFF, the
//! legacy BIOS area, as RAM the firmware runs from and shadows into.

use std::io::Read;
use std::path::{Path, PathBuf};

use vm_memory::{Bytes, GuestAddress, MmapRegion};

use crate::arch::x86_64::layout::FOUR_GIB;
use crate::vstate::memory::GuestMem;

/// Image sizes accepted: whole 64 KiB blocks, up to 16 MiB (SeaBIOS: 128 or 256 KiB;
/// OVMF's code: 4 MiB).
pub const BLOCK: u64 = 64 << 10;
pub const MAX_BYTES: u64 = 16 << 20;
/// The part of the image also visible below 1 MiB.
pub const LEGACY_BYTES: u64 = 128 << 10;
/// Where that part starts.
pub const LEGACY_START: u64 = 0x10_0000 - LEGACY_BYTES;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("cannot read the firmware image {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the firmware image {} is {size} bytes; a firmware image is whole 64 KiB blocks up to \
         16 MiB (install Debian's seabios package for /usr/share/seabios/bios-256k.bin)",
        path.display()
    )]
    Size { path: PathBuf, size: u64 },
    #[error("cannot allocate memory for the firmware image")]
    Allocate(#[source] vm_memory::mmap::MmapRegionError),
    #[error("cannot copy the firmware into the legacy BIOS area")]
    Legacy(#[source] vm_memory::GuestMemoryError),
}

/// A firmware image in memory of its own, to be mapped as the machine's ROM.
pub struct FirmwareImage {
    region: MmapRegion,
}

impl FirmwareImage {
    /// Reads the image at `path`: a regular file of whole 64 KiB blocks, at most 16 MiB.
    pub fn load(path: &Path) -> Result<Self, ImageError> {
        let read = |source| ImageError::Read { path: path.to_path_buf(), source };
        let mut file = crate::devices::storage::open_regular(path, false).map_err(read)?;
        let size = file.metadata().map_err(read)?.len();
        if size == 0 || size > MAX_BYTES || !size.is_multiple_of(BLOCK) {
            return Err(ImageError::Size { path: path.to_path_buf(), size });
        }
        let region = MmapRegion::new(size as usize).map_err(ImageError::Allocate)?;
        // SAFETY: the region was just mapped `size` bytes long, read-write and private to
        // it; nothing else refers to it while the file is read into it.
        let dst = unsafe { std::slice::from_raw_parts_mut(region.as_ptr(), size as usize) };
        // Exactly `size` bytes: a file that shrank meanwhile is an error, not a short ROM.
        file.read_exact(dst).map_err(read)?;
        Ok(FirmwareImage { region })
    }

    pub fn size(&self) -> u64 {
        self.region.size() as u64
    }

    /// The guest-physical address of the ROM: it ends at 4 GiB.
    pub fn rom_start(&self) -> u64 {
        FOUR_GIB - self.size()
    }

    /// The host mapping, for the read-only KVM memory slot: (address, length).
    pub fn host_mapping(&self) -> (u64, u64) {
        (self.region.as_ptr() as u64, self.region.size() as u64)
    }

    /// Copies the image's last 128 KiB (all of a smaller one, at its end) into guest RAM
    /// below 1 MiB, where the firmware runs in real mode and shadows its runtime part.
    pub fn copy_legacy(&self, mem: &GuestMem) -> Result<(), ImageError> {
        let len = LEGACY_BYTES.min(self.size()) as usize;
        // SAFETY: the region is `size` bytes long and lives as long as `self`; the slice
        // is its last `len` bytes, and only KVM reads the region (never writes: read-only).
        let tail = unsafe {
            std::slice::from_raw_parts(self.region.as_ptr().add(self.region.size() - len), len)
        };
        mem.write_slice(tail, GuestAddress(0x10_0000 - len as u64)).map_err(ImageError::Legacy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, bytes: &[u8]) -> PathBuf {
        let path = std::env::temp_dir().join(format!("vessel-fw-{}-{name}", std::process::id()));
        std::fs::write(&path, bytes).unwrap();
        path
    }

    #[test]
    fn an_image_lands_below_4g_and_its_tail_below_1m() {
        let mut bytes = vec![0u8; 256 << 10];
        bytes[(256 << 10) - 16] = 0xea; // the reset vector's far jump
        bytes[128 << 10] = 0x5a; // the first byte of the last 128 KiB
        let path = file("ok.bin", &bytes);
        let image = FirmwareImage::load(&path).unwrap();
        assert_eq!((image.size(), image.rom_start()), (256 << 10, 0xfffc_0000));
        let mem = crate::vstate::memory::create_guest_memory(16 << 20).unwrap();
        image.copy_legacy(&mem).unwrap();
        let (mut first, mut vector) = ([0u8], [0u8]);
        mem.read_slice(&mut first, GuestAddress(LEGACY_START)).unwrap();
        mem.read_slice(&mut vector, GuestAddress(0xffff0)).unwrap();
        assert_eq!((first[0], vector[0]), (0x5a, 0xea));
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn odd_sizes_and_non_files_are_refused_with_the_fix() {
        let odd = file("odd.bin", &[0u8; 1000]);
        let err = FirmwareImage::load(&odd).err().unwrap().to_string();
        assert!(err.contains("1000 bytes") && err.contains("seabios"), "{err}");
        assert!(matches!(
            FirmwareImage::load(Path::new("/dev/zero")),
            Err(ImageError::Read { .. })
        ));
        assert!(matches!(
            FirmwareImage::load(Path::new("/nonexistent/bios.bin")),
            Err(ImageError::Read { .. })
        ));
        let _ = std::fs::remove_file(odd);
    }
}
