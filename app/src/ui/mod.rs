//! The desktop app (eframe/egui). `app` is the window: its components and the one place
//! their actions are applied. The components: `library` (sidebar), `menus` (menu bar,
//! toolbar), `summary`, `console/`, `serial`, `status_bar`, `dialogs/`, `wizard` (New VM),
//! `toasts`. Behind them: `act` (what can be asked, with its shortcuts), `running` and
//! `session` (the VMs this window runs, each on its own thread), `snapshots` (VM ▸
//! Snapshot carried out), `jobs` (slow work on background threads), `prefs`, `demo`.

pub mod act;
mod app;
mod backup;
pub mod console;
mod demo;
pub mod dialogs;
mod frame;
mod jobs;
mod library;
mod menus;
mod migrate;
pub mod prefs;
mod progress;
mod running;
mod serial;
mod session;
mod snapshots;
mod status_bar;
mod summary;
mod toasts;
mod wizard;

#[cfg(test)]
mod tests;

use std::path::PathBuf;

pub use app::{FrameStats, VesselApp};
use prefs::Preferences;

/// Where the app keeps things; tests point these at temporary folders.
pub struct Options {
    /// The library folder from the command line (`--library`), over the preferences.
    pub library: Option<PathBuf>,
    pub prefs_path: PathBuf,
    /// How VM processes are started (tests run them in this process).
    pub launcher: crate::vmhost::client::Launcher,
}

/// Opens the window and runs until it is closed.
pub fn run(library: Option<PathBuf>) -> anyhow::Result<()> {
    let prefs_path = prefs::default_path();
    let (prefs, _) = Preferences::load(&prefs_path);
    let options = eframe::NativeOptions {
        renderer: match prefs.renderer {
            prefs::Renderer::Glow => eframe::Renderer::Glow,
            prefs::Renderer::Wgpu => eframe::Renderer::Wgpu,
        },
        viewport: egui::ViewportBuilder::default()
            .with_title("Vessel")
            .with_app_id("vessel")
            .with_inner_size([1180.0, 760.0])
            .with_min_inner_size([640.0, 420.0])
            .with_drag_and_drop(true),
        ..Default::default()
    };
    eframe::run_native(
        "Vessel",
        options,
        Box::new(move |cc| {
            Ok(Box::new(VesselApp::new(
                &cc.egui_ctx,
                Options {
                    library,
                    prefs_path,
                    launcher: crate::vmhost::client::Launcher::this_program(),
                },
            )))
        }),
    )
    .map_err(|e| anyhow::anyhow!("cannot open the window: {e}"))
}
