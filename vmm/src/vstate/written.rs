//! Which pages of guest memory the VMM itself wrote (virtio used rings, a disk's reads,
//! a network card's frames, the GPU's replies): KVM's dirty log sees only the guest's own
//! writes, so a live migration also needs these. Every write through `vm-memory` (its
//! `Bytes` and volatile-slice calls, which all devices use) marks its pages in the bitmap
//! of the region written; a device that writes guest memory through a raw pointer marks
//! the range itself (`mark_dirty` on the slice's bitmap).
//!
//! The bitmap is one bit per 4 KiB page (32 KiB per GiB of guest RAM); marking is an
//! atomic OR per page written, whether or not a migration reads it.

use vm_memory::bitmap::{AtomicBitmap, Bitmap, RefSlice, WithBitmapSlice};
use vm_memory::mmap::NewBitmap;

/// The pages of one guest memory region that the VMM wrote since they were last taken.
#[derive(Debug, Default, Clone)]
pub struct WrittenPages(AtomicBitmap);

/// The written-pages bitmap of `region` itself (a region's `bitmap()` through
/// `GuestMemoryRegion` is a slice of it, which can mark but not take).
pub fn of(region: &vm_memory::GuestRegionMmap<WrittenPages>) -> &WrittenPages {
    std::ops::Deref::deref(region).bitmap()
}

impl WrittenPages {
    /// One bit per page of the region (bit `i` of word `i / 64`), set for each page
    /// written since the last call, which clears them.
    pub fn take(&self) -> Vec<u64> {
        self.0.get_and_reset()
    }
}

impl<'a> WithBitmapSlice<'a> for WrittenPages {
    type S = RefSlice<'a, AtomicBitmap>;
}

impl Bitmap for WrittenPages {
    fn mark_dirty(&self, offset: usize, len: usize) {
        self.0.mark_dirty(offset, len)
    }

    fn dirty_at(&self, offset: usize) -> bool {
        self.0.dirty_at(offset)
    }

    fn slice_at(&self, offset: usize) -> <Self as WithBitmapSlice<'_>>::S {
        self.0.slice_at(offset)
    }
}

impl NewBitmap for WrittenPages {
    fn with_len(len: usize) -> Self {
        WrittenPages(AtomicBitmap::with_len(len))
    }
}

/// The vhost-user backends (`crate::vhost_user`) serve the same device models over memory
/// of this kind; a frontend's own dirty-log area (VHOST_USER_PROTOCOL_F_LOG_SHMFD) is not
/// offered, so there is never another bitmap to put in.
impl vhost_user_backend::bitmap::BitmapReplace for WrittenPages {
    type InnerBitmap = ();

    fn replace(&self, _bitmap: ()) {}
}
