//! Links `vessel` with packed relative relocations (DT_RELR, glibc 2.36 and binutils 2.38
//! on): a position-independent Rust binary carries a table of them for every pointer in
//! its read-only data, which the dynamic loader reads whole at each start. Packed, that
//! table is 16 KiB instead of 1.3 MiB, and every process (the window, each VM process)
//! starts with that much less memory resident and read.

fn main() {
    println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    println!("cargo:rerun-if-changed=build.rs");
}
