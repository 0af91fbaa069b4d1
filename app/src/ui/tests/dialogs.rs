//! Closing with VMs running, preferences, settings.

use super::*;

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
        h.state().running.vms.values().any(|r| r.session.phase == Phase::Running)
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
    h.state_mut().apply(Act::Preferences);
    for _ in 0..3 {
        step(&mut h);
    }
    let draft = &mut h.state_mut().preferences.as_mut().unwrap().draft;
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
fn settings_are_checked_and_saved() {
    let lib = scratch("settings");
    test_vm(&lib, "Tuned", "test=echo");
    let mut h = app(&lib, false);
    click(&mut h, Role::Button, "Settings…");
    assert!(has_label(&h, "Tuned settings"), "the settings window opened");
    // More memory than this computer has: refused, with the reason, nothing saved.
    h.state_mut().settings.as_mut().unwrap().draft.memory_mib = 1 << 24;
    click(&mut h, Role::Button, "Save");
    wait(&mut h, "the refusal", |h| has_label(h, "That did not work"));
    click(&mut h, Role::Button, "Details");
    assert!(has_label(&h, "memory_mib"), "the details name the field");
    assert_eq!(config_of(&lib, "Tuned").memory_mib, 128);
    click(&mut h, Role::Button, "Close window");
    click(&mut h, Role::Button, "Settings…");
    type_into_role(&mut h, Role::MultilineTextInput, "Notes", "for the release tests");
    h.state_mut().settings.as_mut().unwrap().draft.follow_window = false;
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
        h.state().library.items.iter().any(|i| match &i.kind {
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
fn the_boot_order_is_a_setting() {
    let lib = scratch("boot-settings");
    let library = Library::open(&lib).unwrap();
    let new = NewVm {
        memory_bytes: Some(128 << 20),
        disk_bytes: Some(0),
        network: None,
        ..NewVm::named("Booter")
    };
    create_bundle(&library, &new).unwrap();
    let mut h = app(&lib, false);
    click(&mut h, Role::Button, "Settings…");
    assert!(has_label(&h, "Booter settings"), "the settings window opened");
    let combo = h.get_by_role_and_label(Role::ComboBox, "Boot order");
    assert_eq!(combo.value().as_deref(), Some("Disk, then CD"), "the order it has");
    click(&mut h, Role::ComboBox, "Boot order");
    step(&mut h);
    click(&mut h, Role::Button, "CD, then disk");
    click(&mut h, Role::CheckBox, "Boot from the CD at the next power-on only");
    click(&mut h, Role::CheckBox, "Show the boot menu at power-on (press Esc)");
    click(&mut h, Role::Button, "Save");
    let want = Boot::Bios(Firmware {
        order: vec![BootDevice::Cd, BootDevice::Disk],
        menu: true,
        next: Some(BootDevice::Cd),
    });
    wait(&mut h, "saved", |_| config_of(&lib, "Booter").boot.value == want);
    // Quick Linux boot is a choice there too, with a disc in the drive.
    click(&mut h, Role::Button, "Settings…");
    h.get_by_label("Quick Linux boot from the CD").click();
    step(&mut h);
    click(&mut h, Role::Button, "Save");
    wait(&mut h, "the refusal", |h| has_label(h, "That did not work"));
    click(&mut h, Role::Button, "Details");
    assert!(has_label(&h, "no ISO is in it"), "the details say why");
    click(&mut h, Role::Button, "Close window");
    click(&mut h, Role::Button, "Settings…");
    h.get_by_label("Quick Linux boot from the CD").click();
    let live = linux_iso(&lib);
    type_into(&mut h, "CD (ISO)", &live.display().to_string());
    click(&mut h, Role::Button, "Save");
    wait(&mut h, "saved", |_| config_of(&lib, "Booter").boot.value == Boot::Cdrom);
}
