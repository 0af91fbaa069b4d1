//! A running machine's state saved (paused: vCPUs, VM, devices, memory) and restored into
//! a new machine, which goes on where the first one was: the guest's counters, its serial
//! port and the interrupts it waits for, its virtio devices.

use std::fs::File;

use vessel_tests::{GuestRun, GuestSpec, TIMEOUT, hex};
use vmm::{Machine, MachineError, StopReason};

/// The ticks the guest counted so far.
fn ticks(run: &GuestRun) -> Vec<u64> {
    run.lines_with("TICK").iter().map(|t| hex(t)).collect()
}

/// Saves `run`'s paused machine into `dir`; returns the state and memory files.
fn save(run: &GuestRun, dir: &std::path::Path) -> (File, File) {
    let path = |name: &str| dir.join(name);
    let create =
        |name| File::options().read(true).write(true).create_new(true).open(path(name)).unwrap();
    let (state, memory) = (create("state"), create("memory"));
    run.handle.save_state(state.try_clone().unwrap(), memory.try_clone().unwrap()).unwrap();
    (state, memory)
}

#[test]
fn a_ticking_guest_goes_on_counting_in_a_restored_machine() {
    let dir = tempfile::tempdir().unwrap();
    let spec = GuestSpec::new("ticks");
    let mut run = spec.boot();
    assert!(run.wait_until(TIMEOUT, |r| ticks(r).len() >= 3), "{}", run.output());
    run.handle.pause().unwrap();
    run.drain();
    let before = *ticks(&run).last().unwrap();
    let (state, memory) = save(&run, dir.path());
    // Saving leaves the machine paused and able to run on.
    run.handle.resume().unwrap();
    assert!(run.wait_until(TIMEOUT, |r| ticks(r).last() > Some(&before)), "{}", run.output());
    drop(run);

    // A new machine from the files: the guest's count goes on from where it was saved.
    let handle = Machine::restore(spec.config(), None, &state, &memory).unwrap();
    handle.start().unwrap();
    let mut restored = GuestRun { handle, serial: Vec::new(), events: Vec::new() };
    assert!(restored.wait_until(TIMEOUT, |r| ticks(r).len() >= 2), "{}", restored.output());
    let after = ticks(&restored);
    assert_eq!(after[0], before + 1, "the next tick, not a new boot: {}", restored.output());
    assert_eq!(after[1], before + 2);
    assert!(!restored.output().contains("VESSEL-TESTGUEST"), "no banner: it did not boot again");
    // Its serial port takes input: 'q' ends the test and powers the machine off.
    restored.handle.send_serial(b"q").unwrap();
    assert!(matches!(restored.expect_stopped(), StopReason::PoweredOff));
}

#[test]
fn a_restored_guest_takes_its_uart_interrupts() {
    let dir = tempfile::tempdir().unwrap();
    let spec = GuestSpec::new("echo");
    let mut run = spec.boot();
    run.expect_output("ECHO READY\n");
    run.handle.send_serial(b"before ").unwrap();
    run.expect_output("before ");
    run.handle.pause().unwrap();
    let (state, memory) = save(&run, dir.path());
    run.handle.power_off().unwrap();
    drop(run);

    let handle = Machine::restore(spec.config(), None, &state, &memory).unwrap();
    handle.start().unwrap();
    let mut restored = GuestRun { handle, serial: Vec::new(), events: Vec::new() };
    // The guest reads only when the UART interrupts it (IOAPIC, local APIC, its IDT).
    restored.handle.send_serial(b"after the restore\n").unwrap();
    restored.expect_output("after the restore\n");
    restored.handle.send_serial(b"q").unwrap();
    restored.expect_output("ECHO BYE IRQS ");
    assert!(matches!(restored.expect_stopped(), StopReason::PoweredOff));
}

#[test]
fn a_state_for_another_machine_or_a_running_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let spec = GuestSpec::new("ticks");
    let mut run = spec.boot();
    assert!(run.wait_until(TIMEOUT, |r| !ticks(r).is_empty()), "{}", run.output());
    // Only a paused machine is saved.
    let scratch = |name: &str| File::create(dir.path().join(name)).unwrap();
    let error = run.handle.save_state(scratch("s"), scratch("m")).unwrap_err();
    assert!(matches!(error, MachineError::InvalidState { .. }), "{error}");
    run.handle.pause().unwrap();
    let (state, memory) = save(&run, dir.path());
    drop(run);

    // Another memory size: named.
    let mut bigger = GuestSpec::new("ticks");
    bigger.memory_bytes = 256 << 20;
    let error = Machine::restore(bigger.config(), None, &state, &memory).err().unwrap();
    assert!(error.to_string().contains("memory size"), "{error}");
    // Two vCPUs where the saved machine had one.
    let mut smp = GuestSpec::new("ticks");
    smp.vcpus = 2;
    let error = Machine::restore(smp.config(), None, &state, &memory).err().unwrap();
    assert!(error.to_string().contains("1 vCPUs"), "{error}");
    // Another set of PCI devices.
    let mut more = GuestSpec::new("ticks");
    more.devices.push(vmm::DeviceConfig::Rng);
    let error = Machine::restore(more.config(), None, &state, &memory).err().unwrap();
    assert!(error.to_string().contains("PCI bus"), "{error}");
    // A damaged state file: its checksum.
    let mut bytes = std::fs::read(dir.path().join("state")).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(dir.path().join("damaged"), &bytes).unwrap();
    let damaged = File::open(dir.path().join("damaged")).unwrap();
    let error = Machine::restore(spec.config(), None, &damaged, &memory).err().unwrap();
    assert!(error.to_string().contains("damaged"), "{error}");
}

#[test]
fn a_restored_gpu_shows_its_frame_and_its_driver_goes_on() {
    use vmm::DeviceConfig;
    use vmm::devices::virtio::gpu::GpuConfig;
    let dir = tempfile::tempdir().unwrap();
    let mut spec = GuestSpec::new("gpu");
    spec.devices = vec![DeviceConfig::Gpu(GpuConfig::default())];
    let mut run = spec.boot();
    run.expect_output("GPU WAIT RESIZE\n");
    run.handle.pause().unwrap();
    let (state, memory) = save(&run, dir.path());
    let cursor = run.handle.display().cursor();
    run.handle.power_off().unwrap();
    drop(run);

    let handle = Machine::restore(spec.config(), None, &state, &memory).unwrap();
    // Before it runs, the display shows the guest's frame and cursor as saved.
    vessel_tests::assert_gpu_guest_screen(&handle.display(), &cursor);
    handle.start().unwrap();
    let mut restored = GuestRun { handle, serial: Vec::new(), events: Vec::new() };
    vessel_tests::expect_gpu_guest_resized(&mut restored);
}

#[test]
fn a_restored_boot_framebuffer_shows_what_the_guest_drew() {
    use vmm::display::boot_fb::FramebufferMode;
    let dir = tempfile::tempdir().unwrap();
    let mut spec = GuestSpec::new("fb");
    spec.kernel = vessel_tests::testguest_bzimage();
    spec.boot_framebuffer = Some(FramebufferMode { width: 640, height: 480 });
    spec.devices = vec![];
    let mut run = spec.boot();
    run.expect_output("FB DRAWN\n");
    run.handle.pause().unwrap();
    let (state, memory) = save(&run, dir.path());
    run.handle.power_off().unwrap();
    drop(run);

    let handle = Machine::restore(spec.config(), None, &state, &memory).unwrap();
    let display = handle.display();
    handle.start().unwrap();
    let mut restored = GuestRun { handle, serial: Vec::new(), events: Vec::new() };
    // What the guest drew before the save, on the new machine's screen: pixel (x, y) is
    // x, y, 0x30 (its low bytes).
    let pattern = |f: &vmm::display::Frame<'_>, x: usize, y: usize| {
        let at = y * f.stride + x * 4;
        f.pixels[at..at + 3] == [x as u8, y as u8, 0x30]
    };
    let samples = [(0, 0), (1, 2), (255, 255), (600, 17), (639, 479)];
    let shown = restored.wait_until(TIMEOUT, |_| {
        display.read(0, |f| samples.iter().all(|&(x, y)| pattern(&f, x, y))).unwrap_or(false)
    });
    assert!(shown, "the restored framebuffer never showed the guest's drawing");
    // The guest goes on: a byte on its serial port, and it draws its square.
    restored.handle.send_serial(b"s").unwrap();
    restored.expect_output("FB SQUARE\n");
    let white = |f: &vmm::display::Frame<'_>, x: usize, y: usize| {
        let at = y * f.stride + x * 4;
        f.pixels[at..at + 3] == [0xff, 0xff, 0xff]
    };
    let square = restored.wait_until(TIMEOUT, |_| {
        display.read(0, |f| white(&f, 100, 50) && white(&f, 107, 57)).unwrap_or(false)
    });
    assert!(square, "the square drawn after the restore never showed");
}
