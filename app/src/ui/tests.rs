//! The app driven through egui_kittest by its accessible labels, on temporary libraries:
//! the wizard, power buttons, dropped ISOs, an inaccessible bundle, the console showing a
//! guest's frame and passing keys and pointer on, and snapshots of the main screens.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use egui::accesskit::Role;
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;

use super::*;
use vm_library::config::Network as NetworkConfig;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vessel-ui-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn app(lib: &Path, render: bool) -> Harness<'static, VesselApp> {
    app_scaled(lib, render, 1.0)
}

/// The app at `pixels_per_point` screen pixels per point (HiDPI, fractional scaling).
fn app_scaled(lib: &Path, render: bool, pixels_per_point: f32) -> Harness<'static, VesselApp> {
    let lib = lib.to_path_buf();
    let mut builder = Harness::builder()
        .with_size([1180.0, 760.0])
        .with_pixels_per_point(pixels_per_point)
        .with_max_steps(8);
    if render {
        builder = builder.wgpu();
    }
    let mut h = builder.build_eframe(move |cc| {
        VesselApp::new(
            &cc.egui_ctx,
            Options { library: Some(lib.clone()), prefs_path: lib.join("prefs.toml") },
        )
    });
    wait(&mut h, "the library scan", |h| h.state().scanned_at.is_some());
    h
}

/// One frame, with the input going through the app's own routing first (as eframe's
/// raw_input_hook does).
fn step(h: &mut Harness<'static, VesselApp>) {
    let mut raw = std::mem::take(h.input_mut());
    h.state_mut().route_input(&mut raw);
    *h.input_mut() = raw;
    h.step();
}

/// Steps until `done` holds (threads do the work meanwhile); panics after a minute.
fn wait(
    h: &mut Harness<'static, VesselApp>,
    what: &str,
    done: impl Fn(&Harness<'static, VesselApp>) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done(h) {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; toasts: {:?}",
            h.state().toasts.titles()
        );
        step(h);
        std::thread::sleep(Duration::from_millis(10));
    }
    step(h);
}

/// An event straight into the next frame's input (the app routes it first, as eframe's
/// raw_input_hook would; kittest's own queue comes after that).
fn send(h: &mut Harness<'static, VesselApp>, event: egui::Event) {
    h.input_mut().events.push(event);
}

fn type_into(h: &mut Harness<'static, VesselApp>, field: &str, text: &str) {
    type_into_role(h, Role::TextInput, field, text);
}

/// Types into the last text field with this role and label (a dialog's, over the page's).
fn type_into_role(h: &mut Harness<'static, VesselApp>, role: Role, field: &str, text: &str) {
    h.get_all_by_role_and_label(role, field).last().expect("the field").focus();
    step(h);
    h.get_all_by_role_and_label(role, field).last().expect("the field").type_text(text);
    step(h);
    step(h);
}

fn has_label(h: &Harness<'static, VesselApp>, label: &str) -> bool {
    h.query_all_by_label_contains(label).next().is_some()
}

/// Clicks the first control with this role and label (toolbar buttons come first).
fn click(h: &mut Harness<'static, VesselApp>, role: Role, label: &str) {
    // The pointer goes there first, as a hand on a mouse does.
    h.get_all_by_role_and_label(role, label).next().expect("found").hover();
    step(h);
    h.get_all_by_role_and_label(role, label).next().expect("found").click();
    // The click; the action; a window's first (invisible, sizing) frame.
    for _ in 0..3 {
        step(h);
    }
}

/// A VM booting the test guest with `cmdline`.
fn test_vm(lib: &Path, name: &str, cmdline: &str) -> PathBuf {
    let library = Library::open(lib).unwrap();
    let args =
        crate::cli::CreateArgs::test_guest(name, vessel_tests::testguest_elf(), cmdline, 128 << 20);
    crate::vms::create_bundle(&library, &args).unwrap().0.root().to_path_buf()
}

/// An ISO of `files` (path, contents), named `name` in `dir`.
fn iso_of(dir: &Path, name: &str, files: &[(&str, &str)]) -> PathBuf {
    let root = dir.join(format!("{name}-root"));
    for (path, text) in files {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    let iso = dir.join(name);
    let out = std::process::Command::new("xorriso")
        .args(["-as", "mkisofs", "-quiet", "-V", "KITTEST", "-o"])
        .arg(&iso)
        .arg(&root)
        .output()
        .expect("xorriso runs (tools/install-deps installs it)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    iso
}

fn iso(dir: &Path) -> PathBuf {
    iso_of(dir, "disc.iso", &[("HELLO.TXT", "hello\n")])
}

/// A disc with a Linux kernel its isolinux configuration boots.
fn linux_iso(dir: &Path) -> PathBuf {
    let cfg =
        "default live\nlabel live\n  kernel /live/vmlinuz\n  append initrd=/live/initrd.gz quiet\n";
    iso_of(
        dir,
        "linux.iso",
        &[("isolinux/isolinux.cfg", cfg), ("live/vmlinuz", "kernel"), ("live/initrd.gz", "initrd")],
    )
}

#[derive(Debug)]
struct Dropped(PathBuf);

impl egui::DroppedFile for Dropped {
    fn path(&self) -> &Path {
        &self.0
    }

    fn bytes(&self) -> Result<Vec<u8>, String> {
        std::fs::read(&self.0).map_err(|e| e.to_string())
    }
}

fn drop_file(h: &mut Harness<'static, VesselApp>, at: egui::Pos2, path: &Path) {
    h.hover_at(at);
    step(h);
    h.input_mut().dropped_files.push(Arc::new(Dropped(path.to_path_buf())));
    step(h);
}

fn config_of(lib: &Path, name: &str) -> vm_library::config::VmConfig {
    Library::open(lib).unwrap().find(name).unwrap().config
}

#[test]
fn the_wizard_creates_a_vm_with_the_settings_chosen() {
    let lib = scratch("wizard");
    let kernel = vessel_tests::testguest_elf();
    let mut h = app(&lib, false);
    assert!(has_label(&h, "Welcome to Vessel"), "an empty library welcomes");
    assert!(has_label(&h, "Create the demo VM"), "and offers the demo VM");
    click(&mut h, Role::Button, "New VM");
    assert!(h.state().wizard.is_some(), "the wizard opened");
    h.get_by_label("A Linux kernel and initrd").click();
    step(&mut h);
    step(&mut h);
    // Nothing chosen: Next is off and the field says why.
    assert!(has_label(&h, "choose the Linux kernel"));
    type_into(&mut h, "Kernel", &kernel.display().to_string());
    assert_eq!(h.state().wizard.as_ref().unwrap().kernel, kernel.display().to_string());
    click(&mut h, Role::Button, "Next");
    assert_eq!(h.state().wizard.as_ref().unwrap().step, wizard::Step::Name);
    // The name step: a bad name is explained in place.
    type_into(&mut h, "Name", " bad");
    assert!(has_label(&h, "spaces"), "the name's problem is shown");
    h.get_by_role_and_label(Role::TextInput, "Name").focus();
    step(&mut h);
    h.state_mut().wizard.as_mut().unwrap().name = "Kitten".into();
    step(&mut h);
    click(&mut h, Role::Button, "Next");
    h.state_mut().wizard.as_mut().unwrap().memory_mib = 256;
    step(&mut h);
    click(&mut h, Role::Button, "Next");
    assert!(has_label(&h, "256 MiB"), "the summary shows the choices");
    click(&mut h, Role::CheckBox, "Power on after creating");
    click(&mut h, Role::Button, "Finish");
    wait(&mut h, "the VM to be created", |h| h.state().wizard.is_none());
    let config = config_of(&lib, "Kitten");
    assert_eq!((config.vcpus, config.memory_mib), (1, 256));
    assert!(matches!(config.boot.value, Boot::Direct { .. }));
    assert!(lib.join("Kitten.vessel/boot/kernel").is_file(), "the kernel is copied in");
    assert_eq!(config.disks.len(), 1, "with its disk");
    assert!(lib.join("Kitten.vessel").join(&config.disks[0].file).is_file());
    wait(&mut h, "the new VM in the list", |h| has_label(h, "Kitten"));
}

#[test]
fn power_buttons_change_the_vms_state() {
    let lib = scratch("power");
    test_vm(&lib, "Spinner", "test=gpu");
    let mut h = app(&lib, false);
    click(&mut h, Role::Button, "Power On");
    wait(&mut h, "Running", |h| {
        h.state().running.values().any(|r| r.session.phase == Phase::Running)
    });
    assert!(has_label(&h, "Running"));
    click(&mut h, Role::Button, "Pause");
    wait(&mut h, "Paused", |h| has_label(h, "Paused"));
    click(&mut h, Role::Button, "Resume");
    wait(&mut h, "Running again", |h| {
        h.state().running.values().any(|r| r.session.phase == Phase::Running)
    });
    click(&mut h, Role::Button, "Power Off");
    wait(&mut h, "Off", |h| h.state().running.is_empty());
    assert!(has_label(&h, "Off"));
}

#[test]
fn a_corrupt_bundle_is_shown_as_inaccessible() {
    let lib = scratch("corrupt");
    std::fs::create_dir_all(lib.join("Broken.vessel")).unwrap();
    std::fs::write(lib.join("Broken.vessel/vessel.toml"), "garbage [").unwrap();
    let mut h = app(&lib, false);
    wait(&mut h, "Broken listed", |h| has_label(h, "Broken"));
    assert!(has_label(&h, "Inaccessible"));
    assert!(has_label(&h, "not valid TOML"), "with the reason");
    // Power On is not offered for it.
    use egui_kittest::kittest::NodeT;
    assert!(
        h.query_by_role_and_label(Role::Button, "Power On")
            .is_none_or(|n| n.accesskit_node().is_disabled())
    );
}

#[test]
fn dropped_isos_go_where_they_were_dropped_and_other_files_change_nothing() {
    let lib = scratch("drop");
    let disc = iso(&lib);
    test_vm(&lib, "Target", "test=gpu");
    let mut h = app(&lib, false);
    let sidebar = h.state().sidebar_rect.center();
    let main = egui::pos2(800.0, 400.0);

    // Dragging over the window says what a drop will do, by where it would land.
    let hover = |h: &mut Harness<'static, VesselApp>, at: egui::Pos2, file: &Path| {
        h.input_mut().hovered_files =
            vec![egui::HoveredFile { path: Some(file.to_path_buf()), mime: String::new() }];
        h.hover_at(at);
        step(h);
        step(h);
    };
    hover(&mut h, main, &disc);
    assert!(has_label(&h, "Drop an ISO to attach it as Target's CD"));
    hover(&mut h, sidebar, &disc);
    assert!(has_label(&h, "Drop an ISO to create a VM from it"));
    let text = lib.join("notes.txt");
    std::fs::write(&text, "not a disc").unwrap();
    hover(&mut h, main, &text);
    assert!(has_label(&h, "notes.txt does not look like an ISO image"));
    h.input_mut().hovered_files.clear();
    step(&mut h);
    step(&mut h);
    assert!(!has_label(&h, "Drop an ISO"), "the overlay goes with the drag");

    // Not an ISO: a message with details, and nothing changes.
    drop_file(&mut h, main, &text);
    wait(&mut h, "the message", |h| has_label(h, "Not an ISO image"));
    assert_eq!(config_of(&lib, "Target").cdrom.iso, None);
    click(&mut h, Role::Button, "Details");
    assert!(has_label(&h, "is not an ISO image Vessel can use"), "the details say why");
    click(&mut h, Role::Button, "Close window");
    click(&mut h, Role::Button, "Dismiss");
    assert!(!has_label(&h, "Not an ISO image"), "dismissed");

    // On a VM that is off: its CD.
    drop_file(&mut h, main, &disc);
    wait(&mut h, "the CD attached", |_| config_of(&lib, "Target").cdrom.iso.is_some());
    assert_eq!(config_of(&lib, "Target").cdrom.iso.as_deref(), Some(disc.as_path()));
    // VM > Removable Devices > CD > Eject empties the drive of a VM that is off...
    click(&mut h, Role::Button, "VM");
    click(&mut h, Role::Button, "Removable Devices");
    click(&mut h, Role::Button, "CD");
    click(&mut h, Role::Button, "Eject");
    wait(&mut h, "the CD ejected", |_| config_of(&lib, "Target").cdrom.iso.is_none());
    // ...and the disc goes back in for what follows.
    drop_file(&mut h, main, &disc);
    wait(&mut h, "the CD attached again", |_| config_of(&lib, "Target").cdrom.iso.is_some());

    // On a running VM: the disc in its drive is swapped.
    click(&mut h, Role::Button, "Power On");
    wait(&mut h, "Running", |h| {
        h.state().running.values().any(|r| r.session.phase == Phase::Running)
    });
    drop_file(&mut h, main, &disc);
    wait(&mut h, "the disc swapped", |h| has_label(h, "is in the CD drive"));
    click(&mut h, Role::Button, "Power Off");
    wait(&mut h, "Off", |h| h.state().running.is_empty());

    // On a VM with nothing else to boot: its CD, and its boot medium when it has Linux.
    let blank = Library::open(&lib).unwrap();
    let args = crate::cli::CreateArgs {
        memory: Some(128 << 20),
        disk_size: Some(0),
        no_net: true,
        ..crate::cli::CreateArgs::named("Blank")
    };
    crate::vms::create_bundle(&blank, &args).unwrap();
    h.state_mut().scanned_at = None;
    wait(&mut h, "Blank listed", |h| h.state().items.len() == 2);
    click(&mut h, Role::Button, "Blank");
    assert!(matches!(config_of(&lib, "Blank").boot.value, Boot::Bios));
    let live = linux_iso(&lib);
    drop_file(&mut h, main, &live);
    wait(&mut h, "the Linux disc attached", |_| config_of(&lib, "Blank").cdrom.iso.is_some());
    assert!(matches!(config_of(&lib, "Blank").boot.value, Boot::Cdrom), "it boots from the CD");

    // On the library: the New VM wizard, with the ISO chosen and read.
    drop_file(&mut h, sidebar, &disc);
    wait(&mut h, "the wizard with the ISO read", |h| {
        h.state()
            .wizard
            .as_ref()
            .is_some_and(|w| matches!(w.iso_state, wizard::IsoState::Ok { .. }))
    });
    assert_eq!(h.state().wizard.as_ref().unwrap().iso, disc.display().to_string());
}

/// The test guest's pattern (tests/tests/display.rs): pixel (x, y) has blue 2x, green 2y,
/// red 0x40, in a 128x96 frame.
fn pattern(x: u32, y: u32) -> [u8; 3] {
    [0x40, (2 * y) as u8, (2 * x) as u8]
}

#[test]
fn the_console_shows_the_guests_frame_and_passes_keys_and_pointer_on() {
    let lib = scratch("console");
    test_vm(&lib, "Drawing", "test=gpu");
    test_vm(&lib, "Typing", "test=input");
    test_vm(&lib, "Pointing", "test=input-tablet");
    // Fractional scaling: 1.25 screen pixels per point.
    let mut h = app_scaled(&lib, true, 1.25);
    wait(&mut h, "all listed", |h| h.state().items.len() == 3);

    // The frame: drawn by the guest through virtio-gpu, uploaded into the console's
    // texture, rendered by wgpu.
    click(&mut h, Role::Button, "Drawing");
    h.state_mut().prefs.autofit = false;
    click(&mut h, Role::Button, "Power On");
    wait(&mut h, "the guest's frame", |h| {
        h.state().running.values().any(|r| r.screen.size() == [128, 96])
    });
    assert!(has_label(&h, "Drawing screen"), "the library shows a live thumbnail");
    let console = h.get_by_label("Guest console").rect();
    let image = h.render().expect("wgpu renders (mesa-vulkan-drivers)");
    let ppp = h.ctx.pixels_per_point();
    let shown = console::place(console, [128, 96], Scale::Fit, ppp);
    let mut checked = 0;
    for (gx, gy) in [(8u32, 8u32), (100, 20), (64, 48), (20, 90), (120, 80)] {
        // The centre of guest pixel (gx, gy) on screen.
        let sx = shown.min.x + (gx as f32 + 0.5) * shown.width() / 128.0;
        let sy = shown.min.y + (gy as f32 + 0.5) * shown.height() / 96.0;
        let px = image.get_pixel((sx * ppp) as u32, (sy * ppp) as u32).0;
        let want = pattern(gx, gy);
        for c in 0..3 {
            assert!(
                (i32::from(px[c]) - i32::from(want[c])).abs() <= 6,
                "guest ({gx},{gy}) shows {px:?}, drew {want:?}"
            );
        }
        checked += 1;
    }
    assert_eq!(checked, 5);
    let uploaded = h.state().running.values().map(|r| r.screen.rows_uploaded).sum::<u64>();
    assert!(uploaded >= 96, "the whole frame went up once at least ({uploaded} rows)");
    // Autofit was off: the guest was not asked for another size. On: it is asked for the
    // console's size in screen pixels.
    let display = h.state().running.values().next().unwrap().session.display.clone().unwrap();
    assert_eq!(display.requested_size(), None);
    h.state_mut().prefs.autofit = true;
    step(&mut h);
    step(&mut h);
    let console = h.get_by_label("Guest console").rect();
    let want = ((console.width() * ppp).round() as u32, (console.height() * ppp).round() as u32);
    assert_eq!(display.requested_size(), Some(want));
    click(&mut h, Role::Button, "Power Off");
    wait(&mut h, "Off", |h| h.state().running.is_empty());

    // Keys: clicked into, the console takes the keyboard; egui's shortcuts do not fire.
    click(&mut h, Role::Button, "Typing");
    click(&mut h, Role::Button, "Power On");
    let root = h.state().selected.clone().unwrap();
    wait(&mut h, "the guest's input driver", |h| {
        h.state().running.get(&root).is_some_and(|r| r.session.serial.contains("INPUT READY"))
    });
    h.get_by_label("Guest console").click();
    step(&mut h);
    step(&mut h);
    assert_eq!(h.state().keyboard.as_deref(), Some(root.as_path()), "the console has the keyboard");
    // As egui-winit reports them: A; Ctrl+Q (which must go to the guest, not to the app's
    // Quit); Ctrl+C, which egui-winit turns into Copy and the key's release.
    let key = console::key;
    send(&mut h, key(egui::Key::A, true, Modifiers::NONE));
    send(&mut h, egui::Event::Text("a".into()));
    send(&mut h, key(egui::Key::A, false, Modifiers::NONE));
    send(&mut h, egui::Event::ModifiersChanged(Modifiers::CTRL));
    send(&mut h, key(egui::Key::Q, true, Modifiers::CTRL));
    send(&mut h, key(egui::Key::Q, false, Modifiers::CTRL));
    send(&mut h, egui::Event::Copy);
    send(&mut h, key(egui::Key::C, false, Modifiers::CTRL));
    send(&mut h, egui::Event::ModifiersChanged(Modifiers::NONE));
    step(&mut h);
    let expected: Vec<(u16, u16, i32)> = [
        (KEY_A, 1),
        (KEY_A, 0),
        (KEY_LEFTCTRL, 1),
        (KEY_Q, 1),
        (KEY_Q, 0),
        (KEY_C, 1),
        (KEY_C, 0),
        (KEY_LEFTCTRL, 0),
    ]
    .iter()
    .flat_map(|&(code, v)| [(1u16, code, v), (0, 0, 0)])
    .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while guest_events(&h, &root).len() < expected.len() && Instant::now() < deadline {
        step(&mut h);
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        guest_events(&h, &root),
        expected,
        "serial: {}",
        h.state().running[&root].session.serial
    );
    assert!(h.state().closing == Closing::No, "Ctrl+Q did not reach the app");

    let input = h.state().running[&root].session.input.clone().unwrap();

    // Focus leaving the window releases every key the guest holds.
    send(&mut h, egui::Event::ModifiersChanged(Modifiers::SHIFT));
    step(&mut h);
    assert_eq!(input.pressed_keys(), vec![KEY_LEFTSHIFT]);
    send(&mut h, egui::Event::WindowFocused(false));
    step(&mut h);
    assert!(input.pressed_keys().is_empty(), "released on focus loss");
    assert_eq!(h.state().keyboard, None);
    send(&mut h, egui::Event::WindowFocused(true));
    step(&mut h);

    // The guest saw Shift go down and come back up.
    let seen = expected.len() + 4;
    wait(&mut h, "Shift and its release", |h| guest_events(h, &root).len() >= seen);
    let shift = [(1, KEY_LEFTSHIFT, 1), (0, 0, 0), (1, KEY_LEFTSHIFT, 0), (0, 0, 0)];
    assert_eq!(guest_events(&h, &root)[expected.len()..], shift[..]);

    // VM > Send Keys > Ctrl+Alt+Del: pressed in order, released in reverse.
    click(&mut h, Role::Button, "VM");
    click(&mut h, Role::Button, "Send Keys");
    click(&mut h, Role::Button, "Ctrl+Alt+Del");
    let combo: Vec<(u16, u16, i32)> = [
        (KEY_LEFTCTRL, 1),
        (KEY_LEFTALT, 1),
        (KEY_DELETE, 1),
        (KEY_DELETE, 0),
        (KEY_LEFTALT, 0),
        (KEY_LEFTCTRL, 0),
    ]
    .iter()
    .flat_map(|&(code, v)| [(1u16, code, v), (0, 0, 0)])
    .collect();
    wait(&mut h, "the combination", |h| guest_events(h, &root).len() >= seen + combo.len());
    assert_eq!(guest_events(&h, &root)[seen..], combo[..]);

    // Relative mode: a click grabs the pointer, motion goes to the mouse in screen pixels,
    // Ctrl+Alt lets go.
    h.state_mut().act(Act::ToggleRelative(root.clone()));
    let mouse = input.queue(vmm::InputKind::Mouse);
    mouse.take(usize::MAX);
    h.get_by_label("Guest console").click();
    for _ in 0..3 {
        step(&mut h);
    }
    assert!(h.state().running[&root].grabbed, "the click grabbed the pointer");
    assert!(has_label(&h, "press Ctrl+Alt to release"), "the status bar says how to let go");
    mouse.take(usize::MAX); // the click's buttons
    send(&mut h, egui::Event::MouseMoved(egui::vec2(5.0, -3.0)));
    step(&mut h);
    let ppp = h.ctx.pixels_per_point();
    let moved: Vec<(u16, u16, i32)> =
        mouse.take(usize::MAX).iter().map(|e| (e.kind, e.code, e.value)).collect();
    let (dx, dy) = ((5.0 * ppp).round() as i32, (-3.0 * ppp).round() as i32);
    assert_eq!(moved, vec![(2, 0, dx), (2, 1, dy), (0, 0, 0)]);
    send(&mut h, egui::Event::ModifiersChanged(Modifiers::CTRL));
    send(
        &mut h,
        egui::Event::ModifiersChanged(Modifiers { ctrl: true, alt: true, ..Modifiers::NONE }),
    );
    step(&mut h);
    assert!(!h.state().running[&root].grabbed, "Ctrl+Alt released the grab");
    assert_eq!(h.state().keyboard, None, "and the keyboard");
    assert!(input.pressed_keys().is_empty());
    send(&mut h, egui::Event::ModifiersChanged(Modifiers::NONE));
    step(&mut h);
    click(&mut h, Role::Button, "Power Off");
    wait(&mut h, "Off", |h| h.state().running.is_empty());

    // Pointer: a click in the console reaches the guest's tablet driver at the guest pixel
    // under it, whatever the scaling.
    click(&mut h, Role::Button, "Pointing");
    click(&mut h, Role::Button, "Power On");
    let root = h.state().selected.clone().unwrap();
    wait(&mut h, "the guest's tablet driver", |h| {
        h.state()
            .running
            .get(&root)
            .is_some_and(|r| r.session.serial.contains("INPUT READY") && r.screen.size()[0] > 0)
    });
    assert!(h.state().running[&root].session.serial.contains("INPUT NAME Vessel Tablet"));
    let console = h.get_by_label("Guest console").rect();
    let size = h.state().running[&root].screen.size();
    let shown = console::place(console, size, Scale::Fit, h.ctx.pixels_per_point());
    let at = shown.min + shown.size() * egui::vec2(0.25, 0.75);
    let button = |pressed| egui::Event::PointerButton {
        pos: at,
        button: egui::PointerButton::Primary,
        pressed,
        modifiers: Modifiers::NONE,
    };
    h.event(egui::Event::PointerMoved(at));
    h.event(button(true));
    h.event(button(false));
    step(&mut h);
    let abs =
        |v: f64, n: usize| ((v / (n - 1) as f64) * f64::from(vmm::input::ABS_MAX)).round() as i32;
    let (gx, gy) = console::to_guest(at, shown, size);
    let left = vmm::Button::Left.code();
    let expected = [
        (3, 0, abs(gx, size[0])),
        (3, 1, abs(gy, size[1])),
        (0, 0, 0),
        (1, left, 1),
        (0, 0, 0),
        (1, left, 0),
        (0, 0, 0),
    ];
    wait(&mut h, "the guest to report the click", |h| {
        guest_events(h, &root).ends_with(&[(1, left, 0), (0, 0, 0)])
    });
    let events = guest_events(&h, &root);
    // The move and the press come as the same position (a move, then the press with it).
    assert_eq!(events[events.len() - 7..], expected[..], "{events:?}");
    assert!(
        (0.2..0.3).contains(&(gx / size[0] as f64)) && (0.7..0.8).contains(&(gy / size[1] as f64))
    );
    click(&mut h, Role::Button, "Power Off");
    wait(&mut h, "Off", |h| h.state().running.is_empty());
}

/// "EV type code value" lines the input test guest printed, as numbers.
fn guest_events(h: &Harness<'static, VesselApp>, root: &Path) -> Vec<(u16, u16, i32)> {
    let Some(r) = h.state().running.get(root) else { return Vec::new() };
    let serial = &r.session.serial;
    let complete = &serial[..serial.rfind('\n').map_or(0, |i| i + 1)];
    complete
        .lines()
        .filter_map(|l| l.strip_prefix("EV "))
        .map(|l| {
            let f: Vec<u64> = l.split_whitespace().map(vessel_tests::hex).collect();
            (f[0] as u16, f[1] as u16, f[2] as u32 as i32)
        })
        .collect()
}

#[test]
fn snapshots_of_the_main_screens() {
    let lib = scratch("snapshots");
    test_vm(&lib, "Snapshot VM", "test=gpu");
    let mut h = app(&lib, true);
    wait(&mut h, "listed", |h| !h.state().items.is_empty());
    // The same paths on every machine.
    let shown_root = PathBuf::from("/library/Snapshot VM.vessel");
    let real_root = h.state().items[0].root.clone();
    h.state_mut().items[0].root = shown_root.clone();
    h.state_mut().selected = Some(shown_root.clone());
    h.state_mut().scanned_at = Some(Instant::now() + Duration::from_secs(3600));
    for _ in 0..5 {
        step(&mut h);
    }
    h.snapshot("summary");
    h.state_mut().open_wizard(None);
    for _ in 0..3 {
        step(&mut h);
    }
    h.snapshot("wizard");
    h.state_mut().wizard = None;
    // The console of a running guest, the guest's own pixels (and what changes with time:
    // its thumbnail, the status bar's figures and the hint after them) masked.
    h.state_mut().items[0].root = real_root.clone();
    h.state_mut().selected = Some(real_root.clone());
    h.state_mut().prefs.autofit = false;
    click(&mut h, Role::Button, "Power On");
    wait(&mut h, "the guest's frame", |h| {
        h.state().running.values().any(|r| r.screen.size() == [128, 96])
    });
    h.get_by_label("Guest console").click();
    for _ in 0..3 {
        step(&mut h);
    }
    let console = h.get_by_label("Guest console").rect();
    let status = h.get_by_label_contains("The guest has the keyboard").rect();
    h.mask(console::place(console, [128, 96], Scale::Fit, h.ctx.pixels_per_point()));
    h.mask(h.state().sidebar_rect);
    let width = h.ctx.content_rect().width();
    h.mask(egui::Rect::from_min_max(
        egui::pos2(0.0, status.min.y - 4.0),
        egui::pos2(width, status.max.y + 4.0),
    ));
    h.snapshot("console");
    click(&mut h, Role::Button, "Power Off");
    wait(&mut h, "Off", |h| h.state().running.is_empty());
}

#[test]
fn a_crashed_guest_shows_why_and_can_be_restarted_while_others_run_on() {
    let lib = scratch("crash");
    test_vm(&lib, "Crasher", "test=triple");
    test_vm(&lib, "Survivor", "test=echo");
    let mut h = app(&lib, false);
    wait(&mut h, "both listed", |h| h.state().items.len() == 2);
    assert!(h.state_mut().power_on_by_name("Survivor"));
    wait(&mut h, "Survivor running", |h| {
        h.state().running.values().any(|r| r.session.phase == Phase::Running)
    });
    assert!(h.state_mut().power_on_by_name("Crasher"));
    wait(&mut h, "the crash", |h| {
        h.state().endings.values().any(|e| matches!(e, Ending::Crashed(_)))
    });
    h.state_mut().page = Page::Summary;
    step(&mut h);
    assert!(has_label(&h, "Crashed"), "the state says so");
    assert!(has_label(&h, "triple fault"), "with the reason");
    assert_eq!(h.state().running.len(), 1, "the other VM runs on");
    click(&mut h, Role::Button, "Restart");
    assert_eq!(h.state().running.len(), 2, "restarted");
    wait(&mut h, "the crash again", |h| {
        h.state().endings.values().any(|e| matches!(e, Ending::Crashed(_)))
            && h.state().running.len() == 1
    });
    h.state_mut().power_off_all();
    wait(&mut h, "all off", |h| h.state().running.is_empty());
}

#[test]
fn the_serial_console_reads_and_types() {
    let lib = scratch("serial");
    test_vm(&lib, "Echo", "test=echo");
    let mut h = app(&lib, false);
    click(&mut h, Role::Button, "Power On");
    let root = h.state().selected.clone().unwrap();
    let serial_has = |h: &Harness<'static, VesselApp>, text: &str| {
        h.state().running.get(&root).is_some_and(|r| r.session.serial.contains(text))
    };
    wait(&mut h, "the guest's banner", |h| serial_has(h, "ECHO READY"));
    click(&mut h, Role::Button, "Serial");
    assert!(has_label(&h, "ECHO READY"), "the serial view shows the output");
    type_into(&mut h, "Line", "hello from the app");
    click(&mut h, Role::Button, "Send");
    wait(&mut h, "the echo", |h| serial_has(h, "hello from the app"));
    // Typing straight into the view: each key to the guest, as a terminal sends it.
    h.get_by_label("Serial console").click();
    step(&mut h);
    step(&mut h);
    send(&mut h, egui::Event::Text("xyz".into()));
    let enter = egui::Event::Key {
        key: egui::Key::Enter,
        physical_key: None,
        pressed: true,
        repeat: false,
        modifiers: Modifiers::NONE,
    };
    send(&mut h, enter);
    step(&mut h);
    wait(&mut h, "the typed echo", |h| serial_has(h, "xyz\r"));
    click(&mut h, Role::Button, "Power Off");
    wait(&mut h, "Off", |h| h.state().running.is_empty());
}

fn request_close(h: &mut Harness<'static, VesselApp>) {
    let root = h.input_mut().viewports.entry(egui::ViewportId::ROOT).or_default();
    root.events.push(egui::ViewportEvent::Close);
    for _ in 0..3 {
        step(h);
    }
}

#[test]
fn closing_with_running_vms_asks_and_powers_them_off() {
    let lib = scratch("close");
    test_vm(&lib, "Runner", "test=echo");
    let mut h = app(&lib, false);
    click(&mut h, Role::Button, "Power On");
    wait(&mut h, "Running", |h| {
        h.state().running.values().any(|r| r.session.phase == Phase::Running)
    });
    request_close(&mut h);
    assert!(has_label(&h, "VMs are running"), "the app asks");
    assert!(h.state().closing == Closing::Asking);
    click(&mut h, Role::Button, "Cancel");
    assert!(h.state().closing == Closing::No && h.state().any_running(), "Cancel keeps all");
    request_close(&mut h);
    click(&mut h, Role::Button, "Power Off All");
    wait(&mut h, "the VMs off and the window closing", |h| h.state().closing == Closing::Go);
    assert!(!h.state().any_running());
}

#[test]
fn preferences_persist() {
    let lib = scratch("prefs");
    let mut h = app(&lib, false);
    h.state_mut().act(Act::Preferences);
    for _ in 0..3 {
        step(&mut h);
    }
    let draft = h.state_mut().prefs_draft.as_mut().unwrap();
    draft.theme = prefs::Theme::Light;
    draft.renderer = prefs::Renderer::Wgpu;
    click(&mut h, Role::Button, "Save");
    let (saved, err) = Preferences::load(&lib.join("prefs.toml"));
    assert!(err.is_none());
    assert_eq!((saved.theme, saved.renderer), (prefs::Theme::Light, prefs::Renderer::Wgpu));
    // The next start reads them.
    let h = app(&lib, false);
    assert_eq!(h.state().prefs.theme, prefs::Theme::Light);
}

#[test]
fn the_demo_vm_is_made_from_the_default_linux_guest() {
    let lib = scratch("demo");
    let progress = jobs::Progress::default();
    let root = demo::make(&lib, &["Demo Linux".to_string()], &progress).expect("the demo VM");
    let config = config_of(&lib, "Demo Linux 2");
    assert_eq!(root, lib.join("Demo Linux 2.vessel"), "a free name");
    let Boot::Direct { kernel, initrd, cmdline } = &config.boot.value else { panic!("{config:?}") };
    assert!(root.join(kernel).is_file() && root.join(initrd.as_ref().unwrap()).is_file());
    assert!(cmdline.contains("console=ttyS0") && cmdline.ends_with("console=tty0"), "{cmdline}");
    // The kernel is the default guest's, byte for byte.
    let (vmlinuz, _) = vessel_tests::default_linux_guest();
    assert_eq!(std::fs::read(root.join(kernel)).unwrap(), std::fs::read(vmlinuz).unwrap());
}

#[test]
fn every_guest_frame_wakes_the_window() {
    let lib = scratch("wake");
    let root = test_vm(&lib, "Anim", "test=gpu-anim");
    let wakes = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = wakes.clone();
    let mut session = Session::start(
        lib.clone(),
        root,
        "Anim".into(),
        Arc::new(move || {
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while session.display.as_ref().and_then(|d| d.size()) != Some((1920, 1080)) {
        assert!(Instant::now() < deadline, "the guest never showed its frame");
        session.poll();
        std::thread::sleep(Duration::from_millis(10));
    }
    let before = wakes.load(std::sync::atomic::Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs(1));
    let woken = wakes.load(std::sync::atomic::Ordering::Relaxed) - before;
    // The guest draws a frame every few milliseconds; status updates alone are one a second.
    assert!(woken >= 10, "{woken} wake-ups in a second");
    // The status bar's figures: the guest writes its 8 MiB frame, so at least that much of
    // its 128 MiB is resident; its vCPU is busy. (Samples come once a second.)
    let deadline = Instant::now() + Duration::from_secs(20);
    while session.cpu.is_empty() && Instant::now() < deadline {
        session.poll();
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        (8 << 20..=128 << 20).contains(&session.memory_resident),
        "{}",
        session.memory_resident
    );
    assert!(session.cpu.back().is_some_and(|&c| c > 10.0), "{:?}", session.cpu);
    session.send(Command::PowerOff);
    while !session.is_over() {
        session.poll();
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn settings_are_checked_and_saved() {
    let lib = scratch("settings");
    test_vm(&lib, "Tuned", "test=echo");
    let mut h = app(&lib, false);
    click(&mut h, Role::Button, "Settings…");
    assert!(has_label(&h, "Tuned settings"), "the settings window opened");
    // More memory than this computer has: refused, with the reason, nothing saved.
    h.state_mut().settings.as_mut().unwrap().memory_mib = 1 << 24;
    click(&mut h, Role::Button, "Save");
    wait(&mut h, "the refusal", |h| has_label(h, "That did not work"));
    click(&mut h, Role::Button, "Details");
    assert!(has_label(&h, "memory_mib"), "the details name the field");
    assert_eq!(config_of(&lib, "Tuned").memory_mib, 128);
    click(&mut h, Role::Button, "Close window");
    click(&mut h, Role::Button, "Settings…");
    type_into_role(&mut h, Role::MultilineTextInput, "Notes", "for the release tests");
    h.state_mut().settings.as_mut().unwrap().follow_window = false;
    step(&mut h);
    click(&mut h, Role::Button, "Save");
    wait(&mut h, "saved", |_| config_of(&lib, "Tuned").notes == "for the release tests");
    let config = config_of(&lib, "Tuned");
    assert_eq!(config.display.value, DisplayConfig::Fixed { width: 1024, height: 768 });
    assert_eq!(config.memory_mib, 128);
    // With a network card, the guest's access to this computer is a setting (off at first).
    let changes: Vec<(String, String)> =
        [("network.mode", "nat"), ("network.mac", "52:54:00:12:34:56")]
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .into();
    Library::open(&lib).unwrap().edit("Tuned", &changes, &Host::this()).unwrap();
    h.state_mut().rescan_now();
    wait(&mut h, "the rescan", |h| {
        h.state().items.iter().any(|i| match &i.kind {
            ItemKind::Ok { config, .. } => config.network.value != NetworkConfig::None,
            _ => false,
        })
    });
    click(&mut h, Role::Button, "Settings…");
    click(&mut h, Role::CheckBox, "Guest can reach this computer");
    click(&mut h, Role::Button, "Save");
    let open = |c: &vm_library::config::VmConfig| {
        matches!(c.network.value, NetworkConfig::Nat { host_access: true, .. })
    };
    wait(&mut h, "saved", |_| open(&config_of(&lib, "Tuned")));
}

#[test]
fn open_vm_adds_a_folder_and_the_library_folder_can_move() {
    let dir = scratch("open");
    let lib = dir.join("library");
    let elsewhere = dir.join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    // A VM made outside the library, as another machine's copy would be.
    let other = test_vm(&elsewhere, "Visitor", "test=echo");
    let mut h = app(&lib, false);
    assert!(h.state().items.is_empty());
    h.state_mut().picked(Pick::OpenVm, Some(other.clone()));
    wait(&mut h, "Visitor listed", |h| h.state().items.iter().any(|i| i.root == other));
    assert!(has_label(&h, "Visitor"));

    // Preferences > Library folder: the window shows the other library (and keeps it).
    // (Starting from preferences that name the first library, not the user's own.)
    let prefs = dir.join("prefs.toml");
    Preferences { library: Some(lib.clone()), ..Default::default() }.save(&prefs).unwrap();
    let mut h = Harness::builder().with_size([1180.0, 760.0]).build_eframe(move |cc| {
        VesselApp::new(&cc.egui_ctx, Options { library: None, prefs_path: prefs })
    });
    wait(&mut h, "the first library", |h| h.state().items.iter().any(|i| i.root == other));
    h.state_mut().act(Act::Preferences);
    step(&mut h);
    h.state_mut().prefs_draft.as_mut().unwrap().library = Some(elsewhere.clone());
    for _ in 0..3 {
        step(&mut h);
    }
    click(&mut h, Role::Button, "Save");
    wait(&mut h, "the other library", |h| h.state().items.iter().any(|i| i.name == "Visitor"));
    let (saved, _) = Preferences::load(&dir.join("prefs.toml"));
    assert_eq!(saved.library.as_deref(), Some(elsewhere.as_path()));
}

#[test]
fn actual_size_scrolls_a_screen_larger_than_the_console() {
    let lib = scratch("actual");
    test_vm(&lib, "Wide", "test=gpu-anim");
    let mut h = app(&lib, false);
    h.state_mut().prefs.autofit = false;
    click(&mut h, Role::Button, "Power On");
    wait(&mut h, "the 1920x1080 screen", |h| h.state().console_size() == Some([1920, 1080]));
    click(&mut h, Role::Button, "View");
    // A selectable menu entry, its shortcut beside it.
    h.get_all_by_label_contains("Actual Size").next().expect("the menu entry").click();
    for _ in 0..3 {
        step(&mut h);
    }
    assert_eq!(h.state().scale, Scale::Actual);
    let area = h.get_by_label("Guest console").rect();
    let root = h.state().selected.clone().unwrap();
    assert_eq!(h.state().running[&root].pan, Vec2::ZERO, "from the top-left");
    // The pointer at the bottom-right edge scrolls until the screen's corner shows.
    h.hover_at(area.max - Vec2::splat(4.0));
    for _ in 0..200 {
        step(&mut h);
    }
    let pan = h.state().running[&root].pan;
    let overflow = Vec2::new(1920.0, 1080.0) - area.size();
    assert_eq!(pan, overflow, "scrolled to the corner");
    // The pointer maps through the scroll: the bottom-right pixel is under the corner.
    let shown = console::place_panned(area, [1920, 1080], 1.0, &mut pan.clone());
    assert_eq!(shown.max, area.max);
    let (x, y) = console::to_guest(area.max - Vec2::splat(0.5), shown, [1920, 1080]);
    assert_eq!((x.floor(), y.floor()), (1919.0, 1079.0));
    click(&mut h, Role::Button, "Power Off");
    wait(&mut h, "Off", |h| h.state().running.is_empty());
}
