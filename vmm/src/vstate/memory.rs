//! Guest RAM: anonymous mappings laid out around the 32-bit MMIO hole, registered as KVM
//! memory slots, and the e820 map that describes them.

use vm_memory::{Address, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use crate::arch::x86_64::layout::{
    BIOS_AREA_END, BIOS_AREA_START, BOOT_FB_START, EBDA_START, FOUR_GIB, HIMEM_START,
    MMIO_HOLE_START, PCI_ECAM_SIZE, PCI_ECAM_START,
};

/// Guest memory as Vessel uses it.
pub type GuestMem = GuestMemoryMmap<()>;

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
    #[error("KVM refused guest memory slot {slot}")]
    RegisterSlot {
        slot: u32,
        #[source]
        source: kvm_ioctls::Error,
    },
}

/// The RAM ranges of a machine with `size` bytes: below the MMIO hole, then above 4 GiB.
pub fn ram_ranges(size: u64) -> Vec<(GuestAddress, usize)> {
    let low = size.min(MMIO_HOLE_START);
    let mut ranges = vec![(GuestAddress(0), low as usize)];
    if size > low {
        ranges.push((GuestAddress(FOUR_GIB), (size - low) as usize));
    }
    ranges
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

/// E820 entry types (ACPI 6.5 §15, "System Address Map Interfaces").
pub const E820_RAM: u32 = 1;
pub const E820_RESERVED: u32 = 2;

/// One entry of the BIOS-style memory map handed to the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct E820Entry {
    pub addr: u64,
    pub size: u64,
    pub kind: u32,
}

/// The e820 map of a machine with `size` bytes of RAM: usable RAM below the EBDA, the BIOS
/// area (ACPI tables) reserved, RAM from 1 MiB to the MMIO hole, the PCI ECAM window
/// reserved (PCI Firmware 3.2 §4.1.2 asks for it), the boot framebuffer's
/// `framebuffer_bytes` reserved if there is one, RAM above 4 GiB; in address order.
pub fn e820_map(size: u64, framebuffer_bytes: Option<u64>) -> Vec<E820Entry> {
    let mut map = vec![
        E820Entry { addr: 0, size: EBDA_START, kind: E820_RAM },
        E820Entry {
            addr: BIOS_AREA_START,
            size: BIOS_AREA_END - BIOS_AREA_START,
            kind: E820_RESERVED,
        },
    ];
    for (i, (start, len)) in ram_ranges(size).into_iter().enumerate() {
        let end = start.raw_value() + len as u64;
        // The first range starts at 0, but only RAM from 1 MiB up is free for the OS.
        let start = if i == 0 { HIMEM_START } else { start.raw_value() };
        if end > start {
            map.push(E820Entry { addr: start, size: end - start, kind: E820_RAM });
        }
    }
    map.push(E820Entry { addr: PCI_ECAM_START, size: PCI_ECAM_SIZE, kind: E820_RESERVED });
    if let Some(bytes) = framebuffer_bytes {
        map.push(E820Entry { addr: BOOT_FB_START, size: bytes, kind: E820_RESERVED });
    }
    map.sort_by_key(|e| e.addr);
    map
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
    fn small_machine_has_one_range_and_matching_e820() {
        let size = 256 << 20;
        assert_eq!(ram_ranges(size), vec![(GuestAddress(0), size as usize)]);
        let map = e820_map(size, None);
        assert_eq!(map[0], E820Entry { addr: 0, size: EBDA_START, kind: E820_RAM });
        assert_eq!(map[1].kind, E820_RESERVED);
        assert_eq!(
            map[2],
            E820Entry { addr: HIMEM_START, size: size - HIMEM_START, kind: E820_RAM }
        );
        assert_eq!(
            map[3],
            E820Entry { addr: PCI_ECAM_START, size: PCI_ECAM_SIZE, kind: E820_RESERVED }
        );
        assert_eq!(map.len(), 4);
    }

    #[test]
    fn large_machine_splits_around_the_hole() {
        let size = 5u64 << 30;
        let ranges = ram_ranges(size);
        assert_eq!(ranges[0], (GuestAddress(0), MMIO_HOLE_START as usize));
        assert_eq!(ranges[1], (GuestAddress(FOUR_GIB), (size - MMIO_HOLE_START) as usize));
        let map = e820_map(size, None);
        assert_eq!(map[2].addr + map[2].size, MMIO_HOLE_START);
        assert_eq!(
            map[3],
            E820Entry { addr: PCI_ECAM_START, size: PCI_ECAM_SIZE, kind: E820_RESERVED }
        );
        assert_eq!(
            map[4],
            E820Entry { addr: FOUR_GIB, size: size - MMIO_HOLE_START, kind: E820_RAM }
        );
        let ram: u64 = map.iter().filter(|e| e.kind == E820_RAM).map(|e| e.size).sum();
        // All RAM except the 384 KiB between the EBDA and 1 MiB is usable.
        assert_eq!(ram, size - (HIMEM_START - EBDA_START));
    }

    #[test]
    fn rejects_tiny_and_unaligned_sizes() {
        assert!(matches!(create_guest_memory(1 << 20), Err(MemoryError::TooSmall(1))));
        assert!(matches!(create_guest_memory((32 << 20) + 1), Err(MemoryError::Unaligned(_))));
    }
}
