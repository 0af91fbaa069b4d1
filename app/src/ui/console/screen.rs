//! The guest's screen drawn from `vmm::Display` into one long-lived texture: only the
//! damaged rows are uploaded. Where the window's renderer takes the frame's pixel format,
//! they go into a texture of the renderer's own as they are (`native`); else they are
//! converted to RGBA (on a thread of their own for the console), into buffers reused once
//! the renderer is done with them, for egui's texture. And the guest's cursor image as a
//! texture.

use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use egui::{Color32, ColorImage, TextureHandle, TextureId, TextureOptions, Vec2};
use vmm::Display;
use vmm::display::{Damage, Frame, PixelFormat};

use super::native::NativeTexture;

/// Merged row ranges [start, end) covered by `damage` in a frame `height` rows high.
pub fn damaged_rows(damage: &Damage, height: usize) -> Vec<(usize, usize)> {
    let mut rows: Vec<(usize, usize)> = match damage {
        Damage::None => return Vec::new(),
        Damage::Full => return vec![(0, height)],
        Damage::Rects(rects) => rects
            .iter()
            .map(|r| (r.y as usize, (r.y as usize + r.height as usize).min(height)))
            .filter(|(a, b)| a < b)
            .collect(),
    };
    rows.sort_unstable();
    let mut merged: Vec<(usize, usize)> = Vec::with_capacity(rows.len());
    for (a, b) in rows {
        match merged.last_mut() {
            Some(last) if a <= last.1 => last.1 = last.1.max(b),
            _ => merged.push((a, b)),
        }
    }
    merged
}

/// Rows `rows` of `frame`, opaque, for the texture, into `pixels` (whose allocation is
/// reused: a fresh 8 MiB buffer a frame costs more in page faults than the conversion; and
/// a buffer of the right length is written once, not cleared first).
fn convert_into(frame: &Frame<'_>, rows: (usize, usize), pixels: &mut Vec<Color32>) {
    let width = frame.width as usize;
    let [r, g, b] = frame.format.rgb_offsets();
    pixels.resize(width * (rows.1 - rows.0), Color32::BLACK);
    let out: &mut [u32] = bytemuck::cast_slice_mut(&mut pixels[..]);
    for (y, out) in (rows.0..rows.1).zip(out.chunks_exact_mut(width.max(1))) {
        let row = &frame.pixels[y * frame.stride..][..width * 4];
        match frame.format {
            // The common case (Linux's XRGB8888): a byte swizzle on whole pixels, which the
            // compiler turns into vector code running near memcpy's speed.
            PixelFormat::Bgrx | PixelFormat::Bgra => match bytemuck::try_cast_slice::<u8, u32>(row)
            {
                // Whole pixels read as words (the frame's rows are word-aligned in practice).
                Ok(words) => swizzle(out, words),
                Err(_) => {
                    for (o, p) in out.iter_mut().zip(row.chunks_exact(4)) {
                        *o = bgrx_to_rgba(u32::from_le_bytes([p[0], p[1], p[2], p[3]]));
                    }
                }
            },
            _ => {
                for (o, p) in out.iter_mut().zip(row.chunks_exact(4)) {
                    *o = u32::from_le_bytes([p[r], p[g], p[b], 0xff]);
                }
            }
        }
    }
}

/// B, G, R, X words to opaque R, G, B, A ones, at about memory's speed: four pixels at a
/// time, written past the caches (a frame is larger than them, and is next read by the
/// renderer's upload, not by this thread), as a large memcpy writes; so the destination's
/// old contents are never read in.
fn swizzle(out: &mut [u32], words: &[u32]) {
    let n = out.len().min(words.len());
    let (out, words) = (&mut out[..n], &words[..n]);
    // Up to the first 16-byte boundary of the destination, and the tail, one by one.
    let head = out.as_ptr().align_offset(16).min(n);
    let body = (n - head) / 4 * 4;
    for (o, &v) in out[..head].iter_mut().zip(&words[..head]) {
        *o = bgrx_to_rgba(u32::from_le(v));
    }
    swizzle_streaming(&mut out[head..head + body], &words[head..head + body]);
    for (o, &v) in out[head + body..].iter_mut().zip(&words[head + body..]) {
        *o = bgrx_to_rgba(u32::from_le(v));
    }
}

/// `swizzle` of whole groups of four pixels into a 16-byte aligned `out`: with SSSE3's
/// byte shuffle where the CPU has it (Intel since the Core 2, AMD since Bulldozer), else with SSE2's
/// shifts and masks (which every x86-64 CPU has); stores past the caches either way.
#[cfg(target_arch = "x86_64")]
fn swizzle_streaming(out: &mut [u32], words: &[u32]) {
    debug_assert!(out.len() == words.len() && out.len().is_multiple_of(4));
    debug_assert!(out.as_ptr().align_offset(16) == 0 || out.is_empty());
    if std::arch::is_x86_feature_detected!("ssse3") {
        // SAFETY: this CPU has SSSE3 (just checked); `out` is as the function requires.
        unsafe { swizzle_ssse3(out, words) }
    } else {
        swizzle_sse2(out, words)
    }
}

/// `swizzle_streaming` with one byte shuffle a group: R, G, B to their places, X's byte
/// cleared, then alpha set.
///
/// # Safety
/// The CPU has SSSE3.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "ssse3")]
unsafe fn swizzle_ssse3(out: &mut [u32], words: &[u32]) {
    use std::arch::x86_64::*;
    // SAFETY: each group reads 16 bytes inside `words` (unaligned load) and writes 16
    // bytes inside `out`, whose start is 16-byte aligned (the caller's promise) so every
    // group's is; the fence orders the streaming stores before any later store.
    unsafe {
        let order = _mm_setr_epi8(2, 1, 0, -1, 6, 5, 4, -1, 10, 9, 8, -1, 14, 13, 12, -1);
        let alpha = _mm_set1_epi32(0xff00_0000_u32 as i32);
        for (o, w) in out.chunks_exact_mut(4).zip(words.chunks_exact(4)) {
            let v = _mm_loadu_si128(w.as_ptr().cast());
            let rgba = _mm_or_si128(_mm_shuffle_epi8(v, order), alpha);
            _mm_stream_si128(o.as_mut_ptr().cast(), rgba);
        }
        _mm_sfence();
    }
}

/// `swizzle_streaming` with SSE2 only.
#[cfg(target_arch = "x86_64")]
fn swizzle_sse2(out: &mut [u32], words: &[u32]) {
    use std::arch::x86_64::*;
    // SAFETY: SSE2 is part of x86-64. Each group reads 16 bytes inside `words` (unaligned
    // load) and writes 16 bytes inside `out`, whose start is 16-byte aligned (checked by
    // the caller) so every group's is; the fence orders the streaming stores before any
    // later store, as the renderer's thread must see them once this returns.
    unsafe {
        let low = _mm_set1_epi32(0xff);
        let green = _mm_set1_epi32(0xff00);
        let alpha = _mm_set1_epi32(0xff00_0000_u32 as i32);
        for (o, w) in out.chunks_exact_mut(4).zip(words.chunks_exact(4)) {
            let v = _mm_loadu_si128(w.as_ptr().cast());
            let r = _mm_and_si128(_mm_srli_epi32(v, 16), low);
            let g = _mm_and_si128(v, green);
            let b = _mm_slli_epi32(_mm_and_si128(v, low), 16);
            let rgba = _mm_or_si128(_mm_or_si128(r, g), _mm_or_si128(b, alpha));
            _mm_stream_si128(o.as_mut_ptr().cast(), rgba);
        }
        _mm_sfence();
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn swizzle_streaming(out: &mut [u32], words: &[u32]) {
    for (o, &v) in out.iter_mut().zip(words) {
        *o = bgrx_to_rgba(u32::from_le(v));
    }
}

/// A B, G, R, X pixel read as a little-endian word, as the R, G, B, A word of an opaque
/// `Color32`.
#[inline(always)]
fn bgrx_to_rgba(v: u32) -> u32 {
    u32::to_le(((v >> 16) & 0xff) | (v & 0xff00) | ((v & 0xff) << 16) | 0xff00_0000)
}

/// Images handed to egui for upload, taken back for reuse once the renderer is done with
/// them (when egui holds no other reference).
#[derive(Default)]
struct ImagePool {
    images: Vec<Arc<ColorImage>>,
}

impl ImagePool {
    /// Most bands in flight at once worth keeping buffers for.
    const KEEP: usize = 4;

    fn image(&mut self, frame: &Frame<'_>, rows: (usize, usize)) -> Arc<ColorImage> {
        let size = [frame.width as usize, rows.1 - rows.0];
        let free = self.images.iter_mut().position(|i| Arc::get_mut(i).is_some());
        let index = match free {
            Some(i) => i,
            None => {
                if self.images.len() >= Self::KEEP {
                    self.images.remove(0);
                }
                self.images.push(Arc::new(ColorImage::new([0, 0], Vec::new())));
                self.images.len() - 1
            }
        };
        let image = Arc::get_mut(&mut self.images[index]).expect("free or new");
        convert_into(frame, rows, &mut image.pixels);
        image.size = size;
        image.source_size = Vec2::new(size[0] as f32, size[1] as f32);
        self.images[index].clone()
    }
}

/// A frame made ready for the texture: the rows that changed since the texture's
/// generation, converted, as images egui uploads as they are.
enum Converted {
    /// The guest shows nothing.
    Nothing,
    /// More than this GPU holds as one texture: shown as nothing (and said so).
    TooLarge {
        generation: u64,
        size: [usize; 2],
    },
    Frame {
        generation: u64,
        size: [usize; 2],
        bands: Vec<(usize, Arc<ColorImage>)>,
        rows: u64,
    },
}

/// What became of a frame's upload into the renderer's own texture.
enum Upload {
    Done {
        generation: u64,
        size: [usize; 2],
        rows: u64,
    },
    /// More than this GPU holds as one texture.
    TooLarge {
        generation: u64,
        size: [usize; 2],
    },
    /// Not a frame the renderer takes as it is: it is converted.
    Unsupported,
}

/// What the texture shows: the display generation and size it was made from.
type Shown = Option<(u64, [usize; 2])>;

/// Converts what changed in `display` since `shown` (all of it if the size differs).
fn convert(display: &Display, shown: Shown, max_side: usize, pool: &mut ImagePool) -> Converted {
    let since = shown.map_or(0, |(generation, _)| generation);
    display
        .read(since, |frame| {
            let size = [frame.width as usize, frame.height as usize];
            if size[0] > max_side || size[1] > max_side {
                return Converted::TooLarge { generation: frame.generation, size };
            }
            let damage = if shown.is_none_or(|(_, s)| s != size) {
                Damage::Full
            } else {
                frame.damage.clone()
            };
            let bands: Vec<_> = damaged_rows(&damage, size[1])
                .into_iter()
                .map(|band| (band.0, pool.image(&frame, band)))
                .collect();
            let rows = bands.iter().map(|(_, image)| image.size[1] as u64).sum();
            Converted::Frame { generation: frame.generation, size, bands, rows }
        })
        .unwrap_or(Converted::Nothing)
}

/// What the console's converter makes of `display` now: all of it, then what changed
/// since; the rows converted. For tests that feed a display from elsewhere.
#[cfg(test)]
pub(crate) fn convert_as_the_console_does(display: &Display, since: u64) -> u64 {
    let mut pool = ImagePool::default();
    let mut rows = 0;
    for shown in [None, display.size().map(|(w, h)| (since, [w as usize, h as usize]))] {
        if let Converted::Frame { rows: r, .. } = convert(display, shown, 16384, &mut pool) {
            rows += r;
        }
    }
    rows
}

/// How long the console converts frames as they come after it last asked: it stops soon
/// after the console is no longer shown.
const EAGER_FOR: Duration = Duration::from_millis(250);

#[derive(Default)]
struct ConverterState {
    /// What the texture shows now (the UI says so each frame).
    shown: Shown,
    max_side: usize,
    /// Frames are converted as they come until then.
    eager_until: Option<Instant>,
    /// Converted and not yet taken; a newer conversion replaces it (it covers the same
    /// changes and more, being relative to what the texture shows).
    ready: Option<Converted>,
    /// The UI could not use a conversion (the texture changed size meanwhile): convert
    /// again even if the display did not change.
    redo: bool,
    /// The UI uploads the frames as they are (`native`): only wake it when one comes.
    wake_only: bool,
    /// Converting so far (for the benchmark; a conversion the UI never takes counts too).
    spent: Conversion,
    stop: bool,
}

struct ConverterShared {
    state: Mutex<ConverterState>,
    wake: Condvar,
}

/// The console's frame converter: a thread that converts each new guest frame for the
/// texture as soon as the display has it, so that the UI thread only hands the converted
/// rows to egui (the conversion is as costly as a copy of the frame).
struct Converter {
    shared: Arc<ConverterShared>,
    thread: Option<JoinHandle<()>>,
}

impl Converter {
    fn start(ctx: egui::Context, display: Display) -> Option<Self> {
        let shared = Arc::new(ConverterShared {
            state: Mutex::new(ConverterState::default()),
            wake: Condvar::new(),
        });
        let inner = shared.clone();
        let thread = std::thread::Builder::new()
            .name("vessel-console".into())
            .spawn(move || run_converter(&inner, &display, &ctx))
            .ok()?;
        Some(Converter { shared, thread: Some(thread) })
    }

    /// The texture shows `shown`; frames are wanted for a while more (`redo`: the current
    /// one again; `wake_only`: not converted, the UI only woken when one comes). Returns
    /// what was converted since the last call, if anything.
    fn exchange(
        &self,
        shown: Shown,
        max_side: usize,
        redo: bool,
        wake_only: bool,
    ) -> Option<Converted> {
        let mut state = lock(&self.shared.state);
        state.shown = shown;
        state.max_side = max_side;
        // From waking to converting: the frame shown now was never converted.
        state.redo |= redo || (state.wake_only && !wake_only);
        state.wake_only = wake_only;
        state.eager_until = Some(Instant::now() + EAGER_FOR);
        self.shared.wake.notify_all();
        state.ready.take()
    }

    fn spent(&self) -> Conversion {
        lock(&self.shared.state).spent
    }
}

impl Drop for Converter {
    fn drop(&mut self) {
        lock(&self.shared.state).stop = true;
        self.shared.wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

fn run_converter(shared: &ConverterShared, display: &Display, ctx: &egui::Context) {
    let mut pool = ImagePool::default();
    // The display generation last converted.
    let mut converted = None;
    loop {
        let (shown, max_side, redo, wake_only) = {
            let mut state = lock(&shared.state);
            while !state.stop && state.eager_until.is_none_or(|t| Instant::now() >= t) {
                // Not wanted now: sleep until the console asks again.
                state = shared
                    .wake
                    .wait_timeout(state, EAGER_FOR)
                    .map_or_else(|p| p.into_inner().0, |r| r.0);
            }
            if state.stop {
                return;
            }
            (state.shown, state.max_side, std::mem::take(&mut state.redo), state.wake_only)
        };
        let generation = display.generation();
        if converted == Some(generation) && !redo {
            // Up to date: until the display changes (or a while, to look at the rest).
            display.wait_for_change(generation, Duration::from_millis(50));
            continue;
        }
        if wake_only {
            converted = Some(generation);
            ctx.request_repaint();
            continue;
        }
        let (started, cpu) = (Instant::now(), thread_cpu_time());
        let result = convert(display, shown, max_side, &mut pool);
        converted = Some(match &result {
            Converted::Frame { generation, .. } | Converted::TooLarge { generation, .. } => {
                *generation
            }
            Converted::Nothing => generation,
        });
        let mut state = lock(&shared.state);
        state.spent.wall += started.elapsed();
        state.spent.cpu += thread_cpu_time().saturating_sub(cpu);
        if let Converted::Frame { rows, .. } = &result {
            state.spent.rows += rows;
        }
        state.ready = Some(result);
        drop(state);
        ctx.request_repaint();
    }
}

/// What the converter thread spent converting frames: the time that passed (which counts
/// waiting for a CPU on a busy host), the CPU time it ran, and the rows converted.
#[derive(Clone, Copy, Debug, Default)]
pub struct Conversion {
    pub wall: Duration,
    pub cpu: Duration,
    pub rows: u64,
}

impl std::ops::Add for Conversion {
    type Output = Conversion;
    fn add(self, other: Conversion) -> Conversion {
        Conversion {
            wall: self.wall + other.wall,
            cpu: self.cpu + other.cpu,
            rows: self.rows + other.rows,
        }
    }
}

/// The CPU time the calling thread has run (zero if the clock cannot be read).
pub fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the timespec passed, which lives for the call.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// The texture a guest's screen is drawn into, kept up to date from its `Display`.
#[derive(Default)]
pub struct Screen {
    texture: Option<TextureHandle>,
    /// The renderer's own texture, which takes the guest's pixels as they are, where the
    /// renderer takes their format (`texture` is then None).
    native: Option<NativeTexture>,
    size: [usize; 2],
    generation: u64,
    cursor: Option<(u64, TextureHandle, [f32; 2], Vec2)>,
    /// For conversions on the UI thread (thumbnails).
    pool: ImagePool,
    /// For the console: converting on a thread of its own.
    converter: Option<Converter>,
    /// A conversion did not fit the texture: the converter is to convert all of it.
    redo: bool,
    /// Rows uploaded so far (for the benchmark and tests).
    pub rows_uploaded: u64,
}

impl Screen {
    /// The texture showing the guest's screen, if it shows one.
    pub fn texture_id(&self) -> Option<TextureId> {
        (self.native.as_ref().map(NativeTexture::id)).or(self.texture.as_ref().map(|t| t.id()))
    }

    /// Whether the screen goes into the renderer's texture as it is (no conversion).
    pub fn is_native(&self) -> bool {
        self.native.is_some()
    }

    /// The guest screen's size in pixels (0x0 before it shows anything).
    pub fn size(&self) -> [usize; 2] {
        self.size
    }

    /// What the console's converter thread has spent converting frames.
    pub fn conversion(&self) -> Conversion {
        self.converter.as_ref().map_or(Conversion::default(), Converter::spent)
    }

    fn shown(&self) -> Shown {
        self.texture.as_ref().map(|_| (self.generation, self.size))
    }

    /// Brings the texture up to date with `display`, uploading only what changed. Where
    /// the window's `renderer` takes the frame's format, its rows go into the renderer's
    /// texture as they are (`native`). Else they are converted: when `live` (the console
    /// is shown) on a thread as they come, what was converted since the last frame being
    /// uploaded now; else (a thumbnail) here. True if anything was uploaded.
    pub fn update(
        &mut self,
        ctx: &egui::Context,
        display: &Display,
        live: bool,
        renderer: Option<&mut eframe::Frame>,
    ) -> bool {
        let max_side = ctx.input(|i| i.max_texture_side);
        if let Some(renderer) = renderer
            && let Some(uploaded) = self.update_native(ctx, display, live, max_side, renderer)
        {
            return uploaded;
        }
        // Converted from here on: the renderer's texture, if there was one, goes.
        if self.native.take().is_some() {
            self.generation = 0;
        }
        if live {
            if self.converter.is_none() {
                self.converter = Converter::start(ctx.clone(), display.clone());
            }
            if let Some(converter) = &self.converter {
                let shown = self.shown();
                let redo = std::mem::take(&mut self.redo);
                return match converter.exchange(shown, max_side, redo, false) {
                    Some(converted) => self.apply(ctx, converted),
                    None => false,
                };
            }
        }
        if display.generation() == self.generation && self.texture.is_some() {
            return false;
        }
        let converted = convert(display, self.shown(), max_side, &mut self.pool);
        self.apply(ctx, converted)
    }

    /// `update` into the renderer's own texture: the damaged rows copied from the frame as
    /// they are. None if the renderer does not take this frame as it is (it is then
    /// converted).
    fn update_native(
        &mut self,
        ctx: &egui::Context,
        display: &Display,
        live: bool,
        max_side: usize,
        renderer: &mut eframe::Frame,
    ) -> Option<bool> {
        if !live && self.native.is_some() && display.generation() == self.generation {
            return Some(false);
        }
        let since = if self.native.is_some() { self.generation } else { 0 };
        let native = &mut self.native;
        let outcome = display.read(since, |frame| {
            let (generation, size) =
                (frame.generation, [frame.width as usize, frame.height as usize]);
            if size[0] > max_side || size[1] > max_side {
                return Upload::TooLarge { generation, size };
            }
            if !NativeTexture::takes(&frame) {
                return Upload::Unsupported;
            }
            let fresh = match native {
                Some(texture) if (texture.size(), texture.format()) == (size, frame.format) => {
                    false
                }
                Some(texture) => {
                    if !texture.reshape(size, frame.format) {
                        return Upload::Unsupported;
                    }
                    true
                }
                None => match NativeTexture::new(renderer, size, frame.format) {
                    Some(texture) => {
                        *native = Some(texture);
                        true
                    }
                    None => return Upload::Unsupported,
                },
            };
            let Some(texture) = native.as_mut() else { return Upload::Unsupported };
            // A new texture's contents are undefined until all of it is uploaded.
            let damage = if fresh { Damage::Full } else { frame.damage.clone() };
            let bands = damaged_rows(&damage, size[1]);
            texture.upload(&frame, &bands);
            let rows = bands.iter().map(|(a, b)| (b - a) as u64).sum();
            Upload::Done { generation, size, rows }
        });
        if live && !matches!(outcome, Some(Upload::Unsupported)) {
            // A thread wakes the UI when the guest draws (and converts nothing).
            if self.converter.is_none() {
                self.converter = Converter::start(ctx.clone(), display.clone());
            }
            if let Some(converter) = &self.converter {
                converter.exchange(None, max_side, false, true);
            }
        }
        match outcome {
            Some(Upload::Done { generation, size, rows }) => {
                self.texture = None;
                self.size = size;
                self.generation = generation;
                self.rows_uploaded += rows;
                Some(rows > 0)
            }
            Some(Upload::TooLarge { generation, size }) => {
                (self.native, self.texture) = (None, None);
                self.size = size;
                self.generation = generation;
                Some(false)
            }
            None => {
                // Nothing on screen (no scanout yet, or the guest turned it off).
                self.size = [0, 0];
                let had = self.native.take().is_some() | self.texture.take().is_some();
                Some(had)
            }
            // Converted from now on (`update` lets the renderer's texture go).
            Some(Upload::Unsupported) => None,
        }
    }

    /// Puts what was converted into the texture.
    fn apply(&mut self, ctx: &egui::Context, converted: Converted) -> bool {
        match converted {
            Converted::Nothing => {
                // Nothing on screen (no scanout yet, or the guest turned it off).
                self.size = [0, 0];
                self.texture.take().is_some()
            }
            Converted::TooLarge { generation, size } => {
                self.texture = None;
                self.size = size;
                self.generation = generation;
                false
            }
            Converted::Frame { generation, size, bands, rows } => {
                let whole = bands.len() == 1 && bands[0].1.size == size;
                let fits = self.texture.is_some() && self.size == size;
                if !fits && !whole {
                    // Rows for a texture this one is not (a conversion that raced a change
                    // of size): drawn whole next time.
                    self.generation = 0;
                    self.redo = true;
                    return false;
                }
                for (y, image) in bands {
                    match &mut self.texture {
                        Some(t) if fits => t.set_partial([0, y], image, OPTIONS),
                        _ => self.texture = Some(ctx.load_texture("guest-screen", image, OPTIONS)),
                    }
                }
                self.size = size;
                self.generation = generation;
                self.rows_uploaded += rows;
                rows > 0
            }
        }
    }

    /// The guest's cursor image as a texture, with its size (pixels) and hotspot, if the
    /// guest set one.
    pub fn cursor(
        &mut self,
        ctx: &egui::Context,
        display: &Display,
    ) -> Option<(egui::TextureId, [f32; 2], Vec2)> {
        let cursor = display.cursor();
        let Some(image) = cursor.image else {
            self.cursor = None;
            return None;
        };
        if self.cursor.as_ref().is_none_or(|(g, ..)| *g != cursor.image_generation) {
            let size = [image.width as usize, image.height as usize];
            let texture = ctx.load_texture(
                "guest-cursor",
                ColorImage::from_rgba_unmultiplied(size, &image.rgba),
                TextureOptions::NEAREST,
            );
            let hotspot = Vec2::new(image.hot_x as f32, image.hot_y as f32);
            self.cursor = Some((
                cursor.image_generation,
                texture,
                [image.width as f32, image.height as f32],
                hotspot,
            ));
        }
        self.cursor.as_ref().map(|(_, t, size, hot)| (t.id(), *size, *hot))
    }
}

/// Guest screens shrink smoothly and grow with sharp pixels (a small guest display's text
/// stays crisp); at 1:1 both are exact.
const OPTIONS: TextureOptions = TextureOptions {
    magnification: egui::TextureFilter::Nearest,
    minification: egui::TextureFilter::Linear,
    ..TextureOptions::LINEAR
};

#[cfg(test)]
mod tests {
    use super::*;
    use vmm::display::Rect as DRect;

    #[test]
    fn damage_becomes_merged_row_bands() {
        let r = |y, h| DRect { x: 5, y, width: 10, height: h };
        assert_eq!(damaged_rows(&Damage::None, 100), vec![]);
        assert_eq!(damaged_rows(&Damage::Full, 100), vec![(0, 100)]);
        let damage = Damage::Rects(vec![r(50, 10), r(0, 5), r(55, 10), r(90, 20), r(5, 1)]);
        assert_eq!(damaged_rows(&damage, 100), vec![(0, 6), (50, 65), (90, 100)]);
    }

    #[test]
    fn rows_convert_to_opaque_colours() {
        // Two rows of two pixels, with 4 bytes of padding a row.
        let bytes: Vec<u8> = (0..24).collect();
        let frame = |format| Frame {
            width: 2,
            height: 2,
            stride: 12,
            format,
            pixels: &bytes,
            damage: Damage::Full,
            generation: 1,
        };
        let mut pixels = vec![Color32::RED; 9];
        convert_into(&frame(PixelFormat::Bgrx), (1, 2), &mut pixels);
        assert_eq!(pixels, [Color32::from_rgb(14, 13, 12), Color32::from_rgb(18, 17, 16)]);
        convert_into(&frame(PixelFormat::Xbgr), (0, 2), &mut pixels);
        assert_eq!(pixels[0], Color32::from_rgb(3, 2, 1));
        assert_eq!(pixels[3], Color32::from_rgb(19, 18, 17));
        convert_into(&frame(PixelFormat::Rgba), (0, 1), &mut pixels);
        assert_eq!(pixels, [Color32::from_rgb(0, 1, 2), Color32::from_rgb(4, 5, 6)]);
        // A row long enough for the vector path, at every alignment of the output, gives
        // what the pixel-by-pixel conversion gives.
        let wide: Vec<u8> = (0..=255).cycle().take(4 * 37).collect();
        let words: Vec<u32> = bytemuck::pod_collect_to_vec(&wide);
        let expected: Vec<u32> = words.iter().map(|&v| bgrx_to_rgba(u32::from_le(v))).collect();
        let mut out = [0u32; 40];
        for skip in 0..4 {
            let out = &mut out[skip..skip + 37];
            swizzle(out, &words);
            assert_eq!(out, &expected[..], "output {skip} words in");
        }
        // Both vector paths, whichever this CPU takes.
        #[cfg(target_arch = "x86_64")]
        {
            #[repr(align(16))]
            struct Aligned([u32; 36]);
            let mut out = Aligned([0; 36]);
            swizzle_sse2(&mut out.0, &words[..36]);
            assert_eq!(&out.0[..], &expected[..36], "SSE2");
            if std::arch::is_x86_feature_detected!("ssse3") {
                out.0 = [0; 36];
                // SAFETY: this CPU has SSSE3; `out` is 16-byte aligned, 36 words long.
                unsafe { swizzle_ssse3(&mut out.0, &words[..36]) };
                assert_eq!(&out.0[..], &expected[..36], "SSSE3");
            }
        }
        // Rows that are not word-aligned take the byte path, with the same result.
        let shifted: Vec<u8> = (0..25).collect();
        let unaligned = Frame { pixels: &shifted[1..], ..frame(PixelFormat::Bgrx) };
        convert_into(&unaligned, (0, 1), &mut pixels);
        assert_eq!(pixels, [Color32::from_rgb(3, 2, 1), Color32::from_rgb(7, 6, 5)]);
    }
}
