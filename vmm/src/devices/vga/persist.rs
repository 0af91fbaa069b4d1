//! The VGA's saved state: its registers, its video memory (the pages that are not all
//! zero) and its PCI configuration space. A saved state is not
//! trusted: every register goes back through the masks a guest's writes go through, the
//! DISPI mode is brought to one that fits the memory as a mode set is, and the memory's
//! pages must be whole and inside it.

use serde::{Deserialize, Serialize};

use super::regs::{
    AC_REGS, CRTC_REGS, DISPI_BANK, DISPI_BPP, DISPI_ID, DISPI_ID0, DISPI_ID5, DISPI_REGS,
    Registers,
};
use super::vram::{PAGE, Vram};

#[derive(Debug, Serialize, Deserialize)]
pub struct RegistersState {
    misc: u8,
    feature: u8,
    seq_index: u8,
    seq: Vec<u8>,
    gc_index: u8,
    gc: Vec<u8>,
    ac_index: u8,
    ac: Vec<u8>,
    ac_flip: bool,
    crtc_index: u8,
    crtc: Vec<u8>,
    pel_mask: u8,
    dac_read: u8,
    dac_write: u8,
    dac_sub: u8,
    dac_state: u8,
    dac_cache: Vec<u8>,
    palette: Vec<u8>,
    st01: u8,
    latch: u32,
    dispi_index: u16,
    dispi: Vec<u16>,
    big_endian: bool,
}

/// The VGA's own state (its PCI configuration space is saved beside it).
#[derive(Debug, Serialize, Deserialize)]
pub struct VgaState {
    pub config: Vec<u8>,
    pub regs: RegistersState,
    /// (page number, its bytes) of every page of video memory that is not all zero.
    pub pages: Vec<(u32, Vec<u8>)>,
}

impl Registers {
    pub fn save(&self) -> RegistersState {
        RegistersState {
            misc: self.misc,
            feature: self.feature,
            seq_index: self.seq_index,
            seq: self.seq.to_vec(),
            gc_index: self.gc_index,
            gc: self.gc.to_vec(),
            ac_index: self.ac_index,
            ac: self.ac.to_vec(),
            ac_flip: self.ac_flip,
            crtc_index: self.crtc_index,
            crtc: self.crtc.to_vec(),
            pel_mask: self.pel_mask,
            dac_read: self.dac_read,
            dac_write: self.dac_write,
            dac_sub: self.dac_sub,
            dac_state: self.dac_state,
            dac_cache: self.dac_cache.to_vec(),
            palette: self.palette.to_vec(),
            st01: self.st01,
            latch: self.latch,
            dispi_index: self.dispi_index,
            dispi: self.dispi.to_vec(),
            big_endian: self.big_endian,
        }
    }

    /// The registers `s` saved, as a guest could have set them, for video memory of
    /// `vram_bytes`.
    pub fn restored(s: &RegistersState, vram_bytes: usize) -> Result<Registers, String> {
        fn array<T: Copy + Default, const N: usize>(v: &[T], what: &str) -> Result<[T; N], String> {
            v.try_into().map_err(|_| format!("{} {what} registers saved (it has {N})", v.len()))
        }
        let mut seq: [u8; 8] = array(&s.seq, "sequencer")?;
        for (i, v) in seq.iter_mut().enumerate() {
            *v &= super::regs::SEQ_MASK[i];
        }
        let mut gc: [u8; 16] = array(&s.gc, "graphics controller")?;
        for (i, v) in gc.iter_mut().enumerate() {
            *v &= super::regs::GC_MASK[i];
        }
        let mut ac: [u8; AC_REGS] = array(&s.ac, "attribute controller")?;
        for (i, v) in ac.iter_mut().enumerate() {
            *v = Registers::ac_kept(i, *v).unwrap_or(0);
        }
        if s.dac_sub >= 3 {
            return Err(format!("DAC sub-index {} (it counts to 3)", s.dac_sub));
        }
        let mut r = Registers {
            misc: s.misc & !0x10,
            feature: s.feature & 0x10,
            seq_index: s.seq_index & 7,
            seq,
            gc_index: s.gc_index & 0x0f,
            gc,
            ac_index: s.ac_index & 0x3f,
            ac,
            ac_flip: s.ac_flip,
            crtc_index: s.crtc_index,
            crtc: array::<u8, CRTC_REGS>(&s.crtc, "CRT controller")?,
            pel_mask: s.pel_mask,
            dac_read: s.dac_read,
            dac_write: s.dac_write,
            dac_sub: s.dac_sub,
            dac_state: s.dac_state,
            dac_cache: array(&s.dac_cache, "DAC cache")?,
            palette: array(&s.palette, "palette")?,
            st01: s.st01,
            latch: s.latch,
            dispi_index: s.dispi_index,
            dispi: array::<u16, DISPI_REGS>(&s.dispi, "DISPI")?,
            // Derived below, as a mode set derives them.
            vbe_line_offset: 0,
            vbe_start_addr: 0,
            bank_offset: 0,
            big_endian: s.big_endian,
        };
        if !(DISPI_ID0..=DISPI_ID5).contains(&r.dispi[DISPI_ID]) {
            r.dispi[DISPI_ID] = DISPI_ID5;
        }
        // The mode as a mode set leaves it: fitting the memory, with its derived offsets.
        r.fix_dispi(vram_bytes);
        let banks = (vram_bytes >> 16) as u16;
        let mask = if r.dispi[DISPI_BPP] == 4 { (banks >> 2).max(1) } else { banks };
        r.dispi[DISPI_BANK] &= mask.saturating_sub(1);
        r.bank_offset = if r.dispi_enabled() { u32::from(r.dispi[DISPI_BANK]) << 16 } else { 0 };
        Ok(r)
    }
}

/// The pages of `vram` that are not all zero.
pub fn save_pages(vram: &Vram) -> Vec<(u32, Vec<u8>)> {
    let mut pages = Vec::new();
    let mut page = vec![0u8; PAGE];
    for n in 0..vram.pages() {
        vram.copy_out(n * PAGE, &mut page);
        if page.iter().any(|b| *b != 0) {
            pages.push((n as u32, page.clone()));
        }
    }
    pages
}

/// Puts saved pages back into `vram` (cleared first), each whole and inside it.
pub fn restore_pages(vram: &Vram, pages: &[(u32, Vec<u8>)]) -> Result<(), String> {
    if let Some((n, bytes)) =
        pages.iter().find(|(n, b)| *n as usize >= vram.pages() || b.len() != PAGE)
    {
        return Err(format!("a video memory page {n} of {} bytes", bytes.len()));
    }
    vram.clear(vram.len());
    for (n, bytes) in pages {
        vram.copy_in(*n as usize * PAGE, bytes);
    }
    Ok(())
}
