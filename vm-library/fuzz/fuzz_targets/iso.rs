//! ISO inspection of hostile images: the fuzz input is everything from sector 16 (the
//! volume descriptors) on.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vm_library::iso::{Iso, boot_config, os};

fuzz_target!(|data: &[u8]| {
    let path = std::env::temp_dir().join(format!("vessel-fuzz-iso-{}.iso", std::process::id()));
    let mut image = vec![0u8; 16 * 2048];
    image.extend_from_slice(data);
    std::fs::write(&path, &image).unwrap();
    if let Ok(iso) = Iso::open(&path) {
        let _ = iso.list("/");
        let _ = iso.find("/isolinux/isolinux.cfg");
        if let Ok(linux) = boot_config::find_linux_boot(&iso) {
            let _ = os::detect_builtin(iso.info(), linux.is_some());
        }
    }
    let text = String::from_utf8_lossy(data);
    let _ = boot_config::parse_syslinux(&text, "/isolinux", "fuzz");
    let _ = boot_config::parse_grub_entries(&text, "fuzz");
});
