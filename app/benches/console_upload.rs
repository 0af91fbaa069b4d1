//! A guest frame into the window's texture, with each of the window's renderers as the
//! app runs them (eframe; under Xvfb when no display is set): a 1920x1080 frame of B, G,
//! R, X pixels, all of it changed, put into the renderer's own texture by the console's
//! `NativeTexture`, as the console does with each frame a guest draws. Timed on the UI
//! thread (what the window's frame waits for), and until the renderer has it in the
//! texture (its own copy done: with a GPU a transfer of the GPU's, with Mesa's software
//! renderers a copy on the CPU). Against a memcpy of the same frames, timed in the same
//! window frames (the renderer's threads as busy). The frames come from four buffers in
//! turn, 32 MiB, as a guest's frame comes from memory rather than the caches. Each renderer runs in a child process of its own (winit makes
//! one event loop a process).
//!
//! cargo bench -p vessel --bench console_upload

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vessel::ui::console::native::NativeTexture;
use vmm::display::{Damage, Frame, PixelFormat};

const FRAMES: usize = 200;
const SIZE: [usize; 2] = [1920, 1080];
const CHILD: &str = "VESSEL_UPLOAD_BENCH_RENDERER";

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    if let Ok(renderer) = std::env::var(CHILD) {
        child(&renderer);
        return;
    }
    // A display for the window: this session's, else an Xvfb of our own.
    let session = std::env::var("DISPLAY").ok().filter(|d| !d.is_empty());
    let xvfb = session.is_none().then(vessel_tests::Xvfb::start);
    let display = session.or_else(|| xvfb.as_ref().map(|x| x.display.clone())).unwrap();
    println!("console_upload: a {}x{} guest frame into the renderer's texture", SIZE[0], SIZE[1]);
    for renderer in ["glow", "wgpu"] {
        let status = Command::new(std::env::current_exe().unwrap())
            .env(CHILD, renderer)
            .env("DISPLAY", &display)
            .env_remove("WAYLAND_DISPLAY")
            .status()
            .unwrap();
        if !status.success() {
            println!("  {renderer}: the benchmark's window failed ({status})");
        }
    }
    drop(xvfb);
}

/// What one renderer measured: on the UI thread, and until in the texture.
#[derive(Default)]
struct Times {
    memcpy: Vec<Duration>,
    upload: Vec<Duration>,
    copy: Vec<Duration>,
    done: Vec<Duration>,
    what: String,
}

struct App {
    frames: Arc<Vec<Vec<u8>>>,
    /// Where the reference memcpy copies the frame to.
    copy: Vec<u8>,
    texture: Option<NativeTexture>,
    times: Arc<Mutex<Times>>,
    shown: usize,
}

impl eframe::App for App {
    fn ui(&mut self, ui: &mut egui::Ui, frame: &mut eframe::Frame) {
        let ctx = ui.ctx().clone();
        let n = self.shown;
        self.shown += 1;
        if self.texture.is_none() {
            self.texture = NativeTexture::new(frame, SIZE, PixelFormat::Bgrx);
            let mut times = self.times.lock().unwrap();
            times.what = match (&self.texture, frame.wgpu_render_state()) {
                (None, _) => "takes no B, G, R, X texture".into(),
                (Some(_), Some(state)) => format!("{:?}", state.adapter.get_info().name),
                (Some(_), None) => "OpenGL".into(),
            };
        }
        let Some(texture) = self.texture.as_mut() else {
            ctx.send_viewport_cmd(egui::ViewportCommand::Close);
            return;
        };
        let pixels = &self.frames[n % self.frames.len()];
        let guest = Frame {
            width: SIZE[0] as u32,
            height: SIZE[1] as u32,
            stride: SIZE[0] * 4,
            format: PixelFormat::Bgrx,
            pixels,
            damage: Damage::Full,
            generation: n as u64 + 1,
        };
        let start = Instant::now();
        texture.upload(&guest, &[(0, SIZE[1])]);
        let upload = start.elapsed();
        let copy = texture.copy_time();
        texture.wait_for_renderer();
        let done = start.elapsed();
        // The reference, in the same conditions: a memcpy of the same frame (the next one
        // in turn, as the upload's source was not in the caches either).
        let next = &self.frames[(n + 1) % self.frames.len()];
        let start = Instant::now();
        self.copy.copy_from_slice(std::hint::black_box(next));
        std::hint::black_box(&self.copy);
        let memcpy = start.elapsed();
        if n >= 10 {
            let mut times = self.times.lock().unwrap();
            times.memcpy.push(memcpy);
            times.upload.push(upload);
            times.copy.push(copy);
            times.done.push(done);
        }
        let id = texture.id();
        ui.image((id, egui::vec2(320.0, 180.0)));
        if n >= FRAMES + 10 {
            // The texture goes while the renderer is still there.
            self.texture = None;
            ctx.send_viewport_cmd(egui::ViewportCommand::Close);
        } else {
            ctx.request_repaint();
        }
    }
}

fn child(renderer: &str) {
    // Four frames of changing content, 32 MiB: read from memory, not the caches.
    let bytes = SIZE[0] * SIZE[1] * 4;
    let frames: Arc<Vec<Vec<u8>>> = Arc::new(
        (0..4u8).map(|i| (0..bytes).map(|b| (b as u8).wrapping_add(i)).collect()).collect(),
    );
    let times = Arc::new(Mutex::new(Times::default()));
    let options = eframe::NativeOptions {
        renderer: match renderer {
            "glow" => eframe::Renderer::Glow,
            _ => eframe::Renderer::Wgpu,
        },
        viewport: egui::ViewportBuilder::default().with_inner_size([640.0, 400.0]),
        ..Default::default()
    };
    let app_times = times.clone();
    let result = eframe::run_native(
        "Vessel upload benchmark",
        options,
        Box::new(move |_| {
            let copy = vec![0u8; bytes];
            Ok(Box::new(App { frames, copy, texture: None, times: app_times, shown: 0 }))
        }),
    );
    if let Err(e) = result {
        println!("  {renderer}: no window: {e}");
        return;
    }
    let times = std::mem::take(&mut *times.lock().unwrap());
    if times.upload.is_empty() {
        println!("  {renderer} ({}): nothing measured", times.what);
        return;
    }
    let memcpy = median(times.memcpy);
    let (upload, copy, done) = (median(times.upload), median(times.copy), median(times.done));
    let ratio = |d: Duration| d.as_secs_f64() / memcpy.as_secs_f64();
    println!("  {renderer} ({}), memcpy of the frame {memcpy:.2?}:", times.what);
    println!(
        "    on the UI thread:           median {upload:>9.2?}  ({:.2}x the memcpy)",
        ratio(upload)
    );
    println!(
        "      of which copying rows:    median {copy:>9.2?}  ({:.2}x the memcpy; wgpu: into \
         staging memory, then the copy to the GPU is submitted)",
        ratio(copy)
    );
    println!(
        "    until in the texture:       median {done:>9.2?}  ({:.2}x the memcpy; the renderer's \
         own copy included)",
        ratio(done)
    );
}
