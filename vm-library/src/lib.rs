//! Vessel's VM library: what VMs exist and what they are made of — bundles on disk, their
//! configuration, disk images, ISO inspection. It knows nothing about KVM; the app turns a
//! VM's configuration into a `vmm::MachineConfig` at power-on.

pub mod archive;
pub mod backup;
pub mod bundle;
pub mod config;
pub mod disks;
pub mod files;
pub mod foreign;
pub mod iso;
pub mod library;
pub mod safe_write;
pub mod snapshots;
pub mod suspended;
pub mod transfer;
pub mod validate;

#[cfg(test)]
pub(crate) mod test_util;
