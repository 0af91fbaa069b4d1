//! `vessel-vm`: the process one running VM lives in (`vessel::vmhost::host`), which
//! `vessel` (the window, `vessel start`) starts with its end of the control socket as
//! descriptor 3: it takes the VM's run lock, builds the machine inside its sandbox and
//! serves the socket until the machine stops. A program of its own, without the window's
//! code: each running VM maps and relocates only what a VM needs.
//!
//! Usage (by `vessel`, not by hand): `vessel-vm --library LIBRARY [--incoming] VM-FOLDER`
//! (`--incoming`: the VM comes by live migration over descriptor 4, `vessel receive`).

use std::ffi::OsString;
use std::path::PathBuf;

fn main() {
    // One malloc arena for every thread (glibc gives each new thread an arena of its own,
    // some 100 KiB resident each): the VM's threads seldom allocate, a dozen of them would
    // otherwise hold a megabyte.
    // SAFETY: mallopt only sets an allocator parameter; no other thread runs yet.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) };
    // Its log, the VM's `vessel.log`, also says how it was set up: sandbox, control group.
    vessel::core::report::init_logger("warn,vessel=info");
    let code = match parse(std::env::args_os().skip(1).collect()) {
        Ok((library, root, incoming)) => {
            // A system shutting down (SIGTERM) presses the VM's power button; SIGUSR1
            // powers it off.
            vessel::cli::headless::catch_stop_signals();
            let incoming = match incoming {
                false => None,
                true => match vessel::vmhost::host::migration_fd() {
                    Some(conn) => Some(conn),
                    None => {
                        eprintln!("vessel-vm: --incoming, and no connection at descriptor 4");
                        std::process::exit(2);
                    }
                },
            };
            let control = vessel::vmhost::host::control_fd();
            vessel::vmhost::host::run(&library, &root, control, true, incoming)
        }
        Err(usage) => {
            eprintln!("vessel-vm: {usage}");
            2
        }
    };
    std::process::exit(code);
}

/// `--library LIBRARY [--incoming] VM-FOLDER`, nothing else; whether the VM comes by live
/// migration (`vessel receive` starts it so, with the connection at descriptor 4).
fn parse(args: Vec<OsString>) -> Result<(PathBuf, PathBuf, bool), String> {
    match &args[..] {
        [flag, library, root] if flag == "--library" => Ok((library.into(), root.into(), false)),
        [flag, library, incoming, root] if flag == "--library" && incoming == "--incoming" => {
            Ok((library.into(), root.into(), true))
        }
        _ => Err("usage: vessel-vm --library LIBRARY [--incoming] VM-FOLDER (vessel starts \
                  it; a VM is started with `vessel start NAME` or from the window)"
            .into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_takes_a_library_and_a_folder_and_nothing_else() {
        let args = |a: &[&str]| a.iter().map(OsString::from).collect::<Vec<_>>();
        let parsed = parse(args(&["--library", "/lib", "/lib/A.vessel"])).unwrap();
        assert_eq!(parsed, (PathBuf::from("/lib"), PathBuf::from("/lib/A.vessel"), false));
        let parsed = parse(args(&["--library", "/lib", "--incoming", "/lib/A.vessel"])).unwrap();
        assert_eq!(parsed, (PathBuf::from("/lib"), PathBuf::from("/lib/A.vessel"), true));
        for wrong in [&[][..], &["/lib/A.vessel"], &["--lib", "/lib", "/a"], &["--library", "/l"]] {
            assert!(parse(args(wrong)).unwrap_err().contains("usage"), "{wrong:?}");
        }
    }
}
