//! The standard VGA, as QEMU's `-vga std` (PCI 1234:1111) has it, so that the VGA BIOS
//! (SeaBIOS's `vgabios-stdvga.bin`), boot loaders and guests' drivers (Linux's bochs-drm,
//! Windows' basic display driver) know it:
//! - BAR 0: the linear framebuffer, all of video memory (16 MiB), prefetchable;
//! - BAR 2: 4 KiB of MMIO with the EDID at 0, the VGA registers 0x3C0–0x3DF at 0x400, the
//!   Bochs DISPI registers at 0x500 and QEMU's extended registers at 0x600;
//! - the legacy ports 0x3B0–0x3DF and DISPI's 0x1CE/0x1CF, and the 0xA0000–0xBFFFF window.
//!
//! `regs.rs` has the registers and the planar memory logic, `vram.rs` the memory and its
//! KVM slot, `render.rs` what the screen shows, `persist.rs` its saved state; `VgaDisplay` runs the thread that puts it
//! on the machine's `Display` while no GPU driver has set a scanout.

pub mod persist;
pub mod regs;
pub mod render;
pub mod vram;

use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kvm_ioctls::VmFd;

use super::bus::BusDevice;
use super::pci::PciDevice;
use super::pci::config::{BarInfo, BarKind, PciConfig, PciIds};
use crate::display::{Display, Rect, SharedImage};
use crate::sync::lock;
use regs::Registers;
use render::{Input, Output, Phase, Renderer};
use vram::{DirtyPages, Vram};

pub use vram::VramError;

/// Video memory: enough for 2560x1600 at 32 bits a pixel, as QEMU's default.
pub const VRAM_BYTES: usize = 16 << 20;
/// The legacy memory window.
pub const WINDOW_START: u64 = 0xa_0000;
pub const WINDOW_LEN: u64 = 0x2_0000;
/// The legacy register ports (monochrome CRTC at 0x3B4, attribute/sequencer/graphics/DAC
/// at 0x3C0, colour CRTC at 0x3D4).
pub const PORTS_START: u16 = 0x3b0;
pub const PORTS_LEN: u64 = 0x30;
/// DISPI's index (0x1CE) and data (0x1CF, and 0x1D0 as QEMU also decodes) ports.
pub const DISPI_PORT: u16 = 0x1ce;
pub const DISPI_PORTS_LEN: u64 = 3;
/// The largest option ROM accepted.
pub const MAX_ROM_BYTES: u64 = 256 << 10;

/// The PCI identity the VGA BIOS and guests' drivers look for.
pub const VENDOR: u16 = 0x1234;
pub const DEVICE: u16 = 0x1111;

const MMIO_BAR: usize = 2;
const MMIO_BAR_BYTES: u64 = 0x1000;
const MMIO_EDID: u64 = 0x000;
const MMIO_VGA_PORTS: u64 = 0x400;
const MMIO_DISPI: u64 = 0x500;
const MMIO_QEXT: u64 = 0x600;
const MMIO_QEXT_BYTE_ORDER: u64 = 0x604;
/// QEMU's extended registers: their size, and the framebuffer's byte order (little).
const QEXT_SIZE: u32 = 8;
const QEXT_LITTLE_ENDIAN: u32 = 0x1e1e_1e1e;
const QEXT_BIG_ENDIAN: u32 = 0xbebe_bebe;

/// How often the screen is redrawn from what changed.
const REFRESH: Duration = Duration::from_millis(33);
/// The text cursor changes every 16 frames at 60 Hz, blinking characters every 32.
const CURSOR_HALF_PERIOD_MS: u128 = 1000 * 16 / 60;
const BLINK_HALF_PERIOD_MS: u128 = 1000 * 32 / 60;

/// What the machine's config says about its VGA.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VgaConfig {
    /// The VGA BIOS (Debian's `/usr/share/seabios/vgabios-stdvga.bin`), handed to the
    /// firmware as the device's option ROM.
    pub rom: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum VgaError {
    #[error(transparent)]
    Vram(#[from] VramError),
    #[error(
        "cannot read the VGA BIOS {path}: {source}; install Debian's seabios package \
         (apt-get install seabios)"
    )]
    Rom { path: PathBuf, source: std::io::Error },
    #[error("the VGA BIOS {path} is {bytes} bytes; an option ROM is at most {max} KiB", max = MAX_ROM_BYTES >> 10)]
    RomSize { path: PathBuf, bytes: u64 },
    #[error("cannot start the VGA's display thread")]
    Thread(#[source] std::io::Error),
}

/// Reads the option ROM `path` names, bounded.
pub fn read_rom(path: &std::path::Path) -> Result<Vec<u8>, VgaError> {
    use std::io::Read;
    let rom_err = |source| VgaError::Rom { path: path.to_path_buf(), source };
    let file = std::fs::File::open(path).map_err(rom_err)?;
    let mut bytes = Vec::new();
    file.take(MAX_ROM_BYTES + 1).read_to_end(&mut bytes).map_err(rom_err)?;
    if bytes.len() as u64 > MAX_ROM_BYTES || bytes.is_empty() {
        return Err(VgaError::RomSize { path: path.to_path_buf(), bytes: bytes.len() as u64 });
    }
    Ok(bytes)
}

/// The VGA's state the vCPUs change and the display thread reads.
pub struct VgaCore {
    pub regs: Registers,
    vram: Arc<Vram>,
    /// Pages written through the window or the BAR's MMIO path since the last frame.
    dirty: DirtyPages,
    /// Plane 2 (the font) was written since the last frame.
    font: bool,
}

pub type SharedVga = Arc<Mutex<VgaCore>>;

impl VgaCore {
    pub fn new(vram: Arc<Vram>) -> Self {
        let dirty = DirtyPages::new(vram.pages());
        VgaCore { regs: Registers::default(), vram, dirty, font: false }
    }

    fn port_read(&mut self, port: u16) -> u8 {
        self.regs.port_read(port)
    }

    fn port_write(&mut self, port: u16, value: u8) {
        self.regs.port_write(port, value);
    }

    fn dispi_write(&mut self, value: u16) {
        let enable_before = self.regs.dispi[regs::DISPI_ENABLE];
        self.regs.dispi_write(value, &self.vram);
        if self.regs.dispi[regs::DISPI_ENABLE] != enable_before {
            // A mode set may have cleared memory that the screen shows.
            self.dirty.set_all();
        }
    }

    /// A write to the linear framebuffer that reached the VMM (KVM has no slot for it).
    fn lfb_write(&mut self, offset: u64, data: &[u8]) {
        for (i, b) in data.iter().enumerate() {
            let at = offset as usize + i;
            if at < self.vram.len() {
                self.vram.write_byte(at, *b);
                self.dirty.mark(at, 1);
            }
        }
    }
}

/// The ports (0x3B0–0x3DF, 0x1CE–0x1D0) as one bus device: `base` says which range.
pub struct VgaPorts {
    vga: SharedVga,
}

impl VgaPorts {
    pub fn new(vga: SharedVga) -> Self {
        VgaPorts { vga }
    }
}

impl BusDevice for VgaPorts {
    fn read(&mut self, base: u64, offset: u64, data: &mut [u8]) {
        let mut vga = lock(&self.vga);
        if base == u64::from(DISPI_PORT) {
            let value = match offset {
                0 => vga.regs.dispi_index,
                _ => vga.regs.dispi_read(vga.vram.len()),
            };
            let bytes = value.to_le_bytes();
            for (i, b) in data.iter_mut().enumerate() {
                *b = bytes.get(i).copied().unwrap_or(0);
            }
            return;
        }
        // A word access is two byte accesses at consecutive ports.
        for (i, b) in data.iter_mut().enumerate() {
            *b = vga.port_read((base + offset + i as u64) as u16);
        }
    }

    fn write(&mut self, base: u64, offset: u64, data: &[u8]) {
        let mut vga = lock(&self.vga);
        if base == u64::from(DISPI_PORT) {
            let mut bytes = [0u8; 2];
            for (b, d) in bytes.iter_mut().zip(data) {
                *b = *d;
            }
            let value = u16::from_le_bytes(bytes);
            match offset {
                0 => vga.regs.dispi_index = value,
                _ => vga.dispi_write(value),
            }
            return;
        }
        for (i, b) in data.iter().enumerate() {
            vga.port_write((base + offset + i as u64) as u16, *b);
        }
    }
}

/// The 0xA0000–0xBFFFF window: byte accesses through the planar logic.
pub struct VgaWindow {
    vga: SharedVga,
}

impl VgaWindow {
    pub fn new(vga: SharedVga) -> Self {
        VgaWindow { vga }
    }
}

impl BusDevice for VgaWindow {
    fn read(&mut self, _base: u64, offset: u64, data: &mut [u8]) {
        let mut vga = lock(&self.vga);
        let vga = &mut *vga;
        for (i, b) in data.iter_mut().enumerate() {
            *b = vga.regs.mem_read(offset + i as u64, &vga.vram);
        }
    }

    fn write(&mut self, _base: u64, offset: u64, data: &[u8]) {
        let mut vga = lock(&self.vga);
        let vga = &mut *vga;
        for (i, b) in data.iter().enumerate() {
            vga.regs.mem_write(offset + i as u64, *b, &vga.vram, &mut vga.dirty, &mut vga.font);
        }
    }
}

/// The PCI function: configuration space, the framebuffer BAR (a KVM slot where it can
/// be) and the MMIO BAR.
pub struct StdVga {
    config: PciConfig,
    vga: SharedVga,
    /// The VM and KVM slot number BAR 0 is mapped with (None: every access goes through
    /// the VMM, as in tests and fuzzing).
    slot: Option<(Arc<VmFd>, u32)>,
    /// Where the EDID's preferred size comes from: the size the window asks for.
    display: Option<Display>,
    edid: [u8; 128],
}

impl StdVga {
    pub fn new(vga: SharedVga, slot: Option<(Arc<VmFd>, u32)>, display: Option<Display>) -> Self {
        let mut config = PciConfig::new(PciIds {
            vendor: VENDOR,
            device: DEVICE,
            class: 0x03_00_00,
            revision: 2,
            subsystem_vendor: 0x1af4,
            subsystem: 0x1100,
        });
        let vram = lock(&vga).vram.len() as u64;
        config
            .add_bar(0, BarInfo { kind: BarKind::Mem32 { prefetchable: true }, size: vram })
            .expect("BAR 0 is free and a power of two");
        config
            .add_bar(
                MMIO_BAR,
                BarInfo { kind: BarKind::Mem32 { prefetchable: false }, size: MMIO_BAR_BYTES },
            )
            .expect("BAR 2 is free and a power of two");
        let mut vga = StdVga { config, vga, slot, display, edid: [0; 128] };
        vga.refresh_edid();
        vga
    }

    /// The EDID offers the size the host asked for last (the window's), else 1024x768:
    /// scaled down to what DISPI offers if larger (keeping its shape), its width a
    /// multiple of 8 as DISPI's are.
    fn refresh_edid(&mut self) {
        let (w, h) = self.display.as_ref().and_then(Display::requested_size).unwrap_or((1024, 768));
        let (max_w, max_h) = (f64::from(regs::DISPI_MAX_XRES), f64::from(regs::DISPI_MAX_YRES));
        let scale = (max_w / f64::from(w.max(1))).min(max_h / f64::from(h.max(1))).min(1.0);
        let w = ((f64::from(w) * scale) as u32 & !7).max(8);
        let h = ((f64::from(h) * scale) as u32).max(1);
        self.edid = crate::display::edid::edid(w, h);
    }

    fn mmio_read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        match offset {
            MMIO_EDID..MMIO_VGA_PORTS => {
                if offset == MMIO_EDID {
                    self.refresh_edid();
                }
                for (i, b) in data.iter_mut().enumerate() {
                    *b = self.edid.get(offset as usize + i).copied().unwrap_or(0);
                }
            }
            MMIO_VGA_PORTS..0x420 => {
                let mut vga = lock(&self.vga);
                for (i, b) in data.iter_mut().enumerate() {
                    *b = vga.port_read(0x3c0 + (offset - MMIO_VGA_PORTS) as u16 + i as u16);
                }
            }
            MMIO_DISPI..0x516 => {
                let mut vga = lock(&self.vga);
                vga.regs.dispi_index = ((offset - MMIO_DISPI) / 2) as u16;
                let value = vga.regs.dispi_read(vga.vram.len()).to_le_bytes();
                for (b, v) in data.iter_mut().zip(value) {
                    *b = v;
                }
            }
            MMIO_QEXT..0x608 => {
                let reg = if offset < MMIO_QEXT + 4 {
                    QEXT_SIZE
                } else if lock(&self.vga).regs.big_endian {
                    QEXT_BIG_ENDIAN
                } else {
                    QEXT_LITTLE_ENDIAN
                };
                let at = (offset % 4) as usize;
                for (b, v) in data.iter_mut().zip(&reg.to_le_bytes()[at..]) {
                    *b = *v;
                }
            }
            _ => {}
        }
    }

    fn mmio_write(&mut self, offset: u64, data: &[u8]) {
        match offset {
            MMIO_VGA_PORTS..0x420 => {
                let mut vga = lock(&self.vga);
                for (i, b) in data.iter().enumerate() {
                    vga.port_write(0x3c0 + (offset - MMIO_VGA_PORTS) as u16 + i as u16, *b);
                }
            }
            MMIO_DISPI..0x516 => {
                let mut vga = lock(&self.vga);
                vga.regs.dispi_index = ((offset - MMIO_DISPI) / 2) as u16;
                let mut bytes = [0u8; 2];
                for (b, d) in bytes.iter_mut().zip(data) {
                    *b = *d;
                }
                vga.dispi_write(u16::from_le_bytes(bytes));
            }
            MMIO_QEXT_BYTE_ORDER if data.len() == 4 => {
                let value = u32::from_le_bytes(data.try_into().expect("4 bytes"));
                let mut vga = lock(&self.vga);
                match value {
                    QEXT_LITTLE_ENDIAN => vga.regs.big_endian = false,
                    QEXT_BIG_ENDIAN => vga.regs.big_endian = true,
                    _ => {}
                }
            }
            // The EDID and the extended registers' size are read-only.
            _ => {}
        }
    }
}

impl PciDevice for StdVga {
    fn config(&self) -> &PciConfig {
        &self.config
    }

    fn config_mut(&mut self) -> &mut PciConfig {
        &mut self.config
    }

    fn bar_read(&mut self, bar: usize, offset: u64, data: &mut [u8]) {
        match bar {
            0 => {
                let vga = lock(&self.vga);
                for (i, b) in data.iter_mut().enumerate() {
                    *b = vga.vram.read_byte(offset as usize + i);
                }
            }
            MMIO_BAR => self.mmio_read(offset, data),
            _ => data.fill(0xff),
        }
    }

    fn bar_write(&mut self, bar: usize, offset: u64, data: &[u8]) {
        match bar {
            0 => lock(&self.vga).lfb_write(offset, data),
            MMIO_BAR => self.mmio_write(offset, data),
            _ => {}
        }
    }

    fn save_state(&self) -> Result<Vec<u8>, String> {
        let vga = lock(&self.vga);
        Ok(crate::persist::encode_part(&persist::VgaState {
            config: self.config.save_state(),
            regs: vga.regs.save(),
            pages: persist::save_pages(&vga.vram),
        }))
    }

    fn restore_state(&mut self, state: &[u8]) -> Result<(), String> {
        let state: persist::VgaState = crate::persist::decode_part(state)?;
        let mut vga = lock(&self.vga);
        let regs = Registers::restored(&state.regs, vga.vram.len())?;
        persist::restore_pages(&vga.vram, &state.pages)?;
        self.config.restore_state(&state.config)?;
        vga.regs = regs;
        // Everything is new to the display, the font too.
        vga.font = true;
        vga.dirty.set_all();
        Ok(())
    }

    fn bar_moved(&mut self, bar: usize, address: Option<u64>) {
        if bar != 0 {
            return;
        }
        if let Some((vm, slot)) = &self.slot {
            let vram = lock(&self.vga).vram.clone();
            vram.map(vm, *slot, address);
            // Whatever the guest wrote while the slot moved counts as changed.
            lock(&self.vga).dirty.set_all();
        }
    }
}

/// Draws the VGA onto a `Display` about 30 times a second until dropped.
pub struct VgaDisplay {
    refresher: Option<(Sender<()>, JoinHandle<()>)>,
    display: Display,
}

impl VgaDisplay {
    pub fn start(vga: SharedVga, display: Display) -> Result<Self, VgaError> {
        let (stop, stopped) = channel();
        let shown = display.clone();
        let thread = std::thread::Builder::new()
            .name("vessel-vga".into())
            .spawn(move || {
                crate::seccomp::confine_this_thread(crate::seccomp::ThreadKind::DeviceIo);
                refresh(&vga, &shown, &stopped)
            })
            .map_err(VgaError::Thread)?;
        Ok(VgaDisplay { refresher: Some((stop, thread)), display })
    }
}

impl Drop for VgaDisplay {
    fn drop(&mut self) {
        if let Some((stop, thread)) = self.refresher.take() {
            drop(stop);
            let _ = thread.join();
        }
        self.display.set_boot_scanout(None);
    }
}

/// One frame: what changed since the last is drawn and handed to `display`. `shown` is
/// the picture the display has from this VGA.
pub fn frame(
    vga: &SharedVga,
    renderer: &mut Renderer,
    spare: &mut DirtyPages,
    shown: &mut Option<SharedImage>,
    display: &Display,
    phase: Phase,
) {
    let (regs, vram, font) = {
        let mut core = lock(vga);
        std::mem::swap(&mut core.dirty, spare);
        (core.regs.clone(), core.vram.clone(), std::mem::take(&mut core.font))
    };
    if !vram.take_guest_dirty(&mut spare.bits) {
        spare.set_all();
    }
    let input = Input { regs: &regs, vram: &vram, dirty: spare, font, phase };
    match renderer.render(&input) {
        Output::Nothing => {}
        Output::New(image) => {
            let (w, h) = {
                let i = lock(&image);
                (i.width, i.height)
            };
            display.set_boot_scanout(Some((image.clone(), Rect::new(0, 0, w, h))));
            display.flushed(&image, Rect::new(0, 0, w, h));
            *shown = Some(image);
        }
        Output::Damage(rects) => {
            if let Some(image) = shown {
                for rect in rects {
                    display.flushed(image, rect);
                }
            }
        }
    }
    spare.clear();
}

fn refresh(vga: &SharedVga, display: &Display, stopped: &Receiver<()>) {
    let mut renderer = Renderer::default();
    let mut spare = DirtyPages::new(lock(vga).vram.pages());
    let mut shown = None;
    let started = Instant::now();
    while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(REFRESH) {
        if shown.is_some() && !display.showing_boot() {
            // A GPU's scanout is shown: draw everything again when the VGA is back.
            renderer.invalidate();
            continue;
        }
        let ms = started.elapsed().as_millis();
        let phase = Phase {
            cursor: (ms / CURSOR_HALF_PERIOD_MS).is_multiple_of(2),
            blink: (ms / BLINK_HALF_PERIOD_MS).is_multiple_of(2),
        };
        frame(vga, &mut renderer, &mut spare, &mut shown, display, phase);
    }
}

#[cfg(test)]
mod tests;
