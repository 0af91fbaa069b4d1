//! Guest RAM: anonymous mappings laid out as `layout::ram_ranges` says (around the 32-bit
//! MMIO hole), registered as KVM memory slots.

use vm_memory::{Address, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use crate::arch::x86_64::layout::{BOOT_FB_START, FOUR_GIB, ram_ranges};

/// Guest memory as Vessel uses it: each region with a bitmap of the pages the VMM wrote
/// (`dirty`), for live migration.
pub type GuestMem = GuestMemoryMmap<super::written::WrittenPages>;

/// A run of guest memory as devices read and write it (writes mark the written-pages
/// bitmap).
pub type GuestSlice<'a> = vm_memory::VolatileSlice<'a, Marks<'a>>;

/// The written-pages bitmap of part of guest memory, as slices, readers and writers of
/// descriptor chains carry it.
pub type Marks<'a> = vm_memory::bitmap::MS<'a, GuestMem>;

/// Smallest machine Vessel builds: room for the boot structures, a kernel and a stack.
pub const MIN_MEMORY: u64 = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("memory size {0} MiB is too small (at least {min} MiB)", min = MIN_MEMORY >> 20)]
    TooSmall(u64),
    #[error("memory size must be a multiple of 4 KiB, got {0} bytes")]
    Unaligned(u64),
    #[error("cannot allocate {size} MiB of guest memory", size = .size >> 20)]
    Allocate {
        size: u64,
        #[source]
        source: vm_memory::mmap::FromRangesError,
    },
    #[error("guest RAM does not start with a region from 0 past 1 MiB, as firmware needs")]
    NoLowRam,
    #[error("KVM refused guest memory slot {slot}")]
    RegisterSlot {
        slot: u32,
        #[source]
        source: kvm_ioctls::Error,
    },
}

/// Registers `len` bytes at host address `host` as a read-only KVM slot at guest address
/// `guest` (a firmware ROM): the guest's writes there exit to the VMM as MMIO.
pub fn register_rom(
    vm: &kvm_ioctls::VmFd,
    slot: u32,
    guest: u64,
    (host, len): (u64, u64),
) -> Result<(), MemoryError> {
    let region_desc = kvm_bindings::kvm_userspace_memory_region {
        slot,
        guest_phys_addr: guest,
        memory_size: len,
        userspace_addr: host,
        flags: kvm_bindings::KVM_MEM_READONLY,
    };
    // SAFETY: the mapping belongs to the firmware image, which the machine drops only
    // after the VM fd (the instance's field order says so).
    unsafe { vm.set_user_memory_region(region_desc) }
        .map_err(|source| MemoryError::RegisterSlot { slot, source })
}

/// Allocates guest RAM (anonymous, private, zero-filled).
pub fn create_guest_memory(size: u64) -> Result<GuestMem, MemoryError> {
    if size < MIN_MEMORY {
        return Err(MemoryError::TooSmall(size >> 20));
    }
    if !size.is_multiple_of(4096) {
        return Err(MemoryError::Unaligned(size));
    }
    let mem = GuestMemoryMmap::from_ranges(&ram_ranges(size))
        .map_err(|source| MemoryError::Allocate { size, source })?;
    for region in mem.iter() {
        // Transparent huge pages where the host offers them on request (THP "madvise"):
        // fewer TLB misses for the guest and for the VMM's own copies into guest memory,
        // as QEMU does. Advice only: if the kernel declines, RAM works as before.
        // SAFETY: the range is exactly this region's mapping, which lives as long as `mem`;
        // MADV_HUGEPAGE changes no contents.
        unsafe {
            libc::madvise(region.as_ptr().cast(), region.len() as usize, libc::MADV_HUGEPAGE);
        }
        // Never in a core dump of the VMM: the guest's memory is the guest's (its keys, its
        // files), and a dump of a crashed VM process would hand it to whoever reads dumps.
        // SAFETY: as above; MADV_DONTDUMP only marks the mapping.
        if unsafe {
            libc::madvise(region.as_ptr().cast(), region.len() as usize, libc::MADV_DONTDUMP)
        } != 0
        {
            log::warn!(
                "guest memory may appear in core dumps: {}",
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(mem)
}

/// Where each region of `mem` is mapped in this process: (address, length).
pub fn host_ranges(mem: &GuestMem) -> Vec<(usize, usize)> {
    mem.iter().map(|r| (r.as_ptr() as usize, r.len() as usize)).collect()
}

/// Registers every region of `mem` with the VM as a KVM memory slot.
pub fn register_with_kvm(vm: &kvm_ioctls::VmFd, mem: &GuestMem) -> Result<(), MemoryError> {
    for (slot, region) in mem.iter().enumerate() {
        let slot = slot as u32;
        let region_desc = kvm_bindings::kvm_userspace_memory_region {
            slot,
            guest_phys_addr: region.start_addr().raw_value(),
            memory_size: region.len(),
            userspace_addr: region.as_ptr() as u64,
            flags: 0,
        };
        // SAFETY: the mapping described by `region_desc` belongs to `mem`, which the machine
        // keeps alive for as long as the VM fd exists (they are dropped together, VM first).
        unsafe { vm.set_user_memory_region(region_desc) }
            .map_err(|source| MemoryError::RegisterSlot { slot, source })?;
    }
    Ok(())
}

/// Registers the boot framebuffer's memory as the KVM slot after guest RAM's, at
/// `BOOT_FB_START`.
pub fn register_framebuffer(
    vm: &kvm_ioctls::VmFd,
    mem: &GuestMem,
    fb: &crate::display::boot_fb::BootFramebuffer,
) -> Result<(), MemoryError> {
    let slot = mem.num_regions() as u32;
    let (addr, len) = fb.host_mapping();
    let region_desc = kvm_bindings::kvm_userspace_memory_region {
        slot,
        guest_phys_addr: BOOT_FB_START,
        memory_size: len,
        userspace_addr: addr,
        flags: 0,
    };
    // SAFETY: the mapping belongs to `fb`, which the machine drops only after the VM fd
    // (the instance's field order says so).
    unsafe { vm.set_user_memory_region(region_desc) }
        .map_err(|source| MemoryError::RegisterSlot { slot, source })
}

/// End of RAM below 4 GiB (exclusive).
pub fn low_ram_end(mem: &GuestMem) -> u64 {
    mem.iter()
        .map(|r| r.start_addr().unchecked_add(r.len()).raw_value())
        .filter(|end| *end <= FOUR_GIB)
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_tiny_and_unaligned_sizes() {
        assert!(matches!(create_guest_memory(1 << 20), Err(MemoryError::TooSmall(1))));
        assert!(matches!(create_guest_memory((32 << 20) + 1), Err(MemoryError::Unaligned(_))));
    }
}
