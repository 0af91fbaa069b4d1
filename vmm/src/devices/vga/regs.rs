//! The VGA's registers and its memory logic (IBM VGA XGA Technical Reference; FreeVGA):
//! the sequencer, graphics controller, attribute controller, CRT controller, DAC and
//! general registers at ports 0x3B0–0x3DF, the Bochs DISPI (VBE) registers, and what a
//! byte access through the legacy window does to the four planes (chain-4, odd/even,
//! read modes 0–1, write modes 0–3 with rotate, set/reset, the ALU and the bit mask).
//! Reserved bits read as QEMU's `-vga std` has them, since the VGA BIOS and guests' drivers
//! are tested against it.

use super::vram::{DirtyPages, Vram};

/// Bits the sequencer registers keep (QEMU's masks, which follow the hardware's).
pub(super) const SEQ_MASK: [u8; 8] = [0x03, 0x3d, 0x0f, 0x3f, 0x0e, 0x00, 0x00, 0xff];
pub(super) const GC_MASK: [u8; 16] =
    [0x0f, 0x0f, 0x0f, 0x1f, 0x03, 0x7b, 0x0f, 0x0f, 0xff, 0, 0, 0, 0, 0, 0, 0];
pub const CRTC_REGS: usize = 0x19;
pub const AC_REGS: usize = 0x15;

pub const SEQ_CLOCK: usize = 1;
pub const SEQ_MAP_MASK: usize = 2;
pub const SEQ_CHAR_MAP: usize = 3;
pub const SEQ_MEMORY_MODE: usize = 4;
pub const SEQ_CHAIN4: u8 = 0x08;

pub const GC_SR_VALUE: usize = 0;
pub const GC_SR_ENABLE: usize = 1;
pub const GC_COMPARE: usize = 2;
pub const GC_ROTATE: usize = 3;
pub const GC_READ_MAP: usize = 4;
pub const GC_MODE: usize = 5;
pub const GC_MISC: usize = 6;
pub const GC_DONT_CARE: usize = 7;
pub const GC_BIT_MASK: usize = 8;

pub const AC_MODE: usize = 0x10;
pub const AC_PLANE_ENABLE: usize = 0x12;
pub const AC_COLOR_SELECT: usize = 0x14;
/// Palette address source: the screen shows only while it is set.
pub const AC_PAS: u8 = 0x20;

pub const CRTC_H_DISP_END: usize = 0x01;
pub const CRTC_OVERFLOW: usize = 0x07;
pub const CRTC_MAX_SCAN: usize = 0x09;
pub const CRTC_CURSOR_START: usize = 0x0a;
pub const CRTC_CURSOR_END: usize = 0x0b;
pub const CRTC_START_HI: usize = 0x0c;
pub const CRTC_START_LO: usize = 0x0d;
pub const CRTC_CURSOR_HI: usize = 0x0e;
pub const CRTC_CURSOR_LO: usize = 0x0f;
pub const CRTC_V_SYNC_END: usize = 0x11;
pub const CRTC_V_DISP_END: usize = 0x12;
pub const CRTC_OFFSET: usize = 0x13;
pub const CRTC_MODE: usize = 0x17;
pub const CRTC_LINE_COMPARE: usize = 0x18;

/// The Bochs DISPI interface (QEMU's `vbe_regs`), read and written at ports 0x1CE/0x1CF
/// and at BAR 2 + 0x500.
pub const DISPI_ID: usize = 0;
pub const DISPI_XRES: usize = 1;
pub const DISPI_YRES: usize = 2;
pub const DISPI_BPP: usize = 3;
pub const DISPI_ENABLE: usize = 4;
pub const DISPI_BANK: usize = 5;
pub const DISPI_VIRT_WIDTH: usize = 6;
pub const DISPI_VIRT_HEIGHT: usize = 7;
pub const DISPI_X_OFFSET: usize = 8;
pub const DISPI_Y_OFFSET: usize = 9;
pub const DISPI_VIDEO_MEMORY_64K: usize = 10;
pub const DISPI_REGS: usize = 10;
pub const DISPI_ID0: u16 = 0xb0c0;
pub const DISPI_ID5: u16 = 0xb0c5;
pub const DISPI_ENABLED: u16 = 0x01;
pub const DISPI_GETCAPS: u16 = 0x02;
pub const DISPI_8BIT_DAC: u16 = 0x20;
pub const DISPI_NOCLEARMEM: u16 = 0x80;
/// The largest mode DISPI offers (what SeaBIOS's VGA BIOS lists, and 16 MiB holds at
/// 32 bits a pixel).
pub const DISPI_MAX_XRES: u16 = 2560;
pub const DISPI_MAX_YRES: u16 = 1600;
pub const DISPI_MAX_BPP: u16 = 32;

/// Everything the renderer needs besides memory; cheap to copy out under the lock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registers {
    pub misc: u8,
    pub feature: u8,
    pub seq_index: u8,
    pub seq: [u8; 8],
    pub gc_index: u8,
    pub gc: [u8; 16],
    pub ac_index: u8,
    pub ac: [u8; AC_REGS],
    pub ac_flip: bool,
    pub crtc_index: u8,
    pub crtc: [u8; CRTC_REGS],
    pub pel_mask: u8,
    pub dac_read: u8,
    pub dac_write: u8,
    pub dac_sub: u8,
    pub dac_state: u8,
    pub dac_cache: [u8; 3],
    /// 256 entries of R, G, B (6 bits each, or 8 with DISPI's 8-bit DAC).
    pub palette: [u8; 768],
    pub st01: u8,
    pub latch: u32,
    pub dispi_index: u16,
    pub dispi: [u16; DISPI_REGS],
    /// Bytes a line in the DISPI mode, and where its frame starts (in planar addresses,
    /// i.e. bytes / 4, as the CRTC's start address counts).
    pub vbe_line_offset: u32,
    pub vbe_start_addr: u32,
    pub bank_offset: u32,
    /// The framebuffer's byte order (QEMU's extended register 0x604): a 32-bit pixel is
    /// X, R, G, B in memory, not B, G, R, X (bochs-drm's BGRX8888).
    pub big_endian: bool,
}

impl Default for Registers {
    fn default() -> Self {
        let mut dispi = [0; DISPI_REGS];
        dispi[DISPI_ID] = DISPI_ID5;
        Registers {
            misc: 0,
            feature: 0,
            seq_index: 0,
            seq: [0; 8],
            gc_index: 0,
            gc: [0; 16],
            ac_index: 0,
            ac: [0; AC_REGS],
            ac_flip: false,
            crtc_index: 0,
            crtc: [0; CRTC_REGS],
            pel_mask: 0xff,
            dac_read: 0,
            dac_write: 0,
            dac_sub: 0,
            dac_state: 0,
            dac_cache: [0; 3],
            palette: [0; 768],
            st01: 0,
            latch: 0,
            dispi_index: 0,
            dispi,
            vbe_line_offset: 0,
            vbe_start_addr: 0,
            bank_offset: 0,
            big_endian: false,
        }
    }
}

/// Each plane's byte of a 4-bit plane mask: `MASK16[m]` has 0xff in byte `p` where bit
/// `p` of `m` is set.
fn mask16(m: u8) -> u32 {
    (0..4).filter(|p| m & (1 << p) != 0).fold(0, |acc, p| acc | (0xff << (8 * p)))
}

impl Registers {
    /// What attribute controller register `index` keeps of `value`; None past its last.
    pub(super) fn ac_kept(index: usize, value: u8) -> Option<u8> {
        Some(match index {
            0x00..=0x0f => value & 0x3f,
            AC_MODE => value & !0x10,
            0x11 => value,
            AC_PLANE_ENABLE => value & !0xc0,
            0x13 | AC_COLOR_SELECT => value & 0x0f,
            _ => return None,
        })
    }

    pub fn dispi_enabled(&self) -> bool {
        self.dispi[DISPI_ENABLE] & DISPI_ENABLED != 0
    }

    pub fn dac_8bit(&self) -> bool {
        self.dispi[DISPI_ENABLE] & DISPI_8BIT_DAC != 0
    }

    /// Whether the colour (0x3Dx) or monochrome (0x3Bx) CRTC ports answer.
    fn port_absent(&self, port: u16) -> bool {
        if self.misc & 1 != 0 {
            (0x3b0..=0x3bf).contains(&port)
        } else {
            (0x3d0..=0x3df).contains(&port)
        }
    }

    /// The vertical display end (lines - 1), 10 bits from CR12 and the overflow register.
    pub fn vertical_display_end(&self) -> u32 {
        let c = &self.crtc;
        u32::from(c[CRTC_V_DISP_END])
            | (u32::from(c[CRTC_OVERFLOW] & 0x02) << 7)
            | (u32::from(c[CRTC_OVERFLOW] & 0x40) << 3)
    }

    pub fn port_read(&mut self, port: u16) -> u8 {
        if self.port_absent(port) {
            return 0xff;
        }
        match port {
            0x3c0 => {
                if self.ac_flip {
                    0
                } else {
                    self.ac_index
                }
            }
            0x3c1 => {
                let index = usize::from(self.ac_index & 0x1f);
                self.ac.get(index).copied().unwrap_or(0)
            }
            0x3c2 => 0, // input status 0
            0x3c4 => self.seq_index,
            0x3c5 => self.seq[usize::from(self.seq_index)],
            0x3c6 => self.pel_mask,
            0x3c7 => self.dac_state,
            0x3c8 => self.dac_write,
            0x3c9 => {
                let v = self.palette[usize::from(self.dac_read) * 3 + usize::from(self.dac_sub)];
                self.dac_sub += 1;
                if self.dac_sub == 3 {
                    self.dac_sub = 0;
                    self.dac_read = self.dac_read.wrapping_add(1);
                }
                v
            }
            0x3ca => self.feature,
            0x3cc => self.misc,
            0x3ce => self.gc_index,
            0x3cf => self.gc[usize::from(self.gc_index)],
            0x3b4 | 0x3d4 => self.crtc_index,
            0x3b5 | 0x3d5 => self.crtc.get(usize::from(self.crtc_index)).copied().unwrap_or(0),
            0x3ba | 0x3da => {
                // Input status 1: retrace and display-enable toggle on each read, so that
                // code polling for a retrace finds one; the attribute flip-flop resets.
                self.st01 ^= 0x09;
                self.ac_flip = false;
                self.st01
            }
            _ => 0,
        }
    }

    pub fn port_write(&mut self, port: u16, value: u8) {
        if self.port_absent(port) {
            return;
        }
        match port {
            0x3c0 => {
                if !self.ac_flip {
                    self.ac_index = value & 0x3f;
                } else {
                    let index = usize::from(self.ac_index & 0x1f);
                    let Some(kept) = Registers::ac_kept(index, value) else {
                        return self.ac_flip = false;
                    };
                    self.ac[index] = kept;
                }
                self.ac_flip = !self.ac_flip;
            }
            0x3c2 => self.misc = value & !0x10,
            0x3c4 => self.seq_index = value & 7,
            0x3c5 => {
                let i = usize::from(self.seq_index);
                self.seq[i] = value & SEQ_MASK[i];
            }
            0x3c6 => self.pel_mask = value,
            0x3c7 => {
                self.dac_read = value;
                self.dac_sub = 0;
                self.dac_state = 3;
            }
            0x3c8 => {
                self.dac_write = value;
                self.dac_sub = 0;
                self.dac_state = 0;
            }
            0x3c9 => {
                self.dac_cache[usize::from(self.dac_sub)] = value;
                self.dac_sub += 1;
                if self.dac_sub == 3 {
                    let at = usize::from(self.dac_write) * 3;
                    self.palette[at..at + 3].copy_from_slice(&self.dac_cache);
                    self.dac_sub = 0;
                    self.dac_write = self.dac_write.wrapping_add(1);
                }
            }
            0x3ce => self.gc_index = value & 0x0f,
            0x3cf => {
                let i = usize::from(self.gc_index);
                self.gc[i] = value & GC_MASK[i];
            }
            0x3b4 | 0x3d4 => self.crtc_index = value,
            0x3b5 | 0x3d5 => {
                let index = usize::from(self.crtc_index);
                // CR11 bit 7 protects CR0-CR7, except CR7's line compare bit 4.
                if self.crtc[CRTC_V_SYNC_END] & 0x80 != 0 && index <= CRTC_OVERFLOW {
                    if index == CRTC_OVERFLOW {
                        self.crtc[index] = (self.crtc[index] & !0x10) | (value & 0x10);
                    }
                    return;
                }
                if let Some(r) = self.crtc.get_mut(index) {
                    *r = value;
                }
            }
            0x3ba | 0x3da => self.feature = value & 0x10,
            _ => {}
        }
    }

    pub fn dispi_read(&self, vram_bytes: usize) -> u16 {
        let index = usize::from(self.dispi_index);
        if index < DISPI_REGS {
            if self.dispi[DISPI_ENABLE] & DISPI_GETCAPS != 0 {
                match index {
                    DISPI_XRES => return DISPI_MAX_XRES,
                    DISPI_YRES => return DISPI_MAX_YRES,
                    DISPI_BPP => return DISPI_MAX_BPP,
                    _ => {}
                }
            }
            self.dispi[index]
        } else if index == DISPI_VIDEO_MEMORY_64K {
            (vram_bytes / (64 << 10)).min(usize::from(u16::MAX)) as u16
        } else {
            0
        }
    }

    /// A DISPI register write; `vram` is cleared by a mode set that asks for it.
    pub fn dispi_write(&mut self, value: u16, vram: &Vram) {
        let index = usize::from(self.dispi_index);
        match index {
            DISPI_ID if (DISPI_ID0..=DISPI_ID5).contains(&value) => self.dispi[DISPI_ID] = value,
            DISPI_XRES | DISPI_YRES | DISPI_BPP | DISPI_VIRT_WIDTH | DISPI_X_OFFSET
            | DISPI_Y_OFFSET => {
                self.dispi[index] = value;
                self.fix_dispi(vram.len());
            }
            DISPI_BANK => {
                let banks = (vram.len() >> 16) as u16;
                let mask = if self.dispi[DISPI_BPP] == 4 { (banks >> 2).max(1) } else { banks };
                let value = value & mask.saturating_sub(1);
                self.dispi[DISPI_BANK] = value;
                self.bank_offset = u32::from(value) << 16;
            }
            DISPI_ENABLE => {
                if value & DISPI_ENABLED != 0 && !self.dispi_enabled() {
                    self.dispi[DISPI_VIRT_WIDTH] = 0;
                    self.dispi[DISPI_X_OFFSET] = 0;
                    self.dispi[DISPI_Y_OFFSET] = 0;
                    self.dispi[DISPI_ENABLE] |= DISPI_ENABLED;
                    self.fix_dispi(vram.len());
                    if value & DISPI_NOCLEARMEM == 0 {
                        let used =
                            usize::from(self.dispi[DISPI_YRES]) * self.vbe_line_offset as usize;
                        vram.clear(used);
                    }
                    self.enter_dispi_mode();
                } else if value & DISPI_ENABLED == 0 {
                    self.bank_offset = 0;
                }
                self.dispi[DISPI_ENABLE] = value;
            }
            _ => {}
        }
    }

    /// A DISPI mode set also sets the VGA registers the way a graphics mode has them, as
    /// the Bochs VBE extension does, so that the legacy window and the CRTC agree with it.
    fn enter_dispi_mode(&mut self) {
        self.gc[GC_MISC] = (self.gc[GC_MISC] & !0x0c) | 0x04 | 0x01;
        self.crtc[CRTC_MODE] |= 3;
        self.crtc[CRTC_OFFSET] = (self.vbe_line_offset >> 3) as u8;
        self.crtc[CRTC_H_DISP_END] = ((self.dispi[DISPI_XRES] >> 3).wrapping_sub(1)) as u8;
        let h = self.dispi[DISPI_YRES].wrapping_sub(1);
        self.crtc[CRTC_V_DISP_END] = h as u8;
        self.crtc[CRTC_OVERFLOW] =
            (self.crtc[CRTC_OVERFLOW] & !0x42) | ((h >> 7) & 0x02) as u8 | ((h >> 3) & 0x40) as u8;
        self.crtc[CRTC_LINE_COMPARE] = 0xff;
        self.crtc[CRTC_OVERFLOW] |= 0x10;
        self.crtc[CRTC_MAX_SCAN] |= 0x40;
        let shift = if self.dispi[DISPI_BPP] == 4 {
            self.seq[SEQ_CLOCK] &= !8;
            0
        } else {
            self.seq[SEQ_MEMORY_MODE] |= SEQ_CHAIN4;
            self.seq[SEQ_MAP_MASK] |= 0x0f;
            2
        };
        self.gc[GC_MODE] = (self.gc[GC_MODE] & !0x60) | (shift << 5);
        self.crtc[CRTC_MAX_SCAN] &= !0x9f;
    }

    /// Brings the DISPI registers to the nearest mode that fits the memory, as QEMU does:
    /// the interface has no way to report an error.
    pub(super) fn fix_dispi(&mut self, vram_bytes: usize) {
        if !self.dispi_enabled() {
            return;
        }
        let r = &mut self.dispi;
        let bits: u32 = match r[DISPI_BPP] {
            4 | 8 | 16 | 24 | 32 => u32::from(r[DISPI_BPP]),
            15 => 16,
            _ => {
                r[DISPI_BPP] = 8;
                8
            }
        };
        r[DISPI_XRES] &= !7;
        if r[DISPI_XRES] == 0 {
            r[DISPI_XRES] = 8;
        }
        r[DISPI_XRES] = r[DISPI_XRES].min(DISPI_MAX_XRES);
        r[DISPI_VIRT_WIDTH] &= !7;
        r[DISPI_VIRT_WIDTH] = r[DISPI_VIRT_WIDTH].clamp(r[DISPI_XRES], DISPI_MAX_XRES);
        let line = u32::from(r[DISPI_VIRT_WIDTH]) * bits / 8;
        let max_y = (vram_bytes as u32 / line).min(u32::from(u16::MAX)) as u16;
        r[DISPI_YRES] = r[DISPI_YRES].clamp(1, DISPI_MAX_YRES).min(max_y);
        r[DISPI_X_OFFSET] = r[DISPI_X_OFFSET].min(DISPI_MAX_XRES);
        r[DISPI_Y_OFFSET] = r[DISPI_Y_OFFSET].min(DISPI_MAX_YRES);
        let frame = u64::from(r[DISPI_YRES]) * u64::from(line);
        let mut offset = u64::from(r[DISPI_X_OFFSET]) * u64::from(bits) / 8
            + u64::from(r[DISPI_Y_OFFSET]) * u64::from(line);
        if offset + frame > vram_bytes as u64 {
            r[DISPI_Y_OFFSET] = 0;
            offset = u64::from(r[DISPI_X_OFFSET]) * u64::from(bits) / 8;
            if offset + frame > vram_bytes as u64 {
                r[DISPI_X_OFFSET] = 0;
                offset = 0;
            }
        }
        r[DISPI_VIRT_HEIGHT] = max_y;
        self.vbe_line_offset = line;
        self.vbe_start_addr = (offset / 4) as u32;
    }

    /// The window offset of guest-physical `addr` (0xA0000-based) under the memory map
    /// select, with the DISPI bank; None where the map leaves a hole.
    fn window_offset(&self, addr: u64) -> Option<usize> {
        let addr = (addr & 0x1ffff) as usize;
        match (self.gc[GC_MISC] >> 2) & 3 {
            0 => Some(addr),
            1 => (addr < 0x10000).then(|| addr + self.bank_offset as usize),
            2 => addr.checked_sub(0x10000).filter(|a| *a < 0x8000),
            _ => addr.checked_sub(0x18000).filter(|a| *a < 0x8000),
        }
    }

    /// A byte read through the legacy window at `addr` (0 = 0xA0000).
    pub fn mem_read(&mut self, addr: u64, vram: &Vram) -> u8 {
        let Some(a) = self.window_offset(addr) else { return 0xff };
        if self.seq[SEQ_MEMORY_MODE] & SEQ_CHAIN4 != 0 {
            vram.read_byte(a)
        } else if self.gc[GC_MODE] & 0x10 != 0 {
            // Odd/even: even addresses read plane 0 (or 2), odd ones plane 1 (or 3).
            let plane = usize::from(self.gc[GC_READ_MAP] & 2) | (a & 1);
            vram.read_byte(((a & !1) << 1) | plane)
        } else {
            self.latch = vram.read_planes(a);
            if self.gc[GC_MODE] & 0x08 == 0 {
                (self.latch >> (8 * u32::from(self.gc[GC_READ_MAP] & 3))) as u8
            } else {
                // Read mode 1: a bit is set where every plane the don't-care register
                // includes matches the colour compare register.
                let mut v =
                    (self.latch ^ mask16(self.gc[GC_COMPARE])) & mask16(self.gc[GC_DONT_CARE]);
                v |= v >> 16;
                v |= v >> 8;
                !(v as u8)
            }
        }
    }

    /// A byte write through the legacy window; the pages written are marked in `dirty`,
    /// and `font` is set when plane 2 (the font's) changed.
    pub fn mem_write(
        &mut self,
        addr: u64,
        value: u8,
        vram: &Vram,
        dirty: &mut DirtyPages,
        font: &mut bool,
    ) {
        let Some(a) = self.window_offset(addr) else { return };
        let map_mask = self.seq[SEQ_MAP_MASK];
        if self.seq[SEQ_MEMORY_MODE] & SEQ_CHAIN4 != 0 {
            let plane = a & 3;
            if map_mask & (1 << plane) != 0 {
                vram.write_byte(a, value);
                dirty.mark(a & (vram.len() - 1), 1);
                *font |= plane == 2;
            }
        } else if self.gc[GC_MODE] & 0x10 != 0 {
            let plane = usize::from(self.gc[GC_READ_MAP] & 2) | (a & 1);
            if map_mask & (1 << plane) != 0 {
                let at = ((a & !1) << 1) | plane;
                vram.write_byte(at, value);
                dirty.mark(at & (vram.len() - 1), 1);
                *font |= plane == 2;
            }
        } else {
            let gc = &self.gc;
            let rotate = u32::from(gc[GC_ROTATE] & 7);
            let (mut val, bit_mask) = match gc[GC_MODE] & 3 {
                0 => {
                    let v = u32::from(value.rotate_right(rotate));
                    let v = v * 0x0101_0101;
                    let set = mask16(gc[GC_SR_ENABLE]);
                    ((v & !set) | (mask16(gc[GC_SR_VALUE]) & set), gc[GC_BIT_MASK])
                }
                1 => (self.latch, 0),
                2 => (mask16(value & 0x0f), gc[GC_BIT_MASK]),
                _ => {
                    let v = value.rotate_right(rotate);
                    (mask16(gc[GC_SR_VALUE]), gc[GC_BIT_MASK] & v)
                }
            };
            if gc[GC_MODE] & 3 != 1 {
                val = match gc[GC_ROTATE] >> 3 {
                    1 => val & self.latch,
                    2 => val | self.latch,
                    3 => val ^ self.latch,
                    _ => val,
                };
                let bits = u32::from(bit_mask) * 0x0101_0101;
                val = (val & bits) | (self.latch & !bits);
            }
            let write = mask16(map_mask);
            let old = vram.read_planes(a);
            vram.write_planes(a, (old & !write) | (val & write));
            dirty.mark(a.wrapping_mul(4) & (vram.len() - 1), 4);
            *font |= map_mask & 4 != 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vga() -> (Registers, Vram, DirtyPages) {
        let vram = Vram::new(1 << 20).unwrap();
        let pages = vram.pages();
        let r = Registers { misc: 1, ..Registers::default() }; // colour ports
        (r, vram, DirtyPages::new(pages))
    }

    fn seq(r: &mut Registers, i: u8, v: u8) {
        r.port_write(0x3c4, i);
        r.port_write(0x3c5, v);
    }

    fn gc(r: &mut Registers, i: u8, v: u8) {
        r.port_write(0x3ce, i);
        r.port_write(0x3cf, v);
    }

    #[test]
    fn odd_even_text_mapping() {
        let (mut r, vram, mut dirty) = vga();
        let mut font = false;
        gc(&mut r, GC_MISC as u8, 0x0e); // B8000, odd/even chain
        gc(&mut r, GC_MODE as u8, 0x10);
        seq(&mut r, SEQ_MAP_MASK as u8, 0x03);
        r.mem_write(0x18000, b'A', &vram, &mut dirty, &mut font);
        r.mem_write(0x18001, 0x1f, &vram, &mut dirty, &mut font);
        r.mem_write(0x18002, b'B', &vram, &mut dirty, &mut font);
        assert_eq!(vram.read_planes(0), u32::from(b'A') | 0x1f00);
        assert_eq!(vram.read_byte(4), b'B');
        assert!(!font, "planes 0 and 1 only");
        assert!(dirty.any(0, 8));
        assert_eq!(r.mem_read(0x18001, &vram), 0x1f);
        // A0000 is a hole in this map.
        assert_eq!(r.mem_read(0, &vram), 0xff);
    }

    #[test]
    fn planar_write_modes_and_latches() {
        let (mut r, vram, mut dirty) = vga();
        let mut font = false;
        gc(&mut r, GC_MISC as u8, 0x05); // A0000 64 KiB, graphics
        seq(&mut r, SEQ_MAP_MASK as u8, 0x0f);
        // Write mode 2: colour 0b1010 to the pixels the bit mask selects.
        gc(&mut r, GC_MODE as u8, 0x02);
        gc(&mut r, GC_BIT_MASK as u8, 0xf0);
        r.mem_write(10, 0x0a, &vram, &mut dirty, &mut font);
        assert_eq!(vram.read_planes(10), 0xf000_f000);
        assert!(font);
        // Read mode 0 with the read map select.
        gc(&mut r, GC_MODE as u8, 0x00);
        gc(&mut r, GC_READ_MAP as u8, 1);
        assert_eq!(r.mem_read(10, &vram), 0xf0);
        // Read mode 1: pixels of colour 0b1010.
        gc(&mut r, GC_MODE as u8, 0x08);
        gc(&mut r, GC_COMPARE as u8, 0x0a);
        gc(&mut r, GC_DONT_CARE as u8, 0x0f);
        assert_eq!(r.mem_read(10, &vram), 0xf0);
        // Write mode 1 copies the latches.
        gc(&mut r, GC_MODE as u8, 0x01);
        r.mem_write(11, 0, &vram, &mut dirty, &mut font);
        assert_eq!(vram.read_planes(11), 0xf000_f000);
        // Write mode 0 with set/reset on plane 0 and XOR.
        gc(&mut r, GC_MODE as u8, 0x00);
        gc(&mut r, GC_BIT_MASK as u8, 0xff);
        gc(&mut r, GC_SR_ENABLE as u8, 0x01);
        gc(&mut r, GC_SR_VALUE as u8, 0x01);
        gc(&mut r, GC_ROTATE as u8, 0x18); // XOR
        r.mem_read(12, &vram);
        r.mem_write(12, 0x0f, &vram, &mut dirty, &mut font);
        assert_eq!(vram.read_planes(12), 0x0f0f_0fff);
    }

    #[test]
    fn chain4_and_dispi() {
        let (mut r, vram, mut dirty) = vga();
        let mut font = false;
        r.dispi_index = DISPI_XRES as u16;
        r.dispi_write(1024, &vram);
        r.dispi_index = DISPI_YRES as u16;
        r.dispi_write(768, &vram);
        r.dispi_index = DISPI_BPP as u16;
        r.dispi_write(32, &vram);
        r.dispi_index = DISPI_ENABLE as u16;
        r.dispi_write(DISPI_ENABLED | 0x40, &vram);
        // 1024x768x32 does not fit 1 MiB: the height shrinks to what does.
        assert_eq!(r.dispi[DISPI_YRES], 256);
        assert_eq!(r.vbe_line_offset, 4096);
        assert_eq!(r.dispi_read(vram.len()), DISPI_ENABLED | 0x40);
        r.dispi_index = DISPI_VIDEO_MEMORY_64K as u16;
        assert_eq!(r.dispi_read(vram.len()), 16);
        // The banked window reaches past 64 KiB.
        r.dispi_index = DISPI_BANK as u16;
        r.dispi_write(3, &vram);
        r.mem_write(5, 0x77, &vram, &mut dirty, &mut font);
        assert_eq!(vram.read_byte(3 * 65536 + 5), 0x77);
        r.dispi_write(0xffff, &vram);
        assert_eq!(r.dispi[DISPI_BANK], 15, "banks beyond the memory wrap");
        // Hostile sizes land on something that fits.
        r.dispi_index = DISPI_BPP as u16;
        r.dispi_write(7, &vram);
        assert_eq!(r.dispi[DISPI_BPP], 8);
        r.dispi_index = DISPI_XRES as u16;
        r.dispi_write(0xffff, &vram);
        assert_eq!(r.dispi[DISPI_XRES], DISPI_MAX_XRES);
        r.dispi_index = DISPI_Y_OFFSET as u16;
        r.dispi_write(0xffff, &vram);
        let frame = u64::from(r.dispi[DISPI_YRES]) * u64::from(r.vbe_line_offset);
        assert!(u64::from(r.vbe_start_addr) * 4 + frame <= vram.len() as u64);
    }

    #[test]
    fn dac_and_attribute_flip_flop() {
        let (mut r, _vram, _) = vga();
        r.port_write(0x3c8, 5);
        for v in [1, 2, 3, 4] {
            r.port_write(0x3c9, v);
        }
        assert_eq!(&r.palette[15..18], &[1, 2, 3]);
        r.port_write(0x3c7, 5);
        assert_eq!([r.port_read(0x3c9), r.port_read(0x3c9), r.port_read(0x3c9)], [1, 2, 3]);
        r.port_read(0x3da);
        r.port_write(0x3c0, 0x02);
        r.port_write(0x3c0, 0x3f);
        assert_eq!(r.ac[2], 0x3f);
        r.port_write(0x3c0, 0x20 | AC_MODE as u8);
        assert_eq!(r.ac_index, 0x30);
        // The monochrome ports are absent in colour mode.
        r.port_write(0x3b4, 1);
        assert_eq!(r.port_read(0x3b4), 0xff);
        // CR0-7 protection.
        r.port_write(0x3d4, 0x11);
        r.port_write(0x3d5, 0x80);
        r.port_write(0x3d4, 0x01);
        r.port_write(0x3d5, 0x55);
        assert_eq!(r.crtc[1], 0);
    }
}
