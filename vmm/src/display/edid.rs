//! An EDID 1.4 base block (VESA E-EDID Release A, Rev. 2) for the virtual monitor, whose
//! preferred mode (the first detailed timing) is the size the host asks for, so the
//! guest's mode list starts with the window's size.

/// Largest active size a detailed timing descriptor can hold (12 bits each).
const DTD_MAX: u32 = 4095;
/// Largest pixel clock a detailed timing descriptor can hold (16 bits of 10 kHz).
const MAX_CLOCK_HZ: u64 = 65_535 * 10_000;

/// Blanking after VESA CVT reduced blanking (CVT 1.2 §3.4): a fixed horizontal blank and a
/// short vertical one.
const H_FRONT: u32 = 48;
const H_SYNC: u32 = 32;
const H_BLANK: u32 = 160;
const V_FRONT: u32 = 3;
const V_SYNC: u32 = 6;
const V_BLANK: u32 = 40;

/// Pixels per centimetre of the virtual monitor's physical size (96 DPI).
const PIXELS_PER_CM: f64 = 96.0 / 2.54;

/// The EDID for a monitor whose preferred mode is `width` x `height` (clamped to what an
/// EDID detailed timing can say; larger sizes still come through the display info).
pub fn edid(width: u32, height: u32) -> [u8; 128] {
    let (w, h) = (width.clamp(1, DTD_MAX), height.clamp(1, DTD_MAX));
    let mut e = [0u8; 128];
    e[0..8].copy_from_slice(&[0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00]);
    // Manufacturer "VSL": three 5-bit letters (A = 1), big-endian.
    let letters =
        |s: &[u8; 3]| -> u16 { s.iter().fold(0u16, |acc, c| (acc << 5) | u16::from(c - b'A' + 1)) };
    e[8..10].copy_from_slice(&letters(b"VSL").to_be_bytes());
    e[10..12].copy_from_slice(&1u16.to_le_bytes()); // product code
    e[16] = 0; // week unspecified
    e[17] = 36; // model year 2026 (1990 + 36)
    e[18] = 1; // EDID 1.4
    e[19] = 4;
    e[20] = 0x80 | 0x20; // digital input, 8 bits per colour, interface undefined
    let (w_cm, h_cm) = (f64::from(w) / PIXELS_PER_CM, f64::from(h) / PIXELS_PER_CM);
    e[21] = w_cm.round().clamp(1.0, 255.0) as u8;
    e[22] = h_cm.round().clamp(1.0, 255.0) as u8;
    e[23] = 120; // gamma 2.2: (2.2 * 100) - 100
    e[24] = 0x06; // sRGB default colour space, preferred timing is native
    // sRGB chromaticity (red, green, blue, white D65), 10-bit fractions.
    e[25..35].copy_from_slice(&[0xee, 0x91, 0xa3, 0x54, 0x4c, 0x99, 0x26, 0x0f, 0x50, 0x54]);
    // Established timings: 640x480@60, 800x600@60, 1024x768@60.
    e[35] = 0x21;
    e[36] = 0x08;
    e[37] = 0x00;
    // Standard timings: none (0x01 0x01 each).
    for slot in e[38..54].chunks_mut(2) {
        slot.copy_from_slice(&[0x01, 0x01]);
    }
    e[54..72].copy_from_slice(&detailed_timing(w, h, w_cm, h_cm));
    e[72..90].copy_from_slice(&display_descriptor(0xfc, b"Vessel")); // monitor name
    e[90..108].copy_from_slice(&range_limits());
    e[108..126].copy_from_slice(&display_descriptor(0x10, b"")); // dummy
    e[126] = 0; // no extensions
    e[127] = 0u8.wrapping_sub(e[..127].iter().fold(0u8, |a, b| a.wrapping_add(*b)));
    e
}

/// The refresh rate for a mode: 60 Hz, or less where 60 Hz would need a pixel clock the
/// descriptor cannot hold.
fn refresh(h_total: u32, v_total: u32) -> u32 {
    let per_frame = u64::from(h_total) * u64::from(v_total);
    (MAX_CLOCK_HZ / per_frame).clamp(1, 60) as u32
}

fn detailed_timing(w: u32, h: u32, w_cm: f64, h_cm: f64) -> [u8; 18] {
    let (h_total, v_total) = (w + H_BLANK, h + V_BLANK);
    let clock = u64::from(h_total) * u64::from(v_total) * u64::from(refresh(h_total, v_total));
    let clock_10khz = (clock / 10_000).clamp(1, 65_535) as u16;
    let (w_mm, h_mm) = ((w_cm * 10.0).round() as u32, (h_cm * 10.0).round() as u32);
    let lo = |v: u32| (v & 0xff) as u8;
    let hi4 = |v: u32| ((v >> 8) & 0x0f) as u8;
    let mut d = [0u8; 18];
    d[0..2].copy_from_slice(&clock_10khz.to_le_bytes());
    d[2] = lo(w);
    d[3] = lo(H_BLANK);
    d[4] = (hi4(w) << 4) | hi4(H_BLANK);
    d[5] = lo(h);
    d[6] = lo(V_BLANK);
    d[7] = (hi4(h) << 4) | hi4(V_BLANK);
    d[8] = lo(H_FRONT);
    d[9] = lo(H_SYNC);
    d[10] = (((V_FRONT & 0x0f) as u8) << 4) | (V_SYNC & 0x0f) as u8;
    d[11] = ((((H_FRONT >> 8) & 3) as u8) << 6)
        | ((((H_SYNC >> 8) & 3) as u8) << 4)
        | ((((V_FRONT >> 4) & 3) as u8) << 2)
        | ((V_SYNC >> 4) & 3) as u8;
    d[12] = lo(w_mm);
    d[13] = lo(h_mm);
    d[14] = (hi4(w_mm) << 4) | hi4(h_mm);
    // Digital separate sync, +hsync, -vsync (CVT reduced blanking).
    d[17] = 0x18 | 0x02;
    d
}

/// A display descriptor with `tag` and up to 13 bytes of text (newline-terminated,
/// space-padded, as the standard asks).
fn display_descriptor(tag: u8, text: &[u8]) -> [u8; 18] {
    let mut d = [0u8; 18];
    d[3] = tag;
    if !text.is_empty() {
        let n = text.len().min(13);
        d[5..5 + n].copy_from_slice(&text[..n]);
        if n < 13 {
            d[5 + n] = 0x0a;
            for b in &mut d[6 + n..] {
                *b = 0x20;
            }
        }
    }
    d
}

/// Display range limits: 1-60 Hz vertical, 1-255 kHz horizontal, 660 MHz pixel clock.
fn range_limits() -> [u8; 18] {
    let mut d = [0u8; 18];
    d[3] = 0xfd;
    d[5] = 1;
    d[6] = 60;
    d[7] = 1;
    d[8] = 255;
    d[9] = 66; // in 10 MHz
    d[10] = 0x01; // range limits only
    d[11] = 0x0a;
    for b in &mut d[12..] {
        *b = 0x20;
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dtd_size(e: &[u8; 128]) -> (u32, u32) {
        let d = &e[54..72];
        let w = u32::from(d[2]) | (u32::from(d[4] >> 4) << 8);
        let h = u32::from(d[5]) | (u32::from(d[7] >> 4) << 8);
        (w, h)
    }

    #[test]
    fn preferred_mode_is_the_requested_size() {
        for (w, h) in [(1024, 768), (1920, 1080), (2560, 1440), (3840, 2160), (1366, 768)] {
            let e = edid(w, h);
            assert_eq!(e.iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0, "checksum");
            assert_eq!(&e[0..8], &[0, 255, 255, 255, 255, 255, 255, 0]);
            assert_eq!(dtd_size(&e), (w, h));
            let clock = u64::from(u16::from_le_bytes([e[54], e[55]])) * 10_000;
            let rate = clock as f64 / (f64::from(w + H_BLANK) * f64::from(h + V_BLANK));
            assert!((rate - 60.0).abs() < 0.1, "{w}x{h} at {rate} Hz");
        }
        // Too large for a detailed timing: clamped, with a refresh rate the clock allows.
        let e = edid(7680, 4320);
        assert_eq!(e.iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0, "checksum");
        assert_eq!(dtd_size(&e), (4095, 4095));
        assert_ne!(u16::from_le_bytes([e[54], e[55]]), 0);
    }

    #[test]
    fn edid_decode_finds_it_conformant() {
        use std::io::Write;
        use std::process::{Command, Stdio};
        for (w, h) in [(1920, 1080), (1280, 800), (7680, 4320)] {
            let mut child = Command::new("edid-decode")
                .arg("--check")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("edid-decode (tools/install-deps installs it)");
            child.stdin.take().unwrap().write_all(&edid(w, h)).unwrap();
            let out = child.wait_with_output().unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "{w}x{h}:\n{text}");
            assert!(text.contains("EDID conformity: PASS"), "{w}x{h}:\n{text}");
            let (pw, ph) = (w.min(4095), h.min(4095));
            assert!(text.contains(&format!("DTD 1: {pw:>5}x{ph} ")), "{text}");
        }
    }
}
