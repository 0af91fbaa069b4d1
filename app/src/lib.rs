//! Vessel's application crate: the desktop window (`ui`), the command line (`cli`), the
//! headless runner (`run`) and the library verbs (`vms`). The `vessel` binary (`main.rs`)
//! dispatches to them; benchmarks drive `ui` directly.

pub mod cli;
pub mod keymap;
pub mod run;
pub mod terminal;
pub mod ui;
pub mod vms;
