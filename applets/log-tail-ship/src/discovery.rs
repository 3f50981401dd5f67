//! Which files to tail: `--path` globs minus `--exclude`, found by a glob
//! rescan that file events (through `sidecar_runtime::watch`, on the
//! directories the globs start from) trigger at once and a timer repeats as
//! a safety net for missed events.
//!
//! One glob library (globset), every pattern compiled once. In `--path`, `*`
//! and `?` stay within one path segment and `**` crosses any number, as in
//! Filebeat's `paths` (Go's `filepath.Glob` plus its `**` expansion). An
//! `--exclude` is matched against the whole path with `*` crossing `/`
//! (`*.gz` skips `.gz` files in every directory), as Filebeat's
//! `exclude_files` regexes and Fluent Bit's `exclude_path` do.

use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Duration;

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};
use sidecar_runtime::watch::Watch;

/// Why the reader thread wakes up.
pub enum Wake {
    /// Something changed on disk; `rescan` when events were lost. `paths`
    /// are the files named (as the globs name them).
    Fs {
        rescan: bool,
        paths: Vec<PathBuf>,
        /// Renames (from, to) seen whole by inotify.
        renamed: Vec<(PathBuf, PathBuf)>,
    },
    Shutdown,
}

/// File events are gathered this long before the reader is woken, and at
/// most WATCH_MAX_WAIT while a file is being written without a pause.
const WATCH_DEBOUNCE: Duration = Duration::from_millis(5);
const WATCH_MAX_WAIT: Duration = Duration::from_millis(50);

/// How deep `**` reaches below the directory it starts from: a bound on the
/// walk, and on loops through symlinked directories.
const MAX_DEPTH: usize = 16;

/// One `--path` glob: where its walk starts and how deep it can match.
struct PathGlob {
    /// The directory part before any glob character (empty for a pattern
    /// like `*.log`, relative to the working directory).
    root: PathBuf,
    /// Path components below `root` the pattern spans (MAX_DEPTH with `**`).
    depth: usize,
    /// Whether it reaches below the directory `root` (its watch is a tree).
    deep: bool,
}

/// `--path` and `--exclude`, compiled once.
pub struct Globs {
    paths: Vec<PathGlob>,
    include: GlobSet,
    exclude: GlobSet,
}

impl Globs {
    pub fn compile(patterns: &[String], excludes: &[String]) -> anyhow::Result<Globs> {
        let mut include = GlobSetBuilder::new();
        let mut globs = Vec::new();
        for p in patterns {
            let g = GlobBuilder::new(p)
                .literal_separator(true)
                .build()
                .map_err(|e| sidecar_runtime::usage!("--path {p:?}: invalid glob: {e}"))?;
            include.add(g);
            let (mut root, deep) = literal_root(Path::new(p));
            if root == Path::new(".") && !p.starts_with("./") {
                root = PathBuf::new(); // `a.log` matches `a.log`, not `./a.log`
            }
            let below = Path::new(p).components().count() - root.components().count();
            globs.push(PathGlob {
                root,
                depth: if p.contains("**") { MAX_DEPTH } else { below },
                deep,
            });
        }
        let mut b = GlobSetBuilder::new();
        for e in excludes {
            b.add(
                Glob::new(e).map_err(|err| {
                    sidecar_runtime::usage!("--exclude {e:?}: invalid glob: {err}")
                })?,
            );
        }
        Ok(Globs {
            paths: globs,
            include: include.build()?,
            exclude: b.build()?,
        })
    }
}

pub struct Discovery {
    patterns: Vec<PathGlob>,
    include: GlobSet,
    exclude: GlobSet,
    /// Our own files (checkpoints, dead letter): tailing them would loop.
    own: Vec<PathBuf>,
    follow_symlinks: bool,
    /// Symlinks already warned about.
    skipped_links: std::collections::HashSet<PathBuf>,
}

impl Discovery {
    pub fn new(
        patterns: &[String],
        excludes: &[String],
        own: Vec<PathBuf>,
        follow_symlinks: bool,
    ) -> anyhow::Result<Discovery> {
        let Globs {
            paths: globs,
            include,
            exclude,
        } = Globs::compile(patterns, excludes)?;
        Ok(Discovery {
            patterns: globs,
            include,
            own: own.iter().map(|p| absolute(p)).collect(),
            follow_symlinks,
            skipped_links: std::collections::HashSet::new(),
            exclude,
        })
    }

    /// A watch on the directory each glob starts from (its whole tree when
    /// the glob reaches below it). The watch follows directories that do
    /// not exist yet or are replaced. Made before the first scan, so no
    /// file created in between goes unseen.
    pub fn watch(&self) -> Watch {
        let (trees, dirs): (Vec<&PathGlob>, Vec<&PathGlob>) =
            self.patterns.iter().partition(|g| g.deep);
        let dir = |g: &PathGlob| match g.root.as_os_str().is_empty() {
            true => PathBuf::from("."),
            false => g.root.clone(),
        };
        let mut w = Watch::new()
            .debounce(WATCH_DEBOUNCE)
            .max_wait(Some(WATCH_MAX_WAIT));
        w.set(dirs.into_iter().map(dir), trees.into_iter().map(dir));
        w
    }

    /// Whether a scan would list `path` (if it were a regular file).
    pub fn matches(&self, path: &Path) -> bool {
        let abs = absolute(path);
        self.include.is_match(path)
            && !self.exclude.is_match(path)
            && !self.own.iter().any(|o| abs.starts_with(o))
    }

    /// Every regular file (symlinks followed) the globs match now.
    pub fn scan(&mut self) -> Vec<(PathBuf, std::fs::Metadata)> {
        let mut candidates = std::collections::BTreeSet::new();
        for g in &self.patterns {
            walk(&g.root, g.depth, &mut |p| {
                if self.include.is_match(p) {
                    candidates.insert(p.to_path_buf());
                }
            });
        }
        let mut out = Vec::new();
        {
            for path in candidates {
                if self.exclude.is_match(&path) {
                    continue;
                }
                let abs = absolute(&path);
                if self.own.iter().any(|o| abs.starts_with(o)) {
                    continue;
                }
                let is_link =
                    std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink());
                if is_link && !self.follow_symlinks {
                    // The app container controls this volume: a link to a
                    // secret in ours (a service account token) must not be shipped.
                    if self.skipped_links.insert(path.clone()) {
                        tracing::warn!(path = %path.display(), "skipping symlink (see --follow-symlinks)");
                    }
                    continue;
                }
                match std::fs::metadata(&path) {
                    Ok(m) if m.is_file() => out.push((path, m)),
                    _ => {}
                }
            }
        }
        out
    }
}

/// Calls `found` with every path up to `depth` levels below `root` that is
/// not a directory (or is, at the last level). Directories reached through
/// symlinks are walked too, as shells' globs do; the depth bounds loops.
/// Unreadable directories are skipped: the next scan tries again.
fn walk(root: &Path, depth: usize, found: &mut dyn FnMut(&Path)) {
    if depth == 0 {
        return;
    }
    let dir = if root.as_os_str().is_empty() {
        Path::new(".")
    } else {
        root
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = root.join(entry.file_name());
        let is_dir = match entry.file_type() {
            Ok(t) if t.is_symlink() => path.is_dir(),
            Ok(t) => t.is_dir(),
            Err(_) => false,
        };
        if is_dir && depth > 1 {
            walk(&path, depth - 1, found);
        } else if !is_dir {
            found(&path);
        }
    }
}

/// Hands file events to the reader thread until the reader is gone. A full
/// queue means the reader is behind (waiting for the sink): the batch is
/// dropped and the reader told to look at everything instead, so a stalled
/// sink cannot make events pile up in memory.
pub async fn forward(mut watch: Watch, wake: SyncSender<Wake>, overflow: Arc<AtomicBool>) {
    // Events name absolute paths; relative globs name files relative to here.
    let cwd = std::env::current_dir().unwrap_or_default();
    let local = |p: PathBuf| match p.strip_prefix(&cwd) {
        Ok(rel) if !cwd.as_os_str().is_empty() => rel.to_path_buf(),
        _ => p,
    };
    loop {
        let c = watch.changed().await;
        let ev = Wake::Fs {
            rescan: c.rescan,
            paths: c.paths.into_iter().map(local).collect(),
            renamed: c
                .renames
                .into_iter()
                .map(|(from, to)| (local(from), local(to)))
                .collect(),
        };
        match wake.try_send(ev) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => overflow.store(true, Ordering::Relaxed),
            Err(TrySendError::Disconnected(_)) => return,
        }
    }
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// The directory part of `pattern` before any glob character, and whether
/// the pattern reaches more than one level below it.
fn literal_root(pattern: &Path) -> (PathBuf, bool) {
    let mut root = PathBuf::new();
    let comps: Vec<Component> = pattern.components().collect();
    for (i, c) in comps.iter().enumerate() {
        let s = c.as_os_str().to_string_lossy();
        if s.contains(['*', '?', '[', '{']) || i == comps.len() - 1 {
            let below = comps.len() - i;
            return (
                if root.as_os_str().is_empty() {
                    PathBuf::from(".")
                } else {
                    root
                },
                below > 1,
            );
        }
        root.push(c);
    }
    (root, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots() {
        for (pattern, root, recursive) in [
            ("/var/log/app/*.log", "/var/log/app", false),
            ("/var/log/app/a.log", "/var/log/app", false),
            ("/var/log/**/a.log", "/var/log", true),
            ("/var/*/x/a.log", "/var", true),
            ("a.log", ".", false),
        ] {
            assert_eq!(
                literal_root(Path::new(pattern)),
                (PathBuf::from(root), recursive),
                "{pattern}"
            );
        }
    }

    #[test]
    fn scan_applies_globs_and_excludes() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("a/b")).unwrap();
        for f in ["x.log", "a/y.log", "a/b/z.log", "a/b/z.log.gz"] {
            std::fs::write(d.join(f), "1\n").unwrap();
        }
        let pat = format!("{}/**/*.log*", d.display());
        let own = vec![d.join("a/b/z.log")];
        std::os::unix::fs::symlink("/etc/hostname", d.join("link.log")).unwrap();
        let mut disc = Discovery::new(&[pat], &["*.gz".to_string()], own, false).unwrap();
        let mut found: Vec<String> = disc
            .scan()
            .into_iter()
            .map(|(p, _)| p.strip_prefix(d).unwrap().display().to_string())
            .collect();
        found.sort();
        assert_eq!(found, ["a/y.log", "x.log"]);
    }

    fn discovery(patterns: &[String]) -> Discovery {
        Discovery::new(patterns, &[], Vec::new(), false).unwrap()
    }

    fn found(d: &Path, disc: &mut Discovery) -> Vec<String> {
        disc.scan()
            .into_iter()
            .map(|(p, _)| p.strip_prefix(d).unwrap().display().to_string())
            .collect()
    }

    #[test]
    fn a_star_stays_within_one_directory_and_two_stars_cross_any() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("ns_pod_uid/app")).unwrap();
        for f in [
            "top.log",
            "ns_pod_uid/app/0.log",
            "ns_pod_uid/app/0.log.20240101",
        ] {
            std::fs::write(d.join(f), "1\n").unwrap();
        }
        let star = format!("{}/*.log", d.display());
        let mut disc = discovery(std::slice::from_ref(&star));
        assert_eq!(found(d, &mut disc), ["top.log"]);
        assert!(!disc.matches(&d.join("ns_pod_uid/app/0.log")));
        let pods = format!("{}/*/*/*.log", d.display());
        assert_eq!(found(d, &mut discovery(&[pods])), ["ns_pod_uid/app/0.log"]);
        let deep = format!("{}/**/*.log", d.display());
        let mut disc = discovery(&[deep]);
        assert_eq!(found(d, &mut disc), ["ns_pod_uid/app/0.log", "top.log"]);
        assert!(disc.matches(&d.join("ns_pod_uid/app/0.log")));
    }
}
