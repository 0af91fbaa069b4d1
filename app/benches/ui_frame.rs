//! UI frame cost: the app's frame (layout, painting, the console's texture upload) while a
//! guest shows a changing 1920x1080 display (test guest `gpu-anim`: a new full frame every
//! few milliseconds), against the same window with no guest running. Also the upload's
//! own cost per frame on the UI thread (handing the converted rows to egui) and the
//! conversion's per guest frame (on the console's converter thread: reading the guest's
//! frame, converting its damaged rows), each against a plain memcpy of a 1920x1080 frame. Through egui_kittest with
//! its wgpu renderer, which uploads each frame's texture changes as eframe's does (here
//! on Mesa's lavapipe, a CPU Vulkan); the frame is laid out and its textures uploaded,
//! not painted.
//!
//! cargo bench -p vessel --bench ui_frame

use std::time::{Duration, Instant};

use egui_kittest::Harness;
use vessel::ui::console::screen::thread_cpu_time;
use vessel::ui::{Options, VesselApp};

const FRAMES: usize = 300;

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
    for _ in 0..30 {
        frame(&mut h);
    }
    let before = h.state().frame_stats;
    let times: Vec<Duration> = (0..FRAMES)
        .map(|_| {
            // A display refresh apart, as a real window's frames are.
            std::thread::sleep(Duration::from_millis(16));
            frame(&mut h)
        })
        .collect();
    let after = h.state().frame_stats;
    let busy = median(times);
    let rows = after.rows_uploaded - before.rows_uploaded;
    let upload = (after.upload_time - before.upload_time) / FRAMES as u32;
    let (a, b) = (after.conversion, before.conversion);
    let converted_frames = ((a.rows - b.rows) as f64 / 1080.0).max(1.0);
    let convert = (a.wall - b.wall).div_f64(converted_frames);
    let convert_cpu = (a.cpu - b.cpu).div_f64(converted_frames);
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
    let full_frames = rows as f64 / 1080.0 / FRAMES as f64;
    println!("ui frame, no guest:                 {idle:>10.2?}");
    println!(
        "ui frame, 1920x1080 changing guest: {busy:>10.2?}  ({:.2}x the idle frame)",
        busy.as_secs_f64() / idle.as_secs_f64()
    );
    println!(
        "guest frames uploaded per UI frame: {full_frames:.2} ({rows} rows in {FRAMES} frames)"
    );
    println!(
        "upload per UI frame:                {upload:>10.2?}  ({:.2}x a 1920x1080 memcpy of {memcpy:.2?})",
        upload.as_secs_f64() / memcpy.as_secs_f64()
    );
    println!(
        "conversion per guest frame:         {convert:>10.2?}  ({:.2}x the memcpy; on the console's converter thread)",
        convert.as_secs_f64() / memcpy.as_secs_f64()
    );
    println!(
        "  of which running on a CPU:        {convert_cpu:>10.2?}  ({:.2}x the memcpy; the rest waiting for one)",
        convert_cpu.as_secs_f64() / memcpy.as_secs_f64()
    );
    println!(
        "memcpy of the guest's mapped frame: {busy_memcpy:>10.2?}  (CPU time, while the guest draws); \
         the conversion's CPU time is {:.2}x it",
        convert_cpu.as_secs_f64() / busy_memcpy.as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
