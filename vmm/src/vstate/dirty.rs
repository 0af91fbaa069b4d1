//! Which pages of guest RAM changed since a live migration last looked: the guest's
//! writes (KVM's dirty log on each RAM slot) and the VMM's own (`written`).

use std::sync::Arc;

use kvm_bindings::{KVM_MEM_LOG_DIRTY_PAGES, kvm_userspace_memory_region};
use kvm_ioctls::VmFd;
use vm_memory::{Address, GuestMemoryBackend, GuestMemoryRegion};

use super::memory::{GuestMem, MemoryError};
use super::written::of;

const PAGE: u64 = 4096;

/// A KVM memory slot over guest RAM: `len` bytes from `offset` into region `region` of
/// guest memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RamSlot {
    pub slot: u32,
    pub region: usize,
    pub offset: u64,
    pub len: u64,
}

/// The KVM slots of `mem` as `memory::register_with_kvm` made them: one per region.
pub fn ram_slots(mem: &GuestMem) -> Vec<RamSlot> {
    mem.iter()
        .enumerate()
        .map(|(i, r)| RamSlot { slot: i as u32, region: i, offset: 0, len: r.len() })
        .collect()
}

/// Which pages of guest RAM changed since the last look: the guest's writes (KVM's dirty
/// log on every RAM slot), the VMM's (`WrittenPages`), and parts of RAM no slot logs (a
/// firmware machine's BIOS area, whose slots come and go), counted as changed every time.
pub struct DirtyLog {
    vm: Arc<VmFd>,
    mem: GuestMem,
    slots: Vec<RamSlot>,
    /// (region, offset, length) of RAM outside `slots`.
    unlogged: Vec<(usize, u64, u64)>,
}

/// A page bitmap per region of guest memory: bit `i % 64` of word `i / 64` for page `i`.
pub type PageBits = Vec<Vec<u64>>;

impl DirtyLog {
    /// `slots`: the KVM slots over `mem`; the rest of `mem` counts as unlogged.
    pub fn new(vm: Arc<VmFd>, mem: GuestMem, slots: Vec<RamSlot>) -> DirtyLog {
        let mut unlogged = Vec::new();
        for (index, region) in mem.iter().enumerate() {
            let mut covered: Vec<(u64, u64)> = slots
                .iter()
                .filter(|s| s.region == index)
                .map(|s| (s.offset, s.offset + s.len))
                .collect();
            covered.sort_unstable();
            let mut at = 0;
            for (start, end) in covered.into_iter().chain([(region.len(), region.len())]) {
                if start > at {
                    unlogged.push((index, at, start - at));
                }
                at = at.max(end);
            }
        }
        DirtyLog { vm, mem, slots, unlogged }
    }

    /// The guest memory it watches.
    pub fn memory(&self) -> GuestMem {
        self.mem.clone()
    }

    /// Turns KVM's dirty log on for every RAM slot (it starts empty: each page is then
    /// logged on the guest's first write to it) and forgets what the VMM wrote so far.
    pub fn start(&self) -> Result<(), MemoryError> {
        self.set_logging(true)?;
        for region in self.mem.iter() {
            of(region).take();
        }
        Ok(())
    }

    /// Turns KVM's dirty log off again.
    pub fn stop(&self) -> Result<(), MemoryError> {
        self.set_logging(false)
    }

    fn set_logging(&self, on: bool) -> Result<(), MemoryError> {
        for s in &self.slots {
            let region = self.mem.iter().nth(s.region).expect("a slot of an existing region");
            let desc = kvm_userspace_memory_region {
                slot: s.slot,
                guest_phys_addr: region.start_addr().raw_value() + s.offset,
                memory_size: s.len,
                userspace_addr: region.as_ptr() as u64 + s.offset,
                flags: if on { KVM_MEM_LOG_DIRTY_PAGES } else { 0 },
            };
            // SAFETY: the same mapping the slot already has (part of `mem`, alive while the
            // VM fd is); only the flags change.
            unsafe { self.vm.set_user_memory_region(desc) }
                .map_err(|source| MemoryError::RegisterSlot { slot: s.slot, source })?;
        }
        Ok(())
    }

    /// The pages changed since the last call (or `start`), per region; taking them clears
    /// them.
    pub fn take(&self) -> Result<PageBits, MemoryError> {
        let mut bits: PageBits = self.mem.iter().map(|r| of(r).take()).collect();
        for (region, words) in self.mem.iter().zip(bits.iter_mut()) {
            words.resize(pages(region.len()).div_ceil(64) as usize, 0);
        }
        for s in &self.slots {
            let log = self
                .vm
                .get_dirty_log(s.slot, s.len as usize)
                .map_err(|source| MemoryError::RegisterSlot { slot: s.slot, source })?;
            let first = s.offset / PAGE;
            for (word, value) in log.iter().enumerate() {
                let mut value = *value;
                while value != 0 {
                    let bit = u64::from(value.trailing_zeros());
                    value &= value - 1;
                    set(&mut bits[s.region], first + word as u64 * 64 + bit);
                }
            }
        }
        for &(region, offset, len) in &self.unlogged {
            for page in offset / PAGE..(offset + len).div_ceil(PAGE) {
                set(&mut bits[region], page);
            }
        }
        Ok(bits)
    }
}

/// Whether bit `bit` is set in a bitmap of 64 bits a word (`PageBits`' words; the copied
/// disks' chunk bitmaps); false beyond its end.
pub fn is_set(words: &[u64], bit: u64) -> bool {
    words.get((bit / 64) as usize).is_some_and(|w| w & (1 << (bit % 64)) != 0)
}

/// Pages in `len` bytes (a last partial page counts).
pub fn pages(len: u64) -> u64 {
    len.div_ceil(PAGE)
}

fn set(words: &mut [u64], page: u64) {
    if let Some(word) = words.get_mut((page / 64) as usize) {
        *word |= 1 << (page % 64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vstate::memory::create_guest_memory;
    use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

    #[test]
    fn writes_through_vm_memory_mark_their_pages() {
        let mem = create_guest_memory(32 << 20).unwrap();
        let region = mem.iter().next().unwrap();
        assert!(of(region).take().iter().all(|w| *w == 0), "nothing written yet");
        // An object across a page boundary, and a slice of three pages.
        mem.write_obj(0x1122_3344_5566_7788u64, GuestAddress(0x5ffc)).unwrap();
        mem.write_slice(&[1u8; 3 * 4096], GuestAddress(0x10_0000)).unwrap();
        // Reads mark nothing.
        let mut buf = [0u8; 4096];
        mem.read_slice(&mut buf, GuestAddress(0x20_0000)).unwrap();
        let taken = of(region).take();
        let set: Vec<usize> =
            (0..taken.len() * 64).filter(|i| taken[i / 64] & (1 << (i % 64)) != 0).collect();
        assert_eq!(set, vec![5, 6, 0x100, 0x101, 0x102]);
        assert!(of(region).take().iter().all(|w| *w == 0), "taking clears them");
    }
}
