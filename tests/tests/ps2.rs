//! The PS/2 keyboard and mouse behind the i8042, as a polling driver in the test guest
//! sees them (tests/guests/ps2.c): the same bytes for the same keys and mouse motions on
//! Vessel (from the machine's `InputSink`) and on QEMU (from its monitor's `sendkey`,
//! `mouse_move` and `mouse_button`): keys translated to set 1 and then raw in set 2, the
//! extended keys and the modifier-dependent ones included; mouse packets of an
//! IntelliMouse Explorer with its wheel.

use std::io::Write;
use std::time::Duration;

use vessel_tests::*;
use vmm::StopReason;
use vmm::input::evdev::*;

/// The keys typed, as evdev codes held together (pressed in order, released in reverse,
/// as QEMU's sendkey does) and as QEMU's sendkey names them; Esc ends each phase.
const KEYS: &[(&[u16], &str)] = &[
    (&[KEY_UP], "up"),
    (&[KEY_RIGHTCTRL], "ctrl_r"),
    (&[KEY_RIGHTALT], "alt_r"),
    (&[KEY_PAUSE], "pause"),
    (&[KEY_SYSRQ], "print"),
    (&[KEY_LEFTCTRL, KEY_PAUSE], "ctrl-pause"),
    (&[KEY_LEFTSHIFT, KEY_SYSRQ], "shift-print"),
    (&[KEY_KPENTER], "kp_enter"),
    (&[KEY_A], "a"),
];
const ESC: (&[u16], &str) = (&[KEY_ESC], "esc");
/// Alt+Print Screen (SysRq), typed on Vessel only, before Esc: QEMU's keyboard lets Alt
/// up and down again around it (B8 38 54 … D4 B8 38), where Microsoft's scan code
/// specification (and this keyboard) sends just the SysRq code while Alt is held.
const ALT_PRINT: &[u16] = &[KEY_LEFTALT, KEY_SYSRQ];
const ALT_PRINT_SET1: [u8; 4] = [0x38, 0x54, 0xd4, 0xb8];
const ALT_PRINT_SET2: [u8; 6] = [0x11, 0x84, 0xf0, 0x84, 0xf0, 0x11];
/// Set 3 has one code for Print Screen, whatever is held: Alt, then it.
const ALT_PRINT_SET3: [u8; 6] = [0x19, 0x57, 0xf0, 0x57, 0xf0, 0x19];

/// The bytes the guest printed: translated (before "PS2 RAW"), set 2 (up to "PS2 SET3")
/// and set 3.
fn bytes(out: &str) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let raw = out.find("PS2 RAW").unwrap_or(out.len());
    let three = out.find("PS2 SET3").unwrap_or(out.len()).max(raw);
    let kbd = |part: &str| -> Vec<u8> {
        part.lines().filter_map(|l| l.strip_prefix("KBD ")).map(|b| hex(b) as u8).collect()
    };
    (kbd(&out[..raw]), kbd(&out[raw..three]), kbd(&out[three..]))
}

/// `bytes` with `extra` put in before the last `esc` bytes (Esc's press and release).
fn with_before_esc(mut bytes: Vec<u8>, esc: usize, extra: &[u8]) -> Vec<u8> {
    let at = bytes.len().saturating_sub(esc);
    bytes.splice(at..at, extra.iter().copied());
    bytes
}

#[test]
fn the_keyboard_sends_what_a_pc_keyboard_sends_on_vessel_and_qemu() {
    let mut run = GuestSpec::new("ps2").boot();
    run.expect_output("PS2 READY\n");
    let input = run.handle.input();
    // As a person types: each key once the guest has what the last one sent.
    let keys = KEYS.iter().map(|(keys, _)| *keys).chain([ALT_PRINT, ESC.0]);
    let keys: Vec<&[u16]> = keys.collect();
    let type_keys = |run: &mut GuestRun| {
        for keys in &keys {
            let count = |r: &GuestRun| r.output().matches("KBD ").count();
            let mut seen = count(run);
            keys.iter().for_each(|&k| input.key(k, true));
            keys.iter().rev().for_each(|&k| input.key(k, false));
            assert!(run.wait_until(TIMEOUT, |r| count(r) > seen), "{}", run.output());
            // Then until no more bytes come for a moment.
            while run.wait_until(Duration::from_millis(200), |r| count(r) > seen) {
                seen = count(run);
            }
        }
    };
    type_keys(&mut run);
    run.expect_output("PS2 RAW\n");
    type_keys(&mut run);
    run.expect_output("PS2 SET3 READY\n");
    type_keys(&mut run);
    assert!(matches!(run.expect_stopped(), StopReason::PoweredOff), "{}", run.output());
    let vessel = run.output();
    assert_eq!(run.lines_with("PS2 SELFTEST"), ["0000000000000055"], "{vessel}");
    assert_eq!(run.lines_with("PS2 RESET"), ["00000000000000fa 00000000000000aa"]);
    assert_eq!(
        run.lines_with("PS2 ID"),
        ["00000000000000fa 00000000000000ab 0000000000000041"],
        "a translated MF2 keyboard"
    );
    assert_eq!(
        run.lines_with("PS2 SET3"),
        ["00000000000000fa 00000000000000fa 00000000000000fa", "READY"],
        "set 3, all keys make/break"
    );
    let (translated, raw, set3) = bytes(&vessel);
    assert_eq!(set3[..3], [0x63, 0xf0, 0x63], "Up in set 3: {vessel}");
    // Up in set 1 and in set 2, with their E0 prefixes.
    assert_eq!(translated[..4], [0xe0, 0x48, 0xe0, 0xc8], "{vessel}");
    assert_eq!(raw[..5], [0xe0, 0x75, 0xe0, 0xf0, 0x75], "{vessel}");

    // QEMU's keyboard, typed into through its monitor once the guest is ready.
    assert!(have_qemu(), "qemu-system-x86_64 is needed: apt-get install qemu-system-x86");
    let dir = std::env::temp_dir().join(format!("vessel-ps2-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("monitor.sock");
    let monitor = format!("unix:{},server=on,wait=off", socket.display());
    let type_into_qemu = move |line: &str| {
        if line.starts_with("PS2 READY") || line.starts_with("PS2 RAW") || line == "PS2 SET3 READY"
        {
            let mut mon = std::os::unix::net::UnixStream::connect(&socket).unwrap();
            for (_, name) in KEYS.iter().chain([&ESC]) {
                writeln!(mon, "sendkey {name}").unwrap();
                // sendkey releases after 100 ms; the next key after that.
                std::thread::sleep(Duration::from_millis(300));
            }
        }
    };
    let qemu =
        run_qemu_watching(&testguest_elf(), "test=ps2", &["-monitor", &monitor], type_into_qemu);
    let _ = std::fs::remove_dir_all(&dir);
    for key in ["PS2 SELFTEST", "PS2 RESET", "PS2 ID", "PS2 SET"] {
        let line = |out: &str| out.lines().find(|l| l.starts_with(key)).map(str::to_string);
        assert_eq!(line(&vessel), line(&qemu), "{key}:\nVessel:\n{vessel}\nQEMU:\n{qemu}");
    }
    let (qemu_translated, qemu_raw, qemu_set3) = bytes(&qemu);
    let qemu_translated = with_before_esc(qemu_translated, 2, &ALT_PRINT_SET1);
    let qemu_raw = with_before_esc(qemu_raw, 3, &ALT_PRINT_SET2);
    let qemu_set3 = with_before_esc(qemu_set3, 3, &ALT_PRINT_SET3);
    assert_eq!(translated, qemu_translated, "set 1; Vessel:\n{vessel}\nQEMU:\n{qemu}");
    assert_eq!(raw, qemu_raw, "set 2; Vessel:\n{vessel}\nQEMU:\n{qemu}");
    assert_eq!(set3, qemu_set3, "set 3; Vessel:\n{vessel}\nQEMU:\n{qemu}");
}

/// What the mouse does, on Vessel and as QEMU's monitor says it.
enum Act {
    Move(i32, i32),
    /// Wheel notches, up positive.
    Wheel(i32),
    /// Buttons held (QEMU's mouse_button mask: 1 left, 2 right, 4 middle).
    Buttons(u8),
}

const MOUSE: &[Act] = &[
    Act::Move(10, -5),
    Act::Move(-200, 0),
    Act::Wheel(1),
    Act::Wheel(-1),
    // One button at a time: QEMU's mouse_button changes them all in one report, the
    // InputSink one by one.
    Act::Buttons(1),
    Act::Buttons(3),
    Act::Buttons(2),
    Act::Buttons(0),
    Act::Buttons(4),
    Act::Buttons(0),
];

#[test]
fn the_mouse_sends_what_a_ps2_intellimouse_sends_on_vessel_and_qemu() {
    use vmm::input::Button;
    let mut run = GuestSpec::new("ps2-mouse").boot();
    run.expect_output("MOUSE READY\n");
    let input = run.handle.input();
    let mut held = 0u8;
    for act in MOUSE {
        match *act {
            Act::Move(dx, dy) => input.pointer_rel(dx, dy),
            Act::Wheel(dz) => input.wheel(0, dz),
            Act::Buttons(now) => {
                for (bit, button) in [(1, Button::Left), (2, Button::Right), (4, Button::Middle)] {
                    if (held ^ now) & bit != 0 {
                        input.button(button, now & bit != 0);
                    }
                }
                held = now;
            }
        }
    }
    assert!(matches!(run.expect_stopped(), StopReason::PoweredOff), "{}", run.output());
    let vessel = run.output();
    assert_eq!(
        run.lines_with("MOUSE RESET"),
        ["00000000000000fa 00000000000000aa 0000000000000000"]
    );
    assert_eq!(
        run.lines_with("MOUSE ID"),
        ["00000000000000fa 0000000000000003", "00000000000000fa 0000000000000004"],
        "an IntelliMouse, then an Explorer"
    );
    let aux = |out: &str| -> Vec<u8> {
        out.lines().filter_map(|l| l.strip_prefix("AUX ")).map(|b| hex(b) as u8).collect()
    };
    // Right 10 and up 5: Y grows upward on PS/2.
    assert_eq!(aux(&vessel)[..4], [0x08, 10, 5, 0], "{vessel}");

    assert!(have_qemu(), "qemu-system-x86_64 is needed: apt-get install qemu-system-x86");
    let dir = std::env::temp_dir().join(format!("vessel-ps2-mouse-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("monitor.sock");
    let monitor = format!("unix:{},server=on,wait=off", socket.display());
    let move_qemu_mouse = move |line: &str| {
        if line.starts_with("MOUSE READY") {
            let mut mon = std::os::unix::net::UnixStream::connect(&socket).unwrap();
            for act in MOUSE {
                match *act {
                    Act::Move(dx, dy) => writeln!(mon, "mouse_move {dx} {dy}"),
                    Act::Wheel(dz) => writeln!(mon, "mouse_move 0 0 {dz}"),
                    Act::Buttons(held) => writeln!(mon, "mouse_button {held}"),
                }
                .unwrap();
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    };
    let qemu = run_qemu_watching(
        &testguest_elf(),
        "test=ps2-mouse",
        &["-monitor", &monitor],
        move_qemu_mouse,
    );
    let _ = std::fs::remove_dir_all(&dir);
    for key in ["MOUSE RESET", "MOUSE ID"] {
        let lines = |out: &str| -> Vec<String> {
            out.lines().filter(|l| l.starts_with(key)).map(str::to_string).collect()
        };
        assert_eq!(lines(&vessel), lines(&qemu), "{key}:\nVessel:\n{vessel}\nQEMU:\n{qemu}");
    }
    // QEMU's mouse also sends a packet with nothing new in it after each wheel notch (its
    // input layer lets a "wheel button" up); a mouse sends none, nor does Vessel's.
    let news = |bytes: Vec<u8>| -> Vec<u8> {
        let mut buttons = 0x08;
        let mut out = Vec::new();
        for p in bytes.chunks(4) {
            if p[0] != buttons || p[1..].iter().any(|&b| b != 0) {
                out.extend_from_slice(p);
            }
            buttons = p[0] & 0x0f;
        }
        out
    };
    assert_eq!(aux(&vessel), news(aux(&vessel)), "Vessel sends no empty packets");
    assert_eq!(aux(&vessel), news(aux(&qemu)), "Vessel:\n{vessel}\nQEMU:\n{qemu}");
}
