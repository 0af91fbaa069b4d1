//! The library sidebar: the VMs the library holds (read by background scans), which one
//! is selected, their thumbnails and states; and where a dropped file goes.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use egui::{Sense, Vec2};
use vm_library::library::LibraryError;

use super::act::Act;
use super::console::view::{self, Scale};
use super::jobs::{self, Done, ItemKind, Jobs, VmItem, file_name};
use crate::core::state::VmState;

/// How often the library is read again on its own (other processes change it too).
const RESCAN_EVERY: Duration = Duration::from_secs(5);

/// A running VM's screen for the sidebar: its texture and size in pixels.
pub type Thumbnail = (egui::TextureId, [usize; 2]);

/// The library as the window knows it.
pub struct LibraryPanel {
    pub items: Vec<VmItem>,
    /// When the last scan's result came in (None: read it as soon as possible).
    pub scanned_at: Option<Instant>,
    scanning: bool,
    /// Scans started, and the newest one whose result is shown.
    scan_seq: u64,
    scan_applied: u64,
    /// The last scan's error, so it is reported once, not every few seconds.
    scan_error: Option<String>,
    pub selected: Option<PathBuf>,
    /// Where the sidebar was drawn (a file dropped there is for the library).
    pub rect: egui::Rect,
}

impl Default for LibraryPanel {
    fn default() -> Self {
        LibraryPanel {
            items: Vec::new(),
            scanned_at: None,
            scanning: false,
            scan_seq: 0,
            scan_applied: 0,
            scan_error: None,
            selected: None,
            rect: egui::Rect::NOTHING,
        }
    }
}

impl LibraryPanel {
    pub fn item(&self, root: &Path) -> Option<&VmItem> {
        self.items.iter().find(|i| i.root == root)
    }

    /// The VM in `root` no longer runs (its session saw its process end).
    pub fn stopped(&mut self, root: &Path) {
        if let Some(item) = self.items.iter_mut().find(|i| i.root == root)
            && let ItemKind::Ok { elsewhere, .. } = &mut item.kind
        {
            *elsewhere = None;
        }
    }

    /// Reads the library in `dir` on a job thread, unless a scan is under way.
    pub fn rescan(&mut self, jobs: &mut Jobs, dir: &Path) {
        if self.scanning {
            return;
        }
        self.scanning = true;
        self.scan_seq += 1;
        let (dir, seq) = (dir.to_path_buf(), self.scan_seq);
        jobs.spawn("Reading the library", false, move |_| Done::Scanned {
            seq,
            result: jobs::scan(&dir),
        });
    }

    /// Reads it again now, whatever scan is under way (after a change: the list shows
    /// what was just made or changed).
    pub fn rescan_now(&mut self, jobs: &mut Jobs, dir: &Path) {
        self.scanning = false;
        self.rescan(jobs, dir);
    }

    /// Rescans when the last one is old.
    pub fn rescan_if_stale(&mut self, jobs: &mut Jobs, dir: &Path) {
        if self.scanned_at.is_none_or(|t| t.elapsed() > RESCAN_EVERY) {
            self.rescan(jobs, dir);
        }
    }

    /// A scan of the library in `dir` came in; returns the error to tell people about,
    /// the first time it is seen.
    pub fn scanned(
        &mut self,
        seq: u64,
        dir: &Path,
        result: Result<Vec<VmItem>, LibraryError>,
    ) -> Option<String> {
        if seq < self.scan_applied {
            return None; // an older scan that finished late
        }
        let result =
            result.map_err(|e| format!("cannot read the VM library at {}: {e}", dir.display()));
        self.scan_applied = seq;
        self.scanning = false;
        self.scanned_at = Some(Instant::now());
        let error = result.as_ref().err().cloned();
        let news = error.clone().filter(|_| error != self.scan_error);
        self.scan_error = error;
        match result {
            Ok(items) => {
                self.items = items;
                if self.selected.is_none() {
                    self.selected = self.items.first().map(|i| i.root.clone());
                }
            }
            Err(_) => self.items.clear(),
        }
        news
    }

    /// The sidebar. `state` tells each VM's state; `thumbnail` its screen's texture and
    /// size, if it has one.
    pub fn ui(
        &self,
        ui: &mut egui::Ui,
        state: &dyn Fn(&VmItem) -> VmState,
        thumbnail: &dyn Fn(&Path) -> Option<Thumbnail>,
    ) -> Vec<Act> {
        let mut acts = Vec::new();
        ui.heading("Library");
        ui.add_space(4.0);
        egui::ScrollArea::vertical().auto_shrink([false, false]).show(ui, |ui| {
            for item in &self.items {
                let selected = self.selected.as_ref() == Some(&item.root);
                ui.horizontal(|ui| {
                    let thumb = Vec2::new(64.0, 48.0);
                    match thumbnail(&item.root) {
                        Some((id, size)) => {
                            let rect = view::place(
                                egui::Rect::from_min_size(egui::Pos2::ZERO, thumb),
                                size,
                                Scale::Fit,
                                1.0,
                            );
                            ui.add(
                                // Over black (see `console::native`).
                                egui::Image::new((id, rect.size()))
                                    .bg_fill(egui::Color32::BLACK)
                                    .alt_text(format!("{} screen", item.name)),
                            );
                        }
                        None => blank_thumbnail(ui, thumb),
                    }
                    ui.vertical(|ui| {
                        let name = egui::Button::selectable(selected, &item.name)
                            .wrap_mode(egui::TextWrapMode::Truncate);
                        if ui.add(name).clicked() {
                            acts.push(Act::Select(item.root.clone()));
                        }
                        ui.weak(state(item).label());
                    });
                });
                ui.add_space(2.0);
            }
            if self.items.is_empty() {
                ui.weak("No VMs yet.");
                if ui.button("New VM…").clicked() {
                    acts.push(Act::NewVm);
                }
            }
        });
        acts
    }

    /// Files dragged over the window and dropped: an overlay says what a drop will do
    /// (by where it would land: the sidebar means the library, anywhere else the selected
    /// VM); a drop becomes an act. `running` says whether a VM runs (its disc is swapped).
    pub fn drop_target(
        &self,
        ctx: &egui::Context,
        running: &dyn Fn(&Path) -> bool,
    ) -> (Option<Act>, bool) {
        let (hovered, dropped, pointer) = ctx.input(|i| {
            (i.raw.hovered_files.clone(), i.raw.dropped_files.clone(), i.pointer.hover_pos())
        });
        let over_library = pointer.is_some_and(|p| self.rect.contains(p));
        let target =
            if over_library || self.selected.is_none() { None } else { self.selected.clone() };
        if !hovered.is_empty() {
            let named: Vec<&Path> = hovered.iter().filter_map(|f| f.path.as_deref()).collect();
            let not_iso = named
                .iter()
                .find(|p| !p.extension().is_some_and(|e| e.eq_ignore_ascii_case("iso")));
            let what = match (&target, not_iso) {
                (_, Some(p)) => format!(
                    "{} does not look like an ISO image; Vessel will check it, and change \
                     nothing if it is not one",
                    file_name(p)
                ),
                (None, None) => "Drop an ISO to create a VM from it".to_string(),
                (Some(root), None) => {
                    let name = self.item(root).map(|i| i.name.clone()).unwrap_or_default();
                    if running(root) {
                        format!(
                            "Drop an ISO to put it in {name}'s CD drive (the guest sees a \
                             disc change)"
                        )
                    } else {
                        format!("Drop an ISO to attach it as {name}'s CD")
                    }
                }
            };
            overlay(ctx, what);
        }
        let mut dropped = dropped.into_iter();
        let act = dropped.next().map(|file| Act::DropIso(target, file.path().to_path_buf()));
        (act, dropped.next().is_some())
    }
}

fn blank_thumbnail(ui: &mut egui::Ui, size: Vec2) {
    let (rect, _) = ui.allocate_exact_size(size, Sense::hover());
    ui.painter().rect_filled(rect, 4.0, ui.visuals().extreme_bg_color);
    let screen = egui::Rect::from_center_size(rect.center(), Vec2::new(28.0, 20.0));
    ui.painter().rect_stroke(
        screen,
        2.0,
        egui::Stroke::new(1.5, ui.visuals().weak_text_color()),
        egui::StrokeKind::Inside,
    );
}

/// The whole window darkened with `what` over it.
fn overlay(ctx: &egui::Context, what: String) {
    let screen = ctx.content_rect();
    egui::Area::new(egui::Id::unique("drop-overlay"))
        .order(egui::Order::Foreground)
        .fixed_pos(screen.min)
        .interactable(false)
        .show(ctx, |ui| {
            ui.painter().rect_filled(screen, 0.0, egui::Color32::from_black_alpha(180));
            ui.scope_builder(egui::UiBuilder::new().max_rect(screen), |ui| {
                ui.centered_and_justified(|ui| {
                    ui.label(egui::RichText::new(what).size(24.0).color(egui::Color32::WHITE));
                });
            });
        });
}
