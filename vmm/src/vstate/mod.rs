//! KVM state: the `/dev/kvm` handle and guest memory.

pub mod irq;
pub mod kvm;
pub mod memory;
pub mod shadow;
