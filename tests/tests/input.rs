//! virtio-input on the KVM path: the test guest's ring-3 driver reads the device's name
//! from its configuration space, lights Caps Lock through the status queue, and prints the
//! events the host sends through `MachineHandle::input()`; the test checks codes, values
//! and order.

use std::time::{Duration, Instant};

use vessel_tests::*;
use vmm::input::evdev::*;
use vmm::{Button, DeviceConfig, InputKind};

/// (type, code, value) of the guest's "EV" lines.
fn events(run: &GuestRun) -> Vec<(u16, u16, i32)> {
    run.lines_with("EV")
        .iter()
        .map(|l| {
            let f: Vec<u64> = l.split_whitespace().map(hex).collect();
            (f[0] as u16, f[1] as u16, f[2] as u32 as i32)
        })
        .collect()
}

fn boot_with(kind: InputKind) -> GuestRun {
    let mut spec = GuestSpec::new("input");
    spec.devices = vec![DeviceConfig::Input(kind)];
    let mut run = spec.boot();
    run.expect_output("INPUT READY\n");
    run
}

fn expect_events(run: &mut GuestRun, expected: &[(u16, u16, i32)]) {
    let arrived = run.wait_until(TIMEOUT, |r| events(r).len() >= expected.len());
    assert!(arrived, "guest printed:\n{}", run.output());
    assert_eq!(events(run), expected, "guest printed:\n{}", run.output());
}

const SYN: (u16, u16, i32) = (EV_SYN, SYN_REPORT, 0);

#[test]
fn keyboard_events_and_leds_reach_the_guest_driver() {
    let mut run = boot_with(InputKind::Keyboard);
    assert_eq!(run.lines_with("INPUT NAME"), vec!["Vessel Keyboard"]);
    let input = run.handle.input();
    // The guest's LED event went through the status queue.
    let deadline = Instant::now() + TIMEOUT;
    while !input.leds().caps_lock && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(input.leds().caps_lock, "Caps Lock lit by the guest");
    input.key(KEY_A, true);
    input.key(KEY_A, false);
    input.key(KEY_LEFTSHIFT, true);
    input.key(KEY_B, true);
    input.release_all_keys(); // focus lost with Shift and B held
    expect_events(
        &mut run,
        &[
            (EV_KEY, KEY_A, 1),
            SYN,
            (EV_KEY, KEY_A, 0),
            SYN,
            (EV_KEY, KEY_LEFTSHIFT, 1),
            SYN,
            (EV_KEY, KEY_B, 1),
            SYN,
            (EV_KEY, KEY_LEFTSHIFT, 0),
            (EV_KEY, KEY_B, 0),
            SYN,
        ],
    );
    assert_eq!(input.dropped(), 0);
}

#[test]
fn tablet_events_reach_the_guest_driver_in_order() {
    let mut run = boot_with(InputKind::Tablet);
    assert_eq!(run.lines_with("INPUT NAME"), vec!["Vessel Tablet"]);
    let input = run.handle.input();
    input.set_display_size(1024, 768);
    // More events than the guest has buffers (8): the rest wait for buffers to come back.
    input.pointer_abs(0.0, 767.0);
    input.button(Button::Left, true);
    input.wheel(0, -1);
    input.button(Button::Left, false);
    input.pointer_abs(1023.0, 0.0);
    expect_events(
        &mut run,
        &[
            (EV_ABS, ABS_X, 0),
            (EV_ABS, ABS_Y, 32767),
            SYN,
            (EV_KEY, BTN_LEFT, 1),
            SYN,
            (EV_REL, REL_WHEEL, -1),
            SYN,
            (EV_KEY, BTN_LEFT, 0),
            SYN,
            (EV_ABS, ABS_X, 32767),
            (EV_ABS, ABS_Y, 0),
            SYN,
        ],
    );
}
