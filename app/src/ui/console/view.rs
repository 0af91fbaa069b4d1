//! Where the guest's screen goes in the console: fitted with its aspect kept, or at
//! actual size (one guest pixel on one screen pixel) and scrolled when larger than the
//! console; and which guest pixel the pointer is over.

use egui::{Pos2, Rect, Vec2};

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
