//! The VM-host role: each running VM in a process of its own (`vessel-vm`, `host`),
//! which the window and the CLI drive over a control socket (`client`), inside a sandbox
//! (`sandbox`: seccomp, Landlock; `helper`, forked before it, starts passt and cleans
//! up after a VM process that died). The
//! socket's messages (`protocol`), frames that carry a descriptor (`wire`) and where the
//! sockets are (`paths`).

pub mod client;
pub mod footprint;
pub mod helper;
pub mod host;
pub mod paths;
pub mod protocol;
pub mod sandbox;
pub mod scope;
pub mod syscalls;
pub mod wire;
