//! A machine's state, to save and restore it (snapshots, suspend, later migration): the
//! state file's format (`format`), guest memory in a file of its own (`memory`: sparse,
//! restored copy-on-write), each vCPU's KVM state (`vcpu`), the VM's own (`vm`: interrupt
//! controllers, PIT, clock).

pub mod format;
pub mod memory;
pub mod vcpu;
pub mod vm;

#[cfg(test)]
mod tests;
