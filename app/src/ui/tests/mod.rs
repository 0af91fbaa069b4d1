//! The app driven through egui_kittest by its accessible labels, on temporary libraries:
//! `library` (the wizard, power buttons, dropped ISOs, an inaccessible bundle, crashes),
//! `screens` (the console: the guest's frame, keys and pointer, serial, snapshots of the main screens),
//! `dialogs` (closing with VMs running, preferences, settings), `snapshot_manager` (VM ▸
//! Snapshot), `migrate` (VM ▸ Migrate…), `backup` (VM ▸ Back Up…). The helpers are here.

mod backup;
mod dialogs;
mod library;
mod migrate;
mod screens;
mod snapshot_manager;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use egui::accesskit::Role;
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;

use egui::{Modifiers, Vec2};
use vm_library::config::{
    Boot, BootDevice, Display as DisplayConfig, Firmware, Network as NetworkConfig,
};
use vm_library::library::Library;
use vm_library::validate::Host;
use vmm::input::evdev::*;

use super::act::{Act, Page};
use super::console;
use super::console::view::Scale;
use super::dialogs::close::Closing;
use super::jobs::{self, ItemKind, Pick};
use super::prefs::{self, Preferences};
use super::session::{Command, Ending, Phase, Session};
use super::{Options, VesselApp, demo, wizard};
use crate::core::create::{NewVm, create_bundle};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vessel-ui-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn app(lib: &Path, render: bool) -> Harness<'static, VesselApp> {
    app_scaled(lib, render, 1.0)
}

/// The app at `pixels_per_point` screen pixels per point (HiDPI, fractional scaling).
fn app_scaled(lib: &Path, render: bool, pixels_per_point: f32) -> Harness<'static, VesselApp> {
    let lib = lib.to_path_buf();
    let mut builder = Harness::builder()
        .with_size([1180.0, 760.0])
        .with_pixels_per_point(pixels_per_point)
        .with_max_steps(8);
    if render {
        builder = builder.wgpu();
    }
    let mut h = builder.build_eframe(move |cc| {
        VesselApp::new(
            &cc.egui_ctx,
            Options {
                library: Some(lib.clone()),
                prefs_path: lib.join("prefs.toml"),
                launcher: crate::vmhost::client::Launcher::InProcess,
            },
        )
    });
    wait(&mut h, "the library scan", |h| h.state().library.scanned_at.is_some());
    h
}

/// One frame, with the input going through the app's own routing first (as eframe's
/// raw_input_hook does).
fn step(h: &mut Harness<'static, VesselApp>) {
    let mut raw = std::mem::take(h.input_mut());
    h.state_mut().route_input(&mut raw);
    *h.input_mut() = raw;
    h.step();
}

/// Steps until `done` holds (threads do the work meanwhile); panics after a minute.
fn wait(
    h: &mut Harness<'static, VesselApp>,
    what: &str,
    mut done: impl FnMut(&Harness<'static, VesselApp>) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done(h) {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; toasts: {:?}",
            h.state().toasts.titles()
        );
        step(h);
        std::thread::sleep(Duration::from_millis(10));
    }
    step(h);
}

/// An event straight into the next frame's input (the app routes it first, as eframe's
/// raw_input_hook would; kittest's own queue comes after that).
fn send(h: &mut Harness<'static, VesselApp>, event: egui::Event) {
    h.input_mut().events.push(event);
}

fn type_into(h: &mut Harness<'static, VesselApp>, field: &str, text: &str) {
    type_into_role(h, Role::TextInput, field, text);
}

/// Types into the last text field with this role and label (a dialog's, over the page's).
fn type_into_role(h: &mut Harness<'static, VesselApp>, role: Role, field: &str, text: &str) {
    h.get_all_by_role_and_label(role, field).last().expect("the field").focus();
    step(h);
    h.get_all_by_role_and_label(role, field).last().expect("the field").type_text(text);
    step(h);
    step(h);
}

fn has_label(h: &Harness<'static, VesselApp>, label: &str) -> bool {
    h.query_all_by_label_contains(label).next().is_some()
}

/// Clicks the first control with this role and label (toolbar buttons come first).
fn click(h: &mut Harness<'static, VesselApp>, role: Role, label: &str) {
    // The pointer goes there first, as a hand on a mouse does.
    h.get_all_by_role_and_label(role, label).next().expect("found").hover();
    step(h);
    h.get_all_by_role_and_label(role, label).next().expect("found").click();
    // The click; the action; a window's first (invisible, sizing) frame.
    for _ in 0..3 {
        step(h);
    }
}

/// A VM booting the test guest with `cmdline`.
fn test_vm(lib: &Path, name: &str, cmdline: &str) -> PathBuf {
    let library = Library::open(lib).unwrap();
    let args = NewVm::test_guest(name, vessel_tests::testguest_elf(), cmdline, 128 << 20);
    create_bundle(&library, &args).unwrap().0.root().to_path_buf()
}

/// An ISO of `files` (path, contents), named `name` in `dir`.
fn iso_of(dir: &Path, name: &str, files: &[(&str, &str)]) -> PathBuf {
    let root = dir.join(format!("{name}-root"));
    for (path, text) in files {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    let iso = dir.join(name);
    let out = std::process::Command::new("xorriso")
        .args(["-as", "mkisofs", "-quiet", "-V", "KITTEST", "-o"])
        .arg(&iso)
        .arg(&root)
        .output()
        .expect("xorriso runs (tools/install-deps installs it)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    iso
}

fn iso(dir: &Path) -> PathBuf {
    iso_of(dir, "disc.iso", &[("HELLO.TXT", "hello\n")])
}

/// A disc with a Linux kernel its isolinux configuration boots.
fn linux_iso(dir: &Path) -> PathBuf {
    let cfg =
        "default live\nlabel live\n  kernel /live/vmlinuz\n  append initrd=/live/initrd.gz quiet\n";
    iso_of(
        dir,
        "linux.iso",
        &[("isolinux/isolinux.cfg", cfg), ("live/vmlinuz", "kernel"), ("live/initrd.gz", "initrd")],
    )
}

#[derive(Debug)]
struct Dropped(PathBuf);

impl egui::DroppedFile for Dropped {
    fn path(&self) -> &Path {
        &self.0
    }

    fn bytes(&self) -> Result<Vec<u8>, String> {
        std::fs::read(&self.0).map_err(|e| e.to_string())
    }
}

fn drop_file(h: &mut Harness<'static, VesselApp>, at: egui::Pos2, path: &Path) {
    h.hover_at(at);
    step(h);
    h.input_mut().dropped_files.push(Arc::new(Dropped(path.to_path_buf())));
    step(h);
}

fn config_of(lib: &Path, name: &str) -> vm_library::config::VmConfig {
    Library::open(lib).unwrap().find(name).unwrap().config
}
