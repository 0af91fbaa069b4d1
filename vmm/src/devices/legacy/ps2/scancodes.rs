//! What a PC keyboard sends for each key, by Linux evdev code: the make codes of scan code
//! set 1 (the XT set, what the i8042 hands the CPU when it translates), set 2 (what a
//! PS/2 keyboard sends by default), with the E0 prefix of the extended keys, and set 3.
//! Breaks are derived: set 1 sets bit 7 of the last byte, sets 2 and 3 put F0 before it.
//! Pause and Print Screen have sequences of their own (IBM PS/2 Keyboard Technical Reference; Microsoft's
//! "Keyboard Scan Code Specification", rev. 1.3a).

use crate::input::evdev::*;

/// A make code: one byte, after E0 if `extended`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Code {
    pub extended: bool,
    pub byte: u8,
}

const fn n(byte: u8) -> Code {
    Code { extended: false, byte }
}

const fn e(byte: u8) -> Code {
    Code { extended: true, byte }
}

/// (evdev code, set 1 make, set 2 make).
const TABLE: &[(u16, Code, Code)] = &[
    (KEY_ESC, n(0x01), n(0x76)),
    (KEY_1, n(0x02), n(0x16)),
    (KEY_2, n(0x03), n(0x1e)),
    (KEY_3, n(0x04), n(0x26)),
    (KEY_4, n(0x05), n(0x25)),
    (KEY_5, n(0x06), n(0x2e)),
    (KEY_6, n(0x07), n(0x36)),
    (KEY_7, n(0x08), n(0x3d)),
    (KEY_8, n(0x09), n(0x3e)),
    (KEY_9, n(0x0a), n(0x46)),
    (KEY_0, n(0x0b), n(0x45)),
    (KEY_MINUS, n(0x0c), n(0x4e)),
    (KEY_EQUAL, n(0x0d), n(0x55)),
    (KEY_BACKSPACE, n(0x0e), n(0x66)),
    (KEY_TAB, n(0x0f), n(0x0d)),
    (KEY_Q, n(0x10), n(0x15)),
    (KEY_W, n(0x11), n(0x1d)),
    (KEY_E, n(0x12), n(0x24)),
    (KEY_R, n(0x13), n(0x2d)),
    (KEY_T, n(0x14), n(0x2c)),
    (KEY_Y, n(0x15), n(0x35)),
    (KEY_U, n(0x16), n(0x3c)),
    (KEY_I, n(0x17), n(0x43)),
    (KEY_O, n(0x18), n(0x44)),
    (KEY_P, n(0x19), n(0x4d)),
    (KEY_LEFTBRACE, n(0x1a), n(0x54)),
    (KEY_RIGHTBRACE, n(0x1b), n(0x5b)),
    (KEY_ENTER, n(0x1c), n(0x5a)),
    (KEY_LEFTCTRL, n(0x1d), n(0x14)),
    (KEY_A, n(0x1e), n(0x1c)),
    (KEY_S, n(0x1f), n(0x1b)),
    (KEY_D, n(0x20), n(0x23)),
    (KEY_F, n(0x21), n(0x2b)),
    (KEY_G, n(0x22), n(0x34)),
    (KEY_H, n(0x23), n(0x33)),
    (KEY_J, n(0x24), n(0x3b)),
    (KEY_K, n(0x25), n(0x42)),
    (KEY_L, n(0x26), n(0x4b)),
    (KEY_SEMICOLON, n(0x27), n(0x4c)),
    (KEY_APOSTROPHE, n(0x28), n(0x52)),
    (KEY_GRAVE, n(0x29), n(0x0e)),
    (KEY_LEFTSHIFT, n(0x2a), n(0x12)),
    (KEY_BACKSLASH, n(0x2b), n(0x5d)),
    (KEY_Z, n(0x2c), n(0x1a)),
    (KEY_X, n(0x2d), n(0x22)),
    (KEY_C, n(0x2e), n(0x21)),
    (KEY_V, n(0x2f), n(0x2a)),
    (KEY_B, n(0x30), n(0x32)),
    (KEY_N, n(0x31), n(0x31)),
    (KEY_M, n(0x32), n(0x3a)),
    (KEY_COMMA, n(0x33), n(0x41)),
    (KEY_DOT, n(0x34), n(0x49)),
    (KEY_SLASH, n(0x35), n(0x4a)),
    (KEY_RIGHTSHIFT, n(0x36), n(0x59)),
    (KEY_KPASTERISK, n(0x37), n(0x7c)),
    (KEY_LEFTALT, n(0x38), n(0x11)),
    (KEY_SPACE, n(0x39), n(0x29)),
    (KEY_CAPSLOCK, n(0x3a), n(0x58)),
    (KEY_F1, n(0x3b), n(0x05)),
    (KEY_F2, n(0x3c), n(0x06)),
    (KEY_F3, n(0x3d), n(0x04)),
    (KEY_F4, n(0x3e), n(0x0c)),
    (KEY_F5, n(0x3f), n(0x03)),
    (KEY_F6, n(0x40), n(0x0b)),
    (KEY_F7, n(0x41), n(0x83)),
    (KEY_F8, n(0x42), n(0x0a)),
    (KEY_F9, n(0x43), n(0x01)),
    (KEY_F10, n(0x44), n(0x09)),
    (KEY_NUMLOCK, n(0x45), n(0x77)),
    (KEY_SCROLLLOCK, n(0x46), n(0x7e)),
    (KEY_KP7, n(0x47), n(0x6c)),
    (KEY_KP8, n(0x48), n(0x75)),
    (KEY_KP9, n(0x49), n(0x7d)),
    (KEY_KPMINUS, n(0x4a), n(0x7b)),
    (KEY_KP4, n(0x4b), n(0x6b)),
    (KEY_KP5, n(0x4c), n(0x73)),
    (KEY_KP6, n(0x4d), n(0x74)),
    (KEY_KPPLUS, n(0x4e), n(0x79)),
    (KEY_KP1, n(0x4f), n(0x69)),
    (KEY_KP2, n(0x50), n(0x72)),
    (KEY_KP3, n(0x51), n(0x7a)),
    (KEY_KP0, n(0x52), n(0x70)),
    (KEY_KPDOT, n(0x53), n(0x71)),
    (KEY_102ND, n(0x56), n(0x61)),
    (KEY_F11, n(0x57), n(0x78)),
    (KEY_F12, n(0x58), n(0x07)),
    (KEY_KPEQUAL, n(0x59), n(0x0f)),
    (KEY_KATAKANAHIRAGANA, n(0x70), n(0x13)),
    (KEY_RO, n(0x73), n(0x51)),
    (KEY_HENKAN, n(0x79), n(0x64)),
    (KEY_MUHENKAN, n(0x7b), n(0x67)),
    (KEY_YEN, n(0x7d), n(0x6a)),
    (KEY_KPCOMMA, n(0x7e), n(0x6d)),
    (KEY_KPENTER, e(0x1c), e(0x5a)),
    (KEY_RIGHTCTRL, e(0x1d), e(0x14)),
    (KEY_KPSLASH, e(0x35), e(0x4a)),
    (KEY_RIGHTALT, e(0x38), e(0x11)),
    (KEY_HOME, e(0x47), e(0x6c)),
    (KEY_UP, e(0x48), e(0x75)),
    (KEY_PAGEUP, e(0x49), e(0x7d)),
    (KEY_LEFT, e(0x4b), e(0x6b)),
    (KEY_RIGHT, e(0x4d), e(0x74)),
    (KEY_END, e(0x4f), e(0x69)),
    (KEY_DOWN, e(0x50), e(0x72)),
    (KEY_PAGEDOWN, e(0x51), e(0x7a)),
    (KEY_INSERT, e(0x52), e(0x70)),
    (KEY_DELETE, e(0x53), e(0x71)),
    (KEY_LEFTMETA, e(0x5b), e(0x1f)),
    (KEY_RIGHTMETA, e(0x5c), e(0x27)),
    (KEY_COMPOSE, e(0x5d), e(0x2f)),
    (KEY_POWER, e(0x5e), e(0x37)),
    (KEY_SLEEP, e(0x5f), e(0x3f)),
    (KEY_WAKEUP, e(0x63), e(0x5e)),
    (KEY_MUTE, e(0x20), e(0x23)),
    (KEY_VOLUMEDOWN, e(0x2e), e(0x21)),
    (KEY_VOLUMEUP, e(0x30), e(0x32)),
    (KEY_NEXTSONG, e(0x19), e(0x4d)),
    (KEY_PREVIOUSSONG, e(0x10), e(0x15)),
    (KEY_PLAYPAUSE, e(0x22), e(0x34)),
    (KEY_STOPCD, e(0x24), e(0x3b)),
    (KEY_CALC, e(0x21), e(0x2b)),
    (KEY_MAIL, e(0x6c), e(0x48)),
    (KEY_HOMEPAGE, e(0x32), e(0x3a)),
    (KEY_SEARCH, e(0x65), e(0x10)),
    (KEY_BOOKMARKS, e(0x66), e(0x18)),
    (KEY_REFRESH, e(0x67), e(0x20)),
    (KEY_STOP, e(0x68), e(0x28)),
    (KEY_FORWARD, e(0x69), e(0x30)),
    (KEY_BACK, e(0x6a), e(0x38)),
    (KEY_COMPUTER, e(0x6b), e(0x40)),
    (KEY_MEDIA, e(0x6d), e(0x50)),
];

/// Set 3 (the PS/2 keyboard's own set, which Linux's atkbd can ask for): one byte a key,
/// no prefixes, F0 before a break. Keys a 101/102-key keyboard lacks have no set 3 code
/// (the media and browser keys, and the Brazilian and some Japanese ones).
const SET3: &[(u16, u8)] = &[
    (KEY_F1, 0x07),
    (KEY_ESC, 0x08),
    (KEY_TAB, 0x0d),
    (KEY_GRAVE, 0x0e),
    (KEY_F2, 0x0f),
    (KEY_LEFTCTRL, 0x11),
    (KEY_LEFTSHIFT, 0x12),
    (KEY_102ND, 0x13),
    (KEY_CAPSLOCK, 0x14),
    (KEY_Q, 0x15),
    (KEY_1, 0x16),
    (KEY_F3, 0x17),
    (KEY_LEFTALT, 0x19),
    (KEY_Z, 0x1a),
    (KEY_S, 0x1b),
    (KEY_A, 0x1c),
    (KEY_W, 0x1d),
    (KEY_2, 0x1e),
    (KEY_F4, 0x1f),
    (KEY_C, 0x21),
    (KEY_X, 0x22),
    (KEY_D, 0x23),
    (KEY_E, 0x24),
    (KEY_4, 0x25),
    (KEY_3, 0x26),
    (KEY_F5, 0x27),
    (KEY_SPACE, 0x29),
    (KEY_V, 0x2a),
    (KEY_F, 0x2b),
    (KEY_T, 0x2c),
    (KEY_R, 0x2d),
    (KEY_5, 0x2e),
    (KEY_F6, 0x2f),
    (KEY_N, 0x31),
    (KEY_B, 0x32),
    (KEY_H, 0x33),
    (KEY_G, 0x34),
    (KEY_Y, 0x35),
    (KEY_6, 0x36),
    (KEY_F7, 0x37),
    (KEY_RIGHTALT, 0x39),
    (KEY_M, 0x3a),
    (KEY_J, 0x3b),
    (KEY_U, 0x3c),
    (KEY_7, 0x3d),
    (KEY_8, 0x3e),
    (KEY_F8, 0x3f),
    (KEY_COMMA, 0x41),
    (KEY_K, 0x42),
    (KEY_I, 0x43),
    (KEY_O, 0x44),
    (KEY_0, 0x45),
    (KEY_9, 0x46),
    (KEY_F9, 0x47),
    (KEY_DOT, 0x49),
    (KEY_SLASH, 0x4a),
    (KEY_L, 0x4b),
    (KEY_SEMICOLON, 0x4c),
    (KEY_P, 0x4d),
    (KEY_MINUS, 0x4e),
    (KEY_F10, 0x4f),
    (KEY_APOSTROPHE, 0x52),
    (KEY_LEFTBRACE, 0x54),
    (KEY_EQUAL, 0x55),
    (KEY_F11, 0x56),
    (KEY_SYSRQ, 0x57),
    (KEY_RIGHTCTRL, 0x58),
    (KEY_RIGHTSHIFT, 0x59),
    (KEY_ENTER, 0x5a),
    (KEY_RIGHTBRACE, 0x5b),
    (KEY_BACKSLASH, 0x5c),
    (KEY_F12, 0x5e),
    (KEY_SCROLLLOCK, 0x5f),
    (KEY_DOWN, 0x60),
    (KEY_LEFT, 0x61),
    (KEY_PAUSE, 0x62),
    (KEY_UP, 0x63),
    (KEY_DELETE, 0x64),
    (KEY_END, 0x65),
    (KEY_BACKSPACE, 0x66),
    (KEY_INSERT, 0x67),
    (KEY_KP1, 0x69),
    (KEY_RIGHT, 0x6a),
    (KEY_KP4, 0x6b),
    (KEY_KP7, 0x6c),
    (KEY_PAGEDOWN, 0x6d),
    (KEY_HOME, 0x6e),
    (KEY_PAGEUP, 0x6f),
    (KEY_KP0, 0x70),
    (KEY_KPDOT, 0x71),
    (KEY_KP2, 0x72),
    (KEY_KP5, 0x73),
    (KEY_KP6, 0x74),
    (KEY_KP8, 0x75),
    (KEY_NUMLOCK, 0x76),
    (KEY_KPSLASH, 0x77),
    (KEY_KPENTER, 0x79),
    (KEY_KP3, 0x7a),
    (KEY_KPPLUS, 0x7c),
    (KEY_KP9, 0x7d),
    (KEY_KPASTERISK, 0x7e),
    (KEY_KPMINUS, 0x84),
    (KEY_MUHENKAN, 0x85),
    (KEY_HENKAN, 0x86),
    (KEY_KATAKANAHIRAGANA, 0x87),
    (KEY_LEFTMETA, 0x8b),
    (KEY_RIGHTMETA, 0x8c),
    (KEY_COMPOSE, 0x8d),
];

/// The scan code sets a PS/2 keyboard sends in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Set {
    One,
    Two,
    Three,
}

/// Modifier keys held down, which change what Pause and Print Screen send.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Held {
    pub ctrl: bool,
    pub shift: bool,
    pub alt: bool,
}

/// The bytes a key sends going down (`down`) or up, in `set`, with the modifiers `held`;
/// empty for keys a PC keyboard does not have. Pause sends its whole sequence going down
/// and nothing going up; with Ctrl it is Break. Print Screen comes inside a fake Shift,
/// without it when Shift or Ctrl is held, and as SysRq with Alt.
pub fn bytes(set: Set, key: u16, down: bool, held: Held) -> Vec<u8> {
    if set == Set::Three {
        // Every key is make/break here (what Linux asks for with F8, and QEMU does).
        let Some(&(_, code)) = SET3.iter().find(|(k, _)| *k == key) else { return Vec::new() };
        return if down { vec![code] } else { vec![0xf0, code] };
    }
    match (key, set) {
        (KEY_PAUSE, _) if !down => return Vec::new(),
        (KEY_PAUSE, Set::One) if held.ctrl => return vec![0xe0, 0x46, 0xe0, 0xc6],
        (KEY_PAUSE, Set::Two) if held.ctrl => return vec![0xe0, 0x7e, 0xe0, 0xf0, 0x7e],
        (KEY_PAUSE, Set::One) => return vec![0xe1, 0x1d, 0x45, 0xe1, 0x9d, 0xc5],
        (KEY_PAUSE, Set::Two) => return vec![0xe1, 0x14, 0x77, 0xe1, 0xf0, 0x14, 0xf0, 0x77],
        (KEY_SYSRQ, _) if held.alt => {
            return break_code(set, n(if set == Set::One { 0x54 } else { 0x84 }), down);
        }
        (KEY_SYSRQ, _) if held.shift || held.ctrl => {
            return break_code(set, e(if set == Set::One { 0x37 } else { 0x7c }), down);
        }
        (KEY_SYSRQ, Set::One) if down => return vec![0xe0, 0x2a, 0xe0, 0x37],
        (KEY_SYSRQ, Set::One) => return vec![0xe0, 0xb7, 0xe0, 0xaa],
        (KEY_SYSRQ, Set::Two) if down => return vec![0xe0, 0x12, 0xe0, 0x7c],
        (KEY_SYSRQ, Set::Two) => return vec![0xe0, 0xf0, 0x7c, 0xe0, 0xf0, 0x12],
        _ => {}
    }
    let Some(&(_, one, two)) = TABLE.iter().find(|(code, ..)| *code == key) else {
        return Vec::new();
    };
    break_code(set, if set == Set::One { one } else { two }, down)
}

/// `code` going down, or up (set 1: bit 7; sets 2 and 3: F0 first).
fn break_code(set: Set, code: Code, down: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(3);
    if code.extended {
        out.push(0xe0);
    }
    match (set, down) {
        (_, true) => out.push(code.byte),
        (Set::One, false) => out.push(code.byte | 0x80),
        (_, false) => out.extend([0xf0, code.byte]),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use pc_keyboard::{KeyCode, KeyEvent, KeyState, ScancodeSet, ScancodeSet1, ScancodeSet2};

    /// What a guest's decoder of `set` makes of `bytes`; None for a key it does not know.
    fn decode(set: Set, bytes: &[u8]) -> Option<Vec<KeyEvent>> {
        let mut one = ScancodeSet1::new();
        let mut two = ScancodeSet2::new();
        let mut events = Vec::new();
        for &b in bytes {
            let event = match set {
                Set::One => one.advance_state(b),
                Set::Two => two.advance_state(b),
                Set::Three => unreachable!("pc-keyboard has no set 3 decoder"),
            };
            match event {
                Ok(event) => events.extend(event),
                Err(pc_keyboard::Error::UnknownKeyCode) => return None,
                Err(e) => panic!("{set:?} {bytes:02x?}: {e:?}"),
            }
        }
        Some(events)
    }

    #[test]
    fn both_sets_name_the_same_key_going_down_and_up() {
        // Keys pc-keyboard's decoders do not know (keypad =, the Japanese and Brazilian
        // keys, and the ACPI and browser keys); their codes were checked by hand against
        // Linux's atkbd set 2 table and its set 1 to set 2 table. The rest are checked
        // here, both ways.
        let not_known = [
            KEY_KPEQUAL,
            KEY_KATAKANAHIRAGANA,
            KEY_RO,
            KEY_HENKAN,
            KEY_MUHENKAN,
            KEY_YEN,
            KEY_KPCOMMA,
            KEY_POWER,
            KEY_SLEEP,
            KEY_WAKEUP,
            KEY_MAIL,
            KEY_SEARCH,
            KEY_BOOKMARKS,
            KEY_REFRESH,
            KEY_STOP,
            KEY_FORWARD,
            KEY_BACK,
            KEY_COMPUTER,
            KEY_MEDIA,
        ];
        let mut unknown = Vec::new();
        for &(key, ..) in TABLE {
            for down in [true, false] {
                let one = decode(Set::One, &bytes(Set::One, key, down, Held::default()));
                let two = decode(Set::Two, &bytes(Set::Two, key, down, Held::default()));
                let (Some(one), Some(two)) = (one, two) else {
                    unknown.push(key);
                    continue;
                };
                let state = if down { KeyState::Down } else { KeyState::Up };
                assert_eq!(one.len(), 1, "key {key}: {one:?}");
                assert_eq!(one, two, "key {key} {state:?}: set 1 and set 2 agree");
                assert_eq!(one[0].state, state, "key {key}");
            }
        }
        unknown.dedup();
        unknown.sort();
        let mut expected = not_known.to_vec();
        expected.sort();
        assert_eq!(unknown, expected, "the keys pc-keyboard does not know");
    }

    #[test]
    fn set_3_has_one_code_a_key_and_only_keys_the_other_sets_have() {
        let mut codes: Vec<u8> = SET3.iter().map(|&(_, c)| c).collect();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), SET3.len(), "one key a code");
        for &(key, _) in SET3 {
            let known =
                TABLE.iter().any(|&(k, ..)| k == key) || [KEY_SYSRQ, KEY_PAUSE].contains(&key);
            assert!(known, "key {key}");
        }
        // Every key of a 101/102-key keyboard is there.
        assert!(SET3.len() >= 102, "{}", SET3.len());
    }

    #[test]
    fn set_1_codes_of_the_main_block_are_linux_key_codes() {
        // Linux numbered its key codes after set 1 for the XT keyboard's keys.
        for &(key, one, _) in TABLE.iter().filter(|(key, ..)| *key <= KEY_F12 && *key != 84) {
            if !one.extended && key != KEY_KPEQUAL {
                assert_eq!(u16::from(one.byte), key, "key {key}");
            }
        }
    }

    #[test]
    fn keys_by_name() {
        let key = |set, code, down| decode(set, &bytes(set, code, down, Held::default())).unwrap();
        let down = |code| KeyEvent::new(code, KeyState::Down);
        assert_eq!(key(Set::Two, KEY_A, true), [down(KeyCode::A)]);
        assert_eq!(key(Set::Two, KEY_UP, true), [down(KeyCode::ArrowUp)]);
        assert_eq!(key(Set::One, KEY_RIGHTCTRL, true), [down(KeyCode::RControl)]);
        assert_eq!(key(Set::Two, KEY_RIGHTALT, true), [down(KeyCode::RAltGr)]);
        assert_eq!(key(Set::Two, KEY_ESC, true), [down(KeyCode::Escape)]);
        assert_eq!(key(Set::One, KEY_F12, true), [down(KeyCode::F12)]);
        assert_eq!(bytes(Set::Two, KEY_UP, false, Held::default()), [0xe0, 0xf0, 0x75]);
        assert_eq!(bytes(Set::One, KEY_UP, false, Held::default()), [0xe0, 0xc8]);
        assert_eq!(
            bytes(Set::Two, KEY_PAUSE, false, Held::default()),
            [0u8; 0],
            "Pause has no break"
        );
        assert_eq!(
            bytes(Set::Two, KEY_PAUSE, true, Held::default()),
            [0xe1, 0x14, 0x77, 0xe1, 0xf0, 0x14, 0xf0, 0x77]
        );
        assert!(
            bytes(Set::Two, 0x1d0, true, Held::default()).is_empty(),
            "KEY_FN: no such key on a PC keyboard"
        );
        let ctrl = Held { ctrl: true, ..Held::default() };
        let alt = Held { alt: true, ..Held::default() };
        let shift = Held { shift: true, ..Held::default() };
        assert_eq!(bytes(Set::One, KEY_PAUSE, true, ctrl), [0xe0, 0x46, 0xe0, 0xc6], "Break");
        assert_eq!(bytes(Set::Two, KEY_SYSRQ, false, alt), [0xf0, 0x84], "SysRq");
        assert_eq!(bytes(Set::One, KEY_SYSRQ, true, shift), [0xe0, 0x37]);
    }
}
