//! The VGA's video memory: one host mapping that the guest reaches two ways. Through the
//! legacy window (0xA0000–0xBFFFF) every access exits to the VMM and goes through the
//! VGA's planar logic (`regs.rs`), which notes the pages it wrote; through BAR 0, the linear
//! framebuffer, the memory is a KVM memory slot of its own with dirty logging, so guest
//! writes cost nothing and the renderer asks KVM which pages they touched.
//!
//! Planar layout, as QEMU keeps it: byte `4 * a + p` is plane `p`'s byte at address `a`,
//! so chain-4 (mode 13h) and the linear modes read the same bytes the planes hold.

use std::sync::{Arc, Mutex};

use kvm_bindings::{KVM_MEM_LOG_DIRTY_PAGES, kvm_userspace_memory_region};
use kvm_ioctls::VmFd;
use vm_memory::{MmapRegion, VolatileMemory};

use crate::devices::log_limit::LogLimit;
use crate::sync::lock;

/// Bytes a dirty bit stands for.
pub const PAGE: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum VramError {
    #[error("cannot allocate {0} MiB of video memory")]
    Allocate(usize, #[source] vm_memory::mmap::MmapRegionError),
    #[error("video memory of {0} bytes is not a power of two of at least 1 MiB")]
    Size(usize),
}

/// Where the linear framebuffer is mapped into the guest as a KVM slot.
struct Slot {
    vm: Arc<VmFd>,
    slot: u32,
    /// Guest-physical address while registered.
    at: Option<u64>,
    /// KVM refused the slot or its dirty log once (said once in the log).
    failed: bool,
}

pub struct Vram {
    region: MmapRegion,
    slot: Mutex<Option<Slot>>,
    /// Slot placements KVM refused (a guest can ask for many), logged at a limited rate.
    refused: LogLimit,
}

impl Vram {
    pub fn new(bytes: usize) -> Result<Self, VramError> {
        if !bytes.is_power_of_two() || bytes < (1 << 20) {
            return Err(VramError::Size(bytes));
        }
        let region = MmapRegion::new(bytes).map_err(|e| VramError::Allocate(bytes >> 20, e))?;
        Ok(Vram { region, slot: Mutex::new(None), refused: LogLimit::default() })
    }

    pub fn len(&self) -> usize {
        self.region.size()
    }

    /// Never: video memory is at least 1 MiB.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Pages of `len()` bytes.
    pub fn pages(&self) -> usize {
        self.len() / PAGE
    }

    /// `addr` wrapped into the memory (its size is a power of two), as the hardware's
    /// address lines do.
    fn wrap(&self, addr: usize) -> usize {
        addr & (self.len() - 1)
    }

    pub fn read_byte(&self, addr: usize) -> u8 {
        let slice = self.region.get_slice(self.wrap(addr), 1).expect("wrapped into the region");
        let mut b = [0u8];
        slice.copy_to(&mut b[..]);
        b[0]
    }

    pub fn write_byte(&self, addr: usize, value: u8) {
        let slice = self.region.get_slice(self.wrap(addr), 1).expect("wrapped into the region");
        slice.copy_from(&[value][..]);
    }

    /// The four planes' bytes at planar address `addr`.
    pub fn read_planes(&self, addr: usize) -> u32 {
        let at = self.wrap(addr.wrapping_mul(4));
        let slice = self.region.get_slice(at, 4).expect("aligned inside the region");
        let mut b = [0u8; 4];
        slice.copy_to(&mut b[..]);
        u32::from_le_bytes(b)
    }

    pub fn write_planes(&self, addr: usize, value: u32) {
        let at = self.wrap(addr.wrapping_mul(4));
        let slice = self.region.get_slice(at, 4).expect("aligned inside the region");
        slice.copy_from(&value.to_le_bytes()[..]);
    }

    /// Copies `out.len()` bytes from `addr` (wrapping at the end of the memory).
    pub fn copy_out(&self, addr: usize, out: &mut [u8]) {
        let mut done = 0;
        while done < out.len() {
            let at = self.wrap(addr.wrapping_add(done));
            let n = (self.len() - at).min(out.len() - done);
            let slice = self.region.get_slice(at, n).expect("inside the region");
            slice.copy_to(&mut out[done..done + n]);
            done += n;
        }
    }

    /// Copies `bytes` in at `addr` (wrapping at the end of the memory).
    pub fn copy_in(&self, addr: usize, bytes: &[u8]) {
        let mut done = 0;
        while done < bytes.len() {
            let at = self.wrap(addr.wrapping_add(done));
            let n = (self.len() - at).min(bytes.len() - done);
            let slice = self.region.get_slice(at, n).expect("inside the region");
            slice.copy_from(&bytes[done..done + n]);
            done += n;
        }
    }

    /// Zeroes the first `len` bytes (a DISPI mode set without NOCLEARMEM).
    pub fn clear(&self, len: usize) {
        const ZEROS: [u8; 4096] = [0; 4096];
        let len = len.min(self.len());
        for at in (0..len).step_by(ZEROS.len()) {
            let n = ZEROS.len().min(len - at);
            let slice = self.region.get_slice(at, n).expect("inside the region");
            slice.copy_from(&ZEROS[..n]);
        }
    }

    /// Maps the memory at guest-physical `at` as KVM slot `slot` of `vm` (None: unmaps
    /// it), logging dirty pages. A refusal is logged and leaves the BAR to the MMIO path
    /// (slow, but correct).
    pub fn map(&self, vm: &Arc<VmFd>, slot: u32, at: Option<u64>) {
        let mut state = lock(&self.slot);
        let s = state.get_or_insert_with(|| Slot { vm: vm.clone(), slot, at: None, failed: false });
        if s.at == at {
            return;
        }
        if s.at.take().is_some() {
            let gone = kvm_userspace_memory_region { slot: s.slot, ..Default::default() };
            // SAFETY: a zero-sized region removes the slot; nothing is mapped.
            if let Err(e) = unsafe { s.vm.set_user_memory_region(gone) } {
                log::error!("cannot unmap the VGA framebuffer's KVM slot: {e}");
            }
        }
        let Some(addr) = at else { return };
        let region = kvm_userspace_memory_region {
            slot: s.slot,
            guest_phys_addr: addr,
            memory_size: self.len() as u64,
            userspace_addr: self.region.as_ptr() as u64,
            flags: KVM_MEM_LOG_DIRTY_PAGES,
        };
        // SAFETY: the mapping is this `Vram`'s and outlives the slot: `Drop` removes the
        // slot before the region is unmapped.
        match unsafe { s.vm.set_user_memory_region(region) } {
            Ok(()) => s.at = Some(addr),
            Err(e) => {
                s.failed = true;
                if self.refused.allow().is_some() {
                    log::warn!(
                        "KVM refused the VGA framebuffer's memory slot at {addr:#x} ({e}); \
                         the guest's writes to it go through the VMM"
                    );
                }
            }
        }
    }

    /// ORs the pages the guest wrote through the KVM slot since the last call into
    /// `dirty` (one bit a page). Returns false if the log could not be read (every page
    /// must then count as dirty).
    pub fn take_guest_dirty(&self, dirty: &mut [u64]) -> bool {
        let mut state = lock(&self.slot);
        // Unmapped (never, or KVM refused the place): the guest's writes to the BAR go
        // through the VMM, which marks what they dirty itself.
        let Some(s) = state.as_mut().filter(|s| s.at.is_some()) else { return true };
        match s.vm.get_dirty_log(s.slot, self.len()) {
            Ok(log) => {
                for (d, l) in dirty.iter_mut().zip(log) {
                    *d |= l;
                }
                true
            }
            Err(e) => {
                if !s.failed {
                    log::warn!("cannot read the VGA framebuffer's dirty log ({e}); redrawing all");
                }
                s.failed = true;
                false
            }
        }
    }
}

impl Drop for Vram {
    fn drop(&mut self) {
        if let Some(s) = lock(&self.slot).as_mut()
            && s.at.take().is_some()
        {
            let gone = kvm_userspace_memory_region { slot: s.slot, ..Default::default() };
            // SAFETY: removes the slot that points at this region, before it is unmapped.
            let _ = unsafe { s.vm.set_user_memory_region(gone) };
        }
    }
}

/// One bit per page of video memory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DirtyPages {
    pub bits: Vec<u64>,
}

impl DirtyPages {
    pub fn new(pages: usize) -> Self {
        DirtyPages { bits: vec![0; pages.div_ceil(64)] }
    }

    pub fn mark(&mut self, addr: usize, len: usize) {
        let pages = self.bits.len() * 64;
        if pages == 0 || len == 0 {
            return;
        }
        let first = addr / PAGE;
        let last = addr.saturating_add(len - 1) / PAGE;
        for page in first..=last.min(first.saturating_add(pages)) {
            let page = page % pages;
            self.bits[page / 64] |= 1 << (page % 64);
        }
    }

    pub fn set_all(&mut self) {
        self.bits.fill(u64::MAX);
    }

    /// Whether any page of `addr..addr + len` (wrapping at the memory's end) is dirty.
    pub fn any(&self, addr: usize, len: usize) -> bool {
        let pages = self.bits.len() * 64;
        if pages == 0 || len == 0 {
            return false;
        }
        let first = addr / PAGE;
        let last = addr.saturating_add(len - 1) / PAGE;
        (first..=last.min(first.saturating_add(pages))).any(|page| {
            let page = page % pages;
            self.bits[page / 64] & (1 << (page % 64)) != 0
        })
    }

    pub fn clear(&mut self) {
        self.bits.fill(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn planar_layout_and_wrapping() {
        let vram = Vram::new(1 << 20).unwrap();
        vram.write_planes(3, 0x4433_2211);
        assert_eq!(vram.read_byte(12), 0x11);
        assert_eq!(vram.read_byte(15), 0x44);
        assert_eq!(vram.read_planes(3), 0x4433_2211);
        // Out-of-range addresses wrap, as the address lines do.
        vram.write_byte((1 << 20) + 5, 9);
        assert_eq!(vram.read_byte(5), 9);
        assert_eq!(vram.read_planes(usize::MAX / 4 + 3), vram.read_planes(usize::MAX / 4 + 3));
        let mut out = [0u8; 8];
        vram.write_byte((1 << 20) - 1, 7);
        vram.copy_out((1 << 20) - 1, &mut out);
        assert_eq!(out[0], 7);
        assert_eq!(out[6], 9);
        assert!(Vram::new(3 << 20).is_err());
    }

    #[test]
    fn dirty_pages() {
        let mut d = DirtyPages::new(256);
        assert!(!d.any(0, 1 << 20));
        d.mark(PAGE * 3 + 10, 1);
        assert!(d.any(PAGE * 3, 1));
        assert!(d.any(0, PAGE * 4));
        assert!(!d.any(0, PAGE * 3));
        assert!(!d.any(PAGE * 4, PAGE * 100));
        d.mark(usize::MAX - 10, 5); // wraps, never panics
        d.clear();
        assert!(!d.any(0, usize::MAX));
        d.set_all();
        assert!(d.any(PAGE * 255, 1));
    }
}
