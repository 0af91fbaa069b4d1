//! The console and serial pages, and snapshots of the main screens.

use super::*;

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
    wait(&mut h, "all listed", |h| h.state().library.items.len() == 3);

    // The frame: drawn by the guest through virtio-gpu, uploaded into the console's
    // texture, rendered by wgpu.
    click(&mut h, Role::Button, "Drawing");
    h.state_mut().prefs.autofit = false;
    click(&mut h, Role::Button, "Power On");
    wait(&mut h, "the guest's frame", |h| {
        h.state().running.vms.values().any(|r| r.console.screen.size() == [128, 96])
    });
    assert!(has_label(&h, "Drawing screen"), "the library shows a live thumbnail");
    let console = h.get_by_label("Guest console").rect();
    let image = h.render().expect("wgpu renders (mesa-vulkan-drivers)");
    let ppp = h.ctx.pixels_per_point();
    let shown = console::view::place(console, [128, 96], Scale::Fit, ppp);
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
    // wgpu took the guest's B, G, R, X rows as they are, into a BGRA texture of its own.
    assert!(h.state().running.vms.values().all(|r| r.console.screen.is_native()));
    let uploaded =
        h.state().running.vms.values().map(|r| r.console.screen.rows_uploaded).sum::<u64>();
    assert!(uploaded >= 96, "the whole frame went up once at least ({uploaded} rows)");
    // Autofit was off: the guest was not asked for another size. On: it is asked for the
    // console's size in screen pixels.
    let display = h.state().running.vms.values().next().unwrap().session.display.clone().unwrap();
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
    let root = h.state().library.selected.clone().unwrap();
    wait(&mut h, "the guest's input driver", |h| {
        h.state().running.get(&root).is_some_and(|r| r.session.serial.contains("INPUT READY"))
    });
    h.get_by_label("Guest console").click();
    step(&mut h);
    step(&mut h);
    assert_eq!(h.state().keyboard.owner(), Some(root.as_path()), "the console has the keyboard");
    // As egui-winit reports them: A; Ctrl+Q (which must go to the guest, not to the app's
    // Quit); Ctrl+C, which egui-winit turns into Copy and the key's release.
    let key = console::input::key;
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
        h.state().running.vms[&root].session.serial
    );
    assert!(h.state().closing == Closing::No, "Ctrl+Q did not reach the app");

    // What reached the machine, in its (here in-process) VM process.
    let (_, input) = crate::vmhost::host::testing::machine_io(&root);

    // Focus leaving the window releases every key the guest holds.
    send(&mut h, egui::Event::ModifiersChanged(Modifiers::SHIFT));
    step(&mut h);
    wait(&mut h, "Shift held", |_| input.pressed_keys() == vec![KEY_LEFTSHIFT]);
    send(&mut h, egui::Event::WindowFocused(false));
    step(&mut h);
    wait(&mut h, "keys released on focus loss", |_| input.pressed_keys().is_empty());
    assert_eq!(h.state().keyboard.owner(), None);
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
    h.state_mut().apply(Act::ToggleRelative(root.clone()));
    // The test guest drives only the keyboard; as if its virtio mouse driver ran too
    // (until one does, motion goes to the PS/2 mouse).
    input.set_driver_live(vmm::InputKind::Mouse, true);
    let mouse = input.queue(vmm::InputKind::Mouse);
    mouse.take(usize::MAX);
    h.get_by_label("Guest console").click();
    for _ in 0..3 {
        step(&mut h);
    }
    assert!(h.state().running.vms[&root].console.pointer.grabbed, "the click grabbed the pointer");
    assert!(has_label(&h, "press Ctrl+Alt to release"), "the status bar says how to let go");
    send(&mut h, egui::Event::MouseMoved(egui::vec2(5.0, -3.0)));
    step(&mut h);
    let ppp = h.ctx.pixels_per_point();
    let (dx, dy) = ((5.0 * ppp).round() as i32, (-3.0 * ppp).round() as i32);
    // What reaches the mouse crosses the socket: gathered until the motion's report is in
    // (after whatever the grabbing click sent), then the motion's report looked at.
    let mut seen: Vec<(u16, u16, i32)> = Vec::new();
    wait(&mut h, "the motion", |_| {
        seen.extend(mouse.take(usize::MAX).iter().map(|e| (e.kind, e.code, e.value)));
        seen.iter().position(|e| e.0 == 2).is_some_and(|at| seen.len() >= at + 3)
    });
    let at = seen.iter().position(|e| e.0 == 2).unwrap();
    let moved = seen[at..].to_vec();
    assert_eq!(moved, vec![(2, 0, dx), (2, 1, dy), (0, 0, 0)]);
    send(&mut h, egui::Event::ModifiersChanged(Modifiers::CTRL));
    send(
        &mut h,
        egui::Event::ModifiersChanged(Modifiers { ctrl: true, alt: true, ..Modifiers::NONE }),
    );
    step(&mut h);
    assert!(!h.state().running.vms[&root].console.pointer.grabbed, "Ctrl+Alt released the grab");
    assert_eq!(h.state().keyboard.owner(), None, "and the keyboard");
    wait(&mut h, "every key up", |_| input.pressed_keys().is_empty());
    send(&mut h, egui::Event::ModifiersChanged(Modifiers::NONE));
    step(&mut h);
    click(&mut h, Role::Button, "Power Off");
    wait(&mut h, "Off", |h| h.state().running.is_empty());

    // Pointer: a click in the console reaches the guest's tablet driver at the guest pixel
    // under it, whatever the scaling.
    click(&mut h, Role::Button, "Pointing");
    click(&mut h, Role::Button, "Power On");
    let root = h.state().library.selected.clone().unwrap();
    wait(&mut h, "the guest's tablet driver", |h| {
        h.state().running.get(&root).is_some_and(|r| {
            r.session.serial.contains("INPUT READY") && r.console.screen.size()[0] > 0
        })
    });
    assert!(h.state().running.vms[&root].session.serial.contains("INPUT NAME Vessel Tablet"));
    let console = h.get_by_label("Guest console").rect();
    let size = h.state().running.vms[&root].console.screen.size();
    let shown = console::view::place(console, size, Scale::Fit, h.ctx.pixels_per_point());
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
    let (gx, gy) = console::view::to_guest(at, shown, size);
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

/// Masks, for a snapshot of a running VM's console, what changes with time: the library's
/// thumbnail of the guest and the status bar's figures and the hint after them.
fn mask_what_changes_with_time(h: &mut Harness<'static, VesselApp>) {
    let hint = ["The guest has the keyboard", "Pointer grabbed"]
        .into_iter()
        .find_map(|text| h.query_by_label_contains(text));
    let status = hint.expect("the status bar's hint").rect();
    h.mask(h.state().library.rect);
    let width = h.ctx.content_rect().width();
    h.mask(egui::Rect::from_min_max(
        egui::pos2(0.0, status.min.y - 4.0),
        egui::pos2(width, status.max.y + 4.0),
    ));
}

#[test]
fn snapshots_of_the_main_screens() {
    let lib = scratch("snapshots");
    test_vm(&lib, "Snapshot VM", "test=gpu");
    let mut h = app(&lib, true);
    wait(&mut h, "listed", |h| !h.state().library.items.is_empty());
    // The same paths on every machine.
    let shown_root = PathBuf::from("/library/Snapshot VM.vessel");
    let real_root = h.state().library.items[0].root.clone();
    h.state_mut().library.items[0].root = shown_root.clone();
    h.state_mut().library.selected = Some(shown_root.clone());
    h.state_mut().library.scanned_at = Some(Instant::now() + Duration::from_secs(3600));
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
    h.state_mut().library.items[0].root = real_root.clone();
    h.state_mut().library.selected = Some(real_root.clone());
    h.state_mut().prefs.autofit = false;
    click(&mut h, Role::Button, "Power On");
    wait(&mut h, "the guest's frame", |h| {
        h.state().running.vms.values().any(|r| r.console.screen.size() == [128, 96])
    });
    h.get_by_label("Guest console").click();
    for _ in 0..3 {
        step(&mut h);
    }
    let console = h.get_by_label("Guest console").rect();
    h.mask(console::view::place(console, [128, 96], Scale::Fit, h.ctx.pixels_per_point()));
    mask_what_changes_with_time(&mut h);
    h.snapshot("console");
    click(&mut h, Role::Button, "Power Off");
    wait(&mut h, "Off", |h| h.state().running.is_empty());
}

#[test]
fn the_serial_console_reads_and_types() {
    let lib = scratch("serial");
    test_vm(&lib, "Echo", "test=echo");
    let mut h = app(&lib, false);
    click(&mut h, Role::Button, "Power On");
    let root = h.state().library.selected.clone().unwrap();
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

/// A VM called `name` in the library at `lib` that boots the hello disc through the BIOS
/// (no disk, no network).
fn bios_vm(lib: &Path, name: &str) -> Library {
    bios_vm_with(lib, name, vessel_tests::firmware_hello_iso(lib))
}

/// `bios_vm` with `iso` in its CD drive.
fn bios_vm_with(lib: &Path, name: &str, iso: PathBuf) -> Library {
    let args = NewVm {
        memory_bytes: Some(128 << 20),
        disk_bytes: Some(0),
        network: None,
        iso: Some(iso),
        ..NewVm::named(name)
    };
    let library = Library::open(lib).unwrap();
    create_bundle(&library, &args).unwrap();
    library
}

/// A VM that boots through the BIOS shows the firmware's text in the Serial tab (SeaBIOS
/// mirrors its screen to COM1) and on its console (the VGA), and the disc's boot image runs
/// after it.
#[test]
fn the_firmware_of_a_bios_vm_shows_in_the_serial_tab() {
    let lib = scratch("bios-serial");
    bios_vm(&lib, "Firmware");
    let mut h = app(&lib, false);
    wait(&mut h, "listed", |h| !h.state().library.items.is_empty());
    assert!(h.state_mut().power_on_by_name("Firmware"));
    let root = h.state().library.selected.clone().unwrap();
    // The boot image's "HI!" interleaves with SeaBIOS's own line, as under QEMU.
    let booted = |h: &Harness<'static, VesselApp>| {
        h.state().running.get(&root).is_some_and(|r| {
            let serial = &r.session.serial;
            serial.find("Booting from DVD/CD").is_some_and(|at| {
                let said: String =
                    serial[at..].chars().filter(|c| "HI!".contains(*c)).take(3).collect();
                said == "HI!"
            })
        })
    };
    wait(&mut h, "the firmware to boot the disc", booted);
    click(&mut h, Role::Button, "Serial");
    assert!(has_label(&h, "SeaBIOS (version"), "the firmware's banner in the Serial tab");
    assert!(has_label(&h, "Booting from DVD/CD"), "and its boot line");
    // The console shows the same screen, drawn by the VGA: 80x25 text in 9x16 cells.
    click(&mut h, Role::Button, "Console");
    let display = h.state().running.get(&root).unwrap().session.display.clone().unwrap();
    wait(&mut h, "the VGA's text screen", |_| display.size() == Some((720, 400)));
    assert!(display.drawn());
    click(&mut h, Role::Button, "Power Off");
    wait(&mut h, "Off", |h| h.state().running.is_empty());
}

/// The console of a BIOS VM in text mode, as the VGA draws it: the VGA test disc's first
/// screen (tests/guests/firmware/vga.S), its cursor off, so that the picture is the same on
/// every run.
#[test]
fn snapshot_of_a_text_mode_console() {
    let lib = scratch("text-console");
    bios_vm_with(&lib, "Text Mode", vessel_tests::firmware_vga_iso(&lib));
    let mut h = app(&lib, true);
    wait(&mut h, "listed", |h| !h.state().library.items.is_empty());
    h.state_mut().prefs.autofit = false;
    assert!(h.state_mut().power_on_by_name("Text Mode"));
    let root = h.state().library.selected.clone().unwrap();
    wait(&mut h, "the first screen", |h| {
        h.state().running.get(&root).is_some_and(|r| {
            r.session.serial.contains("SCREEN 1") && r.console.screen.size() == [720, 400]
        })
    });
    h.get_by_label("Guest console").click();
    for _ in 0..3 {
        step(&mut h);
    }
    mask_what_changes_with_time(&mut h);
    h.snapshot("console-text");
    click(&mut h, Role::Button, "Power Off");
    wait(&mut h, "Off", |h| h.state().running.is_empty());
}

/// Keys typed into a firmware VM's console reach the firmware through the PS/2 keyboard,
/// before anything draws: Esc at SeaBIOS's prompt opens its boot menu.
#[test]
fn the_console_types_into_the_firmware() {
    let lib = scratch("bios-keys");
    let library = bios_vm(&lib, "Menu");
    let menu = [("boot.menu".to_string(), "true".to_string())];
    library.edit("Menu", &menu, &Host::this()).unwrap();
    let mut h = app(&lib, false);
    wait(&mut h, "listed", |h| !h.state().library.items.is_empty());
    assert!(h.state_mut().power_on_by_name("Menu"));
    let root = h.state().library.selected.clone().unwrap();
    let serial_has = |h: &Harness<'static, VesselApp>, text: &str| {
        h.state().running.get(&root).is_some_and(|r| r.session.serial.contains(text))
    };
    click(&mut h, Role::Button, "Console");
    wait(&mut h, "SeaBIOS's prompt", |h| serial_has(h, "Press ESC for boot menu"));
    // The firmware has no absolute pointer: the status bar offers a grab, and the click
    // that gives the console the keyboard grabs the pointer too.
    assert!(has_label(&h, "grab the pointer (the guest has no absolute pointer yet)"));
    h.get_by_label("Guest console").click();
    step(&mut h);
    step(&mut h);
    assert_eq!(h.state().keyboard.owner(), Some(root.as_path()), "the console has the keyboard");
    assert!(h.state().running.vms[&root].console.pointer.grabbed, "and the pointer");
    assert!(has_label(&h, "Pointer grabbed: press Ctrl+Alt to release"));
    let key = console::input::key;
    send(&mut h, key(egui::Key::Escape, true, Modifiers::NONE));
    send(&mut h, key(egui::Key::Escape, false, Modifiers::NONE));
    step(&mut h);
    wait(&mut h, "the boot menu", |h| serial_has(h, "Select boot device"));
    // Once a tablet driver runs (as a Linux guest's would), the grab ends by itself.
    let (_, input) = crate::vmhost::host::testing::machine_io(&root);
    input.set_driver_live(vmm::InputKind::Tablet, true);
    wait(&mut h, "the grab to end", |h| !h.state().running.vms[&root].console.pointer.grabbed);
    click(&mut h, Role::Button, "Power Off");
    wait(&mut h, "Off", |h| h.state().running.is_empty());
}

/// A session of a guest that draws a 1080p frame every few milliseconds, once it shows;
/// and how often it woke the window.
fn animation(lib: &Path) -> (Session, PathBuf, Arc<std::sync::atomic::AtomicU64>) {
    let root = test_vm(lib, "Anim", "test=gpu-anim");
    let wakes = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = wakes.clone();
    let mut session = Session::start(
        &crate::vmhost::client::Launcher::InProcess,
        lib.to_path_buf(),
        root.clone(),
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
    (session, root, wakes)
}

/// Asserts the window was woken often in the next second: at each frame, not only at
/// the status updates (one a second).
fn woken_at_each_frame(wakes: &std::sync::atomic::AtomicU64) {
    let before = wakes.load(std::sync::atomic::Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs(1));
    let woken = wakes.load(std::sync::atomic::Ordering::Relaxed) - before;
    assert!(woken >= 10, "{woken} wake-ups in a second");
}

#[test]
fn every_guest_frame_wakes_the_window() {
    let lib = scratch("wake");
    let (mut session, _, wakes) = animation(&lib);
    woken_at_each_frame(&wakes);
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
fn a_client_that_stops_reading_frames_is_let_go_and_the_window_goes_on() {
    use crate::vmhost::{client, protocol};
    let lib = scratch("stall");
    let (mut session, root, wakes) = animation(&lib);
    // Another client asks for the frames and never reads them.
    let mut stalled = client::connect(&root, "Anim").unwrap();
    let subscribe = protocol::Request::Subscribe { serial: false, display: true, debug: false };
    protocol::send(&mut stalled, &subscribe).unwrap();
    // The VM process lets it go (shuts its socket) instead of waiting for it.
    let started = Instant::now();
    let hung_up = || {
        use std::os::fd::AsRawFd;
        let mut fd = libc::pollfd { fd: stalled.as_raw_fd(), events: libc::POLLRDHUP, revents: 0 };
        // SAFETY: poll(2) on one descriptor this test owns, for 100 ms.
        unsafe { libc::poll(&mut fd, 1, 100) };
        fd.revents & libc::POLLRDHUP != 0
    };
    while !hung_up() {
        assert!(started.elapsed() < Duration::from_secs(120), "the stalled client is kept");
        session.poll();
    }
    // The window's session still gets every frame.
    woken_at_each_frame(&wakes);
    session.poll();
    assert_eq!(session.phase, Phase::Running);
    session.send(Command::PowerOff);
    while !session.is_over() {
        session.poll();
        std::thread::sleep(Duration::from_millis(10));
    }
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
    let root = h.state().library.selected.clone().unwrap();
    assert_eq!(h.state().running.vms[&root].console.pan, Vec2::ZERO, "from the top-left");
    // The pointer at the bottom-right edge scrolls until the screen's corner shows.
    h.hover_at(area.max - Vec2::splat(4.0));
    for _ in 0..200 {
        step(&mut h);
    }
    let pan = h.state().running.vms[&root].console.pan;
    let overflow = Vec2::new(1920.0, 1080.0) - area.size();
    assert_eq!(pan, overflow, "scrolled to the corner");
    // The pointer maps through the scroll: the bottom-right pixel is under the corner.
    let shown = console::view::place_panned(area, [1920, 1080], 1.0, &mut pan.clone());
    assert_eq!(shown.max, area.max);
    let (x, y) = console::view::to_guest(area.max - Vec2::splat(0.5), shown, [1920, 1080]);
    assert_eq!((x.floor(), y.floor()), (1919.0, 1079.0));
    click(&mut h, Role::Button, "Power Off");
    wait(&mut h, "Off", |h| h.state().running.is_empty());
}

#[test]
fn a_black_screen_the_guest_never_drew_on_says_so() {
    let lib = scratch("blank");
    // The echo guest talks on its serial port only: its console stays the boot
    // framebuffer Vessel put up, black.
    test_vm(&lib, "Silent", "test=echo");
    test_vm(&lib, "Drawing", "test=gpu");
    let mut h = app(&lib, false);
    // The gpu guest powers off when asked for another size: the console asks none.
    h.state_mut().prefs.autofit = false;
    wait(&mut h, "both listed", |h| h.state().library.items.len() == 2);
    assert!(h.state_mut().power_on_by_name("Silent"));
    let root = h.state().library.selected.clone().unwrap();
    wait(&mut h, "the black boot framebuffer", |h| {
        h.state()
            .running
            .get(&root)
            .is_some_and(|vm| vm.session.phase == Phase::Running && vm.console.screen.size()[0] > 0)
    });
    assert!(!has_label(&h, "The guest shows nothing yet"), "not at once");
    // No renderer here that takes pixels as they are: they were converted.
    assert!(!h.state().running.get(&root).unwrap().console.screen.is_native());
    // A while later (the session made to look older), the console says so over the
    // black screen, with what this host cannot do if it has limits.
    h.state_mut().running.get_mut(&root).unwrap().session.started(Duration::from_secs(60));
    step(&mut h);
    step(&mut h);
    assert!(has_label(&h, "The guest shows nothing yet"));
    assert!(!has_label(&h, "to the Serial tab"), "a kernel-booted VM: no firmware text");
    if let Some(hint) = super::super::session::host_hint() {
        assert!(has_label(&h, &hint[..40]), "with the host's limits");
    }
    click(&mut h, Role::Button, "Power Off");
    wait(&mut h, "Off", |h| h.state().running.is_empty());
    // A guest that drew is never said to show nothing, however long it runs.
    assert!(h.state_mut().power_on_by_name("Drawing"));
    let root = h.state().library.selected.clone().unwrap();
    wait(&mut h, "the guest's frame", |h| {
        h.state().running.vms.values().any(|vm| vm.console.screen.size() == [128, 96])
    });
    h.state_mut().running.get_mut(&root).unwrap().session.started(Duration::from_secs(60));
    step(&mut h);
    step(&mut h);
    assert!(!has_label(&h, "The guest shows nothing yet"));
    click(&mut h, Role::Button, "Power Off");
    wait(&mut h, "Off", |h| h.state().running.is_empty());
}
