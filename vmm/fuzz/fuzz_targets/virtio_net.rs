//! virtio-net transmit and receive from a hostile driver, with frames arriving from a
//! backend the fuzzer also controls.
#![no_main]

use std::os::fd::RawFd;

use libfuzzer_sys::fuzz_target;
use vmm::devices::net::NetBackend;
use vmm::devices::virtio::VirtioDevice;
use vmm::devices::virtio::net::Net;

mod common;

struct Scripted {
    incoming: Vec<Vec<u8>>,
    sent: usize,
}

impl NetBackend for Scripted {
    fn fd(&self) -> RawFd {
        -1
    }
    fn send(&mut self, frame: &[u8]) -> bool {
        assert!(frame.len() <= 65_550);
        self.sent += 1;
        self.sent % 3 != 0 // every third frame finds the backend full
    }
    fn recv(&mut self) -> Option<Vec<u8>> {
        self.incoming.pop()
    }
}

fuzz_target!(|data: &[u8]| {
    let incoming = data.chunks(97).take(16).map(<[u8]>::to_vec).collect();
    let mut net = Net::new([2, 0, 0, 0, 0, 1], Box::new(Scripted { incoming, sent: 0 }));
    let (mem, rx) = common::guest(data);
    // The transmit queue shares the fuzzer's rings: the two queues fight over buffers.
    let (_, tx) = common::guest(data);
    let mut queues = [rx, tx];
    net.process_queue(1, &mut queues, &mem);
    net.process_backend(&mut queues, &mem);
    net.process_queue(0, &mut queues, &mem);
});
