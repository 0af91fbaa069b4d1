//! Every checked-in seed of each fuzz target, run through the target: the fuzzers must
//! reach both sides of what they guard (accepted and refused).

use std::path::Path;

use vm_library_fuzz::Reach;

fn reach(target: &str, run: impl Fn(&[u8]) -> Reach) -> Reach {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds").join(target);
    let mut total = Reach::default();
    let mut seeds = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        seeds += 1;
        total.add(&run(&std::fs::read(entry.unwrap().path()).unwrap()));
    }
    assert!(seeds > 0, "{target} has no seeds");
    println!("{target}: {seeds} seeds reach {total:?}");
    total
}

#[test]
fn iso() {
    assert!(reach("iso", vm_library_fuzz::iso).get("opened") > 0);
}

#[test]
fn vessel_toml() {
    let r = reach("vessel_toml", vm_library_fuzz::vessel_toml);
    assert!(r.get("parsed") > 0 && r.get("valid") > 0 && r.get("refused") > 0, "{r:?}");
}

#[test]
fn qcow2_policy() {
    let r = reach("qcow2_policy", vm_library_fuzz::qcow2_policy);
    assert!(r.get("accepted") > 0 && r.get("backed") > 0 && r.get("refused") > 0, "{r:?}");
}

#[test]
fn archive_import() {
    let r = reach("archive_import", vm_library_fuzz::archive_import);
    assert!(r.get("imported") > 0 && r.get("refused") > 0, "{r:?}");
}

#[test]
#[ignore = "writes the transfer_receive seeds"]
fn write_transfer_seeds() {
    vm_library_fuzz::write_transfer_seeds(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds/transfer_receive"),
    );
}

#[test]
fn transfer_receive() {
    let r = reach("transfer_receive", vm_library_fuzz::transfer_receive);
    assert!(r.get("arrived") > 0 && r.get("disk") > 0 && r.get("refused") > 0, "{r:?}");
}

#[test]
fn ovf_descriptor() {
    let r = reach("ovf_descriptor", vm_library_fuzz::ovf_descriptor);
    assert!(r.get("parsed") > 0 && r.get("items") > 0 && r.get("refused") > 0, "{r:?}");
}
