//! The command line: `args` (clap's types and parsers), `verbs` (the library verbs, like
//! VMware's vmrun or VBoxManage), `headless` (`vessel run`: a machine with its serial
//! console on this terminal), `remote` (`vessel start`: the same for a library VM in its
//! own process), `snapshot` (`vessel snapshot ...`), `migrate` (`vessel migrate`) and
//! `terminal` (raw mode). The window
//! never imports from here; both stand on `core`.

pub mod args;
pub mod backup;
pub mod headless;
pub mod migrate;
pub mod remote;
pub mod snapshot;
pub mod terminal;
pub mod verbs;

pub use args::{Cli, Command, SnapshotAction};
