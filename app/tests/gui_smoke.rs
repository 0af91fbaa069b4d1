//! The real window: `vessel` with no verb, on a temporary library, under Xvfb (X11, Mesa's
//! software GL). The window must appear quickly, titled Vessel, and show the library: the
//! first VM listed and selected in the sidebar (its highlighted entry) and the rest of the
//! window drawn. The screenshot is kept in the test's folder for people to look at.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vessel-gui-smoke-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Starts Xvfb on a free display; returns it and the display name.
fn xvfb() -> (Kill, String) {
    let mut child = Command::new("Xvfb")
        .args(["-displayfd", "1", "-screen", "0", "1280x800x24", "-nolisten", "tcp"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("Xvfb runs (tools/install-deps installs xvfb)");
    let mut out = child.stdout.take().unwrap();
    let mut number = String::new();
    let mut byte = [0u8; 1];
    while out.read(&mut byte).unwrap() == 1 && byte[0] != b'\n' {
        number.push(byte[0] as char);
    }
    (Kill(child), format!(":{}", number.trim()))
}

/// The geometry of the window called Vessel, if it is mapped.
fn window(display: &str) -> Option<(u32, u32)> {
    let out =
        Command::new("xwininfo").args(["-display", display, "-name", "Vessel"]).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |name: &str| -> Option<u32> {
        text.lines().find_map(|l| l.trim().strip_prefix(name)).and_then(|v| v.trim().parse().ok())
    };
    (out.status.success() && text.contains("IsViewable")).then_some(())?;
    Some((field("Width:")?, field("Height:")?))
}

fn screenshot(display: &str, path: &Path) -> image::RgbaImage {
    let status = Command::new("import")
        .args(["-display", display, "-window", "root"])
        .arg(path)
        .status()
        .expect("import runs (imagemagick)");
    assert!(status.success());
    image::open(path).unwrap().to_rgba8()
}

#[test]
fn the_window_opens_on_the_library() {
    let dir = scratch();
    let lib = dir.join("library");
    let out = common::vessel(&lib, &["create", "Smoke Test VM", "--disk-size", "0", "--no-net"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (_x, display) = xvfb();
    let started = Instant::now();
    let app = Command::new(env!("CARGO_BIN_EXE_vessel"))
        .arg("--library")
        .arg(&lib)
        .env("DISPLAY", &display)
        .env_remove("WAYLAND_DISPLAY")
        .env("XDG_CONFIG_HOME", dir.join("config"))
        .env("XDG_RUNTIME_DIR", &dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut app = Kill(app);
    let size = loop {
        if let Some(size) = window(&display) {
            break size;
        }
        if let Ok(Some(status)) = app.0.try_wait() {
            let mut err = String::new();
            app.0.stderr.take().unwrap().read_to_string(&mut err).unwrap();
            panic!("vessel exited ({status}) before its window appeared:\n{err}");
        }
        assert!(started.elapsed() < Duration::from_secs(30), "no window called Vessel after 30 s");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mapped = started.elapsed();
    println!("the window was mapped {mapped:?} after the start, {}x{}", size.0, size.1);
    assert!(size.0 >= 640 && size.1 >= 420, "window {size:?}");

    // The library shows: the VM's entry is selected (egui's selection colour) in the
    // sidebar, on the left, below the menu and toolbar.
    let deadline = Instant::now() + Duration::from_secs(20);
    let shot = dir.join("screenshot.png");
    let selection = |p: &image::Rgba<u8>| {
        // egui's dark theme selection fill, (0, 92, 128).
        p.0[0] < 30 && (80..110).contains(&p.0[1]) && (110..150).contains(&p.0[2])
    };
    loop {
        let image = screenshot(&display, &shot);
        let selected = (0..240u32)
            .flat_map(|x| (50..200u32).map(move |y| (x, y)))
            .filter(|&(x, y)| {
                x < image.width() && y < image.height() && selection(image.get_pixel(x, y))
            })
            .count();
        let colours: std::collections::HashSet<[u8; 4]> = image.pixels().map(|p| p.0).collect();
        if selected > 200 && colours.len() > 20 {
            println!(
                "screenshot: {} ({selected} selection pixels, {} colours)",
                shot.display(),
                colours.len()
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the window never showed the library ({selected} selection pixels, {} colours); see {}",
            colours.len(),
            shot.display()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(app.0.try_wait().unwrap().is_none(), "vessel is still running");
}
