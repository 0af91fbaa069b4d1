//! `vessel`: the desktop VM application. Without a verb it opens the window (`ui`); the
//! verbs run guests headless (`vessel run`, `vessel start`) and manage the VM library
//! (`vessel list | create | show | stop | delete`). Each running VM lives in a process of
//! its own, `vessel-vm` (`bin/vessel-vm.rs`), which `vessel` starts.

use clap::{CommandFactory, Parser};
use vessel::cli::{self, args, headless, verbs};
use vessel::ui;
use vessel::vmhost::protocol::Request;

fn main() {
    vessel::core::report::init_logger("warn");
    let args = args::Cli::parse();
    let Some(command) = args.command else {
        let code = match ui::run(args.library) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("vessel: error: {e:#}");
                headless::EXIT_VMM_ERROR
            }
        };
        std::process::exit(code);
    };
    if let cli::Command::VhostUser(a) = &command
        && !a.forward.is_empty()
        && !a.net
    {
        // clap counts a flag's default as present, so `requires` cannot say this.
        args::Cli::command()
            .error(clap::error::ErrorKind::MissingRequiredArgument, "--forward needs --net")
            .exit();
    }
    if !matches!(
        command,
        cli::Command::Run(_)
            | cli::Command::Start { .. }
            | cli::Command::VhostUser(_)
            | cli::Command::Migrate { .. }
            | cli::Command::Receive { .. }
    ) {
        // Printing verbs end quietly when their reader goes away (`vessel list | head`), as
        // Unix tools do. Not for machines: a socket to a vanished peer must be an error.
        // SAFETY: restores the default disposition of one signal; no handler is involved.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    let library = args.library;
    let lib = || verbs::library(library.clone());
    let done = |r: anyhow::Result<()>| r.map(|()| 0);
    let json = args.json;
    let result: anyhow::Result<i32> = match command {
        cli::Command::Run(run_args) => headless::run(run_args).map(|o| o.exit_code()),
        cli::Command::VhostUser(args) => done(verbs::vhost_user(args)),
        cli::Command::Start { name, detach } => lib().and_then(|l| verbs::start(&l, &name, detach)),
        cli::Command::Pause { name } => {
            done(lib().and_then(|l| verbs::pause_resume_reset(&l, &name, Request::Pause, json)))
        }
        cli::Command::Resume { name } => {
            done(lib().and_then(|l| verbs::pause_resume_reset(&l, &name, Request::Resume, json)))
        }
        cli::Command::Suspend { name } => done(lib().and_then(|l| verbs::suspend(&l, &name, json))),
        cli::Command::Screenshot { name, file } => {
            done(lib().and_then(|l| verbs::screenshot(&l, &name, &file, json)))
        }
        cli::Command::Migrate {
            name,
            to,
            downtime_ms,
            max_passes,
            on_limit,
            insecure,
            token_file,
            copy_disks,
        } => {
            let token = token_file.map(|f| vessel::core::migration::read_token(&f)).transpose();
            done(token.map_err(anyhow::Error::from).and_then(|token| {
                let how = vessel::core::migration::How {
                    downtime_ms,
                    max_passes,
                    cancel_at_limit: on_limit == cli::args::OnLimit::Cancel,
                    insecure,
                    token,
                    copy_disks,
                };
                lib().and_then(|l| cli::migrate::migrate(&l, &name, &to, &how, json))
            }))
        }
        cli::Command::Receive { listen, stdio, token_file, insecure } => {
            done(lib().and_then(|l| match listen {
                Some(listen) if !stdio => {
                    cli::migrate::receive(&l, &listen, token_file.as_deref(), insecure, json)
                }
                _ => cli::migrate::receive_stdio(&l, token_file.as_deref()),
            }))
        }
        cli::Command::DiscardState { name } => {
            done(lib().and_then(|l| verbs::discard_state(&l, &name, json)))
        }
        cli::Command::Reset { name } => {
            done(lib().and_then(|l| verbs::pause_resume_reset(&l, &name, Request::Reset, json)))
        }
        cli::Command::Backup { verb: Some(cli::args::BackupVerb::Verify { backup }), .. } => {
            done(lib().and_then(|l| cli::backup::verify(&l, &backup, json)))
        }
        cli::Command::Backup { verb: None, name, to, keep, memory } => done(lib().and_then(|l| {
            let name = name.as_deref().unwrap_or_default();
            cli::backup::backup(&l, name, to.as_deref(), keep, memory, json)
        })),
        cli::Command::Backups { name, to } => {
            done(lib().and_then(|l| cli::backup::list(&l, &name, to.as_deref(), json)))
        }
        cli::Command::Restore { backup, point, as_name } => done(lib().and_then(|l| {
            cli::backup::restore(&l, &backup, point.as_deref(), as_name.as_deref(), json)
        })),
        cli::Command::Snapshot { action } => done(lib().and_then(|l| {
            use cli::SnapshotAction as A;
            match action {
                A::Take { name, snapshot, description } => {
                    cli::snapshot::take(&l, &name, &snapshot, &description, json)
                }
                A::List { name } => cli::snapshot::list(&l, &name, json),
                A::Revert { name, snapshot } => cli::snapshot::revert(&l, &name, &snapshot, json),
                A::Delete { name, snapshot } => cli::snapshot::delete(&l, &name, &snapshot, json),
                A::Rename { name, snapshot, new_name } => {
                    cli::snapshot::rename(&l, &name, &snapshot, &new_name, json)
                }
            }
        })),
        cli::Command::List => done(lib().and_then(|l| verbs::list(&l, json))),
        cli::Command::Create(create) => done(lib().and_then(|l| verbs::create(&l, create, json))),
        cli::Command::Show { name } => done(lib().and_then(|l| verbs::show(&l, &name, json))),
        cli::Command::Set { name, settings } => {
            done(lib().and_then(|l| verbs::set(&l, &name, &settings, json)))
        }
        cli::Command::DiskGrow { name, index, size } => {
            done(lib().and_then(|l| verbs::disk_grow(&l, &name, index, size, json)))
        }
        cli::Command::DiskAdd { name, image, format, read_only } => done(lib().and_then(|l| {
            verbs::disk_add(&l, &name, &image, format.map(Into::into), read_only, json)
        })),
        cli::Command::Rename { name, new_name } => {
            done(lib().and_then(|l| verbs::rename(&l, &name, &new_name, json)))
        }
        cli::Command::Stop { name, force } => {
            done(lib().and_then(|l| verbs::stop(&l, &name, force, json)))
        }
        cli::Command::Clone { name, new_name, linked, snapshot } => {
            done(lib().and_then(|l| {
                verbs::clone(&l, &name, &new_name, linked, snapshot.as_deref(), json)
            }))
        }
        cli::Command::Export { name, archive, format } => {
            done(lib().and_then(|l| verbs::export(&l, &name, &archive, format, json)))
        }
        cli::Command::Import { archive } => {
            done(lib().and_then(|l| verbs::import(&l, &archive, json)))
        }
        cli::Command::IsoInfo { iso } => done(verbs::iso_info(&iso, json)),
        cli::Command::Delete { name, yes } => {
            done(lib().and_then(|l| verbs::delete(&l, &name, yes, json)))
        }
    };
    let code = result.unwrap_or_else(|e| {
        // One clear line (or a list of problems), never a backtrace.
        eprintln!("vessel: error: {e:#}");
        headless::EXIT_VMM_ERROR
    });
    std::process::exit(code);
}
