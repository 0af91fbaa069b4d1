//! Vessel's application crate: the desktop window (`ui`), the command line (`cli`), and
//! what both stand on (`core`: making VMs, getting them ready to run, their states); and
//! the VM-host role (`vmhost`: a running VM's own process and its control socket). The
//! `vessel` binary (`main.rs`) dispatches to them; benchmarks drive `ui` directly.

pub mod cli;
pub mod core;
pub mod ui;
pub mod vmhost;
