//! `vessel`: the desktop VM application. The GUI arrives with its own issue; today the
//! binary runs guests headless (`vessel run`).

mod cli;
mod run;
mod terminal;

use clap::Parser;

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .format_timestamp(None)
        .init();
    let args = cli::Cli::parse();
    let code = match args.command {
        cli::Command::Run(run_args) => match run::run(run_args) {
            Ok(outcome) => outcome.exit_code(),
            Err(e) => {
                // One clear line, never a backtrace.
                eprintln!("vessel: error: {e:#}");
                run::EXIT_VMM_ERROR
            }
        },
    };
    std::process::exit(code);
}
