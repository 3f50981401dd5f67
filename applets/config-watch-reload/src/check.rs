//! `--check`: the flags and everything they name, examined without watching,
//! rendering, signalling, requesting or running anything.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::Result;
use sidecar_runtime::actions::{Action, ProcessTarget};
use sidecar_runtime::check::{self, Found};
use sidecar_runtime::usage;

use crate::args::ConfigWatchReload;
use crate::plan::Plan;
use crate::render::Template;
use crate::{mountinfo, snapshot};

/// Before every start: the programs the commands run and the URLs they
/// request must be usable, whatever changes later. Files are left to
/// [`strict`]: a start waits for watched paths that do not exist yet, and
/// reports the others when it reads them.
pub fn start(a: &ConfigWatchReload, plan: &Plan) -> Result<()> {
    if let Some(spec) = &plan.validate {
        check::program("--validate-cmd", &spec.argv[0])?;
    }
    for action in &plan.actions {
        match action {
            Action::Command(c) => drop(check::program("--exec", &c.spec.argv[0])?),
            Action::Signal(s) => match &s.target {
                ProcessTarget::Name(n) if n.trim().is_empty() => {
                    return Err(usage!(
                        "--process-name: empty (the executable name to signal)"
                    ))
                }
                _ => {}
            },
            Action::Http(_) => {}
        }
    }
    if let Some(u) = a.prometheus_url.as_deref() {
        check::http_url("--prometheus.url", u)?;
    }
    if let Some(info) = &plan.runtimeinfo {
        check::http_url("--runtimeinfo-url", &info.url)?;
    }
    Ok(())
}

/// `--check` alone: every watched path that exists is readable through and
/// through, the config file exists, templates render and their outputs can
/// be written, an existing pid file holds a pid. Paths that do not exist yet
/// are said, since the start will wait for them.
pub fn strict(a: &ConfigWatchReload, plan: &Plan) -> Result<()> {
    let watched = a
        .watch
        .iter()
        .map(|p| ("--watch", p))
        .chain(a.watched_dir.iter().map(|p| ("--watched-dir", p)));
    for (flag, path) in watched {
        watched_path(flag, path, &plan.exclude)?;
    }
    if let Some(f) = &a.config_file {
        check::readable_file("--config-file", f)?;
    }
    let lookup = |name: &str| plan.lookup(name);
    for t in &plan.templates {
        template(t, &lookup)?;
    }
    if let Some(p) = &a.pid_file {
        pid_file(p)?;
    }
    // A missing token file was warned about: it is read at each request.
    if let Some(f) = &a.reload_bearer_token_file {
        if check::readable("--reload-bearer-token-file", f)? == Found::Dir {
            return Err(usage!(
                "--reload-bearer-token-file {}: is a directory",
                f.display()
            ));
        }
    }
    mountinfo::warn_pinned(&plan.roots);
    Ok(())
}

/// A watched file or directory, and every file under it, can be read.
fn watched_path(flag: &str, path: &Path, exclude: &HashSet<PathBuf>) -> Result<()> {
    if check::readable(flag, path)? == Found::Missing {
        tracing::warn!(
            path = %path.display(),
            "{flag}: does not exist yet; watched until it appears"
        );
        return Ok(());
    }
    let snap = snapshot::take(&[path.to_path_buf()], exclude);
    match snap.unreadable.split_first() {
        None => Ok(()),
        Some((first, [])) => Err(usage!("{flag} {}: cannot read {first}", path.display())),
        Some((first, more)) => Err(usage!(
            "{flag} {}: cannot read {first} (and {} more)",
            path.display(),
            more.len()
        )),
    }
}

/// The template renders with this environment, and its output can be
/// written (nothing is written).
fn template(t: &Template, lookup: &dyn Fn(&str) -> Option<String>) -> Result<()> {
    let flag = t.flag();
    check::readable_file(flag, &t.src)?;
    t.expanded(lookup).map_err(|e| usage!("{e:#}"))?;
    check::creatable(flag, &t.dst)
}

/// A pid file may be written by the app after we start; one that is there
/// already must hold a pid.
fn pid_file(path: &Path) -> Result<()> {
    if check::readable("--pid-file", path)? == Found::Missing {
        tracing::warn!(path = %path.display(), "--pid-file: does not exist yet; read at each reload");
        return Ok(());
    }
    let raw =
        std::fs::read_to_string(path).map_err(|e| usage!("--pid-file {}: {e}", path.display()))?;
    match raw.trim().parse::<i32>() {
        Ok(pid) if pid > 0 => Ok(()),
        _ => Err(usage!(
            "--pid-file {}: holds {:?}, not a pid",
            path.display(),
            raw.trim()
        )),
    }
}
