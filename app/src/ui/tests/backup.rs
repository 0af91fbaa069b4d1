//! VM ▸ Back Up… in the window: a running journal guest backed up twice into a set of
//! its own, keeping one point; it runs on through both, and the second reads only what it
//! wrote since. A set of another VM is refused, the dialog saying why.

use super::*;

/// The journal guest's "JOURNAL" ticks in the VM's session.
fn ticks(h: &Harness<'static, VesselApp>) -> usize {
    (h.state().running.vms.values().next())
        .map(|r| r.session.serial.lines().filter(|l| l.starts_with("JOURNAL ")).count())
        .unwrap_or(0)
}

#[test]
fn a_running_vm_is_backed_up_from_the_window_and_runs_on() {
    let lib = scratch("backup");
    let library = Library::open(&lib).unwrap();
    let mut args =
        NewVm::test_guest("Keeper", vessel_tests::testguest_elf(), "test=journal", 64 << 20);
    args.disk_bytes = Some(64 << 20);
    create_bundle(&library, &args).unwrap();
    let mut other =
        NewVm::test_guest("Other", vessel_tests::testguest_elf(), "test=ticks", 64 << 20);
    other.disk_bytes = Some(8 << 20);
    let other = create_bundle(&library, &other).unwrap().0;
    let foreign = lib.join("foreign-set");
    vm_library::backup::backup(&library, &mut other.clone(), &foreign, None, &mut |_| {}).unwrap();
    let mut h = app(&lib, false);
    click(&mut h, Role::Button, "Keeper");
    click(&mut h, Role::Button, "Power On");
    wait(&mut h, "five ticks", |h| ticks(h) >= 5);

    // Into another VM's set: refused, the dialog says so.
    click(&mut h, Role::Button, "VM");
    click(&mut h, Role::Button, "Back Up…");
    assert!(has_label(&h, "Back Up Keeper"));
    assert!(has_label(&h, "Backup set"));
    h.state_mut().backup.as_mut().unwrap().set = foreign.display().to_string();
    click(&mut h, Role::Button, "Back Up");
    wait(&mut h, "the refusal", |h| h.state().backup.as_ref().is_some_and(|d| d.error.is_some()));
    let error = h.state().backup.as_ref().unwrap().error.clone().unwrap();
    assert!(error.contains("backs up another VM"), "{error}");

    // Into its own set, twice, keeping one point.
    let set = lib.join("backups").join("Keeper");
    h.state_mut().backup.as_mut().unwrap().set = set.display().to_string();
    click(&mut h, Role::CheckBox, "Keep only the newest");
    h.state_mut().backup.as_mut().unwrap().keep = "1".into();
    for n in 1..=2 {
        let seen = ticks(&h);
        click(&mut h, Role::Button, "Back Up");
        wait(&mut h, "the backup", |h| {
            h.state()
                .toasts
                .titles()
                .iter()
                .filter(|t| t.starts_with("Keeper is backed up"))
                .count()
                >= n
        });
        assert!(h.state().backup.is_none(), "the dialog closes");
        wait(&mut h, "it runs on", |h| ticks(h) >= seen + 5);
        if n == 1 {
            click(&mut h, Role::Button, "VM");
            click(&mut h, Role::Button, "Back Up…");
            click(&mut h, Role::CheckBox, "Keep only the newest");
            h.state_mut().backup.as_mut().unwrap().keep = "1".into();
        }
    }
    let points = vm_library::backup::points(&set).unwrap();
    assert_eq!(points.len(), 1, "one kept: {points:?}");
    assert!(points[0].unchanged > 0 && points[0].read < 64 << 20, "{:?}", points[0]);
    click(&mut h, Role::Button, "Power Off");
}
