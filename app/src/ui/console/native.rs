//! The guest's frame straight into a texture of the window's renderer (wgpu or OpenGL),
//! in the guest's own byte order: B, G, R, X rows go into a BGRA texture, R, G, B, X rows
//! into an RGBA one. No thread converts pixels: the damaged rows are copied once, straight
//! from the frame (the VM process's memory, mapped), into staging memory the GPU copies
//! from (wgpu), or by the GL driver (which, given an unsized internal format, keeps the
//! texture in the pixels' own layout: Mesa's copy is then a memcpy).
//!
//! The byte a guest leaves unused (X) arrives as the texture's alpha. OpenGL reads alpha
//! as one (a texture swizzle); wgpu has no swizzle, so the screen is always drawn over
//! opaque black, where egui's premultiplied blending (colour + background x (1 - alpha))
//! shows the guest's colours whatever X holds.

use std::sync::Arc;

use eframe::egui_wgpu::{self, wgpu};
use eframe::glow::{self, HasContext};
use egui::TextureId;
use vmm::display::{Frame, PixelFormat};

/// A texture of the window's renderer that takes a guest's frames as they are.
pub struct NativeTexture {
    backend: Backend,
    id: TextureId,
    size: [usize; 2],
    format: PixelFormat,
    /// How long the last upload took to copy the rows (for a benchmark: wgpu's submission
    /// of the copy to the GPU comes after).
    copy_time: std::time::Duration,
}

enum Backend {
    Wgpu {
        state: Box<egui_wgpu::RenderState>,
        texture: wgpu::Texture,
        /// Staging memory reused frame after frame (`Queue::write_texture` would take fresh
        /// memory for each upload, whose page faults cost more than the copy).
        belt: Box<wgpu::util::StagingBelt>,
    },
    Glow {
        gl: Arc<glow::Context>,
        texture: glow::Texture,
    },
}

impl NativeTexture {
    /// A texture for frames of `size` in `format`, registered with egui, if the window's
    /// renderer takes that format as it is (None: the caller converts the pixels).
    pub fn new(frame: &mut eframe::Frame, size: [usize; 2], format: PixelFormat) -> Option<Self> {
        if let Some(state) = frame.wgpu_render_state() {
            let texture = wgpu_texture(state, size, wgpu_format(format)?);
            let view = texture.create_view(&wgpu::TextureViewDescriptor::default());
            let id = state.renderer.write().register_native_texture_with_sampler_options(
                &state.device,
                &view,
                SAMPLER,
            );
            log::info!("guest screen {size:?} {format:?}: into the renderer's own texture (wgpu)");
            let belt =
                Box::new(wgpu::util::StagingBelt::new(state.device.clone(), staging_size(size)));
            return Some(NativeTexture {
                backend: Backend::Wgpu { state: Box::new(state.clone()), texture, belt },
                id,
                size,
                format,
                copy_time: Default::default(),
            });
        }
        let gl = frame.gl()?.clone();
        let formats = gl_formats(&gl, format)?;
        // SAFETY: called on the UI thread, where eframe keeps its GL context current
        // during `ui`; the texture is new and sized before use.
        let texture = unsafe {
            let texture = gl.create_texture().ok()?;
            gl_allocate(&gl, texture, size, formats);
            texture
        };
        let id = frame.register_native_glow_texture(texture);
        log::info!("guest screen {size:?} {format:?}: into the renderer's own texture (OpenGL)");
        let copy_time = Default::default();
        Some(NativeTexture { backend: Backend::Glow { gl, texture }, id, size, format, copy_time })
    }

    pub fn id(&self) -> TextureId {
        self.id
    }

    pub fn size(&self) -> [usize; 2] {
        self.size
    }

    pub fn format(&self) -> PixelFormat {
        self.format
    }

    /// Makes the texture hold frames of `size` in `format` (its contents are then
    /// undefined until uploaded). False if the renderer does not take `format` as it is.
    pub fn reshape(&mut self, size: [usize; 2], format: PixelFormat) -> bool {
        if (size, format) == (self.size, self.format) {
            return true;
        }
        match &mut self.backend {
            Backend::Wgpu { state, texture, belt } => {
                let Some(wgpu_format) = wgpu_format(format) else { return false };
                *texture = wgpu_texture(state, size, wgpu_format);
                if size != self.size {
                    **belt = wgpu::util::StagingBelt::new(state.device.clone(), staging_size(size));
                }
                let view = texture.create_view(&wgpu::TextureViewDescriptor::default());
                state.renderer.write().update_egui_texture_from_wgpu_texture_with_sampler_options(
                    &state.device,
                    &view,
                    SAMPLER,
                    self.id,
                );
            }
            Backend::Glow { gl, texture } => {
                let Some(formats) = gl_formats(gl, format) else { return false };
                // SAFETY: on the UI thread with eframe's context current; the texture is
                // this one's own.
                unsafe { gl_allocate(gl, *texture, size, formats) };
            }
        }
        (self.size, self.format) = (size, format);
        true
    }

    /// Copies the row bands `bands` ([start, end) each) of `frame` (of this texture's size
    /// and format) into the texture.
    pub fn upload(&mut self, frame: &Frame<'_>, bands: &[(usize, usize)]) {
        let width = frame.width as usize;
        debug_assert_eq!([width, frame.height as usize], self.size);
        if bands.is_empty() {
            return;
        }
        let started = std::time::Instant::now();
        // Each band's bytes, from its first row's start to its last row's last pixel:
        // within the frame (its layout was checked against its memory), else left out.
        let bytes = |&(first, end): &(usize, usize)| {
            let count = end.checked_sub(first).filter(|&c| c > 0 && width > 0)?;
            let start = first * frame.stride;
            let bytes = frame.pixels.get(start..start + (count - 1) * frame.stride + width * 4)?;
            Some((first, count, bytes))
        };
        match &mut self.backend {
            Backend::Wgpu { state, texture, belt } => {
                // Rows padded to what a copy into a texture needs, in reused staging memory,
                // then one copy command a band.
                let padded = staging_row(width);
                let mut encoder = state.device.create_command_encoder(&Default::default());
                for (first, count, bytes) in bands.iter().filter_map(bytes) {
                    let Some(size) = wgpu::BufferSize::new((padded * count) as u64) else {
                        continue;
                    };
                    let slice = belt.allocate(size, ROW_ALIGNMENT);
                    // (The belt hands out mapped memory only; were it not, the band waits
                    // for the next frame's upload.)
                    let Ok(mut staging) = slice.get_mapped_range_mut() else { continue };
                    if frame.stride == padded {
                        // The frame's rows already lie as the copy needs them (a width of a
                        // multiple of 64 pixels, as 1024, 1280, 1920, 2560): one large copy,
                        // which writes past the caches as a memcpy of a frame does.
                        staging.slice(..bytes.len()).copy_from_slice(bytes);
                    } else {
                        for (i, row) in bytes.chunks(frame.stride).enumerate() {
                            let at = i * padded;
                            staging.slice(at..at + width * 4).copy_from_slice(&row[..width * 4]);
                        }
                    }
                    drop(staging);
                    encoder.copy_buffer_to_texture(
                        wgpu::TexelCopyBufferInfo {
                            buffer: slice.buffer(),
                            layout: wgpu::TexelCopyBufferLayout {
                                offset: slice.offset(),
                                bytes_per_row: Some(padded as u32),
                                rows_per_image: None,
                            },
                        },
                        wgpu::TexelCopyTextureInfo {
                            texture,
                            mip_level: 0,
                            origin: wgpu::Origin3d { x: 0, y: first as u32, z: 0 },
                            aspect: wgpu::TextureAspect::All,
                        },
                        wgpu::Extent3d {
                            width: width as u32,
                            height: count as u32,
                            depth_or_array_layers: 1,
                        },
                    );
                }
                self.copy_time = started.elapsed();
                belt.finish();
                state.queue.submit([encoder.finish()]);
                belt.recall();
            }
            Backend::Glow { gl, texture } => {
                let Some((_, source)) = gl_formats(gl, self.format) else { return };
                for (first, count, bytes) in bands.iter().filter_map(bytes) {
                    // SAFETY: on the UI thread with eframe's context current; `bytes` holds
                    // `count` rows of `stride` bytes (the last one `width` pixels), as the
                    // row length (in pixels) set here tells GL; the state changed is put
                    // back.
                    unsafe {
                        gl.bind_texture(glow::TEXTURE_2D, Some(*texture));
                        gl.pixel_store_i32(glow::UNPACK_ALIGNMENT, 4);
                        gl.pixel_store_i32(glow::UNPACK_ROW_LENGTH, (frame.stride / 4) as i32);
                        gl.tex_sub_image_2d(
                            glow::TEXTURE_2D,
                            0,
                            0,
                            first as i32,
                            width as i32,
                            count as i32,
                            source,
                            glow::UNSIGNED_BYTE,
                            glow::PixelUnpackData::Slice(Some(bytes)),
                        );
                        gl.pixel_store_i32(glow::UNPACK_ROW_LENGTH, 0);
                        gl.bind_texture(glow::TEXTURE_2D, None);
                    }
                }
                self.copy_time = started.elapsed();
            }
        }
    }

    /// How long the last upload took to copy the rows out of the frame (wgpu: into
    /// staging memory, before submitting the GPU's copy; OpenGL: the driver's upload).
    pub fn copy_time(&self) -> std::time::Duration {
        self.copy_time
    }

    /// Waits until the renderer has put every upload so far into the texture (for a
    /// benchmark: the renderer's own copy, on a GPU a transfer of its own, is then done).
    pub fn wait_for_renderer(&self) {
        match &self.backend {
            Backend::Wgpu { state, .. } => {
                let _ = state.device.poll(wgpu::PollType::wait_indefinitely());
            }
            // SAFETY: on the UI thread with eframe's context current.
            Backend::Glow { gl, .. } => unsafe { gl.finish() },
        }
    }

    /// Whether `frame` can go into a texture as it is: whole pixels a row, rows of whole
    /// words (GL counts a row's length in pixels).
    pub fn takes(frame: &Frame<'_>) -> bool {
        frame.stride.is_multiple_of(4)
            && frame.stride >= frame.width as usize * 4
            && u32::try_from(frame.stride).is_ok()
    }
}

impl Drop for NativeTexture {
    fn drop(&mut self) {
        match &self.backend {
            // The texture itself goes when wgpu is done with it.
            Backend::Wgpu { state, .. } => state.renderer.write().free_texture(&self.id),
            // SAFETY: on the UI thread, which owns the screens and is where eframe keeps
            // the context current; the texture is this one's own. (egui's painter keeps
            // the id's entry, never drawn again: the screen that drew it is gone.)
            Backend::Glow { gl, texture } => unsafe { gl.delete_texture(*texture) },
        }
    }
}

/// Guest screens shrink smoothly and grow with sharp pixels, as the converted texture's
/// options say (`screen::OPTIONS`).
const SAMPLER: wgpu::SamplerDescriptor<'static> = wgpu::SamplerDescriptor {
    label: Some("vessel guest screen"),
    address_mode_u: wgpu::AddressMode::ClampToEdge,
    address_mode_v: wgpu::AddressMode::ClampToEdge,
    address_mode_w: wgpu::AddressMode::ClampToEdge,
    mag_filter: wgpu::FilterMode::Nearest,
    min_filter: wgpu::FilterMode::Linear,
    mipmap_filter: wgpu::MipmapFilterMode::Nearest,
    lod_min_clamp: 0.0,
    lod_max_clamp: 32.0,
    compare: None,
    anisotropy_clamp: 1,
    border_color: None,
};

/// A row's start in staging memory, for a copy into a texture: a multiple of 256 bytes.
const ROW_ALIGNMENT: wgpu::BufferSize =
    wgpu::BufferSize::new(wgpu::COPY_BYTES_PER_ROW_ALIGNMENT as u64).unwrap();

/// The bytes a row of `width` pixels takes in staging memory.
fn staging_row(width: usize) -> usize {
    (width * 4).next_multiple_of(wgpu::COPY_BYTES_PER_ROW_ALIGNMENT as usize)
}

/// Staging memory for a whole frame of `size`: what each of the belt's chunks holds.
fn staging_size(size: [usize; 2]) -> u64 {
    (staging_row(size[0]) * size[1].max(1)) as u64
}

/// The wgpu texture format holding `format`'s bytes as they are, if there is one.
fn wgpu_format(format: PixelFormat) -> Option<wgpu::TextureFormat> {
    match format {
        PixelFormat::Bgrx | PixelFormat::Bgra => Some(wgpu::TextureFormat::Bgra8Unorm),
        PixelFormat::Rgbx | PixelFormat::Rgba => Some(wgpu::TextureFormat::Rgba8Unorm),
        _ => None,
    }
}

fn wgpu_texture(
    state: &egui_wgpu::RenderState,
    size: [usize; 2],
    format: wgpu::TextureFormat,
) -> wgpu::Texture {
    state.device.create_texture(&wgpu::TextureDescriptor {
        label: Some("vessel guest screen"),
        size: wgpu::Extent3d {
            width: size[0].max(1) as u32,
            height: size[1].max(1) as u32,
            depth_or_array_layers: 1,
        },
        mip_level_count: 1,
        sample_count: 1,
        dimension: wgpu::TextureDimension::D2,
        format,
        usage: wgpu::TextureUsages::TEXTURE_BINDING | wgpu::TextureUsages::COPY_DST,
        view_formats: &[],
    })
}

/// GL's internal format and source format for `format`'s bytes as they are: desktop GL
/// reads B, G, R, A rows itself; OpenGL ES takes only R, G, B, A ones. Alpha is read as
/// one through a swizzle, which both have from GL 3.3 and ES 3.0 on.
fn gl_formats(gl: &glow::Context, format: PixelFormat) -> Option<(i32, u32)> {
    let version = gl.version();
    let swizzle = if version.is_embedded {
        version.major >= 3
    } else {
        (version.major, version.minor) >= (3, 3)
    };
    if !swizzle {
        return None;
    }
    match format {
        // An unsized internal format: the driver may then keep the texture in the layout
        // of the pixels it is given (Mesa does), so an upload is a copy, not a conversion
        // pixel by pixel (which Mesa's llvmpipe makes of B, G, R, A rows into an RGBA8
        // texture: 7x a memcpy).
        PixelFormat::Bgrx | PixelFormat::Bgra if !version.is_embedded => {
            Some((glow::RGBA as i32, glow::BGRA))
        }
        PixelFormat::Rgbx | PixelFormat::Rgba => Some((glow::RGBA as i32, glow::RGBA)),
        _ => None,
    }
}

/// Gives `texture` storage for `size` and the screen's sampling (alpha read as one).
///
/// # Safety
/// The GL context is current on this thread; `texture` is a texture of it.
unsafe fn gl_allocate(
    gl: &glow::Context,
    texture: glow::Texture,
    size: [usize; 2],
    formats: (i32, u32),
) {
    // SAFETY: the caller's promise; no pixels are read (storage only).
    unsafe {
        gl.bind_texture(glow::TEXTURE_2D, Some(texture));
        let parameters = [
            (glow::TEXTURE_MAG_FILTER, glow::NEAREST),
            (glow::TEXTURE_MIN_FILTER, glow::LINEAR),
            (glow::TEXTURE_WRAP_S, glow::CLAMP_TO_EDGE),
            (glow::TEXTURE_WRAP_T, glow::CLAMP_TO_EDGE),
            (glow::TEXTURE_SWIZZLE_A, glow::ONE),
        ];
        for (parameter, value) in parameters {
            gl.tex_parameter_i32(glow::TEXTURE_2D, parameter, value as i32);
        }
        gl.tex_image_2d(
            glow::TEXTURE_2D,
            0,
            formats.0,
            size[0].max(1) as i32,
            size[1].max(1) as i32,
            0,
            formats.1,
            glow::UNSIGNED_BYTE,
            glow::PixelUnpackData::Slice(None),
        );
        gl.bind_texture(glow::TEXTURE_2D, None);
    }
}
