//! virtio-blk requests from a hostile driver, against a small raw image.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmm::devices::virtio::VirtioDevice;
use vmm::devices::virtio::block::Block;

mod common;

fuzz_target!(|data: &[u8]| {
    let path = std::env::temp_dir().join(format!("vessel-fuzz-blk-{}.raw", std::process::id()));
    std::fs::File::create(&path).unwrap().set_len(64 * 512).unwrap();
    let read_only = data.get(2).is_some_and(|b| b & 1 == 1);
    let mut blk = Block::open(&vmm::ImageSpec::raw(&path), read_only, "fuzz").unwrap();
    let (mem, queue) = common::guest(data);
    let mut queues = [queue];
    blk.process_queue(0, &mut queues, &mem);
    blk.process_queue(0, &mut queues, &mem);
    drop(blk);
    let size = std::fs::metadata(&path).unwrap().len();
    assert_eq!(size, 64 * 512, "the guest cannot change the image size");
});
