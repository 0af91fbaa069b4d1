//! The app's dialogs. Each owns its draft and its `ui`, which answers in the dialog's own
//! terms (`preferences::Answer`, `settings::Answer`, `close::Choice`, ...); the app carries
//! the answer out as a `DialogAction` (saving, browsing, closing).

pub mod about;
pub mod backup;
pub mod close;
pub mod migrate;
pub mod preferences;
pub mod settings;
pub mod snapshots;

/// What a dialog asked of the app: each dialog answers in its own terms.
#[derive(Clone, Debug, PartialEq)]
pub enum DialogAction {
    Preferences(preferences::Answer),
    Settings(settings::Answer),
    Close(close::Choice),
    Snapshots(snapshots::Answer),
    Migrate(migrate::Answer),
    Backup(backup::Answer),
}
