//! What the window and the command line share: making a VM (`create`), backing one up
//! (`backup`), getting a VM ready to power on (`launch`), where a live migration goes
//! (`migration`), looking into an ISO (`iso`), a VM's screen as a picture (`screenshot`), the words for a VM's state (`state`), for sizes (`units`) and for
//! errors and crashes (`report`). Nothing here knows about egui or clap.

pub mod backup;
pub mod create;
pub mod iso;
pub mod launch;
pub mod migration;
pub mod report;
pub mod screenshot;
pub mod state;
pub mod suspend;
pub mod units;
