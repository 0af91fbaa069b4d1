//! virtio-rng (virtio 1.2 §5.4): fills the driver's write-only buffers from the host's
//! getrandom(2).

use virtio_queue::{Queue, QueueT};
use vm_memory::Bytes;

use super::{TYPE_RNG, VirtioDevice};
use crate::vstate::memory::GuestMem;

/// Most bytes given per request: a guest asking for gigabytes gets a bounded answer.
const MAX_PER_REQUEST: u32 = 64 * 1024;

#[derive(Default)]
pub struct Rng;

fn fill_random(buf: &mut [u8]) -> bool {
    let mut filled = 0;
    while filled < buf.len() {
        let rest = &mut buf[filled..];
        // SAFETY: getrandom writes at most `rest.len()` bytes into `rest`, which we own.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return false;
        }
        filled += n as usize;
    }
    true
}

impl VirtioDevice for Rng {
    fn device_type(&self) -> u32 {
        TYPE_RNG
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[256]
    }

    fn pci_class(&self) -> u32 {
        0xff_00_00 // unassigned class: what QEMU and Linux use for virtio-rng
    }

    fn process_queue(&mut self, index: usize, queues: &mut [Queue], mem: &GuestMem) -> u64 {
        let Some(queue) = queues.get_mut(index) else { return 0 };
        let mut used_any = false;
        while let Some(chain) = queue.pop_descriptor_chain(mem) {
            let head = chain.head_index();
            let mut written: u32 = 0;
            for desc in chain.writable() {
                let len = desc.len().min(MAX_PER_REQUEST - written);
                let mut bytes = vec![0u8; len as usize];
                if len == 0
                    || !fill_random(&mut bytes)
                    || mem.write_slice(&bytes, desc.addr()).is_err()
                {
                    break;
                }
                written += len;
            }
            if queue.add_used(mem, head, written).is_err() {
                log::warn!("virtio-rng: cannot update the used ring");
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
    use crate::devices::virtio::test_util::{AVAIL, publish, put_desc, queue, used};
    use crate::vstate::memory::create_guest_memory;
    use vm_memory::GuestAddress;

    const WRITE: u16 = 2;
    const NEXT: u16 = 1;

    #[test]
    fn fills_writable_buffers() {
        let mem = create_guest_memory(16 << 20).unwrap();
        let mut q = queue(&mem);
        put_desc(&mem, 0, 0x10000, 32, WRITE | NEXT, 1);
        put_desc(&mem, 1, 0x20000, 32, WRITE, 0);
        publish(&mem, &[0]);
        assert_eq!(Rng.process_queue(0, std::slice::from_mut(&mut q), &mem), 1);
        assert_eq!(used(&mem, 0), (0, 64));
        let mut a = [0u8; 32];
        mem.read_slice(&mut a, GuestAddress(0x20000)).unwrap();
        assert_ne!(a, [0; 32]);
    }

    #[test]
    fn hostile_chains_are_answered_without_harm() {
        let mem = create_guest_memory(16 << 20).unwrap();
        let mut q = queue(&mem);
        // Outside guest memory.
        put_desc(&mem, 0, 0x7fff_0000_0000, 64, WRITE, 0);
        // A loop: descriptor 1 chains to itself.
        put_desc(&mem, 1, 0x10000, 16, WRITE | NEXT, 1);
        // Huge length: capped.
        put_desc(&mem, 2, 0x100000, u32::MAX, WRITE, 0);
        // Read-only buffer: nothing to fill.
        put_desc(&mem, 3, 0x10000, 16, 0, 0);
        publish(&mem, &[0, 1, 2, 3]);
        assert_eq!(Rng.process_queue(0, std::slice::from_mut(&mut q), &mem), 1);
        assert_eq!(used(&mem, 0), (0, 0));
        assert!(used(&mem, 1).1 <= 16 * 16, "the loop ends at the queue size");
        assert_eq!(used(&mem, 2), (2, MAX_PER_REQUEST));
        assert_eq!(used(&mem, 3), (3, 0));
        // An avail index far beyond the ring: refused, nothing processed.
        mem.write_obj(1000u16, GuestAddress(AVAIL + 2)).unwrap();
        Rng.process_queue(0, std::slice::from_mut(&mut q), &mem);
    }
}
