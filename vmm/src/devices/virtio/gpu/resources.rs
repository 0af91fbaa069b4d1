//! The GPU's resources: host images the guest creates, each with the scatter list of guest
//! memory it fills them from (TRANSFER_TO_HOST_2D), bounded by the machine's limits.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use vm_memory::{Bytes, GuestAddress, GuestMemory};

use super::protocol::*;
use crate::display::{Image, Rect, SharedImage};
use crate::sync::lock;
use crate::vstate::memory::GuestMem;

/// Backing entries one resource may have.
pub const MAX_BACKING_ENTRIES: u32 = 1 << 16;

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

/// Why a resource operation failed, as the response code the driver gets.
pub type Refusal = u32;

pub struct Resource {
    pub image: SharedImage,
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

    /// The image's width and height.
    pub fn size(&self) -> (u32, u32) {
        let image = lock(&self.image);
        (image.width, image.height)
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

/// A resource as saved: its image (size, format, pixels as the guest last transferred
/// them) and its backing's scatter list.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SavedResource {
    pub id: u32,
    pub width: u32,
    pub height: u32,
    /// The virtio-gpu format code.
    pub format: u32,
    pub backing: Vec<(u64, u32)>,
    pub pixels: Vec<u8>,
}

/// Every resource of the device, and the bytes they hold.
pub struct Resources {
    limits: GpuLimits,
    map: BTreeMap<u32, Resource>,
    bytes: u64,
}

impl Resources {
    pub fn new(limits: GpuLimits) -> Self {
        Resources { limits, map: BTreeMap::new(), bytes: 0 }
    }

    pub fn get(&self, id: u32) -> Result<&Resource, Refusal> {
        self.map.get(&id).ok_or(RESP_ERR_INVALID_RESOURCE_ID)
    }

    /// Host bytes the resources hold.
    #[cfg(test)]
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Every resource as saved, by id.
    pub fn save(&self) -> Vec<SavedResource> {
        (self.map.iter())
            .map(|(&id, res)| {
                let image = lock(&res.image);
                SavedResource {
                    id,
                    width: image.width,
                    height: image.height,
                    format: format_code(image.format),
                    backing: res.backing.clone(),
                    pixels: image.pixels.to_vec(),
                }
            })
            .collect()
    }

    /// Makes the saved resources again in place of these, as their guest's requests made
    /// them: within the machine's limits, each backing entry inside guest memory, each
    /// image's pixels of its size. Nothing changes if one is refused.
    pub fn restore(&mut self, saved: &[SavedResource], mem: &GuestMem) -> Result<(), String> {
        let mut fresh = Resources::new(self.limits);
        for s in saved {
            let create = ResourceCreate2d {
                resource_id: s.id.into(),
                format: s.format.into(),
                width: s.width.into(),
                height: s.height.into(),
            };
            fresh
                .create(&create)
                .map_err(|code| format!("resource {}: refused ({code:#x})", s.id))?;
            if s.backing.len() > MAX_BACKING_ENTRIES as usize {
                return Err(format!("resource {}: {} backing entries", s.id, s.backing.len()));
            }
            let mut starts = Vec::with_capacity(s.backing.len());
            let mut total = 0u64;
            for &(addr, len) in &s.backing {
                let inside = len > 0
                    && addr.checked_add(u64::from(len)).is_some()
                    && mem.check_range(
                        GuestAddress(addr),
                        len as usize,
                        vm_memory::Permissions::Read,
                    );
                if !inside {
                    return Err(format!("resource {}: backing outside guest memory", s.id));
                }
                starts.push(total);
                total += u64::from(len);
            }
            let res = fresh.map.get_mut(&s.id).expect("created above");
            let mut image = lock(&res.image);
            if s.pixels.len() != image.pixels.len() {
                return Err(format!(
                    "resource {}: {} bytes of pixels for a {}x{} image",
                    s.id,
                    s.pixels.len(),
                    s.width,
                    s.height
                ));
            }
            image.pixels.copy_from_slice(&s.pixels);
            drop(image);
            res.backing = s.backing.clone();
            res.backing_starts = starts;
        }
        *self = fresh;
        Ok(())
    }

    /// Drops every resource (a device reset).
    pub fn clear(&mut self) {
        self.map.clear();
        self.bytes = 0;
    }

    /// RESOURCE_CREATE_2D: a new image, within the limits on count and bytes.
    pub fn create(&mut self, c: &ResourceCreate2d) -> Result<(), Refusal> {
        let (id, width, height) =
            (u32::from(c.resource_id), u32::from(c.width), u32::from(c.height));
        if id == 0 || self.map.contains_key(&id) {
            return Err(RESP_ERR_INVALID_RESOURCE_ID);
        }
        let format = pixel_format(c.format.into()).ok_or(RESP_ERR_INVALID_PARAMETER)?;
        if width == 0 || height == 0 {
            return Err(RESP_ERR_INVALID_PARAMETER);
        }
        let bytes = u64::from(width)
            .checked_mul(u64::from(height))
            .and_then(|p| p.checked_mul(4))
            .ok_or(RESP_ERR_OUT_OF_MEMORY)?;
        if self.map.len() >= self.limits.max_resources as usize
            || self.bytes.saturating_add(bytes) > self.limits.max_resource_bytes
        {
            return Err(RESP_ERR_OUT_OF_MEMORY);
        }
        let image = Image::new(width, height, format).ok_or(RESP_ERR_OUT_OF_MEMORY)?;
        self.bytes += bytes;
        let image = Arc::new(Mutex::new(image));
        self.map.insert(id, Resource { image, backing: Vec::new(), backing_starts: Vec::new() });
        Ok(())
    }

    /// RESOURCE_UNREF.
    pub fn unref(&mut self, id: u32) -> Result<(), Refusal> {
        let res = self.map.remove(&id).ok_or(RESP_ERR_INVALID_RESOURCE_ID)?;
        let (w, h) = res.size();
        self.bytes -= u64::from(w) * u64::from(h) * 4;
        Ok(())
    }

    /// RESOURCE_ATTACH_BACKING: `entries` (the bytes after the fixed part) name guest
    /// memory, every byte of which must exist.
    pub fn attach(
        &mut self,
        a: &AttachBacking,
        entries: &[u8],
        mem: &GuestMem,
    ) -> Result<(), Refusal> {
        let (id, count) = (u32::from(a.resource_id), u32::from(a.nr_entries));
        let size = std::mem::size_of::<MemEntry>();
        if count == 0 || count > MAX_BACKING_ENTRIES || entries.len() < count as usize * size {
            return Err(RESP_ERR_INVALID_PARAMETER);
        }
        if !self.get(id)?.backing.is_empty() {
            return Err(RESP_ERR_UNSPEC); // already attached
        }
        let mut backing = Vec::with_capacity(count as usize);
        let mut starts = Vec::with_capacity(count as usize);
        let mut total = 0u64;
        for raw in entries.chunks_exact(size).take(count as usize) {
            let entry: MemEntry = read(raw).ok_or(RESP_ERR_INVALID_PARAMETER)?;
            let (addr, len) = (u64::from(entry.addr), u32::from(entry.length));
            let inside = len > 0
                && addr.checked_add(u64::from(len)).is_some()
                && mem.check_range(GuestAddress(addr), len as usize, vm_memory::Permissions::Read);
            if !inside {
                return Err(RESP_ERR_INVALID_PARAMETER);
            }
            starts.push(total);
            backing.push((addr, len));
            total += u64::from(len);
        }
        let res = self.map.get_mut(&id).expect("looked up above");
        res.backing = backing;
        res.backing_starts = starts;
        Ok(())
    }

    /// RESOURCE_DETACH_BACKING.
    pub fn detach(&mut self, id: u32) -> Result<(), Refusal> {
        let res = self.map.get_mut(&id).ok_or(RESP_ERR_INVALID_RESOURCE_ID)?;
        res.backing.clear();
        res.backing_starts.clear();
        Ok(())
    }

    /// TRANSFER_TO_HOST_2D: `rect` of the image from its backing, row r of the rectangle
    /// at `offset + r * stride` (as QEMU and the Linux driver have it: the offset points
    /// at the rectangle's first pixel).
    pub fn transfer(
        &mut self,
        id: u32,
        rect: Rect,
        offset: u64,
        mem: &GuestMem,
    ) -> Result<(), Refusal> {
        let res = self.get(id)?;
        if res.backing.is_empty() {
            return Err(RESP_ERR_UNSPEC); // no backing attached
        }
        let mut image = lock(&res.image);
        if !rect.fits_in(image.width, image.height) {
            return Err(RESP_ERR_INVALID_PARAMETER);
        }
        let stride = image.stride() as u64;
        let row_bytes = rect.width as usize * 4;
        let last_row_end = offset
            .checked_add(stride * u64::from(rect.height.saturating_sub(1)))
            .and_then(|v| v.checked_add(row_bytes as u64));
        if last_row_end.is_none_or(|end| end > res.backing_bytes()) {
            return Err(RESP_ERR_INVALID_PARAMETER);
        }
        let whole = offset == 0 && rect.x == 0 && rect.width == image.width;
        let ok = if whole {
            // The rows are contiguous on both sides: one copy.
            let start = rect.y as usize * stride as usize;
            let end = start + rect.height as usize * stride as usize;
            res.read_backing(mem, 0, &mut image.pixels[start..end])
        } else {
            (0..rect.height).all(|row| {
                let src = offset + stride * u64::from(row);
                let dst_at = (rect.y + row) as usize * stride as usize + rect.x as usize * 4;
                res.read_backing(mem, src, &mut image.pixels[dst_at..dst_at + row_bytes])
            })
        };
        if ok { Ok(()) } else { Err(RESP_ERR_INVALID_PARAMETER) }
    }
}
