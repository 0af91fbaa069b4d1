//! Builds the test guests from source with binutils (`as`, `ld`, `objcopy`, `nm`) and gcc
//! (the tests written in freestanding C): a PVH ELF (booted by Vessel and by QEMU) and a
//! bzImage wrapping the same image, for the Linux 64-bit boot protocol.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

fn run(tool: &str, args: &[&str]) -> Vec<u8> {
    let output = Command::new(tool).args(args).output().unwrap_or_else(|e| {
        panic!(
            "cannot run `{tool}` ({e}); the test guests need binutils and gcc: apt-get install \
             binutils gcc"
        )
    });
    if !output.status.success() {
        panic!("`{tool} {}` failed:\n{}", args.join(" "), String::from_utf8_lossy(&output.stderr));
    }
    output.stdout
}

fn symbol(elf: &Path, name: &str) -> u64 {
    let table = String::from_utf8(run("nm", &[elf.to_str().unwrap()])).unwrap();
    table
        .lines()
        .find_map(|line| {
            let mut parts = line.split_whitespace();
            let addr = parts.next()?;
            let _kind = parts.next()?;
            (parts.next()? == name).then(|| u64::from_str_radix(addr, 16).unwrap())
        })
        .unwrap_or_else(|| panic!("symbol {name} missing from {}", elf.display()))
}

/// A bzImage setup area (Documentation/arch/x86/boot.rst): one setup sector after the
/// boot sector, a header for protocol 2.15 with a 64-bit entry, loaded high at 1 MiB.
fn bzimage_header(payload_len: usize, init_size: u32) -> Vec<u8> {
    let mut h = vec![0u8; 1024];
    let mut put =
        |offset: usize, bytes: &[u8]| h[offset..offset + bytes.len()].copy_from_slice(bytes);
    put(0x1f1, &[1]); // setup_sects
    put(0x1f4, &(payload_len.div_ceil(16) as u32).to_le_bytes()); // syssize
    put(0x1fa, &0xffffu16.to_le_bytes()); // vid_mode: normal
    put(0x1fe, &0xaa55u16.to_le_bytes()); // boot_flag
    put(0x202, b"HdrS");
    put(0x206, &0x020fu16.to_le_bytes()); // version
    put(0x211, &[0x01]); // loadflags: LOADED_HIGH
    put(0x214, &0x10_0000u32.to_le_bytes()); // code32_start
    put(0x22c, &0x7fff_ffffu32.to_le_bytes()); // initrd_addr_max
    put(0x230, &0x20_0000u32.to_le_bytes()); // kernel_alignment
    put(0x235, &[21]); // min_alignment
    put(0x236, &0x0001u16.to_le_bytes()); // xloadflags: XLF_KERNEL_64
    put(0x238, &2047u32.to_le_bytes()); // cmdline_size
    put(0x258, &0x10_0000u64.to_le_bytes()); // pref_address
    put(0x260, &init_size.to_le_bytes()); // init_size
    h
}

fn main() {
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    let src = Path::new("guests/testguest.S");
    let script = Path::new("guests/guest.ld");
    println!("cargo:rerun-if-changed={}", src.display());
    println!("cargo:rerun-if-changed={}", script.display());

    let obj = out.join("testguest.o");
    let elf = out.join("testguest.elf");
    let flat = out.join("testguest.bin");
    let bzimage = out.join("testguest.bzImage");
    run("as", &["--64", "-o", obj.to_str().unwrap(), src.to_str().unwrap()]);
    let mut objects = vec![obj];
    println!("cargo:rerun-if-changed=guests/guest.h");
    let sources =
        ["runtime.c", "hostile.c", "atapi_dma.c", "bios.c", "install.c", "ps2.c", "journal.c"];
    for c in sources.into_iter().chain(["migrate.c", "virtio.c", "snapshot.c"]) {
        let source = Path::new("guests").join(c);
        println!("cargo:rerun-if-changed={}", source.display());
        let object = out.join(c).with_extension("o");
        // Freestanding ring-3 code (DESIGN.md §3): no libc, no red zone, general registers
        // only (the guest never enables SSE state), absolute addresses below 2 GiB.
        run(
            "gcc",
            &[
                "-c",
                "-O2",
                "-std=gnu11",
                "-Wall",
                "-Werror",
                "-ffreestanding",
                "-nostdlib",
                "-fno-pic",
                "-fno-pie",
                "-mcmodel=small",
                "-mno-red-zone",
                "-mgeneral-regs-only",
                "-fno-stack-protector",
                "-fno-asynchronous-unwind-tables",
                "-fcf-protection=none",
                "-fno-builtin",
                "-o",
                object.to_str().unwrap(),
                source.to_str().unwrap(),
            ],
        );
        objects.push(object);
    }
    let mut link = vec![
        "-T",
        script.to_str().unwrap(),
        "-nostdlib",
        "-static",
        "--no-warn-rwx-segments",
        "-z",
        "max-page-size=4096",
        "-o",
        elf.to_str().unwrap(),
    ];
    link.extend(objects.iter().map(|o| o.to_str().unwrap()));
    run("ld", &link);
    run("objcopy", &["-O", "binary", elf.to_str().unwrap(), flat.to_str().unwrap()]);
    let payload = std::fs::read(&flat).unwrap();
    let init_size = (symbol(&elf, "bss_end") - 0x10_0000) as u32;
    let mut image = bzimage_header(payload.len(), init_size);
    image.extend_from_slice(&payload);
    std::fs::write(&bzimage, image).unwrap();

    println!("cargo:rustc-env=VESSEL_TESTGUEST_ELF={}", elf.display());
    // The flat image and where its BSS ends, for the firmware boot image (pc-boot.S).
    println!("cargo:rustc-env=VESSEL_TESTGUEST_FLAT={}", flat.display());
    println!("cargo:rustc-env=VESSEL_TESTGUEST_BSS_END={}", symbol(&elf, "bss_end"));
    println!("cargo:rustc-env=VESSEL_TESTGUEST_BZIMAGE={}", bzimage.display());
}
