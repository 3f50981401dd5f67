//! Which files to tail: `--path` globs minus `--exclude`, found by a glob
//! rescan that inotify (through notify) triggers at once and a timer repeats
//! as a safety net for missed events.
//!
//! One glob library (globset), every pattern compiled once. In `--path`, `*`
//! and `?` stay within one path segment and `**` crosses any number, as in
//! Filebeat's `paths` (Go's `filepath.Glob` plus its `**` expansion). An
//! `--exclude` is matched against the whole path with `*` crossing `/`
//! (`*.gz` skips `.gz` files in every directory), as Filebeat's
//! `exclude_files` regexes and Fluent Bit's `exclude_path` do.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::Arc;

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};

/// Why the reader thread wakes up.
pub enum Wake {
    /// Something changed on disk; `rescan` when names changed (create,
    /// rename, delete), not just contents. `paths` are the files named.
    Fs {
        rescan: bool,
        paths: Vec<PathBuf>,
        /// A rename (from, to) seen whole by inotify.
        renamed: Option<(PathBuf, PathBuf)>,
    },
    Shutdown,
}

/// How deep `**` reaches below the directory it starts from: a bound on the
/// walk, and on loops through symlinked directories.
const MAX_DEPTH: usize = 16;

/// One `--path` glob: where its walk starts and how deep it can match.
struct PathGlob {
    pattern: String,
    /// The directory part before any glob character (empty for a pattern
    /// like `*.log`, relative to the working directory).
    root: PathBuf,
    /// Path components below `root` the pattern spans (MAX_DEPTH with `**`).
    depth: usize,
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
            let (mut root, _) = literal_root(Path::new(p));
            if root == Path::new(".") && !p.starts_with("./") {
                root = PathBuf::new(); // `a.log` matches `a.log`, not `./a.log`
            }
            let below = Path::new(p).components().count() - root.components().count();
            globs.push(PathGlob {
                pattern: p.clone(),
                root,
                depth: if p.contains("**") { MAX_DEPTH } else { below },
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
    watcher: Option<RecommendedWatcher>,
    /// Directory watched → recursively or not.
    watched: HashMap<PathBuf, RecursiveMode>,
}

impl Discovery {
    pub fn new(
        patterns: &[String],
        excludes: &[String],
        own: Vec<PathBuf>,
        follow_symlinks: bool,
        wake: SyncSender<Wake>,
        overflow: Arc<AtomicBool>,
    ) -> anyhow::Result<Discovery> {
        let Globs {
            paths: globs,
            include,
            exclude,
        } = Globs::compile(patterns, excludes)?;
        let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            let (rescan, paths) = match res {
                Ok(ev) => (
                    !matches!(
                        ev.kind,
                        EventKind::Modify(notify::event::ModifyKind::Data(_))
                            | EventKind::Access(_)
                    ),
                    ev.paths,
                ),
                // An overflowed queue lost events: look again.
                Err(_) => (true, Vec::new()),
            };
            let renamed = match paths.as_slice() {
                [from, to] if rescan => Some((from.clone(), to.clone())),
                _ => None,
            };
            // A full queue means the reader is behind (waiting for the
            // sink): drop the event, and have it look at everything instead,
            // so a stalled sink cannot make events pile up in memory.
            let ev = Wake::Fs {
                rescan,
                paths,
                renamed,
            };
            if wake.try_send(ev).is_err() {
                overflow.store(true, Ordering::Relaxed);
            }
        });
        let watcher = match watcher {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, "inotify unavailable; discovery relies on --scan-interval");
                None
            }
        };
        Ok(Discovery {
            patterns: globs,
            include,
            own: own.iter().map(|p| absolute(p)).collect(),
            follow_symlinks,
            skipped_links: std::collections::HashSet::new(),
            exclude,
            watcher,
            watched: HashMap::new(),
        })
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
        self.watch_roots();
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

    /// Watches the deepest existing directory above each glob, recursively
    /// when the glob reaches below it. A missing directory is watched
    /// through its nearest existing parent until it appears.
    fn watch_roots(&mut self) {
        let Some(watcher) = self.watcher.as_mut() else {
            return;
        };
        for g in &self.patterns {
            let (root, deep) = literal_root(Path::new(&g.pattern));
            let mut dir = root.as_path();
            let mut mode = if deep {
                RecursiveMode::Recursive
            } else {
                RecursiveMode::NonRecursive
            };
            while !dir.is_dir() {
                mode = RecursiveMode::NonRecursive;
                match dir.parent() {
                    Some(parent) if !parent.as_os_str().is_empty() => dir = parent,
                    _ => break,
                }
            }
            if !dir.is_dir() || self.watched.get(dir) == Some(&mode) {
                continue;
            }
            if let Some(old) = self.watched.get(dir) {
                if *old == RecursiveMode::Recursive {
                    continue;
                }
                let _ = watcher.unwatch(dir);
            }
            match watcher.watch(dir, mode) {
                Ok(()) => {
                    tracing::debug!(dir = %dir.display(), ?mode, "watching");
                    self.watched.insert(dir.to_path_buf(), mode);
                }
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "cannot watch; relying on rescans")
                }
            }
        }
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
        let (tx, _rx) = std::sync::mpsc::sync_channel(16);
        let pat = format!("{}/**/*.log*", d.display());
        let own = vec![d.join("a/b/z.log")];
        std::os::unix::fs::symlink("/etc/hostname", d.join("link.log")).unwrap();
        let mut disc = Discovery::new(
            &[pat],
            &["*.gz".to_string()],
            own,
            false,
            tx,
            Arc::default(),
        )
        .unwrap();
        let mut found: Vec<String> = disc
            .scan()
            .into_iter()
            .map(|(p, _)| p.strip_prefix(d).unwrap().display().to_string())
            .collect();
        found.sort();
        assert_eq!(found, ["a/y.log", "x.log"]);
    }

    fn discovery(patterns: &[String]) -> Discovery {
        let (tx, _rx) = std::sync::mpsc::sync_channel(16);
        Discovery::new(patterns, &[], Vec::new(), false, tx, Arc::default()).unwrap()
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
