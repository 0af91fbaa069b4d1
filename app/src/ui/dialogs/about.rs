//! Help ▸ About Vessel.

use std::path::Path;

/// Shows the About window while `open`.
pub fn ui(ctx: &egui::Context, open: &mut bool, library: &Path) {
    egui::Window::new("About Vessel").collapsible(false).resizable(false).open(open).show(
        ctx,
        |ui| {
            ui.heading(format!("Vessel {}", env!("CARGO_PKG_VERSION")));
            ui.label("Virtual machines on your Linux desktop, on KVM.");
            ui.label(format!("Library: {}", library.display()));
            if let Some(hint) = super::super::session::host_hint() {
                ui.label(hint);
            }
        },
    );
}
