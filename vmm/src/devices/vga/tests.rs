use super::*;
use crate::devices::pci::config::{BAR0, COMMAND};

fn vga() -> (SharedVga, StdVga) {
    let vram = Arc::new(Vram::new(VRAM_BYTES).unwrap());
    let core = Arc::new(Mutex::new(VgaCore::new(vram)));
    let device = StdVga::new(core.clone(), None, None);
    (core, device)
}

#[test]
fn pci_identity_and_bars() {
    let (_, mut dev) = vga();
    let c = dev.config();
    assert_eq!(c.read32(0), 0x1111_1234);
    assert_eq!(c.read32(8) >> 8, 0x03_00_00, "a VGA-compatible display controller");
    // BAR 0: 16 MiB, 32-bit, prefetchable; BAR 2: 4 KiB.
    dev.config_write(BAR0, &[0xff; 4]);
    assert_eq!(dev.config().read32(BAR0), 0xff00_0008);
    dev.config_write(BAR0 + 8, &[0xff; 4]);
    assert_eq!(dev.config().read32(BAR0 + 8), 0xffff_f000);
    assert_eq!(dev.config().read16(COMMAND), 0);
}

#[test]
fn the_mmio_bar_has_edid_vga_ports_dispi_and_qext() {
    let (core, mut dev) = vga();
    let mut b = [0u8; 8];
    dev.bar_read(2, 0, &mut b);
    assert_eq!(b, [0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0], "the EDID header");
    let mut edid = [0u8; 128];
    dev.bar_read(2, 0, &mut edid);
    assert_eq!(edid.iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0, "its checksum");
    // DISPI at 0x500 + 2 * index.
    let mut w = [0u8; 2];
    dev.bar_read(2, 0x500, &mut w);
    assert_eq!(u16::from_le_bytes(w), regs::DISPI_ID5);
    dev.bar_write(2, 0x500 + 2 * regs::DISPI_XRES as u64, &800u16.to_le_bytes());
    assert_eq!(lock(&core).regs.dispi[regs::DISPI_XRES], 800);
    dev.bar_read(2, 0x500 + 2 * regs::DISPI_VIDEO_MEMORY_64K as u64, &mut w);
    assert_eq!(u16::from_le_bytes(w), 256);
    // VGA ports at 0x400 + port - 0x3C0: the sequencer index and data as one word.
    dev.bar_write(2, 0x404, &[0x02, 0x0f]);
    assert_eq!(lock(&core).regs.seq[2], 0x0f);
    let mut q = [0u8; 4];
    dev.bar_read(2, 0x604, &mut q);
    assert_eq!(u32::from_le_bytes(q), QEXT_LITTLE_ENDIAN);
    dev.bar_read(2, 0x600, &mut q);
    assert_eq!(u32::from_le_bytes(q), QEXT_SIZE);
    // Past the registers: zeros, no panic.
    dev.bar_read(2, 0xfff, &mut b[..1]);
    dev.bar_write(2, 0x3ff, &[1, 2, 3, 4]);
}

#[test]
fn ports_window_and_lfb_share_one_memory() {
    let (core, mut dev) = vga();
    let mut ports = VgaPorts::new(core.clone());
    let mut window = VgaWindow::new(core.clone());
    ports.write(0x3b0, 0x3c2 - 0x3b0, &[0x67]);
    // Chain-4 at A0000: the window's byte 5 is memory byte 5.
    ports.write(0x3b0, 0x3c4 - 0x3b0, &[0x04, 0x0e]);
    ports.write(0x3b0, 0x3c4 - 0x3b0, &[0x02, 0x0f]);
    ports.write(0x3b0, 0x3ce - 0x3b0, &[0x06, 0x05]);
    window.write(WINDOW_START, 5, &[0xab, 0xcd]);
    let mut b = [0u8; 2];
    dev.bar_read(0, 5, &mut b);
    assert_eq!(b, [0xab, 0xcd]);
    dev.bar_write(0, 7, &[0x11]);
    window.read(WINDOW_START, 7, &mut b[..1]);
    assert_eq!(b[0], 0x11);
    // DISPI through its ports.
    ports.write(u64::from(DISPI_PORT), 0, &(regs::DISPI_BPP as u16).to_le_bytes());
    ports.write(u64::from(DISPI_PORT), 1, &32u16.to_le_bytes());
    ports.read(u64::from(DISPI_PORT), 1, &mut b);
    assert_eq!(u16::from_le_bytes(b), 32);
    // Writes past the framebuffer's end are dropped.
    dev.bar_write(0, VRAM_BYTES as u64 - 1, &[1, 2, 3]);
    assert!(lock(&core).dirty.any(VRAM_BYTES - 1, 1));
}

#[test]
fn frames_reach_the_display() {
    let (core, _dev) = vga();
    let display = Display::new().unwrap();
    let mut ports = VgaPorts::new(core.clone());
    let mut window = VgaWindow::new(core.clone());
    // A DISPI mode, drawn into through the banked window.
    for (index, value) in [(regs::DISPI_XRES, 64u16), (regs::DISPI_YRES, 48), (regs::DISPI_BPP, 32)]
    {
        ports.write(u64::from(DISPI_PORT), 0, &(index as u16).to_le_bytes());
        ports.write(u64::from(DISPI_PORT), 1, &value.to_le_bytes());
    }
    ports.write(u64::from(DISPI_PORT), 0, &(regs::DISPI_ENABLE as u16).to_le_bytes());
    ports.write(u64::from(DISPI_PORT), 1, &regs::DISPI_ENABLED.to_le_bytes());
    ports.write(0x3b0, 0x3c0 - 0x3b0, &[0x20]);
    let mut renderer = Renderer::default();
    let mut spare = DirtyPages::new(VRAM_BYTES / vram::PAGE);
    let mut shown = None;
    let phase = Phase { cursor: true, blink: true };
    frame(&core, &mut renderer, &mut spare, &mut shown, &display, phase);
    assert_eq!(display.size(), Some((64, 48)));
    assert!(display.drawn());
    let g = display.generation();
    window.write(WINDOW_START, (10 * 64 + 3) * 4, &[0, 0, 0xff, 0]);
    frame(&core, &mut renderer, &mut spare, &mut shown, &display, phase);
    let damage = display.read(g, |f| {
        assert_eq!(&f.pixels[10 * f.stride + 12..10 * f.stride + 16], &[0, 0, 0xff, 0]);
        f.damage
    });
    assert_eq!(damage, Some(crate::display::Damage::Rects(vec![Rect::new(0, 10, 64, 1)])));
    // Nothing written: nothing published.
    let g = display.generation();
    frame(&core, &mut renderer, &mut spare, &mut shown, &display, phase);
    assert_eq!(display.generation(), g);
}

#[test]
fn a_rom_that_is_too_big_or_missing_is_refused() {
    let dir = std::env::temp_dir().join(format!("vessel-vga-rom-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let big = dir.join("big.rom");
    std::fs::write(&big, vec![0u8; MAX_ROM_BYTES as usize + 1]).unwrap();
    assert!(matches!(read_rom(&big), Err(VgaError::RomSize { .. })));
    let missing = read_rom(&dir.join("none.rom")).unwrap_err();
    assert!(missing.to_string().contains("apt-get install seabios"), "{missing}");
    let ok = dir.join("ok.rom");
    std::fs::write(&ok, [0x55, 0xaa]).unwrap();
    assert_eq!(read_rom(&ok).unwrap(), [0x55, 0xaa]);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn the_edid_offers_the_size_the_window_asks_for() {
    let vram = Arc::new(Vram::new(VRAM_BYTES).unwrap());
    let core = Arc::new(Mutex::new(VgaCore::new(vram)));
    let display = Display::new().unwrap();
    let mut dev = StdVga::new(core, None, Some(display.clone()));
    // The preferred timing's active size (EDID 1.4 §3.10.2: bytes 56/58 and 59/61).
    let mut preferred = || {
        let mut e = [0u8; 128];
        dev.bar_read(2, 0, &mut e);
        let h = u32::from(e[56]) | (u32::from(e[58] >> 4) << 8);
        let v = u32::from(e[59]) | (u32::from(e[61] >> 4) << 8);
        (h, v)
    };
    assert_eq!(preferred(), (1024, 768), "before the window asks");
    display.request_resize(1280, 720);
    assert_eq!(preferred(), (1280, 720), "read again, as a driver's probe does");
    display.request_resize(4000, 3000);
    assert_eq!(preferred(), (2128, 1600), "at most what DISPI offers, in the window's shape");
}

/// What Linux's bochs-drm does with the device (drivers/gpu/drm/tiny/bochs.c), through BAR
/// 2 as it does when the BAR is memory: probe, mode set, scanout base and byte order; the
/// picture follows, in both of its pixel formats.
#[test]
fn bochs_drm_drives_it_through_the_mmio_bar() {
    let (core, mut dev) = vga();
    let display = Display::new().unwrap();
    let read16 = |dev: &mut StdVga, offset: u64| {
        let mut w = [0u8; 2];
        dev.bar_read(2, offset, &mut w);
        u16::from_le_bytes(w)
    };
    let dispi = |dev: &mut StdVga, reg: usize, value: u16| {
        dev.bar_write(2, 0x500 + 2 * reg as u64, &value.to_le_bytes());
    };
    // bochs_hw_init: the ID and memory size, QEMU's extended registers, native byte order.
    assert_eq!(read16(&mut dev, 0x500) & 0xfff0, regs::DISPI_ID0);
    let mem = u64::from(read16(&mut dev, 0x500 + 2 * regs::DISPI_VIDEO_MEMORY_64K as u64)) << 16;
    assert_eq!(mem, VRAM_BYTES as u64, "the BAR's size, which the driver checks");
    assert_eq!(dev.config().read32(8) & 0xff, 2, "revision 2 has the extended registers");
    let mut q = [0u8; 4];
    dev.bar_read(2, 0x600, &mut q);
    let qext = u32::from_le_bytes(q);
    assert!((4..=0x1000).contains(&qext));
    dev.bar_write(2, 0x604, &QEXT_LITTLE_ENDIAN.to_le_bytes());
    // The EDID header it checks for.
    let mut header = [0u8; 8];
    dev.bar_read(2, 0, &mut header);
    assert_eq!(header, [0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0]);
    // bochs_hw_setmode for 1280x720: unblank, then the DISPI registers.
    dev.bar_write(2, 0x402, &[0x01]);
    dev.bar_read(2, 0x41a, &mut [0u8]);
    dev.bar_write(2, 0x400, &[0x20]);
    let (xres, yres) = (1280u16, 720u16);
    let stride = u32::from(xres) * 4;
    for (reg, value) in [
        (regs::DISPI_ENABLE, 0),
        (regs::DISPI_BPP, 32),
        (regs::DISPI_XRES, xres),
        (regs::DISPI_YRES, yres),
        (regs::DISPI_BANK, 0),
        (regs::DISPI_VIRT_WIDTH, xres),
        (regs::DISPI_VIRT_HEIGHT, (VRAM_BYTES as u32 / stride) as u16),
        (regs::DISPI_X_OFFSET, 0),
        (regs::DISPI_Y_OFFSET, 0),
        (regs::DISPI_ENABLE, regs::DISPI_ENABLED | 0x40),
    ] {
        dispi(&mut dev, reg, value);
    }
    // bochs_hw_setbase: its framebuffer object at 4 MiB of video memory.
    let base = 4u32 << 20;
    dispi(&mut dev, regs::DISPI_VIRT_WIDTH, xres);
    dispi(&mut dev, regs::DISPI_X_OFFSET, ((base % stride) / 4) as u16);
    dispi(&mut dev, regs::DISPI_Y_OFFSET, (base / stride) as u16);
    // A pixel at (10, 20) of it, XRGB8888.
    let at = u64::from(base + 20 * stride + 10 * 4);
    dev.bar_write(0, at, &0x00ff_8040u32.to_le_bytes());
    let mut renderer = Renderer::default();
    let mut spare = DirtyPages::new(VRAM_BYTES / vram::PAGE);
    let mut shown = None;
    let phase = Phase { cursor: true, blink: true };
    let pixel = |display: &Display| {
        display.read(0, |f| {
            let p = &f.pixels[20 * f.stride + 40..][..4];
            f.format.to_rgba(p)
        })
    };
    frame(&core, &mut renderer, &mut spare, &mut shown, &display, phase);
    assert_eq!(display.size(), Some((1280, 720)));
    assert_eq!(pixel(&display), Some([0xff, 0x80, 0x40, 0xff]));
    // BGRX8888: the byte order register says big-endian.
    dev.bar_write(2, 0x604, &QEXT_BIG_ENDIAN.to_le_bytes());
    dev.bar_read(2, 0x604, &mut q);
    assert_eq!(u32::from_le_bytes(q), QEXT_BIG_ENDIAN);
    dev.bar_write(0, at, &[0x00, 0x11, 0x22, 0x33]);
    frame(&core, &mut renderer, &mut spare, &mut shown, &display, phase);
    assert_eq!(pixel(&display), Some([0x11, 0x22, 0x33, 0xff]));
}

#[test]
fn a_saved_state_comes_back_and_a_hostile_one_is_refused_or_tamed() {
    let (core, mut dev) = vga();
    dev.bar_write(2, 0x500 + 2 * regs::DISPI_XRES as u64, &800u16.to_le_bytes());
    dev.bar_write(2, 0x500 + 2 * regs::DISPI_YRES as u64, &600u16.to_le_bytes());
    dev.bar_write(2, 0x500 + 2 * regs::DISPI_BPP as u64, &32u16.to_le_bytes());
    dev.bar_write(2, 0x500 + 2 * regs::DISPI_ENABLE as u64, &0x41u16.to_le_bytes());
    dev.bar_write(0, 5 * 4096 + 8, &[1, 2, 3, 4]);
    dev.config_write(BAR0, &0xe000_0000u32.to_le_bytes());
    let saved = dev.save_state().unwrap();
    let regs_before = lock(&core).regs.clone();

    let (other_core, mut other) = vga();
    other.restore_state(&saved).unwrap();
    assert!(lock(&other_core).regs == regs_before, "the registers as they were");
    let mut px = [0u8; 4];
    other.bar_read(0, 5 * 4096 + 8, &mut px);
    assert_eq!(px, [1, 2, 3, 4], "video memory as it was");
    assert_eq!(other.config().read32(BAR0), 0xe000_0008, "the BAR where the guest put it");

    // Hostile: a DISPI mode past what memory holds is brought to one that fits, indexes
    // to what the ports allow; a DAC sub-index past 3, short arrays, pages outside memory
    // are refused.
    let (_, mut third) = vga();
    assert!(third.restore_state(&saved[..saved.len() - 10]).is_err(), "a cut state");
    let mut state: persist::VgaState = crate::persist::decode_part(&saved).unwrap();
    state.pages.push((u32::MAX, vec![0; 4096]));
    let (_, mut fourth) = vga();
    let err = fourth.restore_state(&crate::persist::encode_part(&state)).unwrap_err();
    assert!(err.contains("page"), "{err}");
    state.pages.pop();
    state.pages.push((3, vec![0; 10]));
    assert!(fourth.restore_state(&crate::persist::encode_part(&state)).is_err());
    state.pages.pop();
    let mut hostile = lock(&core).regs.clone();
    hostile.dispi[regs::DISPI_XRES] = u16::MAX;
    hostile.dispi[regs::DISPI_YRES] = u16::MAX;
    hostile.dispi[regs::DISPI_BPP] = 77;
    hostile.seq_index = 200;
    hostile.gc_index = 99;
    let restored = Registers::restored(&hostile.save(), VRAM_BYTES).unwrap();
    assert!(restored.dispi[regs::DISPI_XRES] <= regs::DISPI_MAX_XRES);
    assert!(restored.dispi[regs::DISPI_YRES] <= regs::DISPI_MAX_YRES);
    assert_eq!(restored.dispi[regs::DISPI_BPP], 8);
    assert!(restored.seq_index < 8 && restored.gc_index < 16);
    hostile.dac_sub = 9;
    assert!(Registers::restored(&hostile.save(), VRAM_BYTES).unwrap_err().contains("DAC"));
}
