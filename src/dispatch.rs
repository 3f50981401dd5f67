//! Busybox conventions: argv[0] names the applet (links made by
//! `sidecar --install`), or `sidecar APPLET ARGS…`.

use std::ffi::{OsStr, OsString};
use std::path::Path;
use std::process::ExitCode;

use crate::applets::{Entry, APPLETS};

const NOT_FOUND: u8 = 127;
const USAGE: u8 = 2;

fn find(name: &OsStr) -> Option<&'static Entry> {
    APPLETS.iter().find(|a| OsStr::new(a.name) == name)
}

pub fn main(args: Vec<OsString>) -> ExitCode {
    let invoked = args
        .first()
        .and_then(|a| Path::new(a).file_name())
        .map(OsStr::to_os_string)
        .unwrap_or_default();
    if let Some(applet) = find(&invoked) {
        return (applet.launch)(args);
    }
    let rest = &args[1.min(args.len())..];
    let Some(first) = rest.first() else {
        eprint!("{}", help());
        return ExitCode::from(USAGE);
    };
    match first.to_str() {
        Some("--list") => {
            for a in APPLETS {
                println!("{}", a.name);
            }
            ExitCode::SUCCESS
        }
        Some("--version" | "-V") => {
            println!("sidecar {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Some("--help" | "-h") => match rest.get(1) {
            Some(name) => run_applet(name, vec![name.clone(), "--help".into()]),
            None => {
                print!("{}", help());
                ExitCode::SUCCESS
            }
        },
        Some("--install") => install(&rest[1..]),
        _ => run_applet(first, rest.to_vec()),
    }
}

fn run_applet(name: &OsStr, args: Vec<OsString>) -> ExitCode {
    match find(name) {
        Some(applet) => (applet.launch)(args),
        None => {
            eprintln!("sidecar: applet not found: {}", name.to_string_lossy());
            ExitCode::from(NOT_FOUND)
        }
    }
}

fn help() -> String {
    let mut s = format!(
        "sidecar {}: the sidecars a Pod needs, in one static binary\n\n\
         Usage: sidecar APPLET [ARGS...]   (or a link named APPLET)\n       \
         sidecar --list | --install [-s] DIR | --help [APPLET] | --version\n\nApplets:\n",
        env!("CARGO_PKG_VERSION")
    );
    for a in APPLETS {
        s.push_str(&format!("  {:<22}{}\n", a.name, a.about));
    }
    s
}

/// `--install [-s] DIR`: a hard link (or with -s a symlink) per applet.
fn install(args: &[OsString]) -> ExitCode {
    let (symbolic, dir) = match args {
        [flag, dir] if flag == "-s" => (true, dir),
        [dir] => (false, dir),
        _ => {
            eprintln!("sidecar: usage: sidecar --install [-s] DIR");
            return ExitCode::from(USAGE);
        }
    };
    let exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("sidecar: --install: cannot find own executable: {e}");
            return ExitCode::FAILURE;
        }
    };
    let dir = Path::new(dir);
    for a in APPLETS {
        let link = dir.join(a.name);
        let made = if symbolic {
            std::os::unix::fs::symlink(&exe, &link)
        } else {
            std::fs::hard_link(&exe, &link)
        };
        if let Err(e) = made {
            eprintln!("sidecar: --install: {}: {e}", link.display());
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
