//! Every checked-in seed of each fuzz target, run through the target: the fuzzers must
//! reach the code they are named after. For virtio-blk, reads, writes, flushes and errors
//! must all be among what the seeds make the device do; for the others, the device must
//! have completed requests (and the device-specific work named below).

use std::path::Path;

use vmm_fuzz::targets::{self, Reach};

/// Runs every seed of `target` through `run` and adds up what they reached.
fn reach<T>(target: &str, run: impl Fn(&T) -> Reach) -> Reach
where
    T: for<'a> arbitrary::Arbitrary<'a>,
{
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds").join(target);
    let mut total = Reach::default();
    let mut seeds = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        seeds += 1;
        if let Some(input) = vmm_fuzz::decode::<T>(&bytes) {
            total.add(&run(&input));
        }
    }
    assert!(seeds > 0, "{target} has no seeds in {}", dir.display());
    println!("{target}: {seeds} seeds reach {total:?}");
    total
}

fn expect(target: &str, reach: &Reach, what: &[&str]) {
    assert!(reach.completed > 0, "{target}: no request completed: {reach:?}");
    for w in what {
        assert!(reach.get(w) > 0, "{target}: no {w} among the seeds: {reach:?}");
    }
}

#[test]
fn virtio_blk() {
    let r = reach("virtio_blk", targets::virtio_blk);
    expect(
        "virtio_blk",
        &r,
        &["read", "write", "flush", "ioerr", "unsupported", "id", "discard", "noted"],
    );
}

#[test]
fn virtio_queue() {
    let r = reach("virtio_queue", targets::virtio_queue);
    expect("virtio_queue", &r, &["read", "written"]);
}

#[test]
fn virtio_net() {
    let r = reach("virtio_net", targets::virtio_net);
    expect("virtio_net", &r, &["sent", "received"]);
}

#[test]
fn virtio_gpu() {
    let r = reach("virtio_gpu", targets::virtio_gpu);
    expect("virtio_gpu", &r, &["ok", "error", "scanout"]);
}

#[test]
fn virtio_input() {
    let r = reach("virtio_input", targets::virtio_input);
    expect("virtio_input", &r, &["event", "status", "config answer"]);
}

#[test]
fn virtio_rng() {
    let r = reach("virtio_rng", targets::virtio_rng);
    expect("virtio_rng", &r, &["filled"]);
}

#[test]
fn virtio_pci() {
    let r = reach("virtio_pci", targets::virtio_pci);
    expect("virtio_pci", &r, &["queue enabled", "served"]);
}

#[test]
fn legacy() {
    let r = reach("legacy", targets::legacy);
    assert!(r.get("serial byte") > 0 && r.get("power request") > 0, "{r:?}");
    assert!(r.get("debug marker") > 0 && r.get("keyboard byte") > 0, "{r:?}");
    assert!(r.get("key") > 0, "keys pressed on the i8042's keyboard: {r:?}");
    assert!(r.get("mouse motion") > 0, "its mouse moved: {r:?}");
}

#[test]
fn vhost_user_relay() {
    let r = reach("vhost_user_relay", targets::vhost_user_relay);
    assert!(r.get("message") > 0 && r.get("held") > 0, "{r:?}");
}

#[test]
fn fw_cfg() {
    let r = reach("fw_cfg", targets::fw_cfg);
    expect("fw_cfg", &r, &["data byte", "dma read", "dma write", "dma error", "file written"]);
}

#[test]
fn vga() {
    let r = reach("vga", targets::vga);
    for what in ["register write", "dispi mode", "window write", "picture", "damage"] {
        assert!(r.get(what) > 0, "vga: no {what} among the seeds: {r:?}");
    }
}

#[test]
#[ignore = "writes the VGA's and fw_cfg's device_state seeds"]
fn write_state_seeds() {
    targets::write_state_seeds(&Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds/device_state"));
}

#[test]
fn device_state() {
    // Raw bytes, as a state file holds them (no arbitrary decoding).
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds/device_state");
    let mut total = Reach::default();
    for entry in std::fs::read_dir(&dir).unwrap() {
        total.add(&targets::device_state(&std::fs::read(entry.unwrap().path()).unwrap()));
    }
    println!("device_state: {total:?}");
    for part in ["serial", "i8042", "cmos", "ide", "virtio-pci", "gpu", "boot-fb", "vga", "fw_cfg"]
    {
        for how in ["taken", "refused"] {
            let what = format!("{part} {how}");
            assert!(total.get(&what) > 0, "no {what} among the seeds: {total:?}");
        }
    }
}

#[test]
#[ignore = "writes the migration_receive seeds"]
fn write_migration_seeds() {
    targets::write_migration_seeds(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds/migration_receive"),
    );
}

#[test]
fn migration_receive() {
    // Raw bytes, as a sender's frames come (no arbitrary decoding).
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds/migration_receive");
    let mut total = Reach::default();
    for entry in std::fs::read_dir(&dir).unwrap() {
        total.add(&targets::migration_receive(&std::fs::read(entry.unwrap().path()).unwrap()));
    }
    println!("migration_receive: {total:?}");
    for what in ["pages", "disk", "passes", "state", "refused", "ended"] {
        assert!(total.get(what) > 0, "no {what} among the seeds: {total:?}");
    }
}
