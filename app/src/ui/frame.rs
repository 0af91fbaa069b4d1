//! How one frame of the window is laid out: menu bar, toolbar, status bar, the library
//! sidebar, the selected VM's page, drop overlay, dialogs and toasts; each component draws
//! itself and returns what it was asked, which `VesselApp::apply` then carries out. (The
//! app's state and actions are in `app`; this file only arranges the components.)

use std::path::Path;

use super::act::{self, Act, Page};
use super::app::VesselApp;
use super::console::{self, ConsoleOptions};
use super::dialogs::close::{self, Closing};
use super::dialogs::{DialogAction, about};
use super::jobs::{ItemKind, VmItem};
use super::menus::{self, Chrome};
use super::session::Ending;
use super::{status_bar, summary};

impl VesselApp {
    /// The selected VM's page; `renderer`: the window's renderer, for the console's texture.
    fn central(&mut self, ui: &mut egui::Ui, renderer: Option<&mut eframe::Frame>) -> Vec<Act> {
        let Some(root) = self.library.selected.clone() else {
            return self.welcome(ui);
        };
        let item = self.library.item(&root).cloned();
        if self.page == Page::Console
            && let Some(vm) = self.running.get_mut(&root)
        {
            let follow = item.as_ref().is_none_or(|i| matches!(&i.kind, ItemKind::Ok { config, .. } if config.display.value == vm_library::config::Display::FollowWindow));
            let options = ConsoleOptions { scale: self.scale, autofit: self.prefs.autofit, follow };
            let (session, console) = (&vm.session, &mut vm.console);
            self.frame_stats.upload_time +=
                console::page(ui, &root, session, console, &mut self.keyboard, options, renderer);
            self.frame_stats.rows_uploaded =
                self.running.vms.values().map(|vm| vm.console.screen.rows_uploaded).sum();
            self.frame_stats.conversion = self
                .running
                .vms
                .values()
                .map(|vm| vm.console.screen.conversion())
                .fold(Default::default(), |a, b| a + b);
            return Vec::new();
        }
        let Some(item) = item else { return self.welcome(ui) };
        match self.page {
            Page::Serial => {
                let session = self.running.get(&root).map(|vm| &vm.session);
                self.serial.ui(ui, &root, session)
            }
            _ => {
                let state = self.state_of(&item);
                let why = self.running.endings.get(&root).and_then(Ending::reason);
                summary::ui(ui, &item, &state, why.as_deref())
            }
        }
    }

    fn welcome(&self, ui: &mut egui::Ui) -> Vec<Act> {
        let building = self.jobs.visible().any(|j| j.title.contains("demo"));
        summary::welcome(ui, &self.lib_dir, self.library.items.is_empty(), building)
    }

    fn chrome(&self) -> Chrome<'_> {
        let selected = self.library.selected.as_deref();
        Chrome {
            selected: selected.and_then(|r| Some((r, self.state_at(r)?))),
            relative: self.selected_vm().is_some_and(|vm| vm.console.pointer.relative),
            scale: self.scale,
            autofit: self.prefs.autofit,
            fullscreen: self.fullscreen,
            page: self.page,
        }
    }

    fn sidebar(&mut self, ui: &mut egui::Ui, mut renderer: Option<&mut eframe::Frame>) -> Vec<Act> {
        // Thumbnails of guests not in view.
        let ctx = ui.ctx().clone();
        for (root, vm) in &mut self.running.vms {
            let shown = self.library.selected.as_ref() == Some(root) && self.page == Page::Console;
            if !shown {
                vm.console.refresh_thumbnail(&ctx, &vm.session, renderer.as_deref_mut());
            }
        }
        let state = |item: &VmItem| self.state_of(item);
        let thumbnail = |root: &Path| {
            let vm = self.running.get(root)?;
            vm.console.screen.texture_id().map(|id| (id, vm.console.screen.size()))
        };
        self.library.ui(ui, &state, &thumbnail)
    }

    fn status(&self, ui: &mut egui::Ui) {
        let selected = self.library.selected.as_deref().and_then(|root| {
            let vm = self.running.get(root);
            Some(status_bar::Selected {
                state: self.state_at(root)?,
                session: vm.map(|vm| &vm.session),
                grabbed: vm.is_some_and(|vm| vm.console.pointer.grabbed),
                keyboard: self.keyboard.owner() == Some(root),
                console_shown: self.page == Page::Console,
                offers_grab: vm
                    .and_then(|vm| vm.session.input.as_ref())
                    .is_some_and(|input| !input.pointer_is_absolute()),
            })
        });
        status_bar::ui(ui, selected, self.library.items.len(), &self.jobs);
    }

    fn dialogs(&mut self, ctx: &egui::Context) -> Vec<Act> {
        let mut acts = Vec::new();
        if let Some(action) = self.wizard.as_mut().map(|w| w.ui(ctx))
            && action != super::wizard::Action::None
        {
            acts.push(Act::Wizard(action));
        }
        let answers = [
            self.preferences.as_mut().and_then(|d| d.ui(ctx)).map(DialogAction::Preferences),
            self.settings.as_mut().and_then(|d| d.ui(ctx)).map(DialogAction::Settings),
            self.snapshot_manager.as_mut().and_then(|d| d.ui(ctx)).map(DialogAction::Snapshots),
            self.take_snapshot.as_mut().and_then(|d| d.ui(ctx)).map(DialogAction::Snapshots),
            self.migrate.as_mut().and_then(|d| d.ui(ctx)).map(DialogAction::Migrate),
            self.backup.as_mut().and_then(|d| d.ui(ctx)).map(DialogAction::Backup),
            close::ui(ctx, self.closing, self.running.len()).map(DialogAction::Close),
        ];
        acts.extend(answers.into_iter().flatten().map(Act::Dialog));
        about::ui(ctx, &mut self.about, &self.lib_dir);
        acts
    }
}

impl eframe::App for VesselApp {
    fn raw_input_hook(&mut self, _ctx: &egui::Context, raw_input: &mut egui::RawInput) {
        self.route_input(raw_input);
    }

    /// Also while the window is hidden (every VM's news wakes it): what the VMs' threads
    /// report is taken then too, rather than piling up in their channels.
    fn logic(&mut self, _ctx: &egui::Context, _frame: &mut eframe::Frame) {
        self.poll();
    }

    fn ui(&mut self, ui: &mut egui::Ui, frame: &mut eframe::Frame) {
        let ctx = ui.ctx().clone();
        // Guest screens go into the renderer's own textures as they are (unless a
        // benchmark compares with converting them).
        let mut renderer = (!self.convert_frames).then_some(frame);
        self.frame_stats.frames += 1;
        if ctx.input(|i| i.viewport().close_requested()) {
            match self.closing {
                Closing::Go => {}
                _ if self.running.is_empty() => {}
                _ => {
                    ctx.send_viewport_cmd(egui::ViewportCommand::CancelClose);
                    if self.closing == Closing::No {
                        self.closing = Closing::Asking;
                    }
                }
            }
        }
        // Shortcuts: not while the guest has the keyboard, a text field in the wizard
        // does, or the close dialog is up.
        let dialog = self.wizard.is_some()
            || self.take_snapshot.is_some()
            || self.snapshot_manager.is_some()
            || self.migrate.is_some()
            || self.backup.is_some();
        let typing = dialog && ctx.memory(|m| m.focused().is_some());
        let mut acts = if self.keyboard.owner().is_some() || typing || self.closing != Closing::No {
            Vec::new()
        } else {
            let selected = self.library.selected.clone();
            let state = selected.as_deref().and_then(|r| self.state_at(r));
            act::shortcuts(&ctx, selected.as_deref(), state.as_ref())
        };
        if !self.fullscreen {
            let chrome = self.chrome();
            egui::Panel::top("menu").show(ui, |ui| acts.extend(menus::menu_bar(ui, &chrome)));
            egui::Panel::top("toolbar").show(ui, |ui| acts.extend(menus::toolbar(ui, &chrome)));
            egui::Panel::bottom("status").show(ui, |ui| self.status(ui));
            let side = egui::Panel::left("library")
                .default_size(230.0)
                .resizable(true)
                .show(ui, |ui| self.sidebar(ui, renderer.as_deref_mut()));
            acts.extend(side.inner);
            self.library.rect = side.response.rect;
        } else {
            self.library.rect = egui::Rect::NOTHING;
        }
        let panel = if self.page == Page::Console {
            egui::CentralPanel::no_frame()
        } else {
            egui::CentralPanel::default_margins()
        };
        acts.extend(panel.show(ui, |ui| self.central(ui, renderer)).inner);
        let running = |root: &Path| self.running.contains(root);
        let (dropped, more) = self.library.drop_target(&ctx, &running);
        acts.extend(dropped);
        if more {
            self.toasts.error("Drop one ISO at a time; Vessel took the first", None);
        }
        acts.extend(self.dialogs(&ctx));
        self.toasts.show(&ctx);
        for act in acts {
            self.apply(act);
        }
    }
}
