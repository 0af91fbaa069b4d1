//! The status bar: the selected VM's state, its vCPU use (a sparkline), memory, disk and
//! network activity, a hint about where the keyboard goes; and long jobs with progress.

use super::jobs::Jobs;
use super::session::{HISTORY, Session};
use crate::core::state::VmState;

/// What the status bar says of the selected VM.
pub struct Selected<'a> {
    pub state: VmState,
    /// Its session, if it runs here.
    pub session: Option<&'a Session>,
    /// Its pointer is grabbed.
    pub grabbed: bool,
    /// Its console has the keyboard.
    pub keyboard: bool,
    /// Its console is the page shown.
    pub console_shown: bool,
    /// Its guest follows no absolute pointer yet: a click in the console grabs the pointer.
    pub offers_grab: bool,
}

pub fn ui(ui: &mut egui::Ui, selected: Option<Selected>, vm_count: usize, jobs: &Jobs) {
    ui.horizontal(|ui| {
        match &selected {
            None => {
                ui.label(format!("{vm_count} VMs"));
            }
            Some(s) => {
                ui.label(s.state.label());
                if let Some((done, total)) = s.session.and_then(|session| session.saving) {
                    // Its memory being written for a suspend or a snapshot.
                    ui.separator();
                    let fraction = done as f32 / total.max(1) as f32;
                    ui.label("Saving its state");
                    let bar = egui::ProgressBar::new(fraction).desired_width(160.0);
                    ui.add(bar.text(format!("{:.0} %", fraction * 100.0)));
                }
                if let Some(session) = s.session {
                    usage(ui, session);
                    ui.separator();
                    let hint = if s.grabbed {
                        "Pointer grabbed: press Ctrl+Alt to release"
                    } else if s.keyboard {
                        "The guest has the keyboard: click outside the console to release it"
                    } else if s.console_shown && s.offers_grab {
                        "Click in the console to type into the guest and grab the pointer (the \
                         guest has no absolute pointer yet)"
                    } else if s.console_shown {
                        "Click in the console to type into the guest"
                    } else {
                        ""
                    };
                    ui.weak(hint);
                }
            }
        }
        for job in jobs.visible() {
            ui.separator();
            ui.spinner();
            let p = job.progress.get();
            ui.label(if p.is_empty() { job.title.clone() } else { format!("{}: {p}", job.title) });
        }
    });
}

/// vCPU sparkline, memory, disk and network.
fn usage(ui: &mut egui::Ui, s: &Session) {
    ui.separator();
    let cpu: Vec<[f64; 2]> = s.cpu.iter().enumerate().map(|(i, v)| [i as f64, *v]).collect();
    let now = s.cpu.back().copied().unwrap_or(0.0);
    ui.label(format!("CPU {now:.0}%"));
    egui_plot::Plot::new(("cpu", &s.name))
        .height(18.0)
        .width(90.0)
        .show_axes(false)
        .show_grid(false)
        .allow_drag(false)
        .allow_zoom(false)
        .allow_scroll(false)
        .allow_boxed_zoom(false)
        .show_x(false)
        .show_y(false)
        .include_y(0.0)
        .include_y(100.0 * f64::from(s.vcpus.max(1)))
        .include_x(0.0)
        .include_x(HISTORY as f64)
        .show(ui, |plot| plot.line(egui_plot::Line::new("vCPU", cpu)));
    ui.label(format!(
        "{} vCPU · memory {} of {} MiB",
        s.vcpus,
        s.memory_resident >> 20,
        s.memory_mib
    ));
    ui.separator();
    let led = |on: bool| if on { "active" } else { "idle" };
    ui.label(format!("Disk {}", led(s.disk_rate > 0)))
        .on_hover_text(format!("{} wake-ups/s", s.disk_rate));
    ui.label(format!("Net {}", led(s.net_rate > 0)))
        .on_hover_text(format!("{} wake-ups/s", s.net_rate));
}
