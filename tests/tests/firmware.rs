//! Firmware boot: Debian's SeaBIOS from the reset vector, on Vessel's platform (the ROM
//! below 4 GiB and at 0xE0000, fw_cfg with the e820 map, SMBIOS and ACPI).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use vmm::{
    Boot, BootDevice, DeviceConfig, Event, FirmwareBoot, ImageFormat, ImageSpec, Machine,
    MachineConfig, MachineState,
};

const SEABIOS: &str = "/usr/share/seabios/bios-256k.bin";

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

/// The serial output and SeaBIOS's log of `handle` from now until the serial output holds
/// every one of `want` (240 s at most).
fn wait_for(handle: &vmm::MachineHandle, want: &[&str]) -> (String, String) {
    let (mut serial, mut log) = (Vec::new(), Vec::new());
    let deadline = Instant::now() + Duration::from_secs(240);
    let done = |s: &[u8]| {
        let text = String::from_utf8_lossy(s);
        want.iter().all(|w| text.contains(w))
    };
    while !done(&serial) {
        assert!(
            Instant::now() < deadline,
            "not all of {want:?} in 240 s; serial: {:?}\nSeaBIOS log (port 0x402):\n{}",
            String::from_utf8_lossy(&serial),
            String::from_utf8_lossy(&log)
        );
        match handle.events().recv_timeout(Duration::from_millis(100)) {
            Ok(Event::Serial(bytes)) => serial.extend(bytes),
            Ok(Event::DebugMarker { code, .. }) => log.push(code),
            Ok(Event::StateChanged(MachineState::Stopped(reason))) => panic!(
                "the machine stopped: {reason:?}\nserial: {:?}\nlog:\n{}",
                String::from_utf8_lossy(&serial),
                String::from_utf8_lossy(&log)
            ),
            _ => {}
        }
    }
    (String::from_utf8_lossy(&serial).into_owned(), String::from_utf8_lossy(&log).into_owned())
}

#[test]
fn seabios_boots_an_el_torito_cd_from_the_atapi_drive() {
    let dir = std::env::temp_dir().join(format!("vessel-fw-cd-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut config = firmware_machine(128 << 20);
    config.devices =
        vec![DeviceConfig::CdRom { iso: Some(vessel_tests::firmware_hello_iso(&dir)) }];
    // The boot image's bytes go straight to the UART while SeaBIOS's serial console is
    // still flushing its own line: they arrive interleaved (under QEMU too), in order.
    let (serial, log) = run_until(config, &["Booting from DVD/CD", "I!"]);
    assert!(log.contains("DVD/CD [ata1-0"), "SeaBIOS found the drive:\n{log}");
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
    let dir = std::env::temp_dir().join(format!("vessel-fw-order-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
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
    let dir = std::env::temp_dir().join(format!("vessel-fw-once-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
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
    let dir = std::env::temp_dir().join(format!("vessel-fw-menu-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let iso = vessel_tests::firmware_hello_iso(&dir);
    let disk = vessel_tests::firmware_hello_disk(&dir);
    let mut config = hello_machine(&iso, &disk, vec![BootDevice::Disk(0), BootDevice::Cd]);
    let Boot::Firmware(fw) = &mut config.boot else { unreachable!() };
    fw.boot_menu_ms = Some(60_000);
    let handle = Machine::build(config, None).unwrap();
    handle.start().unwrap();
    wait_for(&handle, &["Press ESC for boot menu"]);
    // SeaBIOS takes a lone Esc once no more bytes follow it (an escape sequence would).
    handle.send_serial(b"\x1b").unwrap();
    let (menu, _) = wait_for(&handle, &["Select boot device", "DVD/CD"]);
    let line = menu.lines().find(|l| l.contains("DVD/CD")).expect("the CD is listed");
    let number = line.trim_start().split('.').next().unwrap().trim().to_string();
    assert!(number.parse::<u8>().is_ok(), "{line:?} in {menu:?}");
    handle.send_serial(number.as_bytes()).unwrap();
    let (serial, _) = wait_for(&handle, &["I!"]);
    assert!(serial.contains("Booting from DVD/CD"), "the CD, as picked: {serial:?}");
    handle.power_off().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
