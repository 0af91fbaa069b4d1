//! Guest memory and a virtqueue laid out from fuzz input: the input's bytes become the
//! first 64 KiB of a 1 MiB guest (descriptor table at 0, available ring at 0x1000, used
//! ring at 0x2000), so the fuzzer controls every descriptor, index and buffer.

use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress};
use vmm::vstate::memory::{GuestMem, create_guest_memory};

pub const DESC: u64 = 0x0;
pub const AVAIL: u64 = 0x1000;
pub const USED: u64 = 0x2000;

pub fn guest(data: &[u8]) -> (GuestMem, Queue) {
    let mem = create_guest_memory(16 << 20).expect("guest memory");
    let n = data.len().min(64 * 1024);
    mem.write_slice(&data[..n], GuestAddress(0)).expect("in range");
    let size = 1u16 << (data.first().copied().unwrap_or(4) % 9); // 1..=256
    let mut queue = Queue::new(256).expect("max size");
    queue.set_size(size);
    queue.set_desc_table_address(Some(DESC as u32), Some(0));
    queue.set_avail_ring_address(Some(AVAIL as u32), Some(0));
    queue.set_used_ring_address(Some(USED as u32), Some(0));
    queue.set_event_idx(data.get(1).is_some_and(|b| b & 1 == 1));
    queue.set_ready(true);
    (mem, queue)
}
