//! Man pages (clap_mangen) and shell completions (clap_complete), generated
//! from the same clap commands that parse the flags, so they cannot drift.

use clap::{Arg, ArgAction, Command};
use clap_complete::Shell;

use crate::applets::APPLETS;

pub const ABOUT: &str = "The sidecars a Pod needs, in one static binary";

/// `sidecar` itself: its own options and one subcommand per applet.
pub fn sidecar_command() -> Command {
    let info = sidecar_runtime::build_info::get();
    Command::new("sidecar")
        .about(ABOUT)
        .version(info.version_line())
        .long_version(info.long_version())
        .subcommands(APPLETS.iter().map(|a| (a.command)()))
        .arg(flag("list", "Print the built-in applets, one a line"))
        .arg(
            Arg::new("install")
                .long("install")
                .value_name("DIR")
                .help("Link every applet's name to this binary in DIR (-s: symbolic links)"),
        )
        .arg(
            Arg::new("completions")
                .long("completions")
                .value_name("SHELL")
                .value_parser(clap::value_parser!(Shell))
                .help("Print shell completions for sidecar and its applets"),
        )
        .arg(
            Arg::new("man")
                .long("man")
                .value_name("APPLET")
                .num_args(0..=1)
                .help("Print the man page of sidecar, or of APPLET"),
        )
}

fn flag(name: &'static str, help: &'static str) -> Arg {
    Arg::new(name)
        .long(name)
        .action(ArgAction::SetTrue)
        .help(help)
}

/// The completion script for `shell`.
pub fn completions(shell: Shell) -> Vec<u8> {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut sidecar_command(), "sidecar", &mut out);
    out
}

/// The roff man page of `cmd`.
pub fn man_page(cmd: Command) -> Vec<u8> {
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd)
        .render(&mut out)
        .expect("rendering into memory cannot fail");
    out
}
