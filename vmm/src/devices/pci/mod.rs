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
}
