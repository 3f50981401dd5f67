//! Child processes: spawned, timed out, reaped, and signalled on shutdown.
//!
//! `sidecar` is often PID 1 in its container, so orphans re-parented to it must
//! be reaped too. One thread waits for SIGCHLD and reaps every exited child with
//! `waitpid(-1)`; children started here get their status through a channel.
//! For that to be sound, every child of the process is started through [`run`]
//! (nothing uses `tokio::process` or `std::process::Command::status`).

use std::collections::HashMap;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::{Context as _, Result};
use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::io::AsyncReadExt;
use tokio::sync::oneshot;

/// Output kept per stream, so a chatty hook cannot grow memory.
const MAX_CAPTURE: usize = 64 * 1024;
/// How long output may still arrive after the child exited.
const OUTPUT_GRACE: Duration = Duration::from_millis(200);

/// A command to run: argv without a shell.
#[derive(Debug, Clone, Default)]
pub struct CommandSpec {
    pub argv: Vec<String>,
    pub cwd: Option<PathBuf>,
    /// Added to the inherited environment.
    pub env: Vec<(String, String)>,
    /// Killed (the whole process group) when it runs longer.
    pub timeout: Option<Duration>,
}

impl CommandSpec {
    /// Splits `cmd` as a POSIX shell splits words (quotes, backslashes), so
    /// the image needs no shell.
    pub fn parse(cmd: &str) -> Result<Self, String> {
        let argv = shell_words::split(cmd).map_err(|e| format!("cannot split {cmd:?}: {e}"))?;
        if argv.is_empty() {
            return Err("empty command".into());
        }
        Ok(CommandSpec {
            argv,
            ..Default::default()
        })
    }
}

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
    TimedOut,
}

impl Exit {
    pub fn success(self) -> bool {
        self == Exit::Code(0)
    }
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "exit code {c}"),
            Exit::Signal(s) => write!(f, "killed by signal {s}"),
            Exit::TimedOut => write!(f, "timed out"),
        }
    }
}

#[derive(Debug)]
pub struct Output {
    pub exit: Exit,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

#[derive(Default)]
struct Table {
    /// Children started by `run`, waiting for their status.
    waiters: HashMap<i32, oneshot::Sender<Exit>>,
}

fn table() -> &'static Mutex<Table> {
    static TABLE: OnceLock<Mutex<Table>> = OnceLock::new();
    TABLE.get_or_init(Default::default)
}

fn lock() -> std::sync::MutexGuard<'static, Table> {
    table().lock().unwrap_or_else(|e| e.into_inner())
}

/// Starts the reaper thread (idempotent). Called at launch, and lazily by `run`.
pub fn start_reaper() {
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| {
        let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGCHLD])
            .expect("install SIGCHLD handler");
        std::thread::Builder::new()
            .name("reaper".into())
            .spawn(move || {
                reap_all();
                for _ in signals.forever() {
                    reap_all();
                }
            })
            .expect("spawn reaper thread");
    });
}

/// Reaps every exited child. SIGCHLD coalesces, so loop until none is left.
fn reap_all() {
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(nix::errno::Errno::ECHILD) => return,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "waitpid failed");
                return;
            }
            Ok(WaitStatus::Exited(pid, code)) => deliver(pid, Exit::Code(code)),
            Ok(WaitStatus::Signaled(pid, sig, _)) => deliver(pid, Exit::Signal(sig as i32)),
            Ok(_) => continue,
        }
    }
}

fn deliver(pid: Pid, exit: Exit) {
    match lock().waiters.remove(&pid.as_raw()) {
        Some(tx) => {
            let _ = tx.send(exit);
        }
        None => tracing::debug!(pid = pid.as_raw(), %exit, "reaped orphan"),
    }
}

/// Sends `sig` to the process group of every running child (shutdown).
pub fn signal_children(sig: Signal) {
    for pid in lock().waiters.keys() {
        let _ = killpg(Pid::from_raw(*pid), sig);
    }
}

/// Runs a command to completion, capturing (the first 64 KiB of) its output.
pub async fn run(spec: &CommandSpec) -> Result<Output> {
    start_reaper();
    let program = spec.argv.first().context("empty command")?;
    let mut cmd = std::process::Command::new(program);
    cmd.args(&spec.argv[1..])
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a timeout kills what it started too.
        .process_group(0);
    if let Some(cwd) = &spec.cwd {
        cmd.current_dir(cwd);
    }
    let (tx, rx) = oneshot::channel();
    let mut child = {
        // Holding the table while spawning: the reaper cannot deliver this
        // child's status before its waiter is registered.
        let mut table = lock();
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {program:?}"))?;
        table.waiters.insert(child.id() as i32, tx);
        child
    };
    let pid = child.id() as i32;
    let stdout = child.stdout.take().map(capture);
    let stderr = child.stderr.take().map(capture);
    let exit = match spec.timeout {
        Some(limit) => match tokio::time::timeout(limit, rx).await {
            Ok(r) => r.unwrap_or(Exit::Code(-1)),
            Err(_) => {
                let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
                Exit::TimedOut
            }
        },
        None => rx.await.unwrap_or(Exit::Code(-1)),
    };
    let stdout = finish(stdout).await;
    let stderr = finish(stderr).await;
    Ok(Output {
        exit,
        stdout,
        stderr,
    })
}

/// Reads a child's output pipe into a shared buffer (the first 64 KiB kept,
/// the rest drained so the child never blocks on a full pipe).
fn capture(fd: impl Into<std::os::fd::OwnedFd>) -> Capture {
    let kept = Arc::new(Mutex::new(Vec::new()));
    let task = match tokio::net::unix::pipe::Receiver::from_owned_fd(fd.into()) {
        Ok(mut pipe) => {
            let kept = kept.clone();
            Some(tokio::spawn(async move {
                let mut buf = [0u8; 8192];
                while let Ok(n) = pipe.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    let mut k = kept.lock().unwrap_or_else(|e| e.into_inner());
                    let room = MAX_CAPTURE.saturating_sub(k.len());
                    k.extend_from_slice(&buf[..n.min(room)]);
                }
            }))
        }
        Err(e) => {
            tracing::debug!(error = %e, "cannot read child output");
            None
        }
    };
    Capture { kept, task }
}

struct Capture {
    kept: Arc<Mutex<Vec<u8>>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Capture {
    /// What the child wrote. A background process it left behind may hold
    /// the pipe open forever: after the child exits, wait only briefly for
    /// EOF, then close our end.
    async fn finish(self) -> Vec<u8> {
        if let Some(task) = self.task {
            let abort = task.abort_handle();
            if tokio::time::timeout(OUTPUT_GRACE, task).await.is_err() {
                abort.abort();
            }
        }
        std::mem::take(&mut *self.kept.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

async fn finish(c: Option<Capture>) -> Vec<u8> {
    match c {
        Some(c) => c.finish().await,
        None => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_and_captures() {
        let mut spec = CommandSpec::parse("sh -c 'echo out; echo err >&2; exit 3'").unwrap();
        spec.env.push(("X".into(), "1".into()));
        let out = run(&spec).await.unwrap();
        assert_eq!(out.exit, Exit::Code(3));
        assert_eq!(out.stdout, b"out\n");
        assert_eq!(out.stderr, b"err\n");
    }

    #[tokio::test]
    async fn a_background_grandchild_does_not_hold_the_command() {
        let spec = CommandSpec::parse("sh -c 'echo done; sleep 30 &'").unwrap();
        let out = tokio::time::timeout(Duration::from_secs(20), run(&spec))
            .await
            .expect("run returns once the command exits")
            .unwrap();
        assert_eq!(out.exit, Exit::Code(0));
        assert_eq!(out.stdout, b"done\n");
    }

    #[tokio::test]
    async fn times_out() {
        let mut spec = CommandSpec::parse("sleep 30").unwrap();
        spec.timeout = Some(Duration::from_millis(100));
        assert_eq!(run(&spec).await.unwrap().exit, Exit::TimedOut);
    }

    #[test]
    fn splits_like_a_shell() {
        let s = CommandSpec::parse(r#"a "b c" 'd e' f\ g"#).unwrap();
        assert_eq!(s.argv, ["a", "b c", "d e", "f g"]);
        assert!(CommandSpec::parse("  ").is_err());
        assert!(CommandSpec::parse("'unclosed").is_err());
    }
}
