//! MSI-X (PCI Local Bus 3.0 §6.8.2): the capability, the vector table and the pending-bit
//! array, living in a BAR; each vector is a KVM MSI route fired through an irqfd.

use std::sync::Arc;

use crate::vstate::irq::{GsiRouter, IrqError, MsiVector};

pub const CAPABILITY_ID: u8 = 0x11;
const ENTRY_SIZE: u64 = 16;
const CONTROL_MASKED: u32 = 1;
const MESSAGE_CONTROL_ENABLE: u16 = 1 << 15;
const MESSAGE_CONTROL_FUNCTION_MASK: u16 = 1 << 14;

/// MSI-X's state: each vector's table entry, the pending bits, the two control bits.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MsixState {
    /// (address, data, vector control) of each vector.
    pub entries: Vec<(u64, u32, u32)>,
    pub pending: Vec<u64>,
    pub enabled: bool,
    pub function_masked: bool,
}

#[derive(Clone, Copy, Default)]
struct Entry {
    address: u64,
    data: u32,
    control: u32,
}

pub struct Msix {
    entries: Vec<Entry>,
    pending: Vec<u64>,
    /// Injection paths; empty without a router (tests and fuzzing run without KVM).
    vectors: Vec<MsiVector>,
    router: Option<Arc<GsiRouter>>,
    enabled: bool,
    function_masked: bool,
}

impl Msix {
    pub fn new(count: u16, router: Option<Arc<GsiRouter>>) -> Result<Self, IrqError> {
        let count = usize::from(count.clamp(1, 2048));
        let vectors = match &router {
            Some(router) => {
                (0..count).map(|_| router.new_vector()).collect::<Result<Vec<_>, _>>()?
            }
            None => Vec::new(),
        };
        Ok(Msix {
            // Vectors start masked (§6.8.2.9).
            entries: vec![Entry { control: CONTROL_MASKED, ..Default::default() }; count],
            pending: vec![0; count.div_ceil(64)],
            vectors,
            router,
            enabled: false,
            function_masked: false,
        })
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The capability body (after id/next) for a table at `table_offset` and a PBA at
    /// `pba_offset`, both in BAR `bar`.
    pub fn capability(&self, bar: u8, table_offset: u32, pba_offset: u32) -> [u8; 10] {
        let mut body = [0u8; 10];
        body[0..2].copy_from_slice(&((self.len() - 1) as u16).to_le_bytes());
        body[2..6].copy_from_slice(&(table_offset | u32::from(bar)).to_le_bytes());
        body[6..10].copy_from_slice(&(pba_offset | u32::from(bar)).to_le_bytes());
        body
    }

    /// Guest-writable bits of Message Control (enable, function mask), as a write mask.
    pub fn control_wmask() -> [u8; 2] {
        (MESSAGE_CONTROL_ENABLE | MESSAGE_CONTROL_FUNCTION_MASK).to_le_bytes()
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The guest wrote Message Control.
    pub fn set_control(&mut self, control: u16) {
        self.enabled = control & MESSAGE_CONTROL_ENABLE != 0;
        self.function_masked = control & MESSAGE_CONTROL_FUNCTION_MASK != 0;
        for i in 0..self.len() {
            self.update_route(i);
            self.deliver_pending(i);
        }
    }

    fn masked(&self, i: usize) -> bool {
        self.function_masked || self.entries[i].control & CONTROL_MASKED != 0
    }

    fn update_route(&mut self, i: usize) {
        let e = self.entries[i];
        let message =
            (self.enabled && e.control & CONTROL_MASKED == 0).then_some((e.address, e.data));
        if let (Some(router), Some(vector)) = (&self.router, self.vectors.get(i))
            && let Err(e) = router.set_msi(vector.gsi, message)
        {
            log::warn!("MSI-X vector {i}: {e}");
        }
    }

    fn deliver_pending(&mut self, i: usize) {
        let (word, bit) = (i / 64, 1u64 << (i % 64));
        if self.enabled && !self.masked(i) && self.pending[word] & bit != 0 {
            self.pending[word] &= !bit;
            if let Some(v) = self.vectors.get(i) {
                v.fire();
            }
        }
    }

    /// Signals vector `i`: delivered now, or held pending while masked. Returns false if
    /// MSI-X is off (the caller falls back to INTx) or `i` is not a vector.
    pub fn notify(&mut self, i: u16) -> bool {
        let i = usize::from(i);
        if !self.enabled || i >= self.len() {
            return false;
        }
        if self.masked(i) {
            self.pending[i / 64] |= 1 << (i % 64);
        } else if let Some(v) = self.vectors.get(i) {
            v.fire();
        }
        true
    }

    pub fn save_state(&self) -> MsixState {
        MsixState {
            entries: self.entries.iter().map(|e| (e.address, e.data, e.control)).collect(),
            pending: self.pending.clone(),
            enabled: self.enabled,
            function_masked: self.function_masked,
        }
    }

    /// Takes a saved table (of as many vectors as this one has) and re-makes each vector's
    /// route from it; nothing is fired (a pending vector waits for its unmasking, as
    /// before the save).
    pub fn restore_state(&mut self, state: &MsixState) -> Result<(), String> {
        if state.entries.len() != self.len() || state.pending.len() != self.pending.len() {
            return Err(format!(
                "{} MSI-X vectors saved; this device has {}",
                state.entries.len(),
                self.len()
            ));
        }
        for (entry, &(address, data, control)) in self.entries.iter_mut().zip(&state.entries) {
            *entry = Entry { address, data, control: control & CONTROL_MASKED };
        }
        self.pending.copy_from_slice(&state.pending);
        // No pending bit beyond the last vector.
        if !self.len().is_multiple_of(64)
            && let Some(last) = self.pending.last_mut()
        {
            *last &= (1u64 << (self.entries.len() % 64)) - 1;
        }
        self.enabled = state.enabled;
        self.function_masked = state.function_masked;
        for i in 0..self.len() {
            self.update_route(i);
        }
        Ok(())
    }

    pub fn table_read(&self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        let (i, field) = ((offset / ENTRY_SIZE) as usize, offset % ENTRY_SIZE);
        let Some(e) = self.entries.get(i) else { return };
        let mut raw = [0u8; 16];
        raw[0..8].copy_from_slice(&e.address.to_le_bytes());
        raw[8..12].copy_from_slice(&e.data.to_le_bytes());
        raw[12..16].copy_from_slice(&e.control.to_le_bytes());
        copy_field(&raw, field as usize, data);
    }

    pub fn table_write(&mut self, offset: u64, data: &[u8]) {
        let (i, field) = ((offset / ENTRY_SIZE) as usize, (offset % ENTRY_SIZE) as usize);
        let Some(e) = self.entries.get(i).copied() else { return };
        if field + data.len() > 16 {
            return;
        }
        let mut raw = [0u8; 16];
        raw[0..8].copy_from_slice(&e.address.to_le_bytes());
        raw[8..12].copy_from_slice(&e.data.to_le_bytes());
        raw[12..16].copy_from_slice(&e.control.to_le_bytes());
        raw[field..field + data.len()].copy_from_slice(data);
        let entry = &mut self.entries[i];
        entry.address = u64::from_le_bytes(raw[0..8].try_into().expect("8 bytes"));
        entry.data = u32::from_le_bytes(raw[8..12].try_into().expect("4 bytes"));
        // Only the mask bit of Vector Control is writable.
        let control = u32::from_le_bytes(raw[12..16].try_into().expect("4 bytes"));
        entry.control = control & CONTROL_MASKED;
        self.update_route(i);
        self.deliver_pending(i);
    }

    pub fn pba_read(&self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        let word = (offset / 8) as usize;
        if let Some(bits) = self.pending.get(word) {
            copy_field(&bits.to_le_bytes(), (offset % 8) as usize, data);
        }
    }
}

/// Copies `data.len()` bytes of `raw` from `at`, as far as `raw` goes.
fn copy_field(raw: &[u8], at: usize, data: &mut [u8]) {
    let n = data.len().min(raw.len().saturating_sub(at));
    data[..n].copy_from_slice(&raw[at..at + n]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_table_comes_back_with_its_pending_bits_and_masks() {
        let mut m = Msix::new(3, None).unwrap();
        m.set_control(MESSAGE_CONTROL_ENABLE);
        m.table_write(16, &0xfee0_1000u64.to_le_bytes());
        m.table_write(16 + 8, &0x41u32.to_le_bytes());
        m.table_write(16 + 12, &0u32.to_le_bytes()); // vector 1 unmasked
        assert!(m.notify(2)); // vector 2 masked: pending
        let state = m.save_state();
        let mut restored = Msix::new(3, None).unwrap();
        restored.restore_state(&state).unwrap();
        assert_eq!(restored.save_state(), state);
        let mut pba = [0u8; 8];
        restored.pba_read(0, &mut pba);
        assert_eq!(u64::from_le_bytes(pba), 1 << 2);
        let mut data = [0u8; 4];
        restored.table_read(16 + 8, &mut data);
        assert_eq!(u32::from_le_bytes(data), 0x41);
        // Crafted: pending bits past the last vector, a reserved control bit; another size.
        let mut odd = state.clone();
        odd.pending[0] = u64::MAX;
        odd.entries[0].2 = u32::MAX;
        restored.restore_state(&odd).unwrap();
        assert_eq!(restored.save_state().pending[0], 0b111);
        assert_eq!(restored.save_state().entries[0].2, CONTROL_MASKED);
        let mut bigger = Msix::new(8, None).unwrap();
        assert!(bigger.restore_state(&state).unwrap_err().contains("3 MSI-X vectors"));
    }
}
