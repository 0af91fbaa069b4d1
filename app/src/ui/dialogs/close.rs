//! Closing the window while VMs run: leave them running in the background (the window
//! shows them again when it opens), shut them all down (ACPI), power them all off, or
//! cancel; shutting down waits for them to stop, with Power Off Now.

/// Where closing the window is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Closing {
    #[default]
    No,
    /// Asking what to do with running VMs.
    Asking,
    /// Waiting for the VMs to stop, then closing.
    Waiting,
    /// Close now.
    Go,
}

/// What the user chose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Choice {
    /// The VMs go on in their own processes.
    RunInBackground,
    ShutDownAll,
    PowerOffAll,
    /// While waiting: stop waiting for the guests.
    PowerOffNow,
    Cancel,
}

/// The close dialog, shown while asking or waiting; `running` VMs are up.
pub fn ui(ctx: &egui::Context, closing: Closing, running: usize) -> Option<Choice> {
    if !matches!(closing, Closing::Asking | Closing::Waiting) {
        return None;
    }
    let mut choice = None;
    egui::Modal::new(egui::Id::unique("close-dialog")).show(ctx, |ui| {
        ui.heading("VMs are running");
        if closing == Closing::Waiting {
            ui.horizontal(|ui| {
                ui.spinner();
                ui.label(format!("Waiting for {running} VM(s) to stop…"));
            });
            if ui.button("Power Off Now").clicked() {
                choice = Some(Choice::PowerOffNow);
            }
            return;
        }
        ui.label(format!(
            "{running} VM(s) are running. They can go on in the background (Vessel shows \
             them again when it opens), or stop."
        ));
        ui.horizontal(|ui| {
            for (label, c) in [
                ("Run in Background", Choice::RunInBackground),
                ("Shut Down All", Choice::ShutDownAll),
                ("Power Off All", Choice::PowerOffAll),
                ("Cancel", Choice::Cancel),
            ] {
                if ui.button(label).clicked() {
                    choice = Some(c);
                }
            }
        });
    });
    choice
}
