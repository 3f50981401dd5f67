//! The life of the process: flags → logging → check → admin server → run →
//! drain → exit.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, FromArgMatches};
use nix::sys::signal::Signal;
use tokio::signal::unix::{signal, SignalKind};

use crate::admin::{self, AdminState};
use crate::build_info;
use crate::cli::CommonArgs;
use crate::error::exit;
use crate::{logging, memory, process, Applet, Context, Shutdown, UsageError};

/// Runs applet `A` with `args` (`args[0]` is the applet's name) and returns
/// the process exit code.
pub fn launch<A: Applet>(args: Vec<OsString>) -> ExitCode {
    memory::limit_malloc_arenas();
    let args = A::rewrite_args(args);
    let parsed = command::<A>()
        .try_get_matches_from(args)
        .and_then(|m| Ok((A::from_arg_matches(&m)?, CommonArgs::from_arg_matches(&m)?)));
    let (applet, common) = match parsed {
        Ok(p) => p,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            });
        }
    };
    if let Err(e) = logging::init(common.log_format, &common.log_level) {
        eprintln!("{}: {e}", A::NAME);
        return ExitCode::from(exit::USAGE);
    }
    // Nothing binds or starts until the configuration is known to be good.
    let checked = check(&applet, &common).and_then(|addr| {
        if common.check {
            applet.check_strict()?;
        }
        Ok(addr)
    });
    let admin_addr = match checked {
        Ok(addr) => addr,
        Err(e) if common.check => {
            eprintln!("{}: {e:#}", A::NAME);
            return ExitCode::from(exit::USAGE);
        }
        Err(e) => {
            tracing::error!("{e:#}");
            return ExitCode::from(exit::USAGE);
        }
    };
    if common.check {
        eprintln!("{}: configuration is valid", A::NAME);
        return ExitCode::from(exit::OK);
    }
    if let Err(e) = applet.before_threads() {
        tracing::error!("{e:#}");
        return ExitCode::from(exit::FAILURE);
    }
    process::start_reaper();

    // One thread to run on (tcp-proxy's default, a CPU limit of one core, or
    // TOKIO_WORKER_THREADS=1): the single-threaded runtime, which polls I/O
    // on the thread that runs the tasks. A multi-threaded one with one worker still hands a task
    // between threads at times (a request relayed over HTTP/2 went from
    // 0.43 to 0.31 ms per hop and back, serially, with this).
    let workers = applet.worker_threads();
    let mut rt = if A::MULTI_THREAD && workers > 1 {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(workers);
        b
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    let rt = match rt.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::from(exit::FAILURE);
        }
    };
    let code = rt.block_on(run_applet(applet, common, admin_addr));
    // Do not wait for lingering blocking tasks (a stuck hook's pipe reader).
    rt.shutdown_timeout(std::time::Duration::from_millis(100));
    ExitCode::from(code)
}

/// How many threads serve traffic by default: `TOKIO_WORKER_THREADS` (as
/// for any tokio program), else one per CPU this container may use.
pub fn worker_threads() -> usize {
    tokio_worker_threads().unwrap_or_else(cpus)
}

/// `TOKIO_WORKER_THREADS`, when set to a count.
pub fn tokio_worker_threads() -> Option<usize> {
    std::env::var("TOKIO_WORKER_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
}

/// The CPUs this container may use, its CPU limit included.
pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Applet `A`'s command line: its own flags, then the common ones. Also the
/// source of its man page and shell completions.
pub fn command<A: Applet>() -> clap::Command {
    let cmd = clap::Command::new(A::NAME).version(build_info::get().version_line());
    // The about line last: a doc comment on an Args struct would replace it.
    CommonArgs::augment_args(A::augment_args(cmd))
        .about(A::ABOUT)
        .mut_args(negative_numbers_are_values)
}

/// `--depth -1` reaches the flag's own parser, whose error names the flag,
/// instead of clap reading `-1` as an unknown short option.
fn negative_numbers_are_values(arg: clap::Arg) -> clap::Arg {
    if arg.get_action().takes_values() {
        arg.allow_negative_numbers(true)
    } else {
        arg
    }
}

/// The runtime's own flags, then the applet's [`Applet::check`]. Returns the
/// admin address to bind (`None` for `off`).
fn check<A: Applet>(applet: &A, common: &CommonArgs) -> anyhow::Result<Option<SocketAddr>> {
    let raw_addr = applet
        .admin_addr_override()
        .or(common.admin_addr.clone())
        .unwrap_or_else(|| A::ADMIN_ADDR.to_string());
    let admin_addr = admin::parse_addr(&raw_addr)?;
    applet.check()?;
    Ok(admin_addr)
}

async fn run_applet<A: Applet>(
    applet: A,
    common: CommonArgs,
    admin_addr: Option<SocketAddr>,
) -> u8 {
    match serve::<A>(applet, common, admin_addr).await {
        Ok(()) => exit::OK,
        Err(e) => match e.downcast_ref::<UsageError>() {
            Some(u) => {
                tracing::error!("{u}");
                exit::USAGE
            }
            None => {
                tracing::error!(error = %format!("{e:#}"), "{} failed", A::NAME);
                exit::FAILURE
            }
        },
    }
}

async fn serve<A: Applet>(
    applet: A,
    common: CommonArgs,
    admin_addr: Option<SocketAddr>,
) -> anyhow::Result<()> {
    let state = Arc::new(AdminState::default());
    build_info::get().register(&mut state.registry());
    let shutdown = Shutdown::new();
    // The admin server outlives the applet's drain, so probes keep answering 503.
    let admin_stop = Shutdown::new();
    let bound = match admin_addr {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| anyhow::anyhow!("--admin-addr {addr}: cannot listen: {e}"))?;
            let local = listener.local_addr()?;
            tracing::info!(addr = %local, "admin server listening");
            admin::spawn(listener, state.clone(), admin_stop.clone());
            Some(local)
        }
        None => None,
    };
    let ctx = Context {
        admin: state.clone(),
        shutdown: shutdown.clone(),
        shutdown_grace: common.shutdown_grace,
        admin_addr: bound,
    };
    watch_signals(state, shutdown, common.shutdown_grace)?;
    let result = applet.run(ctx).await;
    admin_stop.trigger();
    result
}

/// First SIGTERM/SIGINT: readiness drops, the applet is told to drain, and
/// children get SIGTERM. If draining overruns the grace period, or a second
/// signal arrives, the process exits at once.
fn watch_signals(
    state: Arc<AdminState>,
    shutdown: Shutdown,
    grace: std::time::Duration,
) -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        let first = tokio::select! {
            _ = term.recv() => Signal::SIGTERM,
            _ = int.recv() => Signal::SIGINT,
        };
        tracing::info!(signal = %first, grace = ?grace, "shutting down");
        state.start_draining();
        shutdown.trigger();
        process::signal_children(Signal::SIGTERM);
        let second = tokio::select! {
            _ = term.recv() => Signal::SIGTERM,
            _ = int.recv() => Signal::SIGINT,
            _ = tokio::time::sleep(grace + std::time::Duration::from_secs(1)) => {
                tracing::error!(grace = ?grace, "did not drain within the shutdown grace period");
                std::process::exit(exit::FAILURE as i32);
            }
        };
        tracing::warn!(signal = %second, "second signal: exiting now");
        process::signal_children(Signal::SIGKILL);
        std::process::exit(128 + second as i32);
    });
    Ok(())
}
