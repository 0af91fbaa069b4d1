//! KVM state: the `/dev/kvm` handle and guest memory.

pub mod dirty;
pub mod irq;
pub mod kvm;
pub mod memory;
pub mod shadow;
pub mod written;
