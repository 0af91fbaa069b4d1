//! Structure-aware fuzz inputs for Vessel's device models, shared by the fuzz targets
//! (`fuzz_targets/*`, run by cargo-fuzz) and the reach test (`tests/reach.rs`), which runs
//! every checked-in seed through its target and checks that the device did real work.
//!
//! A virtqueue input is a queue layout plus descriptor chains, each chain a list of
//! buffers (guest address, length, direction, contents), then hostile edits on top: raw
//! descriptors written over the built ones and an available index that lies. The builder
//! writes them into guest memory the way a driver would, so the fuzzer spends its time in
//! the device models, not in guessing ring layouts.

use arbitrary::Arbitrary;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress};
use vmm::vstate::memory::GuestMem;

pub mod targets;

/// Guest memory of every input: room for the rings and the buffer slots (anything above
/// is outside the guest).
pub const MEM_SIZE: u64 = 2 << 20;
/// Where the rings of queue `q` live: 16 KiB apart from 0.
pub const RINGS: u64 = 0x4000;
const DESC_OFF: u64 = 0;
const AVAIL_OFF: u64 = 0x1000;
const USED_OFF: u64 = 0x2000;
/// Buffers: 256 slots of 4 KiB from 1 MiB.
pub const SLOTS: u64 = 1 << 20;
pub const SLOT_SIZE: u64 = 4096;

/// Where a buffer is: one of the slots (almost always), or anywhere at all.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum Addr {
    Slot(u8),
    SlotAt(u8, u16),
    Raw(u64),
}

impl Addr {
    pub fn resolve(self) -> u64 {
        match self {
            Addr::Slot(s) => SLOTS + u64::from(s) * SLOT_SIZE,
            Addr::SlotAt(s, at) => SLOTS + u64::from(s) * SLOT_SIZE + u64::from(at),
            Addr::Raw(a) => a,
        }
    }
}

/// A buffer's length: mostly small, sometimes anything.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum Len {
    Small(u8),
    Medium(u16),
    Any(u32),
}

impl Len {
    pub fn get(self) -> u32 {
        match self {
            Len::Small(n) => u32::from(n),
            Len::Medium(n) => u32::from(n),
            Len::Any(n) => n,
        }
    }
}

/// One buffer of a chain.
#[derive(Arbitrary, Clone, Debug)]
pub struct Buffer {
    pub addr: Addr,
    pub len: Len,
    /// The device writes it (VIRTQ_DESC_F_WRITE).
    pub device_writes: bool,
    /// What the driver put in it (written at `addr`, up to `len`).
    pub data: Vec<u8>,
}

/// A descriptor written over the built ones: anything a driver can write.
#[derive(Arbitrary, Clone, Debug)]
pub struct RawDesc {
    pub index: u8,
    pub addr: u64,
    pub len: u32,
    pub flags: u16,
    pub next: u16,
}

/// A queue as a hostile driver sets it up.
#[derive(Arbitrary, Clone, Debug)]
pub struct QueueInput {
    /// log2 of the size (1..=256).
    pub size_log2: u8,
    pub event_idx: bool,
    pub chains: Vec<Vec<Buffer>>,
    pub corrupt: Vec<RawDesc>,
    /// Added to the honest available index (0 most of the time).
    pub avail_lie: Option<u16>,
    /// The avail ring's flags (VIRTQ_AVAIL_F_NO_INTERRUPT).
    pub avail_flags: u16,
}

/// Where a built request's buffers ended up, for a target to check afterwards.
#[derive(Clone, Debug, Default)]
pub struct BuiltChain {
    pub head: u16,
    /// (guest address, length, device writes) of each buffer.
    pub buffers: Vec<(u64, u32, bool)>,
}

pub const F_NEXT: u16 = 1;
pub const F_WRITE: u16 = 2;

/// Guest memory for one input: small, fresh (zeroed) and in small pages, so a run costs
/// microseconds (`create_guest_memory` asks for huge pages, which the kernel must clear).
pub fn memory() -> GuestMem {
    GuestMem::from_ranges(&[(GuestAddress(0), MEM_SIZE as usize)]).expect("guest memory")
}

impl QueueInput {
    /// The queue's size.
    pub fn size(&self) -> u16 {
        1u16 << (self.size_log2 % 9)
    }

    /// Writes the rings of queue number `q` into `mem` and returns the queue, ready, and
    /// the chains as built (those that fit).
    pub fn build(&self, q: u64, mem: &GuestMem) -> (Queue, Vec<BuiltChain>) {
        let base = q * RINGS;
        let size = self.size();
        let mut built = Vec::new();
        let mut next_desc: u16 = 0;
        for chain in &self.chains {
            if chain.is_empty() || usize::from(next_desc) + chain.len() > usize::from(size) {
                continue;
            }
            let head = next_desc;
            let mut record = BuiltChain { head, buffers: Vec::new() };
            for (i, buffer) in chain.iter().enumerate() {
                let addr = buffer.addr.resolve();
                let len = buffer.len.get();
                if !buffer.device_writes {
                    let n = buffer.data.len().min(len as usize);
                    let _ = mem.write_slice(&buffer.data[..n], GuestAddress(addr));
                }
                let last = i + 1 == chain.len();
                let flags =
                    if last { 0 } else { F_NEXT } | if buffer.device_writes { F_WRITE } else { 0 };
                write_desc(mem, base, next_desc, addr, len, flags, next_desc + 1);
                record.buffers.push((addr, len, buffer.device_writes));
                next_desc += 1;
            }
            built.push(record);
        }
        for d in &self.corrupt {
            write_desc(mem, base, u16::from(d.index) % size, d.addr, d.len, d.flags, d.next);
        }
        let avail = base + AVAIL_OFF;
        for (i, chain) in built.iter().enumerate() {
            let at = avail + 4 + 2 * (i as u64 % u64::from(size));
            let _ = mem.write_obj(chain.head, GuestAddress(at));
        }
        let idx = (built.len() as u16).wrapping_add(self.avail_lie.unwrap_or(0));
        let _ = mem.write_obj(self.avail_flags, GuestAddress(avail));
        let _ = mem.write_obj(idx, GuestAddress(avail + 2));
        let mut queue = Queue::new(256).expect("max size");
        queue.set_size(size);
        queue.set_desc_table_address(Some((base + DESC_OFF) as u32), Some(0));
        queue.set_avail_ring_address(Some(avail as u32), Some(0));
        queue.set_used_ring_address(Some((base + USED_OFF) as u32), Some(0));
        queue.set_event_idx(self.event_idx);
        queue.set_ready(true);
        (queue, built)
    }
}

pub fn write_desc(mem: &GuestMem, base: u64, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
    let at = base + DESC_OFF + 16 * u64::from(i);
    let _ = mem.write_obj(addr, GuestAddress(at));
    let _ = mem.write_obj(len, GuestAddress(at + 8));
    let _ = mem.write_obj(flags, GuestAddress(at + 12));
    let _ = mem.write_obj(next, GuestAddress(at + 14));
}

/// How many entries the device put on queue `q`'s used ring.
pub fn used_count(mem: &GuestMem, q: u64) -> u16 {
    mem.read_obj::<u16>(GuestAddress(q * RINGS + USED_OFF + 2)).unwrap_or(0)
}

/// Decodes `bytes` the way `fuzz_target!` does for a structured input.
pub fn decode<'a, T: Arbitrary<'a>>(bytes: &'a [u8]) -> Option<T> {
    T::arbitrary_take_rest(arbitrary::Unstructured::new(bytes)).ok()
}
