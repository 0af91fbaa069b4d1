//! The guest's screen as the host sees it. The machine's graphics (virtio-gpu, or before a
//! driver takes over the boot framebuffer or the standard VGA) publish the latest frame, the rectangles that
//! changed, a generation counter and the cursor; the app reads them on its UI thread and
//! uploads only what changed. Nothing here copies a whole frame: the scanout's pixels are
//! shared with the device that draws them (as QEMU's display surfaces are), and a reader
//! that is up to date gets no damage at all. A repaint callback fires whenever something
//! changed, so the UI needs no polling.
//!
//! The host asks for a new size with `request_resize` (the window changed); the device
//! tells the guest (virtio-gpu's display event) and the guest re-modes, like VMware's
//! autofit.

pub mod boot_fb;
pub mod edid;
pub mod pixels;

use std::collections::VecDeque;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use vmm_sys_util::eventfd::EventFd;

use crate::sync::lock;
pub use pixels::{FrameMapping, Pixels, PixelsError};

/// A rectangle in pixels.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Rect {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

impl Rect {
    pub const fn new(x: u32, y: u32, width: u32, height: u32) -> Self {
        Rect { x, y, width, height }
    }

    pub fn is_empty(&self) -> bool {
        self.width == 0 || self.height == 0
    }

    /// Whether the rectangle lies inside a `width` x `height` area (without overflow).
    pub fn fits_in(&self, width: u32, height: u32) -> bool {
        self.x.checked_add(self.width).is_some_and(|r| r <= width)
            && self.y.checked_add(self.height).is_some_and(|b| b <= height)
    }

    /// The part of `self` inside `other`, in `other`'s coordinates.
    pub fn clipped_to(&self, other: &Rect) -> Option<Rect> {
        let x0 = self.x.max(other.x);
        let y0 = self.y.max(other.y);
        let x1 = self.x.saturating_add(self.width).min(other.x.saturating_add(other.width));
        let y1 = self.y.saturating_add(self.height).min(other.y.saturating_add(other.height));
        (x1 > x0 && y1 > y0).then(|| Rect::new(x0 - other.x, y0 - other.y, x1 - x0, y1 - y0))
    }
}

/// How a frame's pixels are laid out in memory, 4 bytes each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PixelFormat {
    /// Bytes B, G, R, X (DRM XRGB8888 on little-endian; what Linux's virtio-gpu and
    /// simple framebuffer use).
    Bgrx,
    /// Bytes B, G, R, A.
    Bgra,
    /// Bytes R, G, B, X.
    Rgbx,
    /// Bytes R, G, B, A.
    Rgba,
    /// Bytes X, R, G, B.
    Xrgb,
    /// Bytes A, R, G, B.
    Argb,
    /// Bytes X, B, G, R.
    Xbgr,
    /// Bytes A, B, G, R.
    Abgr,
}

impl PixelFormat {
    /// Byte offsets of red, green and blue in a pixel.
    pub fn rgb_offsets(self) -> [usize; 3] {
        match self {
            PixelFormat::Bgrx | PixelFormat::Bgra => [2, 1, 0],
            PixelFormat::Rgbx | PixelFormat::Rgba => [0, 1, 2],
            PixelFormat::Xrgb | PixelFormat::Argb => [1, 2, 3],
            PixelFormat::Xbgr | PixelFormat::Abgr => [3, 2, 1],
        }
    }

    /// Converts one pixel to R, G, B, A (A = 255 for formats without alpha).
    pub fn to_rgba(self, px: &[u8]) -> [u8; 4] {
        let [r, g, b] = self.rgb_offsets();
        let a = match self {
            PixelFormat::Bgra | PixelFormat::Rgba => px[3],
            PixelFormat::Argb | PixelFormat::Abgr => px[0],
            _ => 255,
        };
        [px[r], px[g], px[b], a]
    }
}

/// Pixels the device draws into and the display shows: a virtio-gpu resource's host copy.
#[derive(Debug)]
pub struct Image {
    pub width: u32,
    pub height: u32,
    pub format: PixelFormat,
    /// `width * 4` bytes a row, rows top to bottom, in memory another process can map.
    pub pixels: Pixels,
}

impl Image {
    /// A black image; `None` if its size overflows or its memory cannot be had.
    pub fn new(width: u32, height: u32, format: PixelFormat) -> Option<Self> {
        let bytes = (width as usize).checked_mul(height as usize)?.checked_mul(4)?;
        let pixels = Pixels::new(bytes)
            .map_err(|e| {
                let cause = std::error::Error::source(&e).map(|c| c.to_string());
                log::warn!("a {width}x{height} image: {e}: {}", cause.unwrap_or_default());
            })
            .ok()?;
        Some(Image { width, height, format, pixels })
    }

    pub fn stride(&self) -> usize {
        self.width as usize * 4
    }
}

pub type SharedImage = Arc<Mutex<Image>>;

/// What the damage since a reader's last generation is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Damage {
    /// Nothing changed.
    None,
    /// Everything may have changed (a new mode, a new scanout, or the reader is too far
    /// behind for the damage log).
    Full,
    /// Only these rectangles (display coordinates) changed.
    Rects(Vec<Rect>),
}

/// A view of the current frame while `Display::read` holds it.
pub struct Frame<'a> {
    pub width: u32,
    pub height: u32,
    /// Bytes from one row to the next in `pixels`.
    pub stride: usize,
    pub format: PixelFormat,
    /// Starting at the frame's top-left pixel.
    pub pixels: &'a [u8],
    pub damage: Damage,
    pub generation: u64,
}

/// The pointer's shape as the guest set it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CursorImage {
    pub width: u32,
    pub height: u32,
    /// R, G, B, A bytes, `width * 4` a row.
    pub rgba: Vec<u8>,
    pub hot_x: u32,
    pub hot_y: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cursor {
    /// None: the guest hid its cursor (or never set one).
    pub image: Option<Arc<CursorImage>>,
    /// Where the guest put the cursor, in display pixels.
    pub x: i32,
    pub y: i32,
    /// Bumped whenever the image changes (not when it only moves).
    pub image_generation: u64,
}

/// Damage rectangles remembered for readers that are behind.
const DAMAGE_LOG: usize = 64;

/// How a frame lies in its memory: `height` rows of `width` pixels, `stride` bytes apart,
/// the first pixel `offset` bytes in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameLayout {
    pub width: u32,
    pub height: u32,
    pub stride: usize,
    pub offset: usize,
    pub format: PixelFormat,
}

impl FrameLayout {
    /// The bytes a memory must hold for this layout; None if the layout is impossible
    /// (rows overlapping, or sizes that overflow).
    pub fn bytes_needed(&self) -> Option<u64> {
        let row = u64::from(self.width).checked_mul(4)?;
        if (self.stride as u64) < row || self.width == 0 || self.height == 0 {
            return None;
        }
        (self.stride as u64)
            .checked_mul(u64::from(self.height) - 1)?
            .checked_add(row)?
            .checked_add(self.offset as u64)
    }
}

/// What is shown: part of an image a device of this process draws, or another
/// process's frame memory (a mirrored display).
#[derive(Clone)]
enum Shown {
    Image(SharedImage, Rect),
    Mapped(Arc<FrameMapping>, FrameLayout),
}

impl Shown {
    fn size(&self) -> (u32, u32) {
        match self {
            Shown::Image(_, r) => (r.width, r.height),
            Shown::Mapped(_, l) => (l.width, l.height),
        }
    }

    fn same(&self, other: &Shown) -> bool {
        match (self, other) {
            (Shown::Image(a, ra), Shown::Image(b, rb)) => Arc::ptr_eq(a, b) && ra == rb,
            (Shown::Mapped(a, la), Shown::Mapped(b, lb)) => Arc::ptr_eq(a, b) && la == lb,
            _ => false,
        }
    }
}

/// The frame shown as another process can map it (`Display::export`).
pub struct Export {
    /// Changes whenever what is shown does (another image, another part of it).
    pub scanout: u64,
    pub layout: FrameLayout,
    /// The frame's memory (a new descriptor), when `scanout` is not the one the caller knew.
    pub memory: Option<OwnedFd>,
    pub damage: Damage,
    pub generation: u64,
    pub drawn: bool,
}

#[derive(Default)]
struct State {
    generation: u64,
    /// What is shown: a mirrored frame, else the GPU's scanout if it has one, else the boot
    /// framebuffer's.
    scanout: Option<Shown>,
    /// Bumped whenever `scanout` changes.
    scanout_serial: u64,
    /// Bumped at every change of the frame or the cursor (`wait_for_any_change`).
    changes: u64,
    /// The virtio-gpu scanout (an image and the part of it shown).
    gpu: Option<(SharedImage, Rect)>,
    /// The boot framebuffer's copy or the VGA's picture, shown until a GPU driver sets a
    /// scanout.
    boot: Option<(SharedImage, Rect)>,
    /// Another process's frame, on a display that mirrors that process's.
    mirror: Option<(Arc<FrameMapping>, FrameLayout)>,
    /// (generation, rectangle) of recent changes; a generation not covered means Full.
    damage: VecDeque<(u64, Rect)>,
    /// The oldest generation `damage` describes completely.
    damage_since: u64,
    cursor: Cursor,
    requested_size: Option<(u32, u32)>,
    /// The guest has drawn something: a flush into what is shown, or a GPU scanout. A
    /// boot framebuffer that was only put up (black) does not count.
    drawn: bool,
}

struct Shared {
    state: Mutex<State>,
    /// Notified whenever the generation changes (`wait_for_change`).
    changed: Condvar,
    repaint: Mutex<Option<Box<dyn Fn() + Send + Sync>>>,
    /// Signalled when the host asks for a new size (the device's backend fd).
    resize: EventFd,
}

/// The guest's screen. Cheap to clone; readers never block the guest for long (the
/// device holds the frame's lock only while it copies a transfer in).
#[derive(Clone)]
pub struct Display {
    shared: Arc<Shared>,
}

impl Display {
    pub fn new() -> std::io::Result<Self> {
        Ok(Display {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                changed: Condvar::new(),
                repaint: Mutex::new(None),
                resize: EventFd::new(libc::EFD_NONBLOCK)?,
            }),
        })
    }

    /// Called (from a machine thread) whenever the frame or the cursor changed; an egui
    /// app passes `Context::request_repaint`.
    pub fn set_repaint_callback(&self, callback: impl Fn() + Send + Sync + 'static) {
        *lock(&self.shared.repaint) = Some(Box::new(callback));
    }

    /// Waits until the generation is no longer `since` (`timeout` at most); returns it.
    /// For readers on threads of their own (the window's frame converter).
    pub fn wait_for_change(&self, since: u64, timeout: Duration) -> u64 {
        let state = lock(&self.shared.state);
        let (state, _) = self
            .shared
            .changed
            .wait_timeout_while(state, timeout, |s| s.generation == since)
            .unwrap_or_else(|p| p.into_inner());
        state.generation
    }

    fn repaint(&self) {
        lock(&self.shared.state).changes += 1;
        self.shared.changed.notify_all();
        if let Some(callback) = &*lock(&self.shared.repaint) {
            callback();
        }
    }

    /// Waits until the frame or the cursor changed since `since` (a value this returned
    /// before; 0 at first), `timeout` at most; returns the value to pass next time. For
    /// a reader that follows both, as the VM process's display publisher does.
    pub fn wait_for_any_change(&self, since: u64, timeout: Duration) -> u64 {
        let state = lock(&self.shared.state);
        let (state, _) = self
            .shared
            .changed
            .wait_timeout_while(state, timeout, |s| s.changes == since)
            .unwrap_or_else(|p| p.into_inner());
        state.changes
    }

    /// Changes whenever the frame does; a reader compares it with the last it drew.
    pub fn generation(&self) -> u64 {
        lock(&self.shared.state).generation
    }

    /// Whether the guest ever drew anything (since this display was made: across reboots).
    /// A console that stays black with this false shows a guest that never got as far as
    /// drawing, which is worth telling people about.
    pub fn drawn(&self) -> bool {
        lock(&self.shared.state).drawn
    }

    /// The size of the frame shown now, if the guest shows one.
    pub fn size(&self) -> Option<(u32, u32)> {
        lock(&self.shared.state).scanout.as_ref().map(Shown::size)
    }

    /// Lets `f` look at the current frame, with what changed since generation `since`
    /// (0: never read). Returns `f`'s result, or None when the guest shows nothing.
    /// Pixels can be newer than the generation (a device writes them, then publishes the
    /// damage): a reader that draws what it sees will be told about them again.
    pub fn read<R>(&self, since: u64, f: impl FnOnce(Frame<'_>) -> R) -> Option<R> {
        let state = lock(&self.shared.state);
        let damage = Self::damage_since(&state, since);
        match state.scanout.as_ref()? {
            Shown::Image(image, rect) => {
                let image = lock(image);
                let stride = image.stride();
                let start = rect.y as usize * stride + rect.x as usize * 4;
                Some(f(Frame {
                    width: rect.width,
                    height: rect.height,
                    stride,
                    format: image.format,
                    pixels: &image.pixels[start..],
                    damage,
                    generation: state.generation,
                }))
            }
            Shown::Mapped(memory, layout) => Some(f(Frame {
                width: layout.width,
                height: layout.height,
                stride: layout.stride,
                format: layout.format,
                // In bounds: `mirror_scanout` checked the layout against the mapping.
                pixels: &memory.bytes()[layout.offset..],
                damage,
                generation: state.generation,
            })),
        }
    }

    fn damage_since(state: &State, since: u64) -> Damage {
        if since >= state.generation {
            Damage::None
        } else if since < state.damage_since || since == 0 {
            Damage::Full
        } else {
            Damage::Rects(
                state.damage.iter().filter(|(g, _)| *g > since).map(|(_, r)| *r).collect(),
            )
        }
    }

    /// The frame shown, as another process can map it, with the damage since generation
    /// `since`; its memory comes along when the scanout is not `known_scanout` (and the
    /// damage is then Full). None when nothing is shown, or what is shown is itself a
    /// mirror.
    pub fn export(&self, since: u64, known_scanout: u64) -> Option<Export> {
        let state = lock(&self.shared.state);
        let Shown::Image(image, rect) = state.scanout.as_ref()? else { return None };
        let new = state.scanout_serial != known_scanout;
        let image = lock(image);
        let stride = image.stride();
        let memory = if new {
            match image.pixels.memory().try_clone_to_owned() {
                Ok(fd) => Some(fd),
                Err(e) => {
                    log::warn!("cannot share the frame: {e}");
                    return None;
                }
            }
        } else {
            None
        };
        Some(Export {
            scanout: state.scanout_serial,
            layout: FrameLayout {
                width: rect.width,
                height: rect.height,
                stride,
                offset: rect.y as usize * stride + rect.x as usize * 4,
                format: image.format,
            },
            memory,
            damage: if new { Damage::Full } else { Self::damage_since(&state, since) },
            generation: state.generation,
            drawn: state.drawn,
        })
    }

    // --- a mirror's side: a display showing another process's frame ---

    /// Shows `memory` laid out as `layout` (None: nothing). Refused, leaving what is
    /// shown, if the layout does not fit the memory.
    pub fn mirror_scanout(
        &self,
        frame: Option<(Arc<FrameMapping>, FrameLayout)>,
    ) -> Result<(), PixelsError> {
        if let Some((memory, layout)) = &frame {
            let has = memory.bytes().len() as u64;
            let needs = layout.bytes_needed().unwrap_or(u64::MAX);
            if needs > has {
                return Err(PixelsError::TooSmall { has, needs });
            }
        }
        let mut state = lock(&self.shared.state);
        state.mirror = frame;
        self.show(state);
        Ok(())
    }

    /// What changed in the mirrored frame (`Damage::Full`: all of it); `drawn` as the
    /// other process's display says.
    pub fn mirror_damage(&self, damage: &Damage, drawn: bool) {
        let mut state = lock(&self.shared.state);
        state.drawn |= drawn;
        let Some(Shown::Mapped(_, layout)) = &state.scanout else { return };
        let view = Rect::new(0, 0, layout.width, layout.height);
        match damage {
            Damage::None => return,
            Damage::Full => {
                state.generation += 1;
                state.damage.clear();
                state.damage_since = state.generation;
            }
            Damage::Rects(rects) => {
                let clipped: Vec<Rect> = rects.iter().filter_map(|r| r.clipped_to(&view)).collect();
                if clipped.is_empty() {
                    return;
                }
                state.generation += 1;
                let generation = state.generation;
                for rect in clipped {
                    Self::log_damage(&mut state, generation, rect);
                }
            }
        }
        drop(state);
        self.repaint();
    }

    /// The mirrored cursor's shape changed.
    pub fn mirror_cursor_image(&self, image: Option<CursorImage>) {
        self.set_cursor_image(image);
    }

    /// The mirrored cursor moved.
    pub fn mirror_cursor_position(&self, x: i32, y: i32) {
        self.move_cursor(x, y);
    }

    /// The cursor as the guest last set it.
    pub fn cursor(&self) -> Cursor {
        lock(&self.shared.state).cursor.clone()
    }

    /// Asks the guest for a display of `width` x `height` (the window's size). The guest
    /// decides; its driver hears of it through the device's display event.
    pub fn request_resize(&self, width: u32, height: u32) {
        let size = (width.clamp(MIN_SIZE.0, MAX_SIZE.0), height.clamp(MIN_SIZE.1, MAX_SIZE.1));
        lock(&self.shared.state).requested_size = Some(size);
        let _ = self.shared.resize.write(1);
    }

    /// The size the host asked for last, if any.
    pub fn requested_size(&self) -> Option<(u32, u32)> {
        lock(&self.shared.state).requested_size
    }

    // --- the device's side ---

    /// Signalled by `request_resize`.
    pub(crate) fn resize_fd(&self) -> &EventFd {
        &self.shared.resize
    }

    /// The GPU shows `rect` of `image` (a new scanout), or nothing (then the boot
    /// framebuffer, if there is one, shows again).
    pub(crate) fn set_scanout(&self, scanout: Option<(SharedImage, Rect)>) {
        let mut state = lock(&self.shared.state);
        state.drawn |= scanout.is_some();
        state.gpu = scanout;
        self.show(state);
    }

    /// The boot framebuffer's copy or the VGA's picture (shown while the GPU shows
    /// nothing), or none.
    pub(crate) fn set_boot_scanout(&self, scanout: Option<(SharedImage, Rect)>) {
        let mut state = lock(&self.shared.state);
        state.boot = scanout;
        self.show(state);
    }

    /// Whether the boot framebuffer is what is shown.
    pub(crate) fn showing_boot(&self) -> bool {
        let state = lock(&self.shared.state);
        state.gpu.is_none() && state.boot.is_some()
    }

    fn show(&self, mut state: std::sync::MutexGuard<'_, State>) {
        let image = |(image, rect): &(SharedImage, Rect)| Shown::Image(image.clone(), *rect);
        let scanout = state
            .mirror
            .clone()
            .map(|(memory, layout)| Shown::Mapped(memory, layout))
            .or_else(|| state.gpu.as_ref().map(image))
            .or_else(|| state.boot.as_ref().map(image));
        let same = match (&state.scanout, &scanout) {
            (Some(a), Some(b)) => a.same(b),
            (None, None) => true,
            _ => false,
        };
        if same {
            return;
        }
        state.scanout = scanout;
        state.scanout_serial += 1;
        state.generation += 1;
        // A new scanout is all new: readers before it need a full repaint.
        state.damage.clear();
        state.damage_since = state.generation;
        drop(state);
        self.repaint();
    }

    fn log_damage(state: &mut State, generation: u64, rect: Rect) {
        if state.damage.len() == DAMAGE_LOG
            && let Some((oldest, _)) = state.damage.pop_front()
        {
            state.damage_since = oldest;
        }
        state.damage.push_back((generation, rect));
    }

    /// The part `rect` of `image` changed (a flush); if `image` is shown, readers get the
    /// visible part as damage.
    pub(crate) fn flushed(&self, image: &SharedImage, rect: Rect) {
        let mut state = lock(&self.shared.state);
        let Some(Shown::Image(shown, view)) = &state.scanout else { return };
        if !Arc::ptr_eq(shown, image) {
            return;
        }
        let Some(damage) = rect.clipped_to(view) else { return };
        state.drawn = true;
        state.generation += 1;
        let generation = state.generation;
        Self::log_damage(&mut state, generation, damage);
        drop(state);
        self.repaint();
    }

    pub(crate) fn set_cursor_image(&self, image: Option<CursorImage>) {
        let mut state = lock(&self.shared.state);
        state.cursor.image = image.map(Arc::new);
        state.cursor.image_generation += 1;
        drop(state);
        self.repaint();
    }

    pub(crate) fn move_cursor(&self, x: i32, y: i32) {
        let mut state = lock(&self.shared.state);
        if (state.cursor.x, state.cursor.y) == (x, y) {
            return;
        }
        state.cursor.x = x;
        state.cursor.y = y;
        drop(state);
        self.repaint();
    }
}

/// Display sizes the host may ask for.
pub const MIN_SIZE: (u32, u32) = (320, 200);
pub const MAX_SIZE: (u32, u32) = (7680, 4320);

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn image(w: u32, h: u32) -> SharedImage {
        Arc::new(Mutex::new(Image::new(w, h, PixelFormat::Bgrx).unwrap()))
    }

    #[test]
    fn damage_follows_generations() {
        let display = Display::new().unwrap();
        let repaints = Arc::new(AtomicUsize::new(0));
        let counter = repaints.clone();
        display.set_repaint_callback(move || {
            counter.fetch_add(1, Ordering::Relaxed);
        });
        assert!(display.read(0, |_| ()).is_none(), "nothing shown yet");
        let img = image(64, 48);
        display.set_scanout(Some((img.clone(), Rect::new(0, 0, 64, 48))));
        let g1 = display.read(0, |f| {
            assert_eq!((f.width, f.height, f.stride), (64, 48, 256));
            assert_eq!(f.damage, Damage::Full);
            f.generation
        });
        let g1 = g1.unwrap();
        assert_eq!(display.read(g1, |f| f.damage).unwrap(), Damage::None);
        display.flushed(&img, Rect::new(1, 2, 3, 4));
        display.flushed(&img, Rect::new(60, 40, 10, 10)); // clipped to the frame
        display.flushed(&image(64, 48), Rect::new(0, 0, 8, 8)); // not the scanout: ignored
        assert_eq!(
            display.read(g1, |f| f.damage).unwrap(),
            Damage::Rects(vec![Rect::new(1, 2, 3, 4), Rect::new(60, 40, 4, 8)])
        );
        assert_eq!(repaints.load(Ordering::Relaxed), 3);
        // A reader far behind the log gets a full repaint.
        for _ in 0..DAMAGE_LOG + 1 {
            display.flushed(&img, Rect::new(0, 0, 1, 1));
        }
        assert_eq!(display.read(g1, |f| f.damage).unwrap(), Damage::Full);
        let now = display.generation();
        display.flushed(&img, Rect::new(5, 5, 1, 1));
        assert_eq!(
            display.read(now, |f| f.damage).unwrap(),
            Damage::Rects(vec![Rect::new(5, 5, 1, 1)])
        );
    }

    #[test]
    fn a_scanout_of_part_of_an_image() {
        let display = Display::new().unwrap();
        let img = image(100, 100);
        lock(&img).pixels[(10 * 100 + 20) * 4] = 0xab;
        display.set_scanout(Some((img.clone(), Rect::new(20, 10, 50, 40))));
        assert_eq!(display.size(), Some((50, 40)));
        assert_eq!(display.read(0, |f| (f.pixels[0], f.stride)).unwrap(), (0xab, 400));
        let g = display.generation();
        display.flushed(&img, Rect::new(0, 0, 30, 15)); // overlaps the view's top-left
        assert_eq!(
            display.read(g, |f| f.damage).unwrap(),
            Damage::Rects(vec![Rect::new(0, 0, 10, 5)])
        );
        display.set_scanout(None);
        assert_eq!(display.size(), None);
    }

    #[test]
    fn a_mirror_shows_the_exported_frame_from_its_memory() {
        // The VM process's display: a 64x48 scanout of part of a 100x100 image.
        let display = Display::new().unwrap();
        let img = image(100, 100);
        display.set_scanout(Some((img.clone(), Rect::new(20, 10, 64, 48))));
        let export = display.export(0, 0).unwrap();
        assert_eq!(export.damage, Damage::Full);
        assert_eq!((export.layout.width, export.layout.height), (64, 48));
        assert_eq!(export.layout.offset, 10 * 400 + 20 * 4);
        let memory = export.memory.expect("a new scanout brings its memory");
        // Known scanout, nothing new: no memory again, no damage.
        let again = display.export(export.generation, export.scanout).unwrap();
        assert!(again.memory.is_none());
        assert_eq!(again.damage, Damage::None);

        // The window's display maps that memory read-only and mirrors it.
        let needs = export.layout.bytes_needed().unwrap();
        let mirror = Display::new().unwrap();
        let mapping = Arc::new(FrameMapping::map(memory, needs).unwrap());
        mirror.mirror_scanout(Some((mapping.clone(), export.layout))).unwrap();
        mirror.mirror_damage(&Damage::Full, export.drawn);
        assert_eq!(mirror.size(), Some((64, 48)));
        let g = mirror.generation();
        // The device draws a pixel at (1, 2) of the view: the same memory, no copy.
        lock(&img).pixels[(12 * 100 + 21) * 4] = 0x5a;
        display.flushed(&img, Rect::new(21, 12, 1, 1));
        let next = display.export(export.generation, export.scanout).unwrap();
        assert_eq!(next.damage, Damage::Rects(vec![Rect::new(1, 2, 1, 1)]));
        assert!(next.drawn);
        mirror.mirror_damage(&next.damage, next.drawn);
        mirror
            .read(g, |f| {
                assert_eq!(f.damage, Damage::Rects(vec![Rect::new(1, 2, 1, 1)]));
                assert_eq!(f.pixels[2 * f.stride + 4], 0x5a);
            })
            .unwrap();
        assert!(mirror.drawn());
        // A layout the memory cannot hold is refused; damage outside the view is clipped.
        let too_big = FrameLayout { height: 1000, ..export.layout };
        assert!(mirror.mirror_scanout(Some((mapping, too_big))).is_err());
        assert_eq!(mirror.size(), Some((64, 48)), "what was shown stays");
        let g = mirror.generation();
        mirror.mirror_damage(&Damage::Rects(vec![Rect::new(60, 40, 100, 100)]), true);
        assert_eq!(
            mirror.read(g, |f| f.damage).unwrap(),
            Damage::Rects(vec![Rect::new(60, 40, 4, 8)])
        );
        // Nothing shown: nothing to export.
        display.set_scanout(None);
        assert!(display.export(0, 0).is_none());
    }

    #[test]
    fn readers_can_wait_for_a_change() {
        let display = Display::new().unwrap();
        let g = display.generation();
        assert_eq!(display.wait_for_change(g, Duration::from_millis(10)), g, "timed out");
        let other = display.clone();
        let img = image(8, 8);
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            other.set_scanout(Some((img, Rect::new(0, 0, 8, 8))));
        });
        assert!(display.wait_for_change(g, Duration::from_secs(10)) > g);
        writer.join().unwrap();
    }

    #[test]
    fn resize_requests_are_clamped_and_signalled() {
        let display = Display::new().unwrap();
        display.request_resize(1, 100_000);
        assert_eq!(display.requested_size(), Some((MIN_SIZE.0, MAX_SIZE.1)));
        assert_eq!(display.resize_fd().read().unwrap(), 1);
    }

    #[test]
    fn rect_helpers() {
        assert!(Rect::new(0, 0, 10, 10).fits_in(10, 10));
        assert!(!Rect::new(1, 0, 10, 10).fits_in(10, 10));
        assert!(!Rect::new(u32::MAX, 0, 2, 1).fits_in(u32::MAX, 1));
        assert_eq!(Rect::new(0, 0, 5, 5).clipped_to(&Rect::new(5, 5, 5, 5)), None);
        assert_eq!(PixelFormat::Bgrx.to_rgba(&[1, 2, 3, 4]), [3, 2, 1, 255]);
        assert_eq!(PixelFormat::Abgr.to_rgba(&[9, 1, 2, 3]), [3, 2, 1, 9]);
    }
}
