//! The library: making VMs, powering them, dropping ISOs on them, crashes.

use super::*;

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
    // A guest that runs until it is stopped (the gpu guest stops once a resize reaches it,
    // which the console asks for whenever it shows, and could be off before Pause).
    test_vm(&lib, "Spinner", "test=echo");
    let mut h = app(&lib, false);
    click(&mut h, Role::Button, "Power On");
    wait(&mut h, "Running", |h| {
        h.state().running.vms.values().any(|r| r.session.phase == Phase::Running)
    });
    assert!(has_label(&h, "Running"));
    click(&mut h, Role::Button, "Pause");
    wait(&mut h, "Paused", |h| has_label(h, "Paused"));
    click(&mut h, Role::Button, "Resume");
    wait(&mut h, "Running again", |h| {
        h.state().running.vms.values().any(|r| r.session.phase == Phase::Running)
    });
    click(&mut h, Role::Button, "Power Off");
    wait(&mut h, "Off", |h| h.state().running.is_empty());
    assert!(has_label(&h, "Off"));
}

#[test]
fn a_suspended_vm_shows_so_and_power_on_resumes_it() {
    let lib = scratch("suspend");
    test_vm(&lib, "Ticker", "test=ticks");
    let mut h = app(&lib, false);
    let ticks = |h: &Harness<'static, VesselApp>| -> Vec<u64> {
        let serial = (h.state().running.vms.values().next())
            .map(|r| r.session.serial.clone())
            .unwrap_or_default();
        let complete = &serial[..serial.rfind('\n').map_or(0, |i| i + 1)];
        (complete.lines())
            .filter_map(|l| l.strip_prefix("TICK "))
            .filter_map(|t| u64::from_str_radix(t.trim(), 16).ok())
            .collect()
    };
    click(&mut h, Role::Button, "Power On");
    wait(&mut h, "three ticks", |h| ticks(h).len() >= 3);
    // VM ▸ Suspend (the toolbar's button): its state saved, the VM shown suspended.
    click(&mut h, Role::Button, "Suspend");
    wait(&mut h, "its process ended", |h| h.state().running.is_empty());
    let before = h.state().vm_state("Ticker");
    assert_eq!(before.map(|(label, _)| label).as_deref(), Some("Suspended"));
    assert!(has_label(&h, "Suspended"));
    // Its summary says what Power On does, and offers no Settings meanwhile.
    assert!(has_label(&h, "Suspended: Power On resumes it where it was"));
    assert!(h.query_by_role_and_label(Role::Button, "Settings…").is_none());
    let folder = lib.join("Ticker.vessel");
    assert!(crate::core::suspend::is_suspended(&folder));
    // Power On resumes it: the guest counts on, it does not boot again.
    click(&mut h, Role::Button, "Power On");
    wait(&mut h, "ticks after the resume", |h| !ticks(h).is_empty());
    let serial = h.state().running.vms.values().next().unwrap().session.serial.clone();
    assert!(!serial.contains("VESSEL-TESTGUEST"), "no banner: {serial}");
    assert!(!crate::core::suspend::is_suspended(&folder), "its saved state let go");
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
    // A guest that runs until it is stopped (the gpu guest stops once a resize reaches it,
    // which the console asks for whenever it shows).
    test_vm(&lib, "Target", "test=echo");
    let mut h = app(&lib, false);
    let sidebar = h.state().library.rect.center();
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
        h.state().running.vms.values().any(|r| r.session.phase == Phase::Running)
    });
    drop_file(&mut h, main, &disc);
    wait(&mut h, "the disc swapped", |h| has_label(h, "is in the CD drive"));
    click(&mut h, Role::Button, "Power Off");
    wait(&mut h, "Off", |h| h.state().running.is_empty());

    // On a VM that boots through the BIOS: the disc goes in, and the BIOS boots it (the
    // VM has no disk); a Linux disc does not switch it to Quick Linux boot.
    let blank = Library::open(&lib).unwrap();
    let args = NewVm {
        memory_bytes: Some(128 << 20),
        disk_bytes: Some(0),
        network: None,
        ..NewVm::named("Blank")
    };
    create_bundle(&blank, &args).unwrap();
    h.state_mut().library.scanned_at = None;
    wait(&mut h, "Blank listed", |h| h.state().library.items.len() == 2);
    click(&mut h, Role::Button, "Blank");
    assert!(matches!(config_of(&lib, "Blank").boot.value, Boot::Bios(_)));
    let live = linux_iso(&lib);
    drop_file(&mut h, main, &live);
    wait(&mut h, "the Linux disc attached", |_| config_of(&lib, "Blank").cdrom.iso.is_some());
    wait(&mut h, "told", |h| has_label(h, "is in Blank's CD drive; it boots from it"));
    assert!(matches!(config_of(&lib, "Blank").boot.value, Boot::Bios(_)), "still the BIOS");

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

#[test]
fn a_crashed_guest_shows_why_and_can_be_restarted_while_others_run_on() {
    let lib = scratch("crash");
    test_vm(&lib, "Crasher", "test=triple");
    test_vm(&lib, "Survivor", "test=echo");
    let mut h = app(&lib, false);
    wait(&mut h, "both listed", |h| h.state().library.items.len() == 2);
    assert!(h.state_mut().power_on_by_name("Survivor"));
    wait(&mut h, "Survivor running", |h| {
        h.state().running.vms.values().any(|r| r.session.phase == Phase::Running)
    });
    assert!(h.state_mut().power_on_by_name("Crasher"));
    wait(&mut h, "the crash", |h| {
        h.state().running.endings.values().any(|e| matches!(e, Ending::Crashed(_)))
    });
    h.state_mut().page = Page::Summary;
    step(&mut h);
    assert!(has_label(&h, "Crashed"), "the state says so");
    assert!(has_label(&h, "triple fault"), "with the reason");
    assert_eq!(h.state().running.len(), 1, "the other VM runs on");
    click(&mut h, Role::Button, "Restart");
    assert_eq!(h.state().running.len(), 2, "restarted");
    wait(&mut h, "the crash again", |h| {
        h.state().running.endings.values().any(|e| matches!(e, Ending::Crashed(_)))
            && h.state().running.len() == 1
    });
    h.state_mut().power_off_all();
    wait(&mut h, "all off", |h| h.state().running.is_empty());
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
fn open_vm_adds_a_folder_and_the_library_folder_can_move() {
    let dir = scratch("open");
    let lib = dir.join("library");
    let elsewhere = dir.join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    // A VM made outside the library, as another machine's copy would be.
    let other = test_vm(&elsewhere, "Visitor", "test=echo");
    let mut h = app(&lib, false);
    assert!(h.state().library.items.is_empty());
    h.state_mut().picked(Pick::OpenVm, Some(other.clone()));
    wait(&mut h, "Visitor listed", |h| h.state().library.items.iter().any(|i| i.root == other));
    assert!(has_label(&h, "Visitor"));

    // Preferences > Library folder: the window shows the other library (and keeps it).
    // (Starting from preferences that name the first library, not the user's own.)
    let prefs = dir.join("prefs.toml");
    Preferences { library: Some(lib.clone()), ..Default::default() }.save(&prefs).unwrap();
    let mut h = Harness::builder().with_size([1180.0, 760.0]).build_eframe(move |cc| {
        VesselApp::new(
            &cc.egui_ctx,
            Options {
                library: None,
                prefs_path: prefs,
                launcher: crate::vmhost::client::Launcher::InProcess,
            },
        )
    });
    wait(&mut h, "the first library", |h| h.state().library.items.iter().any(|i| i.root == other));
    h.state_mut().apply(Act::Preferences);
    step(&mut h);
    h.state_mut().preferences.as_mut().unwrap().draft.library = Some(elsewhere.clone());
    for _ in 0..3 {
        step(&mut h);
    }
    click(&mut h, Role::Button, "Save");
    wait(&mut h, "the other library", |h| {
        h.state().library.items.iter().any(|i| i.name == "Visitor")
    });
    let (saved, _) = Preferences::load(&dir.join("prefs.toml"));
    assert_eq!(saved.library.as_deref(), Some(elsewhere.as_path()));
}

#[test]
fn a_vm_this_window_ran_is_never_running_elsewhere() {
    let lib = scratch("own-pid");
    test_vm(&lib, "Mine", "test=echo");
    let mut h = app(&lib, false);
    click(&mut h, Role::Button, "Power On");
    let root = h.state().library.selected.clone().unwrap();
    wait(&mut h, "Running", |h| {
        h.state().running.get(&root).is_some_and(|vm| vm.session.phase == Phase::Running)
    });
    // A library scan while it runs sees its run lock, which its VM process holds; the
    // window shows the VM as its session has it, not as running elsewhere.
    let before = h.state().library.scanned_at;
    h.state_mut().rescan_now();
    wait(&mut h, "a scan while it runs", |h| h.state().library.scanned_at != before);
    let listed = h.state().library.item(&root).cloned().unwrap();
    assert!(matches!(listed.kind, ItemKind::Ok { elsewhere: Some(_), .. }), "{listed:?}");
    step(&mut h);
    assert!(!has_label(&h, "Running elsewhere"), "its own VM");
    assert_eq!(h.state().running.len(), 1, "one session, not a second one attached");
    // No more scans of their own: what shows after the power-off must not wait for one.
    h.state_mut().library.scanned_at = Some(Instant::now() + Duration::from_secs(3600));
    click(&mut h, Role::Button, "Power Off");
    wait(&mut h, "Off", |h| h.state().running.is_empty());
    step(&mut h);
    assert!(!has_label(&h, "Running elsewhere"), "never its own pid");
    assert!(has_label(&h, "Off"));
    use egui_kittest::kittest::NodeT;
    let power_on = h.get_all_by_role_and_label(Role::Button, "Power On").next().unwrap();
    assert!(!power_on.accesskit_node().is_disabled(), "Power On is offered again");
}

#[test]
fn a_linux_disc_boots_through_the_bios_unless_quick_linux_boot_is_chosen() {
    let lib = scratch("quick-linux");
    let live = linux_iso(&lib);
    let mut h = app(&lib, false);
    for (name, quick) in [("Installer", false), ("Live", true)] {
        click(&mut h, Role::Button, "New VM");
        type_into(&mut h, "ISO image", &live.display().to_string());
        send(
            &mut h,
            egui::Event::Key {
                key: egui::Key::Enter,
                physical_key: None,
                pressed: true,
                repeat: false,
                modifiers: Default::default(),
            },
        );
        wait(&mut h, "the ISO read", |h| {
            h.state()
                .wizard
                .as_ref()
                .is_some_and(|w| matches!(w.iso_state, wizard::IsoState::Ok { linux: true, .. }))
        });
        assert!(has_label(&h, "the installed system boots after it"), "the BIOS is the default");
        if quick {
            click(&mut h, Role::CheckBox, "Quick Linux boot");
            assert!(has_label(&h, "What you install on the disk does not boot this way"));
        }
        click(&mut h, Role::Button, "Next");
        h.state_mut().wizard.as_mut().unwrap().name = name.into();
        h.state_mut().wizard.as_mut().unwrap().memory_mib = 256;
        h.state_mut().wizard.as_mut().unwrap().disk_gib = 0;
        step(&mut h);
        click(&mut h, Role::Button, "Next");
        click(&mut h, Role::Button, "Next");
        let summary = if quick { "(Quick Linux boot)" } else { "(BIOS: the disk, then the CD)" };
        assert!(has_label(&h, summary), "the summary says how it boots");
        click(&mut h, Role::CheckBox, "Power on after creating");
        click(&mut h, Role::Button, "Finish");
        wait(&mut h, "created", |h| h.state().wizard.is_none());
        let boot = config_of(&lib, name).boot.value;
        if quick {
            assert_eq!(boot, Boot::Cdrom);
        } else {
            assert_eq!(boot, Boot::Bios(Default::default()));
        }
    }
}
