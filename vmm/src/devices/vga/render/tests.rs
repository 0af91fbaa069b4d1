use super::*;

fn vram() -> Vram {
    Vram::new(1 << 20).unwrap()
}

/// The registers of mode 3 (80x25 text, 9x16 cells), as the VGA BIOS sets them.
fn text_mode() -> Registers {
    let mut r = Registers { misc: 0x67, ac_index: AC_PAS, ..Registers::default() };
    r.gc[GC_MISC] = 0x0e;
    r.gc[GC_MODE] = 0x10;
    r.crtc[CRTC_H_DISP_END] = 79;
    r.crtc[CRTC_V_DISP_END] = 0x8f;
    r.crtc[CRTC_OVERFLOW] = 0x1f;
    r.crtc[CRTC_MAX_SCAN] = 0x4f;
    r.crtc[CRTC_OFFSET] = 40;
    r.crtc[CRTC_MODE] = 0xa3;
    r.crtc[CRTC_LINE_COMPARE] = 0xff;
    r.crtc[CRTC_CURSOR_START] = 0x20; // hidden
    for (i, v) in [0, 1, 2, 3, 4, 5, 0x14, 7, 0x38, 0x39, 0x3a, 0x3b, 0x3c, 0x3d, 0x3e, 0x3f]
        .into_iter()
        .enumerate()
    {
        r.ac[i] = v;
    }
    r.ac[AC_MODE] = 0x0c;
    r.ac[AC_PLANE_ENABLE] = 0x0f;
    // DAC 0: black, 1: blue (0, 0, 42), 7: light grey, 0x3f: white.
    r.palette[3..6].copy_from_slice(&[0, 0, 42]);
    r.palette[7 * 3..7 * 3 + 3].copy_from_slice(&[42, 42, 42]);
    r.palette[0x3f * 3..0x3f * 3 + 3].copy_from_slice(&[63, 63, 63]);
    r
}

fn pixel(image: &SharedImage, x: u32, y: u32) -> u32 {
    let image = lock(image);
    let at = (y * image.width + x) as usize * 4;
    u32::from_le_bytes(image.pixels[at..at + 4].try_into().unwrap())
}

fn size(image: &SharedImage) -> (u32, u32) {
    let image = lock(image);
    (image.width, image.height)
}

const BLUE: u32 = 0x0000_00aa;
const WHITE: u32 = 0xff_ffff;

fn render(
    r: &mut Renderer,
    regs: &Registers,
    vram: &Vram,
    dirty: &DirtyPages,
    font: bool,
) -> Output {
    let phase = Phase { cursor: true, blink: true };
    r.render(&Input { regs, vram, dirty, font, phase })
}

#[test]
fn nothing_shows_until_the_palette_is_on() {
    let vram = vram();
    let dirty = DirtyPages::new(vram.pages());
    let mut r = Renderer::default();
    assert_eq!(render(&mut r, &Registers::default(), &vram, &dirty, false), Output::Nothing);
}

#[test]
fn text_mode_from_the_planes() {
    let vram = vram();
    let mut dirty = DirtyPages::new(vram.pages());
    let mut regs = text_mode();
    // Glyph 'A' (0x41) in font map 0 (plane 2): row 0 = 0b1000_0001; glyph 0xC4 (a line
    // character) row 0 = 0b0000_0001.
    vram.write_byte(2 + 32 * 4 * 0x41, 0x81);
    vram.write_byte(2 + 32 * 4 * 0xc4, 0x01);
    // Cell 0: 'A' white on blue; cell 1: 0xC4 white on blue.
    for (cell, chr) in [(0usize, 0x41u8), (1, 0xc4)] {
        vram.write_byte(cell * 4, chr);
        vram.write_byte(cell * 4 + 1, 0x1f);
    }
    let mut r = Renderer::default();
    let Output::New(image) = render(&mut r, &regs, &vram, &dirty, true) else {
        panic!("a new picture")
    };
    assert_eq!(size(&image), (720, 400));
    assert_eq!(pixel(&image, 0, 0), WHITE);
    assert_eq!(pixel(&image, 1, 0), BLUE);
    assert_eq!(pixel(&image, 7, 0), WHITE);
    assert_eq!(pixel(&image, 8, 0), BLUE, "the 9th column is the background for letters");
    assert_eq!(pixel(&image, 9 + 7, 0), WHITE);
    assert_eq!(pixel(&image, 9 + 8, 0), WHITE, "and repeats the 8th for line drawing");
    assert_eq!(pixel(&image, 0, 1), BLUE);
    assert_eq!(pixel(&image, 30, 0), 0, "black on black elsewhere");
    // Nothing changed: nothing to draw.
    assert_eq!(render(&mut r, &regs, &vram, &dirty, false), Output::Damage(vec![]));
    // A character changes: its cell only.
    vram.write_byte(81 * 4, b'A');
    dirty.mark(81 * 4, 1);
    assert_eq!(
        render(&mut r, &regs, &vram, &dirty, false),
        Output::Damage(vec![Rect::new(9, 16, 9, 16)])
    );
    // The cursor shows in its cell, on the lines CR0A-CR0B name.
    regs.crtc[CRTC_CURSOR_START] = 14;
    regs.crtc[CRTC_CURSOR_END] = 15;
    regs.crtc[CRTC_CURSOR_LO] = 2;
    vram.write_byte(2 * 4 + 1, 0x07);
    let Output::Damage(_) = render(&mut r, &regs, &vram, &dirty, false) else { panic!() };
    assert_eq!(pixel(&image, 18 + 4, 14), 0xaa_aaaa, "the cell's foreground, light grey");
    assert_eq!(pixel(&image, 18 + 4, 13), 0);
    // With blinking on, attribute bit 7 hides the character in the off phase and the
    // background takes 3 bits.
    vram.write_byte(1, 0x9f);
    let phase = Phase { cursor: false, blink: false };
    r.render(&Input { regs: &regs, vram: &vram, dirty: &dirty, font: false, phase });
    assert_eq!(pixel(&image, 0, 0), BLUE);
    // A font change redraws everything.
    vram.write_byte(2 + 32 * 4 * 0x41, 0xff);
    let Output::Damage(d) = render(&mut r, &regs, &vram, &dirty, true) else { panic!() };
    assert_eq!(d.len(), 25);
    assert_eq!(pixel(&image, 3, 0), WHITE);
}

#[test]
fn mode_13h_doubles_pixels_and_lines() {
    let vram = vram();
    let mut dirty = DirtyPages::new(vram.pages());
    let mut regs = text_mode();
    regs.gc[GC_MISC] = 0x05;
    regs.gc[GC_MODE] = 0x40;
    regs.seq[SEQ_MEMORY_MODE] = 0x0e;
    regs.crtc[CRTC_MAX_SCAN] = 0x41;
    regs.ac[AC_MODE] = 0x41;
    regs.palette[5 * 3..5 * 3 + 3].copy_from_slice(&[63, 0, 0]);
    vram.write_byte(320 + 3, 5); // pixel (3, 1)
    let mut r = Renderer::default();
    let Output::New(image) = render(&mut r, &regs, &vram, &dirty, false) else { panic!() };
    assert_eq!(size(&image), (640, 400));
    for (x, y) in [(6, 2), (7, 2), (6, 3), (7, 3)] {
        assert_eq!(pixel(&image, x, y), 0xff_0000, "({x}, {y})");
    }
    assert_eq!(pixel(&image, 5, 2), 0);
    assert_eq!(pixel(&image, 6, 4), 0);
    // Only the lines that read a dirty page are drawn again.
    vram.write_byte(100 * 320, 5);
    assert_eq!(render(&mut r, &regs, &vram, &dirty, false), Output::Damage(vec![]), "not marked");
    dirty.mark(100 * 320, 1);
    let Output::Damage(d) = render(&mut r, &regs, &vram, &dirty, false) else { panic!() };
    assert_eq!(d, vec![Rect::new(0, 200, 640, 2)]);
}

#[test]
fn planar_16_colours() {
    let vram = vram();
    let dirty = DirtyPages::new(vram.pages());
    let mut regs = text_mode();
    regs.gc[GC_MISC] = 0x05;
    regs.gc[GC_MODE] = 0x00;
    regs.crtc[CRTC_V_DISP_END] = 0xdf;
    regs.crtc[CRTC_OVERFLOW] = 0x3e;
    regs.crtc[CRTC_MAX_SCAN] = 0x40;
    regs.crtc[CRTC_MODE] = 0xe3;
    regs.ac[AC_MODE] = 0x01;
    // Pixel 0 of line 0 has colour 1 (plane 0), pixel 1 colour 0xf (white).
    vram.write_planes(0, 0x4040_40c0);
    let mut r = Renderer::default();
    let Output::New(image) = render(&mut r, &regs, &vram, &dirty, false) else { panic!() };
    assert_eq!(size(&image), (640, 480));
    assert_eq!(pixel(&image, 0, 0), BLUE);
    assert_eq!(pixel(&image, 1, 0), WHITE);
    // The colour plane enable register masks planes out.
    regs.ac[AC_PLANE_ENABLE] = 0x01;
    render(&mut r, &regs, &vram, &dirty, false);
    assert_eq!(pixel(&image, 1, 0), BLUE);
}

#[test]
fn dispi_linear_modes() {
    let vram = vram();
    let dirty = DirtyPages::new(vram.pages());
    let mut regs = text_mode();
    let dispi = |regs: &mut Registers, index: usize, value: u16| {
        regs.dispi_index = index as u16;
        regs.dispi_write(value, &vram);
    };
    dispi(&mut regs, DISPI_XRES, 64);
    dispi(&mut regs, DISPI_YRES, 32);
    dispi(&mut regs, DISPI_BPP, 32);
    dispi(&mut regs, DISPI_ENABLE, DISPI_ENABLED | DISPI_NOCLEARMEM);
    vram.copy_out(0, &mut [0u8; 4]);
    let px = |x: usize, y: usize| (y * 64 + x) * 4;
    for (i, b) in [0x10u8, 0x20, 0x30, 0].into_iter().enumerate() {
        vram.write_byte(px(5, 7) + i, b);
    }
    let mut r = Renderer::default();
    let Output::New(image) = render(&mut r, &regs, &vram, &dirty, false) else { panic!() };
    assert_eq!(size(&image), (64, 32));
    assert_eq!(pixel(&image, 5, 7), 0x30_2010);
    // 16 bpp: 5-6-5, full-scale values reach 255.
    dispi(&mut regs, DISPI_BPP, 16);
    vram.write_byte(0, 0xff);
    vram.write_byte(1, 0xff);
    render(&mut r, &regs, &vram, &dirty, false);
    assert_eq!(pixel(&image, 0, 0), 0xff_ffff);
    // 24 bpp.
    dispi(&mut regs, DISPI_BPP, 24);
    for (i, b) in [1u8, 2, 3].into_iter().enumerate() {
        vram.write_byte(3 + i, b);
    }
    render(&mut r, &regs, &vram, &dirty, false);
    assert_eq!(pixel(&image, 1, 0), 0x03_0201);
    // A panning offset moves the picture.
    dispi(&mut regs, DISPI_BPP, 32);
    dispi(&mut regs, DISPI_X_OFFSET, 5);
    dispi(&mut regs, DISPI_Y_OFFSET, 7);
    render(&mut r, &regs, &vram, &dirty, false);
    assert_eq!(pixel(&image, 0, 0), 0x30_2010);
}

#[test]
fn hostile_geometry_stays_bounded() {
    let vram = vram();
    let dirty = DirtyPages::new(vram.pages());
    let mut regs = text_mode();
    let mut r = Renderer::default();
    // The largest text geometry the registers can name is more cells than a screen has.
    regs.crtc[CRTC_H_DISP_END] = 0xff;
    regs.crtc[CRTC_MAX_SCAN] = 0;
    regs.crtc[CRTC_OVERFLOW] = 0x42;
    regs.crtc[CRTC_V_DISP_END] = 0xff;
    assert_eq!(render(&mut r, &regs, &vram, &dirty, false), Output::Nothing);
    // The largest graphics geometry: 4096 wide with the half clock, 1024 lines.
    regs.gc[GC_MISC] = 0x01;
    regs.gc[GC_MODE] = 0x00;
    regs.seq[SEQ_CLOCK] = 0x08;
    regs.crtc[CRTC_OFFSET] = 0xff;
    regs.crtc[CRTC_START_HI] = 0xff;
    regs.crtc[CRTC_START_LO] = 0xff;
    let Output::New(image) = render(&mut r, &regs, &vram, &dirty, false) else { panic!() };
    assert_eq!(size(&image), (4096, 1024));
    // Every shift mode, with every address wrapping around memory.
    for mode in [0x20, 0x40, 0x60] {
        regs.gc[GC_MODE] = mode;
        render(&mut r, &regs, &vram, &dirty, true);
    }
}
