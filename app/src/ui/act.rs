//! Everything menus, buttons and shortcuts can ask of the app (`Act`), and the one table
//! of the app's commands (`BINDINGS`: label, shortcut, what it needs) that the menus, the
//! toolbar and the keyboard shortcuts all read.

use std::path::{Path, PathBuf};

use egui::{Key, KeyboardShortcut, Modifiers};
use vmm::input::evdev::*;

use super::console::view::Scale;
use super::dialogs::DialogAction;
use super::jobs::Pick;
use super::wizard;
use crate::core::state::VmState;

/// Which page of a VM is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Page {
    Summary,
    Console,
    Serial,
}

/// What the user asked for; `VesselApp::apply` carries it out.
#[derive(Clone, Debug, PartialEq)]
pub enum Act {
    NewVm,
    OpenVm,
    Preferences,
    Quit,
    Select(PathBuf),
    PowerOn(PathBuf),
    ShutDown(PathBuf),
    PowerOff(PathBuf),
    Reset(PathBuf),
    PauseResume(PathBuf),
    Suspend(PathBuf),
    SendKeys(PathBuf, &'static [u16]),
    AttachIso(PathBuf),
    EjectCd(PathBuf),
    Settings(PathBuf),
    TakeSnapshot(PathBuf),
    /// Go back to the snapshot the VM's present state grew from (asked first).
    RevertSnapshot(PathBuf),
    SnapshotManager(PathBuf),
    /// Move the running VM to another Vessel (VM ▸ Migrate…).
    Migrate(PathBuf),
    /// Back the VM up, running or not (VM ▸ Back Up…).
    BackUp(PathBuf),
    /// Bytes for a running VM's serial port.
    Serial(PathBuf, Vec<u8>),
    /// An ISO dropped on a VM (or on the library: None).
    DropIso(Option<PathBuf>, PathBuf),
    Scale(Scale),
    ToggleAutofit,
    ToggleFullscreen,
    ToggleRelative(PathBuf),
    Page(Page),
    About,
    Demo,
    Pick(Pick),
    Dialog(DialogAction),
    /// What the New VM wizard asks.
    Wizard(wizard::Action),
}

/// The app's commands that have a place in the menus and may have a shortcut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    NewVm,
    OpenVm,
    Preferences,
    Quit,
    PowerOn,
    ShutDown,
    PowerOff,
    Reset,
    PauseResume,
    Suspend,
    Settings,
    TakeSnapshot,
    RevertSnapshot,
    SnapshotManager,
    Migrate,
    BackUp,
    Fit,
    Actual,
    Fullscreen,
}

/// What a command needs to be available.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Needs {
    Nothing,
    /// A selected VM that can be powered on.
    VmOff,
    /// A selected VM that runs in this window.
    VmRunning,
    /// A selected VM that is not running in this window.
    VmNotRunning,
    /// A selected VM that is not starting or stopping.
    VmSettled,
}

/// One command: its label in the menus, its shortcut, what it needs.
pub struct Binding {
    pub verb: Verb,
    pub label: &'static str,
    pub shortcut: Option<KeyboardShortcut>,
    pub needs: Needs,
}

const fn shortcut(modifiers: Modifiers, key: Key) -> Option<KeyboardShortcut> {
    Some(KeyboardShortcut::new(modifiers, key))
}
const CTRL: Modifiers = Modifiers::COMMAND;
const CTRL_SHIFT: Modifiers =
    Modifiers { ctrl: true, shift: true, command: true, ..Modifiers::NONE };

/// Full screen too, and works while the guest has the keyboard (VMware's key); the
/// console's input routing takes it before the guest sees it.
pub const SC_FULLSCREEN_HOST: KeyboardShortcut = KeyboardShortcut::new(
    Modifiers { ctrl: true, alt: true, command: true, ..Modifiers::NONE },
    Key::Enter,
);

/// Every command, longer key combinations before their prefixes (Ctrl+Shift+E is not
/// Ctrl+E), which is the order shortcuts are matched in.
pub const BINDINGS: &[Binding] = &[
    Binding {
        verb: Verb::PowerOff,
        label: "Power Off",
        shortcut: shortcut(CTRL_SHIFT, Key::E),
        needs: Needs::VmRunning,
    },
    Binding {
        verb: Verb::Reset,
        label: "Reset",
        shortcut: shortcut(CTRL_SHIFT, Key::R),
        needs: Needs::VmRunning,
    },
    Binding {
        verb: Verb::PauseResume,
        label: "Pause / Resume",
        shortcut: shortcut(CTRL_SHIFT, Key::P),
        needs: Needs::VmRunning,
    },
    Binding {
        verb: Verb::Suspend,
        label: "Suspend",
        shortcut: shortcut(CTRL, Key::Z),
        needs: Needs::VmRunning,
    },
    Binding {
        verb: Verb::TakeSnapshot,
        label: "Take Snapshot…",
        shortcut: shortcut(CTRL, Key::M),
        needs: Needs::VmSettled,
    },
    Binding {
        verb: Verb::RevertSnapshot,
        label: "Revert to Snapshot…",
        shortcut: None,
        needs: Needs::VmSettled,
    },
    Binding {
        verb: Verb::SnapshotManager,
        label: "Snapshot Manager…",
        shortcut: None,
        needs: Needs::VmSettled,
    },
    Binding { verb: Verb::Migrate, label: "Migrate…", shortcut: None, needs: Needs::VmRunning },
    Binding { verb: Verb::BackUp, label: "Back Up…", shortcut: None, needs: Needs::VmSettled },
    Binding {
        verb: Verb::NewVm,
        label: "New VM…",
        shortcut: shortcut(CTRL, Key::N),
        needs: Needs::Nothing,
    },
    Binding {
        verb: Verb::OpenVm,
        label: "Open VM…",
        shortcut: shortcut(CTRL, Key::O),
        needs: Needs::Nothing,
    },
    Binding {
        verb: Verb::Preferences,
        label: "Preferences…",
        shortcut: shortcut(CTRL, Key::Comma),
        needs: Needs::Nothing,
    },
    Binding {
        verb: Verb::Quit,
        label: "Quit",
        shortcut: shortcut(CTRL, Key::Q),
        needs: Needs::Nothing,
    },
    Binding {
        verb: Verb::PowerOn,
        label: "Power On",
        shortcut: shortcut(CTRL, Key::B),
        needs: Needs::VmOff,
    },
    Binding {
        verb: Verb::ShutDown,
        label: "Shut Down (ACPI)",
        shortcut: shortcut(CTRL, Key::E),
        needs: Needs::VmRunning,
    },
    Binding {
        verb: Verb::Settings,
        label: "Settings…",
        shortcut: shortcut(CTRL, Key::D),
        needs: Needs::VmNotRunning,
    },
    Binding {
        verb: Verb::Fit,
        label: "Fit Window",
        shortcut: shortcut(CTRL, Key::Num0),
        needs: Needs::Nothing,
    },
    Binding {
        verb: Verb::Actual,
        label: "Actual Size",
        shortcut: shortcut(CTRL, Key::Num1),
        needs: Needs::Nothing,
    },
    Binding {
        verb: Verb::Fullscreen,
        label: "Full Screen",
        shortcut: shortcut(Modifiers::NONE, Key::F11),
        needs: Needs::Nothing,
    },
];

impl Verb {
    pub fn binding(self) -> &'static Binding {
        BINDINGS.iter().find(|b| b.verb == self).expect("every verb has a binding")
    }

    /// Whether it can be done now, on the selected VM (and its state) if it needs one.
    pub fn available(self, selected: Option<&VmState>) -> bool {
        match (self.binding().needs, selected) {
            (Needs::Nothing, _) => true,
            (_, None) => false,
            (Needs::VmOff, Some(state)) => state.can_power_on(),
            (Needs::VmRunning, Some(state)) => running_here(state),
            // A suspended VM's saved state fits its hardware as it is: not edited.
            (Needs::VmNotRunning, Some(state)) => {
                !running_here(state) && *state != VmState::Suspended
            }
            (Needs::VmSettled, Some(state)) => {
                !matches!(state, VmState::Starting | VmState::Stopping)
            }
        }
    }

    /// The act it asks for, on the selected VM; None if it needs one and none is.
    pub fn act(self, selected: Option<&Path>) -> Option<Act> {
        let vm = || selected.map(Path::to_path_buf);
        Some(match self {
            Verb::NewVm => Act::NewVm,
            Verb::OpenVm => Act::OpenVm,
            Verb::Preferences => Act::Preferences,
            Verb::Quit => Act::Quit,
            Verb::Fit => Act::Scale(Scale::Fit),
            Verb::Actual => Act::Scale(Scale::Actual),
            Verb::Fullscreen => Act::ToggleFullscreen,
            Verb::PowerOn => Act::PowerOn(vm()?),
            Verb::ShutDown => Act::ShutDown(vm()?),
            Verb::PowerOff => Act::PowerOff(vm()?),
            Verb::Reset => Act::Reset(vm()?),
            Verb::PauseResume => Act::PauseResume(vm()?),
            Verb::Suspend => Act::Suspend(vm()?),
            Verb::Settings => Act::Settings(vm()?),
            Verb::TakeSnapshot => Act::TakeSnapshot(vm()?),
            Verb::RevertSnapshot => Act::RevertSnapshot(vm()?),
            Verb::SnapshotManager => Act::SnapshotManager(vm()?),
            Verb::Migrate => Act::Migrate(vm()?),
            Verb::BackUp => Act::BackUp(vm()?),
        })
    }
}

/// The VM runs in this window (its session is up).
fn running_here(state: &VmState) -> bool {
    matches!(state, VmState::Starting | VmState::Running | VmState::Paused | VmState::Stopping)
}

/// The acts this frame's shortcuts ask for (consuming their key presses), for what is
/// available with `selected`'s state.
pub fn shortcuts(
    ctx: &egui::Context,
    selected: Option<&Path>,
    state: Option<&VmState>,
) -> Vec<Act> {
    let mut acts = Vec::new();
    ctx.input_mut(|i| {
        for b in BINDINGS {
            if let Some(sc) = &b.shortcut
                && b.verb.available(state)
                && i.consume_shortcut(sc)
                && let Some(act) = b.verb.act(selected)
            {
                acts.push(act);
            }
        }
    });
    acts
}

/// Key combinations the VM menu sends.
pub const COMBOS: &[(&str, &[u16])] = &[
    ("Ctrl+Alt+Del", &[KEY_LEFTCTRL, KEY_LEFTALT, KEY_DELETE]),
    ("Ctrl+Alt+Backspace", &[KEY_LEFTCTRL, KEY_LEFTALT, KEY_BACKSPACE]),
    ("Ctrl+Alt+F1", &[KEY_LEFTCTRL, KEY_LEFTALT, KEY_F1]),
    ("Ctrl+Alt+F2", &[KEY_LEFTCTRL, KEY_LEFTALT, KEY_F2]),
    ("Ctrl+Alt+F7", &[KEY_LEFTCTRL, KEY_LEFTALT, KEY_F7]),
    ("Print Screen", &[KEY_SYSRQ]),
    ("Super", &[KEY_LEFTMETA]),
    ("Alt+Tab", &[KEY_LEFTALT, KEY_TAB]),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_verb_has_one_binding_and_prefixes_come_after_longer_combos() {
        for b in BINDINGS {
            assert_eq!(BINDINGS.iter().filter(|o| o.verb == b.verb).count(), 1, "{:?}", b.verb);
        }
        let pos = |v: Verb| BINDINGS.iter().position(|b| b.verb == v).unwrap();
        assert!(pos(Verb::PowerOff) < pos(Verb::ShutDown), "Ctrl+Shift+E before Ctrl+E");
        assert!(Verb::PowerOn.available(Some(&VmState::Off)));
        assert!(!Verb::PowerOn.available(Some(&VmState::Elsewhere("1".into()))));
        assert!(!Verb::PowerOn.available(None));
        assert!(Verb::Settings.available(Some(&VmState::Off)));
        // A suspended VM resumes, and its hardware is not edited meanwhile.
        assert!(Verb::PowerOn.available(Some(&VmState::Suspended)));
        assert!(!Verb::Settings.available(Some(&VmState::Suspended)));
        assert!(Verb::Suspend.available(Some(&VmState::Running)));
        assert!(!Verb::Suspend.available(Some(&VmState::Off)));
        assert!(!Verb::Settings.available(Some(&VmState::Running)));
        assert_eq!(Verb::Reset.act(None), None);
    }
}
