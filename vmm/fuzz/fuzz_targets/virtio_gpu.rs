//! virtio-gpu control and cursor requests from a hostile driver: the same rings serve as
//! the control queue, then as the cursor queue, under a small limit on resource memory.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmm::devices::virtio::VirtioDevice;
use vmm::devices::virtio::gpu::{Gpu, GpuConfig, GpuLimits};
use vmm::display::Display;

mod common;

fuzz_target!(|data: &[u8]| {
    let display = Display::new().unwrap();
    let limits = GpuLimits { max_resource_bytes: 4 << 20, max_resources: 8 };
    let mut gpu = Gpu::new(display.clone(), GpuConfig { limits, ..Default::default() });
    let (mem, control) = common::guest(data);
    let (_, cursor) = common::guest(data); // the same rings, read afresh
    let mut queues = [control, cursor];
    gpu.process_queue(0, &mut queues, &mem);
    gpu.process_queue(1, &mut queues, &mem);
    // Whatever the guest did, what the display shows is inside what it was given.
    display.read(0, |frame| {
        assert!(frame.pixels.len() >= frame.stride * (frame.height as usize - 1));
    });
});
