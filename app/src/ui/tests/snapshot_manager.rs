//! VM ▸ Snapshot in the window: a running guest's snapshot taken from the toolbar (it
//! pauses, its state is kept, it runs on), then gone back to from the Snapshot Manager
//! (powered off, its disks and running state as they were, resumed there).

use super::*;

/// The journal guest's lines so far in the VM's session: (tick, boot id).
fn journal(h: &Harness<'static, VesselApp>) -> Vec<(u64, u64)> {
    let serial = (h.state().running.vms.values().next())
        .map(|r| r.session.serial.clone())
        .unwrap_or_default();
    let complete = &serial[..serial.rfind('\n').map_or(0, |i| i + 1)];
    complete
        .lines()
        .filter_map(|l| {
            let mut words = l.strip_prefix("JOURNAL ")?.split(' ');
            let mut next = || u64::from_str_radix(words.next()?.trim(), 16).ok();
            Some((next()?, next()?))
        })
        .collect()
}

#[test]
fn a_snapshot_taken_in_the_window_is_gone_back_to_from_the_manager() {
    let lib = scratch("snapshot-manager");
    let library = Library::open(&lib).unwrap();
    let mut args =
        NewVm::test_guest("Journal", vessel_tests::testguest_elf(), "test=journal", 128 << 20);
    args.disk_bytes = Some(8 << 20);
    create_bundle(&library, &args).unwrap();
    let mut h = app(&lib, false);
    click(&mut h, Role::Button, "Power On");
    wait(&mut h, "five ticks", |h| journal(h).len() >= 5);
    let boot = journal(&h)[0].1;

    // The toolbar's Snapshot: a name proposed; Take Snapshot suspends, keeps and resumes.
    click(&mut h, Role::Button, "Snapshot");
    assert!(has_label(&h, "Take a snapshot of Journal"));
    click(&mut h, Role::Button, "Take Snapshot");
    wait(&mut h, "the snapshot", |h| {
        h.state().toasts.titles().iter().any(|t| t.starts_with("Took snapshot"))
    });
    let taken = library.snapshots("Journal").unwrap().snapshots[0].clone();
    assert!(taken.name.starts_with("Snapshot 2"), "named by the time: {}", taken.name);
    assert!(taken.memory, "with its running state");
    wait(&mut h, "it runs on", |h| journal(h).len() >= 3);
    let on = journal(&h);
    assert_eq!(on[0].1, boot, "resumed, not booted again");
    let serial = h.state().running.vms.values().next().unwrap().session.serial.clone();
    assert!(!serial.contains("VESSEL-TESTGUEST"), "{serial}");
    wait(&mut h, "it went on a while", |h| journal(h).last().is_some_and(|l| l.0 >= on[0].0 + 20));
    let before_revert = journal(&h).last().unwrap().0;

    // The Snapshot Manager: the snapshot, where the VM is, Go To (asked first).
    click(&mut h, Role::Button, "Snapshots");
    wait(&mut h, "the tree", |h| has_label(h, "You are here"));
    assert!(has_label(&h, "With its running state"));
    click(&mut h, Role::Button, "Go To");
    assert!(has_label(&h, "are lost"), "it asks first");
    h.get_all_by_role_and_label(Role::Button, "Go To").last().unwrap().click();
    step(&mut h);
    // Powered off, reverted, resumed at the snapshot's point: the count went back.
    wait(&mut h, "the guest back at the snapshot", |h| {
        journal(h).first().is_some_and(|l| l.0 < before_revert)
    });
    let back = journal(&h)[0];
    assert!(back.0 <= on[0].0 + 1, "back at the snapshot's tick: {back:?}, it was {on:?}");
    assert_eq!(back.1, boot, "the same boot, resumed");
    wait(&mut h, "the toast", |h| {
        h.state().toasts.titles().iter().any(|t| t.contains("is back at"))
    });
    click(&mut h, Role::Button, "Close");
    assert!(h.state().snapshot_manager.is_none(), "the manager closed");
    click(&mut h, Role::Button, "Power Off");
    wait(&mut h, "Off", |h| h.state().running.is_empty());
    let _ = std::fs::remove_dir_all(lib);
}
