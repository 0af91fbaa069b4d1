//! Firmware boot: Debian's SeaBIOS from the reset vector, on Vessel's platform (the ROM
//! below 4 GiB and at 0xE0000, fw_cfg with the e820 map, SMBIOS and ACPI).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use vmm::{
    Boot, BootDevice, DeviceConfig, Event, FirmwareBoot, ImageFormat, ImageSpec, Machine,
    MachineConfig, MachineState,
};

const SEABIOS: &str = "/usr/share/seabios/bios-256k.bin";

/// An empty folder of this test process.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vessel-fw-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn firmware_machine(memory: u64) -> MachineConfig {
    let mut config = MachineConfig::new(Boot::Firmware(FirmwareBoot {
        image: PathBuf::from(SEABIOS),
        uuid: *b"vessel-firmware!",
        boot_order: Vec::new(),
        first_boot_order: None,
        boot_menu_ms: None,
        serial_console: true,
    }));
    config.memory_bytes = memory;
    config
}

/// Runs `config` until its serial output holds every one of `want` (240 s at most);
/// returns the serial output and SeaBIOS's log.
fn run_until(config: MachineConfig, want: &[&str]) -> (String, String) {
    let handle = Machine::build(config, None).unwrap();
    handle.start().unwrap();
    let output = wait_for(&handle, want);
    handle.power_off().unwrap();
    output
}

/// Runs `config` until the guest powers the machine off (240 s at most); returns the
/// serial output and SeaBIOS's log.
fn run_to_power_off(config: MachineConfig) -> (String, String) {
    let handle = Machine::build(config, None).unwrap();
    handle.start().unwrap();
    collect(&handle, "a power-off", |_, stopped| match stopped {
        Some(vmm::StopReason::PoweredOff) => Ok(true),
        Some(other) => Err(format!("{other:?}")),
        None => Ok(false),
    })
}

/// The serial output and SeaBIOS's log of `handle` from now until the serial output holds
/// every one of `want` (240 s at most).
fn wait_for(handle: &vmm::MachineHandle, want: &[&str]) -> (String, String) {
    collect(handle, &format!("all of {want:?}"), |serial, stopped| match stopped {
        Some(reason) => Err(format!("the machine stopped: {reason:?}")),
        None => Ok(want.iter().all(|w| serial.contains(w))),
    })
}

/// `handle`'s serial output and SeaBIOS's log (port 0x402) until `done`, given the serial
/// output so far and why the machine stopped if it did, says Ok(true) (Err: the test
/// fails with the reason); 240 s at most.
fn collect(
    handle: &vmm::MachineHandle,
    what: &str,
    mut done: impl FnMut(&str, Option<&vmm::StopReason>) -> Result<bool, String>,
) -> (String, String) {
    let (mut serial, mut log) = (Vec::new(), Vec::new());
    let deadline = Instant::now() + Duration::from_secs(240);
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    loop {
        let stopped = match handle.events().recv_timeout(Duration::from_millis(100)) {
            Ok(Event::Serial(bytes)) => {
                serial.extend(bytes);
                None
            }
            Ok(Event::DebugMarker { code, .. }) => {
                log.push(code);
                None
            }
            Ok(Event::StateChanged(MachineState::Stopped(reason))) => Some(reason),
            _ => None,
        };
        match done(&text(&serial), stopped.as_ref()) {
            Ok(true) => return (text(&serial), text(&log)),
            Ok(false) if Instant::now() < deadline => {}
            Ok(false) => panic!(
                "not {what} in 240 s; serial: {:?}\nSeaBIOS log (port 0x402):\n{}",
                text(&serial),
                text(&log)
            ),
            Err(why) => panic!("{why}\nserial: {:?}\nlog:\n{}", text(&serial), text(&log)),
        }
    }
}

#[test]
fn seabios_boots_an_el_torito_cd_from_the_atapi_drive() {
    let dir = scratch("cd");
    let mut config = firmware_machine(128 << 20);
    config.devices =
        vec![DeviceConfig::CdRom { iso: Some(vessel_tests::firmware_hello_iso(&dir)) }];
    // The boot image's bytes go straight to the UART while SeaBIOS's serial console is
    // still flushing its own line: they arrive interleaved (under QEMU too), in order.
    let (serial, log) = run_until(config, &["Booting from DVD/CD", "I!"]);
    assert!(log.contains("DVD/CD [ata1-0"), "SeaBIOS found the drive:\n{log}");
    // Laid out as a PC (and as QEMU's i440FX): the PIIX3's ISA bridge at 00:01.0, its IDE
    // controller at 00:01.1, which is where the boot order names the CD.
    for want in [
        "init bdf=00:01.0 id=8086:7000",
        "init bdf=00:01.1 id=8086:7010",
        "Searching bootorder for: /pci@i0cf8/*@1,1/drive@1/disk@0",
    ] {
        assert!(log.contains(want), "no {want:?} in SeaBIOS's log:\n{log}");
    }
    let after = &serial[serial.find("Booting from DVD/CD").unwrap()..];
    let mut said = after.chars().filter(|c| "HI!".contains(*c));
    assert_eq!(said.by_ref().take(3).collect::<String>(), "HI!", "{serial:?}");
    // The machine's UUID, as SeaBIOS read it from Vessel's SMBIOS tables.
    assert!(serial.contains("Machine UUID 76657373-656c-2d66-6972-6d7761726521"), "{serial:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// What the firmware's boot order picks, with a bootable disk and a bootable CD in the
/// machine: the disk when it comes first (a VM after its install), the CD when asked.
#[test]
fn the_boot_order_picks_the_disk_or_the_cd() {
    let dir = scratch("order");
    let iso = vessel_tests::firmware_hello_iso(&dir);
    let disk = vessel_tests::firmware_hello_disk(&dir);
    let machine = |order: Vec<BootDevice>| hello_machine(&iso, &disk, order);
    // (The boot sectors' bytes interleave with SeaBIOS's serial console line.)
    let (serial, log) = run_until(machine(vec![BootDevice::Disk(0), BootDevice::Cd]), &["R!"]);
    let disk = "Booting from Hard Disk";
    let after = &serial[serial.find(disk).expect("the disk first") + disk.len()..];
    assert_eq!(after.chars().filter(|c| "MBR!".contains(*c)).take(4).collect::<String>(), "MBR!");
    assert!(!serial.contains("Booting from DVD/CD"), "the disk first: {serial:?}");
    assert!(log.contains("Searching bootorder for: /pci@i0cf8/*@"), "{log}");
    let (serial, _) = run_until(machine(vec![BootDevice::Cd, BootDevice::Disk(0)]), &["I!"]);
    let after = &serial[serial.find("Booting from DVD/CD").expect("the CD first")..];
    assert_eq!(after.chars().filter(|c| "HI!".contains(*c)).take(3).collect::<String>(), "HI!");
    assert!(!serial.contains("Booting from Hard Disk"), "{serial:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A machine with the hello CD and the hello MBR disk, booting them in `order`.
fn hello_machine(iso: &Path, disk: &Path, order: Vec<BootDevice>) -> MachineConfig {
    let mut config = firmware_machine(128 << 20);
    let Boot::Firmware(fw) = &mut config.boot else { unreachable!() };
    fw.boot_order = order;
    config.devices = vec![
        DeviceConfig::CdRom { iso: Some(iso.to_path_buf()) },
        DeviceConfig::Block {
            image: ImageSpec {
                path: disk.to_path_buf(),
                format: ImageFormat::Raw,
                backing: vec![],
            },
            read_only: true,
        },
    ];
    config
}

/// "Boot from the CD next time": the first power-on boots the CD, a reset the disk again.
#[test]
fn a_one_time_boot_order_is_for_the_first_power_on() {
    let dir = scratch("once");
    let iso = vessel_tests::firmware_hello_iso(&dir);
    let disk = vessel_tests::firmware_hello_disk(&dir);
    let mut config = hello_machine(&iso, &disk, vec![BootDevice::Disk(0), BootDevice::Cd]);
    let Boot::Firmware(fw) = &mut config.boot else { unreachable!() };
    fw.first_boot_order = Some(vec![BootDevice::Cd, BootDevice::Disk(0)]);
    let handle = Machine::build(config, None).unwrap();
    handle.start().unwrap();
    let (serial, _) = wait_for(&handle, &["I!"]);
    assert!(serial.contains("Booting from DVD/CD"), "the CD first: {serial:?}");
    assert!(!serial.contains("Booting from Hard Disk"), "{serial:?}");
    handle.reset().unwrap();
    let (serial, _) = wait_for(&handle, &["R!"]);
    assert!(serial.contains("Booting from Hard Disk"), "then the disk: {serial:?}");
    assert!(!serial.contains("Booting from DVD/CD"), "{serial:?}");
    handle.power_off().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// SeaBIOS runs its real-mode and 32-bit code in ring 0, which this host's KVM (PVM)
/// emulates slowly; on VT-x/AMD-V this takes milliseconds.
#[test]
fn seabios_prints_its_banner_on_the_serial_console() {
    assert!(
        std::path::Path::new(SEABIOS).is_file(),
        "{SEABIOS} is missing: tools/install-deps installs the seabios package"
    );
    // The banner, then the boot attempts: with no disk and no disc, none succeeds.
    let (_, log) =
        run_until(firmware_machine(128 << 20), &["SeaBIOS (version", "No bootable device"]);
    // What Vessel told it, as SeaBIOS's own log reports it: fw_cfg with DMA, the e820 map,
    // the SMBIOS tables, and ACPI through the linker/loader (the FADT found via the XSDT).
    for want in [
        "Found QEMU fw_cfg",
        "QEMU fw_cfg DMA interface supported",
        "qemu/e820: addr 0x0000000000000000 len 0x0000000008000000 [RAM]",
        "Copying SMBIOS 3.0",
        "table(50434146)=",
        "sercon: using ioport 0x3f8",
    ] {
        assert!(log.contains(want), "no {want:?} in SeaBIOS's log:\n{log}");
    }
}

/// SeaBIOS's boot menu, when the VM asks for it, over the serial console: Esc opens it and
/// a number picks the device (here the CD, although the disk comes first in the order).
#[test]
fn the_boot_menu_is_reachable_with_esc() {
    let dir = scratch("menu");
    let (handle, _) = at_the_boot_menu_prompt(&dir);
    // SeaBIOS takes a lone Esc once no more bytes follow it (an escape sequence would).
    handle.send_serial(b"\x1b").unwrap();
    let number = the_cd_entry(&handle);
    handle.send_serial(number.to_string().as_bytes()).unwrap();
    let (serial, _) = wait_for(&handle, &["I!"]);
    assert!(serial.contains("Booting from DVD/CD"), "the CD, as picked: {serial:?}");
    handle.power_off().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A machine with the hello disk first and the hello CD, its boot menu asked for, started
/// and waiting at SeaBIOS's "Press ESC" prompt; SeaBIOS's log so far.
fn at_the_boot_menu_prompt(dir: &Path) -> (vmm::MachineHandle, String) {
    let iso = vessel_tests::firmware_hello_iso(dir);
    let disk = vessel_tests::firmware_hello_disk(dir);
    let mut config = hello_machine(&iso, &disk, vec![BootDevice::Disk(0), BootDevice::Cd]);
    let Boot::Firmware(fw) = &mut config.boot else { unreachable!() };
    fw.boot_menu_ms = Some(60_000);
    let handle = Machine::build(config, None).unwrap();
    handle.start().unwrap();
    let (_, log) = wait_for(&handle, &["Press ESC for boot menu"]);
    (handle, log)
}

/// The number of the CD's entry in the boot menu, once it shows.
fn the_cd_entry(handle: &vmm::MachineHandle) -> u16 {
    let (menu, _) = wait_for(handle, &["Select boot device", "DVD/CD"]);
    let line = menu.lines().find(|l| l.contains("DVD/CD")).expect("the CD is listed");
    let number = line.trim_start().split('.').next().unwrap().trim().parse();
    number.unwrap_or_else(|_| panic!("{line:?} in {menu:?}"))
}

/// The machine's UUID as text (the firmware tests' `uuid`, "vessel-firmware!").
const UUID_TEXT: &str = "76657373-656c-2d66-6972-6d7761726521";

/// What the firmware-booted test guest reports, alike on Vessel and on QEMU: it came in
/// through the stub's hvm_start_info with the firmware's E820 map, found the RSDP in the
/// BIOS area and every ACPI table's checksum right, read the machine's UUID from the
/// SMBIOS tables, and could not write the BIOS area.
fn check_firmware_guest(out: &str) {
    let lines = |key: &str| -> Vec<String> {
        let prefix = format!("{key} ");
        out.lines().filter_map(|l| l.strip_prefix(&prefix).map(str::to_string)).collect()
    };
    assert!(out.contains("DONE"), "{out}");
    assert_eq!(lines("MAGIC"), ["ok"], "{out}");
    assert_eq!(lines("CMDLINE"), ["test=firmware"], "{out}");
    assert!(lines("E820").len() >= 3, "the firmware's memory map: {out}");
    let rsdp = &lines("RSDP")[0];
    let address = u64::from_str_radix(rsdp.split_whitespace().next().unwrap(), 16).unwrap();
    assert!((0xe0000..0x100000).contains(&address), "the RSDP in the BIOS area: {out}");
    assert!(rsdp.ends_with(" ok"), "{out}");
    let tables = lines("ACPI");
    assert!(tables.len() >= 3 && tables.iter().all(|t| t.ends_with(" ok")), "{out}");
    for sig in ["FACP", "DSDT", "APIC"] {
        assert!(tables.iter().any(|t| t.starts_with(sig)), "no {sig}: {out}");
    }
    let smbios = &lines("SMBIOS")[0];
    assert!(smbios.ends_with(&format!(" UUID {UUID_TEXT}")), "the machine's UUID: {out}");
    // The MP table: the timer on IOAPIC pin 2 (as the MADT says), PCI interrupts where the
    // PIRQ routes send them.
    assert_eq!(lines("MPTABLE IRQ0 PIN"), ["0000000000000002"], "{out}");
    let pci: Vec<u64> = lines("MPTABLE PCI")[0].split_whitespace().map(vessel_tests::hex).collect();
    assert_eq!(pci[0], pci[1], "every PCI entry on its Interrupt Line: {out}");
    // SeaBIOS closed the BIOS area through the PAM registers after shadowing itself.
    assert_eq!(lines("BIOS AREA"), ["read-only"], "{out}");
}

/// The test guest booted by SeaBIOS from an El Torito CD and from an MBR disk, as an OS
/// boots; the same under QEMU (`-cdrom`, `-drive if=virtio`) as the reference.
#[test]
fn the_test_guest_boots_through_the_bios_from_a_cd_and_a_disk() {
    let dir = scratch("guest");
    let iso = vessel_tests::firmware_testguest_iso(&dir, "test=firmware");
    let disk = vessel_tests::firmware_testguest_disk(&dir, "test=firmware");

    let mut config = firmware_machine(128 << 20);
    config.devices = vec![DeviceConfig::CdRom { iso: Some(iso.clone()) }];
    let (serial, log) = run_to_power_off(config);
    assert!(serial.contains("Booting from DVD/CD"), "{serial}\n{log}");
    check_firmware_guest(&serial);

    let mut config = firmware_machine(128 << 20);
    config.devices = vec![DeviceConfig::Block {
        image: ImageSpec { path: disk.clone(), format: ImageFormat::Raw, backing: vec![] },
        read_only: true,
    }];
    let (serial, log) = run_to_power_off(config);
    assert!(serial.contains("Booting from Hard Disk"), "{serial}\n{log}");
    check_firmware_guest(&serial);

    assert!(vessel_tests::have_qemu(), "qemu-system-x86_64 is needed (tools/install-deps)");
    let uuid = ["-uuid", UUID_TEXT];
    let out = vessel_tests::run_qemu_firmware(
        128,
        &[&uuid[..], &["-cdrom", iso.to_str().unwrap()]].concat(),
    );
    check_firmware_guest(&out);
    let drive = format!("if=virtio,format=raw,readonly=on,file={}", disk.display());
    let out = vessel_tests::run_qemu_firmware(128, &[&uuid[..], &["-drive", &drive]].concat());
    check_firmware_guest(&out);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A reboot from inside the guest runs the firmware again, which boots the disc again: the
/// firmware-booted guest resets the machine through the keyboard controller, twice.
#[test]
fn a_guest_reboot_runs_the_firmware_again_with_the_disc_in() {
    let dir = scratch("reboot");
    let iso = vessel_tests::firmware_testguest_iso(&dir, "test=reboot-kbd");
    let mut config = firmware_machine(128 << 20);
    config.devices = vec![DeviceConfig::CdRom { iso: Some(iso) }];
    let handle = Machine::build(config, None).unwrap();
    handle.start().unwrap();
    let (serial, _) = collect(&handle, "three boots", |serial, stopped| match stopped {
        Some(reason) => Err(format!("the machine stopped: {reason:?}")),
        None => Ok(serial.matches("Booting from DVD/CD").count() >= 3
            && serial.matches("REBOOT kbd").count() >= 2),
    });
    handle.power_off().unwrap();
    assert!(serial.matches("SeaBIOS (version").count() >= 3, "the firmware each time: {serial}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// PCI interrupts on a PC go where the firmware's PIRQ routes send them: SeaBIOS routes
/// PIRQA-D to ISA IRQs 10 and 11, makes them level-triggered in the ELCR and writes each
/// device's into its Interrupt Line. A guest taking them through the 8259 PICs (as guests
/// without APIC drivers do) or on that IOAPIC pin (as the firmware's MP table says) gets
/// every virtio-rng completion, on Vessel as on QEMU.
#[test]
fn pci_interrupts_follow_the_pirq_routes_the_firmware_set() {
    let dir = scratch("pirq");
    assert!(vessel_tests::have_qemu(), "qemu-system-x86_64 is needed (tools/install-deps)");
    for test in ["virtio-rng-pic", "virtio-rng-intx"] {
        let dir = dir.join(test);
        std::fs::create_dir_all(&dir).unwrap();
        let iso = vessel_tests::firmware_testguest_iso(&dir, &format!("test={test}"));
        let mut config = firmware_machine(128 << 20);
        config.devices = vec![DeviceConfig::CdRom { iso: Some(iso.clone()) }, DeviceConfig::Rng];
        let (serial, log) = run_to_power_off(config);
        let qemu = vessel_tests::run_qemu_firmware(
            128,
            &["-cdrom", iso.to_str().unwrap(), "-device", "virtio-rng-pci,disable-legacy=on"],
        );
        for (who, out) in [("Vessel", &serial), ("QEMU", &qemu)] {
            assert!(out.contains("INTX\n"), "{who}: {out}\n{log}");
            vessel_tests::check_rng_report(out);
            if test == "virtio-rng-pic" {
                let pic = out.lines().find_map(|l| l.strip_prefix("PIC LINE ")).unwrap();
                let [line, "ELCR", elcr] = pic.split_whitespace().collect::<Vec<_>>()[..] else {
                    panic!("{who}: {pic:?}")
                };
                let (line, elcr) = (vessel_tests::hex(line), vessel_tests::hex(elcr));
                assert!(matches!(line, 10 | 11), "{who}: SeaBIOS's PIRQ IRQs: {out}");
                assert_ne!(elcr & (1 << line), 0, "{who}: level-triggered: {out}");
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The PS/2 keyboard: keys from the machine's `InputSink` reach the firmware before any
/// virtio driver runs. SeaBIOS finds the keyboard behind the i8042 (its log says so),
/// takes Esc for its boot menu and a digit key for the entry, all by IRQ 1 in set 1.
#[test]
fn the_firmware_takes_keys_from_the_ps2_keyboard() {
    use vmm::input::evdev::{KEY_1, KEY_ESC};
    let dir = scratch("ps2");
    let (handle, log) = at_the_boot_menu_prompt(&dir);
    assert!(log.contains("PS2 keyboard initialized"), "SeaBIOS found the keyboard:\n{log}");
    let input = handle.input();
    let press = |key| {
        input.key(key, true);
        input.key(key, false);
    };
    press(KEY_ESC);
    let number = the_cd_entry(&handle);
    assert!((1..=9).contains(&number), "{number}");
    // KEY_1..KEY_9 are consecutive evdev codes.
    press(KEY_1 + number - 1);
    let (serial, _) = wait_for(&handle, &["I!"]);
    assert!(serial.contains("Booting from DVD/CD"), "the CD, as picked: {serial:?}");
    handle.power_off().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
