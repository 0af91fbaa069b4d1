//! The console: the guest's screen drawn from `vmm::Display` into one long-lived texture
//! (only damaged rows are uploaded), placed with its aspect kept, and the keyboard and
//! pointer translated for the guest's `InputSink`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use egui::{Color32, ColorImage, Modifiers, Pos2, Rect, TextureHandle, TextureOptions, Vec2};
use vmm::display::{Damage, Frame, PixelFormat};
use vmm::input::evdev::{KEY_C, KEY_LEFTALT, KEY_LEFTCTRL, KEY_LEFTSHIFT, KEY_V, KEY_X};
use vmm::{Display, InputSink};

/// How the guest's screen is fitted into the console area.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Scale {
    /// As large as fits, aspect kept.
    #[default]
    Fit,
    /// One guest pixel on one screen pixel (whatever the UI scale).
    Actual,
}

/// Where the guest's `guest` (width, height in pixels) screen goes in `area` (points).
pub fn place(area: Rect, guest: [usize; 2], scale: Scale, pixels_per_point: f32) -> Rect {
    let size = Vec2::new(guest[0].max(1) as f32, guest[1].max(1) as f32);
    let shown = match scale {
        Scale::Fit => size * (area.width() / size.x).min(area.height() / size.y),
        Scale::Actual => size / pixels_per_point,
    };
    Rect::from_center_size(area.center(), shown)
}

/// Actual Size on a screen larger than `area`: the screen scrolled by `pan` (points from
/// its top-left, kept within what overflows; centred on an axis that fits).
pub fn place_panned(area: Rect, guest: [usize; 2], pixels_per_point: f32, pan: &mut Vec2) -> Rect {
    let centred = place(area, guest, Scale::Actual, pixels_per_point);
    let overflow = (centred.size() - area.size()).max(Vec2::ZERO);
    *pan = pan.clamp(Vec2::ZERO, overflow);
    let min = egui::pos2(
        if overflow.x > 0.0 { area.min.x - pan.x } else { centred.min.x },
        if overflow.y > 0.0 { area.min.y - pan.y } else { centred.min.y },
    );
    Rect::from_min_size(min, centred.size())
}

/// Which way to scroll a screen larger than `area` when the pointer is at `pointer`: the
/// pointer within `margin` of an edge scrolls towards it (as VMware's console does).
pub fn edge_scroll(pointer: Pos2, area: Rect, margin: f32) -> Vec2 {
    let axis = |p: f32, lo: f32, hi: f32| {
        if p < lo + margin {
            -1.0
        } else if p > hi - margin {
            1.0
        } else {
            0.0
        }
    };
    Vec2::new(axis(pointer.x, area.min.x, area.max.x), axis(pointer.y, area.min.y, area.max.y))
}

/// The guest pixel under `pos` on a screen drawn in `rect`.
pub fn to_guest(pos: Pos2, rect: Rect, guest: [usize; 2]) -> (f64, f64) {
    let x = f64::from((pos.x - rect.min.x) / rect.width()) * guest[0] as f64;
    let y = f64::from((pos.y - rect.min.y) / rect.height()) * guest[1] as f64;
    (
        x.clamp(0.0, guest[0].saturating_sub(1) as f64),
        y.clamp(0.0, guest[1].saturating_sub(1) as f64),
    )
}

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
/// reused: a fresh 8 MiB buffer a frame costs more in page faults than the conversion).
fn convert_into(frame: &Frame<'_>, rows: (usize, usize), pixels: &mut Vec<Color32>) {
    let width = frame.width as usize;
    let [r, g, b] = frame.format.rgb_offsets();
    pixels.clear();
    pixels.reserve(width * (rows.1 - rows.0));
    for y in rows.0..rows.1 {
        let row = &frame.pixels[y * frame.stride..][..width * 4];
        match frame.format {
            // The common case (Linux's XRGB8888), kept branch-free for the compiler.
            PixelFormat::Bgrx | PixelFormat::Bgra => {
                pixels.extend(row.chunks_exact(4).map(|p| Color32::from_rgb(p[2], p[1], p[0])))
            }
            _ => pixels.extend(row.chunks_exact(4).map(|p| Color32::from_rgb(p[r], p[g], p[b]))),
        }
    }
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

/// The texture a guest's screen is drawn into, kept up to date from its `Display`.
#[derive(Default)]
pub struct Screen {
    texture: Option<TextureHandle>,
    size: [usize; 2],
    generation: u64,
    last_upload: Option<Instant>,
    cursor: Option<(u64, TextureHandle, [f32; 2], Vec2)>,
    pool: ImagePool,
    /// Rows uploaded so far (for the benchmark and tests).
    pub rows_uploaded: u64,
}

impl Screen {
    pub fn texture(&self) -> Option<&TextureHandle> {
        self.texture.as_ref()
    }

    /// The guest screen's size in pixels (0x0 before it shows anything).
    pub fn size(&self) -> [usize; 2] {
        self.size
    }

    /// Brings the texture up to date with `display`, uploading only what changed; but not
    /// more often than every `min_interval` (thumbnails need no 60 Hz). True if anything
    /// was uploaded.
    pub fn update(
        &mut self,
        ctx: &egui::Context,
        display: &Display,
        min_interval: Duration,
    ) -> bool {
        if self.last_upload.is_some_and(|t| t.elapsed() < min_interval)
            || display.generation() == self.generation && self.texture.is_some()
        {
            return false;
        }
        let texture = &mut self.texture;
        let size = &mut self.size;
        let pool = &mut self.pool;
        let max_side = ctx.input(|i| i.max_texture_side);
        let result = display.read(self.generation, |frame| {
            let frame_size = [frame.width as usize, frame.height as usize];
            if frame_size[0] > max_side || frame_size[1] > max_side {
                // More than this GPU holds as one texture: shown as nothing (and said so).
                *texture = None;
                *size = frame_size;
                return (frame.generation, 0);
            }
            let damage = if texture.is_none() || *size != frame_size {
                Damage::Full
            } else {
                frame.damage.clone()
            };
            let bands = damaged_rows(&damage, frame_size[1]);
            let mut rows = 0;
            for band in &bands {
                let image = pool.image(&frame, *band);
                rows += (band.1 - band.0) as u64;
                match texture {
                    Some(t) if *size == frame_size => t.set_partial([0, band.0], image, OPTIONS),
                    _ => *texture = Some(ctx.load_texture("guest-screen", image, OPTIONS)),
                }
            }
            *size = frame_size;
            (frame.generation, rows)
        });
        let Some((generation, rows)) = result else {
            // Nothing on screen (no scanout yet, or the guest turned it off).
            let had = self.texture.take().is_some();
            self.size = [0, 0];
            return had;
        };
        self.generation = generation;
        self.rows_uploaded += rows;
        self.last_upload = Some(Instant::now());
        rows > 0
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

/// Turns egui's keyboard events into guest key presses while the console has the keyboard.
/// egui reports modifiers only as state, so their changes become presses and releases of
/// the left Ctrl, Shift and Alt keys; the clipboard shortcuts egui turns into Copy, Cut and
/// Paste become the C, X and V keys they were.
#[derive(Default)]
pub struct KeyTranslator {
    modifiers: Modifiers,
}

impl KeyTranslator {
    pub fn with_modifiers(modifiers: Modifiers) -> Self {
        KeyTranslator { modifiers }
    }

    /// The modifiers as the guest knows them.
    pub fn modifiers(&self) -> Modifiers {
        self.modifiers
    }

    /// Takes the keyboard events out of `events` and returns them as (evdev code, down),
    /// in order. Modifier changes are left in for egui too, so its idea of the modifiers
    /// stays right for when the console gives the keyboard back.
    pub fn translate(&mut self, events: &mut Vec<egui::Event>) -> Vec<(u16, bool)> {
        let mut keys = Vec::new();
        events.retain(|event| match event {
            egui::Event::ModifiersChanged(now) => {
                self.modifiers_to(*now, &mut keys);
                true
            }
            egui::Event::Key { key, physical_key, pressed, repeat, modifiers, .. } => {
                self.modifiers_to(*modifiers, &mut keys);
                if !*repeat
                    && let Some(code) = crate::keymap::evdev_from_egui(physical_key.unwrap_or(*key))
                {
                    keys.push((code, *pressed));
                }
                false
            }
            // egui-winit makes these of Ctrl held with C, X or V.
            egui::Event::Copy
            | egui::Event::Cut
            | egui::Event::Paste(_)
            | egui::Event::PasteImage(_) => {
                self.modifiers_to(
                    Modifiers { ctrl: true, command: true, ..self.modifiers },
                    &mut keys,
                );
                let code = match event {
                    egui::Event::Copy => KEY_C,
                    egui::Event::Cut => KEY_X,
                    _ => KEY_V,
                };
                keys.push((code, true));
                false
            }
            egui::Event::Text(_) | egui::Event::Ime(_) => false,
            _ => true,
        });
        keys
    }

    fn modifiers_to(&mut self, now: Modifiers, keys: &mut Vec<(u16, bool)>) {
        for (was, is, code) in [
            (self.modifiers.ctrl, now.ctrl, KEY_LEFTCTRL),
            (self.modifiers.shift, now.shift, KEY_LEFTSHIFT),
            (self.modifiers.alt, now.alt, KEY_LEFTALT),
        ] {
            if was != is {
                keys.push((code, is));
            }
        }
        self.modifiers = now;
    }

    /// Forgets the modifiers (after the keyboard left the console, every key is up).
    pub fn reset(&mut self) {
        self.modifiers = Modifiers::NONE;
    }
}

/// Sends keys to the guest.
pub fn send_keys(input: &InputSink, keys: &[(u16, bool)]) {
    for &(code, down) in keys {
        input.key(code, down);
    }
}

/// Wheel motion in points (or lines, or pages) to whole notches, keeping the remainder.
#[derive(Default)]
pub struct WheelAccumulator {
    rest: Vec2,
}

impl WheelAccumulator {
    /// A notch is a line, or 40 points of smooth scrolling.
    pub fn add(&mut self, unit: egui::MouseWheelUnit, delta: Vec2) -> (i32, i32) {
        let lines = match unit {
            egui::MouseWheelUnit::Point => delta / 40.0,
            egui::MouseWheelUnit::Line => delta,
            egui::MouseWheelUnit::Page => delta * 3.0,
        };
        self.rest += lines;
        let notches = Vec2::new(self.rest.x.trunc(), self.rest.y.trunc());
        self.rest -= notches;
        (notches.x as i32, notches.y as i32)
    }
}

/// A key event as egui-winit reports a physical key (for tests).
#[cfg(test)]
pub fn key(key: egui::Key, pressed: bool, modifiers: Modifiers) -> egui::Event {
    egui::Event::Key { key, physical_key: Some(key), pressed, repeat: false, modifiers }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmm::display::Rect as DRect;
    use vmm::input::evdev::*;

    #[test]
    fn fit_keeps_the_aspect_and_actual_size_follows_the_pixel_ratio() {
        let area = Rect::from_min_size(Pos2::new(0.0, 20.0), Vec2::new(1000.0, 500.0));
        let fit = place(area, [1024, 768], Scale::Fit, 1.0);
        assert!((fit.width() / fit.height() - 1024.0 / 768.0).abs() < 1e-4);
        assert_eq!(fit.height(), 500.0);
        assert_eq!(fit.center(), area.center());
        // HiDPI (2x) and fractional (1.25x) scaling: one guest pixel, one screen pixel.
        assert_eq!(place(area, [1024, 768], Scale::Actual, 2.0).size(), Vec2::new(512.0, 384.0));
        assert_eq!(place(area, [1000, 500], Scale::Actual, 1.25).size(), Vec2::new(800.0, 400.0));
    }

    #[test]
    fn a_large_screen_at_actual_size_scrolls_within_its_overflow() {
        let area = Rect::from_min_size(Pos2::new(100.0, 50.0), Vec2::new(800.0, 600.0));
        // 1920x1080 at 1 pixel per point: 1120 x 480 points overflow.
        let mut pan = Vec2::new(5000.0, -10.0);
        let rect = place_panned(area, [1920, 1080], 1.0, &mut pan);
        assert_eq!(pan, Vec2::new(1120.0, 0.0), "clamped");
        assert_eq!(rect.max.x, area.max.x, "scrolled to the right edge");
        assert_eq!(rect.min.y, area.min.y);
        // An axis that fits stays centred: 1000x500 at 2 pixels per point is 500x250.
        let mut pan = Vec2::new(30.0, 30.0);
        let rect = place_panned(area, [1000, 500], 2.0, &mut pan);
        assert_eq!(pan, Vec2::ZERO);
        assert_eq!(rect.center(), area.center());
        assert_eq!(edge_scroll(Pos2::new(895.0, 300.0), area, 24.0), Vec2::new(1.0, 0.0));
        assert_eq!(edge_scroll(Pos2::new(110.0, 60.0), area, 24.0), Vec2::new(-1.0, -1.0));
        assert_eq!(edge_scroll(area.center(), area, 24.0), Vec2::ZERO);
    }

    #[test]
    fn pointer_positions_map_to_guest_pixels() {
        let rect = Rect::from_min_size(Pos2::new(100.0, 50.0), Vec2::new(512.0, 384.0));
        assert_eq!(to_guest(Pos2::new(100.0, 50.0), rect, [1024, 768]), (0.0, 0.0));
        assert_eq!(to_guest(Pos2::new(356.0, 242.0), rect, [1024, 768]), (512.0, 384.0));
        // Outside: clamped to the screen's edge.
        assert_eq!(to_guest(Pos2::new(1000.0, 0.0), rect, [1024, 768]), (1023.0, 0.0));
    }

    #[test]
    fn damage_becomes_merged_row_bands() {
        let r = |y, h| DRect { x: 5, y, width: 10, height: h };
        assert_eq!(damaged_rows(&Damage::None, 100), vec![]);
        assert_eq!(damaged_rows(&Damage::Full, 100), vec![(0, 100)]);
        let damage = Damage::Rects(vec![r(50, 10), r(0, 5), r(55, 10), r(90, 20), r(5, 1)]);
        assert_eq!(damaged_rows(&damage, 100), vec![(0, 6), (50, 65), (90, 100)]);
    }

    #[test]
    fn keys_modifiers_and_clipboard_shortcuts_become_guest_keys() {
        let mut t = KeyTranslator::default();
        let mut events = vec![
            egui::Event::PointerGone,
            key(egui::Key::A, true, Modifiers::NONE),
            egui::Event::Text("a".into()),
            key(egui::Key::A, false, Modifiers::NONE),
            // Ctrl+C arrives as Copy, then the key's release.
            egui::Event::Copy,
            key(egui::Key::C, false, Modifiers::CTRL),
            egui::Event::ModifiersChanged(Modifiers::NONE),
        ];
        let keys = t.translate(&mut events);
        assert_eq!(
            keys,
            vec![
                (KEY_A, true),
                (KEY_A, false),
                (KEY_LEFTCTRL, true),
                (KEY_C, true),
                (KEY_C, false),
                (KEY_LEFTCTRL, false)
            ]
        );
        assert_eq!(
            events,
            vec![egui::Event::PointerGone, egui::Event::ModifiersChanged(Modifiers::NONE)],
            "only pointer and modifier events are left"
        );
        // A modifier alone (no key event) still reaches the guest, and egui still hears of it.
        let mut events = vec![egui::Event::ModifiersChanged(Modifiers::ALT)];
        assert_eq!(t.translate(&mut events), vec![(KEY_LEFTALT, true)]);
        assert_eq!(events.len(), 1);
        let mut events = vec![egui::Event::ModifiersChanged(Modifiers::NONE)];
        assert_eq!(t.translate(&mut events), vec![(KEY_LEFTALT, false)]);
    }

    #[test]
    fn wheel_deltas_become_whole_notches() {
        let mut w = WheelAccumulator::default();
        assert_eq!(w.add(egui::MouseWheelUnit::Line, Vec2::new(0.0, 1.0)), (0, 1));
        assert_eq!(w.add(egui::MouseWheelUnit::Point, Vec2::new(0.0, -30.0)), (0, 0));
        assert_eq!(w.add(egui::MouseWheelUnit::Point, Vec2::new(0.0, -30.0)), (0, -1));
    }
}
