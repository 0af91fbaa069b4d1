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

    fn process_queue(&mut self, _index: usize, queue: &mut Queue, mem: &GuestMem) -> bool {
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
        used_any
    }
}
