//! The virtio-gpu wire format (virtio 1.2 §5.7.6): command and response codes and the
//! `#[repr(C)]` structures the driver and device exchange, read and written whole
//! (`ByteValued`, little-endian fields) rather than by byte offset. After crosvm's
//! `devices/src/virtio/gpu/protocol.rs`.

use std::mem::size_of;

use vm_memory::ByteValued;
use vm_memory::endian::{Le32, Le64};

use crate::display::{PixelFormat, Rect};

pub const CMD_GET_DISPLAY_INFO: u32 = 0x0100;
pub const CMD_RESOURCE_CREATE_2D: u32 = 0x0101;
pub const CMD_RESOURCE_UNREF: u32 = 0x0102;
pub const CMD_SET_SCANOUT: u32 = 0x0103;
pub const CMD_RESOURCE_FLUSH: u32 = 0x0104;
pub const CMD_TRANSFER_TO_HOST_2D: u32 = 0x0105;
pub const CMD_RESOURCE_ATTACH_BACKING: u32 = 0x0106;
pub const CMD_RESOURCE_DETACH_BACKING: u32 = 0x0107;
pub const CMD_GET_EDID: u32 = 0x010a;
pub const CMD_UPDATE_CURSOR: u32 = 0x0300;
pub const CMD_MOVE_CURSOR: u32 = 0x0301;

pub const RESP_OK_NODATA: u32 = 0x1100;
pub const RESP_OK_DISPLAY_INFO: u32 = 0x1101;
pub const RESP_OK_EDID: u32 = 0x1104;
pub const RESP_ERR_UNSPEC: u32 = 0x1200;
pub const RESP_ERR_OUT_OF_MEMORY: u32 = 0x1201;
pub const RESP_ERR_INVALID_SCANOUT_ID: u32 = 0x1202;
pub const RESP_ERR_INVALID_RESOURCE_ID: u32 = 0x1203;
pub const RESP_ERR_INVALID_PARAMETER: u32 = 0x1205;

/// `virtio_gpu_ctrl_hdr.flags`: the driver wants a fence signalled (§5.7.6.7).
pub const FLAG_FENCE: u32 = 1;

/// Scanouts a display-info response describes (VIRTIO_GPU_MAX_SCANOUTS).
pub const MAX_SCANOUTS: usize = 16;

/// struct virtio_gpu_ctrl_hdr
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct CtrlHdr {
    pub type_: Le32,
    pub flags: Le32,
    pub fence_id: Le64,
    pub ctx_id: Le32,
    pub ring_idx: u8,
    pub padding: [u8; 3],
}
// SAFETY: plain integers in a #[repr(C)] struct without implicit padding (24 bytes).
unsafe impl ByteValued for CtrlHdr {}

/// struct virtio_gpu_rect
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct GpuRect {
    pub x: Le32,
    pub y: Le32,
    pub width: Le32,
    pub height: Le32,
}
// SAFETY: plain integers, #[repr(C)], no padding.
unsafe impl ByteValued for GpuRect {}

impl GpuRect {
    pub fn rect(&self) -> Rect {
        Rect::new(self.x.into(), self.y.into(), self.width.into(), self.height.into())
    }
}

/// struct virtio_gpu_resource_create_2d
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct ResourceCreate2d {
    pub resource_id: Le32,
    pub format: Le32,
    pub width: Le32,
    pub height: Le32,
}
// SAFETY: plain integers, #[repr(C)], no padding.
unsafe impl ByteValued for ResourceCreate2d {}

/// struct virtio_gpu_resource_unref, virtio_gpu_resource_detach_backing (the same layout)
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct ResourceId {
    pub resource_id: Le32,
    pub padding: Le32,
}
// SAFETY: plain integers, #[repr(C)], no padding.
unsafe impl ByteValued for ResourceId {}

/// struct virtio_gpu_set_scanout
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct SetScanout {
    pub r: GpuRect,
    pub scanout_id: Le32,
    pub resource_id: Le32,
}
// SAFETY: plain integers, #[repr(C)], no padding.
unsafe impl ByteValued for SetScanout {}

/// struct virtio_gpu_resource_flush
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct ResourceFlush {
    pub r: GpuRect,
    pub resource_id: Le32,
    pub padding: Le32,
}
// SAFETY: plain integers, #[repr(C)], no padding.
unsafe impl ByteValued for ResourceFlush {}

/// struct virtio_gpu_transfer_to_host_2d
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct TransferToHost2d {
    pub r: GpuRect,
    pub offset: Le64,
    pub resource_id: Le32,
    pub padding: Le32,
}
// SAFETY: plain integers, #[repr(C)], no padding (the u64 sits at offset 16).
unsafe impl ByteValued for TransferToHost2d {}

/// struct virtio_gpu_resource_attach_backing; `nr_entries` `MemEntry`s follow it.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct AttachBacking {
    pub resource_id: Le32,
    pub nr_entries: Le32,
}
// SAFETY: plain integers, #[repr(C)], no padding.
unsafe impl ByteValued for AttachBacking {}

/// struct virtio_gpu_mem_entry
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct MemEntry {
    pub addr: Le64,
    pub length: Le32,
    pub padding: Le32,
}
// SAFETY: plain integers, #[repr(C)], no padding.
unsafe impl ByteValued for MemEntry {}

/// struct virtio_gpu_get_edid
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct GetEdid {
    pub scanout: Le32,
    pub padding: Le32,
}
// SAFETY: plain integers, #[repr(C)], no padding.
unsafe impl ByteValued for GetEdid {}

/// struct virtio_gpu_cursor_pos
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct CursorPos {
    pub scanout_id: Le32,
    pub x: Le32,
    pub y: Le32,
    pub padding: Le32,
}
// SAFETY: plain integers, #[repr(C)], no padding.
unsafe impl ByteValued for CursorPos {}

/// struct virtio_gpu_update_cursor (also MOVE_CURSOR's body)
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct UpdateCursor {
    pub pos: CursorPos,
    pub resource_id: Le32,
    pub hot_x: Le32,
    pub hot_y: Le32,
    pub padding: Le32,
}
// SAFETY: plain integers, #[repr(C)], no padding.
unsafe impl ByteValued for UpdateCursor {}

/// struct virtio_gpu_display_one
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct DisplayOne {
    pub r: GpuRect,
    pub enabled: Le32,
    pub flags: Le32,
}
// SAFETY: plain integers, #[repr(C)], no padding.
unsafe impl ByteValued for DisplayOne {}

/// struct virtio_gpu_resp_display_info (after its header)
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct DisplayInfo {
    pub pmodes: [DisplayOne; MAX_SCANOUTS],
}
// SAFETY: an array of ByteValued structs, #[repr(C)], no padding.
unsafe impl ByteValued for DisplayInfo {}

/// struct virtio_gpu_resp_edid (after its header)
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct EdidBlob {
    pub size: Le32,
    pub padding: Le32,
    pub edid: [u8; 1024],
}
// SAFETY: plain integers and bytes, #[repr(C)], no padding.
unsafe impl ByteValued for EdidBlob {}

/// A control request, decoded.
#[derive(Clone, Debug)]
pub enum Request {
    GetDisplayInfo,
    GetEdid(GetEdid),
    ResourceCreate2d(ResourceCreate2d),
    ResourceUnref(ResourceId),
    SetScanout(SetScanout),
    ResourceFlush(ResourceFlush),
    TransferToHost2d(TransferToHost2d),
    /// The fixed part, and the bytes after it (the entries, bounded by the caller).
    AttachBacking(AttachBacking, Vec<u8>),
    DetachBacking(ResourceId),
    UpdateCursor(UpdateCursor),
    MoveCursor(UpdateCursor),
}

/// `T` from the start of `bytes`, if there are enough (any alignment).
pub fn read<T: ByteValued + Default>(bytes: &[u8]) -> Option<T> {
    let mut value = T::default();
    value.as_mut_slice().copy_from_slice(bytes.get(..size_of::<T>())?);
    Some(value)
}

impl Request {
    /// Size of the fixed body a command of type `kind` carries after its header; None
    /// for a command this device does not know.
    pub fn body_len(kind: u32) -> Option<usize> {
        Some(match kind {
            CMD_GET_DISPLAY_INFO => 0,
            CMD_GET_EDID => size_of::<GetEdid>(),
            CMD_RESOURCE_CREATE_2D => size_of::<ResourceCreate2d>(),
            CMD_RESOURCE_UNREF | CMD_RESOURCE_DETACH_BACKING => size_of::<ResourceId>(),
            CMD_SET_SCANOUT => size_of::<SetScanout>(),
            CMD_RESOURCE_FLUSH => size_of::<ResourceFlush>(),
            CMD_TRANSFER_TO_HOST_2D => size_of::<TransferToHost2d>(),
            CMD_RESOURCE_ATTACH_BACKING => size_of::<AttachBacking>(),
            CMD_UPDATE_CURSOR | CMD_MOVE_CURSOR => size_of::<UpdateCursor>(),
            _ => return None,
        })
    }

    /// Decodes a command of type `kind` from `body` (the bytes after the header); None if
    /// the command is unknown or `body` is shorter than it.
    pub fn decode(kind: u32, body: &[u8]) -> Option<Request> {
        Some(match kind {
            CMD_GET_DISPLAY_INFO => Request::GetDisplayInfo,
            CMD_GET_EDID => Request::GetEdid(read(body)?),
            CMD_RESOURCE_CREATE_2D => Request::ResourceCreate2d(read(body)?),
            CMD_RESOURCE_UNREF => Request::ResourceUnref(read(body)?),
            CMD_RESOURCE_DETACH_BACKING => Request::DetachBacking(read(body)?),
            CMD_SET_SCANOUT => Request::SetScanout(read(body)?),
            CMD_RESOURCE_FLUSH => Request::ResourceFlush(read(body)?),
            CMD_TRANSFER_TO_HOST_2D => Request::TransferToHost2d(read(body)?),
            CMD_RESOURCE_ATTACH_BACKING => {
                let fixed = read(body)?;
                Request::AttachBacking(fixed, body[size_of::<AttachBacking>()..].to_vec())
            }
            CMD_UPDATE_CURSOR => Request::UpdateCursor(read(body)?),
            CMD_MOVE_CURSOR => Request::MoveCursor(read(body)?),
            _ => return None,
        })
    }
}

/// The pixel format a virtio-gpu format code names (enum virtio_gpu_formats).
pub fn pixel_format(format: u32) -> Option<PixelFormat> {
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

/// The virtio-gpu format code of `format` (`pixel_format`'s inverse).
pub fn format_code(format: PixelFormat) -> u32 {
    match format {
        PixelFormat::Bgra => 1,
        PixelFormat::Bgrx => 2,
        PixelFormat::Argb => 3,
        PixelFormat::Xrgb => 4,
        PixelFormat::Rgba => 67,
        PixelFormat::Xbgr => 68,
        PixelFormat::Abgr => 121,
        PixelFormat::Rgbx => 134,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_structures_have_the_specs_sizes() {
        // virtio 1.2 §5.7.6.7 and following.
        assert_eq!(size_of::<CtrlHdr>(), 24);
        assert_eq!(size_of::<GpuRect>(), 16);
        assert_eq!(size_of::<ResourceCreate2d>(), 16);
        assert_eq!(size_of::<SetScanout>(), 24);
        assert_eq!(size_of::<ResourceFlush>(), 24);
        assert_eq!(size_of::<TransferToHost2d>(), 32);
        assert_eq!(size_of::<AttachBacking>(), 8);
        assert_eq!(size_of::<MemEntry>(), 16);
        assert_eq!(size_of::<UpdateCursor>(), 32);
        assert_eq!(size_of::<DisplayInfo>(), MAX_SCANOUTS * 24);
        assert_eq!(size_of::<EdidBlob>(), 8 + 1024);
    }

    #[test]
    fn requests_decode_little_endian_fields_at_any_alignment() {
        let mut body = vec![0u8; 1 + 32];
        // A transfer at an odd address: x=1 y=2 w=3 h=4, offset 0x1_0000_0005, resource 9.
        for (i, v) in [1u32, 2, 3, 4].iter().enumerate() {
            body[1 + 4 * i..5 + 4 * i].copy_from_slice(&v.to_le_bytes());
        }
        body[17..25].copy_from_slice(&0x1_0000_0005u64.to_le_bytes());
        body[25..29].copy_from_slice(&9u32.to_le_bytes());
        let Some(Request::TransferToHost2d(t)) =
            Request::decode(CMD_TRANSFER_TO_HOST_2D, &body[1..])
        else {
            panic!("decoded");
        };
        assert_eq!(t.r.rect(), Rect::new(1, 2, 3, 4));
        assert_eq!((u64::from(t.offset), u32::from(t.resource_id)), (0x1_0000_0005, 9));
        assert!(Request::decode(CMD_TRANSFER_TO_HOST_2D, &body[1..20]).is_none(), "short");
        assert!(Request::decode(0x9999, &body).is_none(), "unknown");
    }
}
