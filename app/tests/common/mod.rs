//! Shared by the CLI tests: running `vessel` against a library folder.

use std::path::Path;
use std::process::{Command, Output, Stdio};

/// Runs `vessel --library LIB ARGS...` with no input.
pub fn vessel(lib: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vessel"))
        .arg("--library")
        .arg(lib)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}
