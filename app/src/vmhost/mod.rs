//! The VM-host role: each running VM in a process of its own, which the window and the CLI
//! drive over a control socket (issue: each VM in its own sandboxed process). So far, the
//! socket's protocol (`protocol`).

pub mod protocol;
