//! Physical keys to Linux evdev codes. A key is named by its UI Events `code` value (W3C
//! "UI Events KeyboardEvent code Values"): the position on a US layout, whatever the
//! host's layout prints on it, so the guest applies its own layout — as VMware does. winit's
//! `KeyCode` variants carry these names (plus `SuperLeft`/`SuperRight` for the Meta keys),
//! and egui's physical keys map onto them in the app.

use super::evdev::*;

/// (UI Events code, evdev code) for every key the keyboard device has a code for.
const TABLE: &[(&str, u16)] = &[
    // Writing system keys (§3.1.1).
    ("Backquote", KEY_GRAVE),
    ("Backslash", KEY_BACKSLASH),
    ("BracketLeft", KEY_LEFTBRACE),
    ("BracketRight", KEY_RIGHTBRACE),
    ("Comma", KEY_COMMA),
    ("Digit0", KEY_0),
    ("Digit1", KEY_1),
    ("Digit2", KEY_2),
    ("Digit3", KEY_3),
    ("Digit4", KEY_4),
    ("Digit5", KEY_5),
    ("Digit6", KEY_6),
    ("Digit7", KEY_7),
    ("Digit8", KEY_8),
    ("Digit9", KEY_9),
    ("Equal", KEY_EQUAL),
    ("IntlBackslash", KEY_102ND),
    ("IntlRo", KEY_RO),
    ("IntlYen", KEY_YEN),
    ("KeyA", KEY_A),
    ("KeyB", KEY_B),
    ("KeyC", KEY_C),
    ("KeyD", KEY_D),
    ("KeyE", KEY_E),
    ("KeyF", KEY_F),
    ("KeyG", KEY_G),
    ("KeyH", KEY_H),
    ("KeyI", KEY_I),
    ("KeyJ", KEY_J),
    ("KeyK", KEY_K),
    ("KeyL", KEY_L),
    ("KeyM", KEY_M),
    ("KeyN", KEY_N),
    ("KeyO", KEY_O),
    ("KeyP", KEY_P),
    ("KeyQ", KEY_Q),
    ("KeyR", KEY_R),
    ("KeyS", KEY_S),
    ("KeyT", KEY_T),
    ("KeyU", KEY_U),
    ("KeyV", KEY_V),
    ("KeyW", KEY_W),
    ("KeyX", KEY_X),
    ("KeyY", KEY_Y),
    ("KeyZ", KEY_Z),
    ("Minus", KEY_MINUS),
    ("Period", KEY_DOT),
    ("Quote", KEY_APOSTROPHE),
    ("Semicolon", KEY_SEMICOLON),
    ("Slash", KEY_SLASH),
    // Functional keys (§3.1.2).
    ("AltLeft", KEY_LEFTALT),
    ("AltRight", KEY_RIGHTALT),
    ("Backspace", KEY_BACKSPACE),
    ("CapsLock", KEY_CAPSLOCK),
    ("ContextMenu", KEY_COMPOSE),
    ("ControlLeft", KEY_LEFTCTRL),
    ("ControlRight", KEY_RIGHTCTRL),
    ("Enter", KEY_ENTER),
    ("MetaLeft", KEY_LEFTMETA),
    ("MetaRight", KEY_RIGHTMETA),
    ("ShiftLeft", KEY_LEFTSHIFT),
    ("ShiftRight", KEY_RIGHTSHIFT),
    ("Space", KEY_SPACE),
    ("Tab", KEY_TAB),
    ("Convert", KEY_HENKAN),
    ("KanaMode", KEY_KATAKANAHIRAGANA),
    ("Lang1", KEY_HANGEUL),
    ("Lang2", KEY_HANJA),
    ("Lang3", KEY_KATAKANA),
    ("Lang4", KEY_HIRAGANA),
    ("Lang5", KEY_ZENKAKUHANKAKU),
    ("NonConvert", KEY_MUHENKAN),
    // Control pad and arrows (§3.2, §3.3).
    ("Delete", KEY_DELETE),
    ("End", KEY_END),
    ("Help", KEY_HELP),
    ("Home", KEY_HOME),
    ("Insert", KEY_INSERT),
    ("PageDown", KEY_PAGEDOWN),
    ("PageUp", KEY_PAGEUP),
    ("ArrowDown", KEY_DOWN),
    ("ArrowLeft", KEY_LEFT),
    ("ArrowRight", KEY_RIGHT),
    ("ArrowUp", KEY_UP),
    // Numpad (§3.4).
    ("NumLock", KEY_NUMLOCK),
    ("Numpad0", KEY_KP0),
    ("Numpad1", KEY_KP1),
    ("Numpad2", KEY_KP2),
    ("Numpad3", KEY_KP3),
    ("Numpad4", KEY_KP4),
    ("Numpad5", KEY_KP5),
    ("Numpad6", KEY_KP6),
    ("Numpad7", KEY_KP7),
    ("Numpad8", KEY_KP8),
    ("Numpad9", KEY_KP9),
    ("NumpadAdd", KEY_KPPLUS),
    ("NumpadComma", KEY_KPCOMMA),
    ("NumpadDecimal", KEY_KPDOT),
    ("NumpadDivide", KEY_KPSLASH),
    ("NumpadEnter", KEY_KPENTER),
    ("NumpadEqual", KEY_KPEQUAL),
    ("NumpadMultiply", KEY_KPASTERISK),
    ("NumpadParenLeft", KEY_KPLEFTPAREN),
    ("NumpadParenRight", KEY_KPRIGHTPAREN),
    ("NumpadSubtract", KEY_KPMINUS),
    // Function section (§3.5).
    ("Escape", KEY_ESC),
    ("F1", KEY_F1),
    ("F2", KEY_F2),
    ("F3", KEY_F3),
    ("F4", KEY_F4),
    ("F5", KEY_F5),
    ("F6", KEY_F6),
    ("F7", KEY_F7),
    ("F8", KEY_F8),
    ("F9", KEY_F9),
    ("F10", KEY_F10),
    ("F11", KEY_F11),
    ("F12", KEY_F12),
    ("F13", KEY_F13),
    ("F14", KEY_F14),
    ("F15", KEY_F15),
    ("F16", KEY_F16),
    ("F17", KEY_F17),
    ("F18", KEY_F18),
    ("F19", KEY_F19),
    ("F20", KEY_F20),
    ("F21", KEY_F21),
    ("F22", KEY_F22),
    ("F23", KEY_F23),
    ("F24", KEY_F24),
    ("PrintScreen", KEY_SYSRQ),
    ("ScrollLock", KEY_SCROLLLOCK),
    ("Pause", KEY_PAUSE),
    // Media keys (§3.6).
    ("BrowserBack", KEY_BACK),
    ("BrowserFavorites", KEY_BOOKMARKS),
    ("BrowserForward", KEY_FORWARD),
    ("BrowserHome", KEY_HOMEPAGE),
    ("BrowserRefresh", KEY_REFRESH),
    ("BrowserSearch", KEY_SEARCH),
    ("BrowserStop", KEY_STOP),
    ("Eject", KEY_EJECTCD),
    ("LaunchApp1", KEY_COMPUTER),
    ("LaunchApp2", KEY_CALC),
    ("LaunchMail", KEY_MAIL),
    ("MediaPlayPause", KEY_PLAYPAUSE),
    ("MediaSelect", KEY_MEDIA),
    ("MediaStop", KEY_STOPCD),
    ("MediaTrackNext", KEY_NEXTSONG),
    ("MediaTrackPrevious", KEY_PREVIOUSSONG),
    ("Power", KEY_POWER),
    ("Sleep", KEY_SLEEP),
    ("AudioVolumeDown", KEY_VOLUMEDOWN),
    ("AudioVolumeMute", KEY_MUTE),
    ("AudioVolumeUp", KEY_VOLUMEUP),
    ("WakeUp", KEY_WAKEUP),
    // Legacy keys (§3.7) that evdev has.
    ("Again", KEY_AGAIN),
    ("Copy", KEY_COPY),
    ("Cut", KEY_CUT),
    ("Find", KEY_FIND),
    ("Open", KEY_OPEN),
    ("Paste", KEY_PASTE),
    ("Props", KEY_PROPS),
    ("Undo", KEY_UNDO),
    ("Suspend", KEY_SUSPEND),
];

/// Other names for the same keys: winit's, and the spec's legacy ones.
const ALIASES: &[(&str, &str)] = &[
    ("SuperLeft", "MetaLeft"),
    ("SuperRight", "MetaRight"),
    ("OSLeft", "MetaLeft"),
    ("OSRight", "MetaRight"),
    ("Hiragana", "Lang4"),
    ("Katakana", "Lang3"),
    ("NumpadStar", "NumpadMultiply"),
    ("VolumeDown", "AudioVolumeDown"),
    ("VolumeMute", "AudioVolumeMute"),
    ("VolumeUp", "AudioVolumeUp"),
];

/// The evdev code of the key whose UI Events `code` is `code`, if the keyboard has one.
pub fn evdev_from_code(code: &str) -> Option<u16> {
    let code = ALIASES.iter().find(|(alias, _)| *alias == code).map_or(code, |(_, name)| name);
    TABLE.iter().find(|(name, _)| *name == code).map(|(_, key)| *key)
}

/// The UI Events `code` of an evdev key code (the inverse, for tests and tools).
pub fn code_from_evdev(key: u16) -> Option<&'static str> {
    TABLE.iter().find(|(_, k)| *k == key).map(|(name, _)| *name)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The 105 keys of an ISO PC keyboard (IBM enhanced layout plus the Windows keys).
    const ISO_105: [&str; 105] = [
        "Escape",
        "F1",
        "F2",
        "F3",
        "F4",
        "F5",
        "F6",
        "F7",
        "F8",
        "F9",
        "F10",
        "F11",
        "F12",
        "PrintScreen",
        "ScrollLock",
        "Pause",
        "Backquote",
        "Digit1",
        "Digit2",
        "Digit3",
        "Digit4",
        "Digit5",
        "Digit6",
        "Digit7",
        "Digit8",
        "Digit9",
        "Digit0",
        "Minus",
        "Equal",
        "Backspace",
        "Insert",
        "Home",
        "PageUp",
        "NumLock",
        "NumpadDivide",
        "NumpadMultiply",
        "NumpadSubtract",
        "Tab",
        "KeyQ",
        "KeyW",
        "KeyE",
        "KeyR",
        "KeyT",
        "KeyY",
        "KeyU",
        "KeyI",
        "KeyO",
        "KeyP",
        "BracketLeft",
        "BracketRight",
        "Enter",
        "Delete",
        "End",
        "PageDown",
        "Numpad7",
        "Numpad8",
        "Numpad9",
        "NumpadAdd",
        "CapsLock",
        "KeyA",
        "KeyS",
        "KeyD",
        "KeyF",
        "KeyG",
        "KeyH",
        "KeyJ",
        "KeyK",
        "KeyL",
        "Semicolon",
        "Quote",
        "Backslash",
        "Numpad4",
        "Numpad5",
        "Numpad6",
        "ShiftLeft",
        "IntlBackslash",
        "KeyZ",
        "KeyX",
        "KeyC",
        "KeyV",
        "KeyB",
        "KeyN",
        "KeyM",
        "Comma",
        "Period",
        "Slash",
        "ShiftRight",
        "ArrowUp",
        "Numpad1",
        "Numpad2",
        "Numpad3",
        "NumpadEnter",
        "ControlLeft",
        "MetaLeft",
        "AltLeft",
        "Space",
        "AltRight",
        "MetaRight",
        "ContextMenu",
        "ControlRight",
        "ArrowLeft",
        "ArrowDown",
        "ArrowRight",
        "Numpad0",
        "NumpadDecimal",
    ];

    #[test]
    fn every_key_of_a_105_key_keyboard() {
        let mut seen = std::collections::BTreeSet::new();
        for code in ISO_105 {
            let key = evdev_from_code(code).unwrap_or_else(|| panic!("{code} has no evdev code"));
            assert!(is_keyboard_key(key), "{code} -> {key}");
            assert!(seen.insert(key), "{code} shares evdev code {key} with another key");
        }
        assert_eq!(seen.len(), 105);
    }

    #[test]
    fn key_by_key_against_linux_codes() {
        // Spot values straight from input-event-codes.h, one per block of the table.
        let expected = [
            ("Escape", 1),
            ("Digit1", 2),
            ("Digit0", 11),
            ("Backspace", 14),
            ("KeyQ", 16),
            ("Enter", 28),
            ("ControlLeft", 29),
            ("KeyA", 30),
            ("Backquote", 41),
            ("ShiftLeft", 42),
            ("Backslash", 43),
            ("KeyZ", 44),
            ("Slash", 53),
            ("NumpadMultiply", 55),
            ("Space", 57),
            ("F1", 59),
            ("F10", 68),
            ("Numpad7", 71),
            ("NumpadDecimal", 83),
            ("IntlBackslash", 86),
            ("F11", 87),
            ("F12", 88),
            ("NumpadEnter", 96),
            ("ControlRight", 97),
            ("PrintScreen", 99),
            ("AltRight", 100),
            ("Home", 102),
            ("ArrowUp", 103),
            ("ArrowDown", 108),
            ("Delete", 111),
            ("AudioVolumeMute", 113),
            ("Pause", 119),
            ("MetaLeft", 125),
            ("MetaRight", 126),
            ("ContextMenu", 127),
            ("MediaTrackNext", 163),
            ("MediaPlayPause", 164),
            ("F13", 183),
            ("F24", 194),
        ];
        for (code, key) in expected {
            assert_eq!(evdev_from_code(code), Some(key), "{code}");
        }
    }

    #[test]
    fn the_table_is_one_to_one_and_inside_the_keyboard() {
        let mut keys = std::collections::BTreeMap::new();
        for (name, key) in TABLE {
            assert!(is_keyboard_key(*key), "{name} -> {key} is outside the keyboard's codes");
            if let Some(other) = keys.insert(*key, *name) {
                panic!("{name} and {other} both map to {key}");
            }
            assert_eq!(code_from_evdev(*key), Some(*name));
        }
        for (alias, name) in ALIASES {
            assert_eq!(evdev_from_code(alias), evdev_from_code(name), "{alias}");
            assert!(evdev_from_code(alias).is_some(), "{alias} names a key in the table");
        }
        assert_eq!(evdev_from_code("Fn"), None, "no evdev key the keyboard offers");
        assert_eq!(evdev_from_code(""), None);
        assert_eq!(evdev_from_code("keya"), None, "codes are case-sensitive");
    }
}
