//! virtio 1.2 devices and their PCI transport (modern only).

pub mod block;
pub mod gpu;
pub mod input;
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

/// Result masks of `process_*` carry a used bit per queue in bits 0..32 and, from
/// `process_backend`, a "serve again" bit per queue in bits 32..63: the queue holds buffers
/// the device could not take before (its backend was full) and can take now. The transport
/// serves such a queue as if the driver had notified it, so avail_event and the
/// notification state stay right.
pub const MAX_QUEUES: usize = 32;

/// The "serve again" bit of queue `index`.
pub const fn serve_again(index: usize) -> u64 {
    1 << (MAX_QUEUES + index)
}

/// Device types (virtio 1.2 §5).
pub const TYPE_NET: u32 = 1;
pub const TYPE_BLOCK: u32 = 2;
pub const TYPE_RNG: u32 = 4;
pub const TYPE_GPU: u32 = 16;
pub const TYPE_INPUT: u32 = 18;

/// The device type's name, for messages ("virtio-blk").
pub fn type_name(device_type: u32) -> String {
    match device_type {
        TYPE_NET => "virtio-net".into(),
        TYPE_BLOCK => "virtio-blk".into(),
        TYPE_RNG => "virtio-rng".into(),
        TYPE_GPU => "virtio-gpu".into(),
        TYPE_INPUT => "virtio-input".into(),
        other => format!("virtio device type {other}"),
    }
}

/// Rounds of "process, re-enable notifications, find more" before yielding to the event
/// loop; a driver that keeps the queue full must not keep the loop to itself.
const MAX_ROUNDS: usize = 64;

/// Serves queue `index` the way the spec asks (virtio 1.2 §2.7.10): with notifications
/// suppressed while working, then re-enabled — which with VIRTIO_F_EVENT_IDX also publishes
/// avail_event, without which the driver would never notify again — and once more if the
/// driver added buffers in between. Returns the used-queue mask and whether work was left
/// (the caller notifies itself to come back).
///
/// A round that takes no buffer ends the service even when buffers wait: the device is
/// waiting for something else (a receive queue for frames, a transmit queue for room in
/// its backend), and its backend's event brings it back.
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
        let before = queue.next_avail();
        used |= work(queues);
        let Some(queue) = queues.get_mut(index) else { return (used, false) };
        let took_buffers = queue.next_avail() != before;
        match queue.enable_notification(mem) {
            Ok(true) if took_buffers => continue, // new buffers arrived meanwhile
            _ => return (used, false),
        }
    }
    (used, true)
}

/// VIRTQ_AVAIL_F_NO_INTERRUPT in the available ring's flags (virtio 1.2 §2.7.7).
const AVAIL_F_NO_INTERRUPT: u16 = 1;

/// Whether the driver wants an interrupt for what was just added to `queue`'s used ring:
/// with VIRTIO_F_EVENT_IDX its used_event decides; without, the NO_INTERRUPT flag does
/// (§2.7.7.2: the device SHOULD NOT notify while it is set). `virtio-queue` only knows
/// the first. An unreadable ring errs towards an interrupt.
pub fn wants_interrupt<M: vm_memory::GuestMemory>(queue: &mut Queue, mem: &M) -> bool {
    use virtio_queue::QueueT;
    use vm_memory::{Bytes, GuestAddress};
    let wanted = queue.needs_notification(mem).unwrap_or(true);
    if !wanted || queue.event_idx_enabled() {
        return wanted;
    }
    let flags: u16 = mem
        .load(GuestAddress(queue.avail_ring()), std::sync::atomic::Ordering::Acquire)
        .unwrap_or(0);
    flags & AVAIL_F_NO_INTERRUPT == 0
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
    /// The device model's own state beyond its queues and transport, encoded (its own
    /// serde structure, in postcard), for a machine's saved state; empty: it has none.
    fn save_state(&self) -> Vec<u8> {
        Vec::new()
    }
    /// Takes what `save_state` gave (from a file: checked, against guest memory `mem`
    /// where it names guest memory); the problem if it cannot. Called before the transport
    /// activates a running device again.
    fn restore_state(&mut self, state: &[u8], _mem: &GuestMem) -> Result<(), String> {
        if state.is_empty() {
            Ok(())
        } else {
            Err(format!("{} bytes of state for a device that keeps none", state.len()))
        }
    }
    /// The driver reset the device.
    fn reset(&mut self) {}
    /// Serves queue `index` after the driver notified it; returns a bit per queue that got
    /// used buffers (a device may complete on a queue other than the one notified).
    fn process_queue(&mut self, index: usize, queues: &mut [Queue], mem: &GuestMem) -> u64;
    /// How long the device's thread keeps looking at a queue it just served before it
    /// sleeps (zero: no polling). Worth it where a driver's next request follows quickly.
    fn poll_window(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }

    /// A host-side fd (a network backend's socket) the device thread should wait on.
    fn backend_fd(&self) -> Option<std::os::fd::RawFd> {
        None
    }

    /// The backend fd is ready; returns a bit per queue that got used buffers, and
    /// `serve_again` bits for queues to serve now.
    fn process_backend(&mut self, _queues: &mut [Queue], _mem: &GuestMem) -> u64 {
        0
    }

    /// A live migration hands the machine over (`release`: everything written is made
    /// durable and the device's exclusive hold on host resources, a disk's lock, is let go,
    /// so the machine it moves to can take them), or takes it back after a migration
    /// failed (`release` false: held again). The device is not serving meanwhile.
    fn hand_over(&mut self, _release: bool) -> Result<(), String> {
        Ok(())
    }

    /// The writable disk this device serves, for a live migration that copies it.
    fn copy_source(&mut self) -> Option<&mut dyn crate::devices::storage::CopySource> {
        None
    }

    /// The disk this device serves, whose image can be switched to an overlay.
    fn switch_image(&mut self) -> Option<&mut dyn crate::devices::storage::SwitchImage> {
        None
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

#[cfg(test)]
mod tests {
    use super::test_util::{publish, put_desc, queue};
    use super::*;
    use crate::vstate::memory::create_guest_memory;
    use virtio_queue::QueueT;
    use vm_memory::{Bytes, GuestAddress};

    #[test]
    fn a_queue_whose_device_takes_no_buffer_is_not_served_again() {
        // A receive queue full of buffers and no frame to put in them: one round, no
        // "come back", or the event loop would spin on it.
        let mem = create_guest_memory(16 << 20).unwrap();
        let mut queues = [queue(&mem)];
        put_desc(&mem, 0, 0x8000, 64, 2, 0);
        publish(&mem, &[0]);
        let mut rounds = 0;
        let (used, more) = serve_queue(&mut queues, 0, &mem, |_| {
            rounds += 1;
            0
        });
        assert_eq!((used, more, rounds), (0, false, 1));
    }

    #[test]
    fn a_driver_that_keeps_adding_buffers_is_served_in_bounded_rounds() {
        let mem = create_guest_memory(16 << 20).unwrap();
        let mut queues = [queue(&mem)];
        put_desc(&mem, 0, 0x8000, 64, 2, 0);
        publish(&mem, &[0]);
        let mut rounds = 0u16;
        let (used, more) = serve_queue(&mut queues, 0, &mem, |qs| {
            rounds += 1;
            while let Some(chain) = qs[0].pop_descriptor_chain(&mem) {
                qs[0].add_used(&mem, chain.head_index(), 0).unwrap();
            }
            // Meanwhile the driver makes the same buffer available again.
            mem.write_obj(rounds + 1, GuestAddress(test_util::AVAIL + 2)).unwrap();
            1
        });
        assert_eq!((used, more, usize::from(rounds)), (1, true, MAX_ROUNDS));
    }
}
