use std::collections::HashSet;
use std::path::PathBuf;

use anyhow::{bail, Context as _, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use regex::Regex;

/// Which process to signal, in a PID namespace shared with the main container.
#[derive(Debug, Clone)]
pub enum ProcessTarget {
    PidFile(PathBuf),
    /// Exact executable name: `/proc/PID/comm` (cut to 15 bytes by the kernel)
    /// or the base name of argv[0].
    Name(String),
    /// Regex over the command line, arguments joined by spaces.
    Cmdline(Regex),
}

#[derive(Debug, Clone)]
pub struct SignalAction {
    pub signal: Signal,
    pub target: ProcessTarget,
}

/// Parses `HUP`, `SIGHUP`, `sighup` or `1`.
pub fn parse_signal(s: &str) -> Result<Signal, String> {
    let t = s.trim();
    if let Ok(n) = t.parse::<i32>() {
        return Signal::try_from(n).map_err(|_| format!("unknown signal number {n}"));
    }
    let upper = t.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse::<Signal>()
        .map_err(|_| format!("unknown signal {s:?} (examples: HUP, SIGUSR1, 10)"))
}

impl SignalAction {
    pub fn describe(&self) -> String {
        let target = match &self.target {
            ProcessTarget::PidFile(p) => format!("pid file {}", p.display()),
            ProcessTarget::Name(n) => format!("process {n:?}"),
            ProcessTarget::Cmdline(r) => format!("command line /{}/", r.as_str()),
        };
        format!("{} to {target}", self.signal)
    }

    pub fn run(&self) -> Result<()> {
        let pids = match &self.target {
            ProcessTarget::PidFile(path) => {
                let raw = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read pid file {}", path.display()))?;
                let pid: i32 = raw.trim().parse().with_context(|| {
                    format!(
                        "pid file {} holds {:?}, not a pid",
                        path.display(),
                        raw.trim()
                    )
                })?;
                vec![pid]
            }
            target => find_processes(target)?,
        };
        if pids.is_empty() {
            bail!("no process matches {}", self.describe());
        }
        for pid in &pids {
            kill(Pid::from_raw(*pid), self.signal)
                .with_context(|| format!("cannot send {} to pid {pid}", self.signal))?;
        }
        tracing::debug!(?pids, signal = %self.signal, "signalled");
        Ok(())
    }
}

/// Pids matching a name or command-line target, excluding this process, and
/// excluding processes whose parent also matches (nginx's workers get no
/// SIGHUP of their own: their master handles it).
fn find_processes(target: &ProcessTarget) -> Result<Vec<i32>> {
    let me = std::process::id() as i32;
    let mut matched: Vec<(i32, i32)> = Vec::new();
    for entry in std::fs::read_dir("/proc").context("cannot list /proc")? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let dir = entry.path();
        // Processes exit while we look: unreadable entries are skipped.
        let Ok(cmdline) = std::fs::read(dir.join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let hit = match target {
            ProcessTarget::Name(name) => {
                let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
                let comm = comm.trim_end_matches('\n');
                let short: String = name.chars().take(15).collect();
                let argv0 = args
                    .first()
                    .map(|a| a.rsplit('/').next().unwrap_or(a).to_string());
                comm == name || (name.len() > 15 && comm == short) || argv0.as_deref() == Some(name)
            }
            ProcessTarget::Cmdline(re) => !args.is_empty() && re.is_match(&args.join(" ")),
            ProcessTarget::PidFile(_) => false,
        };
        if hit {
            matched.push((pid, parent_of(pid).unwrap_or(0)));
        }
    }
    let set: HashSet<i32> = matched.iter().map(|(p, _)| *p).collect();
    let mut pids: Vec<i32> = matched
        .into_iter()
        .filter(|(_, ppid)| !set.contains(ppid))
        .map(|(p, _)| p)
        .collect();
    pids.sort_unstable();
    Ok(pids)
}

fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_names() {
        assert_eq!(parse_signal("HUP").unwrap(), Signal::SIGHUP);
        assert_eq!(parse_signal("sigusr1").unwrap(), Signal::SIGUSR1);
        assert_eq!(parse_signal("15").unwrap(), Signal::SIGTERM);
        assert!(parse_signal("NOPE").unwrap_err().contains("NOPE"));
    }
}
