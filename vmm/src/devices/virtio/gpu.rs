//! virtio-gpu, 2D only (virtio 1.2 §5.7): one scanout, resources kept on the host and
//! filled from guest memory by TRANSFER_TO_HOST_2D, shown through the machine's `Display`
//! (the scanout's resource is shared with it, so a flush copies nothing), a cursor queue
//! whose image and hotspot reach the host, EDID, and the display event that makes the
//! guest re-read the display info when the host asks for another size.
//!
//! Every request is checked against the spec and the machine's limits (resource count and
//! bytes, backing entries, rectangles, guest addresses); a bad one gets the spec's error
//! response and a rate-limited log line.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex};

use virtio_queue::{Queue, QueueT, Reader, Writer};
use vm_memory::{Bytes, GuestAddress, GuestMemory};

use super::{CONFIG_CHANGED, TYPE_GPU, VirtioDevice, read_config_bytes};
use crate::devices::log_limit::{LogLimit, held_back};
use crate::display::{CursorImage, Display, Image, PixelFormat, Rect, SharedImage, edid};
use crate::sync::lock;
use crate::vstate::memory::GuestMem;

const CONTROLQ: usize = 0;
const CURSORQ: usize = 1;
const QUEUE_SIZE: u16 = 256;

const F_EDID: u64 = 1 << 1;
const EVENT_DISPLAY: u32 = 1;
const NUM_SCANOUTS: u32 = 1;
const MAX_SCANOUTS: usize = 16;

// Commands (§5.7.6.7).
const CMD_GET_DISPLAY_INFO: u32 = 0x0100;
const CMD_RESOURCE_CREATE_2D: u32 = 0x0101;
const CMD_RESOURCE_UNREF: u32 = 0x0102;
const CMD_SET_SCANOUT: u32 = 0x0103;
const CMD_RESOURCE_FLUSH: u32 = 0x0104;
const CMD_TRANSFER_TO_HOST_2D: u32 = 0x0105;
const CMD_RESOURCE_ATTACH_BACKING: u32 = 0x0106;
const CMD_RESOURCE_DETACH_BACKING: u32 = 0x0107;
const CMD_GET_EDID: u32 = 0x010a;
const CMD_UPDATE_CURSOR: u32 = 0x0300;
const CMD_MOVE_CURSOR: u32 = 0x0301;
// Responses.
const RESP_OK_NODATA: u32 = 0x1100;
const RESP_OK_DISPLAY_INFO: u32 = 0x1101;
const RESP_OK_EDID: u32 = 0x1104;
const RESP_ERR_UNSPEC: u32 = 0x1200;
const RESP_ERR_OUT_OF_MEMORY: u32 = 0x1201;
const RESP_ERR_INVALID_SCANOUT_ID: u32 = 0x1202;
const RESP_ERR_INVALID_RESOURCE_ID: u32 = 0x1203;
const RESP_ERR_INVALID_PARAMETER: u32 = 0x1205;

/// The widest and tallest scanout shown (Linux's virtio-gpu driver's largest mode).
pub const MAX_SCANOUT: u32 = 8192;
const FLAG_FENCE: u32 = 1;

/// struct virtio_gpu_ctrl_hdr.
const HDR_BYTES: usize = 24;
/// Largest request read from the driver: a header, an ATTACH_BACKING and its entries.
const MAX_BACKING_ENTRIES: u32 = 1 << 16;
const MAX_REQUEST_BYTES: usize = HDR_BYTES + 8 + MAX_BACKING_ENTRIES as usize * 16;
/// Largest cursor image (Linux and Windows use 64x64).
const MAX_CURSOR: u32 = 256;

/// Limits of one machine's GPU; past them a request fails with ERR_OUT_OF_MEMORY.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GpuLimits {
    /// Host memory all resources together may take.
    pub max_resource_bytes: u64,
    pub max_resources: u32,
}

impl Default for GpuLimits {
    fn default() -> Self {
        // Room for several 4K framebuffers and cursors, as a desktop needs.
        GpuLimits { max_resource_bytes: 256 << 20, max_resources: 1024 }
    }
}

/// A machine's GPU: its limits and the display mode it offers before the host asks for
/// another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GpuConfig {
    pub limits: GpuLimits,
    pub mode: (u32, u32),
}

impl Default for GpuConfig {
    fn default() -> Self {
        GpuConfig { limits: GpuLimits::default(), mode: (1024, 768) }
    }
}

struct Resource {
    image: SharedImage,
    /// The guest's scatter list: (address, length), each inside guest memory.
    backing: Vec<(u64, u32)>,
    /// Bytes of backing before each entry, to find an offset quickly.
    backing_starts: Vec<u64>,
}

impl Resource {
    fn backing_bytes(&self) -> u64 {
        self.backing_starts.last().copied().unwrap_or(0)
            + self.backing.last().map_or(0, |(_, len)| u64::from(*len))
    }

    /// Copies `dst.len()` bytes from `offset` in the backing into `dst`.
    fn read_backing(&self, mem: &GuestMem, offset: u64, dst: &mut [u8]) -> bool {
        let mut entry = match self.backing_starts.binary_search(&offset) {
            Ok(i) => i,
            Err(i) => i.saturating_sub(1),
        };
        let mut at = offset;
        let mut done = 0;
        while done < dst.len() {
            let Some(&(addr, len)) = self.backing.get(entry) else { return false };
            let start = self.backing_starts[entry];
            let skip = at - start;
            if skip >= u64::from(len) {
                entry += 1;
                continue;
            }
            let n = (u64::from(len) - skip).min((dst.len() - done) as u64) as usize;
            if mem.read_slice(&mut dst[done..done + n], GuestAddress(addr + skip)).is_err() {
                return false;
            }
            done += n;
            at += n as u64;
            entry += 1;
        }
        true
    }
}

/// The response to one control request.
enum Response {
    NoData,
    Error(u32),
    DisplayInfo((u32, u32)),
    Edid(Box<[u8; 128]>),
}

pub struct Gpu {
    display: Display,
    limits: GpuLimits,
    resources: BTreeMap<u32, Resource>,
    resource_bytes: u64,
    /// The resource shown, if any.
    scanout: Option<u32>,
    /// The mode the display info offers (the host's requested size, or 1024x768).
    mode: (u32, u32),
    events_read: u32,
    warnings: LogLimit,
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from(le32(b, at)) | (u64::from(le32(b, at + 4)) << 32)
}

fn rect_at(b: &[u8], at: usize) -> Rect {
    Rect::new(le32(b, at), le32(b, at + 4), le32(b, at + 8), le32(b, at + 12))
}

fn pixel_format(format: u32) -> Option<PixelFormat> {
    Some(match format {
        1 => PixelFormat::Bgra,   // B8G8R8A8_UNORM
        2 => PixelFormat::Bgrx,   // B8G8R8X8_UNORM
        3 => PixelFormat::Argb,   // A8R8G8B8_UNORM
        4 => PixelFormat::Xrgb,   // X8R8G8B8_UNORM
        67 => PixelFormat::Rgba,  // R8G8B8A8_UNORM
        68 => PixelFormat::Xbgr,  // X8B8G8R8_UNORM
        121 => PixelFormat::Abgr, // A8B8G8R8_UNORM
        134 => PixelFormat::Rgbx, // R8G8B8X8_UNORM
        _ => return None,
    })
}

impl Gpu {
    pub fn new(display: Display, config: GpuConfig) -> Self {
        let mode = display.requested_size().unwrap_or(config.mode);
        Gpu {
            display,
            limits: config.limits,
            resources: BTreeMap::new(),
            resource_bytes: 0,
            scanout: None,
            mode,
            events_read: 0,
            warnings: LogLimit::default(),
        }
    }

    fn warn(&mut self, what: &str) {
        if let Some(n) = self.warnings.allow() {
            log::warn!("virtio-gpu: {what}{}", held_back(n));
        }
    }

    /// Length a request of `kind` must have after the header (None: unknown command).
    fn body_len(kind: u32) -> Option<usize> {
        Some(match kind {
            CMD_GET_DISPLAY_INFO => 0,
            CMD_RESOURCE_CREATE_2D => 16,
            CMD_RESOURCE_UNREF | CMD_RESOURCE_DETACH_BACKING | CMD_GET_EDID => 8,
            CMD_SET_SCANOUT | CMD_RESOURCE_FLUSH => 24,
            CMD_TRANSFER_TO_HOST_2D => 32,
            CMD_RESOURCE_ATTACH_BACKING => 8,
            CMD_UPDATE_CURSOR | CMD_MOVE_CURSOR => 32,
            _ => return None,
        })
    }

    fn execute(&mut self, kind: u32, req: &[u8], mem: &GuestMem) -> Response {
        let b = &req[HDR_BYTES..];
        match kind {
            CMD_GET_DISPLAY_INFO => Response::DisplayInfo(self.mode),
            CMD_GET_EDID => {
                if le32(b, 0) >= NUM_SCANOUTS {
                    return Response::Error(RESP_ERR_INVALID_SCANOUT_ID);
                }
                Response::Edid(Box::new(edid::edid(self.mode.0, self.mode.1)))
            }
            CMD_RESOURCE_CREATE_2D => self.create(le32(b, 0), le32(b, 4), le32(b, 8), le32(b, 12)),
            CMD_RESOURCE_UNREF => self.unref(le32(b, 0)),
            CMD_RESOURCE_ATTACH_BACKING => self.attach(le32(b, 0), le32(b, 4), &b[8..], mem),
            CMD_RESOURCE_DETACH_BACKING => match self.resources.get_mut(&le32(b, 0)) {
                Some(res) => {
                    res.backing.clear();
                    res.backing_starts.clear();
                    Response::NoData
                }
                None => Response::Error(RESP_ERR_INVALID_RESOURCE_ID),
            },
            CMD_SET_SCANOUT => self.set_scanout(rect_at(b, 0), le32(b, 16), le32(b, 20)),
            CMD_TRANSFER_TO_HOST_2D => self.transfer(rect_at(b, 0), le64(b, 16), le32(b, 24), mem),
            CMD_RESOURCE_FLUSH => {
                let (rect, id) = (rect_at(b, 0), le32(b, 16));
                let Some(res) = self.resources.get(&id) else {
                    return Response::Error(RESP_ERR_INVALID_RESOURCE_ID);
                };
                let (w, h) = {
                    let image = lock(&res.image);
                    (image.width, image.height)
                };
                if !rect.fits_in(w, h) {
                    return Response::Error(RESP_ERR_INVALID_PARAMETER);
                }
                self.display.flushed(&res.image, rect);
                Response::NoData
            }
            _ => Response::Error(RESP_ERR_UNSPEC),
        }
    }

    fn create(&mut self, id: u32, format: u32, width: u32, height: u32) -> Response {
        if id == 0 || self.resources.contains_key(&id) {
            return Response::Error(RESP_ERR_INVALID_RESOURCE_ID);
        }
        let Some(format) = pixel_format(format) else {
            return Response::Error(RESP_ERR_INVALID_PARAMETER);
        };
        if width == 0 || height == 0 {
            return Response::Error(RESP_ERR_INVALID_PARAMETER);
        }
        let bytes = u64::from(width).checked_mul(u64::from(height)).and_then(|p| p.checked_mul(4));
        let Some(bytes) = bytes else { return Response::Error(RESP_ERR_OUT_OF_MEMORY) };
        if self.resources.len() >= self.limits.max_resources as usize
            || self.resource_bytes.saturating_add(bytes) > self.limits.max_resource_bytes
        {
            return Response::Error(RESP_ERR_OUT_OF_MEMORY);
        }
        let Some(image) = Image::new(width, height, format) else {
            return Response::Error(RESP_ERR_OUT_OF_MEMORY);
        };
        self.resource_bytes += bytes;
        let image = Arc::new(Mutex::new(image));
        self.resources
            .insert(id, Resource { image, backing: Vec::new(), backing_starts: Vec::new() });
        Response::NoData
    }

    fn unref(&mut self, id: u32) -> Response {
        let Some(res) = self.resources.remove(&id) else {
            return Response::Error(RESP_ERR_INVALID_RESOURCE_ID);
        };
        let image = lock(&res.image);
        self.resource_bytes -= u64::from(image.width) * u64::from(image.height) * 4;
        drop(image);
        if self.scanout == Some(id) {
            // A scanout never shows a freed resource (as QEMU does).
            self.scanout = None;
            self.display.set_scanout(None);
        }
        Response::NoData
    }

    fn attach(&mut self, id: u32, entries: u32, list: &[u8], mem: &GuestMem) -> Response {
        if entries == 0 || entries > MAX_BACKING_ENTRIES || list.len() < entries as usize * 16 {
            return Response::Error(RESP_ERR_INVALID_PARAMETER);
        }
        let Some(res) = self.resources.get(&id) else {
            return Response::Error(RESP_ERR_INVALID_RESOURCE_ID);
        };
        if !res.backing.is_empty() {
            return Response::Error(RESP_ERR_UNSPEC); // already attached
        }
        let mut backing = Vec::with_capacity(entries as usize);
        let mut starts = Vec::with_capacity(entries as usize);
        let mut total = 0u64;
        for entry in list.chunks_exact(16).take(entries as usize) {
            let (addr, len) = (le64(entry, 0), le32(entry, 8));
            // Every byte of the entry must be guest memory.
            let inside = len > 0
                && addr.checked_add(u64::from(len)).is_some()
                && mem.check_range(GuestAddress(addr), len as usize, vm_memory::Permissions::Read);
            if !inside {
                return Response::Error(RESP_ERR_INVALID_PARAMETER);
            }
            starts.push(total);
            backing.push((addr, len));
            total += u64::from(len);
        }
        let res = self.resources.get_mut(&id).expect("looked up above");
        res.backing = backing;
        res.backing_starts = starts;
        Response::NoData
    }

    fn set_scanout(&mut self, rect: Rect, scanout_id: u32, id: u32) -> Response {
        if scanout_id >= NUM_SCANOUTS {
            return Response::Error(RESP_ERR_INVALID_SCANOUT_ID);
        }
        if id == 0 {
            self.scanout = None;
            self.display.set_scanout(None);
            return Response::NoData;
        }
        let Some(res) = self.resources.get(&id) else {
            return Response::Error(RESP_ERR_INVALID_RESOURCE_ID);
        };
        let (w, h) = {
            let image = lock(&res.image);
            (image.width, image.height)
        };
        // Larger than any mode the driver offers (Linux's virtio-gpu allows 8192x8192): a
        // screen no window could show, nor most GPUs hold as one texture.
        if rect.is_empty()
            || !rect.fits_in(w, h)
            || rect.width > MAX_SCANOUT
            || rect.height > MAX_SCANOUT
        {
            return Response::Error(RESP_ERR_INVALID_PARAMETER);
        }
        self.scanout = Some(id);
        self.display.set_scanout(Some((res.image.clone(), rect)));
        Response::NoData
    }

    fn transfer(&mut self, rect: Rect, offset: u64, id: u32, mem: &GuestMem) -> Response {
        let Some(res) = self.resources.get(&id) else {
            return Response::Error(RESP_ERR_INVALID_RESOURCE_ID);
        };
        if res.backing.is_empty() {
            return Response::Error(RESP_ERR_UNSPEC); // no backing attached
        }
        let mut image = lock(&res.image);
        if !rect.fits_in(image.width, image.height) {
            return Response::Error(RESP_ERR_INVALID_PARAMETER);
        }
        let stride = image.stride() as u64;
        let row_bytes = rect.width as usize * 4;
        // Row r of the rectangle is at `offset + r * stride` in the backing (as QEMU and
        // the Linux driver have it: the offset points at the rectangle's first pixel).
        let last_row_end = offset
            .checked_add(stride * u64::from(rect.height.saturating_sub(1)))
            .and_then(|v| v.checked_add(row_bytes as u64));
        if last_row_end.is_none_or(|end| end > res.backing_bytes()) {
            return Response::Error(RESP_ERR_INVALID_PARAMETER);
        }
        let whole = offset == 0 && rect.x == 0 && rect.width == image.width;
        let ok = if whole {
            // The rows are contiguous on both sides: one copy.
            let start = rect.y as usize * stride as usize;
            let end = start + rect.height as usize * stride as usize;
            let dst = &mut image.pixels[start..end];
            res.read_backing(mem, 0, dst)
        } else {
            let mut ok = true;
            for row in 0..rect.height {
                let src = offset + stride * u64::from(row);
                let dst_at = (rect.y + row) as usize * stride as usize + rect.x as usize * 4;
                let dst = &mut image.pixels[dst_at..dst_at + row_bytes];
                if !res.read_backing(mem, src, dst) {
                    ok = false;
                    break;
                }
            }
            ok
        };
        if ok { Response::NoData } else { Response::Error(RESP_ERR_INVALID_PARAMETER) }
    }

    /// UPDATE_CURSOR / MOVE_CURSOR (§5.7.6.10); the cursor queue sends no responses.
    fn cursor(&mut self, kind: u32, b: &[u8]) {
        let (scanout, x, y) = (le32(b, 0), le32(b, 4) as i32, le32(b, 8) as i32);
        if scanout >= NUM_SCANOUTS {
            self.warn("a cursor command for a scanout that does not exist");
            return;
        }
        if kind == CMD_UPDATE_CURSOR {
            let (id, hot_x, hot_y) = (le32(b, 16), le32(b, 20), le32(b, 24));
            let image = if id == 0 {
                None
            } else {
                let Some(res) = self.resources.get(&id) else {
                    self.warn("a cursor from a resource that does not exist");
                    return;
                };
                let image = lock(&res.image);
                if image.width > MAX_CURSOR || image.height > MAX_CURSOR {
                    drop(image);
                    self.warn("a cursor image larger than 256x256");
                    return;
                }
                let rgba =
                    image.pixels.chunks_exact(4).flat_map(|px| image.format.to_rgba(px)).collect();
                Some(CursorImage {
                    width: image.width,
                    height: image.height,
                    rgba,
                    hot_x: hot_x.min(image.width.saturating_sub(1)),
                    hot_y: hot_y.min(image.height.saturating_sub(1)),
                })
            };
            self.display.set_cursor_image(image);
        }
        self.display.move_cursor(x, y);
    }

    fn write_response(
        &mut self,
        writer: &mut Writer<'_, ()>,
        response: Response,
        hdr: &[u8; HDR_BYTES],
    ) -> usize {
        let (kind, body): (u32, Vec<u8>) = match response {
            Response::NoData => (RESP_OK_NODATA, Vec::new()),
            Response::Error(code) => (code, Vec::new()),
            Response::DisplayInfo((w, h)) => {
                let mut body = vec![0u8; MAX_SCANOUTS * 24];
                // pmodes[0]: rect (0, 0, w, h), enabled
                body[8..12].copy_from_slice(&w.to_le_bytes());
                body[12..16].copy_from_slice(&h.to_le_bytes());
                body[16..20].copy_from_slice(&1u32.to_le_bytes());
                (RESP_OK_DISPLAY_INFO, body)
            }
            Response::Edid(edid) => {
                let mut body = vec![0u8; 8 + 1024];
                body[0..4].copy_from_slice(&(edid.len() as u32).to_le_bytes());
                body[8..8 + edid.len()].copy_from_slice(&edid[..]);
                (RESP_OK_EDID, body)
            }
        };
        let mut out = [0u8; HDR_BYTES];
        out[0..4].copy_from_slice(&kind.to_le_bytes());
        if le32(hdr, 4) & FLAG_FENCE != 0 {
            // Requests run to completion here, so the fence is signalled with the answer:
            // flags, fence_id, ctx_id and ring_idx go back as they came (§5.7.6.7).
            out[4..4 + 4].copy_from_slice(&FLAG_FENCE.to_le_bytes());
            out[8..HDR_BYTES].copy_from_slice(&hdr[8..HDR_BYTES]);
        }
        let total = HDR_BYTES + body.len();
        if writer.available_bytes() < total {
            self.warn("a response buffer too small for the answer");
            return 0;
        }
        if writer.write_all(&out).is_err() || writer.write_all(&body).is_err() {
            self.warn("a response buffer outside guest memory");
            return 0;
        }
        total
    }

    fn control(&mut self, queue: &mut Queue, mem: &GuestMem) -> bool {
        let mut used = false;
        while let Some(chain) = queue.pop_descriptor_chain(mem) {
            let head = chain.head_index();
            let len = match (Reader::new(mem, chain.clone()), Writer::new(mem, chain)) {
                (Ok(mut reader), Ok(mut writer)) => self.request(&mut reader, &mut writer, mem),
                _ => {
                    self.warn("a malformed descriptor chain");
                    0
                }
            };
            if queue.add_used(mem, head, len as u32).is_err() {
                self.warn("cannot update the used ring");
                break;
            }
            used = true;
        }
        used
    }

    fn request(
        &mut self,
        reader: &mut Reader<'_, ()>,
        writer: &mut Writer<'_, ()>,
        mem: &GuestMem,
    ) -> usize {
        let available = reader.available_bytes();
        let mut hdr = [0u8; HDR_BYTES];
        if available < HDR_BYTES || reader.read_exact(&mut hdr).is_err() {
            self.warn("a request shorter than its header");
            return self.write_response(writer, Response::Error(RESP_ERR_UNSPEC), &[0; HDR_BYTES]);
        }
        let kind = le32(&hdr, 0);
        let Some(body_len) = Self::body_len(kind) else {
            self.warn("an unknown command");
            return self.write_response(writer, Response::Error(RESP_ERR_UNSPEC), &hdr);
        };
        // ATTACH_BACKING's entries follow its fixed part; they are bounded.
        let want = if kind == CMD_RESOURCE_ATTACH_BACKING {
            (available - HDR_BYTES).min(MAX_REQUEST_BYTES - HDR_BYTES)
        } else {
            body_len
        };
        if available - HDR_BYTES < body_len {
            self.warn("a request shorter than its command");
            return self.write_response(writer, Response::Error(RESP_ERR_INVALID_PARAMETER), &hdr);
        }
        let mut req = vec![0u8; HDR_BYTES + want];
        req[..HDR_BYTES].copy_from_slice(&hdr);
        if reader.read_exact(&mut req[HDR_BYTES..]).is_err() {
            self.warn("a request outside guest memory");
            return self.write_response(writer, Response::Error(RESP_ERR_UNSPEC), &hdr);
        }
        let response = if kind == CMD_UPDATE_CURSOR || kind == CMD_MOVE_CURSOR {
            // Cursor commands on the control queue: not where they belong (§5.7.6.10).
            Response::Error(RESP_ERR_UNSPEC)
        } else {
            self.execute(kind, &req, mem)
        };
        if let Response::Error(code) = response {
            let what = format!("command {kind:#x} failed with {code:#x}");
            self.warn(&what);
        }
        self.write_response(writer, response, &hdr)
    }

    fn cursor_queue(&mut self, queue: &mut Queue, mem: &GuestMem) -> bool {
        let mut used = false;
        while let Some(chain) = queue.pop_descriptor_chain(mem) {
            let head = chain.head_index();
            let mut req = [0u8; HDR_BYTES + 32];
            let read = Reader::new(mem, chain).is_ok_and(|mut r| r.read_exact(&mut req).is_ok());
            let kind = le32(&req, 0);
            if !read {
                self.warn("a cursor request shorter than struct virtio_gpu_update_cursor");
            } else if kind == CMD_UPDATE_CURSOR || kind == CMD_MOVE_CURSOR {
                self.cursor(kind, &req[HDR_BYTES..]);
            } else {
                self.warn("a command on the cursor queue that is not a cursor command");
            }
            if queue.add_used(mem, head, 0).is_err() {
                self.warn("cannot update the used ring");
                break;
            }
            used = true;
        }
        used
    }

    fn config_bytes(&self) -> [u8; 16] {
        let mut c = [0u8; 16];
        c[0..4].copy_from_slice(&self.events_read.to_le_bytes());
        c[8..12].copy_from_slice(&NUM_SCANOUTS.to_le_bytes());
        c
    }
}

impl Drop for Gpu {
    /// A machine that stops or reboots takes its GPU's picture and cursor with it.
    fn drop(&mut self) {
        self.display.set_scanout(None);
        self.display.set_cursor_image(None);
    }
}

impl VirtioDevice for Gpu {
    fn device_type(&self) -> u32 {
        TYPE_GPU
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        F_EDID
    }

    fn pci_class(&self) -> u32 {
        0x03_80_00 // display controller, other (as QEMU's virtio-gpu-pci)
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config_bytes(), offset, data);
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        // events_clear (offset 4) is the only writable field: its bits clear events_read.
        if offset == 4 && data.len() == 4 {
            self.events_read &= !le32(data, 0);
        }
    }

    fn reset(&mut self) {
        self.resources.clear();
        self.resource_bytes = 0;
        self.scanout = None;
        self.display.set_scanout(None);
        self.display.set_cursor_image(None);
        self.events_read = 0;
    }

    fn process_queue(&mut self, index: usize, queues: &mut [Queue], mem: &GuestMem) -> u64 {
        let Some(queue) = queues.get_mut(index) else { return 0 };
        let used = match index {
            CONTROLQ => self.control(queue, mem),
            CURSORQ => self.cursor_queue(queue, mem),
            _ => false,
        };
        u64::from(used) << index
    }

    /// A driver sends a transfer and its flush back to back; catching the second by
    /// polling saves a thread wake-up per frame.
    fn poll_window(&self) -> std::time::Duration {
        std::time::Duration::from_micros(50)
    }

    fn backend_fd(&self) -> Option<RawFd> {
        Some(self.display.resize_fd().as_raw_fd())
    }

    /// The host asked for another size: offer it as the mode and raise the display event
    /// (§5.7.4), which makes the driver fetch the display info again.
    fn process_backend(&mut self, _queues: &mut [Queue], _mem: &GuestMem) -> u64 {
        let _ = self.display.resize_fd().read();
        match self.display.requested_size() {
            Some(size) if size != self.mode => {
                self.mode = size;
                self.events_read |= EVENT_DISPLAY;
                CONFIG_CHANGED
            }
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vstate::memory::create_guest_memory;

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
        assert_eq!(
            kind(&d.command(&mut g, &req(CMD_GET_EDID, &[1, 0]))),
            RESP_ERR_INVALID_SCANOUT_ID
        );
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
        assert_eq!(g.resource_bytes, 0);
    }

    fn check(d: &mut Driver, g: &mut Gpu, r: Vec<u8>, expected: u32) {
        assert_eq!(kind(&d.command(g, &r)), expected, "request {:x?}", &r[..r.len().min(4)]);
    }

    #[test]
    fn hostile_requests_get_error_responses() {
        let (mut g, display) = gpu();
        let mut d = Driver::new();
        check(
            &mut d,
            &mut g,
            req(CMD_RESOURCE_CREATE_2D, &[0, 2, 8, 8]),
            RESP_ERR_INVALID_RESOURCE_ID,
        );
        check(
            &mut d,
            &mut g,
            req(CMD_RESOURCE_CREATE_2D, &[1, 99, 8, 8]),
            RESP_ERR_INVALID_PARAMETER,
        );
        check(
            &mut d,
            &mut g,
            req(CMD_RESOURCE_CREATE_2D, &[1, 2, 0, 8]),
            RESP_ERR_INVALID_PARAMETER,
        );
        check(
            &mut d,
            &mut g,
            req(CMD_RESOURCE_CREATE_2D, &[1, 2, u32::MAX, u32::MAX]),
            RESP_ERR_OUT_OF_MEMORY,
        );
        check(&mut d, &mut g, req(CMD_RESOURCE_CREATE_2D, &[1, 2, 8, 8]), RESP_OK_NODATA);
        check(
            &mut d,
            &mut g,
            req(CMD_RESOURCE_CREATE_2D, &[1, 2, 8, 8]),
            RESP_ERR_INVALID_RESOURCE_ID,
        );
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
        check(
            &mut d,
            &mut g,
            req(CMD_TRANSFER_TO_HOST_2D, &[0, 0, 8, 8, 0, 0, 1, 0]),
            RESP_ERR_UNSPEC,
        );
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
        check(
            &mut d,
            &mut g,
            req(CMD_RESOURCE_FLUSH, &[0, 0, 9, 1, 1, 0]),
            RESP_ERR_INVALID_PARAMETER,
        );
        check(
            &mut d,
            &mut g,
            req(CMD_RESOURCE_FLUSH, &[0, 0, 1, 1, 9, 0]),
            RESP_ERR_INVALID_RESOURCE_ID,
        );
        check(
            &mut d,
            &mut g,
            req(CMD_SET_SCANOUT, &[0, 0, 8, 8, 1, 1]),
            RESP_ERR_INVALID_SCANOUT_ID,
        );
        check(
            &mut d,
            &mut g,
            req(CMD_SET_SCANOUT, &[0, 0, 8, 8, 0, 9]),
            RESP_ERR_INVALID_RESOURCE_ID,
        );
        check(
            &mut d,
            &mut g,
            req(CMD_SET_SCANOUT, &[1, 0, 8, 8, 0, 1]),
            RESP_ERR_INVALID_PARAMETER,
        );
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
        check(
            &mut d,
            &mut g,
            req(CMD_SET_SCANOUT, &[0, 0, 0, 0, 0, 1]),
            RESP_ERR_INVALID_PARAMETER,
        );
        assert_eq!(display.size(), None, "no bad request made it to the display");
        check(&mut d, &mut g, req(CMD_RESOURCE_UNREF, &[9, 0]), RESP_ERR_INVALID_RESOURCE_ID);
        check(
            &mut d,
            &mut g,
            req(CMD_RESOURCE_DETACH_BACKING, &[9, 0]),
            RESP_ERR_INVALID_RESOURCE_ID,
        );
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
        let mut small =
            Gpu::new(Display::new().unwrap(), GpuConfig { limits, ..Default::default() });
        check(
            &mut d,
            &mut small,
            req(CMD_RESOURCE_CREATE_2D, &[1, 2, 513, 512]),
            RESP_ERR_OUT_OF_MEMORY,
        );
        check(&mut d, &mut small, req(CMD_RESOURCE_CREATE_2D, &[1, 2, 256, 256]), RESP_OK_NODATA);
        check(&mut d, &mut small, req(CMD_RESOURCE_CREATE_2D, &[2, 2, 256, 256]), RESP_OK_NODATA);
        check(
            &mut d,
            &mut small,
            req(CMD_RESOURCE_CREATE_2D, &[3, 2, 1, 1]),
            RESP_ERR_OUT_OF_MEMORY,
        );
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
}
