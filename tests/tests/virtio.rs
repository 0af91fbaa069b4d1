//! PCI and virtio as the test guest's ring-3 drivers see them: a bus scan, the modern
//! virtio transport with MSI-X, and virtio-rng answering requests.

use vessel_tests::*;
use vmm::{ImageSpec, StopReason};

#[test]
fn virtio_rng_with_msix_on_vessel() {
    let mut run = GuestSpec::new("virtio-rng").boot();
    assert!(matches!(run.expect_stopped(), StopReason::PoweredOff));
    let out = run.output();
    // The host bridge at 00:00.0 and the virtio-rng function after it.
    let pci: Vec<String> = run.lines_with("PCI");
    assert_eq!(pci, vec!["0000000000000000 0000000012378086", "0000000000000001 0000000010441af4"]);
    check_rng_report(&out);
}

#[test]
fn virtio_rng_with_msix_under_qemu() {
    assert!(have_qemu(), "qemu-system-x86_64 is needed: apt-get install qemu-system-x86");
    let out = run_qemu(
        &testguest_elf(),
        "test=virtio-rng",
        &["-device", "virtio-rng-pci,disable-legacy=on"],
    );
    check_rng_report(&out);
}

#[test]
fn no_devices_no_rng() {
    let mut spec = GuestSpec::new("virtio-rng");
    spec.devices = Vec::new();
    let mut run = spec.boot();
    run.expect_output("VIRTIO FAIL");
    assert_eq!(run.lines_with("PCI").len(), 1, "only the host bridge");
}

/// A 1 MiB raw image whose sector 0 starts with "VESSELDK".
fn disk_image(name: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("vessel-{name}-{}.raw", std::process::id()));
    let mut bytes = vec![0u8; 1 << 20];
    bytes[..8].copy_from_slice(b"VESSELDK");
    std::fs::write(&path, bytes).unwrap();
    path
}

fn pattern() -> Vec<u8> {
    (0..512u32).map(|i| (i * 3 + 7) as u8).collect()
}

/// Checks the virtio-blk test guest's report: `read_only` says what the disk was.
fn check_blk_report(out: &str, read_only: bool, serial: &str) {
    let value = |key: &str| -> u64 {
        let prefix = format!("BLK {key} ");
        let line = out
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("no {key}:\n{out}"));
        hex(line.trim())
    };
    assert!(!out.contains("VIRTIO FAIL"), "{out}");
    assert_eq!(value("CAPACITY"), 2048, "1 MiB in 512-byte sectors");
    assert_eq!(value("RO"), u64::from(read_only));
    assert_eq!(value("SECTOR0"), 0);
    assert_eq!(
        value("FIRST"),
        u64::from_be_bytes(*b"VESSELDK"),
        "the guest reads what the host wrote"
    );
    assert_eq!(value("WRITE"), u64::from(read_only), "OK, or IOERR on a read-only disk");
    assert_eq!(value("READ"), 0);
    assert_eq!(value("SAME"), u64::from(!read_only), "the sector reads back as written");
    assert_eq!(value("FLUSH"), 0);
    assert_eq!(value("ID"), 0);
    assert!(out.contains(&format!("BLK SERIAL {serial}\n")), "{out}");
    assert_eq!(value("PASTEND"), 1, "IOERR past the end");
}

fn sector(path: &std::path::Path, n: usize) -> Vec<u8> {
    std::fs::read(path).unwrap()[n * 512..(n + 1) * 512].to_vec()
}

#[test]
fn virtio_blk_on_vessel() {
    let image = disk_image("blk");
    let mut spec = GuestSpec::new("virtio-blk");
    spec.devices.push(vmm::DeviceConfig::Block { image: ImageSpec::raw(&image), read_only: false });
    let mut run = spec.boot();
    assert!(matches!(run.expect_stopped(), StopReason::PoweredOff));
    check_blk_report(&run.output(), false, "vessel-disk0");
    drop(run);
    assert_eq!(sector(&image, 1), pattern(), "the write reached the image");
    let _ = std::fs::remove_file(image);
}

#[test]
fn virtio_blk_read_only_on_vessel() {
    let image = disk_image("blk-ro");
    let mut spec = GuestSpec::new("virtio-blk");
    spec.devices.push(vmm::DeviceConfig::Block { image: ImageSpec::raw(&image), read_only: true });
    let mut run = spec.boot();
    assert!(matches!(run.expect_stopped(), StopReason::PoweredOff));
    check_blk_report(&run.output(), true, "vessel-disk0");
    drop(run);
    assert_eq!(sector(&image, 1), vec![0; 512], "a read-only disk is never written");
    let _ = std::fs::remove_file(image);
}

#[test]
fn virtio_blk_under_qemu() {
    assert!(have_qemu(), "qemu-system-x86_64 is needed: apt-get install qemu-system-x86");
    for read_only in [false, true] {
        let image = disk_image(if read_only { "qemu-ro" } else { "qemu" });
        let drive = format!(
            "file={},format=raw,if=none,id=d0,readonly={}",
            image.display(),
            if read_only { "on" } else { "off" }
        );
        let out = run_qemu(
            &testguest_elf(),
            "test=virtio-blk",
            &[
                "-drive",
                &drive,
                "-device",
                "virtio-blk-pci,drive=d0,disable-legacy=on,serial=qemu-disk",
            ],
        );
        check_blk_report(&out, read_only, "qemu-disk");
        let expected = if read_only { vec![0; 512] } else { pattern() };
        assert_eq!(sector(&image, 1), expected);
        let _ = std::fs::remove_file(image);
    }
}

#[test]
fn one_disk_cannot_be_written_by_two_machines() {
    let image = disk_image("shared");
    let mut spec = GuestSpec::new("ticks");
    spec.devices.push(vmm::DeviceConfig::Block { image: ImageSpec::raw(&image), read_only: false });
    let first = vmm::Machine::build(spec.config(), None).expect("the first machine gets the disk");
    let err = vmm::Machine::build(spec.config(), None).err().expect("the second is refused");
    assert!(err.to_string().contains("in use by another virtual machine"), "{err}");
    spec.devices =
        vec![vmm::DeviceConfig::Block { image: ImageSpec::raw(&image), read_only: true }];
    assert!(vmm::Machine::build(spec.config(), None).is_err(), "not even read-only while written");
    drop(first);
    vmm::Machine::build(spec.config(), None).expect("free again once the first is gone");
    let _ = std::fs::remove_file(image);
}

#[test]
fn virtio_rng_over_intx_on_vessel_and_qemu() {
    // The driver leaves MSI-X off: completions arrive on the level-triggered INTA line named
    // by Interrupt Line, and the handler lowers it by reading the ISR.
    let mut spec = GuestSpec::new("virtio-rng-intx");
    spec.vcpus = 1;
    let mut run = spec.boot();
    assert!(matches!(run.expect_stopped(), StopReason::PoweredOff));
    assert!(run.output().contains("INTX\n"));
    check_rng_report(&run.output());

    assert!(have_qemu(), "qemu-system-x86_64 is needed: apt-get install qemu-system-x86");
    let out = run_qemu(
        &testguest_elf(),
        "test=virtio-rng-intx",
        &["-device", "virtio-rng-pci,disable-legacy=on"],
    );
    check_rng_report(&out);
}

fn check_net_report(out: &str, mac: &str, gateway_mac_known: bool) {
    let value = |key: &str| -> String {
        let prefix = format!("NET {key} ");
        out.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("no {key}:\n{out}"))
            .to_string()
    };
    assert!(!out.contains("VIRTIO FAIL"), "{out}");
    assert_eq!(value("MAC"), format!("0000{mac}"));
    assert_eq!(hex(&value("STATUS")), 1, "link up");
    assert_eq!(hex(&value("TX")), 0);
    assert!(hex(&value("RX")) >= 12 + 42, "header and an ARP frame");
    let arp: Vec<u64> = value("ARP").split_whitespace().map(hex).collect();
    assert_eq!(arp[0], 2, "an ARP reply");
    assert_eq!(arp[1], 0x0a00_0202, "from the gateway 10.0.2.2");
    if gateway_mac_known {
        assert_ne!(arp[2], 0);
    }
}

fn net_device(forwards: Vec<vmm::devices::net::passt::PortForward>) -> vmm::DeviceConfig {
    vmm::DeviceConfig::Net {
        mac: [0x02, 0x56, 0x45, 0x01, 0x02, 0x03],
        forwards,
        host_access: false,
    }
}

#[test]
fn virtio_net_through_passt_on_vessel() {
    let mut spec = GuestSpec::new("virtio-net");
    spec.devices.push(net_device(Vec::new()));
    let mut run = spec.boot();
    assert!(matches!(run.expect_stopped(), StopReason::PoweredOff));
    assert!(run.events.iter().all(|e| !matches!(e, vmm::Event::Warning(_))), "{:?}", run.events);
    check_net_report(&run.output(), "025645010203", true);
}

#[test]
fn virtio_net_under_qemu() {
    assert!(have_qemu(), "qemu-system-x86_64 is needed: apt-get install qemu-system-x86");
    let out = run_qemu(
        &testguest_elf(),
        "test=virtio-net",
        &[
            "-netdev",
            "user,id=n0",
            "-device",
            "virtio-net-pci,netdev=n0,disable-legacy=on,mac=02:56:45:01:02:03",
        ],
    );
    check_net_report(&out, "025645010203", true);
}

/// The local addresses (as /proc/net/tcp{,6} spells them) of the sockets listening on TCP
/// `port`.
fn listening_addresses(port: u16) -> Vec<String> {
    let mut found = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state)) = (fields.get(1), fields.get(3)) else { continue };
            let Some((address, p)) = local.split_once(':') else { continue };
            // 0A: TCP_LISTEN.
            if *state == "0A" && u16::from_str_radix(p, 16) == Ok(port) {
                found.push(address.to_string());
            }
        }
    }
    found
}

#[test]
fn port_forwards_listen_on_the_host() {
    let port = 40_000 + (std::process::id() % 20_000) as u16;
    let forward =
        vmm::devices::net::passt::PortForward { udp: false, address: None, host: port, guest: 80 };
    let mut spec = GuestSpec::new("ticks");
    spec.devices.push(net_device(vec![forward]));
    let mut run = spec.boot();
    run.expect_output("TICK");
    // passt listens on the host port (connections then go on to the guest's port 80).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "nothing listens on forwarded port {port}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // ... on the loopback only: other computers on the network cannot reach the guest.
    assert_eq!(listening_addresses(port), ["0100007F"], "listens on 127.0.0.1 alone");
    run.handle.power_off().unwrap();
    drop(run);
    // The machine is gone, and so is its NAT: the port closes.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
        assert!(std::time::Instant::now() < deadline, "passt outlived its machine");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn virtio_blk_on_a_qcow2_image() {
    // The same guest and checks on a qcow2 image; afterwards qemu-img finds it clean and
    // reads back what the guest wrote.
    let raw = disk_image("qcow2-src");
    let qcow2 = raw.with_extension("qcow2");
    let qemu_img = |args: &[&str]| {
        let out =
            std::process::Command::new("qemu-img").args(args).output().expect("qemu-img runs");
        assert!(
            out.status.success(),
            "qemu-img {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    qemu_img(&["convert", "-O", "qcow2", raw.to_str().unwrap(), qcow2.to_str().unwrap()]);
    let mut spec = GuestSpec::new("virtio-blk");
    spec.devices
        .push(vmm::DeviceConfig::Block { image: ImageSpec::qcow2(&qcow2), read_only: false });
    let mut run = spec.boot();
    assert!(matches!(run.expect_stopped(), StopReason::PoweredOff));
    check_blk_report(&run.output(), false, "vessel-disk0");
    drop(run);
    qemu_img(&["check", "-q", qcow2.to_str().unwrap()]);
    qemu_img(&["convert", "-O", "raw", qcow2.to_str().unwrap(), raw.to_str().unwrap()]);
    assert_eq!(sector(&raw, 1), pattern(), "the write reached the qcow2 image");
    assert_eq!(&sector(&raw, 0)[..8], b"VESSELDK");
    let _ = std::fs::remove_file(raw);
    let _ = std::fs::remove_file(qcow2);
}

#[test]
fn the_device_follows_its_bars_when_the_guest_moves_them() {
    // The driver turns memory decoding off, rewrites every memory BAR (the virtio registers
    // and the MSI-X table move to 0xd0000000), turns decoding back on and drives the device
    // there: its registers, doorbells and interrupts all work at the new place.
    let mut run = GuestSpec::new("virtio-rng-moved").boot();
    assert!(matches!(run.expect_stopped(), StopReason::PoweredOff));
    assert!(run.output().contains("BARS MOVED\n"));
    check_rng_report(&run.output());

    assert!(have_qemu(), "qemu-system-x86_64 is needed: apt-get install qemu-system-x86");
    let out = run_qemu(
        &testguest_elf(),
        "test=virtio-rng-moved",
        &["-device", "virtio-rng-pci,disable-legacy=on"],
    );
    assert!(out.contains("BARS MOVED\n"));
    check_rng_report(&out);
}
