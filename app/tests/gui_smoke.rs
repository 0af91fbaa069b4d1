//! The real window: `vessel` with no verb, on a temporary library, under Xvfb (X11, Mesa's
//! software GL). The window must appear quickly, titled Vessel, and show the library: the
//! first VM listed and selected in the sidebar (its highlighted entry) and the rest of the
//! window drawn. Then a guest's screen in its console, drawn by OpenGL (the default
//! renderer). The screenshots are kept in the tests' folders for people to look at.

mod common;

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

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vessel-gui-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
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

/// `vessel` (the window) on `lib` on the X server `xvfb`, preferences and runtime files in
/// `dir`, its log in `dir/vessel.log`; once its window is mapped, with its size. A server
/// found dead or deaf when vessel could not reach it is replaced once (that is the test
/// machine's trouble, not vessel's); a vessel that cannot reach a server that answers
/// others fails the test.
fn open_window(dir: &Path, lib: &Path, xvfb: &mut vessel_tests::Xvfb) -> (Kill, (u32, u32)) {
    let mut replaced = false;
    loop {
        match try_open_window(dir, lib, &xvfb.display) {
            Ok(opened) => return opened,
            Err(err) => match xvfb.check() {
                Err(server) if !replaced => {
                    eprintln!("the X server failed, started another: {server}\n{err}");
                    *xvfb = vessel_tests::Xvfb::start();
                    replaced = true;
                }
                Err(server) => panic!("{err}\nthe X server: {server}"),
                Ok(()) => panic!("{err}\nthe X server {} answers xdpyinfo", xvfb.display),
            },
        }
    }
}

fn try_open_window(dir: &Path, lib: &Path, display: &str) -> Result<(Kill, (u32, u32)), String> {
    let started = Instant::now();
    let log = std::fs::File::create(dir.join("vessel.log")).unwrap();
    let app = Command::new(env!("CARGO_BIN_EXE_vessel"))
        .arg("--library")
        .arg(lib)
        .env("DISPLAY", display)
        .env_remove("WAYLAND_DISPLAY")
        .env("XDG_CONFIG_HOME", dir.join("config"))
        .env("XDG_RUNTIME_DIR", dir)
        .env("RUST_LOG", "warn,vessel=info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut app = Kill(app);
    loop {
        if let Some(size) = window(display) {
            return Ok((app, size));
        }
        if let Ok(Some(status)) = app.0.try_wait() {
            let err = std::fs::read_to_string(dir.join("vessel.log")).unwrap_or_default();
            return Err(format!("vessel exited ({status}) before its window appeared:\n{err}"));
        }
        assert!(started.elapsed() < Duration::from_secs(30), "no window called Vessel after 30 s");
        std::thread::sleep(Duration::from_millis(20));
    }
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
    let dir = scratch("smoke");
    let lib = dir.join("library");
    let out = common::vessel(&lib, &["create", "Smoke Test VM", "--disk-size", "0", "--no-net"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut xvfb = vessel_tests::Xvfb::start();
    let started = Instant::now();
    let (mut app, size) = open_window(&dir, &lib, &mut xvfb);
    let display = xvfb.display.clone();
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

/// The test guest's pattern (tests/tests/display.rs): pixel (x, y) of its 128x96 frame
/// has red 0x40, green 2y, blue 2x; B, G, R and an unused byte (0) in memory.
#[test]
fn the_console_shows_the_guests_screen_through_opengl() {
    let dir = scratch("console");
    let lib = dir.join("library");
    let _vms = common::KillsVms(lib.clone());
    let kernel = vessel_tests::testguest_elf();
    let args = ["create", "Drawing", "--kernel", kernel.to_str().unwrap(), "--cmdline"];
    let more = ["test=gpu", "--memory", "64M", "--disk-size", "0", "--no-net"];
    let out = common::vessel(&lib, &[&args[..], &more[..]].concat());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // OpenGL (the default), and no autofit: the guest powers off when asked another size.
    std::fs::create_dir_all(dir.join("config/vessel")).unwrap();
    std::fs::write(
        dir.join("config/vessel/preferences.toml"),
        "renderer = \"glow\"\ntheme = \"dark\"\nautofit = false\n",
    )
    .unwrap();
    let mut xvfb = vessel_tests::Xvfb::start();
    let (_app, _) = open_window(&dir, &lib, &mut xvfb);
    let display = xvfb.display.clone();
    // Power On (Ctrl+B) the selected VM, whose console then shows, typed into the window.
    let id = Command::new("xdotool")
        .args(["search", "--sync", "--name", "^Vessel$"])
        .env("DISPLAY", &display)
        .output()
        .expect("xdotool runs (tools/install-deps installs it)");
    let id = String::from_utf8_lossy(&id.stdout).lines().next().unwrap_or_default().to_string();
    assert!(!id.is_empty(), "xdotool finds the window");
    let xdotool = |args: &[&str]| {
        let status = Command::new("xdotool").args(args).env("DISPLAY", &display).status();
        assert!(status.unwrap().success(), "xdotool {args:?}");
    };
    // The library is read before the shortcut can find the VM selected.
    std::thread::sleep(Duration::from_secs(2));
    xdotool(&["windowfocus", "--sync", &id]);
    xdotool(&["key", "ctrl+b"]);

    // The pattern on screen, scaled to fit the console: red 0x40 all over it, green and
    // blue running through their ranges. (Red and blue swapped, or the colours blended
    // with what is under them, and there is none of it.)
    let shot = dir.join("console.png");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let image = screenshot(&display, &shot);
        let pattern: Vec<[u8; 4]> = image
            .pixels()
            .map(|p| p.0)
            .filter(|p| p[0].abs_diff(0x40) <= 2 && p[1] <= 2 * 95 + 2)
            .collect();
        let greens: std::collections::HashSet<u8> = pattern.iter().map(|p| p[1] / 2).collect();
        let blues: std::collections::HashSet<u8> = pattern.iter().map(|p| p[2] / 2).collect();
        if pattern.len() > 128 * 96 && greens.len() > 90 && blues.len() > 120 {
            println!("screenshot: {} ({} pattern pixels)", shot.display(), pattern.len());
            break;
        }
        let log = std::fs::read_to_string(dir.join("vessel.log")).unwrap_or_default();
        assert!(
            Instant::now() < deadline,
            "the console never showed the guest's pattern ({} pixels like it, {} greens, {} \
             blues); see {}; the window's log:\n{log}",
            pattern.len(),
            greens.len(),
            blues.len(),
            shot.display()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    // Straight into a texture of OpenGL's, not converted.
    let log = std::fs::read_to_string(dir.join("vessel.log")).unwrap();
    assert!(log.contains("into the renderer's own texture (OpenGL)"), "{log}");
    let _ = common::vessel(&lib, &["stop", "--force", "Drawing"]);
}
