//! virtio 1.2 devices and their PCI transport (modern only).

pub mod block;
pub mod net;
pub mod pci;
pub mod rng;

use virtio_queue::Queue;

use crate::vstate::memory::GuestMem;

/// Feature bits the transport offers for every device (virtio 1.2 §6).
pub const VIRTIO_F_RING_INDIRECT_DESC: u64 = 1 << 28;
pub const VIRTIO_F_RING_EVENT_IDX: u64 = 1 << 29;
pub const VIRTIO_F_VERSION_1: u64 = 1 << 32;

/// In a `process_*` result: the device configuration changed (a disk grew); the
/// transport bumps config_generation and raises the configuration interrupt (§4.1.4.3).
pub const CONFIG_CHANGED: u64 = 1 << 63;

/// Device types (virtio 1.2 §5).
pub const TYPE_NET: u32 = 1;
pub const TYPE_BLOCK: u32 = 2;
pub const TYPE_RNG: u32 = 4;

/// Rounds of "process, re-enable notifications, find more" before yielding to the event
/// loop; a driver that keeps the queue full must not keep the loop to itself.
const MAX_ROUNDS: usize = 64;

/// Serves queue `index` the way the spec asks (virtio 1.2 §2.7.10): with notifications
/// suppressed while working, then re-enabled — which with VIRTIO_F_EVENT_IDX also publishes
/// avail_event, without which the driver would never notify again — and once more if the
/// driver added buffers in between. Returns the used-queue mask and whether work was left
/// (the caller notifies itself to come back).
pub fn serve_queue(
    queues: &mut [Queue],
    index: usize,
    mem: &GuestMem,
    mut work: impl FnMut(&mut [Queue]) -> u64,
) -> (u64, bool) {
    use virtio_queue::QueueT;
    let mut used = 0;
    for _ in 0..MAX_ROUNDS {
        let Some(queue) = queues.get_mut(index) else { return (used, false) };
        let _ = queue.disable_notification(mem);
        used |= work(queues);
        match queues.get_mut(index).map(|q| q.enable_notification(mem)) {
            Some(Ok(true)) => continue, // new buffers arrived meanwhile
            _ => return (used, false),
        }
    }
    (used, true)
}

/// Copies the part of a device's configuration structure that `offset` and `data` cover;
/// bytes past its end read as zero.
pub fn read_config_bytes(config: &[u8], offset: u64, data: &mut [u8]) {
    data.fill(0);
    let start = usize::try_from(offset).unwrap_or(usize::MAX).min(config.len());
    let n = data.len().min(config.len() - start);
    data[..n].copy_from_slice(&config[start..start + n]);
}

/// A virtio device model, independent of the transport.
pub trait VirtioDevice: Send {
    fn device_type(&self) -> u32;
    /// Largest size of each queue; their number is the device's queue count.
    fn queue_max_sizes(&self) -> &[u16];
    /// Device-specific feature bits (the transport adds VERSION_1 and the ring features).
    fn features(&self) -> u64 {
        0
    }
    /// PCI class code of the function (base class, subclass, interface).
    fn pci_class(&self) -> u32;
    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}
    /// The driver negotiated `features` and set DRIVER_OK.
    fn activate(&mut self, _features: u64) {}
    /// The driver reset the device.
    fn reset(&mut self) {}
    /// Serves queue `index` after the driver notified it; returns a bit per queue that got
    /// used buffers (a device may complete on a queue other than the one notified).
    fn process_queue(&mut self, index: usize, queues: &mut [Queue], mem: &GuestMem) -> u64;

    /// A host-side fd (a network backend's socket) the event loop should wait on.
    fn backend_fd(&self) -> Option<std::os::fd::RawFd> {
        None
    }

    /// The backend fd is ready; returns a bit per queue that got used buffers.
    fn process_backend(&mut self, _queues: &mut [Queue], _mem: &GuestMem) -> u64 {
        0
    }
}

/// Hand-built split virtqueues in guest memory for the device models' unit tests.
#[cfg(test)]
pub(crate) mod test_util {
    use virtio_queue::{Queue, QueueT};
    use vm_memory::{Bytes, GuestAddress};

    use crate::vstate::memory::GuestMem;

    pub const DESC: u64 = 0x1000;
    pub const AVAIL: u64 = 0x2000;
    pub const USED: u64 = 0x3000;

    /// A ready 16-entry queue at DESC/AVAIL/USED.
    pub fn queue(mem: &GuestMem) -> Queue {
        let mut q = Queue::new(16).unwrap();
        q.set_size(16);
        q.set_desc_table_address(Some(DESC as u32), Some(0));
        q.set_avail_ring_address(Some(AVAIL as u32), Some(0));
        q.set_used_ring_address(Some(USED as u32), Some(0));
        q.set_ready(true);
        assert!(q.is_valid(mem));
        q
    }

    pub fn put_desc(mem: &GuestMem, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let at = DESC + 16 * u64::from(i);
        mem.write_obj(addr, GuestAddress(at)).unwrap();
        mem.write_obj(len, GuestAddress(at + 8)).unwrap();
        mem.write_obj(flags, GuestAddress(at + 12)).unwrap();
        mem.write_obj(next, GuestAddress(at + 14)).unwrap();
    }

    /// Makes `heads` available.
    pub fn publish(mem: &GuestMem, heads: &[u16]) {
        for (i, h) in heads.iter().enumerate() {
            mem.write_obj(*h, GuestAddress(AVAIL + 4 + 2 * i as u64)).unwrap();
        }
        mem.write_obj(heads.len() as u16, GuestAddress(AVAIL + 2)).unwrap();
    }

    /// (id, len) of used entry `i`.
    pub fn used(mem: &GuestMem, i: u64) -> (u32, u32) {
        let at = USED + 4 + 8 * i;
        (mem.read_obj(GuestAddress(at)).unwrap(), mem.read_obj(GuestAddress(at + 4)).unwrap())
    }
}
