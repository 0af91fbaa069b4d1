//! Vessel's device models under the real Linux drivers (DESIGN.md §3): served over
//! vhost-user to QEMU (TCG), which boots the default Linux guest. Its init makes an ext2
//! filesystem on the virtio-blk disk, writes a file, remounts and verifies it, and reads
//! the virtio-rng through /dev/hwrng. Afterwards the host finds the file in the image.

use std::path::Path;
use std::process::Command;

use vessel_tests::*;
use vmm::devices::virtio::VirtioDevice;
use vmm::devices::virtio::block::Block;
use vmm::devices::virtio::rng::Rng;

fn serve_in_thread(device: Box<dyn VirtioDevice>, socket: &Path) -> std::thread::JoinHandle<()> {
    let socket = socket.to_path_buf();
    let _ = std::fs::remove_file(&socket);
    std::thread::spawn(move || {
        vmm::vhost_user::serve(device, &socket)
            .expect("vhost-user backend serves until QEMU leaves")
    })
}

fn wait_for(path: &Path) {
    let deadline = std::time::Instant::now() + TIMEOUT;
    while !path.exists() {
        assert!(std::time::Instant::now() < deadline, "{} never appeared", path.display());
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn linux_drives_vessel_blk_and_rng_over_vhost_user() {
    assert!(have_qemu(), "qemu-system-x86_64 is needed: apt-get install qemu-system-x86");
    let (kernel, initrd) = default_linux_guest();
    let dir = std::env::temp_dir().join(format!("vessel-vhost-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let image = dir.join("disk.raw");
    std::fs::File::create(&image).unwrap().set_len(64 << 20).unwrap();
    let (blk_sock, rng_sock) = (dir.join("blk.sock"), dir.join("rng.sock"));
    let blk =
        serve_in_thread(Box::new(Block::open(&image, false, "vessel-vhost0").unwrap()), &blk_sock);
    let rng = serve_in_thread(Box::new(Rng), &rng_sock);
    wait_for(&blk_sock);
    wait_for(&rng_sock);

    let chardev = |id: &str, path: &Path| format!("socket,id={id},path={}", path.display());
    let out = run_qemu(
        &kernel,
        "console=ttyS0 panic=-1 quiet vessel.selftest",
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
        ],
    );
    blk.join().unwrap();
    rng.join().unwrap();
    assert!(out.contains("VESSEL-GUEST-READY"), "{out}");
    assert!(
        out.contains("BLK FS OK"),
        "the Linux virtio-blk driver and ext2 on Vessel's disk:\n{out}"
    );
    let rng_line = out
        .lines()
        .find(|l| l.starts_with("RNG "))
        .unwrap_or_else(|| panic!("no RNG line:\n{out}"));
    assert!(rng_line.starts_with("RNG virtio_rng"), "Linux read Vessel's virtio-rng: {rng_line}");
    // The same empty-input digest would mean no bytes were read.
    assert!(!rng_line.contains("d41d8cd98f00b204e9800998ecf8427e"), "{rng_line}");

    // On the host: the filesystem the guest made holds its file.
    let cat = Command::new("debugfs")
        .args(["-R", "cat /hello.txt"])
        .arg(&image)
        .output()
        .expect("debugfs (e2fsprogs)");
    assert_eq!(String::from_utf8_lossy(&cat.stdout).trim(), "written by vessel's guest");
    let _ = std::fs::remove_dir_all(dir);
}
