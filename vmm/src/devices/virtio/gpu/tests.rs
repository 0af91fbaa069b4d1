//! The GPU driven through its queues by a test driver: display info and EDID, pixels
//! reaching the display with damage, hostile requests, the cursor, resize events.

use super::protocol::*;
use super::resources::MAX_BACKING_ENTRIES;
use super::*;
use crate::display::PixelFormat;
use crate::vstate::memory::create_guest_memory;
use vm_memory::{Bytes, GuestAddress};

/// struct virtio_gpu_ctrl_hdr's size.
const HDR_BYTES: usize = 24;

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from(le32(b, at)) | (u64::from(le32(b, at + 4)) << 32)
}

const REQ: u64 = 0x10_0000;
const RESP: u64 = 0x20_0000;
const BACKING: u64 = 0x40_0000;

/// A driver with a control and a cursor queue, rings at `0x1000 * (1 + 4q)`.
struct Driver {
    mem: GuestMem,
    queues: Vec<Queue>,
    posted: [u16; 2],
}

fn ring(q: usize) -> (u64, u64, u64) {
    let base = 0x1000 * (1 + 4 * q as u64);
    (base, base + 0x1000, base + 0x2000)
}

impl Driver {
    fn new() -> Self {
        let mem = create_guest_memory(32 << 20).unwrap();
        let queues = (0..2)
            .map(|q| {
                let (desc, avail, used) = ring(q);
                let mut queue = Queue::new(16).unwrap();
                queue.set_size(16);
                queue.set_desc_table_address(Some(desc as u32), Some(0));
                queue.set_avail_ring_address(Some(avail as u32), Some(0));
                queue.set_used_ring_address(Some(used as u32), Some(0));
                queue.set_ready(true);
                queue
            })
            .collect();
        Driver { mem, queues, posted: [0; 2] }
    }

    fn desc(&self, q: usize, i: u64, addr: u64, len: u32, flags: u16, next: u16) {
        let at = ring(q).0 + 16 * i;
        self.mem.write_obj(addr, GuestAddress(at)).unwrap();
        self.mem.write_obj(len, GuestAddress(at + 8)).unwrap();
        self.mem.write_obj(flags, GuestAddress(at + 12)).unwrap();
        self.mem.write_obj(next, GuestAddress(at + 14)).unwrap();
    }

    /// Posts descriptor 0 on queue `q` and lets the device serve it; returns the used
    /// length.
    fn post(&mut self, gpu: &mut Gpu, q: usize) -> u32 {
        let (_, avail, used) = ring(q);
        let n = self.posted[q];
        self.mem.write_obj(0u16, GuestAddress(avail + 4 + 2 * u64::from(n % 16))).unwrap();
        self.posted[q] = n.wrapping_add(1);
        self.mem.write_obj(self.posted[q], GuestAddress(avail + 2)).unwrap();
        assert_eq!(gpu.process_queue(q, &mut self.queues, &self.mem), 1 << q);
        self.mem.read_obj(GuestAddress(used + 4 + 8 * u64::from(n % 16) + 4)).unwrap()
    }

    /// One control request; returns the response (as long as the device said).
    fn command(&mut self, gpu: &mut Gpu, req: &[u8]) -> Vec<u8> {
        self.mem.write_slice(req, GuestAddress(REQ)).unwrap();
        self.desc(CONTROLQ, 0, REQ, req.len() as u32, 1, 1);
        self.desc(CONTROLQ, 1, RESP, 2048, 2, 0);
        let len = self.post(gpu, CONTROLQ);
        let mut resp = vec![0u8; len as usize];
        self.mem.read_slice(&mut resp, GuestAddress(RESP)).unwrap();
        resp
    }

    fn cursor(&mut self, gpu: &mut Gpu, req: &[u8]) {
        self.mem.write_slice(req, GuestAddress(REQ)).unwrap();
        self.desc(CURSORQ, 0, REQ, req.len() as u32, 0, 0);
        assert_eq!(self.post(gpu, CURSORQ), 0);
    }
}

fn req(kind: u32, fields: &[u32]) -> Vec<u8> {
    let mut r = vec![0u8; HDR_BYTES];
    r[0..4].copy_from_slice(&kind.to_le_bytes());
    for f in fields {
        r.extend_from_slice(&f.to_le_bytes());
    }
    r
}

fn kind(resp: &[u8]) -> u32 {
    le32(resp, 0)
}

fn gpu() -> (Gpu, Display) {
    let display = Display::new().unwrap();
    (Gpu::new(display.clone(), GpuConfig::default()), display)
}

/// CREATE_2D + ATTACH_BACKING (in two entries) for a `w` x `h` resource.
fn make_resource(d: &mut Driver, g: &mut Gpu, id: u32, format: u32, w: u32, h: u32) {
    assert_eq!(
        kind(&d.command(g, &req(CMD_RESOURCE_CREATE_2D, &[id, format, w, h]))),
        RESP_OK_NODATA
    );
    let bytes = w * h * 4;
    let half = bytes / 2;
    let mut attach = req(CMD_RESOURCE_ATTACH_BACKING, &[id, 2]);
    for (addr, len) in [(BACKING, half), (BACKING + 0x10_0000, bytes - half)] {
        attach.extend_from_slice(&addr.to_le_bytes());
        attach.extend_from_slice(&len.to_le_bytes());
        attach.extend_from_slice(&0u32.to_le_bytes());
    }
    assert_eq!(kind(&d.command(g, &attach)), RESP_OK_NODATA);
}

/// Writes pixel `i` of the backing (split as `make_resource` splits it).
fn backing_pixel(d: &Driver, bytes: u32, i: u32, px: [u8; 4]) {
    let off = i * 4;
    let addr = if off < bytes / 2 {
        BACKING + u64::from(off)
    } else {
        BACKING + 0x10_0000 + u64::from(off - bytes / 2)
    };
    d.mem.write_slice(&px, GuestAddress(addr)).unwrap();
}

#[test]
fn display_info_and_edid() {
    let (mut g, _display) = gpu();
    let mut d = Driver::new();
    let info = d.command(&mut g, &req(CMD_GET_DISPLAY_INFO, &[]));
    assert_eq!(kind(&info), RESP_OK_DISPLAY_INFO);
    assert_eq!(info.len(), HDR_BYTES + 16 * 24);
    let one = &info[HDR_BYTES..];
    assert_eq!(
        [le32(one, 0), le32(one, 4), le32(one, 8), le32(one, 12), le32(one, 16)],
        [0, 0, 1024, 768, 1]
    );
    assert_eq!(le32(one, 24 + 16), 0, "scanout 1 is not enabled");
    let edid = d.command(&mut g, &req(CMD_GET_EDID, &[0, 0]));
    assert_eq!(kind(&edid), RESP_OK_EDID);
    assert_eq!(le32(&edid, HDR_BYTES), 128);
    assert_eq!(&edid[HDR_BYTES + 8..HDR_BYTES + 136], &edid::edid(1024, 768)[..]);
    assert_eq!(kind(&d.command(&mut g, &req(CMD_GET_EDID, &[1, 0]))), RESP_ERR_INVALID_SCANOUT_ID);
    // The config space: no events, one scanout, no capsets.
    let mut cfg = [0u8; 16];
    g.read_config(0, &mut cfg);
    assert_eq!([le32(&cfg, 0), le32(&cfg, 8), le32(&cfg, 12)], [0, 1, 0]);
}

#[test]
fn pixels_reach_the_display_with_damage() {
    let (mut g, display) = gpu();
    let mut d = Driver::new();
    let (w, h) = (64u32, 32u32);
    make_resource(&mut d, &mut g, 7, 2, w, h); // B8G8R8X8
    for i in 0..w * h {
        backing_pixel(&d, w * h * 4, i, [(i % 256) as u8, (i / 256) as u8, 0x5a, 0]);
    }
    assert_eq!(
        kind(&d.command(&mut g, &req(CMD_TRANSFER_TO_HOST_2D, &[0, 0, w, h, 0, 0, 7, 0]))),
        RESP_OK_NODATA
    );
    assert_eq!(
        kind(&d.command(&mut g, &req(CMD_SET_SCANOUT, &[0, 0, w, h, 0, 7]))),
        RESP_OK_NODATA
    );
    assert_eq!(display.size(), Some((w, h)));
    let g0 = display.read(0, |f| {
        assert_eq!(f.damage, crate::display::Damage::Full);
        assert_eq!(f.format, PixelFormat::Bgrx);
        // Pixel (5, 20) = index 20 * 64 + 5 = 1285.
        let at = 20 * f.stride + 5 * 4;
        assert_eq!(&f.pixels[at..at + 3], &[(1285 % 256) as u8, (1285 / 256) as u8, 0x5a]);
        f.generation
    });
    let g0 = g0.unwrap();
    // A partial transfer: the rectangle (8, 4, 2x2), its first pixel at `offset`.
    for (x, y) in [(8u32, 4u32), (9, 4), (8, 5), (9, 5)] {
        backing_pixel(&d, w * h * 4, y * w + x, [0xee, 0xdd, 0xcc, 0]);
    }
    let offset = (4 * w + 8) * 4;
    let t = req(CMD_TRANSFER_TO_HOST_2D, &[8, 4, 2, 2, offset, 0, 7, 0]);
    assert_eq!(kind(&d.command(&mut g, &t)), RESP_OK_NODATA);
    // Nothing shows before the flush... (the pixels are shared, the damage is not)
    assert_eq!(display.read(g0, |f| f.damage).unwrap(), crate::display::Damage::None);
    // ...and a fenced flush answers with its fence.
    let mut flush = req(CMD_RESOURCE_FLUSH, &[8, 4, 2, 2, 7, 0]);
    flush[4..8].copy_from_slice(&FLAG_FENCE.to_le_bytes());
    flush[8..16].copy_from_slice(&0x1234_5678_9abcu64.to_le_bytes());
    let resp = d.command(&mut g, &flush);
    assert_eq!(kind(&resp), RESP_OK_NODATA);
    assert_eq!(le32(&resp, 4) & FLAG_FENCE, FLAG_FENCE);
    assert_eq!(le64(&resp, 8), 0x1234_5678_9abc);
    display
        .read(g0, |f| {
            assert_eq!(f.damage, crate::display::Damage::Rects(vec![Rect::new(8, 4, 2, 2)]));
            let at = 5 * f.stride + 9 * 4;
            assert_eq!(&f.pixels[at..at + 3], &[0xee, 0xdd, 0xcc]);
            let next = 5 * f.stride + 10 * 4; // outside the rectangle: unchanged
            assert_eq!(f.pixels[next + 2], 0x5a);
        })
        .unwrap();
    // SET_SCANOUT with resource 0 disables the scanout; a second one shows it again.
    assert_eq!(
        kind(&d.command(&mut g, &req(CMD_SET_SCANOUT, &[0, 0, w, h, 0, 0]))),
        RESP_OK_NODATA
    );
    assert_eq!(display.size(), None);
    assert_eq!(
        kind(&d.command(&mut g, &req(CMD_SET_SCANOUT, &[0, 0, w, h, 0, 7]))),
        RESP_OK_NODATA
    );
    assert_eq!(display.size(), Some((w, h)));
    // Freeing the shown resource takes it off the display.
    assert_eq!(kind(&d.command(&mut g, &req(CMD_RESOURCE_UNREF, &[7, 0]))), RESP_OK_NODATA);
    assert_eq!(display.size(), None);
    assert_eq!(g.resources.bytes(), 0);
}

fn check(d: &mut Driver, g: &mut Gpu, r: Vec<u8>, expected: u32) {
    assert_eq!(kind(&d.command(g, &r)), expected, "request {:x?}", &r[..r.len().min(4)]);
}

#[test]
fn hostile_requests_get_error_responses() {
    let (mut g, display) = gpu();
    let mut d = Driver::new();
    check(&mut d, &mut g, req(CMD_RESOURCE_CREATE_2D, &[0, 2, 8, 8]), RESP_ERR_INVALID_RESOURCE_ID);
    check(&mut d, &mut g, req(CMD_RESOURCE_CREATE_2D, &[1, 99, 8, 8]), RESP_ERR_INVALID_PARAMETER);
    check(&mut d, &mut g, req(CMD_RESOURCE_CREATE_2D, &[1, 2, 0, 8]), RESP_ERR_INVALID_PARAMETER);
    check(
        &mut d,
        &mut g,
        req(CMD_RESOURCE_CREATE_2D, &[1, 2, u32::MAX, u32::MAX]),
        RESP_ERR_OUT_OF_MEMORY,
    );
    check(&mut d, &mut g, req(CMD_RESOURCE_CREATE_2D, &[1, 2, 8, 8]), RESP_OK_NODATA);
    check(&mut d, &mut g, req(CMD_RESOURCE_CREATE_2D, &[1, 2, 8, 8]), RESP_ERR_INVALID_RESOURCE_ID);
    // Backing: outside guest memory, wrapping, zero entries, too many, fewer than said.
    let attach = |entries: u32, list: &[(u64, u32)]| {
        let mut r = req(CMD_RESOURCE_ATTACH_BACKING, &[1, entries]);
        for (addr, len) in list {
            r.extend_from_slice(&addr.to_le_bytes());
            r.extend_from_slice(&len.to_le_bytes());
            r.extend_from_slice(&[0; 4]);
        }
        r
    };
    check(&mut d, &mut g, attach(1, &[(0xffff_ffff_0000, 256)]), RESP_ERR_INVALID_PARAMETER);
    check(&mut d, &mut g, attach(1, &[(u64::MAX - 8, 256)]), RESP_ERR_INVALID_PARAMETER);
    check(&mut d, &mut g, attach(1, &[(BACKING, 0)]), RESP_ERR_INVALID_PARAMETER);
    check(&mut d, &mut g, attach(0, &[]), RESP_ERR_INVALID_PARAMETER);
    check(
        &mut d,
        &mut g,
        attach(MAX_BACKING_ENTRIES + 1, &[(BACKING, 256)]),
        RESP_ERR_INVALID_PARAMETER,
    );
    check(&mut d, &mut g, attach(3, &[(BACKING, 256)]), RESP_ERR_INVALID_PARAMETER);
    // A transfer with no backing, then with too little for the rectangle.
    check(&mut d, &mut g, req(CMD_TRANSFER_TO_HOST_2D, &[0, 0, 8, 8, 0, 0, 1, 0]), RESP_ERR_UNSPEC);
    check(&mut d, &mut g, attach(1, &[(BACKING, 100)]), RESP_OK_NODATA);
    check(&mut d, &mut g, attach(1, &[(BACKING, 256)]), RESP_ERR_UNSPEC);
    check(
        &mut d,
        &mut g,
        req(CMD_TRANSFER_TO_HOST_2D, &[0, 0, 8, 8, 0, 0, 1, 0]),
        RESP_ERR_INVALID_PARAMETER,
    );
    check(
        &mut d,
        &mut g,
        req(CMD_TRANSFER_TO_HOST_2D, &[0, 0, 1, 1, u32::MAX, u32::MAX, 1, 0]),
        RESP_ERR_INVALID_PARAMETER,
    );
    // Rectangles outside the resource, overflowing ones, unknown resources.
    check(
        &mut d,
        &mut g,
        req(CMD_TRANSFER_TO_HOST_2D, &[4, 4, 8, 8, 0, 0, 1, 0]),
        RESP_ERR_INVALID_PARAMETER,
    );
    check(
        &mut d,
        &mut g,
        req(CMD_TRANSFER_TO_HOST_2D, &[u32::MAX, 0, 2, 1, 0, 0, 1, 0]),
        RESP_ERR_INVALID_PARAMETER,
    );
    check(
        &mut d,
        &mut g,
        req(CMD_TRANSFER_TO_HOST_2D, &[0, 0, 1, 1, 0, 0, 9, 0]),
        RESP_ERR_INVALID_RESOURCE_ID,
    );
    check(&mut d, &mut g, req(CMD_RESOURCE_FLUSH, &[0, 0, 9, 1, 1, 0]), RESP_ERR_INVALID_PARAMETER);
    check(
        &mut d,
        &mut g,
        req(CMD_RESOURCE_FLUSH, &[0, 0, 1, 1, 9, 0]),
        RESP_ERR_INVALID_RESOURCE_ID,
    );
    check(&mut d, &mut g, req(CMD_SET_SCANOUT, &[0, 0, 8, 8, 1, 1]), RESP_ERR_INVALID_SCANOUT_ID);
    check(&mut d, &mut g, req(CMD_SET_SCANOUT, &[0, 0, 8, 8, 0, 9]), RESP_ERR_INVALID_RESOURCE_ID);
    check(&mut d, &mut g, req(CMD_SET_SCANOUT, &[1, 0, 8, 8, 0, 1]), RESP_ERR_INVALID_PARAMETER);
    // A 16384x1 screen (a small resource): refused, 8192 wide is fine.
    check(&mut d, &mut g, req(CMD_RESOURCE_CREATE_2D, &[3, 2, 16384, 1]), RESP_OK_NODATA);
    check(
        &mut d,
        &mut g,
        req(CMD_SET_SCANOUT, &[0, 0, 16384, 1, 0, 3]),
        RESP_ERR_INVALID_PARAMETER,
    );
    check(&mut d, &mut g, req(CMD_SET_SCANOUT, &[0, 0, 8192, 1, 0, 3]), RESP_OK_NODATA);
    check(&mut d, &mut g, req(CMD_SET_SCANOUT, &[0, 0, 8, 8, 0, 0]), RESP_OK_NODATA);
    check(&mut d, &mut g, req(CMD_SET_SCANOUT, &[0, 0, 0, 0, 0, 1]), RESP_ERR_INVALID_PARAMETER);
    assert_eq!(display.size(), None, "no bad request made it to the display");
    check(&mut d, &mut g, req(CMD_RESOURCE_UNREF, &[9, 0]), RESP_ERR_INVALID_RESOURCE_ID);
    check(&mut d, &mut g, req(CMD_RESOURCE_DETACH_BACKING, &[9, 0]), RESP_ERR_INVALID_RESOURCE_ID);
    // Unknown, 3D and cursor commands on the control queue; requests cut short.
    check(&mut d, &mut g, req(0x0200, &[0, 0, 0, 0]), RESP_ERR_UNSPEC); // CTX_CREATE
    check(&mut d, &mut g, req(0xdead, &[]), RESP_ERR_UNSPEC);
    check(&mut d, &mut g, req(CMD_MOVE_CURSOR, &[0; 8]), RESP_ERR_UNSPEC);
    check(&mut d, &mut g, req(CMD_RESOURCE_CREATE_2D, &[2, 2]), RESP_ERR_INVALID_PARAMETER);
    check(&mut d, &mut g, vec![0; 10], RESP_ERR_UNSPEC);
    // A response buffer too small for the answer: nothing written.
    d.mem.write_slice(&req(CMD_GET_DISPLAY_INFO, &[]), GuestAddress(REQ)).unwrap();
    d.desc(CONTROLQ, 0, REQ, HDR_BYTES as u32, 1, 1);
    d.desc(CONTROLQ, 1, RESP, 64, 2, 0);
    assert_eq!(d.post(&mut g, CONTROLQ), 0);
    // The limits: resource count and bytes.
    let limits = GpuLimits { max_resource_bytes: 1 << 20, max_resources: 2 };
    let mut small = Gpu::new(Display::new().unwrap(), GpuConfig { limits, ..Default::default() });
    check(
        &mut d,
        &mut small,
        req(CMD_RESOURCE_CREATE_2D, &[1, 2, 513, 512]),
        RESP_ERR_OUT_OF_MEMORY,
    );
    check(&mut d, &mut small, req(CMD_RESOURCE_CREATE_2D, &[1, 2, 256, 256]), RESP_OK_NODATA);
    check(&mut d, &mut small, req(CMD_RESOURCE_CREATE_2D, &[2, 2, 256, 256]), RESP_OK_NODATA);
    check(&mut d, &mut small, req(CMD_RESOURCE_CREATE_2D, &[3, 2, 1, 1]), RESP_ERR_OUT_OF_MEMORY);
    check(&mut d, &mut small, req(CMD_RESOURCE_UNREF, &[1, 0]), RESP_OK_NODATA);
    check(&mut d, &mut small, req(CMD_RESOURCE_CREATE_2D, &[3, 2, 1, 1]), RESP_OK_NODATA);
}

#[test]
fn cursor_image_hotspot_and_position() {
    let (mut g, display) = gpu();
    let mut d = Driver::new();
    make_resource(&mut d, &mut g, 3, 3, 64, 64); // A8R8G8B8
    backing_pixel(&d, 64 * 64 * 4, 0, [0x80, 0x11, 0x22, 0x33]); // A, R, G, B
    assert_eq!(
        kind(&d.command(&mut g, &req(CMD_TRANSFER_TO_HOST_2D, &[0, 0, 64, 64, 0, 0, 3, 0]))),
        RESP_OK_NODATA
    );
    // struct virtio_gpu_update_cursor: pos (scanout, x, y, pad), resource, hot_x, hot_y
    d.cursor(&mut g, &req(CMD_UPDATE_CURSOR, &[0, 100, 50, 0, 3, 7, 9, 0]));
    let cursor = display.cursor();
    let image = cursor.image.expect("a cursor image");
    assert_eq!((image.width, image.height, image.hot_x, image.hot_y), (64, 64, 7, 9));
    assert_eq!(&image.rgba[..4], &[0x11, 0x22, 0x33, 0x80]);
    assert_eq!((cursor.x, cursor.y), (100, 50));
    let image_gen = cursor.image_generation;
    d.cursor(&mut g, &req(CMD_MOVE_CURSOR, &[0, 300, 200, 0, 0, 0, 0, 0]));
    let moved = display.cursor();
    assert_eq!((moved.x, moved.y, moved.image_generation), (300, 200, image_gen));
    // Hostile: an unknown resource, another scanout, a short request — all ignored.
    d.cursor(&mut g, &req(CMD_UPDATE_CURSOR, &[0, 1, 1, 0, 99, 0, 0, 0]));
    d.cursor(&mut g, &req(CMD_MOVE_CURSOR, &[5, 1, 1, 0, 0, 0, 0, 0]));
    d.cursor(&mut g, &req(CMD_MOVE_CURSOR, &[0]));
    assert_eq!(display.cursor(), moved);
    // Resource 0 hides it.
    d.cursor(&mut g, &req(CMD_UPDATE_CURSOR, &[0, 1, 1, 0, 0, 0, 0, 0]));
    assert!(display.cursor().image.is_none());
}

#[test]
fn a_gpu_that_goes_away_leaves_nothing_shown() {
    let (mut g, display) = gpu();
    let mut d = Driver::new();
    make_resource(&mut d, &mut g, 1, 2, 8, 8);
    assert_eq!(
        kind(&d.command(&mut g, &req(CMD_SET_SCANOUT, &[0, 0, 8, 8, 0, 1]))),
        RESP_OK_NODATA
    );
    assert_eq!(display.size(), Some((8, 8)));
    drop(g);
    assert_eq!(display.size(), None);
    assert!(display.cursor().image.is_none());
}

#[test]
fn a_resize_request_raises_the_display_event() {
    let (mut g, display) = gpu();
    let mut d = Driver::new();
    assert_eq!(g.process_backend(&mut d.queues, &d.mem), 0, "nothing asked yet");
    display.request_resize(1280, 800);
    assert_eq!(g.process_backend(&mut d.queues, &d.mem), CONFIG_CHANGED);
    let mut events = [0u8; 4];
    g.read_config(0, &mut events);
    assert_eq!(u32::from_le_bytes(events), EVENT_DISPLAY);
    g.write_config(4, &EVENT_DISPLAY.to_le_bytes()); // events_clear
    g.read_config(0, &mut events);
    assert_eq!(u32::from_le_bytes(events), 0);
    let info = d.command(&mut g, &req(CMD_GET_DISPLAY_INFO, &[]));
    assert_eq!((le32(&info, HDR_BYTES + 8), le32(&info, HDR_BYTES + 12)), (1280, 800));
    let edid = d.command(&mut g, &req(CMD_GET_EDID, &[0, 0]));
    assert_eq!(&edid[HDR_BYTES + 8..HDR_BYTES + 136], &edid::edid(1280, 800)[..]);
    // The same size again is no event.
    display.request_resize(1280, 800);
    assert_eq!(g.process_backend(&mut d.queues, &d.mem), 0);
}

#[test]
fn resources_scanout_and_cursor_come_back_after_a_save() {
    let (mut g, _display) = gpu();
    let mut d = Driver::new();
    let (w, h) = (64u32, 32u32);
    make_resource(&mut d, &mut g, 7, 2, w, h);
    for i in 0..w * h {
        backing_pixel(&d, w * h * 4, i, [(i % 256) as u8, 0x11, 0x22, 0]);
    }
    let transfer = req(CMD_TRANSFER_TO_HOST_2D, &[0, 0, w, h, 0, 0, 7, 0]);
    assert_eq!(kind(&d.command(&mut g, &transfer)), RESP_OK_NODATA);
    let scanout = req(CMD_SET_SCANOUT, &[0, 0, w, 16, 0, 7]);
    assert_eq!(kind(&d.command(&mut g, &scanout)), RESP_OK_NODATA);
    // The guest draws on in its backing without transferring: the host copy is what shows.
    backing_pixel(&d, w * h * 4, 0, [0xff; 4]);
    g.display.move_cursor(10, 20);
    let state = g.save_state();

    // A new GPU (a new VM process) on the same guest memory.
    let (mut restored, display) = gpu();
    restored.restore_state(&state, &d.mem).unwrap();
    assert_eq!(display.size(), Some((w, 16)), "the scanout shows the saved part");
    display
        .read(0, |f| {
            assert_eq!(&f.pixels[..3], &[0, 0x11, 0x22], "the transferred pixels");
            let at = 5 * 4;
            assert_eq!(f.pixels[at], 5);
        })
        .unwrap();
    assert_eq!((display.cursor().x, display.cursor().y), (10, 20));
    // Its backing came back too: a transfer after the restore reads the guest's memory.
    assert_eq!(kind(&d.command(&mut restored, &transfer)), RESP_OK_NODATA);
    display.read(0, |f| assert_eq!(&f.pixels[..3], &[0xff; 3])).unwrap();

    // Crafted: a scanout of a resource that is not there, backing outside guest memory,
    // pixels of the wrong size. Refused, what shows stays.
    let mut bad: GpuState = crate::persist::decode_part(&state).unwrap();
    bad.scanout = Some((9, Rect::new(0, 0, 8, 8)));
    let error = restored.restore_state(&crate::persist::encode_part(&bad), &d.mem).unwrap_err();
    assert!(error.contains("resource 9"), "{error}");
    let mut bad: GpuState = crate::persist::decode_part(&state).unwrap();
    bad.resources[0].backing = vec![(u64::MAX - 10, 4096)];
    assert!(restored.restore_state(&crate::persist::encode_part(&bad), &d.mem).is_err());
    let mut bad: GpuState = crate::persist::decode_part(&state).unwrap();
    bad.resources[0].pixels.truncate(100);
    assert!(restored.restore_state(&crate::persist::encode_part(&bad), &d.mem).is_err());
    assert_eq!(display.size(), Some((w, 16)));
}
