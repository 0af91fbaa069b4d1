//! The VM-host role: each running VM in a process of its own (`vessel vm-host`, `host`),
//! which the window and the CLI drive over a control socket (`client`). The socket's
//! messages (`protocol`), frames that carry a descriptor (`wire`) and where the sockets
//! are (`paths`).

pub mod client;
pub mod host;
pub mod paths;
pub mod protocol;
pub mod wire;
