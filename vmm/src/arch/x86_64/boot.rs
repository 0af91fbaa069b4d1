//! Loading a kernel, initrd and command line into guest memory, and the boot information
//! each protocol hands the kernel: `boot_params` for the Linux 64-bit boot protocol
//! (Documentation/arch/x86/boot.rst) and `hvm_start_info` for PVH (xen/include/public/
//! arch-x86/hvm/start_info.h).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, setup_header};
use linux_loader::loader::elf::start_info::{
    hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info,
};
use linux_loader::loader::{BzImage, Elf, KernelLoader, KernelLoaderResult, PvhBootCapability};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend};

use super::layout::{
    BOOT_FB_START, CMDLINE_MAX_SIZE, CMDLINE_START, HIMEM_START, PVH_INFO_START, PVH_MEMMAP_START,
    PVH_MODLIST_START, RSDP_START, ZERO_PAGE_START,
};
use super::regs::EntryMode;
use crate::arch::x86_64::layout::{E820Entry, e820_map};
use crate::display::boot_fb::FramebufferMode;
use crate::vstate::memory::{GuestMem, low_ram_end};

#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("cannot open kernel {path}")]
    OpenKernel {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open initrd {path}")]
    OpenInitrd {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} is not a kernel Vessel can boot: it is neither a bzImage nor an ELF vmlinux \
         ({reason})"
    )]
    NotAKernel { path: PathBuf, reason: String },
    #[error(
        "{path} has no 64-bit entry point (it needs boot protocol 2.12 or later with \
         XLF_KERNEL_64); use a 64-bit kernel"
    )]
    No64BitEntry { path: PathBuf },
    #[error("kernel {path} does not fit in guest memory: {reason}; give the machine more memory")]
    KernelTooLarge { path: PathBuf, reason: String },
    #[error(
        "initrd {path} ({size} MiB) does not fit in guest memory between the kernel and \
         {limit:#x}; give the machine more memory",
        size = .size >> 20
    )]
    InitrdTooLarge { path: PathBuf, size: u64, limit: u64 },
    #[error("cannot read initrd {path}")]
    ReadInitrd {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("kernel command line is {len} bytes; the limit is {max}")]
    CmdlineTooLong { len: usize, max: usize },
    #[error("kernel command line contains a NUL byte")]
    CmdlineNul,
    #[error("cannot write boot information to guest memory")]
    Memory(#[from] vm_memory::GuestMemoryError),
}

/// What to boot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BootSource {
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub cmdline: String,
}

/// Where things were put, for the vCPU setup and for tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootLayout {
    pub entry: EntryMode,
    pub kernel_start: u64,
    pub kernel_end: u64,
    pub initrd: Option<(u64, u64)>,
}

const ELF_MAGIC: [u8; 4] = *b"\x7fELF";
const HDRS_MAGIC: u32 = 0x5372_6448;
const XLF_KERNEL_64: u16 = 1 << 0;
const LOADER_TYPE_UNDEFINED: u8 = 0xff;
const PVH_MAGIC: u32 = 0x336e_c578;
/// Default `initrd_addr_max` for kernels with boot protocol < 2.03.
const DEFAULT_INITRD_ADDR_MAX: u64 = 0x37ff_ffff;

/// Loads `source` into `mem` and writes the boot information the kernel's protocol wants.
pub fn load(
    mem: &GuestMem,
    source: &BootSource,
    framebuffer: Option<FramebufferMode>,
) -> Result<BootLayout, BootError> {
    let cmdline_limit = CMDLINE_MAX_SIZE;
    if source.cmdline.len() >= cmdline_limit {
        return Err(BootError::CmdlineTooLong {
            len: source.cmdline.len(),
            max: cmdline_limit - 1,
        });
    }
    if source.cmdline.as_bytes().contains(&0) {
        return Err(BootError::CmdlineNul);
    }

    let path = &source.kernel;
    let mut kernel =
        File::open(path).map_err(|source| BootError::OpenKernel { path: path.clone(), source })?;
    let mut magic = [0u8; 4];
    let is_elf = kernel.read_exact(&mut magic).is_ok() && magic == ELF_MAGIC;
    let _ = kernel.seek(SeekFrom::Start(0));
    let himem = Some(GuestAddress(HIMEM_START));
    let loaded: KernelLoaderResult = if is_elf {
        Elf::load(mem, None, &mut kernel, himem)
    } else {
        BzImage::load(mem, None, &mut kernel, himem)
    }
    .map_err(|e| classify_load_error(path, is_elf, e))?;

    let ram_end = low_ram_end(mem);
    let (entry_kind, initrd_max) = match (&loaded.setup_header, loaded.pvh_boot_cap) {
        (Some(hdr), _) => {
            let hdr: setup_header = *hdr;
            if { hdr.xloadflags } & XLF_KERNEL_64 == 0 || { hdr.version } < 0x020c {
                return Err(BootError::No64BitEntry { path: path.clone() });
            }
            let init_end = loaded.kernel_load.raw_value() + u64::from(hdr.init_size);
            if init_end > ram_end {
                return Err(BootError::KernelTooLarge {
                    path: path.clone(),
                    reason: format!("it needs memory up to {init_end:#x}"),
                });
            }
            let max = if { hdr.version } >= 0x0203 {
                u64::from(hdr.initrd_addr_max)
            } else {
                DEFAULT_INITRD_ADDR_MAX
            };
            (Kind::BzImage(hdr), max)
        }
        (None, PvhBootCapability::PvhEntryPresent(entry)) => {
            (Kind::Pvh(entry.raw_value()), u64::MAX)
        }
        (None, _) => (Kind::Elf64(loaded.kernel_load.raw_value()), u64::MAX),
    };

    let initrd = match &source.initrd {
        Some(initrd_path) => Some(load_initrd(
            mem,
            initrd_path,
            loaded.kernel_end,
            initrd_max.saturating_add(1).min(ram_end),
        )?),
        None => None,
    };

    let mut cmdline = source.cmdline.as_bytes().to_vec();
    cmdline.push(0);
    mem.write_slice(&cmdline, GuestAddress(CMDLINE_START))?;

    let ram = mem.iter().map(vm_memory::GuestMemoryRegion::len).sum();
    let e820 = e820_map(ram, framebuffer.map(|fb| fb.bytes()));
    let entry = match entry_kind {
        Kind::Pvh(entry) => {
            write_pvh_start_info(mem, &e820, initrd)?;
            EntryMode::Pvh { entry, start_info: PVH_INFO_START }
        }
        Kind::BzImage(hdr) => {
            write_boot_params(mem, Some(hdr), &e820, initrd, source.cmdline.len(), framebuffer)?;
            EntryMode::Linux64 {
                entry: loaded.kernel_load.raw_value() + 0x200,
                boot_params: ZERO_PAGE_START,
            }
        }
        Kind::Elf64(entry) => {
            write_boot_params(mem, None, &e820, initrd, source.cmdline.len(), framebuffer)?;
            EntryMode::Linux64 { entry, boot_params: ZERO_PAGE_START }
        }
    };
    Ok(BootLayout {
        entry,
        kernel_start: loaded.kernel_load.raw_value(),
        kernel_end: loaded.kernel_end,
        initrd,
    })
}

enum Kind {
    BzImage(setup_header),
    Pvh(u64),
    Elf64(u64),
}

fn classify_load_error(path: &Path, is_elf: bool, e: linux_loader::loader::Error) -> BootError {
    use linux_loader::loader::{Error, bzimage, elf};
    let too_large = matches!(
        e,
        Error::MemoryOverflow
            | Error::Bzimage(bzimage::Error::ReadBzImageCompressedKernel)
            | Error::Elf(elf::Error::ReadKernelImage)
    );
    if too_large {
        return BootError::KernelTooLarge { path: path.to_path_buf(), reason: e.to_string() };
    }
    let reason = if is_elf { format!("bad ELF: {e}") } else { e.to_string() };
    BootError::NotAKernel { path: path.to_path_buf(), reason }
}

/// Reads the initrd into the highest page-aligned place below `limit` that is above the
/// kernel, as boot.rst recommends ("as high as possible").
fn load_initrd(
    mem: &GuestMem,
    path: &Path,
    kernel_end: u64,
    limit: u64,
) -> Result<(u64, u64), BootError> {
    let mut file = File::open(path)
        .map_err(|source| BootError::OpenInitrd { path: path.to_path_buf(), source })?;
    let size = file
        .metadata()
        .map_err(|source| BootError::ReadInitrd { path: path.to_path_buf(), source })?
        .len();
    let too_large = || BootError::InitrdTooLarge { path: path.to_path_buf(), size, limit };
    let addr = limit.checked_sub(size).ok_or_else(too_large)? & !0xfff;
    if addr < kernel_end.max(HIMEM_START) {
        return Err(too_large());
    }
    mem.read_exact_volatile_from(GuestAddress(addr), &mut file, size as usize).map_err(
        |e| match e {
            vm_memory::GuestMemoryError::IOError(source) => {
                BootError::ReadInitrd { path: path.to_path_buf(), source }
            }
            other => BootError::Memory(other),
        },
    )?;
    Ok((addr, size))
}

fn write_boot_params(
    mem: &GuestMem,
    header: Option<setup_header>,
    e820: &[E820Entry],
    initrd: Option<(u64, u64)>,
    cmdline_len: usize,
    framebuffer: Option<FramebufferMode>,
) -> Result<(), BootError> {
    let mut params = boot_params::default();
    if let Some(fb) = framebuffer {
        params.screen_info = screen_info(fb);
    }
    match header {
        Some(hdr) => params.hdr = hdr,
        None => {
            params.hdr.boot_flag = 0xaa55;
            params.hdr.header = HDRS_MAGIC;
            params.hdr.kernel_alignment = 0x0100_0000;
        }
    }
    params.hdr.type_of_loader = LOADER_TYPE_UNDEFINED;
    params.hdr.cmd_line_ptr = CMDLINE_START as u32;
    params.hdr.cmdline_size = cmdline_len as u32;
    if let Some((addr, size)) = initrd {
        params.hdr.ramdisk_image = addr as u32;
        params.hdr.ramdisk_size = size as u32;
        params.ext_ramdisk_image = (addr >> 32) as u32;
        params.ext_ramdisk_size = (size >> 32) as u32;
    }
    params.acpi_rsdp_addr = RSDP_START;
    for (slot, entry) in params.e820_table.iter_mut().zip(e820) {
        *slot = boot_e820_entry { addr: entry.addr, size: entry.size, r#type: entry.kind };
    }
    params.e820_entries = e820.len().min(params.e820_table.len()) as u8;
    mem.write_obj(params, GuestAddress(ZERO_PAGE_START))?;
    Ok(())
}

/// VIDEO_TYPE_VLFB (include/uapi/linux/screen_info.h): a VESA linear framebuffer.
const VIDEO_TYPE_VLFB: u8 = 0x23;

/// boot_params.screen_info for the boot framebuffer (Documentation/arch/x86/zero-page.rst):
/// a VESA linear framebuffer, 32 bits a pixel in XRGB8888, whose size is counted in 64 KiB
/// units as VESA has it. Linux's vesafb, or simplefb through sysfb, draws its console there.
fn screen_info(fb: FramebufferMode) -> linux_loader::loader::bootparam::screen_info {
    linux_loader::loader::bootparam::screen_info {
        orig_video_isVGA: VIDEO_TYPE_VLFB,
        lfb_width: fb.width as u16,
        lfb_height: fb.height as u16,
        lfb_depth: 32,
        lfb_base: BOOT_FB_START as u32,
        lfb_size: fb.bytes().div_ceil(64 << 10) as u32,
        lfb_linelength: fb.stride() as u16,
        red_size: 8,
        red_pos: 16,
        green_size: 8,
        green_pos: 8,
        blue_size: 8,
        blue_pos: 0,
        rsvd_size: 8,
        rsvd_pos: 24,
        pages: 1,
        ..Default::default()
    }
}

fn write_pvh_start_info(
    mem: &GuestMem,
    e820: &[E820Entry],
    initrd: Option<(u64, u64)>,
) -> Result<(), BootError> {
    let mut info = hvm_start_info {
        magic: PVH_MAGIC,
        version: 1,
        cmdline_paddr: CMDLINE_START,
        rsdp_paddr: RSDP_START,
        memmap_paddr: PVH_MEMMAP_START,
        memmap_entries: e820.len() as u32,
        ..Default::default()
    };
    if let Some((paddr, size)) = initrd {
        let module = hvm_modlist_entry { paddr, size, ..Default::default() };
        mem.write_obj(module, GuestAddress(PVH_MODLIST_START))?;
        info.nr_modules = 1;
        info.modlist_paddr = PVH_MODLIST_START;
    }
    for (i, entry) in e820.iter().enumerate() {
        let table_entry = hvm_memmap_table_entry {
            addr: entry.addr,
            size: entry.size,
            type_: entry.kind,
            reserved: 0,
        };
        let at = PVH_MEMMAP_START + (i * std::mem::size_of::<hvm_memmap_table_entry>()) as u64;
        mem.write_obj(table_entry, GuestAddress(at))?;
    }
    mem.write_obj(info, GuestAddress(PVH_INFO_START))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vstate::memory::create_guest_memory;
    use std::io::Write;

    fn temp_file(name: &str, bytes: &[u8]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("vessel-boot-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::File::create(&path).unwrap().write_all(bytes).unwrap();
        path
    }

    #[test]
    fn garbage_is_not_a_kernel() {
        let mem = create_guest_memory(64 << 20).unwrap();
        let path = temp_file("garbage", &[0x55; 4096]);
        let err = load(&mem, &BootSource { kernel: path, ..Default::default() }, None).unwrap_err();
        assert!(matches!(err, BootError::NotAKernel { .. }), "{err}");
    }

    #[test]
    fn missing_kernel_names_the_file() {
        let mem = create_guest_memory(64 << 20).unwrap();
        let source = BootSource { kernel: "/nonexistent/vmlinuz".into(), ..Default::default() };
        let err = load(&mem, &source, None).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/vmlinuz"));
    }

    #[test]
    fn long_cmdline_is_refused() {
        let mem = create_guest_memory(64 << 20).unwrap();
        let source = BootSource {
            kernel: "/dev/null".into(),
            cmdline: "x".repeat(5000),
            ..Default::default()
        };
        assert!(matches!(load(&mem, &source, None), Err(BootError::CmdlineTooLong { .. })));
    }

    #[test]
    fn initrd_goes_high_and_page_aligned() {
        let mem = create_guest_memory(64 << 20).unwrap();
        let path = temp_file("initrd", &[7u8; 10_000]);
        let (addr, size) = load_initrd(&mem, &path, 0x20_0000, 64 << 20).unwrap();
        assert_eq!(size, 10_000);
        assert_eq!(addr & 0xfff, 0);
        assert!(addr + size <= 64 << 20 && addr + size > (64 << 20) - 0x2000);
        let mut byte = [0u8; 1];
        mem.read_slice(&mut byte, GuestAddress(addr + 9_999)).unwrap();
        assert_eq!(byte[0], 7);
        let err = load_initrd(&mem, &path, (64 << 20) - 0x1000, 64 << 20).unwrap_err();
        assert!(matches!(err, BootError::InitrdTooLarge { .. }));
    }
}
