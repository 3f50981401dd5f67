//! Watches directories, never files: a watch on a file follows its inode,
//! which the kubelet's `..data` swap and an editor's rename-over replace, so
//! it goes deaf after the first update. Parent directories keep their inode.
//!
//! Events are only a hint that something may have changed: they wake the
//! main loop, which re-hashes. That is why no event is filtered by name, and
//! why the watch set is recomputed before every snapshot (a directory that
//! appeared, or was deleted and recreated, is watched again).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, Result};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher as _};
use tokio::sync::Notify;

use crate::metrics::Metrics;

pub struct Watcher {
    inner: RecommendedWatcher,
    watched: HashSet<PathBuf>,
    metrics: Arc<Metrics>,
}

impl Watcher {
    /// `wake` is notified on every relevant event.
    pub fn new(wake: Arc<Notify>, metrics: Arc<Metrics>) -> Result<Watcher> {
        let m = metrics.clone();
        let inner =
            notify::recommended_watcher(move |res: notify::Result<notify::Event>| match res {
                // Opens and closes-without-write are reads (ours included: hashing
                // opens every file), not changes.
                Ok(ev) if matches!(ev.kind, EventKind::Access(_)) => {}
                Ok(_) => {
                    m.watch_events.inc();
                    wake.notify_one();
                }
                Err(e) => {
                    m.watch_errors.inc();
                    tracing::warn!(error = %e, "watch error; re-hashing");
                    wake.notify_one();
                }
            })
            .context("cannot start the file system watcher (inotify)")?;
        Ok(Watcher {
            inner,
            watched: HashSet::new(),
            metrics,
        })
    }

    /// Makes the watched set exactly `dirs` (those that exist). Re-adding an
    /// already watched directory is cheap and picks up a directory that was
    /// replaced by a new one under the same name. Returns whether a directory
    /// was added: changes made in it before its watch existed were not seen.
    pub fn reconcile(&mut self, dirs: &HashSet<PathBuf>) -> bool {
        let mut added = false;
        for gone in self.watched.difference(dirs).cloned().collect::<Vec<_>>() {
            let _ = self.inner.unwatch(&gone);
            self.watched.remove(&gone);
        }
        for dir in dirs {
            match self.inner.watch(dir, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    if self.watched.insert(dir.clone()) {
                        added = true;
                        tracing::debug!(dir = %dir.display(), "watching");
                    }
                }
                // Removed between listing and watching: the event for that
                // arrives on its parent.
                Err(e) if matches!(e.kind, notify::ErrorKind::PathNotFound) => {
                    self.watched.remove(dir);
                }
                Err(e) => {
                    self.metrics.watch_errors.inc();
                    tracing::warn!(dir = %dir.display(), error = %e, "cannot watch directory");
                    self.watched.remove(dir);
                }
            }
        }
        self.metrics.watches.set(self.watched.len() as i64);
        added
    }
}

/// The directories that reveal changes to `root`: its parent (or, while the
/// parent does not exist, the nearest ancestor that does) and, for a
/// directory, the directory itself.
pub fn dirs_for(root: &Path) -> Vec<PathBuf> {
    let abs = if root.is_absolute() {
        root.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(root)
    };
    let mut dirs = Vec::new();
    if abs.is_dir() {
        dirs.push(abs.clone());
    }
    let mut ancestor = abs.parent();
    while let Some(a) = ancestor {
        if a.is_dir() {
            dirs.push(a.to_path_buf());
            break;
        }
        ancestor = a.parent();
    }
    dirs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watches_parent_or_nearest_existing_ancestor() {
        let d = tempfile::tempdir().unwrap();
        let file = d.path().join("a.conf");
        assert_eq!(dirs_for(&file), [d.path().to_path_buf()]);
        let deep = d.path().join("x/y/z.conf");
        assert_eq!(dirs_for(&deep), [d.path().to_path_buf()]);
        assert_eq!(
            dirs_for(d.path()),
            [
                d.path().to_path_buf(),
                d.path().parent().unwrap().to_path_buf()
            ]
        );
    }
}
