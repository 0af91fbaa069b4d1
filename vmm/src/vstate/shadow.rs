//! The legacy BIOS area's RAM (0xC0000–0xFFFFF) under the i440FX's PAM registers (Intel
//! 82441FX datasheet §3.2.12, host bridge config 0x59–0x5F), for firmware machines: each
//! of its 13 segments (0xC0000–0xEFFFF in 16 KiB pieces, 0xF0000–0xFFFFF whole) is
//! writable RAM when its PAM field has WE, else read-only (writes are dropped, as when a
//! PC's BIOS area reads from ROM). SeaBIOS opens them while it shadows itself and closes
//! them after, so an OS cannot scribble over the BIOS; OVMF opens them all.
//!
//! The area holds the firmware's copy from the start (`FirmwareImage::copy_legacy`), so a
//! segment that reads "from ROM" (RE clear) reads that same copy; only writability follows
//! the registers. KVM cannot change a memory slot's read-only flag in place, so the area
//! has slots of its own, replaced whenever the registers change: the write that changes
//! them runs on its vCPU's thread, which enters the guest again only afterwards.

use std::sync::Arc;

use kvm_bindings::{KVM_MEM_READONLY, kvm_userspace_memory_region};
use kvm_ioctls::VmFd;
use vm_memory::{Address, GuestMemoryBackend, GuestMemoryRegion};

use super::memory::{GuestMem, MemoryError};

/// The area the PAM registers govern.
pub const START: u64 = 0xc_0000;
pub const END: u64 = 0x10_0000;
/// Its smallest segment.
const SEGMENT: u64 = 0x4000;
const SEGMENTS: usize = ((END - START) / SEGMENT) as usize;
/// The PAM registers: PAM0 (0x59, its high nibble for 0xF0000) to PAM6 (0x5F).
pub const PAM0: usize = 0x59;
pub const PAM_COUNT: usize = 7;
/// PAM field bits: read enable, write enable.
const WE: u8 = 0x2;

/// Where RAM's first slot ends: the VGA's memory window (0xA0000–0xBFFFF) below the area
/// is no RAM on a PC, and exits to the VMM (the VGA, if the machine has one).
pub const LOW_RAM_END: u64 = 0xa_0000;

/// KVM slots this module takes from its first.
pub const SLOT_COUNT: u32 = 1 + SEGMENTS as u32;

/// Slot numbers this module uses: the RAM above the area (split off RAM's first slot),
/// then up to one per segment.
fn slots(first: u32) -> (u32, std::ops::Range<u32>) {
    (first, first + 1..first + 1 + SEGMENTS as u32)
}

pub struct ShadowRam {
    vm: Arc<VmFd>,
    /// The host address of guest-physical START.
    host: u64,
    /// Slots now registered for the area.
    installed: Vec<u32>,
    first_slot: u32,
    /// Whether each 16 KiB piece is writable now.
    writable: [bool; SEGMENTS],
}

impl ShadowRam {
    /// Splits the area off guest RAM's first KVM slot (slot 0, from address 0), registering
    /// RAM above it as `first_slot` and the area read-only (PAM registers at reset: 0).
    pub fn new(vm: Arc<VmFd>, mem: &GuestMem, first_slot: u32) -> Result<Self, MemoryError> {
        let region = mem.iter().next().filter(|r| r.start_addr().raw_value() == 0);
        let region = region.filter(|r| r.len() > END).ok_or(MemoryError::NoLowRam)?;
        let base = region.as_ptr() as u64;
        let mut shadow = ShadowRam {
            vm,
            host: base + START,
            installed: Vec::new(),
            first_slot,
            writable: [false; SEGMENTS],
        };
        // RAM's slot 0 goes (KVM cannot shrink a slot), and comes back in two parts: below
        // the VGA window, and above the area.
        shadow.set(0, 0, 0, 0, 0)?;
        shadow.set(0, 0, base, LOW_RAM_END, 0)?;
        let (above, _) = slots(first_slot);
        shadow.set(above, END, base + END, region.len() - END, 0)?;
        shadow.install()?;
        Ok(shadow)
    }

    /// Guest RAM's first region as KVM has it with the area split off: its slot 0 (below
    /// the VGA window) and the slot above the area. What lies between (the VGA window and
    /// the area, whose slots come and go) is in neither.
    pub fn ram_slots(&self, mem: &GuestMem) -> Vec<super::dirty::RamSlot> {
        let len = mem.iter().next().map_or(0, |r| r.len());
        let (above, _) = slots(self.first_slot);
        vec![
            super::dirty::RamSlot { slot: 0, region: 0, offset: 0, len: LOW_RAM_END },
            super::dirty::RamSlot { slot: above, region: 0, offset: END, len: len - END },
        ]
    }

    /// The PAM registers changed: the area's writability follows them.
    pub fn set_pam(&mut self, pam: &[u8; PAM_COUNT]) -> Result<(), MemoryError> {
        let writable = writable_pieces(pam);
        if writable == self.writable {
            return Ok(());
        }
        self.writable = writable;
        self.install()
    }

    /// Whether guest address `addr` in the area is writable now (for tests).
    pub fn is_writable(&self, addr: u64) -> bool {
        (START..END).contains(&addr) && self.writable[((addr - START) / SEGMENT) as usize]
    }

    /// Replaces the area's slots: one per run of pieces alike.
    fn install(&mut self) -> Result<(), MemoryError> {
        for slot in std::mem::take(&mut self.installed) {
            self.set(slot, 0, 0, 0, 0)?;
        }
        let (_, mut free) = slots(self.first_slot);
        let mut piece = 0;
        while piece < SEGMENTS {
            let run = self.writable[piece..].iter().take_while(|w| **w == self.writable[piece]);
            let len = run.count();
            let slot = free.next().expect("at most one slot per piece");
            let flags = if self.writable[piece] { 0 } else { KVM_MEM_READONLY };
            let offset = piece as u64 * SEGMENT;
            let size = len as u64 * SEGMENT;
            self.set(slot, START + offset, self.host + offset, size, flags)?;
            self.installed.push(slot);
            piece += len;
        }
        Ok(())
    }

    fn set(
        &self,
        slot: u32,
        guest: u64,
        host: u64,
        size: u64,
        flags: u32,
    ) -> Result<(), MemoryError> {
        let region = kvm_userspace_memory_region {
            slot,
            guest_phys_addr: guest,
            memory_size: size,
            userspace_addr: host,
            flags,
        };
        // SAFETY: the host range is guest RAM's own mapping (or nothing, when a slot is
        // deleted with size 0), which lives as long as the VM fd (the instance drops the
        // VM first).
        unsafe { self.vm.set_user_memory_region(region) }
            .map_err(|source| MemoryError::RegisterSlot { slot, source })
    }
}

/// Which 16 KiB pieces of the area the PAM registers make writable.
fn writable_pieces(pam: &[u8; PAM_COUNT]) -> [bool; SEGMENTS] {
    let mut writable = [false; SEGMENTS];
    for (piece, w) in writable.iter_mut().enumerate() {
        let addr = START + piece as u64 * SEGMENT;
        let field = if addr >= 0xf_0000 {
            pam[0] >> 4
        } else {
            // PAM1 (0x5A) low nibble: 0xC0000, high: 0xC4000; PAM2: 0xC8000, 0xCC000...
            let index = ((addr - START) / SEGMENT) as usize;
            pam[1 + index / 2] >> (4 * (index % 2))
        };
        *w = field & WE != 0;
    }
    writable
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pam_fields_map_onto_the_segments() {
        let mut pam = [0u8; PAM_COUNT];
        assert!(writable_pieces(&pam).iter().all(|w| !w), "read-only at reset");
        // SeaBIOS opening everything (0x33 for PAM1-6, 0x30 for PAM0).
        pam = [0x30, 0x33, 0x33, 0x33, 0x33, 0x33, 0x33];
        assert!(writable_pieces(&pam).iter().all(|w| *w));
        // Only 0xC4000 (PAM1 high nibble) and the F segment (PAM0) read-only.
        pam = [0x10, 0x13, 0x33, 0x33, 0x33, 0x33, 0x33];
        let w = writable_pieces(&pam);
        assert!(w[0] && !w[1] && w[2]);
        assert!(w[11] && !w[12], "0xEC000 writable, 0xF0000 not");
        // PAM0's low nibble is reserved: it changes nothing.
        pam = [0x03, 0, 0, 0, 0, 0, 0];
        assert!(writable_pieces(&pam).iter().all(|w| !w));
    }
}
