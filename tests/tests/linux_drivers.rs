//! Vessel's device models under the real Linux drivers (DESIGN.md §3): served over
//! vhost-user to QEMU (TCG), which boots the default Linux guest. Its init makes an ext2
//! filesystem on the virtio-blk disk, writes a file, remounts and verifies it, and reads
//! the virtio-rng through /dev/hwrng, and takes an address from passt's DHCP through the
//! virtio-net card and fetches a page from an HTTP server on the host's loopback through
//! the NAT (with host access on; without it the same fetch must fail). Afterwards the host
//! finds the file in the image. Vessel's keyboard, tablet and
//! GPU go to User-Mode Linux instead (see those tests for why), whose virtio-input, evdev
//! and virtio-gpu (DRM) drivers use them.

use std::path::Path;
use std::process::Command;

use vessel_tests::*;
use vmm::devices::net::passt::Passt;
use vmm::devices::virtio::VirtioDevice;
use vmm::devices::virtio::block::Block;
use vmm::devices::virtio::net::Net;
use vmm::devices::virtio::rng::Rng;

fn serve_in_thread(device: Box<dyn VirtioDevice>, socket: &Path) -> std::thread::JoinHandle<()> {
    let socket = socket.to_path_buf();
    let _ = std::fs::remove_file(&socket);
    std::thread::spawn(move || {
        vmm::vhost_user::serve(device, &socket)
            .expect("vhost-user backend serves until QEMU leaves")
    })
}

const NET_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

fn mac_string(mac: [u8; 6]) -> String {
    mac.map(|b| format!("{b:02x}")).join(":")
}

/// A one-page HTTP server on the host's loopback; returns its port, the page's body and a
/// count of the connections it took.
fn http_server() -> (u16, String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{Read, Write};
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = hits.clone();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let body = format!(
        "vessel-page-{:016x}",
        fnv1a(format!("{port}{:?}", std::time::SystemTime::now()).as_bytes())
    );
    let page = body.clone();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut request = [0u8; 1024];
            let _ = conn.read(&mut request);
            let _ = write!(
                conn,
                "HTTP/1.0 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}",
                page.len()
            );
        }
    });
    (port, body, hits)
}

fn wait_for(path: &Path) {
    let deadline = std::time::Instant::now() + TIMEOUT;
    while !path.exists() {
        assert!(std::time::Instant::now() < deadline, "{} never appeared", path.display());
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// QEMU's arguments for a vhost-user virtio-net card served on `socket`.
fn vhost_user_net_args(socket: &Path) -> Vec<String> {
    [
        "-chardev".to_string(),
        format!("socket,id=c2,path={}", socket.display()),
        "-netdev".into(),
        "vhost-user,id=n0,chardev=c2".into(),
        // vectors=0: the card interrupts through INTx. QEMU 7.2 (Debian 12) segfaults in
        // msix_set_vector_notifiers while starting vhost-user-net under TCG with MSI-X,
        // before any message about it reaches a backend. romfile=: no iPXE, no delay.
        "-device".into(),
        format!("virtio-net-pci,netdev=n0,romfile=,vectors=0,mac={}", mac_string(NET_MAC)),
    ]
    .into()
}

#[test]
fn without_host_access_linux_reaches_the_nat_but_not_the_hosts_loopback() {
    assert!(have_qemu(), "qemu-system-x86_64 is needed: apt-get install qemu-system-x86");
    let (kernel, initrd) = default_linux_guest();
    let dir = std::env::temp_dir().join(format!("vessel-no-host-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let net_sock = dir.join("net.sock");
    let passt = Passt::spawn(&[], false).expect("passt (apt-get install passt)");
    let net = serve_in_thread(Box::new(Net::new(NET_MAC, Box::new(passt))), &net_sock);
    let (port, _, hits) = http_server();
    wait_for(&net_sock);
    let mut args: Vec<String> = [
        "-initrd",
        initrd.to_str().unwrap(),
        "-object",
        "memory-backend-memfd,id=mem,size=512M,share=on",
        "-numa",
        "node,memdev=mem",
    ]
    .map(String::from)
    .into();
    args.extend(vhost_user_net_args(&net_sock));
    let out = run_qemu_watching(
        &kernel,
        &format!("console=ttyS0 panic=-1 quiet vessel.selftest vessel.http={port}"),
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        |_| {},
    );
    net.join().unwrap();
    let dhcp = out.lines().find(|l| l.starts_with("NET DHCP ")).unwrap_or("no NET DHCP line");
    assert!(!dhcp.contains("FAILED") && dhcp.contains(" via "), "{out}");
    let http = out.lines().find(|l| l.starts_with("NET HTTP ")).unwrap_or_default();
    assert!(http.starts_with("NET HTTP FAILED"), "the guest reached the host's loopback:\n{out}");
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 0, "no connection reached it");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn linux_drives_vessel_blk_net_and_rng_over_vhost_user() {
    assert!(have_qemu(), "qemu-system-x86_64 is needed: apt-get install qemu-system-x86");
    let (kernel, initrd) = default_linux_guest();
    let dir = std::env::temp_dir().join(format!("vessel-vhost-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let image = dir.join("disk.raw");
    std::fs::File::create(&image).unwrap().set_len(64 << 20).unwrap();
    let (blk_sock, rng_sock, net_sock) =
        (dir.join("blk.sock"), dir.join("rng.sock"), dir.join("net.sock"));
    let blk = serve_in_thread(
        Box::new(Block::open(&vmm::ImageSpec::raw(&image), false, "vessel-vhost0").unwrap()),
        &blk_sock,
    );
    let rng = serve_in_thread(Box::new(Rng), &rng_sock);
    let passt = Passt::spawn(&[], true).expect("passt (apt-get install passt)");
    let net = serve_in_thread(Box::new(Net::new(NET_MAC, Box::new(passt))), &net_sock);
    let (port, page, _) = http_server();
    for sock in [&blk_sock, &rng_sock, &net_sock] {
        wait_for(sock);
    }

    let chardev = |id: &str, path: &Path| format!("socket,id={id},path={}", path.display());
    // When the guest reports the disk's size, the image grows to 128 MiB: the driver must
    // hear of it through the configuration-change message and interrupt.
    let grow = image.clone();
    let net_args = vhost_user_net_args(&net_sock);
    let out = run_qemu_watching(
        &kernel,
        &format!("console=ttyS0 panic=-1 quiet vessel.selftest vessel.resize vessel.http={port}"),
        &[
            "-initrd",
            initrd.to_str().unwrap(),
            "-object",
            "memory-backend-memfd,id=mem,size=512M,share=on",
            "-numa",
            "node,memdev=mem",
            "-chardev",
            &chardev("c0", &blk_sock),
            "-device",
            "vhost-user-blk-pci,chardev=c0",
            "-chardev",
            &chardev("c1", &rng_sock),
            "-device",
            "vhost-user-rng-pci,chardev=c1",
            &net_args[0],
            &net_args[1],
            &net_args[2],
            &net_args[3],
            &net_args[4],
            &net_args[5],
        ],
        move |line| {
            if line.starts_with("BLK SIZE ") {
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&grow)
                    .unwrap()
                    .set_len(128 << 20)
                    .unwrap();
            }
        },
    );
    for backend in [blk, rng, net] {
        backend.join().unwrap();
    }
    assert!(out.contains("VESSEL-GUEST-READY"), "{out}");
    assert!(
        out.contains("BLK FS OK"),
        "the Linux virtio-blk driver and ext2 on Vessel's disk:\n{out}"
    );
    assert!(out.contains("BLK SIZE 131072\n"), "64 MiB at first:\n{out}");
    assert!(out.contains("BLK RESIZED 262144\n"), "the driver saw the disk grow:\n{out}");
    let rng_line = out
        .lines()
        .find(|l| l.starts_with("RNG "))
        .unwrap_or_else(|| panic!("no RNG line:\n{out}"));
    assert!(rng_line.starts_with("RNG virtio_rng"), "Linux read Vessel's virtio-rng: {rng_line}");
    // The same empty-input digest would mean no bytes were read.
    assert!(!rng_line.contains("d41d8cd98f00b204e9800998ecf8427e"), "{rng_line}");

    let dhcp = out
        .lines()
        .find(|l| l.starts_with("NET DHCP "))
        .unwrap_or_else(|| panic!("no NET DHCP line:\n{out}"));
    assert!(
        !dhcp.contains("FAILED"),
        "Linux got no address from passt through Vessel's virtio-net:\n{out}"
    );
    assert_eq!(
        out.lines().find(|l| l.starts_with("NET HTTP ")),
        Some(format!("NET HTTP {page}").as_str()),
        "the guest fetched the host's page through the NAT:\n{out}"
    );

    // On the host: the filesystem the guest made holds its file.
    let cat = Command::new("debugfs")
        .args(["-R", "cat /hello.txt"])
        .arg(&image)
        .output()
        .expect("debugfs (e2fsprogs)");
    assert_eq!(String::from_utf8_lossy(&cat.stdout).trim(), "written by vessel's guest");
    let _ = std::fs::remove_dir_all(dir);
}

/// The Linux virtio-input driver and evdev with Vessel's keyboard and tablet: both appear
/// under /dev/input with their names, the guest lights Caps Lock through the keyboard's
/// status queue, and a reader in the guest sees the events the host sends, in order.
///
/// The kernel is User-Mode Linux with virtio over vhost-user (virtio_uml): QEMU's
/// vhost-user-input needs KVM's ioeventfds ("vhost initialization failed: requires kvm"),
/// and this machine's KVM cannot boot Linux (DESIGN.md §3).
#[test]
fn linux_reads_vessel_keyboard_and_tablet_over_vhost_user() {
    use vmm::devices::virtio::input::Input;
    use vmm::input::evdev::*;
    use vmm::{Button, InputKind, InputSink};
    let kernel = uml_kernel();
    let (_, initrd) = default_linux_guest();
    let dir = std::env::temp_dir().join(format!("vessel-vhost-input-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sink = InputSink::new().unwrap();
    sink.set_display_size(800, 600);
    let (kbd_sock, tablet_sock) = (dir.join("kbd.sock"), dir.join("tablet.sock"));
    let kbd = serve_in_thread(Box::new(Input::new(InputKind::Keyboard, sink.clone())), &kbd_sock);
    let tablet =
        serve_in_thread(Box::new(Input::new(InputKind::Tablet, sink.clone())), &tablet_sock);
    for sock in [&kbd_sock, &tablet_sock] {
        wait_for(sock);
    }
    let device = |path: &Path| format!("virtio_uml.device={}:18", path.display());
    let host = sink.clone();
    let out = run_uml_watching(
        &kernel,
        &initrd,
        &["quiet", "vessel.selftest", "vessel.input", &device(&kbd_sock), &device(&tablet_sock)],
        move |line| {
            if line.starts_with("INPUT LISTENING") {
                host.key(KEY_A, true);
                host.key(KEY_A, false);
                host.key(KEY_ESC, true);
                host.key(KEY_ESC, false);
                host.pointer_abs(400.0, 599.0);
                host.button(Button::Left, true);
                host.button(Button::Left, false);
                host.wheel(0, 1);
                host.button(Button::Side, true);
                host.button(Button::Side, false);
            }
        },
    );
    for backend in [kbd, tablet] {
        backend.join().unwrap();
    }
    let mut devices: Vec<&str> = out.lines().filter_map(|l| l.strip_prefix("INPUT DEV ")).collect();
    devices.sort();
    assert_eq!(devices, ["Vessel Keyboard", "Vessel Tablet"], "{out}");
    assert!(out.contains("INPUT DONE"), "{out}");
    let seen = |name: &str| -> Vec<String> {
        let prefix = format!("INPUT EV {name}: ");
        out.lines()
            .filter_map(|l| l.strip_prefix(&prefix))
            // The guest's own LED write comes back to readers of the node (evdev does that).
            .filter(|l| !l.starts_with(&format!("{EV_LED} ")))
            .map(str::to_string)
            .collect()
    };
    let ev = |kind: u16, code: u16, value: i32| format!("{kind} {code} {value}");
    let syn = ev(EV_SYN, SYN_REPORT, 0);
    assert_eq!(
        seen("Vessel Keyboard"),
        [
            ev(EV_KEY, KEY_A, 1),
            syn.clone(),
            ev(EV_KEY, KEY_A, 0),
            syn.clone(),
            ev(EV_KEY, KEY_ESC, 1),
            syn.clone(),
            ev(EV_KEY, KEY_ESC, 0),
            syn.clone(),
        ],
        "{out}"
    );
    assert_eq!(
        seen("Vessel Tablet"),
        [
            ev(EV_ABS, ABS_X, 16404), // 400 of 0..=799
            ev(EV_ABS, ABS_Y, 32767),
            syn.clone(),
            ev(EV_KEY, BTN_LEFT, 1),
            syn.clone(),
            ev(EV_KEY, BTN_LEFT, 0),
            syn.clone(),
            ev(EV_REL, REL_WHEEL, 1),
            syn.clone(),
            ev(EV_KEY, BTN_SIDE, 1),
            syn.clone(),
            ev(EV_KEY, BTN_SIDE, 0),
            syn,
        ],
        "{out}"
    );
    assert!(sink.leds().caps_lock, "the guest's Caps Lock LED reached the host:\n{out}");
    let _ = std::fs::remove_dir_all(dir);
}

/// Linux's virtio-gpu driver (DRM/KMS) on Vessel's GPU, in User-Mode Linux: a small KMS
/// client in the guest (drmdraw) finds the connector's preferred mode from the display info
/// and EDID, creates a dumb buffer, sets the CRTC and draws; the frame reaches the
/// `Display` through transfers and flushes; a rectangle it reports with DIRTYFB arrives as
/// that damage alone; a size the host asks for reaches the driver through the display
/// event, as the connector's new preferred mode.
#[test]
fn linux_draws_through_vessel_gpu_over_vhost_user() {
    use vmm::devices::virtio::gpu::{Gpu, GpuConfig};
    use vmm::display::{Damage, Display, Rect};
    let kernel = uml_kernel();
    let (_, initrd) = default_linux_guest();
    let dir = std::env::temp_dir().join(format!("vessel-vhost-gpu-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let display = Display::new().unwrap();
    let sock = dir.join("gpu.sock");
    let gpu = serve_in_thread(Box::new(Gpu::new(display.clone(), GpuConfig::default())), &sock);
    wait_for(&sock);
    let device = format!("virtio_uml.device={}:16", sock.display());
    // Every repaint as an app would see it: the damage since the last one, the size, and
    // rows 0, 1 and 15 and the rectangle's first row, 16 pixels each.
    type Repaint = (Damage, (u32, u32), [Vec<u8>; 4]);
    let repaints: std::sync::Arc<std::sync::Mutex<Vec<Repaint>>> = Default::default();
    let (log, watched, last) = (repaints.clone(), display.clone(), std::sync::Mutex::new(0));
    display.set_repaint_callback(move || {
        let mut last = last.lock().unwrap();
        let seen = watched.read(*last, |f| {
            let row = |y: usize, x: usize| f.pixels[y * f.stride + x * 4..][..64].to_vec();
            let rows = [row(0, 0), row(1, 0), row(15, 0), row(16, 32)];
            (f.damage.clone(), (f.width, f.height), rows, f.generation)
        });
        if let Some((damage, size, rows, generation)) = seen {
            *last = generation;
            log.lock().unwrap().push((damage, size, rows));
        }
    });
    let host = display.clone();
    let out = run_uml_watching(
        &kernel,
        &initrd,
        &["quiet", "vessel.selftest", "vessel.gpu", &device],
        move |line| {
            if line == "DRM WAIT RESIZE" {
                host.request_resize(800, 600);
            }
        },
    );
    gpu.join().unwrap();
    let repaints = repaints.lock().unwrap().clone();
    let frames: Vec<&Repaint> = repaints.iter().filter(|r| r.0 != Damage::None).collect();
    let (white, black, grey) = (vec![0xff; 64], vec![0; 64], vec![0x80; 64]);
    // The first frame: 1024x768, row 0 white, row 15 grey, the rest black.
    let first = frames
        .iter()
        .find(|r| r.2[0] == white)
        .unwrap_or_else(|| panic!("the frame never showed: {repaints:?}\n{out}"));
    assert_eq!(first.1, (1024, 768), "{out}");
    assert_eq!(first.2[1..3], [black.clone(), grey], "{out}");
    assert_eq!(first.2[3], black, "the rectangle is not drawn yet");
    // Then the rectangle, as that damage alone.
    let last = frames.last().unwrap();
    assert_eq!(last.0, Damage::Rects(vec![Rect::new(32, 16, 16, 8)]), "{repaints:?}");
    assert_eq!(last.2[3], white);
    let modes: Vec<&str> = out.lines().filter_map(|l| l.strip_prefix("DRM MODE ")).collect();
    assert_eq!(modes, ["1024x768", "800x600"], "{out}");
    let _ = std::fs::remove_dir_all(dir);
}
