//! The boot framebuffer: a linear framebuffer in guest physical memory (a memory slot of
//! its own, reserved in e820) that Linux learns of from boot_params.screen_info and draws
//! its console into before any graphics driver loads (vesafb/simplefb/efifb), like the
//! VESA linear framebuffer a PC's firmware leaves behind. A refresher thread compares it
//! with a host copy about 30 times a second and hands the rows that changed to the
//! `Display`, which shows it until the virtio-gpu driver sets a scanout.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::thread::JoinHandle;
use std::time::Duration;

use vm_memory::{MmapRegion, VolatileMemory};

use super::{Display, Image, PixelFormat, Rect, SharedImage};
use crate::sync::lock;

/// How often the framebuffer is compared with the host's copy.
const REFRESH: Duration = Duration::from_millis(33);

/// The largest boot framebuffer (2560x1600 at 32 bits fits).
pub const MAX_BYTES: u64 = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum FramebufferError {
    #[error(
        "boot framebuffer {width}x{height} does not fit in {max} MiB (or is smaller than \
         320x200); choose a smaller display size",
        max = MAX_BYTES >> 20
    )]
    Size { width: u32, height: u32 },
    #[error("cannot allocate the boot framebuffer")]
    Allocate(#[source] vm_memory::mmap::MmapRegionError),
    #[error("cannot start the boot framebuffer's refresher thread")]
    Thread(#[source] std::io::Error),
}

/// The mode the framebuffer is in: 32 bits a pixel, bytes B, G, R, X (XRGB8888).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FramebufferMode {
    pub width: u32,
    pub height: u32,
}

impl FramebufferMode {
    pub fn stride(&self) -> u32 {
        self.width * 4
    }

    /// Bytes the framebuffer takes, rounded up to whole pages.
    pub fn bytes(&self) -> u64 {
        (u64::from(self.stride()) * u64::from(self.height)).next_multiple_of(4096)
    }

    pub fn check(&self) -> Result<(), FramebufferError> {
        let fits = self.width >= 320 && self.height >= 200 && self.bytes() <= MAX_BYTES;
        if fits {
            Ok(())
        } else {
            Err(FramebufferError::Size { width: self.width, height: self.height })
        }
    }
}

/// The framebuffer's memory; its refresher runs from `start` until the value is dropped.
/// A boot framebuffer's saved state.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BootFramebufferState {
    pub mode: (u32, u32),
    /// (row, its bytes) of the rows not all black.
    pub rows: Vec<(u32, Vec<u8>)>,
}

pub struct BootFramebuffer {
    mode: FramebufferMode,
    region: Arc<MmapRegion>,
    refresher: Option<(Sender<()>, JoinHandle<()>)>,
    display: Option<Display>,
}

impl BootFramebuffer {
    pub fn new(mode: FramebufferMode) -> Result<Self, FramebufferError> {
        mode.check()?;
        let region = MmapRegion::new(mode.bytes() as usize).map_err(FramebufferError::Allocate)?;
        Ok(BootFramebuffer { mode, region: Arc::new(region), refresher: None, display: None })
    }

    pub fn mode(&self) -> FramebufferMode {
        self.mode
    }

    /// What the guest drew: its mode, and the rows that are not all black (most of a
    /// framebuffer a guest with a GPU never draws on).
    pub fn save_state(&self) -> BootFramebufferState {
        let stride = self.mode.stride() as usize;
        let mut row = vec![0u8; stride];
        let rows = (0..self.mode.height)
            .filter_map(|y| {
                self.region.get_slice(y as usize * stride, stride).ok()?.copy_to(&mut row[..]);
                row.iter().any(|&b| b != 0).then(|| (y, row.clone()))
            })
            .collect();
        BootFramebufferState { mode: (self.mode.width, self.mode.height), rows }
    }

    /// Puts saved rows back (before the guest runs); the mode must be this one's.
    pub fn restore_state(&self, state: &BootFramebufferState) -> Result<(), String> {
        let (width, height) = state.mode;
        if (width, height) != (self.mode.width, self.mode.height) {
            return Err(format!(
                "the boot framebuffer was {width}x{height}; this machine's is {}x{}",
                self.mode.width, self.mode.height
            ));
        }
        let stride = self.mode.stride() as usize;
        if state.rows.iter().any(|(y, row)| *y >= height || row.len() != stride) {
            return Err("the boot framebuffer's saved rows do not fit it".into());
        }
        for (y, row) in &state.rows {
            let slice = self.region.get_slice(*y as usize * stride, stride);
            slice.map_err(|e| e.to_string())?.copy_from(&row[..]);
        }
        Ok(())
    }

    /// The host mapping, for the KVM memory slot: (address, length).
    pub fn host_mapping(&self) -> (u64, u64) {
        (self.region.as_ptr() as u64, self.region.size() as u64)
    }

    /// Shows the framebuffer on `display` and starts following what the guest draws.
    pub fn start(&mut self, display: Display) -> Result<(), FramebufferError> {
        let shadow =
            Image::new(self.mode.width, self.mode.height, PixelFormat::Bgrx).expect("checked size");
        let shadow: SharedImage = Arc::new(std::sync::Mutex::new(shadow));
        let view = Rect::new(0, 0, self.mode.width, self.mode.height);
        display.set_boot_scanout(Some((shadow.clone(), view)));
        let (stop, stopped) = channel();
        let (region, mode, shown) = (self.region.clone(), self.mode, display.clone());
        let thread = std::thread::Builder::new()
            .name("vessel-bootfb".into())
            .spawn(move || {
                crate::seccomp::confine_this_thread(crate::seccomp::ThreadKind::DeviceIo);
                refresh(&region, mode, &shadow, &shown, &stopped)
            })
            .map_err(FramebufferError::Thread)?;
        self.refresher = Some((stop, thread));
        self.display = Some(display);
        Ok(())
    }
}

impl Drop for BootFramebuffer {
    fn drop(&mut self) {
        if let Some((stop, thread)) = self.refresher.take() {
            drop(stop);
            let _ = thread.join();
        }
        if let Some(display) = &self.display {
            display.set_boot_scanout(None);
        }
    }
}

/// Until `stopped` disconnects: copies the rows that changed into `shadow` and tells the
/// display which rectangle changed.
fn refresh(
    region: &MmapRegion,
    mode: FramebufferMode,
    shadow: &SharedImage,
    display: &Display,
    stopped: &Receiver<()>,
) {
    let stride = mode.stride() as usize;
    let mut row = vec![0u8; stride];
    // The shadow's rows never written are black, and untouched: reading a row of the memfd
    // would give it memory of its own, so a black row of a guest that draws nothing (most
    // guests with a GPU) costs the process nothing.
    let mut written = vec![false; mode.height as usize];
    while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(REFRESH) {
        if !display.showing_boot() {
            continue; // the GPU's scanout is shown: nothing to follow
        }
        let mut changed: Option<(usize, usize, usize, usize)> = None; // x0, x1, y0, y1 in px
        let mut image = lock(shadow);
        for (y, written) in written.iter_mut().enumerate() {
            let Ok(slice) = region.get_slice(y * stride, stride) else { break };
            slice.copy_to(&mut row[..]);
            if !*written && row.iter().all(|&b| b == 0) {
                continue;
            }
            *written = true;
            let old = &mut image.pixels[y * stride..(y + 1) * stride];
            if *old == row[..] {
                continue;
            }
            let first = old.iter().zip(&row).position(|(a, b)| a != b).unwrap_or(0) / 4;
            let last = old.iter().zip(&row).rposition(|(a, b)| a != b).unwrap_or(0) / 4;
            old.copy_from_slice(&row);
            changed = Some(match changed {
                None => (first, last, y, y),
                Some((x0, x1, y0, _)) => (x0.min(first), x1.max(last), y0, y),
            });
        }
        drop(image);
        if let Some((x0, x1, y0, y1)) = changed {
            let rect = Rect::new(x0 as u32, y0 as u32, (x1 - x0 + 1) as u32, (y1 - y0 + 1) as u32);
            display.flushed(shadow, rect);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert!(FramebufferMode { width: 1024, height: 768 }.check().is_ok());
        assert!(FramebufferMode { width: 2560, height: 1600 }.check().is_ok());
        assert!(FramebufferMode { width: 4096, height: 2160 }.check().is_err());
        assert!(FramebufferMode { width: 100, height: 768 }.check().is_err());
        assert_eq!(FramebufferMode { width: 1000, height: 3 }.bytes(), 12288);
    }

    #[test]
    fn a_saved_framebuffer_keeps_only_its_drawn_rows_and_takes_only_its_own_mode() {
        let mode = FramebufferMode { width: 320, height: 200 };
        let fb = BootFramebuffer::new(mode).unwrap();
        fb.region.get_slice(7 * 320 * 4 + 8, 4).unwrap().copy_from(&[1u8, 2, 3, 0][..]);
        let state = fb.save_state();
        assert_eq!(state.rows.len(), 1, "black rows are not kept");
        let back = BootFramebuffer::new(mode).unwrap();
        back.restore_state(&state).unwrap();
        let mut px = [0u8; 4];
        back.region.get_slice(7 * 320 * 4 + 8, 4).unwrap().copy_to(&mut px[..]);
        assert_eq!(px, [1, 2, 3, 0]);
        let other = BootFramebuffer::new(FramebufferMode { width: 640, height: 480 }).unwrap();
        assert!(other.restore_state(&state).unwrap_err().contains("320x200"));
        let mut bad = state;
        bad.rows[0].0 = 200;
        assert!(back.restore_state(&bad).is_err(), "a row past the last");
    }

    #[test]
    fn what_the_guest_draws_reaches_the_display() {
        let display = Display::new().unwrap();
        let mode = FramebufferMode { width: 320, height: 200 };
        let mut fb = BootFramebuffer::new(mode).unwrap();
        fb.start(display.clone()).unwrap();
        assert_eq!(display.size(), Some((320, 200)));
        assert!(!display.drawn(), "a black framebuffer put up is not drawn");
        let g = display.generation();
        // The guest writes a pixel at (10, 20) and one at (30, 25).
        let stride = 320 * 4;
        fb.region.get_slice(20 * stride + 10 * 4, 4).unwrap().copy_from(&[1u8, 2, 3, 0][..]);
        fb.region.get_slice(25 * stride + 30 * 4, 4).unwrap().copy_from(&[9u8, 9, 9, 0][..]);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while display.generation() == g && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        display
            .read(g, |f| {
                assert_eq!(f.damage, super::super::Damage::Rects(vec![Rect::new(10, 20, 21, 6)]));
                assert_eq!(&f.pixels[20 * f.stride + 40..20 * f.stride + 44], &[1, 2, 3, 0]);
            })
            .unwrap();
        assert!(display.drawn());
        // A GPU scanout hides it; dropping it leaves nothing.
        let gpu = Arc::new(std::sync::Mutex::new(Image::new(64, 64, PixelFormat::Bgrx).unwrap()));
        display.set_scanout(Some((gpu, Rect::new(0, 0, 64, 64))));
        assert!(!display.showing_boot());
        display.set_scanout(None);
        assert_eq!(display.size(), Some((320, 200)), "the boot framebuffer shows again");
        drop(fb);
        assert_eq!(display.size(), None);
    }
}
