//! `vessel`: the desktop VM application. The GUI arrives with its own issue; today the
//! binary runs guests headless (`vessel run`).

mod cli;
mod run;
mod terminal;

use anyhow::Context;
use clap::{CommandFactory, Parser};
use vmm::devices::virtio::VirtioDevice;

/// A locally administered MAC (QEMU's prefix).
const VHOST_USER_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

/// `vessel vhost-user`: one device model behind a vhost-user socket, until the frontend
/// disconnects.
fn vhost_user(args: cli::VhostUserArgs) -> anyhow::Result<()> {
    let device: Box<dyn VirtioDevice> = if let Some(image) = &args.blk {
        Box::new(
            vmm::devices::virtio::block::Block::open(image, args.read_only, "vessel-vhost0")
                .context("cannot open the disk")?,
        )
    } else if args.net {
        let passt = vmm::devices::net::passt::Passt::spawn(&args.forward)?;
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
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .format_timestamp(None)
        .init();
    let args = cli::Cli::parse();
    if let cli::Command::VhostUser(a) = &args.command
        && !a.forward.is_empty()
        && !a.net
    {
        // clap counts a flag's default as present, so `requires` cannot say this.
        cli::Cli::command()
            .error(clap::error::ErrorKind::MissingRequiredArgument, "--forward needs --net")
            .exit();
    }
    let code = match args.command {
        cli::Command::Run(run_args) => match run::run(run_args) {
            Ok(outcome) => outcome.exit_code(),
            Err(e) => {
                // One clear line, never a backtrace.
                eprintln!("vessel: error: {e:#}");
                run::EXIT_VMM_ERROR
            }
        },
        cli::Command::VhostUser(args) => match vhost_user(args) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("vessel: error: {e:#}");
                run::EXIT_VMM_ERROR
            }
        },
    };
    std::process::exit(code);
}
