//! Busybox conventions: argv[0] names the applet (links made by
//! `sidecar --install`), or `sidecar APPLET ARGS…`.

use std::ffi::{OsStr, OsString};
use std::path::Path;
use std::process::ExitCode;

use clap_complete::Shell;
use sidecar_runtime::error::exit;
use sidecar_runtime::{build_info, stdout};

use crate::applets::{Entry, APPLETS};
use crate::docs;

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
    // Any other name is a link to an applet this binary lacks (busybox):
    // only `sidecar` (or `sidecar-0.2.0` …) is the multi-call form.
    if !invoked.is_empty() && !invoked.to_string_lossy().starts_with("sidecar") {
        return not_found(&invoked);
    }
    let rest = &args[1.min(args.len())..];
    let Some(first) = rest.first() else {
        eprint!("{}", help());
        return ExitCode::from(exit::USAGE);
    };
    match first.to_str() {
        Some("--list") => {
            let names: String = APPLETS.iter().map(|a| format!("{}\n", a.name)).collect();
            stdout::print(names.as_bytes())
        }
        Some("--version" | "-V") => {
            let text = format!("sidecar {}\n", build_info::get().long_version());
            stdout::print(text.as_bytes())
        }
        Some("--help" | "-h") => match rest.get(1) {
            Some(name) => run_applet(name, vec![name.clone(), "--help".into()]),
            None => stdout::print(help().as_bytes()),
        },
        Some("--install") => install(&rest[1..]),
        Some("--completions") => completions(rest.get(1)),
        Some("--man") => match rest.get(1) {
            None => stdout::print(&docs::man_page(docs::sidecar_command())),
            Some(name) => match find(name) {
                Some(applet) => stdout::print(&docs::man_page((applet.command)())),
                None => not_found(name),
            },
        },
        _ => run_applet(first, rest.to_vec()),
    }
}

fn run_applet(name: &OsStr, args: Vec<OsString>) -> ExitCode {
    match find(name) {
        Some(applet) => (applet.launch)(args),
        None => not_found(name),
    }
}

fn not_found(name: &OsStr) -> ExitCode {
    eprintln!("sidecar: applet not found: {}", name.to_string_lossy());
    ExitCode::from(exit::NOT_FOUND)
}

fn completions(shell: Option<&OsString>) -> ExitCode {
    let parsed = shell.and_then(|s| s.to_str()).map(|s| {
        <Shell as clap::ValueEnum>::from_str(s, true)
            .map_err(|_| format!("sidecar: --completions: unknown shell {s:?}"))
    });
    match parsed {
        Some(Ok(shell)) => stdout::print(&docs::completions(shell)),
        Some(Err(msg)) => {
            eprintln!("{msg} (bash, zsh, fish, elvish, powershell)");
            ExitCode::from(exit::USAGE)
        }
        None => {
            eprintln!("sidecar: usage: sidecar --completions bash|zsh|fish|elvish|powershell");
            ExitCode::from(exit::USAGE)
        }
    }
}

fn help() -> String {
    let mut s = format!(
        "sidecar {}: {}\n\n\
         Usage: sidecar APPLET [ARGS...]   (or a link named APPLET)\n       \
         sidecar --list | --install [-s] DIR | --help [APPLET] | --version\n       \
         sidecar --completions bash|zsh|fish | --man [APPLET]\n\n\
         Every applet also takes --check: validate the configuration and exit.\n\nApplets:\n",
        env!("CARGO_PKG_VERSION"),
        docs::ABOUT,
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
            return ExitCode::from(exit::USAGE);
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
