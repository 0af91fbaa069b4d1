//! File ▸ Preferences: the library folder, the renderer, the theme, autofit.

use std::path::PathBuf;

use crate::ui::prefs::{Preferences, Renderer, Theme};

/// What the Preferences dialog asks.
#[derive(Clone, Debug, PartialEq)]
pub enum Answer {
    Save(Preferences),
    Cancel,
    /// Choose the library folder with a file dialog (the answer fills the draft).
    BrowseLibraryFolder,
}

pub struct PreferencesDialog {
    pub draft: Preferences,
    /// The library comes from --library / VESSEL_LIBRARY this run (the folder set here
    /// applies to later runs).
    library_override: bool,
}

impl PreferencesDialog {
    pub fn new(prefs: &Preferences, library_override: bool) -> Self {
        PreferencesDialog { draft: prefs.clone(), library_override }
    }

    pub fn ui(&mut self, ctx: &egui::Context) -> Option<Answer> {
        let mut action = None;
        let draft = &mut self.draft;
        egui::Window::new("Preferences").collapsible(false).resizable(false).show(ctx, |ui| {
            egui::Grid::new("prefs").num_columns(2).show(ui, |ui| {
                let label = ui.label("Library folder");
                let mut text =
                    draft.library.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
                ui.horizontal(|ui| {
                    let edit = egui::TextEdit::singleline(&mut text)
                        .hint_text("default")
                        .desired_width(260.0);
                    if ui.add(edit).labelled_by(label.id).changed() {
                        draft.library =
                            (!text.trim().is_empty()).then(|| PathBuf::from(text.trim()));
                    }
                    if ui.button("Browse…").clicked() {
                        action = Some(Answer::BrowseLibraryFolder);
                    }
                });
                ui.end_row();
                ui.label("Renderer");
                egui::ComboBox::from_id_salt("renderer")
                    .selected_text(draft.renderer.label())
                    .show_ui(ui, |ui| {
                        for r in Renderer::ALL {
                            ui.selectable_value(&mut draft.renderer, r, r.label());
                        }
                    });
                ui.end_row();
                ui.label("Theme");
                egui::ComboBox::from_id_salt("theme").selected_text(draft.theme.label()).show_ui(
                    ui,
                    |ui| {
                        for t in Theme::ALL {
                            ui.selectable_value(&mut draft.theme, t, t.label());
                        }
                    },
                );
                ui.end_row();
                ui.label("Guests");
                ui.checkbox(&mut draft.autofit, "Guest displays follow the window (autofit)");
                ui.end_row();
            });
            if self.library_override {
                ui.weak("This run uses the library given with --library / VESSEL_LIBRARY.");
            }
            ui.weak("A new renderer takes effect at the next start.");
            ui.horizontal(|ui| {
                if ui.button("Save").clicked() {
                    action = Some(Answer::Save(draft.clone()));
                }
                if ui.button("Cancel").clicked() {
                    action = Some(Answer::Cancel);
                }
            });
        });
        action
    }
}
