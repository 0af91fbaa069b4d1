//! What the VGA shows, drawn into a `display::Image` (B, G, R, X): text modes from the
//! character and attribute planes with the font in plane 2, the planar 16-colour and CGA
//! modes, 256 colours (chain-4 and DISPI 8 bpp), and DISPI's 15/16/24/32-bit linear modes.
//! The CRTC decides the geometry as a monitor would see it (mode 13h is 640x400, its
//! pixels and lines doubled), as QEMU's `-vga std` shows it.
//!
//! Only what changed is drawn: a scanline is redrawn when a page it reads was written
//! (the window's writes, or KVM's dirty log of the linear framebuffer), a text cell when
//! its character, attribute, cursor or blink phase changed; anything else that changes
//! the picture (mode, palette, font, start address) redraws it all.

use std::sync::{Arc, Mutex};

use super::regs::*;
use super::vram::{DirtyPages, Vram};
use crate::display::{Image, PixelFormat, Rect, SharedImage};
use crate::sync::lock;

/// The largest picture drawn (a DISPI mode is at most 2560x1600; CRTC timings at most
/// 4096 pixels wide); anything larger shows as blank.
const MAX_WIDTH: u32 = 4096;
const MAX_HEIGHT: u32 = 2048;
/// The most text cells a screen has (QEMU's bound: 160x100).
const MAX_CELLS: u32 = 160 * 100;

/// How one scanline's pixels come from memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Line {
    /// CGA 4-colour (shift register mode 1), optionally pixels doubled.
    Cga2 {
        double: bool,
    },
    /// 16 colours from 4 planes, optionally pixels doubled.
    Planar4 {
        double: bool,
    },
    /// 256 colours, each pixel drawn twice (the VGA's own mode 13h).
    Packed8Double,
    Packed8,
    Rgb15,
    Rgb16,
    Rgb24,
    Rgb32,
    /// 32 bits, X, R, G, B in memory (the framebuffer's byte order set to big-endian).
    Rgb32Big,
}

impl Line {
    /// Bits of memory a source pixel takes (what QEMU counts to find a line's bytes).
    fn bits(self) -> u32 {
        match self {
            Line::Cga2 { .. } | Line::Planar4 { .. } | Line::Packed8Double => 4,
            Line::Packed8 => 8,
            Line::Rgb15 | Line::Rgb16 => 16,
            Line::Rgb24 => 24,
            Line::Rgb32 | Line::Rgb32Big => 32,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Text {
    cols: u32,
    rows: u32,
    /// Pixels a character cell is wide (8, 9 or 16) and high.
    cw: u32,
    ch: u32,
    /// Byte offsets in video memory of character maps B and A (attribute bit 3 picks).
    fonts: [usize; 2],
    /// Whether the 9th column repeats the 8th for line-drawing characters.
    line_graphics: bool,
    /// Attribute bit 7 blinks the character instead of brightening the background.
    blink: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Graphics {
    /// Source pixels a line (before doubling) and lines.
    width: u32,
    height: u32,
    /// Pixels a line on screen.
    disp_width: u32,
    line: Line,
    /// Each memory line is shown this many times more.
    multi_scan: u32,
    /// CRTC mode control (CGA/Hercules address line substitution).
    crtc_mode: u8,
    /// The planes the attribute controller lets through (color plane enable).
    planes: u8,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Layout {
    Blank,
    Text(Text),
    Graphics(Graphics),
}

/// Everything that, when it changes, changes the whole picture.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Key {
    layout: Layout,
    start: u32,
    line_offset: u32,
    line_compare: u32,
    palette: Vec<u32>,
}

/// A 6-bit DAC value as 8 bits (the top bits repeated, so 63 is 255).
fn c6_to_8(v: u8) -> u32 {
    let v = u32::from(v & 0x3f);
    (v << 2) | (v >> 4)
}

fn rgb(r: u32, g: u32, b: u32) -> u32 {
    (r << 16) | (g << 8) | b
}

/// The DAC's 256 colours as 0x00RRGGBB, through the pixel mask.
fn palette256(regs: &Registers) -> Vec<u32> {
    (0..256)
        .map(|i| {
            let i = usize::from(i as u8 & regs.pel_mask) * 3;
            let p = &regs.palette[i..i + 3];
            if regs.dac_8bit() {
                rgb(p[0].into(), p[1].into(), p[2].into())
            } else {
                rgb(c6_to_8(p[0]), c6_to_8(p[1]), c6_to_8(p[2]))
            }
        })
        .collect()
}

/// The 16 colours of the attribute controller's palette, through the DAC.
fn palette16(regs: &Registers, dac: &[u32]) -> Vec<u32> {
    let select = regs.ac[AC_COLOR_SELECT];
    (0..16)
        .map(|i| {
            let v = regs.ac[i];
            let index = if regs.ac[AC_MODE] & 0x80 != 0 {
                ((select & 0xf) << 4) | (v & 0xf)
            } else {
                ((select & 0xc) << 4) | (v & 0x3f)
            };
            dac[usize::from(index)]
        })
        .collect()
}

fn layout(regs: &Registers) -> Layout {
    if regs.ac_index & AC_PAS == 0 {
        return Layout::Blank;
    }
    let c = &regs.crtc;
    if regs.gc[GC_MISC] & 1 == 0 {
        let ch = u32::from(c[CRTC_MAX_SCAN] & 0x1f) + 1;
        let cw = match regs.seq[SEQ_CLOCK] {
            s if s & 0x08 != 0 => 16,
            s if s & 0x01 != 0 => 8,
            _ => 9,
        };
        let cols = u32::from(c[CRTC_H_DISP_END]) + 1;
        let rows = (regs.vertical_display_end() + 1) / ch;
        if cols * rows <= 1 || cols * rows > MAX_CELLS {
            return Layout::Blank;
        }
        let map = regs.seq[SEQ_CHAR_MAP];
        let b = usize::from(((map >> 4) & 1) | ((map << 1) & 6));
        let a = usize::from(((map >> 5) & 1) | ((map >> 1) & 6));
        return Layout::Text(Text {
            cols,
            rows,
            cw,
            ch,
            fonts: [b * 8192 * 4 + 2, a * 8192 * 4 + 2],
            line_graphics: regs.ac[AC_MODE] & 0x04 != 0,
            blink: regs.ac[AC_MODE] & 0x08 != 0,
        });
    }
    let (width, height) = if regs.dispi_enabled() {
        (u32::from(regs.dispi[DISPI_XRES]), u32::from(regs.dispi[DISPI_YRES]))
    } else {
        ((u32::from(c[CRTC_H_DISP_END]) + 1) * 8, regs.vertical_display_end() + 1)
    };
    let shift = (regs.gc[GC_MODE] >> 5) & 3;
    let double_scan = u32::from(c[CRTC_MAX_SCAN] >> 7);
    let multi_scan = if shift == 1 {
        double_scan
    } else {
        ((u32::from(c[CRTC_MAX_SCAN] & 0x1f) + 1) << double_scan) - 1
    };
    let half_clock = regs.seq[SEQ_CLOCK] & 0x08 != 0;
    let (line, disp_width) = match shift {
        0 => (Line::Planar4 { double: half_clock }, width << u32::from(half_clock)),
        1 => (Line::Cga2 { double: half_clock }, width << u32::from(half_clock)),
        _ => {
            let bpp = if regs.dispi_enabled() { regs.dispi[DISPI_BPP] } else { 0 };
            let line = match bpp {
                8 => Line::Packed8,
                15 => Line::Rgb15,
                16 => Line::Rgb16,
                24 => Line::Rgb24,
                32 if regs.big_endian => Line::Rgb32Big,
                32 => Line::Rgb32,
                _ => Line::Packed8Double,
            };
            (line, width)
        }
    };
    if width == 0 || height == 0 || disp_width > MAX_WIDTH || height > MAX_HEIGHT {
        return Layout::Blank;
    }
    Layout::Graphics(Graphics {
        width,
        height,
        disp_width,
        line,
        multi_scan,
        crtc_mode: c[CRTC_MODE],
        planes: regs.ac[AC_PLANE_ENABLE] & 0x0f,
    })
}

/// Start address and line length in bytes of video memory, and the line compare.
fn offsets(regs: &Registers) -> (u32, u32, u32) {
    if regs.dispi_enabled() {
        return (regs.vbe_start_addr.wrapping_mul(4), regs.vbe_line_offset, u32::MAX);
    }
    let c = &regs.crtc;
    let start = (u32::from(c[CRTC_START_HI]) << 8) | u32::from(c[CRTC_START_LO]);
    let line_compare = u32::from(c[CRTC_LINE_COMPARE])
        | (u32::from(c[CRTC_OVERFLOW] & 0x10) << 4)
        | (u32::from(c[CRTC_MAX_SCAN] & 0x40) << 3);
    (start * 4, u32::from(c[CRTC_OFFSET]) << 3, line_compare)
}

/// Time-driven state the picture depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Phase {
    /// The text cursor is lit.
    pub cursor: bool,
    /// Blinking characters are shown.
    pub blink: bool,
}

/// What the VGA's state looks like now.
pub struct Input<'a> {
    pub regs: &'a Registers,
    pub vram: &'a Vram,
    /// Pages written since the last frame.
    pub dirty: &'a DirtyPages,
    /// Plane 2 (the font) was written since the last frame.
    pub font: bool,
    pub phase: Phase,
}

/// What a frame brought.
#[derive(Debug)]
pub enum Output {
    /// Nothing to show (blank before the first mode set).
    Nothing,
    /// A new picture (a new size); all of it is new.
    New(SharedImage),
    /// These parts of the current picture changed.
    Damage(Vec<Rect>),
}

impl PartialEq for Output {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Output::Nothing, Output::Nothing) => true,
            (Output::New(a), Output::New(b)) => Arc::ptr_eq(a, b),
            (Output::Damage(a), Output::Damage(b)) => a == b,
            _ => false,
        }
    }
}

#[derive(Default)]
pub struct Renderer {
    image: Option<SharedImage>,
    key: Option<Key>,
    /// Per text cell: character | attribute << 8 | what else it was drawn with.
    cells: Vec<u32>,
    /// A scanline drawn before it is compared with the picture's.
    row: Vec<u8>,
}

const CELL_CURSOR: u32 = 1 << 16;
const CELL_HIDDEN: u32 = 1 << 17;
const CELL_STALE: u32 = u32::MAX;

impl Renderer {
    /// Forces the next frame to draw everything (the picture was not shown for a while).
    pub fn invalidate(&mut self) {
        self.key = None;
    }

    pub fn render(&mut self, input: &Input<'_>) -> Output {
        let regs = input.regs;
        let layout = layout(regs);
        let (width, height) = match &layout {
            Layout::Blank => match &self.image {
                Some(image) => {
                    let image = lock(image);
                    (image.width, image.height)
                }
                None => return Output::Nothing,
            },
            Layout::Text(t) => (t.cols * t.cw, t.rows * t.ch),
            Layout::Graphics(g) => (g.disp_width, g.height),
        };
        let dac = palette256(regs);
        let palette = match &layout {
            Layout::Graphics(Graphics { line: Line::Packed8 | Line::Packed8Double, .. }) => dac,
            Layout::Graphics(Graphics { line: Line::Rgb15 | Line::Rgb16, .. })
            | Layout::Graphics(Graphics { line: Line::Rgb24 | Line::Rgb32, .. })
            | Layout::Blank => Vec::new(),
            _ => palette16(regs, &dac),
        };
        let (start, line_offset, line_compare) = offsets(regs);
        let key = Key { layout, start, line_offset, line_compare, palette };
        let mut new = None;
        let resized = self.image.as_ref().is_none_or(|image| {
            let image = lock(image);
            (image.width, image.height) != (width, height)
        });
        if resized {
            let Some(image) = Image::new(width, height, PixelFormat::Bgrx) else {
                return Output::Nothing;
            };
            let image = Arc::new(Mutex::new(image));
            self.image = Some(image.clone());
            self.key = None;
            new = Some(image);
        }
        let full = self.key.as_ref() != Some(&key)
            || (input.font && matches!(key.layout, Layout::Text(_)));
        let image = self.image.clone().expect("made above");
        let mut image = lock(&image);
        let damage = match &key.layout {
            Layout::Blank => {
                if full {
                    image.pixels.fill(0);
                    vec![Rect::new(0, 0, width, height)]
                } else {
                    Vec::new()
                }
            }
            Layout::Text(t) => self.text(&mut image, t, &key, input, full),
            Layout::Graphics(g) => self.graphics(&mut image, g, &key, input, full),
        };
        drop(image);
        self.key = Some(key);
        match new {
            Some(image) => Output::New(image),
            None => Output::Damage(damage),
        }
    }

    fn text(
        &mut self,
        image: &mut Image,
        t: &Text,
        key: &Key,
        input: &Input<'_>,
        full: bool,
    ) -> Vec<Rect> {
        let (regs, vram) = (input.regs, input.vram);
        let cells = (t.cols * t.rows) as usize;
        if full || self.cells.len() != cells {
            self.cells.clear();
            self.cells.resize(cells, CELL_STALE);
        }
        let c = &regs.crtc;
        let cursor_at = (u32::from(c[CRTC_CURSOR_HI]) << 8) | u32::from(c[CRTC_CURSOR_LO]);
        let cursor_on = c[CRTC_CURSOR_START] & 0x20 == 0 && input.phase.cursor;
        let cursor_first = u32::from(c[CRTC_CURSOR_START] & 0x1f);
        let cursor_last = u32::from(c[CRTC_CURSOR_END] & 0x1f).min(t.ch - 1);
        let stride = image.stride();
        let mut damage = Vec::new();
        let mut offset = key.start;
        let mut line = 0;
        let mut glyph = [0u8; 32 * 4];
        for cy in 0..t.rows {
            let mut changed: Option<(u32, u32)> = None;
            for cx in 0..t.cols {
                let at = offset.wrapping_add(cx * 4) as usize;
                let chr = vram.read_byte(at);
                let attr = vram.read_byte(at + 1);
                let cursor = cursor_on && (at / 4) as u32 == cursor_at;
                let hidden = t.blink && attr & 0x80 != 0 && !input.phase.blink;
                let state = u32::from(chr)
                    | (u32::from(attr) << 8)
                    | if cursor { CELL_CURSOR } else { 0 }
                    | if hidden { CELL_HIDDEN } else { 0 };
                let cell = &mut self.cells[(cy * t.cols + cx) as usize];
                if *cell == state {
                    continue;
                }
                *cell = state;
                changed = Some(changed.map_or((cx, cx), |(a, _)| (a, cx)));
                let bg_index = if t.blink { (attr >> 4) & 7 } else { attr >> 4 };
                let bg = key.palette[usize::from(bg_index)];
                let fg = if hidden { bg } else { key.palette[usize::from(attr & 0xf)] };
                let font = t.fonts[usize::from((attr >> 3) & 1)] + 32 * 4 * usize::from(chr);
                vram.copy_out(font, &mut glyph);
                let dup9 = t.line_graphics && (0xc0..=0xdf).contains(&chr);
                for y in 0..t.ch {
                    let cursor_row = cursor && (cursor_first..=cursor_last).contains(&y);
                    let bits = if cursor_row { 0xff } else { glyph[(y * 4) as usize] };
                    let row = ((cy * t.ch + y) as usize) * stride + (cx * t.cw) as usize * 4;
                    let px = &mut image.pixels[row..row + t.cw as usize * 4];
                    let lit = |i: u32| bits & (0x80 >> i) != 0;
                    for x in 0..t.cw {
                        let on = match t.cw {
                            16 => lit(x / 2),
                            9 if x == 8 => (dup9 || cursor_row) && lit(7),
                            _ => lit(x),
                        };
                        let colour = if on { fg } else { bg };
                        px[x as usize * 4..x as usize * 4 + 4]
                            .copy_from_slice(&colour.to_le_bytes());
                    }
                }
            }
            if let Some((first, last)) = changed {
                damage.push(Rect::new(first * t.cw, cy * t.ch, (last - first + 1) * t.cw, t.ch));
            }
            offset = offset.wrapping_add(key.line_offset);
            let next = line + t.ch;
            if line < key.line_compare && next >= key.line_compare {
                offset = 0;
            }
            line = next;
        }
        damage
    }

    fn graphics(
        &mut self,
        image: &mut Image,
        g: &Graphics,
        key: &Key,
        input: &Input<'_>,
        full: bool,
    ) -> Vec<Rect> {
        let stride = image.stride();
        let bytes = ((g.width * g.line.bits()).div_ceil(8)) as usize;
        self.row.resize(g.disp_width as usize * 4, 0);
        let mut src = vec![0u8; bytes];
        let mut damage: Vec<Rect> = Vec::new();
        let mut addr1 = key.start;
        let mut y1 = 0u32;
        let mut multi_run = g.multi_scan;
        for y in 0..g.height {
            let mut addr = addr1;
            if g.crtc_mode & 1 == 0 {
                let shift = 14 + u32::from((g.crtc_mode >> 6) & 1);
                addr = (addr & !(1 << shift)) | ((y1 & 1) << shift);
            }
            if g.crtc_mode & 2 == 0 {
                addr = (addr & !0x8000) | ((y1 & 2) << 14);
            }
            if full || input.dirty.any(addr as usize, bytes) {
                input.vram.copy_out(addr as usize, &mut src);
                draw_line(g, &key.palette, &src, &mut self.row);
                let at = y as usize * stride;
                let target = &mut image.pixels[at..at + self.row.len()];
                if full || *target != self.row[..] {
                    target.copy_from_slice(&self.row);
                    match damage.last_mut() {
                        Some(r) if r.y + r.height == y => r.height += 1,
                        _ => damage.push(Rect::new(0, y, g.disp_width, 1)),
                    }
                }
            }
            if multi_run == 0 {
                let mask = u32::from(g.crtc_mode & 3) ^ 3;
                if y1 & mask == mask {
                    addr1 = addr1.wrapping_add(key.line_offset);
                }
                y1 += 1;
                multi_run = g.multi_scan;
            } else {
                multi_run -= 1;
            }
            if y == key.line_compare {
                addr1 = 0;
            }
        }
        damage
    }
}

/// One scanline: `src` (the memory the line reads) to B, G, R, X pixels in `out`.
fn draw_line(g: &Graphics, palette: &[u32], src: &[u8], out: &mut [u8]) {
    let mut px = out.chunks_exact_mut(4);
    let mut put = |colour: u32, times: usize| {
        for _ in 0..times {
            if let Some(p) = px.next() {
                p.copy_from_slice(&colour.to_le_bytes());
            }
        }
    };
    match g.line {
        Line::Planar4 { double } => {
            let n = if double { 2 } else { 1 };
            for planes in src.chunks_exact(4) {
                for bit in (0..8).rev() {
                    let index = (0..4)
                        .filter(|p| g.planes & (1 << p) != 0)
                        .fold(0, |v, p| v | (((planes[p] >> bit) & 1) << p));
                    put(palette[usize::from(index)], n);
                }
            }
        }
        Line::Cga2 { double } => {
            // As QEMU draws it: pixel pairs from planes 0/2, then 1/3.
            let n = if double { 2 } else { 1 };
            for planes in src.chunks_exact(4) {
                let plane = |p: usize| if g.planes & (1 << p) != 0 { planes[p] } else { 0 };
                for (lo, hi) in [(plane(0), plane(2)), (plane(1), plane(3))] {
                    for pair in (0..4).rev() {
                        let b = |v: u8, i: u32| (v >> (2 * pair + i)) & 1;
                        let index = (b(hi, 1) << 3) | (b(lo, 1) << 2) | (b(hi, 0) << 1) | b(lo, 0);
                        put(palette[usize::from(index)], n);
                    }
                }
            }
        }
        Line::Packed8Double => {
            for &p in src.iter().take(g.width as usize / 2) {
                put(palette[usize::from(p)], 2);
            }
        }
        Line::Packed8 => {
            for &p in src {
                put(palette[usize::from(p)], 1);
            }
        }
        Line::Rgb15 | Line::Rgb16 => {
            let five = |v: u16| u32::from((v << 3) | (v >> 2));
            for p in src.chunks_exact(2) {
                let v = u16::from_le_bytes([p[0], p[1]]);
                let colour = if g.line == Line::Rgb15 {
                    rgb(five((v >> 10) & 31), five((v >> 5) & 31), five(v & 31))
                } else {
                    let g6 = (v >> 5) & 63;
                    rgb(five(v >> 11), u32::from((g6 << 2) | (g6 >> 4)), five(v & 31))
                };
                put(colour, 1);
            }
        }
        Line::Rgb24 => {
            for p in src.chunks_exact(3) {
                put(rgb(p[2].into(), p[1].into(), p[0].into()), 1);
            }
        }
        Line::Rgb32 => {
            for p in src.chunks_exact(4) {
                put(rgb(p[2].into(), p[1].into(), p[0].into()), 1);
            }
        }
        Line::Rgb32Big => {
            for p in src.chunks_exact(4) {
                put(rgb(p[1].into(), p[2].into(), p[3].into()), 1);
            }
        }
    }
}

#[cfg(test)]
mod tests;
