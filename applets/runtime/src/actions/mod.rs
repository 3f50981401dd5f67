//! Actions tell the main container that something changed: an HTTP request,
//! a signal to a process in a shared PID namespace, or a command. Shared by
//! config-watch-reload's reloads and git-sync's hooks.

mod command;
mod http;
mod runner;
mod signal;

use std::path::PathBuf;

pub use command::CommandAction;
pub use http::{HttpAction, StatusMatch};
pub use runner::Runner;
pub use signal::{parse_signal, ProcessTarget, SignalAction};

/// Per-change details an action passes on: git-sync's `GITSYNC_HASH` env and
/// `Gitsync-Hash` header, the new worktree as a hook's working directory.
#[derive(Debug, Clone, Default)]
pub struct Trigger {
    pub env: Vec<(String, String)>,
    pub headers: Vec<(String, String)>,
    pub cwd: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub enum Action {
    Http(HttpAction),
    Signal(SignalAction),
    Command(CommandAction),
}

impl Action {
    pub async fn run(&self, trigger: &Trigger) -> anyhow::Result<()> {
        match self {
            Action::Http(a) => a.run(trigger).await,
            Action::Signal(a) => a.run(),
            Action::Command(a) => a.run(trigger).await,
        }
    }

    /// For logs and metric labels: secrets redacted.
    pub fn describe(&self) -> String {
        match self {
            Action::Http(a) => a.describe(),
            Action::Signal(a) => a.describe(),
            Action::Command(a) => a.describe(),
        }
    }

    /// The kind, for metric labels: `http`, `signal`, `command`.
    pub fn kind(&self) -> &'static str {
        match self {
            Action::Http(_) => "http",
            Action::Signal(_) => "signal",
            Action::Command(_) => "command",
        }
    }
}
