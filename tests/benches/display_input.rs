//! Frame cost through virtio-gpu and input latency, on the KVM path.
//!
//! Frames: the test guest (test=gpu-bench) keeps a 1920x1080 frame in 2025 scattered
//! 4 KiB pages and sends TRANSFER_TO_HOST_2D + RESOURCE_FLUSH pairs, for the whole frame
//! and for 64x64, 1x1 and 512x512 rectangles, each pair with one notification as Linux's driver sends
//! them; a 1x1 rectangle gives the fixed cost of a pair (the virtqueue round trip). The
//! guest's debug-port milestones time them. Compared in the
//! same run with a plain memcpy of the same bytes (the whole frame, and the rectangles'
//! rows). After the flush the pixels are on the `Display`: the scanout shares the
//! resource, so a reader's cost is only the damaged rows it uploads.
//!
//! Input: the time from `InputSink::key` to the event's arrival in the guest's event
//! buffer, seen by the test guest (test=input) polling its used ring and marking the
//! debug port.
//!
//! Run: cargo bench -p vessel-tests --bench display_input

use std::time::{Duration, Instant};

use vessel_tests::{GuestSpec, TIMEOUT};
use vmm::devices::virtio::gpu::GpuConfig;
use vmm::{DeviceConfig, Event, Machine, MachineState};

const FRAMES: u32 = 60;
const RECTS: u32 = 600;
const BIG_RECTS: u32 = 100;
const FRAME_BYTES: usize = 1920 * 1080 * 4;

fn milestones(handle: &vmm::MachineHandle) -> Vec<(u8, Duration)> {
    let mut marks = Vec::new();
    while let Ok(event) = handle.events().recv_timeout(TIMEOUT) {
        match event {
            Event::DebugMarker { code, since_build } => marks.push((code, since_build)),
            Event::StateChanged(MachineState::Stopped(_)) => break,
            _ => {}
        }
    }
    marks
}

fn between(marks: &[(u8, Duration)], start: u8, end: u8) -> Duration {
    let at = |code| marks.iter().find(|(c, _)| *c == code).map(|(_, t)| *t).expect("milestone");
    at(end) - at(start)
}

/// Per pair through the device: a full frame, then 64x64, 1x1 and 512x512 rectangles.
fn vessel_frames() -> [Duration; 4] {
    let mut spec = GuestSpec::new("gpu-bench");
    spec.devices = vec![DeviceConfig::Gpu(GpuConfig::default())];
    let handle = Machine::build(spec.config(), None).expect("machine builds");
    handle.start().unwrap();
    let marks = milestones(&handle);
    [
        between(&marks, 0x20, 0x21) / FRAMES,
        between(&marks, 0x22, 0x23) / RECTS,
        between(&marks, 0x24, 0x25) / RECTS,
        between(&marks, 0x26, 0x27) / BIG_RECTS,
    ]
}

/// Per copy by memcpy between two host frames: the whole frame, then a 64x64 and a
/// 512x512 rectangle at (256, 256), row by row.
fn memcpy_frames() -> [Duration; 3] {
    let src = vec![0x5au8; FRAME_BYTES];
    let mut dst = vec![0u8; FRAME_BYTES];
    let t = Instant::now();
    for _ in 0..FRAMES {
        dst.copy_from_slice(std::hint::black_box(&src));
    }
    let full = t.elapsed() / FRAMES;
    let mut rect = |side: usize, times: u32| {
        let stride = 1920 * 4;
        let t = Instant::now();
        for _ in 0..times {
            for row in 256..256 + side {
                let at = row * stride + 256 * 4;
                dst[at..at + side * 4]
                    .copy_from_slice(std::hint::black_box(&src[at..at + side * 4]));
            }
        }
        t.elapsed() / times
    };
    let (small, big) = (rect(64, RECTS), rect(512, BIG_RECTS));
    std::hint::black_box(&dst);
    [full, small, big]
}

fn main() {
    let _ = vessel_frames(); // warm-up
    let [v_full, v_rect, v_pixel, v_big] = vessel_frames();
    let [m_full, m_rect, m_big] = memcpy_frames();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!("display_input: virtio-gpu frames (guest resource -> Display) and input latency");
    println!(
        "  1920x1080 frame   vessel {:>8.1} us  memcpy {:>8.1} us  vessel/memcpy {:.2}",
        us(v_full),
        us(m_full),
        us(v_full) / us(m_full)
    );
    println!(
        "  64x64 rectangle   vessel {:>8.1} us  memcpy {:>8.1} us  ({:.1}% of a frame's time for {:.2}% of its area)",
        us(v_rect),
        us(m_rect),
        100.0 * us(v_rect) / us(v_full),
        100.0 * (64.0 * 64.0) / (1920.0 * 1080.0)
    );
    println!(
        "  1x1 rectangle     vessel {:>8.1} us  (the fixed cost of a pair: the virtqueue round trip)",
        us(v_pixel)
    );
    println!(
        "  512x512 rectangle vessel {:>8.1} us  memcpy {:>8.1} us  less the fixed cost: vessel/memcpy {:.2}",
        us(v_big),
        us(m_big),
        (us(v_big) - us(v_pixel)) / us(m_big)
    );
    let mut lat = vessel_tests::input_latency(40);
    lat.sort();
    println!(
        "  input latency     InputSink::key -> guest event buffer: median {:.1} us, p90 {:.1} us, max {:.1} us ({} presses)",
        us(lat[lat.len() / 2]),
        us(lat[lat.len() * 9 / 10]),
        us(lat[lat.len() - 1]),
        lat.len()
    );
}
