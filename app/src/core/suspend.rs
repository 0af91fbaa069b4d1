//! A suspended VM's saved state in its folder; the VM library knows where it lives.

pub use vm_library::suspended::*;
