//! The console page: a running VM's screen, and the keyboard and pointer going into it.
//! `screen` keeps the guest's frame in a texture, `view` places it, `input` turns egui's
//! events into the guest's keys and pointer, `keymap` maps physical keys to evdev codes.

pub mod input;
pub mod keymap;
pub mod native;
pub mod screen;
pub mod view;

use std::path::Path;
use std::time::{Duration, Instant};

use crate::vmhost::client::Input;
use egui::{Sense, Vec2};

use super::session::{Phase, Session};
use input::{Keyboard, Pointer};
use screen::Screen;
use view::Scale;

/// How long a guest may run without drawing anything before the console says so.
pub const BLANK_PATIENCE: Duration = Duration::from_secs(10);

/// A running VM's console: its screen, its pointer, what was asked of its display.
#[derive(Default)]
pub struct VmConsole {
    pub screen: Screen,
    pub pointer: Pointer,
    /// The size last asked of the guest (autofit).
    pub requested: Option<(u32, u32)>,
    /// When its thumbnail was last brought up to date.
    pub thumb_at: Option<Instant>,
    /// How far an Actual Size screen larger than the console is scrolled (points).
    pub pan: Vec2,
}

impl VmConsole {
    /// Brings the thumbnail up to date, twice a second at most (guests not in view).
    /// (`renderer`: the window's renderer, whose own texture takes the pixels as they are.)
    pub fn refresh_thumbnail(
        &mut self,
        ctx: &egui::Context,
        session: &Session,
        renderer: Option<&mut eframe::Frame>,
    ) {
        if let Some(display) = &session.display
            && self.thumb_at.is_none_or(|t| t.elapsed() > Duration::from_millis(500))
        {
            self.screen.update(ctx, display, false, renderer);
            self.thumb_at = Some(Instant::now());
        }
    }
}

/// How the console page shows the guest.
#[derive(Clone, Copy, Debug)]
pub struct ConsoleOptions {
    pub scale: Scale,
    /// Ask the guest for the console's size.
    pub autofit: bool,
    /// The VM's display follows the window (not a fixed size).
    pub follow: bool,
}

/// The egui id of a VM's console (its keyboard focus).
pub fn console_id(root: &Path) -> egui::Id {
    egui::Id::unique(("console", root))
}

/// What the console says while the guest's screen is black: the guest has not drawn for
/// `BLANK_PATIENCE`; where else a firmware VM's text goes; and this host's limits may be
/// why.
pub fn blank_text(
    drawn: bool,
    running_for: Option<Duration>,
    firmware: bool,
    host_hint: Option<&str>,
) -> Option<String> {
    if drawn || running_for.is_none_or(|t| t < BLANK_PATIENCE) {
        return None;
    }
    let mut text = "The guest shows nothing yet.".to_string();
    if firmware {
        text.push_str(
            " The firmware also writes its text to the Serial tab, which may say what \
             happened.",
        );
    }
    if let Some(hint) = host_hint {
        text.push_str("\n\n");
        text.push_str(hint);
    }
    Some(text)
}

/// The console page of `root`'s VM. Returns the time spent bringing its texture up to
/// date (for the benchmark).
pub fn page(
    ui: &mut egui::Ui,
    root: &Path,
    session: &Session,
    console: &mut VmConsole,
    keyboard: &mut Keyboard,
    options: ConsoleOptions,
    renderer: Option<&mut eframe::Frame>,
) -> Duration {
    let ctx = ui.ctx().clone();
    let ppp = ctx.pixels_per_point();
    let area = ui.available_rect_before_wrap();
    let id = console_id(root);
    let response = ui.interact(area, id, Sense::click_and_drag());
    ui.painter().rect_filled(area, 0.0, egui::Color32::BLACK);
    let grey = |text: String| egui::RichText::new(text).color(egui::Color32::LIGHT_GRAY);
    let Some(display) = session.display.clone() else {
        ui.put(area, egui::Label::new(grey(phase_text(&session.phase))));
        return Duration::ZERO;
    };
    // Autofit: the guest's display follows the console's size in screen pixels.
    if options.autofit && options.follow && options.scale == Scale::Fit {
        let want = ((area.width() * ppp).round() as u32, (area.height() * ppp).round() as u32);
        if console.requested != Some(want) && want.0 >= 64 && want.1 >= 64 {
            session.request_resize(want.0, want.1);
            console.requested = Some(want);
        }
    }
    let started = Instant::now();
    console.screen.update(&ctx, &display, true, renderer);
    let upload = started.elapsed();
    let hint = super::session::host_hint();
    let blank = blank_text(display.drawn(), session.running_for(), session.firmware, hint);
    let size = console.screen.size();
    let Some(texture) = console.screen.texture_id() else {
        let [w, h] = size;
        let text = if w > 0 {
            format!("The guest's screen, {w}x{h}, is larger than this graphics card can show")
        } else {
            blank.unwrap_or_else(|| "The guest shows nothing yet".to_string())
        };
        ui.put(area.shrink(24.0), egui::Label::new(grey(text)).wrap().selectable(false));
        // Nothing to point at, but the keyboard still reaches the guest (its firmware
        // reads keys before anything draws).
        response
            .widget_info(|| egui::WidgetInfo::labeled(egui::Role::Canvas, true, "Guest console"));
        take_keyboard(&ctx, root, session, console, keyboard, &response);
        return upload;
    };
    let rect = match options.scale {
        Scale::Fit => view::place(area, size, Scale::Fit, ppp),
        Scale::Actual => {
            // Larger than the console: the pointer at an edge scrolls the screen.
            if let Some(pointer) = response.hover_pos() {
                let towards = view::edge_scroll(pointer, area, 24.0);
                if towards != Vec2::ZERO {
                    console.pan += towards * 16.0;
                    ctx.request_repaint();
                }
            }
            view::place_panned(area, size, ppp, &mut console.pan)
        }
    };
    // Over the black filled above: a texture holding the guest's pixels as they are
    // carries whatever the guest left in their unused byte as alpha (see `native`).
    ui.painter().image(
        texture,
        rect,
        egui::Rect::from_min_max(egui::pos2(0.0, 0.0), egui::pos2(1.0, 1.0)),
        egui::Color32::WHITE,
    );
    // A black screen the guest never drew on (its boot framebuffer, put up at power-on):
    // say so over it, with what this host cannot do.
    if let Some(text) = blank {
        ui.put(area.shrink(24.0), egui::Label::new(grey(text)).wrap().selectable(false));
    }
    response.widget_info(|| egui::WidgetInfo::labeled(egui::Role::Canvas, true, "Guest console"));

    let Some(input) = take_keyboard(&ctx, root, session, console, keyboard, &response) else {
        return upload;
    };
    // Relative mode, or a guest with no absolute pointer yet (firmware, boot loaders,
    // guests without a tablet driver): a click grabs the host's pointer.
    // Once the guest's tablet driver runs, a grab it needed ends by itself.
    let grab = console.pointer.relative || !input.pointer_is_absolute();
    if grab && !console.pointer.grabbed && response.clicked() {
        console.pointer.grab(&ctx);
    } else if !grab && console.pointer.grabbed {
        console.pointer.ungrab(&ctx);
    }
    let events = ctx.input(|i| i.events.clone());
    console.pointer.route(&events, &input, rect, size, ppp, response.hovered());
    // The guest's cursor as the pointer (absolute mode).
    if !console.pointer.grabbed
        && response.hovered()
        && let Some((tex, csize, hot)) = console.screen.cursor(&ctx, &display)
        && let Some(pos) = ctx.pointer_hover_pos()
    {
        let scale = rect.width() / size[0].max(1) as f32;
        let min = pos - hot * scale;
        ui.painter().with_clip_rect(area).image(
            tex,
            egui::Rect::from_min_size(min, Vec2::from(csize) * scale),
            egui::Rect::from_min_max(egui::pos2(0.0, 0.0), egui::pos2(1.0, 1.0)),
            egui::Color32::WHITE,
        );
        ctx.set_cursor_icon(egui::CursorIcon::None);
    }
    upload
}

/// The console takes the keyboard when clicked and gives it back when it loses focus;
/// the guest's input, if it has one.
fn take_keyboard(
    ctx: &egui::Context,
    root: &Path,
    session: &Session,
    console: &mut VmConsole,
    keyboard: &mut Keyboard,
    response: &egui::Response,
) -> Option<Input> {
    let input = session.input.clone()?;
    if response.clicked() || response.drag_started() || response.secondary_clicked() {
        response.request_focus();
    }
    if response.has_focus() {
        keyboard.take(root, ctx.input(|i| i.modifiers));
    } else if keyboard.owner() == Some(root) {
        keyboard.release(Some(&input));
        console.pointer.ungrab(ctx);
    }
    Some(input)
}

fn phase_text(phase: &Phase) -> String {
    match phase {
        Phase::Starting => "Starting…".into(),
        Phase::Running => "Running; waiting for the guest's display".into(),
        Phase::Paused => "Paused".into(),
        Phase::Ended(_) => "Stopped".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_screen_never_drawn_on_says_so_after_a_while() {
        let long = Some(BLANK_PATIENCE + Duration::from_secs(1));
        assert_eq!(blank_text(true, long, false, Some("PVM")), None, "the guest drew");
        let early = Some(Duration::from_secs(1));
        assert_eq!(blank_text(false, early, false, Some("PVM")), None, "early");
        assert_eq!(blank_text(false, None, false, Some("PVM")), None, "not running yet");
        let text = blank_text(false, long, false, Some("This host is PVM")).unwrap();
        assert!(text.starts_with("The guest shows nothing yet.") && text.ends_with("PVM"));
        let text = blank_text(false, long, false, None);
        assert_eq!(text.as_deref(), Some("The guest shows nothing yet."));
        let text = blank_text(false, long, true, None).unwrap();
        assert!(text.contains("writes its text to the Serial tab"), "a firmware VM: {text}");
    }
}
