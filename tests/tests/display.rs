//! virtio-gpu on the KVM path: the test guest drives the device as Linux's driver does and
//! draws a known pattern; the test reads it back through `MachineHandle::display()` and
//! checks pixels, damage (as the repaint callback saw it), the cursor, EDID and a resize
//! through the display event.

use std::sync::{Arc, Mutex};

use vessel_tests::*;
use vmm::DeviceConfig;
use vmm::devices::virtio::gpu::GpuConfig;
use vmm::display::{Damage, Rect, edid};

const W: u32 = 128;
const H: u32 = 96;

/// The guest's pattern: pixel (x, y) has blue 2x, green 2y, red 0x40; white in the
/// rectangle it redraws.
fn expected(x: u32, y: u32, with_rect: bool) -> [u8; 3] {
    if with_rect && (32..48).contains(&x) && (16..24).contains(&y) {
        [0xff, 0xff, 0xff]
    } else {
        [(2 * x) as u8, (2 * y) as u8, 0x40]
    }
}

#[test]
fn the_guest_draws_through_virtio_gpu_onto_the_display() {
    let mut spec = GuestSpec::new("gpu");
    spec.devices = vec![DeviceConfig::Gpu(GpuConfig::default())];
    let handle = vmm::Machine::build(spec.config(), None).expect("machine builds");
    let display = handle.display();
    // Every repaint: the damage since the last one, as an app would see it.
    let seen: Arc<Mutex<Vec<(Damage, bool)>>> = Arc::default();
    let (log, watched) = (seen.clone(), display.clone());
    let last = Arc::new(Mutex::new(0u64));
    display.set_repaint_callback(move || {
        let mut last = last.lock().unwrap();
        let read = watched.read(*last, |f| {
            // Whether the white rectangle is in this frame already.
            let at = 16 * f.stride + 32 * 4;
            (f.damage.clone(), f.pixels[at] == 0xff && f.pixels[at + 2] == 0xff, f.generation)
        });
        if let Some((damage, white, generation)) = read {
            *last = generation;
            log.lock().unwrap().push((damage, white));
        }
    });
    handle.start().unwrap();
    let mut run = GuestRun { handle, serial: Vec::new(), events: Vec::new() };
    run.expect_output("GPU WAIT RESIZE\n");
    assert_eq!(run.lines_with("GPU MODE"), vec!["0000000000000400 0000000000000300"]);
    let edid_bytes = edid::edid(1024, 768);
    let dtd = u64::from_le_bytes(edid_bytes[54..62].try_into().unwrap());
    assert_eq!(run.lines_with("GPU EDID"), vec![format!("{dtd:016x}")]);

    // The frame: every pixel as drawn, in the resource's format.
    assert_eq!(display.size(), Some((W, H)));
    display
        .read(0, |f| {
            assert_eq!(f.damage, Damage::Full);
            for y in 0..H {
                for x in 0..W {
                    let at = y as usize * f.stride + x as usize * 4;
                    let [b, g, r] = expected(x, y, true);
                    assert_eq!(&f.pixels[at..at + 3], &[b, g, r], "pixel ({x}, {y})");
                }
            }
        })
        .expect("a frame");
    // The damage the UI saw: the first frame whole (a new scanout), the full flush, then
    // only the redrawn rectangle. (Repaints for the cursor bring no frame damage.)
    let seen = seen.lock().unwrap().clone();
    let frames: Vec<(Damage, bool)> =
        seen.iter().filter(|(d, _)| *d != Damage::None).cloned().collect();
    assert_eq!(
        frames,
        vec![
            (Damage::Full, false),
            (Damage::Rects(vec![Rect::new(0, 0, W, H)]), false),
            (Damage::Rects(vec![Rect::new(32, 16, 16, 8)]), true),
        ],
        "{seen:?}"
    );
    assert_eq!(seen.len(), frames.len() + 3, "and the cursor's image, place and move: {seen:?}");

    // The cursor: its image (A8R8G8B8 converted to RGBA), hotspot and position.
    let cursor = display.cursor();
    let image = cursor.image.expect("a cursor image");
    assert_eq!((image.width, image.height, image.hot_x, image.hot_y), (64, 64, 3, 4));
    assert_eq!(&image.rgba[..8], &[0x11, 0x22, 0x33, 0x80, 0xff, 0, 0, 0xff]);
    assert_eq!((cursor.x, cursor.y), (50, 60));

    // A resize from the host: the guest sees the display event and the new mode.
    display.request_resize(800, 600);
    assert!(matches!(run.expect_stopped(), vmm::StopReason::PoweredOff), "{}", run.output());
    assert!(run.output().contains("GPU DONE"), "{}", run.output());
    assert_eq!(
        run.lines_with("GPU MODE"),
        vec!["0000000000000400 0000000000000300", "0000000000000320 0000000000000258"]
    );
}

/// The boot framebuffer: the guest (booted by the Linux 64-bit protocol) finds it in
/// boot_params.screen_info as a VESA linear framebuffer, draws into it, and the display
/// shows what it drew, then only the square it adds as damage.
#[test]
fn the_boot_framebuffer_is_described_to_the_guest_and_shown() {
    use vmm::display::boot_fb::FramebufferMode;
    let mut spec = GuestSpec::new("fb");
    spec.kernel = testguest_bzimage();
    spec.boot_framebuffer = Some(FramebufferMode { width: 640, height: 480 });
    spec.devices = vec![];
    let mut run = spec.boot();
    let display = run.handle.display();
    run.expect_output("FB DRAWN\n");
    // VLFB, 640x480x32 at 0xf0000000, 2560 bytes a line, 1200 KiB in 64 KiB units.
    let fields: Vec<u64> = run.lines_with("FB")[0].split_whitespace().map(hex).collect::<Vec<_>>();
    assert_eq!(fields, [0x23, 640, 480, 32, 0xf000_0000, 2560, 19]);
    let pattern = |f: &vmm::display::Frame<'_>, x: usize, y: usize| {
        let at = y * f.stride + x * 4;
        f.pixels[at..at + 3] == [x as u8, y as u8, 0x30]
    };
    // The refresher copies it within a few of its 33 ms periods (a pass may catch it half
    // drawn; the next one completes it).
    let samples = [(0, 0), (1, 2), (255, 255), (256, 300), (600, 17), (639, 479)];
    let shown = run.wait_until(TIMEOUT, |_| {
        display.read(0, |f| samples.iter().all(|&(x, y)| pattern(&f, x, y))).unwrap_or(false)
    });
    assert!(shown, "the display never showed the guest's drawing");
    // The pixels can be there before the refresher publishes the last of their damage (a
    // pass that caught the drawing half done publishes the rest on the next one): wait
    // until the display has been still for a few periods.
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        let before = display.generation();
        std::thread::sleep(std::time::Duration::from_millis(150));
        if display.generation() == before {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the display never settled");
    }
    let generation = display
        .read(0, |f| {
            assert_eq!((f.width, f.height), (640, 480));
            f.generation
        })
        .unwrap();
    run.handle.send_serial(b"s").unwrap();
    run.expect_output("FB SQUARE\n");
    let white = |f: &vmm::display::Frame<'_>, x: usize, y: usize| {
        let at = y * f.stride + x * 4;
        f.pixels[at..at + 3] == [0xff, 0xff, 0xff]
    };
    let whole = run.wait_until(TIMEOUT, |_| {
        display.read(0, |f| white(&f, 100, 50) && white(&f, 107, 57)).unwrap_or(false)
    });
    assert!(whole, "the display never showed the square");
    // The damage since: the square (a refresh may have caught it half drawn, in two parts).
    // The pixels show before the refresher publishes their damage: wait for all of it.
    let bounds = |rects: &[vmm::display::Rect]| {
        let (x0, y0) = (rects.iter().map(|r| r.x).min(), rects.iter().map(|r| r.y).min());
        let x1 = rects.iter().map(|r| r.x + r.width).max();
        let y1 = rects.iter().map(|r| r.y + r.height).max();
        (x0, y0, x1, y1)
    };
    let square = (Some(100), Some(50), Some(108), Some(58));
    let mut rects = Vec::new();
    let published = run.wait_until(TIMEOUT, |_| match display.read(generation, |f| f.damage) {
        Some(Damage::Rects(now)) => {
            rects = now;
            bounds(&rects) == square
        }
        Some(Damage::None) => false,
        other => panic!("rectangles expected, not {other:?}"),
    });
    assert!(published, "the square's damage: {rects:?}");
}
