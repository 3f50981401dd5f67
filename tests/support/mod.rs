//! Test harness: drives the real `sidecar` binary the way a Pod would.
//! Every wait is on an event (a log line, a file, a request) and bounded by a
//! generous deadline that only fires when something is broken.
#![allow(dead_code)]

pub mod h2;
pub mod http;
pub mod lighttpd;
pub mod metrics;
pub mod peer;

#[allow(unused_imports)]
pub use peer::{require, require_peer, require_root, Peer};

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Upper bound for any wait. Reaching it means the test failed.
pub const DEADLINE: Duration = Duration::from_secs(60);

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_sidecar"))
}

/// A fresh directory per test, removed on drop.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("sidecar-test-")
        .tempdir()
        .unwrap()
}

/// Runs `sidecar ARGS` to completion (bounded) and returns its output.
pub fn run(args: &[&str]) -> std::process::Output {
    run_cmd(Command::new(bin()).args(args))
}

pub fn run_cmd(cmd: &mut Command) -> std::process::Output {
    use std::os::unix::process::CommandExt;
    // Its own process group: on a timeout the whole group is killed, so
    // background children (a demo's servers) cannot keep the output pipes
    // open and hang the test after the command itself is gone.
    let child = cmd
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    // wait_with_output drains both pipes while waiting, so a command with
    // more output than a pipe holds cannot block on a full pipe.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(DEADLINE) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = nix::sys::signal::killpg(pid, nix::sys::signal::Signal::SIGKILL);
            let out = rx.recv().unwrap().unwrap();
            panic!(
                "command did not finish in {DEADLINE:?}; stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

#[derive(Default)]
struct Lines {
    lines: Vec<String>,
    closed: bool,
}

/// A running applet with its stderr collected line by line. Like a
/// [`Peer`], it leads a process group that is killed on drop, so the
/// commands it starts (hooks, validation commands) end with the test.
pub struct Sidecar {
    pub child: Child,
    stderr: Arc<(Mutex<Lines>, Condvar)>,
    /// Lines already consumed by `wait_for_log`, so each wait sees new lines.
    cursor: usize,
}

impl Sidecar {
    /// `sidecar APPLET ARGS…` with the admin server on an ephemeral port.
    pub fn start(applet: &str, args: &[&str]) -> Sidecar {
        Self::spawn(&mut Self::command(applet, args))
    }

    /// The command `start` runs, for callers that add to it first.
    pub fn command(applet: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin());
        cmd.arg(applet).args(args);
        if !args.iter().any(|a| a.starts_with("--admin-addr")) {
            cmd.arg("--admin-addr=127.0.0.1:0");
        }
        cmd
    }

    pub fn spawn(cmd: &mut Command) -> Sidecar {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0)
            .stdin(Stdio::null())
            .stderr(Stdio::piped());
        // A binary a test has just copied can be "busy" (ETXTBSY) for a
        // moment: a child that another test's thread forked meanwhile holds
        // the copy's write descriptor until it execs. Retried, bounded.
        let mut child = (0..200)
            .find_map(|_| match cmd.spawn() {
                Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) => {
                    std::thread::sleep(Duration::from_millis(10));
                    None
                }
                r => Some(r),
            })
            .expect("the binary stays busy (ETXTBSY)")
            .expect("start sidecar");
        let stderr = child.stderr.take().unwrap();
        let shared = Arc::new((Mutex::new(Lines::default()), Condvar::new()));
        let s = shared.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if std::env::var_os("SIDECAR_TEST_ECHO").is_some() {
                    eprintln!("[sidecar] {line}");
                }
                s.0.lock().unwrap().lines.push(line);
                s.1.notify_all();
            }
            s.0.lock().unwrap().closed = true;
            s.1.notify_all();
        });
        Sidecar {
            child,
            stderr: shared,
            cursor: 0,
        }
    }

    /// Waits for a stderr line containing `needle` after the previous match.
    pub fn wait_for_log(&mut self, needle: &str) -> String {
        self.wait_for_log_within(needle, DEADLINE)
    }

    pub fn wait_for_log_within(&mut self, needle: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        let (lock, cv) = &*self.stderr;
        let mut g = lock.lock().unwrap();
        loop {
            if let Some(i) = g.lines[self.cursor..]
                .iter()
                .position(|l| l.contains(needle))
            {
                self.cursor += i + 1;
                return g.lines[self.cursor - 1].clone();
            }
            let now = Instant::now();
            if g.closed || now >= deadline {
                let all = g.lines.join("\n");
                drop(g);
                panic!("no log line containing {needle:?}; stderr so far:\n{all}");
            }
            g = cv.wait_timeout(g, deadline - now).unwrap().0;
        }
    }

    /// Whether any line so far contains `needle` (does not move the cursor).
    pub fn logged(&self, needle: &str) -> bool {
        self.stderr
            .0
            .lock()
            .unwrap()
            .lines
            .iter()
            .any(|l| l.contains(needle))
    }

    pub fn stderr(&self) -> String {
        self.stderr.0.lock().unwrap().lines.join("\n")
    }

    /// The admin address the applet logged at startup.
    pub fn admin_addr(&mut self) -> SocketAddr {
        let line = self.wait_for_log("admin server listening");
        addr_field(&line, "addr=").expect("addr= in admin log line")
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), sig).unwrap();
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits (bounded) for the process to exit.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                // Let the stderr reader drain.
                let (lock, cv) = &*self.stderr;
                let g = lock.lock().unwrap();
                let _ = cv.wait_timeout_while(g, Duration::from_secs(5), |l| !l.closed);
                return st;
            }
            if start.elapsed() > DEADLINE {
                let _ = self.child.kill();
                panic!("sidecar did not exit; stderr:\n{}", self.stderr());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        peer::kill_group(&mut self.child);
    }
}

/// A loopback port nothing listens on (bound, then released), for peers
/// that cannot report an ephemeral port they bound themselves.
pub fn free_port() -> u16 {
    free_addr().port()
}

/// [`free_port`] as `127.0.0.1:PORT`.
pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
}

/// Parses `key=HOST:PORT` out of a log line.
pub fn addr_field(line: &str, key: &str) -> Option<SocketAddr> {
    let rest = &line[line.find(key)? + key.len()..];
    let raw: String = rest
        .trim_start_matches('"')
        .chars()
        .take_while(|c| !c.is_whitespace() && *c != '"' && *c != ',')
        .collect();
    raw.parse().ok()
}

/// Waits (bounded) until `cond` holds, polling a cheap condition such as a
/// file's presence. For events with no notification to wait on.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub fn write(path: &Path, content: &str) {
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p).unwrap();
    }
    std::fs::write(path, content).unwrap();
}
