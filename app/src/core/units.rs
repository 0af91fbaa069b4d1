//! Sizes in the words people read them in.

/// `bytes` in the largest binary unit it reaches, to a tenth: "20 GiB", "1.5 GiB",
/// "64 MiB", "512 bytes".
pub fn size_text(bytes: u64) -> String {
    for (unit, shift) in [("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)] {
        if bytes >= 1 << shift {
            let whole = bytes >> shift;
            let tenths = ((u128::from(bytes - (whole << shift)) * 10) >> shift) as u64;
            return match tenths {
                0 => format!("{whole} {unit}"),
                t => format!("{whole}.{t} {unit}"),
            };
        }
    }
    format!("{bytes} bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_people_say_them() {
        assert_eq!(size_text(20 << 30), "20 GiB");
        assert_eq!(size_text(3 << 29), "1.5 GiB");
        assert_eq!(size_text(64 << 20), "64 MiB");
        assert_eq!(size_text((1 << 30) - 1), "1023.9 MiB", "never rounded up a unit");
        assert_eq!(size_text(2048), "2 KiB");
        assert_eq!(size_text(512), "512 bytes");
        assert_eq!(size_text(0), "0 bytes");
        assert_eq!(size_text(u64::MAX), "16777215.9 TiB");
    }
}
