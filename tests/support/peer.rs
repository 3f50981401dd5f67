//! Peers the tests start (servers, tools), and what to do when one is
//! missing.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

/// Whether a test can run; `available` says whether `what` (a peer, root,
/// a kernel feature) is there. When it is not, under `CI=true` the test
/// fails, since `.ci/run` installs every peer and a green CI must not hide a
/// missing install step; elsewhere it says SKIPPED loudly and the caller
/// returns.
pub fn require(available: bool, what: &str) -> bool {
    if available {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{what} is missing, and CI=true: .ci/run installs every peer (.ci/packages.d)");
    }
    eprintln!("SKIPPED: {what} is missing (under CI=true this test fails)");
    false
}

/// [`require`] for a program, by name on PATH or by absolute path.
pub fn require_peer(program: &str) -> bool {
    require(have(program), &format!("the test peer `{program}`"))
}

/// [`require`] for root (namespaces, chroot, sshd); CI runs as root.
pub fn require_root(why: &str) -> bool {
    require(nix::unistd::geteuid().is_root(), &format!("root ({why})"))
}

/// Whether a program is installed.
pub fn have(program: &str) -> bool {
    if program.contains('/') {
        return Path::new(program).exists();
    }
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
        .unwrap_or(false)
}

/// A process a test started, in a process group of its own so that
/// whatever it forks (git daemon's per-connection children, a hook's
/// shell) goes with it: dropping it, pass or fail, kills the whole group
/// and reaps the leader.
pub struct Peer(pub Child);

impl Peer {
    pub fn spawn(cmd: &mut Command) -> std::io::Result<Peer> {
        cmd.process_group(0).spawn().map(Peer)
    }

    pub fn id(&self) -> u32 {
        self.0.id()
    }
}

impl std::ops::Deref for Peer {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Peer {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        kill_group(&mut self.0);
    }
}

/// Kills `child`'s process group (it leads one: see [`Peer::spawn`]) and
/// reaps `child`. Members that moved to a group of their own are out of
/// reach; tests must not start such daemons.
pub fn kill_group(child: &mut Child) {
    let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
    let _ = child.kill();
    let _ = child.wait();
}

/// The processes in process group `pgid` (from /proc).
pub fn group_members(pgid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid pgrp …; comm may contain spaces.
        let after = &stat[stat.rfind(')').map_or(0, |i| i + 1)..];
        let pgrp = after.split_whitespace().nth(2).and_then(|p| p.parse().ok());
        let state = after.split_whitespace().next();
        if pgrp == Some(pgid) && state != Some("Z") {
            out.push(pid);
        }
    }
    out
}
