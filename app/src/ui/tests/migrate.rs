//! VM ▸ Migrate… in the window: a running guest moves to another Vessel (a receiver in
//! this test, taking the machine as `vessel receive`'s VM process would) and goes on
//! there; its session here ends. Then a receiver that refuses: the VM runs on here and the
//! dialog says why.

use std::os::unix::net::UnixListener;

use super::*;
use crate::core::migration::{Answer, Offer};
use crate::vmhost::protocol;

/// The test guest's "MIGRATE" ticks in the VM's session.
fn ticks(h: &Harness<'static, VesselApp>) -> Vec<(u64, u64)> {
    let serial = (h.state().running.vms.values().next())
        .map(|r| r.session.serial.clone())
        .unwrap_or_default();
    parse_ticks(&serial)
}

fn parse_ticks(serial: &str) -> Vec<(u64, u64)> {
    let complete = &serial[..serial.rfind('\n').map_or(0, |i| i + 1)];
    complete
        .lines()
        .filter_map(|l| {
            let mut words = l.strip_prefix("MIGRATE ")?.split(' ');
            let mut next = || u64::from_str_radix(words.next()?.trim(), 16).ok();
            Some((next()?, next()?))
        })
        .collect()
}

/// A receiver on `path`, answering the offer with `answer` and, if it accepts, taking the
/// machine `config` describes; the offer must say whether the disks go along as `copy`.
fn receiver(
    path: &Path,
    config: vmm::MachineConfig,
    answer: Answer,
    copy: bool,
) -> std::thread::JoinHandle<Option<vmm::MachineHandle>> {
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path).unwrap();
    std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let offer: Offer = protocol::receive(&mut conn).unwrap().unwrap();
        assert_eq!(offer.name, "Mover");
        assert_eq!(offer.copy_disks, copy);
        protocol::send(&mut conn, &answer).unwrap();
        if answer != Answer::Accept {
            return None;
        }
        let options = vmm::migration::ReceiveOptions::default();
        Some(vmm::migration::receive(config, None, &mut conn, &options, &|_| {}).unwrap())
    })
}

#[test]
fn a_running_vm_moves_to_another_vessel_from_the_window() {
    let lib = scratch("migrate");
    let library = Library::open(&lib).unwrap();
    let mut args =
        NewVm::test_guest("Mover", vessel_tests::testguest_elf(), "test=migrate", 256 << 20);
    args.disk_bytes = Some(8 << 20);
    let bundle = create_bundle(&library, &args).unwrap().0;
    let config = crate::core::launch::machine_config(&library, &bundle).unwrap();
    let mut h = app(&lib, false);
    click(&mut h, Role::Button, "Power On");
    wait(&mut h, "five ticks", |h| ticks(h).len() >= 5);

    // A receiver that refuses (its library has no room for the VM's folder and disks,
    // asked to come along): the dialog says why; the VM runs on here.
    let path = lib.join("in.sock");
    let to = format!("unix:{}", path.display());
    let refusing = receiver(&path, config.clone(), Answer::Refuse("no room here".into()), true);
    click(&mut h, Role::Button, "VM");
    click(&mut h, Role::Button, "Migrate…");
    assert!(has_label(&h, "Migrate Mover"));
    type_into(&mut h, "To", &to);
    let copy = "Copy its folder and disks (the other host does not share its storage)";
    click(&mut h, Role::CheckBox, copy);
    click(&mut h, Role::Button, "Migrate");
    wait(&mut h, "the refusal", |h| h.state().migrate.as_ref().is_some_and(|d| d.error.is_some()));
    assert!(refusing.join().unwrap().is_none());
    assert!(has_label(&h, "no room here"), "the dialog says why");
    let seen = ticks(&h).len();
    wait(&mut h, "it runs on", |h| ticks(h).len() >= seen + 2);

    // One on shared storage that takes it: progress, then the VM runs there and its
    // session here ends.
    let taking = receiver(&path, config, Answer::Accept, false);
    click(&mut h, Role::CheckBox, copy);
    // What the session here saw last (it may end before the toast is looked at).
    let seen = ticks(&h);
    click(&mut h, Role::Button, "Migrate");
    wait(&mut h, "the move", |h| {
        h.state().toasts.titles().iter().any(|t| t.starts_with("Mover moved to"))
    });
    assert!(h.state().migrate.is_none(), "the dialog closes");
    let handle = taking.join().unwrap().expect("the receiver runs the machine");
    wait(&mut h, "the session ended", |h| h.state().running.vms.is_empty());
    let mut moved = vessel_tests::GuestRun { handle, serial: Vec::new(), events: Vec::new() };
    assert!(moved.wait_until(vessel_tests::TIMEOUT, |r| parse_ticks(&r.output()).len() >= 3));
    let after = parse_ticks(&moved.output());
    let last = seen.last().expect("ticks before the move");
    assert!(after[0].0 > last.0 && after[0].1 == last.1, "{seen:?} then {after:?}");
    moved.handle.power_off().unwrap();
}
