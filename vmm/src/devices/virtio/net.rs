//! virtio-net (virtio 1.2 §5.1): one receive and one transmit queue, a fixed MAC and link
//! status, no offloads; frames go to a `NetBackend` (passt).

use std::io::{Read, Write};
use std::os::fd::RawFd;

use virtio_queue::{Queue, QueueT, Reader, Writer};

use super::{TYPE_NET, VirtioDevice, read_config_bytes, serve_again};
use crate::devices::log_limit::{LogLimit, held_back};
use crate::devices::net::NetBackend;
use crate::devices::net::passt::MAX_FRAME;
use crate::vstate::memory::GuestMem;

const F_MAC: u64 = 1 << 5;
const F_STATUS: u64 = 1 << 16;
const S_LINK_UP: u16 = 1;
/// struct virtio_net_hdr with num_buffers, as VERSION_1 always has it (§5.1.6).
const HDR_LEN: usize = 12;
const RX: usize = 0;
const TX: usize = 1;
const QUEUE_SIZE: u16 = 256;

pub struct Net {
    mac: [u8; 6],
    backend: Box<dyn NetBackend>,
    /// A received frame waiting for the guest to post a buffer.
    pending_rx: Option<Vec<u8>>,
    dropped: u64,
    drop_log: LogLimit,
}

/// A network card's state: its address, and a received frame its driver had no buffer
/// for yet.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NetState {
    pub mac: [u8; 6],
    pub pending_rx: Option<Vec<u8>>,
}

/// Longest frame a card holds for its driver: an Ethernet frame with the largest payload
/// the backends deliver.
const MAX_PENDING_FRAME: usize = 65_550;

impl Net {
    pub fn new(mac: [u8; 6], backend: Box<dyn NetBackend>) -> Self {
        Net { mac, backend, pending_rx: None, dropped: 0, drop_log: LogLimit::default() }
    }

    fn drop_frame(&mut self, why: &str) {
        self.dropped += 1;
        if let Some(n) = self.drop_log.allow() {
            log::warn!(
                "virtio-net: dropped a frame ({why}; {} so far){}",
                self.dropped,
                held_back(n)
            );
        }
    }

    /// Moves received frames into the guest's receive buffers while both last.
    ///
    /// Bounded by what the guest really offers: every turn either takes a buffer off the
    /// ring or ends the loop. A ring that claims buffers it does not hold (an available
    /// index beyond the queue size, or a queue that is not ready) yields no buffer, and
    /// after re-enabling notifications it gets one more look, not an endless one.
    fn receive(&mut self, queue: &mut Queue, mem: &GuestMem) -> bool {
        if !queue.ready() {
            return false;
        }
        let mut used_any = false;
        let mut looked_again = false;
        while let Some(frame) = self.pending_rx.take().or_else(|| self.backend.recv()) {
            let Some(chain) = queue.pop_descriptor_chain(mem) else {
                // No buffer: keep the frame, and ask to be told when the guest adds some.
                self.pending_rx = Some(frame);
                if !looked_again && matches!(queue.enable_notification(mem), Ok(true)) {
                    looked_again = true; // buffers may have arrived meanwhile
                    continue;
                }
                break;
            };
            looked_again = false;
            let head = chain.head_index();
            let written = match Writer::new(mem, chain) {
                Ok(mut w) if w.available_bytes() >= HDR_LEN + frame.len() => {
                    let mut hdr = [0u8; HDR_LEN];
                    hdr[10] = 1; // num_buffers
                    if w.write_all(&hdr).is_ok() && w.write_all(&frame).is_ok() {
                        (HDR_LEN + frame.len()) as u32
                    } else {
                        0
                    }
                }
                _ => {
                    self.drop_frame("receive buffer too small or invalid");
                    0
                }
            };
            if queue.add_used(mem, head, written).is_err() {
                break;
            }
            used_any = true;
        }
        used_any
    }

    /// Sends the guest's transmit buffers until they run out or the backend is full.
    fn transmit(&mut self, queue: &mut Queue, mem: &GuestMem) -> bool {
        let mut used_any = false;
        while let Some(chain) = queue.pop_descriptor_chain(mem) {
            let head = chain.head_index();
            let frame = match Reader::new(mem, chain) {
                Ok(mut r)
                    if r.available_bytes() > HDR_LEN
                        && r.available_bytes() <= HDR_LEN + MAX_FRAME =>
                {
                    let mut bytes = vec![0u8; r.available_bytes()];
                    r.read_exact(&mut bytes).ok().map(|_| bytes.split_off(HDR_LEN))
                }
                _ => None,
            };
            match frame {
                Some(frame) if !self.backend.send(&frame) => {
                    // Backend full: put the chain back and wait for it to drain.
                    queue.set_next_avail(queue.next_avail().wrapping_sub(1));
                    break;
                }
                Some(_) => {}
                None => self.drop_frame("malformed transmit buffer"),
            }
            if queue.add_used(mem, head, 0).is_err() {
                break;
            }
            used_any = true;
        }
        used_any
    }
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u32 {
        TYPE_NET
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        F_MAC | F_STATUS
    }

    fn pci_class(&self) -> u32 {
        0x02_00_00 // network controller, Ethernet
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let mut config = [0u8; 8];
        config[..6].copy_from_slice(&self.mac);
        config[6..8].copy_from_slice(&S_LINK_UP.to_le_bytes());
        read_config_bytes(&config, offset, data);
    }

    fn save_state(&self) -> Vec<u8> {
        crate::persist::encode_part(&NetState {
            mac: self.mac,
            pending_rx: self.pending_rx.clone(),
        })
    }

    fn restore_state(&mut self, state: &[u8], _mem: &GuestMem) -> Result<(), String> {
        let state: NetState = crate::persist::decode_part(state)?;
        if state.mac != self.mac {
            let hex = |m: [u8; 6]| m.map(|b| format!("{b:02x}")).join(":");
            return Err(format!(
                "the saved machine's network card was {}; this one is {}",
                hex(state.mac),
                hex(self.mac)
            ));
        }
        if state.pending_rx.as_ref().is_some_and(|f| f.len() > MAX_PENDING_FRAME) {
            return Err("a received frame longer than any network delivers".into());
        }
        self.pending_rx = state.pending_rx;
        Ok(())
    }

    fn process_queue(&mut self, index: usize, queues: &mut [Queue], mem: &GuestMem) -> u64 {
        let [rx, tx] = queues else { return 0 };
        match index {
            // New receive buffers: deliver what waited for them.
            RX => u64::from(self.receive(rx, mem)) << RX,
            // Sending may also free the backend for more received frames.
            TX => {
                (u64::from(self.transmit(tx, mem)) << TX) | (u64::from(self.receive(rx, mem)) << RX)
            }
            _ => 0,
        }
    }

    fn backend_fd(&self) -> Option<RawFd> {
        Some(self.backend.fd())
    }

    fn process_backend(&mut self, queues: &mut [Queue], mem: &GuestMem) -> u64 {
        let [rx, tx] = queues else { return 0 };
        let mut used = 0;
        // Frames the guest queued while the backend was full: the transport serves the
        // transmit queue (taking them here would skip republishing avail_event, and the
        // driver would stop notifying).
        let tx_waiting = tx.ready()
            && tx
                .avail_idx(mem, std::sync::atomic::Ordering::Acquire)
                .is_ok_and(|idx| idx.0 != tx.next_avail());
        if tx_waiting {
            used |= serve_again(TX);
        }
        if rx.ready() {
            used |= u64::from(self.receive(rx, mem)) << RX;
        }
        used
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::test_util::{publish, put_desc, queue, used};
    use crate::vstate::memory::create_guest_memory;
    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};
    use vm_memory::{Bytes, GuestAddress};

    #[derive(Clone, Default)]
    struct Loop {
        sent: Arc<Mutex<Vec<Vec<u8>>>>,
        incoming: Arc<Mutex<VecDeque<Vec<u8>>>>,
        full: bool,
    }

    impl NetBackend for Loop {
        fn fd(&self) -> RawFd {
            -1
        }
        fn send(&mut self, frame: &[u8]) -> bool {
            if self.full {
                return false;
            }
            self.sent.lock().unwrap().push(frame.to_vec());
            true
        }
        fn recv(&mut self) -> Option<Vec<u8>> {
            self.incoming.lock().unwrap().pop_front()
        }
    }

    #[test]
    fn a_waiting_frame_survives_a_save_on_a_card_of_the_same_address() {
        let mem = create_guest_memory(16 << 20).unwrap();
        let mac = [2, 0, 0, 0, 0, 1];
        let mut net = Net::new(mac, Box::new(Loop::default()));
        net.pending_rx = Some(vec![0xab; 60]);
        let state = net.save_state();
        let mut restored = Net::new(mac, Box::new(Loop::default()));
        restored.restore_state(&state, &mem).unwrap();
        assert_eq!(restored.pending_rx, Some(vec![0xab; 60]));
        let mut other = Net::new([2, 0, 0, 0, 0, 2], Box::new(Loop::default()));
        let error = other.restore_state(&state, &mem).unwrap_err();
        assert!(error.contains("02:00:00:00:00:01") && error.contains("02:00:00:00:00:02"));
        let huge =
            crate::persist::encode_part(&NetState { mac, pending_rx: Some(vec![0; 1 << 20]) });
        assert!(restored.restore_state(&huge, &mem).is_err());
    }

    #[test]
    fn transmit_strips_the_header_and_drops_malformed() {
        let backend = Loop::default();
        let mut net = Net::new([2, 0, 0, 0, 0, 1], Box::new(backend.clone()));
        let mem = create_guest_memory(16 << 20).unwrap();
        let mut queues = [queue(&mem), queue(&mem)];
        let frame: Vec<u8> = (0..60).collect();
        let mut buf = vec![0u8; HDR_LEN];
        buf.extend(&frame);
        mem.write_slice(&buf, GuestAddress(0x10000)).unwrap();
        put_desc(&mem, 0, 0x10000, buf.len() as u32, 0, 0);
        put_desc(&mem, 1, 0x10000, 4, 0, 0); // shorter than the header
        put_desc(&mem, 2, 0x10000, u32::MAX, 0, 0); // absurd length
        publish(&mem, &[0, 1, 2]);
        assert_eq!(net.process_queue(TX, &mut queues, &mem) & (1 << TX), 1 << TX);
        assert_eq!(*backend.sent.lock().unwrap(), vec![frame]);
        assert_eq!(net.dropped, 2);
    }

    #[test]
    fn receive_waits_for_buffers() {
        let backend = Loop::default();
        backend.incoming.lock().unwrap().push_back(vec![7u8; 100]);
        let mut net = Net::new([2, 0, 0, 0, 0, 1], Box::new(backend.clone()));
        let mem = create_guest_memory(16 << 20).unwrap();
        let mut queues = [queue(&mem), queue(&mem)];
        // No receive buffer yet: the frame waits.
        assert_eq!(net.process_backend(&mut queues, &mem), 0);
        assert!(net.pending_rx.is_some());
        put_desc(&mem, 0, 0x20000, 2048, 2, 0);
        publish(&mem, &[0]);
        assert_eq!(net.process_queue(RX, &mut queues, &mem), 1 << RX);
        assert_eq!(used(&mem, 0), (0, (HDR_LEN + 100) as u32));
        let mut got = [0u8; HDR_LEN + 100];
        mem.read_slice(&mut got, GuestAddress(0x20000)).unwrap();
        assert_eq!(got[10], 1, "num_buffers");
        assert!(got[HDR_LEN..].iter().all(|b| *b == 7));
    }

    #[test]
    fn config_has_mac_and_link() {
        let net = Net::new([0x52, 0x54, 0, 1, 2, 3], Box::new(Loop::default()));
        let mut c = [0u8; 8];
        net.read_config(0, &mut c);
        assert_eq!(c, [0x52, 0x54, 0, 1, 2, 3, 1, 0]);
        let mut past = [0xffu8; 4];
        net.read_config(100, &mut past);
        assert_eq!(past, [0; 4]);
    }

    /// Runs `f` on a thread; fails the test if it has not returned within 10 s (a device
    /// loop spinning on guest state would never return).
    fn returns_promptly<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(f()));
        rx.recv_timeout(std::time::Duration::from_secs(10)).expect("the device loop spins")
    }

    #[test]
    fn a_bogus_receive_ring_does_not_spin_the_device() {
        let backend = Loop::default();
        backend.incoming.lock().unwrap().push_back(vec![7u8; 100]);
        let net = Net::new([2, 0, 0, 0, 0, 1], Box::new(backend.clone()));
        let mem = create_guest_memory(16 << 20).unwrap();
        // The available index claims 1000 buffers on a 16-entry ring.
        let queues = [queue(&mem), queue(&mem)];
        mem.write_obj(1000u16, GuestAddress(crate::devices::virtio::test_util::AVAIL + 2)).unwrap();
        let (net, queues, mem) = returns_promptly(move || {
            let (mut net, mut queues) = (net, queues);
            net.process_backend(&mut queues, &mem);
            net.process_queue(RX, &mut queues, &mem);
            net.process_queue(TX, &mut queues, &mem);
            (net, queues, mem)
        });
        assert!(net.pending_rx.is_some(), "the frame waits for a real buffer");
        // A receive queue that is not ready, while a frame waits and the guest transmits.
        let [mut rx, tx] = queues;
        rx.set_ready(false);
        returns_promptly(move || {
            let (mut net, mut queues) = (net, [rx, tx]);
            net.process_backend(&mut queues, &mem);
            net.process_queue(TX, &mut queues, &mem);
            assert!(net.pending_rx.is_some());
        });
    }
}
