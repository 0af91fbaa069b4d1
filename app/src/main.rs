//! `vessel`: the desktop VM application. Without a verb it opens the window (`ui`); the
//! verbs run guests headless (`vessel run`, `vessel start`) and manage the VM library
//! (`vessel list | create | show | stop | delete`).

use vessel::{cli, run, ui, vms};

use anyhow::Context;
use clap::{CommandFactory, Parser};
use vmm::devices::virtio::VirtioDevice;

/// A locally administered MAC (QEMU's prefix).
const VHOST_USER_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

/// `vessel vhost-user`: one device model behind a vhost-user socket, until the frontend
/// disconnects.
fn vhost_user(args: cli::VhostUserArgs) -> anyhow::Result<()> {
    let device: Box<dyn VirtioDevice> = if let Some(image) = &args.blk {
        // Only the image itself: a qcow2 image's backing file is not followed here.
        let spec = vessel::vms::image_spec(image.clone(), args.format.into(), Vec::new());
        let chain = vm_library::disks::backing_chain(
            image,
            args.format.into(),
            &vm_library::disks::BackingPolicy::none(),
        );
        chain.context("cannot serve the disk")?;
        Box::new(
            vmm::devices::virtio::block::Block::open(&spec, args.read_only, "vessel-vhost0")
                .context("cannot open the disk")?,
        )
    } else if args.net {
        let passt = vmm::devices::net::passt::Passt::spawn(&args.forward, args.host_access)?;
        // The frontend owns the card's configuration space, MAC included; this one is only
        // what the model would report if asked.
        Box::new(vmm::devices::virtio::net::Net::new(VHOST_USER_MAC, Box::new(passt)))
    } else {
        Box::new(vmm::devices::virtio::rng::Rng)
    };
    vmm::vhost_user::serve(device, &args.socket).context("vhost-user")?;
    Ok(())
}

fn main() {
    // Every warning a guest can provoke is rate-limited per place in the code, also those
    // logged inside the crates the devices use (virtio-queue logs each bad kick).
    let logger =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
            .format_timestamp(None)
            .build();
    log::set_max_level(logger.filter());
    let _ =
        log::set_boxed_logger(Box::new(vmm::devices::log_limit::RateLimitedLogger::new(logger)));
    let args = cli::Cli::parse();
    let Some(command) = args.command else {
        let code = match ui::run(args.library) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("vessel: error: {e:#}");
                run::EXIT_VMM_ERROR
            }
        };
        std::process::exit(code);
    };
    if let cli::Command::VhostUser(a) = &command
        && !a.forward.is_empty()
        && !a.net
    {
        // clap counts a flag's default as present, so `requires` cannot say this.
        cli::Cli::command()
            .error(clap::error::ErrorKind::MissingRequiredArgument, "--forward needs --net")
            .exit();
    }
    if !matches!(
        command,
        cli::Command::Run(_) | cli::Command::Start { .. } | cli::Command::VhostUser(_)
    ) {
        // Printing verbs end quietly when their reader goes away (`vessel list | head`), as
        // Unix tools do. Not for machines: a socket to a vanished peer must be an error.
        // SAFETY: restores the default disposition of one signal; no handler is involved.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    let library = args.library;
    let lib = || vms::library(library.clone());
    let done = |r: anyhow::Result<()>| r.map(|()| 0);
    let json = args.json;
    let result: anyhow::Result<i32> = match command {
        cli::Command::Run(run_args) => run::run(run_args).map(|o| o.exit_code()),
        cli::Command::VhostUser(args) => done(vhost_user(args)),
        cli::Command::Start { name } => {
            lib().and_then(|l| vms::start(&l, &name)).map(|o| o.exit_code())
        }
        cli::Command::List => done(lib().and_then(|l| vms::list(&l, json))),
        cli::Command::Create(create) => done(lib().and_then(|l| vms::create(&l, create, json))),
        cli::Command::Show { name } => done(lib().and_then(|l| vms::show(&l, &name, json))),
        cli::Command::Set { name, settings } => {
            done(lib().and_then(|l| vms::set(&l, &name, &settings, json)))
        }
        cli::Command::DiskGrow { name, index, size } => {
            done(lib().and_then(|l| vms::disk_grow(&l, &name, index, size, json)))
        }
        cli::Command::DiskAdd { name, image, format, read_only } => done(lib().and_then(|l| {
            vms::disk_add(&l, &name, &image, format.map(Into::into), read_only, json)
        })),
        cli::Command::Rename { name, new_name } => {
            done(lib().and_then(|l| vms::rename(&l, &name, &new_name, json)))
        }
        cli::Command::Stop { name, force } => {
            done(lib().and_then(|l| vms::stop(&l, &name, force, json)))
        }
        cli::Command::Clone { name, new_name, linked } => {
            done(lib().and_then(|l| vms::clone(&l, &name, &new_name, linked, json)))
        }
        cli::Command::Export { name, archive } => {
            done(lib().and_then(|l| vms::export(&l, &name, &archive, json)))
        }
        cli::Command::Import { archive } => {
            done(lib().and_then(|l| vms::import(&l, &archive, json)))
        }
        cli::Command::IsoInfo { iso } => done(vms::iso_info(&iso, json)),
        cli::Command::Delete { name, yes } => {
            done(lib().and_then(|l| vms::delete(&l, &name, yes, json)))
        }
    };
    let code = result.unwrap_or_else(|e| {
        // One clear line (or a list of problems), never a backtrace.
        eprintln!("vessel: error: {e:#}");
        run::EXIT_VMM_ERROR
    });
    std::process::exit(code);
}
