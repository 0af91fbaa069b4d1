//! Toasts: short messages in the window's corner. Errors stay until closed and have a
//! Details view; the others fade after a few seconds.

use std::time::{Duration, Instant};

struct Toast {
    id: u64,
    error: bool,
    title: String,
    details: Option<String>,
    born: Instant,
}

#[derive(Default)]
pub struct Toasts {
    toasts: Vec<Toast>,
    next: u64,
    /// The toast whose details are open.
    details: Option<(String, String)>,
}

const FADE: Duration = Duration::from_secs(5);

impl Toasts {
    fn push(&mut self, error: bool, title: &str, details: Option<String>) {
        self.next += 1;
        self.toasts.push(Toast {
            id: self.next,
            error,
            title: title.to_string(),
            details,
            born: Instant::now(),
        });
        if self.toasts.len() > 6 {
            self.toasts.remove(0);
        }
    }

    pub fn error(&mut self, title: &str, details: Option<String>) {
        log::warn!("{title}{}", details.as_ref().map(|d| format!(": {d}")).unwrap_or_default());
        self.push(true, title, details);
    }

    pub fn info(&mut self, title: &str) {
        self.push(false, title, None);
    }

    pub fn success(&mut self, title: &str) {
        self.push(false, title, None);
    }

    /// Titles shown now, with their details (for tests).
    #[cfg(test)]
    pub fn titles(&self) -> Vec<String> {
        let detail = |t: &Toast| t.details.as_ref().map(|d| format!(" ({d})")).unwrap_or_default();
        self.toasts.iter().map(|t| format!("{}{}", t.title, detail(t))).collect()
    }

    pub fn show(&mut self, ctx: &egui::Context) {
        self.toasts.retain(|t| t.error || t.born.elapsed() < FADE);
        if self.toasts.iter().any(|t| !t.error) {
            ctx.request_repaint_after(Duration::from_millis(500));
        }
        let mut close = None;
        egui::Area::new(egui::Id::unique("toasts"))
            .anchor(egui::Align2::RIGHT_BOTTOM, [-12.0, -40.0])
            .order(egui::Order::Foreground)
            .show(ctx, |ui| {
                ui.set_max_width(380.0);
                for t in &self.toasts {
                    let fill = if t.error {
                        ui.visuals().error_fg_color.gamma_multiply(0.25)
                    } else {
                        ui.visuals().extreme_bg_color
                    };
                    egui::Frame::popup(ui.style()).fill(fill).show(ui, |ui| {
                        ui.horizontal(|ui| {
                            ui.label(egui::RichText::new(&t.title).strong());
                            if let Some(d) = &t.details
                                && ui.small_button("Details").clicked()
                            {
                                self.details = Some((t.title.clone(), d.clone()));
                            }
                            if t.error && ui.small_button("Dismiss").clicked() {
                                close = Some(t.id);
                            }
                        });
                    });
                }
            });
        if let Some(id) = close {
            self.toasts.retain(|t| t.id != id);
        }
        if let Some((title, details)) = &self.details {
            let mut open = true;
            egui::Window::new(title.as_str())
                .id(egui::Id::unique("toast-details"))
                .anchor(egui::Align2::CENTER_CENTER, [0.0, 0.0])
                .open(&mut open)
                .collapsible(false)
                .show(ctx, |ui| {
                    ui.add(egui::Label::new(details.as_str()).wrap().selectable(true));
                });
            if !open {
                self.details = None;
            }
        }
    }
}
