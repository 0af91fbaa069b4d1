//! What each fuzz target does with its input, and what it reached: the fuzz targets call
//! these, and the reach test adds the reports of every seed up.

use std::os::fd::RawFd;
use std::sync::{Arc, Mutex};

use arbitrary::Arbitrary;
use vm_memory::{Bytes, GuestAddress};
use vmm::devices::bus::{Bus, BusDevice};
use vmm::devices::net::NetBackend;
use vmm::devices::virtio::VirtioDevice;
use vmm_sys_util::eventfd::EventFd;

use crate::{Addr, Buffer, Len, QueueInput, RawDesc, memory, used_count};

/// What a run of a target reached (added up over a corpus by the reach test).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reach {
    /// Requests the device completed (used-ring entries).
    pub completed: u64,
    /// Device-specific counts: name → how many.
    pub seen: std::collections::BTreeMap<&'static str, u64>,
}

impl Reach {
    pub fn count(&mut self, what: &'static str) {
        *self.seen.entry(what).or_default() += 1;
    }

    pub fn add(&mut self, other: &Reach) {
        self.completed += other.completed;
        for (k, v) in &other.seen {
            *self.seen.entry(k).or_default() += v;
        }
    }

    pub fn get(&self, what: &str) -> u64 {
        self.seen.get(what).copied().unwrap_or(0)
    }
}

/// The rings' shape, shared by the device inputs (chains are device-specific).
#[derive(Arbitrary, Clone, Debug)]
pub struct Rings {
    pub size_log2: u8,
    pub event_idx: bool,
    pub corrupt: Vec<RawDesc>,
    pub avail_lie: Option<u16>,
    pub avail_flags: u16,
}

impl Rings {
    fn with(&self, chains: Vec<Vec<Buffer>>) -> QueueInput {
        QueueInput {
            size_log2: self.size_log2,
            event_idx: self.event_idx,
            chains,
            corrupt: self.corrupt.clone(),
            avail_lie: self.avail_lie,
            avail_flags: self.avail_flags,
        }
    }
}

/// A buffer the driver fills (`data`) at a slot of its own for request `i`, part `part`.
fn own(i: usize, part: u64, data: Vec<u8>, device_writes: bool, len: u32) -> Buffer {
    let slot = 192 + (i as u64 * 2 + part) % 64;
    Buffer { addr: Addr::Slot(slot as u8), len: Len::Any(len), device_writes, data }
}

// --- virtqueue -------------------------------------------------------------------------

/// Pops every chain and reads and writes it as the devices do.
pub fn virtio_queue(input: &QueueInput) -> Reach {
    use std::io::{Read, Write};
    use virtio_queue::{QueueT, Reader, Writer};
    let mem = memory();
    let (mut queue, _) = input.build(0, &mem);
    let mut reach = Reach::default();
    let mut rounds = 0;
    while let Some(chain) = queue.pop_descriptor_chain(&mem) {
        rounds += 1;
        assert!(rounds <= 512, "the queue handed out more chains than it can hold");
        let head = chain.head_index();
        if let Ok(mut r) = Reader::new(&mem, chain.clone()) {
            let mut sink = vec![0u8; r.available_bytes().min(1 << 20)];
            if r.read(&mut sink).is_ok_and(|n| n > 0) {
                reach.count("read");
            }
        }
        if let Ok(mut w) = Writer::new(&mem, chain) {
            let bytes = vec![0xa5u8; w.available_bytes().min(1 << 20)];
            if w.write(&bytes).is_ok_and(|n| n > 0) {
                reach.count("written");
            }
        }
        if queue.add_used(&mem, head, 0).is_ok() {
            reach.completed += 1;
        }
        let _ = queue.needs_notification(&mem);
    }
    reach
}

// --- virtio-blk ------------------------------------------------------------------------

#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum BlkKind {
    In,
    Out,
    Flush,
    GetId,
    Discard,
    WriteZeroes,
    Other(u32),
}

impl BlkKind {
    fn code(self) -> u32 {
        match self {
            BlkKind::In => 0,
            BlkKind::Out => 1,
            BlkKind::Flush => 4,
            BlkKind::GetId => 8,
            BlkKind::Discard => 11,
            BlkKind::WriteZeroes => 13,
            BlkKind::Other(n) => n,
        }
    }
}

#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum Sector {
    Small(u8),
    Any(u64),
}

/// One request: the header, the data buffers, the status byte — or, hostile, any chain.
#[derive(Arbitrary, Clone, Debug)]
pub enum BlkRequest {
    Request { kind: BlkKind, sector: Sector, data: Vec<(Addr, Len, Vec<u8>)>, status_len: u8 },
    Raw(Vec<Buffer>),
}

#[derive(Arbitrary, Clone, Debug)]
pub struct BlkInput {
    pub read_only: bool,
    pub rings: Rings,
    pub requests: Vec<BlkRequest>,
}

/// A 64-sector raw image for this thread (one for the writable disk, one for the read-only
/// one), emptied for each run (the same file); in memory
/// (tmpfs) where the host has it, so the guest's flushes cost no disk syncs.
fn blk_image(read_only: bool) -> std::path::PathBuf {
    let shm = std::path::Path::new("/dev/shm");
    let dir = if shm.is_dir() { shm.to_path_buf() } else { std::env::temp_dir() };
    let thread = format!("{:?}", std::thread::current().id())
        .replace(|c: char| !c.is_ascii_alphanumeric(), "");
    let mode = if read_only { "ro" } else { "rw" };
    let path = dir.join(format!("vessel-fuzz-blk-{}-{thread}-{mode}.raw", std::process::id()));
    let file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).open(&path);
    file.unwrap().set_len(64 * 512).unwrap();
    path
}

thread_local! {
    /// The disk, writable and read-only, opened once per thread: opening is cheap, but
    /// closing a disk's size watch (inotify) waits for the kernel's grace period, which
    /// would cost milliseconds a run. Each run empties the image (the same file) again.
    static BLK: std::cell::RefCell<Option<[vmm::devices::virtio::block::Block; 2]>> =
        const { std::cell::RefCell::new(None) };
}

pub fn virtio_blk(input: &BlkInput) -> Reach {
    use vmm::devices::virtio::block::Block;
    let path = blk_image(input.read_only);
    BLK.with_borrow_mut(|disks| {
        let [rw, ro] = disks.get_or_insert_with(|| {
            let open = |ro| Block::open(&vmm::ImageSpec::raw(blk_image(ro)), ro, "fuzz").unwrap();
            [open(false), open(true)]
        });
        virtio_blk_on(if input.read_only { ro } else { rw }, &path, input)
    })
}

fn virtio_blk_on(
    blk: &mut vmm::devices::virtio::block::Block,
    path: &std::path::Path,
    input: &BlkInput,
) -> Reach {
    let mut kinds = Vec::new();
    let chains: Vec<Vec<Buffer>> = input
        .requests
        .iter()
        .take(32)
        .enumerate()
        .map(|(i, request)| match request {
            BlkRequest::Request { kind, sector, data, status_len } => {
                kinds.push(Some(*kind));
                let sector = match sector {
                    Sector::Small(s) => u64::from(*s),
                    Sector::Any(s) => *s,
                };
                let mut header = kind.code().to_le_bytes().to_vec();
                header.extend(0u32.to_le_bytes());
                header.extend(sector.to_le_bytes());
                let mut chain = vec![own(i, 0, header, false, 16)];
                let writes = matches!(kind, BlkKind::In | BlkKind::GetId);
                for (addr, len, bytes) in data.iter().take(8) {
                    chain.push(Buffer {
                        addr: *addr,
                        len: *len,
                        device_writes: writes,
                        data: bytes.clone(),
                    });
                }
                let status = [0xffu8].to_vec();
                chain.push(own(i, 1, status, true, u32::from(*status_len).max(1)));
                chain
            }
            BlkRequest::Raw(buffers) => {
                kinds.push(None);
                buffers.clone()
            }
        })
        .collect();
    let mem = memory();
    let (queue, built) = input.rings.with(chains.clone()).build(0, &mem);
    // The status bytes start out as 0xff, so a request the device never answered shows.
    for chain in &built {
        if let Some(&(addr, len, true)) = chain.buffers.last() {
            let _ = mem.write_obj(0xffu8, GuestAddress(addr + u64::from(len.max(1)) - 1));
        }
    }
    let mut queues = [queue];
    // As during a live migration that copies the disk: every write is noted.
    use vmm::devices::storage::CopySource;
    blk.track_writes(true);
    blk.process_queue(0, &mut queues, &mem);
    blk.process_queue(0, &mut queues, &mem);
    assert_eq!(std::fs::metadata(path).unwrap().len(), 64 * 512, "the guest cannot resize");
    let noted = blk.take_written();
    blk.track_writes(false);
    // Never beyond the disk (32 KiB: the first 64 KiB chunk only).
    assert!(noted.iter().skip(1).all(|w| *w == 0) && noted.first().is_none_or(|w| *w <= 1));
    let mut reach = Reach { completed: u64::from(used_count(&mem, 0)), ..Default::default() };
    if noted.iter().any(|w| *w != 0) {
        reach.count("noted");
    }
    // Which requests were built (those that fit the queue), in order.
    let mut built_kinds = Vec::new();
    let mut at = 0usize;
    let size = usize::from(input.rings.with(Vec::new()).size());
    for (chain, kind) in chains.iter().zip(&kinds) {
        if chain.is_empty() || at + chain.len() > size {
            continue;
        }
        at += chain.len();
        built_kinds.push(*kind);
    }
    for (chain, kind) in built.iter().zip(built_kinds) {
        let (Some(kind), Some(&(addr, len, true))) = (kind, chain.buffers.last()) else {
            continue;
        };
        let status: u8 =
            mem.read_obj(GuestAddress(addr + u64::from(len.max(1)) - 1)).unwrap_or(0xff);
        match (kind, status) {
            (BlkKind::In, 0) => reach.count("read"),
            (BlkKind::Out, 0) => reach.count("write"),
            (BlkKind::Flush, 0) => reach.count("flush"),
            (BlkKind::GetId, 0) => reach.count("id"),
            (BlkKind::Discard | BlkKind::WriteZeroes, 0) => reach.count("discard"),
            (_, 1) => reach.count("ioerr"),
            (_, 2) => reach.count("unsupported"),
            _ => {}
        }
    }
    reach
}

// --- virtio-net ------------------------------------------------------------------------

/// A backend whose frames the fuzzer scripts; every third send finds it full.
struct Scripted {
    incoming: Vec<Vec<u8>>,
    sent: Arc<Mutex<u64>>,
    tries: u64,
}

impl NetBackend for Scripted {
    fn fd(&self) -> RawFd {
        -1
    }
    fn send(&mut self, frame: &[u8]) -> bool {
        assert!(frame.len() <= 65_550);
        self.tries += 1;
        if self.tries.is_multiple_of(3) {
            return false;
        }
        *self.sent.lock().unwrap() += 1;
        true
    }
    fn recv(&mut self) -> Option<Vec<u8>> {
        self.incoming.pop()
    }
}

#[derive(Arbitrary, Clone, Debug)]
pub enum NetBuffer {
    /// A transmit chain: the 12-byte header and a frame.
    Frame(Vec<u8>),
    /// A receive buffer of this size.
    Room(u16),
    Raw(Vec<Buffer>),
}

#[derive(Arbitrary, Clone, Debug)]
pub struct NetInput {
    pub rx: Rings,
    pub tx: Rings,
    pub rx_buffers: Vec<NetBuffer>,
    pub tx_buffers: Vec<NetBuffer>,
    pub incoming: Vec<Vec<u8>>,
}

fn net_chains(buffers: &[NetBuffer], tx: bool) -> Vec<Vec<Buffer>> {
    buffers
        .iter()
        .take(32)
        .enumerate()
        .map(|(i, b)| match b {
            NetBuffer::Frame(frame) => {
                let mut bytes = vec![0u8; 12];
                bytes.extend(frame.iter().take(2048));
                let len = bytes.len() as u32;
                vec![own(i + usize::from(tx) * 32, 0, bytes, false, len)]
            }
            NetBuffer::Room(n) => {
                vec![own(i + usize::from(tx) * 32, 0, Vec::new(), true, u32::from(*n))]
            }
            NetBuffer::Raw(chain) => chain.clone(),
        })
        .collect()
}

pub fn virtio_net(input: &NetInput) -> Reach {
    use vmm::devices::virtio::net::Net;
    let sent = Arc::new(Mutex::new(0));
    let incoming: Vec<Vec<u8>> =
        input.incoming.iter().take(16).map(|f| f.iter().take(4096).copied().collect()).collect();
    let backend = Scripted { incoming, sent: sent.clone(), tries: 0 };
    let mut net = Net::new([2, 0, 0, 0, 0, 1], Box::new(backend));
    let mem = memory();
    let (rx, _) = input.rx.with(net_chains(&input.rx_buffers, false)).build(0, &mem);
    let (tx, _) = input.tx.with(net_chains(&input.tx_buffers, true)).build(1, &mem);
    let mut queues = [rx, tx];
    net.process_queue(1, &mut queues, &mem);
    net.process_backend(&mut queues, &mem);
    net.process_queue(0, &mut queues, &mem);
    net.process_queue(1, &mut queues, &mem);
    let mut reach = Reach {
        completed: u64::from(used_count(&mem, 0)) + u64::from(used_count(&mem, 1)),
        ..Default::default()
    };
    for _ in 0..*sent.lock().unwrap() {
        reach.count("sent");
    }
    // A used receive entry longer than the header carried a frame.
    for i in 0..used_count(&mem, 0).min(256) {
        let at = 0x2000 + 4 + 8 * u64::from(i) + 4;
        if mem.read_obj::<u32>(GuestAddress(at)).is_ok_and(|len| len > 12) {
            reach.count("received");
        }
    }
    reach
}

// --- virtio-gpu ------------------------------------------------------------------------

#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum GpuKind {
    DisplayInfo,
    Create2d,
    Unref,
    SetScanout,
    Flush,
    Transfer,
    AttachBacking,
    DetachBacking,
    Edid,
    UpdateCursor,
    MoveCursor,
    Other(u32),
}

impl GpuKind {
    fn code(self) -> u32 {
        match self {
            GpuKind::DisplayInfo => 0x100,
            GpuKind::Create2d => 0x101,
            GpuKind::Unref => 0x102,
            GpuKind::SetScanout => 0x103,
            GpuKind::Flush => 0x104,
            GpuKind::Transfer => 0x105,
            GpuKind::AttachBacking => 0x106,
            GpuKind::DetachBacking => 0x107,
            GpuKind::Edid => 0x10a,
            GpuKind::UpdateCursor => 0x300,
            GpuKind::MoveCursor => 0x301,
            GpuKind::Other(n) => n,
        }
    }
}

/// A command: its header fields and body (small numbers mostly, as real ones are); or a
/// whole frame the way a driver shows one (create, attach backing, set scanout, transfer,
/// flush), so the fuzzer starts from a screen and mutates from there.
#[derive(Arbitrary, Clone, Debug)]
pub enum GpuCommand {
    Command { kind: GpuKind, fence: bool, words: Vec<u16>, response: u16 },
    Frame { resource: u8, format: u8, width: u8, height: u8 },
    Raw(Vec<Buffer>),
}

#[derive(Arbitrary, Clone, Debug)]
pub struct GpuInput {
    pub control: Rings,
    pub cursor: Rings,
    pub commands: Vec<GpuCommand>,
    pub cursor_commands: Vec<GpuCommand>,
}

/// A request chain: the 24-byte header of `kind`, then `body` as little-endian u32s, and a
/// response buffer of `response` bytes.
fn gpu_request(n: usize, kind: u32, fence: bool, body: &[u32], response: u32) -> Vec<Buffer> {
    let mut bytes = kind.to_le_bytes().to_vec();
    bytes.extend(u32::from(fence).to_le_bytes());
    bytes.extend(7u64.to_le_bytes());
    bytes.extend([0u8; 8]);
    for w in body {
        bytes.extend(w.to_le_bytes());
    }
    let len = bytes.len() as u32;
    vec![own(n, 0, bytes, false, len), own(n, 1, Vec::new(), true, response.max(24))]
}

/// Where a frame's pixels live in the guest: slot 100 on (room for 64x64x4 bytes).
const FRAME_BACKING: u64 = crate::SLOTS + 100 * crate::SLOT_SIZE;

fn gpu_chains(commands: &[GpuCommand], base: usize) -> Vec<Vec<Buffer>> {
    let mut chains = Vec::new();
    for c in commands.iter().take(24) {
        let n = base + chains.len();
        match c {
            GpuCommand::Command { kind, fence, words, response } => {
                let body: Vec<u32> = words.iter().take(256).map(|w| u32::from(*w)).collect();
                chains.push(gpu_request(n, kind.code(), *fence, &body, u32::from(*response)));
            }
            GpuCommand::Frame { resource, format, width, height } => {
                let (id, format) = (u32::from(*resource), u32::from(*format % 8) + 1);
                let (w, h) = (u32::from(*width % 64) + 1, u32::from(*height % 64) + 1);
                let backing = [FRAME_BACKING as u32, (FRAME_BACKING >> 32) as u32, w * h * 4, 0];
                let mut attach = vec![id, 1];
                attach.extend(backing);
                let rect = [0, 0, w, h];
                let steps: [(u32, Vec<u32>); 5] = [
                    (0x101, vec![id, format, w, h]),
                    (0x106, attach),
                    (0x103, [&rect[..], &[0, id]].concat()),
                    (0x105, [&rect[..], &[0, 0, id, 0]].concat()),
                    (0x104, [&rect[..], &[id, 0]].concat()),
                ];
                for (step, (kind, body)) in steps.iter().enumerate() {
                    chains.push(gpu_request(n + step, *kind, false, body, 24));
                }
            }
            GpuCommand::Raw(chain) => chains.push(chain.clone()),
        }
    }
    chains
}

pub fn virtio_gpu(input: &GpuInput) -> Reach {
    use vmm::devices::virtio::gpu::{Gpu, GpuConfig, GpuLimits};
    let display = vmm::Display::new().unwrap();
    let limits = GpuLimits { max_resource_bytes: 4 << 20, max_resources: 8 };
    let mut gpu = Gpu::new(display.clone(), GpuConfig { limits, ..Default::default() });
    let mem = memory();
    let (control, built) = input.control.with(gpu_chains(&input.commands, 0)).build(0, &mem);
    let (cursor, _) = input.cursor.with(gpu_chains(&input.cursor_commands, 24)).build(1, &mem);
    let mut queues = [control, cursor];
    gpu.process_queue(0, &mut queues, &mem);
    gpu.process_queue(1, &mut queues, &mem);
    // Whatever the guest did, what the display shows is inside what it was given.
    display.read(0, |frame| {
        assert!(frame.pixels.len() >= frame.stride * (frame.height as usize).saturating_sub(1));
    });
    let mut reach = Reach {
        completed: u64::from(used_count(&mem, 0)) + u64::from(used_count(&mem, 1)),
        ..Default::default()
    };
    for chain in &built {
        let Some(&(addr, _, true)) = chain.buffers.last() else { continue };
        match mem.read_obj::<u32>(GuestAddress(addr)).unwrap_or(0) {
            0x1100..=0x11ff => reach.count("ok"),
            0x1200..=0x12ff => reach.count("error"),
            _ => {}
        }
    }
    if display.size().is_some() {
        reach.count("scanout");
    }
    reach
}

// --- virtio-input ----------------------------------------------------------------------

#[derive(Arbitrary, Clone, Debug)]
pub enum HostInput {
    Key(u16, bool),
    Abs(u16, u16),
    Rel(i16, i16),
    Wheel(i8),
}

#[derive(Arbitrary, Clone, Debug)]
pub struct InputInput {
    pub kind: u8,
    pub events: Rings,
    pub status: Rings,
    pub event_buffers: Vec<(u8, bool)>,
    /// Status reports the guest sends (LEDs): type, code, value.
    pub statuses: Vec<(u16, u16, u32)>,
    pub raw: Vec<Vec<Buffer>>,
    pub host: Vec<HostInput>,
    /// Config selections: (select, subsel).
    pub selects: Vec<(u8, u8)>,
}

pub fn virtio_input(input: &InputInput) -> Reach {
    use vmm::devices::virtio::input::Input;
    let sink = vmm::InputSink::new().unwrap();
    let kind = match input.kind % 3 {
        0 => vmm::InputKind::Keyboard,
        1 => vmm::InputKind::Tablet,
        _ => vmm::InputKind::Mouse,
    };
    sink.set_display_size(1024, 768);
    let mut dev = Input::new(kind, sink.clone());
    let mut reach = Reach::default();
    for (select, subsel) in input.selects.iter().take(64) {
        dev.write_config(0, &[*select, *subsel]);
        let mut size = [0u8];
        dev.read_config(2, &mut size);
        if size[0] > 0 {
            reach.count("config answer");
        }
        let mut all = [0u8; 136];
        dev.read_config(0, &mut all);
    }
    for event in input.host.iter().take(256) {
        match event {
            HostInput::Key(code, down) => sink.key(*code % 0x300, *down),
            HostInput::Abs(x, y) => sink.pointer_abs(f64::from(*x), f64::from(*y)),
            HostInput::Rel(dx, dy) => sink.pointer_rel(i32::from(*dx), i32::from(*dy)),
            HostInput::Wheel(d) => sink.wheel(0, i32::from(*d)),
        }
    }
    let mut events: Vec<Vec<Buffer>> = input
        .event_buffers
        .iter()
        .take(64)
        .enumerate()
        .map(|(i, (len, _))| vec![own(i, 0, Vec::new(), true, u32::from(*len))])
        .collect();
    events.extend(input.raw.iter().take(8).cloned());
    let statuses: Vec<Vec<Buffer>> = input
        .statuses
        .iter()
        .take(32)
        .enumerate()
        .map(|(i, (ty, code, value))| {
            let mut bytes = ty.to_le_bytes().to_vec();
            bytes.extend(code.to_le_bytes());
            bytes.extend(value.to_le_bytes());
            vec![own(64 + i, 0, bytes, false, 8)]
        })
        .collect();
    let mem = memory();
    let (eventq, _) = input.events.with(events).build(0, &mem);
    let (statusq, _) = input.status.with(statuses).build(1, &mem);
    let mut queues = [eventq, statusq];
    dev.process_queue(0, &mut queues, &mem);
    dev.process_backend(&mut queues, &mem);
    dev.process_queue(1, &mut queues, &mem);
    reach.completed = u64::from(used_count(&mem, 0)) + u64::from(used_count(&mem, 1));
    for _ in 0..used_count(&mem, 0).min(256) {
        reach.count("event");
    }
    for _ in 0..used_count(&mem, 1).min(256) {
        reach.count("status");
    }
    reach
}

// --- virtio-rng ------------------------------------------------------------------------

pub fn virtio_rng(input: &QueueInput) -> Reach {
    use virtio_queue::QueueT;
    let mut rng = vmm::devices::virtio::rng::Rng;
    let mem = memory();
    let (queue, _) = input.build(0, &mem);
    let mut queues = [queue];
    rng.process_queue(0, &mut queues, &mem);
    let mut reach = Reach { completed: u64::from(queues[0].next_used()), ..Default::default() };
    for i in 0..used_count(&mem, 0).min(256) {
        let at = 0x2000 + 4 + 8 * u64::from(i) + 4;
        if mem.read_obj::<u32>(GuestAddress(at)).is_ok_and(|len| len > 0) {
            reach.count("filled");
        }
    }
    reach
}

// --- virtio-pci transport --------------------------------------------------------------

/// Which part of the function a register access goes to.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum Region {
    Common,
    Isr,
    Device,
    Notify,
    MsixTable,
    MsixPba,
    Config,
    Anywhere(u64),
}

#[derive(Arbitrary, Clone, Debug)]
pub enum PciOp {
    Read {
        region: Region,
        offset: u16,
        size: u8,
    },
    Write {
        region: Region,
        offset: u16,
        size: u8,
        value: u64,
    },
    /// The steps a driver takes to bring queue `q` up on the rings the input built.
    SetUpQueue {
        q: u8,
        vector: u16,
    },
    DriverOk,
    Kick(u8),
}

#[derive(Arbitrary, Clone, Debug)]
pub struct PciInput {
    pub queue: QueueInput,
    pub ops: Vec<PciOp>,
}

/// Lays the BAR regions out as the transport does (virtio/pci.rs).
fn region_base(region: Region) -> (bool, u64) {
    match region {
        Region::Common => (false, 0x0000),
        Region::Isr => (false, 0x1000),
        Region::Device => (false, 0x2000),
        Region::Notify => (false, 0x3000),
        Region::MsixTable => (false, 0x4000),
        Region::MsixPba => (false, 0x6000),
        Region::Config => (true, 0),
        Region::Anywhere(a) => (false, a),
    }
}

pub fn virtio_pci(input: &PciInput) -> Reach {
    use vmm::devices::pci::PciDevice;
    use vmm::devices::virtio::pci::VirtioPciDevice;
    let mem = memory();
    input.queue.build(0, &mem);
    let mut dev =
        VirtioPciDevice::new(Box::new(vmm::devices::virtio::rng::Rng), mem.clone(), None, None)
            .unwrap();
    let mut reach = Reach::default();
    let w = |dev: &mut VirtioPciDevice, offset: u64, value: u64, size: usize| {
        dev.bar_write(0, offset, &value.to_le_bytes()[..size]);
    };
    for op in input.ops.iter().take(256) {
        match op {
            PciOp::Read { region, offset, size } => {
                let (config, base) = region_base(*region);
                let mut buf = [0u8; 8];
                let n = [1, 2, 4, 8][usize::from(size % 4)];
                if config {
                    dev.config_read(usize::from(*offset) % 4096, &mut buf[..n.min(4)]);
                } else {
                    dev.bar_read(0, base.wrapping_add(u64::from(*offset)), &mut buf[..n]);
                }
            }
            PciOp::Write { region, offset, size, value } => {
                let (config, base) = region_base(*region);
                let n = [1, 2, 4, 8][usize::from(size % 4)];
                if config {
                    dev.config_write(usize::from(*offset) % 4096, &value.to_le_bytes()[..n.min(4)]);
                } else {
                    w(&mut dev, base.wrapping_add(u64::from(*offset)), *value, n);
                }
            }
            PciOp::SetUpQueue { q, vector } => {
                w(&mut dev, 0x14, 0, 1);
                w(&mut dev, 0x14, 3, 1);
                w(&mut dev, 0x08, 1, 4);
                w(&mut dev, 0x0c, 1, 4); // VERSION_1
                w(&mut dev, 0x14, 0x0b, 1);
                w(&mut dev, 0x16, u64::from(*q % 2), 2);
                w(&mut dev, 0x18, u64::from(input.queue.size()), 2);
                w(&mut dev, 0x1a, u64::from(*vector % 3), 2);
                for (offset, value) in [(0x20, 0), (0x28, 0x1000), (0x30, 0x2000)] {
                    w(&mut dev, offset, value, 8);
                }
                w(&mut dev, 0x1c, 1, 2);
                let mut enabled = [0u8; 2];
                dev.bar_read(0, 0x1c, &mut enabled);
                if enabled == [1, 0] {
                    reach.count("queue enabled");
                }
            }
            PciOp::DriverOk => w(&mut dev, 0x14, 0x0f, 1),
            PciOp::Kick(q) => {
                dev.process_queue(usize::from(*q % 2));
            }
        }
    }
    reach.completed = u64::from(used_count(&mem, 0));
    if reach.completed > 0 {
        reach.count("served");
    }
    reach
}

// --- legacy port devices ---------------------------------------------------------------

#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum Port {
    Serial(u8),
    Keyboard(bool),
    Cmos(bool),
    Sleep(bool),
    Debug,
    Ged(u8),
    /// A key (an evdev code from this byte, 0-255) pressed (write) or released on the
    /// i8042's keyboard.
    Key(u8),
    /// The i8042's mouse moved (x, y, wheel), with the value's low bits as its buttons.
    Mouse(i16, i16, i8),
}

#[derive(Arbitrary, Clone, Debug)]
pub struct LegacyInput {
    pub ops: Vec<(Port, bool, u8)>,
    pub serial_input: Vec<u8>,
}

pub fn legacy(input: &LegacyInput) -> Reach {
    use vmm::devices::legacy::{
        acpi_pm::AcpiPm,
        cmos::Cmos,
        debug_port::DebugPort,
        ged::Ged,
        i8042::I8042,
        serial::{SerialOutput, SerialPort},
    };
    let power_requests = Arc::new(Mutex::new(0u64));
    let counter = power_requests.clone();
    let power: vmm::devices::PowerSink = Arc::new(move |_| *counter.lock().unwrap() += 1);
    let out = Arc::new(Mutex::new(Vec::new()));
    let ready = Arc::new(EventFd::new(libc::EFD_NONBLOCK).unwrap());
    let irq = || EventFd::new(libc::EFD_NONBLOCK).unwrap();
    let serial =
        Arc::new(Mutex::new(SerialPort::new(irq(), SerialOutput::new(out.clone(), ready))));
    serial.lock().unwrap().send_input(&input.serial_input);
    let pio = Bus::new("pio");
    let mmio = Bus::new("mmio");
    pio.insert(0x3f8, 8, serial.clone()).unwrap();
    let i8042 = Arc::new(Mutex::new(I8042::new(power.clone(), [None, None], None)));
    let kbd: Arc<Mutex<dyn BusDevice>> = i8042.clone();
    pio.insert(0x60, 1, kbd.clone()).unwrap();
    pio.insert(0x64, 1, kbd).unwrap();
    let (mut keyboard_bytes, mut keys, mut motions) = (0u64, 0u64, 0u64);
    pio.insert(0x70, 2, Arc::new(Mutex::new(Cmos::new(128 << 20, 0, 2)))).unwrap();
    pio.insert(0x600, 2, Arc::new(Mutex::new(AcpiPm::new(power)))).unwrap();
    let markers = Arc::new(Mutex::new(0u64));
    let m = markers.clone();
    pio.insert(
        0xe9,
        1,
        Arc::new(Mutex::new(DebugPort::new(Box::new(move |_, _| *m.lock().unwrap() += 1)))),
    )
    .unwrap();
    mmio.insert(0xfed0_0000, 0x100, Arc::new(Mutex::new(Ged::new(irq())))).unwrap();
    for (port, write, value) in input.ops.iter().take(4096) {
        if let Port::Key(code) = port {
            i8042.lock().unwrap().key(u16::from(*code), *write);
            keys += 1;
            continue;
        }
        if let Port::Mouse(dx, dy, dz) = port {
            let (dx, dy, dz) = (i32::from(*dx), i32::from(*dy), i32::from(*dz));
            i8042.lock().unwrap().mouse(dx, dy, dz, *value & 0x1f);
            motions += 1;
            continue;
        }
        if let (Port::Keyboard(false), false) = (port, write) {
            // A byte the CPU takes from a full output buffer.
            let mut status = [0u8];
            pio.read(0x64, &mut status);
            keyboard_bytes += u64::from(status[0] & 1);
        }
        let (bus, addr) = match port {
            Port::Key(_) | Port::Mouse(..) => continue,
            Port::Serial(r) => (&pio, 0x3f8 + u64::from(r % 8)),
            Port::Keyboard(cmd) => (&pio, if *cmd { 0x64 } else { 0x60 }),
            Port::Cmos(data) => (&pio, 0x70 + u64::from(*data)),
            Port::Sleep(status) => (&pio, 0x600 + u64::from(*status)),
            Port::Debug => (&pio, 0xe9),
            Port::Ged(r) => (&mmio, 0xfed0_0000 + u64::from(*r)),
        };
        if *write {
            bus.write(addr, &[*value]);
        } else {
            bus.read(addr, &mut [0u8]);
        }
    }
    let mut reach = Reach::default();
    for _ in 0..out.lock().unwrap().len().min(1000) {
        reach.count("serial byte");
    }
    for _ in 0..*power_requests.lock().unwrap() {
        reach.count("power request");
    }
    for _ in 0..*markers.lock().unwrap() {
        reach.count("debug marker");
    }
    for _ in 0..keyboard_bytes.min(1000) {
        reach.count("keyboard byte");
    }
    for _ in 0..keys.min(1000) {
        reach.count("key");
    }
    for _ in 0..motions.min(1000) {
        reach.count("mouse motion");
    }
    reach
}

// --- vhost-user relay ------------------------------------------------------------------

#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum RelayRequest {
    SetFeatures,
    SetMemTable,
    SetVringEnable,
    Other(u32),
}

#[derive(Arbitrary, Clone, Debug)]
pub struct RelayInput {
    pub messages: Vec<(RelayRequest, u32, Vec<u8>)>,
    /// Raw bytes after the messages (a torn or lying header).
    pub trailer: Vec<u8>,
}

pub fn vhost_user_relay(input: &RelayInput) -> Reach {
    use std::io::Write;
    use std::os::unix::net::UnixStream;
    use vmm::vhost_user::relay::{Relay, recv};
    let (mut front, back) = UnixStream::pair().unwrap();
    back.set_read_timeout(Some(std::time::Duration::from_millis(50))).unwrap();
    let mut bytes = Vec::new();
    for (request, flags, body) in input.messages.iter().take(64) {
        let code = match request {
            RelayRequest::SetFeatures => 2,
            RelayRequest::SetMemTable => 5,
            RelayRequest::SetVringEnable => 18,
            RelayRequest::Other(n) => *n,
        };
        bytes.extend(code.to_le_bytes());
        bytes.extend(flags.to_le_bytes());
        bytes.extend((body.len() as u32).to_le_bytes());
        bytes.extend(body);
    }
    bytes.extend(&input.trailer);
    // Written from a thread: the socket buffer may hold less than the whole input.
    let writer = std::thread::spawn(move || {
        let _ = front.write_all(&bytes);
    });
    let mut relay = Relay::default();
    let mut reach = Reach::default();
    for _ in 0..128 {
        match recv(&back) {
            Ok(Some(msg)) => {
                reach.count("message");
                let routed = relay.route(msg);
                if routed.to_frontend.is_some() {
                    reach.count("held");
                }
                for m in &routed.to_backend {
                    assert!(m.body.len() <= 64 * 1024);
                }
            }
            Ok(None) | Err(_) => break,
        }
    }
    drop(back);
    let _ = writer.join();
    reach
}

// --- fw_cfg ------------------------------------------------------------------------------

/// An item to select: a file the device holds (most of the time), or any number.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum FwKey {
    Signature,
    Id,
    FileDir,
    /// One of the test files, by index (0: read-only, 1: writable, 2: empty).
    File(u8),
    Any(u16),
}

impl FwKey {
    fn get(self) -> u16 {
        use vmm::firmware::fw_cfg::*;
        match self {
            FwKey::Signature => KEY_SIGNATURE,
            FwKey::Id => KEY_ID,
            FwKey::FileDir => KEY_FILE_DIR,
            FwKey::File(i) => KEY_FILE_FIRST + u16::from(i % 3),
            FwKey::Any(k) => k,
        }
    }
}

/// One thing the firmware does with fw_cfg.
#[derive(Arbitrary, Clone, Debug)]
pub enum FwOp {
    Select(FwKey),
    /// Read this many bytes through the data port.
    Read(u8),
    /// A DMA descriptor at `at`, started the way SeaBIOS starts one.
    Dma {
        at: Addr,
        select: Option<FwKey>,
        read: bool,
        write: bool,
        skip: bool,
        len: Len,
        target: Addr,
    },
    /// Anything at any port of the device, any width.
    PortWrite {
        offset: u8,
        data: Vec<u8>,
    },
    PortRead {
        offset: u8,
        len: u8,
    },
}

#[derive(Arbitrary, Clone, Debug)]
pub struct FwCfgInput {
    pub ops: Vec<FwOp>,
}

/// The fw_cfg device with a read-only, a writable and an empty file, under any sequence
/// of port accesses and DMA descriptors.
pub fn fw_cfg(input: &FwCfgInput) -> Reach {
    use vmm::firmware::fw_cfg::*;
    let mem = memory();
    // The firmware's own data, which it may write into a writable file.
    mem.write_slice(&[0xa5; 4096], GuestAddress(crate::SLOTS)).unwrap();
    let mut cfg = FwCfg::new(mem.clone());
    cfg.add_file("etc/e820", vec![0x5a; 100], false).unwrap();
    cfg.add_file("etc/writable", vec![0; 16], true).unwrap();
    cfg.add_file("etc/empty", Vec::new(), false).unwrap();
    let mut reach = Reach::default();
    for op in input.ops.iter().take(1024) {
        match op {
            FwOp::Select(key) => cfg.write(0, 0, &key.get().to_le_bytes()),
            FwOp::Read(n) => {
                for _ in 0..*n {
                    let mut b = [0u8];
                    cfg.read(0, 1, &mut b);
                    if b[0] != 0 {
                        reach.count("data byte");
                    }
                }
            }
            FwOp::Dma { at, select, read, write, skip, len, target } => {
                let at = at.resolve();
                let mut control = 0;
                if let Some(key) = select {
                    control |= DMA_SELECT | (u32::from(key.get()) << 16);
                }
                for (on, bit) in [(read, DMA_READ), (write, DMA_WRITE), (skip, DMA_SKIP)] {
                    if *on {
                        control |= bit;
                    }
                }
                let mut d = Vec::new();
                d.extend_from_slice(&control.to_be_bytes());
                d.extend_from_slice(&len.get().to_be_bytes());
                d.extend_from_slice(&target.resolve().to_be_bytes());
                if mem.write_slice(&d, GuestAddress(at)).is_err() {
                    reach.count("descriptor outside");
                }
                cfg.write(0, 4, &((at >> 32) as u32).to_be_bytes());
                cfg.write(0, 8, &(at as u32).to_be_bytes());
                let mut c = [0xffu8; 4];
                if mem.read_slice(&mut c, GuestAddress(at)).is_ok() {
                    match u32::from_be_bytes(c) {
                        0 if *write && !*read => reach.count("dma write"),
                        0 if *read => reach.count("dma read"),
                        0 => reach.count("dma other"),
                        DMA_ERROR => reach.count("dma error"),
                        _ => {}
                    }
                    reach.completed += 1;
                }
            }
            FwOp::PortWrite { offset, data } => {
                let offset = u64::from(*offset % 12);
                let n = data.len().clamp(1, 8).min((12 - offset) as usize);
                let mut bytes = data.clone();
                bytes.resize(n, 0);
                cfg.write(0, offset, &bytes);
            }
            FwOp::PortRead { offset, len } => {
                let offset = u64::from(*offset % 12);
                let n = usize::from(*len).clamp(1, 8).min((12 - offset) as usize);
                cfg.read(0, offset, &mut vec![0u8; n]);
            }
        }
    }
    if cfg.file("etc/writable").is_some_and(|f| f.iter().any(|b| *b != 0)) {
        reach.count("file written");
    }
    reach
}

// --- the standard VGA ----------------------------------------------------------------------

/// One access to the VGA, or a frame drawn.
#[derive(Arbitrary, Clone, Debug)]
pub enum VgaOp {
    /// A byte or word at a legacy port 0x3B0 + (n % 0x30).
    Port { at: u8, write: bool, word: bool, value: u16 },
    /// DISPI's index (false) or data port.
    Dispi { data: bool, write: bool, value: u16 },
    /// A byte at the 0xA0000 window + offset.
    Window { offset: u32, write: bool, value: u8 },
    /// BAR 0 (the framebuffer) or BAR 2 (EDID, VGA registers, DISPI, QEMU's registers).
    Bar { mmio: bool, offset: u32, write: bool, value: u32, len: u8 },
    /// The display thread draws what changed (cursor and blink phases given).
    Frame { cursor: bool, blink: bool },
}

#[derive(Arbitrary, Clone, Debug)]
pub struct VgaInput {
    pub ops: Vec<VgaOp>,
}

pub fn vga(input: &VgaInput) -> Reach {
    use vmm::devices::pci::PciDevice;
    use vmm::devices::vga::render::{Phase, Renderer};
    use vmm::devices::vga::vram::{DirtyPages, PAGE, Vram};
    use vmm::devices::vga::{self, StdVga, VgaCore, VgaPorts, VgaWindow};
    let vram = Arc::new(Vram::new(vga::VRAM_BYTES).unwrap());
    let core = Arc::new(Mutex::new(VgaCore::new(vram)));
    let mut device = StdVga::new(core.clone(), None, None);
    let mut ports = VgaPorts::new(core.clone());
    let mut window = VgaWindow::new(core.clone());
    let display = vmm::display::Display::new().unwrap();
    let mut renderer = Renderer::default();
    let mut spare = DirtyPages::new(vga::VRAM_BYTES / PAGE);
    let mut shown = None;
    let mut reach = Reach::default();
    let mut frames = 0;
    for op in input.ops.iter().take(4096) {
        match *op {
            VgaOp::Port { at, write, word, value } => {
                let offset = u64::from(at % vga::PORTS_LEN as u8);
                let len = if word && offset + 2 <= vga::PORTS_LEN { 2 } else { 1 };
                let base = u64::from(vga::PORTS_START);
                if write {
                    ports.write(base, offset, &value.to_le_bytes()[..len]);
                    reach.count("register write");
                } else {
                    ports.read(base, offset, &mut [0u8; 2][..len]);
                }
            }
            VgaOp::Dispi { data, write, value } => {
                let base = u64::from(vga::DISPI_PORT);
                if write {
                    ports.write(base, u64::from(data), &value.to_le_bytes());
                } else {
                    ports.read(base, u64::from(data), &mut [0u8; 2]);
                }
                if core.lock().unwrap().regs.dispi_enabled() {
                    reach.count("dispi mode");
                }
            }
            VgaOp::Window { offset, write, value } => {
                let offset = u64::from(offset) % vga::WINDOW_LEN;
                if write {
                    window.write(vga::WINDOW_START, offset, &[value]);
                    reach.count("window write");
                } else {
                    window.read(vga::WINDOW_START, offset, &mut [0u8]);
                }
            }
            VgaOp::Bar { mmio, offset, write, value, len } => {
                let (bar, size) = if mmio { (2, 0x1000) } else { (0, vga::VRAM_BYTES as u64) };
                let len = usize::from(len % 4) + 1;
                let offset = u64::from(offset) % size;
                if write {
                    device.bar_write(bar, offset, &value.to_le_bytes()[..len]);
                } else {
                    device.bar_read(bar, offset, &mut [0u8; 4][..len]);
                }
            }
            VgaOp::Frame { cursor, blink } => {
                // Drawing is the slow part: a few frames an input.
                if frames == 8 {
                    continue;
                }
                frames += 1;
                let before = display.generation();
                let phase = Phase { cursor, blink };
                vga::frame(&core, &mut renderer, &mut spare, &mut shown, &display, phase);
                if let Some((w, h)) = display.size() {
                    reach.count(if w * h > 0 { "picture" } else { "empty picture" });
                }
                if display.generation() != before {
                    reach.count("damage");
                }
            }
        }
    }
    reach
}

// --- saved device state ----------------------------------------------------------------

/// The device a `device_state` input's first byte picks (serial, i8042, CMOS, IDE, virtio
/// PCI transport, GPU, boot framebuffer, VGA, fw_cfg); the rest is its saved state as a
/// state file's payload holds it (postcard). Saved state comes from a file (a VM can be
/// imported with one), so each restore must check everything and never panic; after a
/// restore the device is driven a little, to reach what the restored state leads to.
pub const STATE_PARTS: u8 = 9;

pub fn device_state(data: &[u8]) -> Reach {
    use vmm::devices::legacy::{
        cmos::Cmos,
        i8042::I8042,
        serial::{SerialOutput, SerialPort},
    };
    use vmm::devices::pci::PciDevice;
    use vmm::persist::{Persist, decode_part};
    let mut reach = Reach::default();
    let Some((&part, bytes)) = data.split_first() else { return reach };
    let irq = || EventFd::new(libc::EFD_NONBLOCK).unwrap();
    let mut outcome = |taken: &'static str, refused: &'static str, ok: bool| {
        reach.count(if ok { taken } else { refused });
    };
    match part % STATE_PARTS {
        0 => {
            let out = Arc::new(Mutex::new(Vec::new()));
            let ready = Arc::new(EventFd::new(libc::EFD_NONBLOCK).unwrap());
            let mut serial = SerialPort::new(irq(), SerialOutput::new(out, ready));
            let ok = decode_part(bytes).is_ok_and(|s| serial.restore_state(&s).is_ok());
            for reg in 0..8 {
                serial.read(0x3f8, reg, &mut [0u8]);
            }
            outcome("serial taken", "serial refused", ok);
        }
        1 => {
            let mut i8042 = I8042::new(Arc::new(|_| {}), [None, None], None);
            let ok = decode_part(bytes).is_ok_and(|s| i8042.restore_state(&s).is_ok());
            for _ in 0..64 {
                i8042.read(0x64, 0, &mut [0u8]);
                i8042.read(0x60, 0, &mut [0u8]);
            }
            i8042.write(0x64, 0, &[0xd4]);
            i8042.write(0x60, 0, &[0xeb]); // the mouse's read-data: its saved motion
            i8042.key(30, true);
            outcome("i8042 taken", "i8042 refused", ok);
        }
        2 => {
            let mut cmos = Cmos::new(128 << 20, 0, 1);
            let ok = decode_part(bytes).is_ok_and(|s| cmos.restore_state(&s).is_ok());
            cmos.read(0x70, 1, &mut [0u8]);
            outcome("cmos taken", "cmos refused", ok);
        }
        3 => {
            use vmm::devices::storage::ide::{IdeController, SECONDARY_CMD};
            let cd = vmm::devices::storage::mmc::CdRom::new("fuzz");
            let mut ide = IdeController::new(Some(cd), [irq(), irq()], Some(memory()));
            let ok = ide.restore_state(bytes).is_ok();
            for reg in [7, 0, 0, 0, 2] {
                ide.read(u64::from(SECONDARY_CMD), reg, &mut [0u8; 2]);
            }
            ide.write(u64::from(SECONDARY_CMD), 0, &[0; 2]); // a packet's bytes
            outcome("ide taken", "ide refused", ok);
        }
        4 => {
            use vmm::devices::virtio::pci::VirtioPciDevice;
            let rng = Box::new(vmm::devices::virtio::rng::Rng);
            let mut dev = VirtioPciDevice::new(rng, memory(), None, None).unwrap();
            let ok = PciDevice::restore_state(&mut dev, bytes).is_ok();
            dev.process_queue(0);
            outcome("virtio-pci taken", "virtio-pci refused", ok);
        }
        5 => {
            use vmm::devices::virtio::gpu::{Gpu, GpuConfig, GpuLimits};
            let limits = GpuLimits { max_resource_bytes: 4 << 20, max_resources: 8 };
            let config = GpuConfig { limits, ..Default::default() };
            let mut gpu = Gpu::new(vmm::Display::new().unwrap(), config);
            let ok = gpu.restore_state(bytes, &memory()).is_ok();
            outcome("gpu taken", "gpu refused", ok);
        }
        6 => {
            use vmm::display::boot_fb::{BootFramebuffer, FramebufferMode};
            let fb = BootFramebuffer::new(FramebufferMode { width: 320, height: 200 }).unwrap();
            let ok = decode_part(bytes).is_ok_and(|s| fb.restore_state(&s).is_ok());
            outcome("boot-fb taken", "boot-fb refused", ok);
        }
        7 => {
            use vmm::devices::vga::render::{Phase, Renderer};
            use vmm::devices::vga::vram::{DirtyPages, PAGE, Vram};
            use vmm::devices::vga::{self, StdVga, VgaCore, VgaPorts};
            let vram = Arc::new(Vram::new(vga::VRAM_BYTES).unwrap());
            let core = Arc::new(Mutex::new(VgaCore::new(vram)));
            let mut device = StdVga::new(core.clone(), None, None);
            let ok = PciDevice::restore_state(&mut device, bytes).is_ok();
            // What the restored registers draw, and the ports they answer.
            let display = vmm::display::Display::new().unwrap();
            let (mut renderer, mut shown) = (Renderer::default(), None);
            let mut spare = DirtyPages::new(vga::VRAM_BYTES / PAGE);
            let phase = Phase { cursor: true, blink: false };
            vga::frame(&core, &mut renderer, &mut spare, &mut shown, &display, phase);
            let mut ports = VgaPorts::new(core);
            for offset in 0..vga::PORTS_LEN {
                ports.read(u64::from(vga::PORTS_START), offset, &mut [0u8]);
            }
            ports.read(u64::from(vga::DISPI_PORT), 1, &mut [0u8; 2]);
            outcome("vga taken", "vga refused", ok);
        }
        _ => {
            use vmm::devices::bus::BusDevice;
            use vmm::firmware::fw_cfg::FwCfg;
            let mut fw_cfg = FwCfg::new(memory());
            let ok = decode_part(bytes).is_ok_and(|s| fw_cfg.restore_state(&s).is_ok());
            for _ in 0..16 {
                fw_cfg.read(0x510, 1, &mut [0u8]);
            }
            outcome("fw_cfg taken", "fw_cfg refused", ok);
        }
    }
    reach
}

/// Writes seeds of the VGA's and fw_cfg's saved states (taken and refused) into `dir`.
pub fn write_state_seeds(dir: &std::path::Path) {
    use vmm::devices::bus::BusDevice;
    use vmm::devices::pci::PciDevice;
    use vmm::devices::vga::vram::Vram;
    use vmm::devices::vga::{self, StdVga, VgaCore, VgaPorts};
    use vmm::persist::Persist;
    let vram = Arc::new(Vram::new(vga::VRAM_BYTES).unwrap());
    let core = Arc::new(Mutex::new(VgaCore::new(vram)));
    let mut device = StdVga::new(core.clone(), None, None);
    let mut ports = VgaPorts::new(core.clone());
    // A DISPI mode, 640x480x32, and a few pixels drawn.
    for (index, value) in [(1u16, 640u16), (2, 480), (3, 32), (4, 0x41)] {
        ports.write(u64::from(vga::DISPI_PORT), 0, &index.to_le_bytes());
        ports.write(u64::from(vga::DISPI_PORT), 1, &value.to_le_bytes());
    }
    for at in (0..4 * 4096).step_by(4096 + 4) {
        device.bar_write(0, at, &[0xff, 0x80, 0x40, 0]);
    }
    let mut state = device.save_state().unwrap();
    let mut seed = vec![7u8];
    seed.extend_from_slice(&state);
    std::fs::write(dir.join("vga"), &seed).unwrap();
    state.truncate(state.len() / 2);
    let mut cut = vec![7u8];
    cut.extend_from_slice(&state);
    std::fs::write(dir.join("vga-cut"), &cut).unwrap();
    let fw_cfg = vmm::firmware::fw_cfg::FwCfg::new(memory());
    let mut seed = vec![8u8];
    seed.extend_from_slice(&vmm::persist::encode_part(&fw_cfg.save_state()));
    std::fs::write(dir.join("fw-cfg"), &seed).unwrap();
    // Selected, offset, DMA high word, and a writable item the device does not have.
    let bad = (0u16, 0u64, 0u32, vec![(0x99u16, vec![1u8, 2])]);
    let mut seed = vec![8u8];
    seed.extend_from_slice(&vmm::persist::encode_part(&bad));
    std::fs::write(dir.join("fw-cfg-unknown-item"), &seed).unwrap();
}

/// The receiving side of a live migration, from the frames a sender (a peer on the
/// network, perhaps an attacker) sends after the greeting: the guest's memory pass after
/// pass, until its state (`vmm::migration::receive_memory`), into 32 MiB of guest memory
/// and a 1 MiB disk (copied disks' frames). Every address is checked against RAM or the
/// disk and every frame bounded; nothing panics.
pub fn migration_receive(data: &[u8]) -> Reach {
    use vmm::migration::{Received, receive_memory};
    let mut reach = Reach::default();
    let mem = vmm::vstate::memory::create_guest_memory(32 << 20).unwrap();
    let layout = vmm::persist::memory::MemoryLayout::of(&mem);
    let mut conn = Peer { input: data, output: Vec::new() };
    let passes = std::cell::Cell::new(0u32);
    let progress = |r: Received| passes.set(r.passes);
    let disk = migration_disk();
    let image = vmm::devices::storage::image::RawImage::new(disk.try_clone().unwrap()).unwrap();
    let mut disks = vmm::migration::disks::Targets::of(vec![Box::new(image)]);
    match receive_memory(&mut conn, &layout, &mem, &mut disks, &progress) {
        Ok(_) => reach.count("state"),
        Err(vmm::migration::MigrationError::Protocol(_)) => reach.count("refused"),
        Err(_) => reach.count("ended"),
    }
    if passes.get() > 0 {
        reach.count("passes");
    }
    // Whatever came went into guest memory, and only there.
    let mut probe = [0u8; 8];
    if mem.read_slice(&mut probe, GuestAddress(0x1000)).is_ok() && probe != [0; 8] {
        reach.count("pages");
    }
    // And into the disk, within its size.
    use std::os::unix::fs::FileExt;
    if disk.metadata().unwrap().len() != 1 << 20 {
        panic!("the disk changed size");
    }
    if disk.read_exact_at(&mut probe, 0x2000).is_ok() && probe != [0; 8] {
        reach.count("disk");
        disk.write_all_at(&[0; 8], 0x2000).unwrap();
    }
    reach
}

/// The 1 MiB disk the migration_receive target writes into: a memfd, made once.
fn migration_disk() -> std::fs::File {
    use std::os::fd::FromRawFd;
    static DISK: std::sync::OnceLock<std::fs::File> = std::sync::OnceLock::new();
    DISK.get_or_init(|| {
        // SAFETY: memfd_create with a NUL-terminated name; the result is checked.
        let fd = unsafe { libc::memfd_create(c"migration-disk".as_ptr(), libc::MFD_CLOEXEC) };
        assert!(fd >= 0, "memfd_create");
        // SAFETY: a new descriptor nobody else owns.
        let file = unsafe { std::fs::File::from_raw_fd(fd) };
        file.set_len(1 << 20).unwrap();
        file
    })
    .try_clone()
    .unwrap()
}

/// A migration peer whose frames are `input`; what it is sent is kept.
struct Peer<'a> {
    input: &'a [u8],
    output: Vec<u8>,
}

impl std::io::Read for Peer<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.input.read(buf)
    }
}

impl std::io::Write for Peer<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.output.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Writes the migration_receive seeds: memory at an address in RAM, a zero run, a pass's
/// end and a state; pages beyond RAM; a frame longer than its kind allows.
pub fn write_migration_seeds(dir: &std::path::Path) {
    use vmm::migration::wire::{self, Tag};
    std::fs::create_dir_all(dir).unwrap();
    let mut good = Vec::new();
    wire::send(&mut good, Tag::Pages, &[&0x1000u64.to_le_bytes(), &[0x5a; 4096]]).unwrap();
    wire::send(&mut good, Tag::Zero, &[&0x8000u64.to_le_bytes(), &8192u64.to_le_bytes()]).unwrap();
    wire::send(&mut good, Tag::PassEnd, &[&1u32.to_le_bytes()]).unwrap();
    wire::send(&mut good, Tag::State, &[b"a state"]).unwrap();
    std::fs::write(dir.join("memory-then-state"), &good).unwrap();
    let mut beyond = Vec::new();
    wire::send(&mut beyond, Tag::Pages, &[&(1u64 << 40).to_le_bytes(), &[1; 4096]]).unwrap();
    std::fs::write(dir.join("pages-beyond-ram"), &beyond).unwrap();
    let mut zero_wraps = Vec::new();
    let (at, len) = (u64::MAX - 4095, 8192u64);
    wire::send(&mut zero_wraps, Tag::Zero, &[&at.to_le_bytes(), &len.to_le_bytes()]).unwrap();
    std::fs::write(dir.join("zero-wraps"), &zero_wraps).unwrap();
    let mut long = vec![Tag::Zero as u8];
    long.extend_from_slice(&u64::MAX.to_le_bytes());
    std::fs::write(dir.join("frame-too-long"), &long).unwrap();
    let mut disk = Vec::new();
    let (index, at) = (0u32.to_le_bytes(), 0x2000u64.to_le_bytes());
    wire::send(&mut disk, Tag::DiskData, &[&index, &at, &[0x77; 4096]]).unwrap();
    wire::send(&mut disk, Tag::DiskZero, &[&index, &0u64.to_le_bytes(), &4096u64.to_le_bytes()])
        .unwrap();
    wire::send(&mut disk, Tag::PassEnd, &[&1u32.to_le_bytes()]).unwrap();
    wire::send(&mut disk, Tag::State, &[b"a state"]).unwrap();
    std::fs::write(dir.join("disk-then-state"), &disk).unwrap();
    let mut beyond = Vec::new();
    let end = ((1u64 << 20) - 512).to_le_bytes();
    wire::send(&mut beyond, Tag::DiskData, &[&index, &end, &[1; 4096]]).unwrap();
    std::fs::write(dir.join("disk-beyond-its-end"), &beyond).unwrap();
    let mut no_such = Vec::new();
    wire::send(&mut no_such, Tag::DiskZero, &[&7u32.to_le_bytes(), &at, &512u64.to_le_bytes()])
        .unwrap();
    std::fs::write(dir.join("no-such-disk"), &no_such).unwrap();
}
