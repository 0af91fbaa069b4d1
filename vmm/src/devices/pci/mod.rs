//! PCI: configuration spaces, the root bus with its host bridge, config access through
//! ports 0xCF8/0xCFC and ECAM, BAR placement that follows the guest, and MSI-X.

pub mod config;
pub mod isa_bridge;
pub mod msix;
pub mod root;

pub use config::{BarInfo, BarKind, PciConfig, PciIds};

/// A PCI function on the root bus.
pub trait PciDevice: Send {
    fn config(&self) -> &PciConfig;
    fn config_mut(&mut self) -> &mut PciConfig;

    /// A guest read of configuration space (devices with windows into their BARs, like
    /// virtio's PCI_CFG capability, override this).
    fn config_read(&mut self, offset: usize, data: &mut [u8]) {
        self.config().read(offset, data);
    }

    /// A guest write of configuration space; the default applies the write masks.
    fn config_write(&mut self, offset: usize, data: &[u8]) {
        self.config_mut().write(offset, data);
    }

    fn bar_read(&mut self, bar: usize, offset: u64, data: &mut [u8]);
    fn bar_write(&mut self, bar: usize, offset: u64, data: &[u8]);

    /// BAR `bar` now decodes at `address` (None: not decoded). Devices with ioeventfds in
    /// a BAR move them here.
    fn bar_moved(&mut self, _bar: usize, _address: Option<u64>) {}

    /// Its state for a machine's saved state (`persist::encode_part`): its configuration
    /// space and whatever else it keeps; the reason if it cannot be saved. No default: a
    /// device that kept more than its configuration space and saved only that would come
    /// back wrong without a word.
    fn save_state(&self) -> Result<Vec<u8>, String>;

    /// Takes what `save_state` gave (from a file: checked, taken whole or not at all);
    /// the problem if it cannot. The root places the BARs afterwards.
    fn restore_state(&mut self, state: &[u8]) -> Result<(), String>;
}

/// `PciDevice::save_state` of a function that keeps nothing but its configuration space.
pub fn save_config_only(config: &PciConfig) -> Vec<u8> {
    crate::persist::encode_part(&config.save_state())
}

/// `PciDevice::restore_state` of a function that keeps nothing but its configuration space.
pub fn restore_config_only(config: &mut PciConfig, state: &[u8]) -> Result<(), String> {
    let space: Vec<u8> = crate::persist::decode_part(state)?;
    config.restore_state(&space)
}
