//! Pictures of a VM's screen: a small one (a snapshot's thumbnail), the guest's frame
//! scaled down by sampling, and the whole of it (`vessel screenshot`), as PNG. Bounded: a
//! thumbnail is at most `MAX_WIDTH` pixels wide whatever the guest's mode, and a frame
//! whose rows do not fit its bytes gives none.

use image::{ImageEncoder, RgbaImage};

/// Widest picture kept.
pub const MAX_WIDTH: u32 = 320;

/// The guest's current frame on `display`, scaled to at most `MAX_WIDTH` wide (aspect
/// kept); None when it shows nothing.
pub fn capture(display: &vmm::Display) -> Option<RgbaImage> {
    display.read(0, |f| scale(f.width, f.height, f.stride, f.format, f.pixels, MAX_WIDTH))?
}

/// The guest's current frame on `display`, pixel for pixel; None when it shows nothing.
pub fn capture_whole(display: &vmm::Display) -> Option<RgbaImage> {
    display.read(0, |f| scale(f.width, f.height, f.stride, f.format, f.pixels, f.width))?
}

/// A frame of `width` by `height` pixels of `format`, rows `stride` bytes apart in
/// `pixels`, sampled down to at most `max_width` wide; None if its rows overrun `pixels`.
fn scale(
    width: u32,
    height: u32,
    stride: usize,
    format: vmm::display::PixelFormat,
    pixels: &[u8],
    max_width: u32,
) -> Option<RgbaImage> {
    let (w, h) = (width.max(1), height.max(1));
    let ratio = (f64::from(max_width.max(1)) / f64::from(w)).min(1.0);
    let tw = ((f64::from(w) * ratio) as u32).max(1);
    let th = ((f64::from(h) * ratio) as u32).max(1);
    let mut image = RgbaImage::new(tw, th);
    for (x, y, pixel) in image.enumerate_pixels_mut() {
        let sx = (u64::from(x) * u64::from(w) / u64::from(tw)) as usize;
        let sy = (u64::from(y) * u64::from(h) / u64::from(th)) as usize;
        let at = sy.checked_mul(stride)?.checked_add(sx * 4)?;
        let [r, g, b, _] = format.to_rgba(pixels.get(at..at + 4)?);
        *pixel = image::Rgba([r, g, b, 255]);
    }
    Some(image)
}

/// `image` as PNG bytes.
pub fn png(image: &RgbaImage) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    image::codecs::png::PngEncoder::new(&mut out)
        .write_image(image.as_raw(), image.width(), image.height(), image::ExtendedColorType::Rgba8)
        .ok()?;
    Some(out)
}

/// A PNG of at most `MAX_WIDTH` by `MAX_WIDTH` pixels (a snapshot's thumbnail, which a
/// bundle may hold anything in place of), decoded; None if it is not one.
pub fn decode(bytes: &[u8]) -> Option<RgbaImage> {
    let mut reader =
        image::ImageReader::with_format(std::io::Cursor::new(bytes), image::ImageFormat::Png);
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_WIDTH);
    limits.max_image_height = Some(MAX_WIDTH);
    limits.max_alloc = Some(4 << 20);
    reader.limits(limits);
    Some(reader.decode().ok()?.to_rgba8())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_screen_is_scaled_down_and_survives_png() {
        assert!(capture(&vmm::Display::new().unwrap()).is_none(), "nothing shown");
        let (w, h) = (640u32, 480u32);
        let mut pixels = vec![0u8; (w * h * 4) as usize];
        for y in 0..h {
            for x in 0..w {
                let at = ((y * w + x) * 4) as usize;
                // B, G, R, X: red rises to the right, green downwards.
                pixels[at + 2] = (x * 255 / w) as u8;
                pixels[at + 1] = (y * 255 / h) as u8;
            }
        }
        let bgrx = vmm::display::PixelFormat::Bgrx;
        assert!(scale(w, h, w as usize * 4, bgrx, &pixels[..1000], w).is_none(), "rows overrun");
        let whole = scale(w, h, w as usize * 4, bgrx, &pixels, w).unwrap();
        assert_eq!((whole.width(), whole.height()), (w, h));
        assert_eq!(whole.get_pixel(320, 240).0, [127, 127, 0, 255], "pixel for pixel");
        let image = scale(w, h, w as usize * 4, bgrx, &pixels, MAX_WIDTH).unwrap();
        assert_eq!((image.width(), image.height()), (320, 240));
        let right = image.get_pixel(319, 0).0;
        let low = image.get_pixel(0, 239).0;
        assert!(right[0] > 240 && right[1] < 5, "{right:?}");
        assert!(low[1] > 240 && low[0] < 5, "{low:?}");
        let back = decode(&png(&image).unwrap()).unwrap();
        assert!(back == image);
        assert!(decode(b"not a png").is_none());
        // Larger than a thumbnail: refused, not decoded.
        let big = RgbaImage::new(2000, 10);
        assert!(decode(&png(&big).unwrap()).is_none());
    }
}
