//! Preferences that persist between runs: where the library is, which renderer draws the
//! window, the theme. Kept in `$XDG_CONFIG_HOME/vessel/preferences.toml`
//! (`~/.config/vessel/preferences.toml`); the renderer is read before the window opens,
//! so it is not in eframe's own storage.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Renderer {
    /// OpenGL (glow): fast everywhere, including software GL under Xvfb.
    #[default]
    Glow,
    /// wgpu (Vulkan, or GL underneath).
    Wgpu,
}

impl Renderer {
    pub const ALL: [Renderer; 2] = [Renderer::Glow, Renderer::Wgpu];

    pub fn label(self) -> &'static str {
        match self {
            Renderer::Glow => "OpenGL (glow)",
            Renderer::Wgpu => "wgpu (Vulkan)",
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Theme {
    #[default]
    System,
    Light,
    Dark,
}

impl Theme {
    pub const ALL: [Theme; 3] = [Theme::System, Theme::Light, Theme::Dark];

    pub fn label(self) -> &'static str {
        match self {
            Theme::System => "Follow the system",
            Theme::Light => "Light",
            Theme::Dark => "Dark",
        }
    }

    pub fn egui(self) -> egui::ThemePreference {
        match self {
            Theme::System => egui::ThemePreference::System,
            Theme::Light => egui::ThemePreference::Light,
            Theme::Dark => egui::ThemePreference::Dark,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Preferences {
    /// The VM library folder; None: the default ($XDG_DATA_HOME/vessel).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub library: Option<PathBuf>,
    pub renderer: Renderer,
    pub theme: Theme,
    /// Whether guests' displays follow the console's size (when their configuration lets
    /// them).
    pub autofit: bool,
}

/// Where preferences live.
pub fn default_path() -> PathBuf {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("vessel/preferences.toml")
}

#[derive(Debug, thiserror::Error)]
pub enum PrefsError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error(
        "{path} is not valid preferences ({source}); Vessel uses its defaults and will \
             overwrite the file when you change a preference"
    )]
    Parse { path: PathBuf, source: toml::de::Error },
    #[error("cannot save preferences to {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

impl Preferences {
    /// The preferences at `path`: defaults if there are none yet, or (with the error) if
    /// the file cannot be read.
    pub fn load(path: &Path) -> (Preferences, Option<PrefsError>) {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return (Preferences { autofit: true, ..Default::default() }, None);
            }
            Err(source) => {
                return (
                    Preferences::default(),
                    Some(PrefsError::Read { path: path.into(), source }),
                );
            }
        };
        match toml::from_str(&text) {
            Ok(prefs) => (prefs, None),
            Err(source) => (
                Preferences { autofit: true, ..Default::default() },
                Some(PrefsError::Parse { path: path.into(), source }),
            ),
        }
    }

    /// Writes the preferences (to a temporary file renamed over the old one).
    pub fn save(&self, path: &Path) -> Result<(), PrefsError> {
        let write = || -> std::io::Result<()> {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let text = toml::to_string_pretty(self).map_err(std::io::Error::other)?;
            let tmp = path.with_extension("toml.tmp");
            std::fs::write(&tmp, text)?;
            std::fs::rename(&tmp, path)
        };
        write().map_err(|source| PrefsError::Write { path: path.into(), source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preferences_round_trip_and_bad_files_fall_back_to_defaults() {
        let dir = tempdir();
        let path = dir.join("sub/preferences.toml");
        let (prefs, err) = Preferences::load(&path);
        assert!(err.is_none());
        assert!(prefs.autofit, "autofit is on by default");
        let mine = Preferences {
            library: Some("/tmp/lib".into()),
            renderer: Renderer::Wgpu,
            theme: Theme::Dark,
            autofit: false,
        };
        mine.save(&path).unwrap();
        assert_eq!(Preferences::load(&path).0, mine);
        std::fs::write(&path, "renderer = 'vulkan-9000'").unwrap();
        let (prefs, err) = Preferences::load(&path);
        assert_eq!(prefs.renderer, Renderer::Glow);
        let message = err.expect("a parse error").to_string();
        assert!(message.contains("preferences.toml"), "{message}");
        assert!(message.contains("defaults"), "{message}");
    }

    fn tempdir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("vessel-prefs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
