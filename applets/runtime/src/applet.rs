use std::ffi::OsString;
use std::future::Future;

use crate::Context;

/// One applet of the multi-call binary.
pub trait Applet: clap::Args + Send + 'static {
    /// Matched against argv[0] and `sidecar NAME`.
    const NAME: &'static str;
    /// One line in `sidecar --help`.
    const ABOUT: &'static str;
    /// Default `--admin-addr`. Containers of a Pod share one network
    /// namespace, so every applet has its own port.
    const ADMIN_ADDR: &'static str;
    /// A multi-threaded tokio runtime for applets that serve traffic; the
    /// others idle cheaper on one thread.
    const MULTI_THREAD: bool = true;

    /// Rewrites argv before clap sees it, for drop-in compatibility with tools
    /// whose flags clap cannot express (Go's single-dash long flags).
    fn rewrite_args(args: Vec<OsString>) -> Vec<OsString> {
        args
    }

    /// An applet-specific spelling of the admin address (a drop-in tool's own
    /// flag) that overrides `--admin-addr`.
    fn admin_addr_override(&self) -> Option<String> {
        None
    }

    /// Validates flags, files, URLs and certificates without binding a port,
    /// spawning a task or starting anything (`nginx -t`, `haproxy -c`).
    /// `APPLET --check` runs only this and exits 0 or 2; a normal start runs
    /// it before the admin server binds, so nothing listens until the
    /// configuration is good. Errors name the flag or file and what is wrong;
    /// every error here means exit 2.
    fn check(&self) -> anyhow::Result<()> {
        Ok(())
    }

    /// `--check` only, after [`Applet::check`]: what a start tolerates or
    /// finds out later, but a check that promises "this will work" must
    /// report. A watched file that exists but cannot be read, a template
    /// that will not render, or a file a drop-in tool fails on at run time
    /// with its own exit code. Warnings (a file that does not exist yet and
    /// will be waited for) are logged; errors mean exit 2.
    fn check_strict(&self) -> anyhow::Result<()> {
        Ok(())
    }

    /// Process-wide set-up that needs the process to have one thread (a C
    /// library initialised with a changed environment), after
    /// [`Applet::check`] and before the runtime, the reaper or the admin
    /// server start. An error ends the start with exit 1.
    fn before_threads(&self) -> anyhow::Result<()> {
        Ok(())
    }

    /// How many threads serve traffic (applets with `MULTI_THREAD`); one
    /// means the single-threaded runtime.
    fn worker_threads(&self) -> usize {
        crate::worker_threads()
    }

    fn run(self, ctx: Context) -> impl Future<Output = anyhow::Result<()>> + Send;
}
