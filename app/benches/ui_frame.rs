//! UI frame cost: the app's frame (layout, painting, the console's texture upload) while a
//! guest shows a changing 1920x1080 display (test guest `gpu-anim`: a new full frame every
//! few milliseconds), against the same window with no guest running; and what it costs the
//! CPU to bring a guest frame to the renderer's texture, against a plain memcpy of a
//! 1920x1080 frame and one of the guest's frame itself (the VM process's memory, mapped).
//! Both ways: the frame's rows copied into the renderer's own BGRA texture as they are
//! (what the app does), and converted to RGBA on the console's converter thread, then
//! handed to egui (what it does where the renderer cannot take the guest's format). Through
//! egui_kittest with its wgpu renderer, which uploads texture changes as eframe's does
//! (here on Mesa's lavapipe, a CPU Vulkan); the frame is laid out and its textures
//! uploaded, not painted.
//!
//! cargo bench -p vessel --bench ui_frame

use std::time::{Duration, Instant};

use egui_kittest::Harness;
use vessel::ui::console::screen::thread_cpu_time;
use vessel::ui::{Options, VesselApp};

const FRAMES: usize = 300;

/// What one way of uploading cost over `FRAMES` UI frames.
struct Phase {
    busy: Duration,
    rows: u64,
    upload: Duration,
    convert_wall: Duration,
    convert_cpu: Duration,
    converted_rows: u64,
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let dir = std::env::temp_dir().join(format!("vessel-ui-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let library = vm_library::library::Library::open(&dir).unwrap();
    let args = vessel::core::create::NewVm::test_guest(
        "Anim",
        vessel_tests::testguest_elf(),
        "test=gpu-anim",
        128 << 20,
    );
    vessel::core::create::create_bundle(&library, &args).unwrap();
    let lib = dir.clone();
    let mut h = Harness::builder().with_size([1280.0, 800.0]).wgpu().build_eframe(move |cc| {
        VesselApp::new(
            &cc.egui_ctx,
            Options {
                library: Some(lib.clone()),
                prefs_path: lib.join("prefs.toml"),
                // Each VM in its own process, as in the app.
                launcher: vessel::vmhost::client::Launcher::Process(
                    env!("CARGO_BIN_EXE_vessel-vm").into(),
                ),
            },
        )
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while !h.state().library_read() {
        assert!(Instant::now() < deadline, "the library was never read");
        h.step();
        std::thread::sleep(Duration::from_millis(5));
    }
    let frame = |h: &mut Harness<'_, VesselApp>| {
        let start = Instant::now();
        h.step();
        start.elapsed()
    };

    // No guest: the library window with the VM's summary.
    for _ in 0..30 {
        frame(&mut h);
    }
    let idle = median((0..FRAMES).map(|_| frame(&mut h)).collect());

    // A guest redrawing all of a 1920x1080 display.
    assert!(h.state_mut().power_on_by_name("Anim"));
    while h.state().console_size() != Some([1920, 1080]) {
        assert!(
            Instant::now() < deadline + Duration::from_secs(60),
            "the guest never showed 1920x1080"
        );
        h.step();
        std::thread::sleep(Duration::from_millis(5));
    }
    // Each way a guest frame reaches the renderer's texture: its rows copied in as they
    // are (the renderer's own BGRA texture), or converted to RGBA on the console's
    // converter thread and handed to egui.
    let measure = |h: &mut Harness<'_, VesselApp>, convert: bool| {
        h.state_mut().convert_frames = convert;
        for _ in 0..30 {
            frame(h);
        }
        let before = h.state().frame_stats;
        let times: Vec<Duration> = (0..FRAMES)
            .map(|_| {
                // A display refresh apart, as a real window's frames are.
                std::thread::sleep(Duration::from_millis(16));
                frame(h)
            })
            .collect();
        let after = h.state().frame_stats;
        let (a, b) = (after.conversion, before.conversion);
        Phase {
            busy: median(times),
            rows: after.rows_uploaded - before.rows_uploaded,
            upload: after.upload_time - before.upload_time,
            convert_wall: a.wall - b.wall,
            convert_cpu: a.cpu - b.cpu,
            converted_rows: a.rows - b.rows,
        }
    };
    let native = measure(&mut h, false);
    assert!(h.state().console_is_native(), "wgpu takes the guest's rows as they are");
    let converted = measure(&mut h, true);
    // Reference under the same load: a memcpy of the very frame the converter reads (the
    // VM process's memory, mapped), on this thread, while the guest goes on drawing.
    let display = h.state().console_display().expect("the console's display");
    let mut copy = vec![0u8; 1920 * 1080 * 4];
    let busy_memcpy = median(
        (0..50)
            .filter_map(|_| {
                std::thread::sleep(Duration::from_millis(5));
                display.read(0, |frame| {
                    let bytes = &frame.pixels[..copy.len().min(frame.pixels.len())];
                    let cpu = thread_cpu_time();
                    copy[..bytes.len()].copy_from_slice(std::hint::black_box(bytes));
                    std::hint::black_box(&copy);
                    thread_cpu_time() - cpu
                })
            })
            .collect(),
    );
    h.state_mut().power_off_all();
    while h.state().any_running() {
        h.step();
        std::thread::sleep(Duration::from_millis(5));
    }

    // Reference: copying a 1920x1080 frame once.
    let src = vec![0x5au8; 1920 * 1080 * 4];
    let mut dst = vec![0u8; src.len()];
    let memcpy = median(
        (0..50)
            .map(|_| {
                let start = Instant::now();
                dst.copy_from_slice(std::hint::black_box(&src));
                std::hint::black_box(&dst);
                start.elapsed()
            })
            .collect(),
    );
    let ratio = |d: Duration, to: Duration| d.as_secs_f64() / to.as_secs_f64();
    println!("ui frame, no guest:                 {idle:>10.2?}");
    println!("memcpy of a 1920x1080 frame:        {memcpy:>10.2?}");
    println!(
        "memcpy of the guest's mapped frame: {busy_memcpy:>10.2?}  (CPU time, while the guest draws)"
    );
    let ways = [
        (
            "into the renderer's own texture (rows copied into its staging buffer on the UI thread)",
            &native,
        ),
        (
            "converted (then copied into the renderer's staging buffer while the UI frame paints, \
             not counted below)",
            &converted,
        ),
    ];
    for (what, phase) in ways {
        let frames = (phase.rows as f64 / 1080.0).max(1.0);
        println!("{what}:");
        println!(
            "  ui frame, 1920x1080 changing guest: {:>10.2?}  ({:.2}x the idle frame; \
             {:.2} guest frames uploaded per UI frame)",
            phase.busy,
            ratio(phase.busy, idle),
            frames / FRAMES as f64
        );
        let upload = phase.upload.div_f64(frames);
        let convert_cpu = if phase.converted_rows > 0 {
            phase.convert_cpu.div_f64(phase.converted_rows as f64 / 1080.0)
        } else {
            Duration::ZERO
        };
        let convert_wall = if phase.converted_rows > 0 {
            phase.convert_wall.div_f64(phase.converted_rows as f64 / 1080.0)
        } else {
            Duration::ZERO
        };
        println!(
            "  on the UI thread, per guest frame:  {upload:>10.2?}  ({:.2}x the memcpy, {:.2}x the \
             mapped frame's)",
            ratio(upload, memcpy),
            ratio(upload, busy_memcpy)
        );
        println!(
            "  converting, per guest frame:        {convert_cpu:>10.2?}  CPU ({convert_wall:.2?} \
             passed) on the converter thread"
        );
        println!(
            "  a guest frame to the texture:       {:>10.2?}  ({:.2}x the memcpy, {:.2}x the \
             mapped frame's)",
            upload + convert_cpu,
            ratio(upload + convert_cpu, memcpy),
            ratio(upload + convert_cpu, busy_memcpy)
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
