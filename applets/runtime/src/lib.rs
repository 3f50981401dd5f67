//! `sidecar-runtime`: everything the applets share.
//!
//! An applet is a `clap::Args` struct plus an async [`Applet::run`]. The runtime
//! parses argv, sets up logging, starts the admin server, installs signal
//! handlers, reaps children and turns the applet's result into an exit code
//! (see [`launch`]). It knows no applet.

pub mod actions;
pub mod admin;
mod applet;
pub mod backoff;
pub mod build_info;
pub mod check;
pub mod cli;
mod context;
pub mod error;
pub mod expand;
mod fdlimit;
pub mod fsutil;
mod launch;
pub mod logging;
pub mod memory;
pub mod process;
pub mod redact;
mod shutdown;
pub mod side_wake;
pub mod stdout;
pub mod tls;
pub mod watch;

pub use applet::Applet;
pub use context::Context;
pub use error::UsageError;
pub use fdlimit::raise_fd_limit;
pub use launch::{command, cpus, launch, tokio_worker_threads, worker_threads};
pub use shutdown::Shutdown;

/// Re-exported so applets register metrics against the same crate version the
/// admin server encodes with.
pub use prometheus_client;
