//! virtio-gpu, 2D only (virtio 1.2 §5.7): one scanout, resources kept on the host and
//! filled from guest memory by TRANSFER_TO_HOST_2D, shown through the machine's `Display`
//! (the scanout's resource is shared with it, so a flush copies nothing), a cursor queue
//! whose image and hotspot reach the host, EDID, and the display event that makes the
//! guest re-read the display info when the host asks for another size.
//!
//! Every request is checked against the spec and the machine's limits (resource count and
//! bytes, backing entries, rectangles, guest addresses); a bad one gets the spec's error
//! response and a rate-limited log line.
//!
//! `protocol` has the wire format (typed `#[repr(C)]` structures), `resources` the host
//! images and their guest backing; this file the device: its queues, the commands'
//! effects on the display, the cursor and the configuration space.

mod protocol;
mod resources;
#[cfg(test)]
mod tests;

use std::io::{Read, Write};
use std::mem::size_of;
use std::os::fd::{AsRawFd, RawFd};

use virtio_queue::{Queue, QueueT, Reader, Writer};
use vm_memory::ByteValued;

use super::{CONFIG_CHANGED, TYPE_GPU, VirtioDevice, read_config_bytes};
use crate::devices::log_limit::{LogLimit, held_back};
use crate::display::{CursorImage, Display, Rect, edid};
use crate::sync::lock;
use crate::vstate::memory::{GuestMem, Marks};
use protocol::*;
pub use resources::GpuLimits;
use resources::{MAX_BACKING_ENTRIES, Refusal, Resources, SavedResource};

/// The GPU's own state: its resources (their pixels as the guest last transferred them),
/// what the scanout shows, the cursor, the mode offered, the events the driver read.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GpuState {
    pub resources: Vec<SavedResource>,
    pub scanout: Option<(u32, Rect)>,
    pub cursor: Option<CursorImage>,
    pub cursor_at: (i32, i32),
    pub mode: (u32, u32),
    pub events_read: u32,
}

const CONTROLQ: usize = 0;
const CURSORQ: usize = 1;
const QUEUE_SIZE: u16 = 256;

const F_EDID: u64 = 1 << 1;
const EVENT_DISPLAY: u32 = 1;
const NUM_SCANOUTS: u32 = 1;

/// The widest and tallest scanout shown (Linux's virtio-gpu driver's largest mode).
pub const MAX_SCANOUT: u32 = 8192;
/// Largest request read from the driver: a header, an ATTACH_BACKING and its entries.
const MAX_REQUEST_BYTES: usize = size_of::<CtrlHdr>()
    + size_of::<AttachBacking>()
    + MAX_BACKING_ENTRIES as usize * size_of::<MemEntry>();
/// Largest cursor image (Linux and Windows use 64x64).
const MAX_CURSOR: u32 = 256;

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

/// The response to one control request.
enum Response {
    NoData,
    Error(u32),
    DisplayInfo((u32, u32)),
    Edid(Box<[u8; 128]>),
}

impl From<Result<(), Refusal>> for Response {
    fn from(result: Result<(), Refusal>) -> Self {
        match result {
            Ok(()) => Response::NoData,
            Err(code) => Response::Error(code),
        }
    }
}

pub struct Gpu {
    display: Display,
    resources: Resources,
    /// The resource shown, if any, and the part of it shown.
    scanout: Option<(u32, Rect)>,
    /// The mode the display info offers (the host's requested size, or 1024x768).
    mode: (u32, u32),
    events_read: u32,
    warnings: LogLimit,
}

impl Gpu {
    pub fn new(display: Display, config: GpuConfig) -> Self {
        let mode = display.requested_size().unwrap_or(config.mode);
        Gpu {
            display,
            resources: Resources::new(config.limits),
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

    fn execute(&mut self, request: Request, mem: &GuestMem) -> Response {
        match request {
            Request::GetDisplayInfo => Response::DisplayInfo(self.mode),
            Request::GetEdid(e) => {
                if u32::from(e.scanout) >= NUM_SCANOUTS {
                    return Response::Error(RESP_ERR_INVALID_SCANOUT_ID);
                }
                Response::Edid(Box::new(edid::edid(self.mode.0, self.mode.1)))
            }
            Request::ResourceCreate2d(c) => self.resources.create(&c).into(),
            Request::ResourceUnref(r) => self.unref(r.resource_id.into()),
            Request::AttachBacking(a, entries) => self.resources.attach(&a, &entries, mem).into(),
            Request::DetachBacking(r) => self.resources.detach(r.resource_id.into()).into(),
            Request::SetScanout(s) => {
                self.set_scanout(s.r.rect(), s.scanout_id.into(), s.resource_id.into())
            }
            Request::TransferToHost2d(t) => {
                let id = t.resource_id.into();
                self.resources.transfer(id, t.r.rect(), t.offset.into(), mem).into()
            }
            Request::ResourceFlush(f) => self.flush(f.r.rect(), f.resource_id.into()).into(),
            // Cursor commands on the control queue: not where they belong (§5.7.6.10).
            Request::UpdateCursor(_) | Request::MoveCursor(_) => Response::Error(RESP_ERR_UNSPEC),
        }
    }

    fn unref(&mut self, id: u32) -> Response {
        if let Err(code) = self.resources.unref(id) {
            return Response::Error(code);
        }
        if self.scanout.is_some_and(|(shown, _)| shown == id) {
            // A scanout never shows a freed resource (as QEMU does).
            self.scanout = None;
            self.display.set_scanout(None);
        }
        Response::NoData
    }

    fn flush(&mut self, rect: Rect, id: u32) -> Result<(), Refusal> {
        let res = self.resources.get(id)?;
        let (w, h) = res.size();
        if !rect.fits_in(w, h) {
            return Err(RESP_ERR_INVALID_PARAMETER);
        }
        self.display.flushed(&res.image, rect);
        Ok(())
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
        let res = match self.resources.get(id) {
            Ok(res) => res,
            Err(code) => return Response::Error(code),
        };
        let (w, h) = res.size();
        // Larger than any mode the driver offers (Linux's virtio-gpu allows 8192x8192): a
        // screen no window could show, nor most GPUs hold as one texture.
        if rect.is_empty()
            || !rect.fits_in(w, h)
            || rect.width > MAX_SCANOUT
            || rect.height > MAX_SCANOUT
        {
            return Response::Error(RESP_ERR_INVALID_PARAMETER);
        }
        self.scanout = Some((id, rect));
        self.display.set_scanout(Some((res.image.clone(), rect)));
        Response::NoData
    }

    /// UPDATE_CURSOR / MOVE_CURSOR (§5.7.6.10); the cursor queue sends no responses.
    fn cursor(&mut self, update: bool, c: &UpdateCursor) {
        let (scanout, x, y) =
            (u32::from(c.pos.scanout_id), u32::from(c.pos.x) as i32, u32::from(c.pos.y) as i32);
        if scanout >= NUM_SCANOUTS {
            self.warn("a cursor command for a scanout that does not exist");
            return;
        }
        if update {
            let (id, hot_x, hot_y) =
                (u32::from(c.resource_id), u32::from(c.hot_x), u32::from(c.hot_y));
            let image = if id == 0 {
                None
            } else {
                let Ok(res) = self.resources.get(id) else {
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
        writer: &mut Writer<'_, Marks<'_>>,
        response: Response,
        request: &CtrlHdr,
    ) -> usize {
        let (kind, body): (u32, Vec<u8>) = match response {
            Response::NoData => (RESP_OK_NODATA, Vec::new()),
            Response::Error(code) => (code, Vec::new()),
            Response::DisplayInfo((w, h)) => {
                let mut info = DisplayInfo::default();
                info.pmodes[0] = DisplayOne {
                    r: GpuRect { x: 0.into(), y: 0.into(), width: w.into(), height: h.into() },
                    enabled: 1.into(),
                    flags: 0.into(),
                };
                (RESP_OK_DISPLAY_INFO, info.as_slice().to_vec())
            }
            Response::Edid(edid) => {
                let mut blob = EdidBlob {
                    size: (edid.len() as u32).into(),
                    padding: 0.into(),
                    edid: [0; 1024],
                };
                blob.edid[..edid.len()].copy_from_slice(&edid[..]);
                (RESP_OK_EDID, blob.as_slice().to_vec())
            }
        };
        let mut out = CtrlHdr { type_: kind.into(), ..CtrlHdr::default() };
        if u32::from(request.flags) & FLAG_FENCE != 0 {
            // Requests run to completion here, so the fence is signalled with the answer:
            // flags, fence_id, ctx_id and ring_idx go back as they came (§5.7.6.7).
            out = CtrlHdr { type_: kind.into(), flags: FLAG_FENCE.into(), ..*request };
        }
        let total = size_of::<CtrlHdr>() + body.len();
        if writer.available_bytes() < total {
            self.warn("a response buffer too small for the answer");
            return 0;
        }
        if writer.write_all(out.as_slice()).is_err() || writer.write_all(&body).is_err() {
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
        reader: &mut Reader<'_, Marks<'_>>,
        writer: &mut Writer<'_, Marks<'_>>,
        mem: &GuestMem,
    ) -> usize {
        let available = reader.available_bytes();
        let hdr_bytes = size_of::<CtrlHdr>();
        let mut hdr = CtrlHdr::default();
        if available < hdr_bytes || reader.read_exact(hdr.as_mut_slice()).is_err() {
            self.warn("a request shorter than its header");
            let none = CtrlHdr::default();
            return self.write_response(writer, Response::Error(RESP_ERR_UNSPEC), &none);
        }
        let kind = u32::from(hdr.type_);
        let Some(body_len) = Request::body_len(kind) else {
            self.warn("an unknown command");
            return self.write_response(writer, Response::Error(RESP_ERR_UNSPEC), &hdr);
        };
        if available - hdr_bytes < body_len {
            self.warn("a request shorter than its command");
            return self.write_response(writer, Response::Error(RESP_ERR_INVALID_PARAMETER), &hdr);
        }
        // ATTACH_BACKING's entries follow its fixed part; they are bounded.
        let want = if kind == CMD_RESOURCE_ATTACH_BACKING {
            (available - hdr_bytes).min(MAX_REQUEST_BYTES - hdr_bytes)
        } else {
            body_len
        };
        let mut body = vec![0u8; want];
        if reader.read_exact(&mut body).is_err() {
            self.warn("a request outside guest memory");
            return self.write_response(writer, Response::Error(RESP_ERR_UNSPEC), &hdr);
        }
        let response = match Request::decode(kind, &body) {
            Some(request) => self.execute(request, mem),
            None => Response::Error(RESP_ERR_UNSPEC),
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
            let mut hdr = CtrlHdr::default();
            let mut cursor = UpdateCursor::default();
            let read = Reader::new(mem, chain).is_ok_and(|mut r| {
                r.read_exact(hdr.as_mut_slice()).is_ok()
                    && r.read_exact(cursor.as_mut_slice()).is_ok()
            });
            match Request::decode(hdr.type_.into(), cursor.as_slice()) {
                _ if !read => {
                    self.warn("a cursor request shorter than struct virtio_gpu_update_cursor")
                }
                Some(Request::UpdateCursor(c)) => self.cursor(true, &c),
                Some(Request::MoveCursor(c)) => self.cursor(false, &c),
                _ => self.warn("a command on the cursor queue that is not a cursor command"),
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

    fn save_state(&self) -> Vec<u8> {
        let cursor = self.display.cursor();
        crate::persist::encode_part(&GpuState {
            resources: self.resources.save(),
            scanout: self.scanout,
            cursor: cursor.image.as_deref().cloned(),
            cursor_at: (cursor.x, cursor.y),
            mode: self.mode,
            events_read: self.events_read,
        })
    }

    /// The resources made again (checked as the guest's requests were), the scanout shown
    /// and the cursor put back on the display.
    fn restore_state(&mut self, state: &[u8], mem: &GuestMem) -> Result<(), String> {
        let state: GpuState = crate::persist::decode_part(state)?;
        let shown = match state.scanout {
            None => None,
            Some((id, rect)) => {
                let size = state.resources.iter().find(|r| r.id == id).map(|r| (r.width, r.height));
                let fits = size.is_some_and(|(w, h)| rect.fits_in(w, h))
                    && !rect.is_empty()
                    && rect.width <= MAX_SCANOUT
                    && rect.height <= MAX_SCANOUT;
                if !fits {
                    return Err(format!("a scanout of resource {id} it cannot show"));
                }
                Some((id, rect))
            }
        };
        if let Some(c) = &state.cursor
            && (c.width > MAX_CURSOR
                || c.height > MAX_CURSOR
                || c.rgba.len() != c.width as usize * c.height as usize * 4)
        {
            return Err(format!("a {}x{} cursor image", c.width, c.height));
        }
        self.resources.restore(&state.resources, mem)?;
        self.scanout = shown;
        let image =
            shown.and_then(|(id, rect)| Some((self.resources.get(id).ok()?.image.clone(), rect)));
        self.display.set_scanout(image);
        self.display.set_cursor_image(state.cursor);
        self.display.move_cursor(state.cursor_at.0, state.cursor_at.1);
        self.mode = state.mode;
        self.events_read = state.events_read;
        Ok(())
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
            self.events_read &= !u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
        }
    }

    fn reset(&mut self) {
        self.resources.clear();
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
