//! egui's physical keys to Linux evdev codes, through their UI Events `code` names
//! (`vmm::input::keymap`). egui-winit reports a key's position on the keyboard as its
//! `physical_key`, so the guest applies its own layout, as VMware does. egui folds the
//! numeric keypad into the main keys (Numpad1 arrives as Num1, NumpadEnter as Enter),
//! so those reach the guest as the main-block keys.

use egui::Key;

/// The UI Events `code` of the physical key egui reports as `key`; None for keys egui
/// only has as logical keys (no key of a keyboard is "Colon") and for keys evdev's
/// keyboard range lacks.
fn code(key: Key) -> Option<&'static str> {
    use Key::*;
    Some(match key {
        ArrowDown => "ArrowDown",
        ArrowLeft => "ArrowLeft",
        ArrowRight => "ArrowRight",
        ArrowUp => "ArrowUp",
        Escape => "Escape",
        Tab => "Tab",
        Backspace => "Backspace",
        Enter => "Enter",
        Space => "Space",
        Insert => "Insert",
        Delete => "Delete",
        Home => "Home",
        End => "End",
        PageUp => "PageUp",
        PageDown => "PageDown",
        Copy => "Copy",
        Cut => "Cut",
        Paste => "Paste",
        Comma => "Comma",
        Backslash => "Backslash",
        Slash => "Slash",
        OpenBracket => "BracketLeft",
        CloseBracket => "BracketRight",
        Backtick => "Backquote",
        Minus => "Minus",
        Period => "Period",
        Plus => "NumpadAdd", // egui-winit's only physical source of Plus
        Equals => "Equal",
        Semicolon => "Semicolon",
        Quote => "Quote",
        Num0 => "Digit0",
        Num1 => "Digit1",
        Num2 => "Digit2",
        Num3 => "Digit3",
        Num4 => "Digit4",
        Num5 => "Digit5",
        Num6 => "Digit6",
        Num7 => "Digit7",
        Num8 => "Digit8",
        Num9 => "Digit9",
        A => "KeyA",
        B => "KeyB",
        C => "KeyC",
        D => "KeyD",
        E => "KeyE",
        F => "KeyF",
        G => "KeyG",
        H => "KeyH",
        I => "KeyI",
        J => "KeyJ",
        K => "KeyK",
        L => "KeyL",
        M => "KeyM",
        N => "KeyN",
        O => "KeyO",
        P => "KeyP",
        Q => "KeyQ",
        R => "KeyR",
        S => "KeyS",
        T => "KeyT",
        U => "KeyU",
        V => "KeyV",
        W => "KeyW",
        X => "KeyX",
        Y => "KeyY",
        Z => "KeyZ",
        F1 => "F1",
        F2 => "F2",
        F3 => "F3",
        F4 => "F4",
        F5 => "F5",
        F6 => "F6",
        F7 => "F7",
        F8 => "F8",
        F9 => "F9",
        F10 => "F10",
        F11 => "F11",
        F12 => "F12",
        F13 => "F13",
        F14 => "F14",
        F15 => "F15",
        F16 => "F16",
        F17 => "F17",
        F18 => "F18",
        F19 => "F19",
        F20 => "F20",
        F21 => "F21",
        F22 => "F22",
        F23 => "F23",
        F24 => "F24",
        BrowserBack => "BrowserBack",
        BrowserForward => "BrowserForward",
        BrowserRefresh => "BrowserRefresh",
        BrowserSearch => "BrowserSearch",
        BrowserHome => "BrowserHome",
        BrowserFavorites => "BrowserFavorites",
        BrowserStop => "BrowserStop",
        MediaPlayPause => "MediaPlayPause",
        MediaTrackNext => "MediaTrackNext",
        MediaTrackPrevious => "MediaTrackPrevious",
        MediaStop => "MediaStop",
        AudioVolumeMute => "AudioVolumeMute",
        AudioVolumeDown => "AudioVolumeDown",
        AudioVolumeUp => "AudioVolumeUp",
        LaunchMail => "LaunchMail",
        LaunchApp1 => "LaunchApp1",
        LaunchApp2 => "LaunchApp2",
        ShiftLeft => "ShiftLeft",
        ShiftRight => "ShiftRight",
        ControlLeft => "ControlLeft",
        ControlRight => "ControlRight",
        AltLeft => "AltLeft",
        AltRight => "AltRight",
        SuperLeft => "MetaLeft",
        SuperRight => "MetaRight",
        IntlBackslash => "IntlBackslash",
        CapsLock => "CapsLock",
        NumLock => "NumLock",
        ScrollLock => "ScrollLock",
        PrintScreen => "PrintScreen",
        Pause => "Pause",
        Menu => "ContextMenu",
        Eject => "Eject",
        Help => "Help",
        Power => "Power",
        Sleep => "Sleep",
        // Logical-only keys, F25 and up, Fn (handled by the keyboard itself) and Clear:
        // no evdev key on the guest's keyboard.
        _ => return None,
    })
}

/// The evdev code for the key egui reports as `physical_key`.
pub fn evdev_from_egui(physical_key: Key) -> Option<u16> {
    code(physical_key).and_then(vmm::input::keymap::evdev_from_code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmm::input::evdev::*;

    /// egui keys no physical key produces (egui-winit maps none to them) or that the
    /// guest keyboard has no code for.
    const UNMAPPED: &[Key] = &[
        Key::Colon,
        Key::Pipe,
        Key::Questionmark,
        Key::Exclamationmark,
        Key::OpenCurlyBracket,
        Key::CloseCurlyBracket,
        Key::F25,
        Key::F26,
        Key::F27,
        Key::F28,
        Key::F29,
        Key::F30,
        Key::F31,
        Key::F32,
        Key::F33,
        Key::F34,
        Key::F35,
        Key::Fn,
        Key::Clear,
    ];

    #[test]
    fn every_egui_key_maps_or_is_known_not_to() {
        let mut seen = std::collections::BTreeMap::new();
        for &key in Key::ALL {
            match evdev_from_egui(key) {
                Some(code) => {
                    assert!(!UNMAPPED.contains(&key), "{key:?} should not map");
                    assert!(is_keyboard_key(code), "{key:?} -> {code}");
                    if let Some(other) = seen.insert(code, key) {
                        panic!("{key:?} and {other:?} both map to {code}");
                    }
                }
                None => assert!(UNMAPPED.contains(&key), "{key:?} has no evdev code"),
            }
        }
        assert_eq!(seen.len() + UNMAPPED.len(), Key::ALL.len());
    }

    #[test]
    fn key_by_key() {
        let expected = [
            (Key::Escape, KEY_ESC),
            (Key::Num1, KEY_1),
            (Key::Num0, KEY_0),
            (Key::Minus, KEY_MINUS),
            (Key::Equals, KEY_EQUAL),
            (Key::Backspace, KEY_BACKSPACE),
            (Key::Tab, KEY_TAB),
            (Key::Q, KEY_Q),
            (Key::OpenBracket, KEY_LEFTBRACE),
            (Key::CloseBracket, KEY_RIGHTBRACE),
            (Key::Enter, KEY_ENTER),
            (Key::ControlLeft, KEY_LEFTCTRL),
            (Key::A, KEY_A),
            (Key::Semicolon, KEY_SEMICOLON),
            (Key::Quote, KEY_APOSTROPHE),
            (Key::Backtick, KEY_GRAVE),
            (Key::ShiftLeft, KEY_LEFTSHIFT),
            (Key::Backslash, KEY_BACKSLASH),
            (Key::Z, KEY_Z),
            (Key::Comma, KEY_COMMA),
            (Key::Period, KEY_DOT),
            (Key::Slash, KEY_SLASH),
            (Key::ShiftRight, KEY_RIGHTSHIFT),
            (Key::AltLeft, KEY_LEFTALT),
            (Key::Space, KEY_SPACE),
            (Key::CapsLock, KEY_CAPSLOCK),
            (Key::F1, KEY_F1),
            (Key::F12, KEY_F12),
            (Key::NumLock, KEY_NUMLOCK),
            (Key::ScrollLock, KEY_SCROLLLOCK),
            (Key::IntlBackslash, KEY_102ND),
            (Key::ControlRight, KEY_RIGHTCTRL),
            (Key::PrintScreen, KEY_SYSRQ),
            (Key::AltRight, KEY_RIGHTALT),
            (Key::Home, KEY_HOME),
            (Key::ArrowUp, KEY_UP),
            (Key::PageUp, KEY_PAGEUP),
            (Key::ArrowLeft, KEY_LEFT),
            (Key::ArrowRight, KEY_RIGHT),
            (Key::End, KEY_END),
            (Key::ArrowDown, KEY_DOWN),
            (Key::PageDown, KEY_PAGEDOWN),
            (Key::Insert, KEY_INSERT),
            (Key::Delete, KEY_DELETE),
            (Key::AudioVolumeMute, KEY_MUTE),
            (Key::AudioVolumeDown, KEY_VOLUMEDOWN),
            (Key::AudioVolumeUp, KEY_VOLUMEUP),
            (Key::Power, KEY_POWER),
            (Key::Plus, KEY_KPPLUS),
            (Key::Pause, KEY_PAUSE),
            (Key::SuperLeft, KEY_LEFTMETA),
            (Key::SuperRight, KEY_RIGHTMETA),
            (Key::Menu, KEY_COMPOSE),
            (Key::MediaPlayPause, KEY_PLAYPAUSE),
            (Key::MediaTrackNext, KEY_NEXTSONG),
            (Key::F24, KEY_F24),
        ];
        for (key, code) in expected {
            assert_eq!(evdev_from_egui(key), Some(code), "{key:?}");
        }
    }
}
