//! The applet table: one cfg-gated line per applet, nothing else.

use std::ffi::OsString;
use std::process::ExitCode;

use sidecar_runtime::{command, launch, Applet};

pub struct Entry {
    pub name: &'static str,
    pub about: &'static str,
    pub launch: fn(Vec<OsString>) -> ExitCode,
    /// The applet's command line, for man pages and completions.
    pub command: fn() -> clap::Command,
}

const fn entry<A: Applet>() -> Entry {
    Entry {
        name: A::NAME,
        about: A::ABOUT,
        launch: launch::<A>,
        command: command::<A>,
    }
}

pub const APPLETS: &[Entry] = &[
    #[cfg(feature = "config-watch-reload")]
    entry::<sidecar_config_watch_reload::ConfigWatchReload>(),
    #[cfg(feature = "git-sync")]
    entry::<sidecar_git_sync::GitSync>(),
    #[cfg(feature = "log-tail-ship")]
    entry::<sidecar_log_tail_ship::LogTailShip>(),
    #[cfg(feature = "static-serve")]
    entry::<sidecar_static_serve::StaticServe>(),
    #[cfg(feature = "tcp-proxy")]
    entry::<sidecar_tcp_proxy::TcpProxy>(),
];
