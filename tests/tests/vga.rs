//! The standard VGA under the firmware: SeaBIOS runs Debian's VGA BIOS
//! (`vgabios-stdvga.bin`) on Vessel's VGA, and what the screen shows is what QEMU's
//! `-vga std` shows for the same guest (tests/guests/firmware/vga.S): text mode 3 with
//! attributes and the BIOS's fonts (80x25 and 80x50), the planar mode 12h, mode 13h, and a
//! VBE linear mode drawn through the framebuffer BAR.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use vessel_tests::*;
use vmm::devices::vga::VgaConfig;
use vmm::input::evdev::{KEY_A, KEY_B, KEY_C, KEY_D};
use vmm::{Boot, DeviceConfig, Event, FirmwareBoot, Machine, MachineConfig};

const SEABIOS: &str = "/usr/share/seabios/bios-256k.bin";
const VGABIOS: &str = "/usr/share/seabios/vgabios-stdvga.bin";

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vessel-vga-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A firmware machine with the VGA (its BIOS from Debian's seabios package) and a CD.
fn vga_machine(iso: &Path, serial_console: bool) -> MachineConfig {
    let mut config = MachineConfig::new(Boot::Firmware(FirmwareBoot {
        image: PathBuf::from(SEABIOS),
        uuid: *b"vessel-firmware!",
        boot_order: vec![vmm::BootDevice::Cd],
        first_boot_order: None,
        boot_menu_ms: None,
        serial_console,
    }));
    config.memory_bytes = 128 << 20;
    config.devices = vec![
        DeviceConfig::Vga(VgaConfig { rom: Some(VGABIOS.into()) }),
        DeviceConfig::CdRom { iso: Some(iso.to_path_buf()) },
    ];
    config
}

/// A picture as width, height and R, G, B bytes.
#[derive(Debug)]
struct Picture {
    width: u32,
    height: u32,
    rgb: Vec<u8>,
}

impl Picture {
    /// A binary PPM (P6, maxval 255), as QEMU's screendump writes it.
    fn from_ppm(bytes: &[u8]) -> Picture {
        let mut fields = Vec::new();
        let mut at = 0;
        while fields.len() < 4 {
            while bytes[at].is_ascii_whitespace() {
                at += 1;
            }
            let start = at;
            while !bytes[at].is_ascii_whitespace() {
                at += 1;
            }
            fields.push(String::from_utf8_lossy(&bytes[start..at]).into_owned());
        }
        assert_eq!((fields[0].as_str(), fields[3].as_str()), ("P6", "255"), "a P6 PPM");
        let (width, height) = (fields[1].parse().unwrap(), fields[2].parse().unwrap());
        let rgb = bytes[at + 1..].to_vec();
        assert_eq!(rgb.len(), (width * height * 3) as usize);
        Picture { width, height, rgb }
    }

    /// What `display` shows now.
    fn of(display: &vmm::display::Display) -> Option<Picture> {
        display.read(0, |f| {
            let mut rgb = Vec::with_capacity((f.width * f.height * 3) as usize);
            for y in 0..f.height as usize {
                for x in 0..f.width as usize {
                    let px = &f.pixels[y * f.stride + x * 4..][..4];
                    rgb.extend_from_slice(&f.format.to_rgba(px)[..3]);
                }
            }
            Picture { width: f.width, height: f.height, rgb }
        })
    }

    fn save_png(&self, path: &Path) {
        image::save_buffer(path, &self.rgb, self.width, self.height, image::ColorType::Rgb8)
            .unwrap();
    }

    /// Pixels that differ by more than `tolerance` in a channel, and the first of them.
    fn differences(&self, other: &Picture, tolerance: u8) -> (usize, Option<(u32, u32)>) {
        let mut count = 0;
        let mut first = None;
        for (i, (a, b)) in self.rgb.chunks(3).zip(other.rgb.chunks(3)).enumerate() {
            if a.iter().zip(b).any(|(a, b)| a.abs_diff(*b) > tolerance) {
                count += 1;
                first.get_or_insert(((i as u32) % self.width, (i as u32) / self.width));
            }
        }
        (count, first)
    }
}

/// Waits until the serial output of `handle` holds `want` (collected into `serial`).
fn wait_serial(handle: &vmm::MachineHandle, serial: &mut String, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(240);
    while !serial.contains(want) {
        assert!(Instant::now() < deadline, "no {want:?} on the serial port: {serial:?}");
        match handle.events().recv_timeout(Duration::from_millis(100)) {
            Ok(Event::Serial(bytes)) => serial.push_str(&String::from_utf8_lossy(&bytes)),
            Ok(Event::StateChanged(vmm::MachineState::Stopped(reason))) => {
                panic!("the machine stopped: {reason:?}: {serial}")
            }
            _ => {}
        }
    }
}

/// What the display shows once it has settled to `width` x `height` (the VGA redraws
/// about 30 times a second).
fn settled(display: &vmm::display::Display, width: u32, height: u32) -> Picture {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if display.size() == Some((width, height)) {
            // A few frames more, for the last writes to be drawn.
            std::thread::sleep(Duration::from_millis(300));
            let g = display.generation();
            std::thread::sleep(Duration::from_millis(200));
            if display.generation() == g {
                return Picture::of(display).unwrap();
            }
        }
        assert!(
            Instant::now() < deadline,
            "the display is {:?}, not {width}x{height}",
            display.size()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The test disc's screens: their number, size, and the key that moves on from them.
const SCREENS: [(usize, (u32, u32), Option<u16>); 5] = [
    (1, (720, 400), Some(KEY_A)), // text mode 3, 80x25 in 9x16 cells
    (2, (720, 400), Some(KEY_B)), // 80x50 in 9x8 cells
    (3, (640, 480), Some(KEY_C)), // mode 12h
    (4, (640, 400), Some(KEY_D)), // mode 13h: 320x200, pixels and lines doubled
    (5, (640, 480), None),        // VBE 640x480x32
];

/// The screens Vessel shows, in order.
fn vessel_screens(iso: &Path) -> Vec<Picture> {
    let handle = Machine::build(vga_machine(iso, false), None).unwrap();
    handle.start().unwrap();
    let display = handle.display();
    let input = handle.input();
    let mut serial = String::new();
    let mut screens = Vec::new();
    for (n, (w, h), key) in SCREENS {
        wait_serial(&handle, &mut serial, &format!("SCREEN {n}\n"));
        screens.push(settled(&display, w, h));
        if let Some(key) = key {
            input.key(key, true);
            input.key(key, false);
        }
    }
    assert!(!serial.contains("VGA FAIL"), "{serial}");
    handle.power_off().unwrap();
    screens
}

/// The screens QEMU's `-vga std` shows for the same disc, from its monitor's screendump.
fn qemu_screens(iso: &Path, dir: &Path) -> Vec<Picture> {
    assert!(have_qemu(), "qemu-system-x86_64 is needed: apt-get install qemu-system-x86");
    let socket = dir.join("monitor.sock");
    let monitor = format!("unix:{},server=on,wait=off", socket.display());
    let dumps = dir.to_path_buf();
    let on_line = move |line: &str| {
        let Some(n) = line.strip_prefix("SCREEN ") else { return };
        let mut mon = std::os::unix::net::UnixStream::connect(&socket).unwrap();
        let mut reply = mon.try_clone().unwrap();
        // The monitor prompts once on connecting and once after each command is done.
        let mut seen = Vec::new();
        let mut prompts = 1;
        let mut command = |text: &str| {
            writeln!(mon, "{text}").unwrap();
            prompts += 1;
            while String::from_utf8_lossy(&seen).matches("(qemu)").count() < prompts {
                let mut buf = [0u8; 256];
                match reply.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => seen.extend_from_slice(&buf[..n]),
                }
            }
        };
        command(&format!("screendump {}", dumps.join(format!("qemu{n}.ppm")).display()));
        match n {
            "1" => command("sendkey a"),
            "2" => command("sendkey b"),
            "3" => command("sendkey c"),
            "4" => command("sendkey d"),
            _ => command("quit"),
        }
    };
    let iso = iso.to_str().unwrap();
    let out = run_qemu_firmware_watching(
        128,
        &["-vga", "std", "-monitor", &monitor, "-cdrom", iso, "-boot", "d"],
        on_line,
    );
    assert!(out.contains("SCREEN 5"), "QEMU's run: {out}");
    (1..=SCREENS.len())
        .map(|n| Picture::from_ppm(&std::fs::read(dir.join(format!("qemu{n}.ppm"))).unwrap()))
        .collect()
}

/// Text modes, modes 12h and 13h and a VBE linear mode look as on QEMU. Where the two may differ by
/// design, the guest keeps out of it: QEMU converts the DAC's 6-bit values with its own
/// rounding (42 becomes 168, here 170, as 42/63 of full scale is), so channels may differ
/// by up to 3; its text mode repeats the 9th column for 0xB0-0xBF too (the hardware does
/// for 0xC0-0xDF only), and it does not blink characters; the guest writes neither.
#[test]
fn the_screens_match_qemus_vga() {
    let dir = scratch("screens");
    let iso = firmware_vga_iso(&dir);
    let vessel = vessel_screens(&iso);
    let qemu = qemu_screens(&iso, &dir);
    for (n, (v, q)) in vessel.iter().zip(&qemu).enumerate() {
        v.save_png(&dir.join(format!("vessel{}.png", n + 1)));
        q.save_png(&dir.join(format!("qemu{}.png", n + 1)));
        assert_eq!((v.width, v.height), (q.width, q.height), "screen {} size", n + 1);
        let (count, first) = v.differences(q, 3);
        let (inexact, _) = v.differences(q, 0);
        println!(
            "screen {}: {}x{}, {inexact} pixels not bit-exact (DAC rounding), none off by more",
            n + 1,
            v.width,
            v.height
        );
        assert_eq!(
            count,
            0,
            "screen {}: {count} pixels differ, the first at {first:?} (pictures in {})",
            n + 1,
            dir.display()
        );
        // Not a black screen that matches a black screen.
        assert!(
            v.rgb.iter().filter(|&&b| b != 0).count() > 1000,
            "screen {} shows something",
            n + 1
        );
    }
    if std::env::var_os("VESSEL_KEEP").is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// A firmware machine with the VGA, saved in mode 12h (planar memory, the VGA BIOS's
/// registers) and restored into a new machine: the screen is the same, and the guest goes
/// on (a key moves it to mode 13h, as in the machine it was saved from).
#[test]
fn a_firmware_machine_with_the_vga_is_restored_with_its_screen() {
    let dir = scratch("restore");
    let iso = firmware_vga_iso(&dir);
    let config = vga_machine(&iso, false);
    let handle = Machine::build(config.clone(), None).unwrap();
    handle.start().unwrap();
    let (display, input) = (handle.display(), handle.input());
    let mut serial = String::new();
    for (n, _, key) in &SCREENS[..2] {
        wait_serial(&handle, &mut serial, &format!("SCREEN {n}\n"));
        let key = key.unwrap();
        input.key(key, true);
        input.key(key, false);
    }
    wait_serial(&handle, &mut serial, "SCREEN 3\n");
    let before = settled(&display, 640, 480);
    handle.pause().unwrap();
    let path = |name: &str| dir.join(name);
    let create = |name: &str| {
        std::fs::File::options().read(true).write(true).create_new(true).open(path(name)).unwrap()
    };
    let (state, memory) = (create("state"), create("memory"));
    handle.save_state(state.try_clone().unwrap(), memory.try_clone().unwrap()).unwrap();
    handle.power_off().unwrap();
    drop(handle);

    let restored = Machine::restore(config, None, &state, &memory).unwrap();
    restored.start().unwrap();
    let display = restored.display();
    let after = settled(&display, 640, 480);
    let (count, first) = before.differences(&after, 0);
    if count > 0 {
        before.save_png(&dir.join("before.png"));
        after.save_png(&dir.join("after.png"));
    }
    assert_eq!(count, 0, "{count} pixels differ, the first at {first:?} (see {})", dir.display());
    let input = restored.input();
    input.key(KEY_C, true);
    input.key(KEY_C, false);
    let mut serial = String::new();
    wait_serial(&restored, &mut serial, "SCREEN 4\n");
    settled(&display, 640, 400);
    assert!(!serial.contains("SeaBIOS"), "it did not boot again: {serial}");
    restored.power_off().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
