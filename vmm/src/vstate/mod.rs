//! KVM state: the `/dev/kvm` handle and guest memory.

pub mod kvm;
pub mod memory;
