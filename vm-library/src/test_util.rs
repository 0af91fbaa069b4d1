//! Helpers for the unit tests.

use std::path::PathBuf;

/// An empty scratch folder for one test, unique to this process and thread.
pub fn scratch(area: &str, name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "vessel-{area}-{}-{name}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
