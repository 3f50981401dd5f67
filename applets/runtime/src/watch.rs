//! The one way to notice that a file (or a directory's entries) changed.
//!
//! ```no_run
//! # async fn demo() {
//! use sidecar_runtime::watch::{Fingerprint, Watch};
//! let files = ["/etc/tls/tls.crt", "/etc/tls/tls.key"];
//! let mut watch = Watch::files(files); // before the first read
//! let mut seen = Fingerprint::of_files(&files);
//! loop {
//!     watch.changed().await;
//!     let now = Fingerprint::of_files(&files);
//!     if now != seen {
//!         seen = now; // re-read and apply
//!     }
//! }
//! # }
//! ```
//!
//! Why it is built this way:
//! - It watches parent directories, never the files: a watch on a file
//!   follows its inode, which the kubelet's `..data` swap and an editor's
//!   rename-over replace, so it would go deaf after the first update.
//! - A directory replaced under the same name (or one that did not exist yet)
//!   is noticed because the nearest existing ancestor is watched and every
//!   watched directory's inode is checked again after each batch of events.
//! - Opens and reads (`IN_OPEN`, `IN_CLOSE_NOWRITE`) are ignored: the caller's
//!   own re-read would otherwise wake it again, forever (tcp-proxy once spun
//!   at 90% of a core that way).
//! - Events for unrelated files in a watched directory are dropped; bursts
//!   are coalesced into one [`Changed`] once events stop for the debounce
//!   (bounded by the optional max wait), and pending changes are a set, not
//!   a queue, so memory stays bounded however many events arrive.
//! - At idle it costs a blocked thread (notify's inotify loop) and no wakeups.
//!   Only when inotify cannot be used does it fall back to a timer, and then
//!   every tick reports everything as possibly changed.
//!
//! Events are hints: callers re-read and compare (see [`Fingerprint`]), so a
//! spurious [`Changed`] costs a read, never a wrong reload.

use std::collections::{BTreeSet, HashMap};
use std::io::Read as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use notify::event::{AccessKind, AccessMode, ModifyKind, RenameMode};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher as _};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use sha2::{Digest as _, Sha256};

/// How long events must stop before a burst is reported, unless the caller
/// sets another: long enough to cover an editor's or the kubelet's few
/// renames, short enough that nobody notices.
pub const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(100);
/// Without inotify (instance or watch limit reached), how often everything is
/// reported as possibly changed.
pub const FALLBACK_INTERVAL: Duration = Duration::from_secs(5);
/// Symlink hops followed to find the directories a path really lives in.
const MAX_LINK_HOPS: usize = 8;
/// Event paths kept per batch; beyond that the batch says `rescan`.
const MAX_EVENT_PATHS: usize = 1024;

/// Metrics a caller may hand in; the watch counts into them.
#[derive(Clone, Debug, Default)]
pub struct WatchMetrics {
    /// Events that were not reads, on watched directories.
    pub events: Counter,
    /// Errors from the watcher (lost events, watches that could not be added).
    pub errors: Counter,
    /// Directories watched now.
    pub watches: Gauge,
}

/// One batch of possible changes, after a burst settled.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changed {
    /// The watched paths, as they were added, that may have changed.
    pub targets: BTreeSet<PathBuf>,
    /// The absolute paths events named (a file written, created, renamed or
    /// removed; entries inside a watched directory). Empty when `rescan`.
    pub paths: BTreeSet<PathBuf>,
    /// Events may have been lost (queue overflow, watcher error, a directory
    /// newly watched, the timer fallback): every target is in `targets`, and
    /// callers that list directories should list them again.
    pub rescan: bool,
    /// Renames inotify saw whole, `(from, to)` in order, where either side
    /// concerns a target: a log shipper follows a file renamed away before
    /// it ever opened it. Kept even when `rescan` is set.
    pub renames: Vec<(PathBuf, PathBuf)>,
}

impl Changed {
    /// Whether `target` (as it was added) may have changed.
    pub fn contains(&self, target: &Path) -> bool {
        self.targets.contains(target)
    }
}

/// A set of watched paths. See the module documentation.
pub struct Watch {
    shared: Arc<Shared>,
    /// `None` when inotify could not start: the timer fallback runs.
    watcher: Option<RecommendedWatcher>,
    targets: Vec<Target>,
    /// Directory → the inode it had and how it is watched.
    watched: HashMap<PathBuf, WatchedDir>,
    debounce: Duration,
    max_wait: Option<Duration>,
    /// When the timer fallback reports next (inotify missing or a watch failed).
    next_fallback: Option<Instant>,
}

#[derive(Clone, Debug)]
struct Target {
    /// As the caller gave it (reported back in [`Changed::targets`]).
    given: PathBuf,
    absolute: PathBuf,
    recursive: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct WatchedDir {
    inode: (u64, u64),
    recursive: bool,
}

/// What the notify thread and the waiting caller share.
struct Shared {
    state: Mutex<State>,
    /// Wakes an async [`Watch::changed`].
    wake: tokio::sync::Notify,
    /// Wakes a [`Watch::changed_blocking`].
    cond: Condvar,
}

#[derive(Default)]
struct State {
    /// Per target (same order as `Watch::targets`): the paths whose events
    /// concern it (the target and the links leading to it).
    matchers: Vec<Vec<PathBuf>>,
    pending: Pending,
    metrics: WatchMetrics,
}

#[derive(Default)]
struct Pending {
    targets: BTreeSet<usize>,
    paths: BTreeSet<PathBuf>,
    renames: Vec<(PathBuf, PathBuf)>,
    /// Paths removed or renamed: a watched directory among them lost its
    /// kernel watch, even if a new one got the same inode number.
    gone: BTreeSet<PathBuf>,
    rescan: bool,
    first: Option<Instant>,
    last: Option<Instant>,
}

impl Pending {
    fn mark(&mut self) {
        let now = Instant::now();
        self.first.get_or_insert(now);
        self.last = Some(now);
    }

    /// When the pending burst is due: quiet for `debounce`, or `max_wait`
    /// after its first event.
    fn due(&self, debounce: Duration, max_wait: Option<Duration>) -> Option<Instant> {
        let quiet = self.last? + debounce;
        Some(match max_wait {
            Some(m) => quiet.min(self.first? + m),
            None => quiet,
        })
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn signal(&self) {
        self.wake.notify_one();
        self.cond.notify_all();
    }

    /// Runs on notify's thread: keeps what concerns a target.
    fn on_event(&self, res: notify::Result<notify::Event>) {
        let mut st = self.lock();
        let ev = match res {
            Ok(ev) if is_read(&ev.kind) => return,
            Ok(ev) => ev,
            Err(e) => {
                st.metrics.errors.inc();
                tracing::warn!(error = %e, "file watch error; re-reading everything");
                st.pending.rescan = true;
                st.pending.mark();
                drop(st);
                self.signal();
                return;
            }
        };
        st.metrics.events.inc();
        if ev.need_rescan() || ev.paths.is_empty() {
            st.pending.rescan = true;
            st.pending.mark();
            drop(st);
            self.signal();
            return;
        }
        let mut hit = false;
        let State {
            matchers, pending, ..
        } = &mut *st;
        if matches!(
            ev.kind,
            EventKind::Remove(_) | EventKind::Modify(ModifyKind::Name(_))
        ) {
            if pending.gone.len() + ev.paths.len() > MAX_EVENT_PATHS {
                pending.rescan = true;
            } else {
                pending.gone.extend(ev.paths.iter().cloned());
            }
        }
        for path in &ev.paths {
            for (i, candidates) in matchers.iter().enumerate() {
                if candidates.iter().any(|c| concerns(path, c)) {
                    hit = true;
                    pending.targets.insert(i);
                    if pending.paths.len() < MAX_EVENT_PATHS {
                        pending.paths.insert(path.clone());
                    } else {
                        pending.rescan = true;
                    }
                }
            }
        }
        if hit {
            if let ([from, to], EventKind::Modify(ModifyKind::Name(RenameMode::Both))) =
                (ev.paths.as_slice(), ev.kind)
            {
                if pending.renames.len() < MAX_EVENT_PATHS {
                    pending.renames.push((from.clone(), to.clone()));
                }
            }
            pending.mark();
            drop(st);
            self.signal();
        }
    }
}

/// Opens, reads and closes without writing: what our own re-read causes.
/// A close after writing is a change.
fn is_read(kind: &EventKind) -> bool {
    matches!(kind, EventKind::Access(a) if !matches!(a, AccessKind::Close(AccessMode::Write)))
}

/// Whether an event on `path` may change what `candidate` reads as: the
/// candidate itself, an entry inside it (a directory), one of its ancestors
/// (a directory renamed, replaced or created), or a kubelet AtomicWriter
/// entry (`..data`, `..2024_…`) beside it.
fn concerns(path: &Path, candidate: &Path) -> bool {
    path.starts_with(candidate)
        || candidate.starts_with(path)
        || (path.parent() == candidate.parent()
            && path
                .file_name()
                .is_some_and(|n| n.as_encoded_bytes().starts_with(b"..")))
}

impl Default for Watch {
    fn default() -> Self {
        Watch::new()
    }
}

impl Watch {
    /// Watches nothing yet. Never fails: without inotify it falls back to
    /// reporting everything every [`FALLBACK_INTERVAL`] (and says so once).
    pub fn new() -> Watch {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake: tokio::sync::Notify::new(),
            cond: Condvar::new(),
        });
        let handler = shared.clone();
        let watcher = match notify::recommended_watcher(move |res| handler.on_event(res)) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, interval = ?FALLBACK_INTERVAL, "inotify unavailable; re-reading watched files on a timer");
                None
            }
        };
        let next_fallback = watcher
            .is_none()
            .then(|| Instant::now() + FALLBACK_INTERVAL);
        Watch {
            shared,
            watcher,
            targets: Vec::new(),
            watched: HashMap::new(),
            debounce: DEFAULT_DEBOUNCE,
            max_wait: None,
            next_fallback,
        }
    }

    /// Watches `paths` (files or directories, existing or not yet). Create
    /// it before the first read, so that no change falls between the two.
    pub fn files<I, P>(paths: I) -> Watch
    where
        I: IntoIterator<Item = P>,
        P: AsRef<Path>,
    {
        let mut w = Watch::new();
        w.set(paths.into_iter().map(|p| p.as_ref().to_path_buf()), []);
        w
    }

    /// How long events must stop before a burst is reported.
    pub fn debounce(mut self, debounce: Duration) -> Watch {
        self.debounce = debounce;
        self
    }

    /// Reports a burst that keeps going at most this long after it started.
    pub fn max_wait(mut self, max_wait: Option<Duration>) -> Watch {
        self.max_wait = max_wait;
        self
    }

    /// Counts events, errors and watched directories into `metrics`.
    pub fn metrics(self, metrics: WatchMetrics) -> Watch {
        metrics.watches.set(self.watched.len() as i64);
        self.shared.lock().metrics = metrics;
        self
    }

    /// Adds one path: a file, or a directory whose direct entries count too.
    pub fn add(&mut self, path: impl AsRef<Path>) -> bool {
        self.push(path.as_ref(), false)
    }

    /// Adds a directory and everything below it.
    pub fn add_tree(&mut self, path: impl AsRef<Path>) -> bool {
        self.push(path.as_ref(), true)
    }

    /// Makes the watched set exactly `paths` plus the trees `trees`. Returns
    /// whether a directory is newly watched (one that appeared or was
    /// replaced): changes made in it before its watch existed were not seen,
    /// so the caller should read again.
    pub fn set(
        &mut self,
        paths: impl IntoIterator<Item = PathBuf>,
        trees: impl IntoIterator<Item = PathBuf>,
    ) -> bool {
        let paths = paths.into_iter().map(|p| (p, false));
        let trees = trees.into_iter().map(|p| (p, true));
        self.targets = paths
            .chain(trees)
            .map(|(given, recursive)| Target {
                absolute: std::path::absolute(&given).unwrap_or_else(|_| given.clone()),
                given,
                recursive,
            })
            .collect();
        self.reconcile()
    }

    fn push(&mut self, path: &Path, recursive: bool) -> bool {
        self.targets.push(Target {
            given: path.to_path_buf(),
            absolute: std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()),
            recursive,
        });
        self.reconcile()
    }

    /// The directories watched now.
    pub fn watched_dirs(&self) -> impl Iterator<Item = &Path> {
        self.watched.keys().map(PathBuf::as_path)
    }

    /// Waits for the next settled batch of possible changes. Cancel-safe:
    /// dropping the future loses nothing.
    pub async fn changed(&mut self) -> Changed {
        let shared = self.shared.clone();
        loop {
            loop {
                let notified = shared.wake.notified();
                if shared.lock().pending.first.is_some() {
                    break;
                }
                match self.next_fallback {
                    Some(at) => tokio::select! {
                        _ = notified => {}
                        _ = tokio::time::sleep_until(at.into()) => self.fallback_tick(),
                    },
                    None => notified.await,
                }
            }
            while let Some(due) = self.due() {
                if Instant::now() >= due {
                    break;
                }
                tokio::time::sleep_until(due.into()).await;
            }
            if let Some(c) = self.take() {
                return c;
            }
        }
    }

    /// [`Watch::changed`] for a thread outside the async runtime. Returns
    /// `None` when `timeout` passes with nothing pending.
    pub fn changed_blocking(&mut self, timeout: Option<Duration>) -> Option<Changed> {
        let give_up = timeout.map(|t| Instant::now() + t);
        let shared = self.shared.clone();
        loop {
            let mut st = shared.lock();
            while st.pending.first.is_none() {
                let now = Instant::now();
                if self.next_fallback.is_some_and(|at| now >= at) {
                    drop(st);
                    self.fallback_tick();
                    st = shared.lock();
                    continue;
                }
                if give_up.is_some_and(|g| now >= g) {
                    return None;
                }
                let until = [give_up, self.next_fallback].into_iter().flatten().min();
                st = match until {
                    Some(u) => {
                        shared
                            .cond
                            .wait_timeout(st, u - now)
                            .unwrap_or_else(|e| e.into_inner())
                            .0
                    }
                    None => shared.cond.wait(st).unwrap_or_else(|e| e.into_inner()),
                };
            }
            while let Some(due) = st.pending.due(self.debounce, self.max_wait) {
                let now = Instant::now();
                if now >= due {
                    break;
                }
                st = shared
                    .cond
                    .wait_timeout(st, due - now)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            drop(st);
            if let Some(c) = self.take() {
                return Some(c);
            }
        }
    }

    fn due(&self) -> Option<Instant> {
        self.shared.lock().pending.due(self.debounce, self.max_wait)
    }

    fn fallback_tick(&mut self) {
        self.next_fallback = Some(Instant::now() + FALLBACK_INTERVAL);
        let mut st = self.shared.lock();
        st.pending.rescan = true;
        st.pending.mark();
    }

    /// Takes the pending batch and watches what appeared meanwhile. `None`
    /// when nothing concerned a target after all.
    fn take(&mut self) -> Option<Changed> {
        let pending = std::mem::take(&mut self.shared.lock().pending);
        let rescan = self.reconcile_after(&pending.gone, pending.rescan) || pending.rescan;
        let targets: BTreeSet<PathBuf> = self
            .targets
            .iter()
            .enumerate()
            .filter(|(i, _)| rescan || pending.targets.contains(i))
            .map(|(_, t)| t.given.clone())
            .collect();
        if targets.is_empty() {
            return None;
        }
        Some(Changed {
            targets,
            paths: if rescan {
                BTreeSet::new()
            } else {
                pending.paths
            },
            rescan,
            renames: pending.renames,
        })
    }

    /// Watches exactly the directories the targets need now. Returns whether
    /// a directory is newly watched.
    fn reconcile(&mut self) -> bool {
        self.reconcile_after(&BTreeSet::new(), false)
    }

    /// [`Watch::reconcile`], watching again the directories in `gone` (or
    /// all, when events were lost): their kernel watches may have ended.
    fn reconcile_after(&mut self, gone: &BTreeSet<PathBuf>, lost: bool) -> bool {
        let mut matchers = Vec::with_capacity(self.targets.len());
        let mut wanted: HashMap<PathBuf, bool> = HashMap::new();
        for t in &self.targets {
            let candidates = link_chain(&t.absolute);
            for c in &candidates {
                if let Some(dir) = c.parent().and_then(nearest_dir) {
                    wanted.entry(dir).or_insert(false);
                }
                if c.is_dir() {
                    let recursive = wanted.entry(c.clone()).or_insert(false);
                    *recursive |= t.recursive;
                }
            }
            matchers.push(candidates);
        }
        self.shared.lock().matchers = matchers;

        let mut added = false;
        let unwanted: Vec<PathBuf> = self
            .watched
            .keys()
            .filter(|d| !wanted.contains_key(*d))
            .cloned()
            .collect();
        for dir in unwanted {
            self.unwatch(&dir);
        }
        for (dir, recursive) in wanted {
            let Ok(meta) = std::fs::metadata(&dir) else {
                continue; // gone meanwhile: its parent's event says so
            };
            let want = WatchedDir {
                inode: (meta.dev(), meta.ino()),
                recursive,
            };
            match self.watched.get(&dir) {
                Some(w) if *w == want && !lost && !gone.contains(&dir) => continue,
                Some(_) => self.unwatch(&dir),
                None => {}
            }
            if self.watch_dir(&dir, want) {
                added = true;
            }
        }
        self.shared
            .lock()
            .metrics
            .watches
            .set(self.watched.len() as i64);
        added
    }

    fn watch_dir(&mut self, dir: &Path, want: WatchedDir) -> bool {
        let Some(watcher) = self.watcher.as_mut() else {
            return false;
        };
        let mode = if want.recursive {
            RecursiveMode::Recursive
        } else {
            RecursiveMode::NonRecursive
        };
        match watcher.watch(dir, mode) {
            Ok(()) => {
                tracing::debug!(dir = %dir.display(), "watching");
                self.watched.insert(dir.to_path_buf(), want);
                true
            }
            Err(e) if matches!(e.kind, notify::ErrorKind::PathNotFound) => false,
            Err(e) => {
                self.shared.lock().metrics.errors.inc();
                if self.next_fallback.is_none() {
                    tracing::warn!(dir = %dir.display(), error = %e, interval = ?FALLBACK_INTERVAL, "cannot watch directory; re-reading watched files on a timer");
                    self.next_fallback = Some(Instant::now() + FALLBACK_INTERVAL);
                }
                false
            }
        }
    }

    fn unwatch(&mut self, dir: &Path) {
        self.watched.remove(dir);
        if let Some(w) = self.watcher.as_mut() {
            // Already gone when the directory was deleted: nothing to undo.
            let _ = w.unwatch(dir);
        }
    }
}

/// `path` and every path its symlinks lead through (not canonicalized, so
/// that events, which name watched directories as they were given, match).
fn link_chain(path: &Path) -> Vec<PathBuf> {
    let mut chain = vec![path.to_path_buf()];
    let mut current = path.to_path_buf();
    for _ in 0..MAX_LINK_HOPS {
        let Ok(target) = std::fs::read_link(&current) else {
            break;
        };
        let next = match current.parent() {
            Some(parent) => parent.join(target),
            None => target,
        };
        if chain.contains(&next) {
            break;
        }
        chain.push(next.clone());
        current = next;
    }
    if let Ok(real) = std::fs::canonicalize(path) {
        if !chain.contains(&real) {
            chain.push(real);
        }
    }
    chain
}

/// `dir`, or its nearest ancestor that exists.
fn nearest_dir(dir: &Path) -> Option<PathBuf> {
    dir.ancestors().find(|a| a.is_dir()).map(Path::to_path_buf)
}

/// What a set of files holds now: equal fingerprints mean nothing to reload.
/// A missing or unreadable file counts as its error kind, so a file that
/// appears or vanishes changes the fingerprint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// Reads and hashes every file in order.
    pub fn of_files<P: AsRef<Path>>(paths: &[P]) -> Fingerprint {
        let mut h = Sha256::new();
        for p in paths {
            let p = p.as_ref();
            h.update(p.as_os_str().as_encoded_bytes());
            h.update([0]);
            match hash_file(&mut h, p) {
                Ok(len) => h.update(len.to_le_bytes()),
                Err(e) => {
                    h.update(b"\xff error ");
                    h.update(e.kind().to_string().as_bytes());
                }
            }
        }
        Fingerprint(h.finalize().into())
    }

    /// Hashes bytes the caller already read.
    pub fn of_bytes(bytes: &[u8]) -> Fingerprint {
        Fingerprint(Sha256::digest(bytes).into())
    }
}

fn hash_file(h: &mut Sha256, path: &Path) -> std::io::Result<u64> {
    let mut f = std::fs::File::open(path)?;
    let mut buf = [0u8; 8192];
    let mut len = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(len);
        }
        h.update(&buf[..n]);
        len += n as u64;
    }
}

#[cfg(test)]
mod tests;
