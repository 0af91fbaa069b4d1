//! Descriptor-chain parsing as the devices use it: pop every chain, read what is readable,
//! write what is writable, return it used.
#![no_main]

use std::io::{Read, Write};

use libfuzzer_sys::fuzz_target;
use virtio_queue::{QueueT, Reader, Writer};

mod common;

fuzz_target!(|data: &[u8]| {
    let (mem, mut queue) = common::guest(data);
    let mut rounds = 0;
    while let Some(chain) = queue.pop_descriptor_chain(&mem) {
        rounds += 1;
        assert!(rounds <= 512, "the queue handed out more chains than it can hold");
        let head = chain.head_index();
        if let Ok(mut r) = Reader::new(&mem, chain.clone()) {
            let mut sink = vec![0u8; r.available_bytes().min(1 << 20)];
            let _ = r.read(&mut sink);
        }
        if let Ok(mut w) = Writer::new(&mem, chain) {
            let bytes = vec![0xa5u8; w.available_bytes().min(1 << 20)];
            let _ = w.write(&bytes);
        }
        let _ = queue.add_used(&mem, head, 0);
        let _ = queue.needs_notification(&mem);
    }
});
