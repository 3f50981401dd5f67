//! The reader thread: follows files through appends, rotation (rename and
//! copytruncate), deletion and restarts, and cuts them into lines.
//!
//! It runs on its own OS thread with plain blocking reads: large `pread`s
//! into one reused buffer, `memchr` for newlines, and lines serialized
//! straight into the batch, so a line costs no allocation of its own.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod copies;
mod file;

use crate::checkpoint::{FileKey, Fingerprint, Store};
use crate::config::ReadFrom;
use crate::discovery::{Discovery, Wake};
use crate::emitter::{Emitter, Source};
use crate::k8s::Metadata;
use crate::lines::{Cut, LineCutter};
use crate::metrics::Metrics;
use copies::{Class, Orphan};
use file::{read_head, same_file, source, Closed, Seeds, State, Tracked};

/// Bytes per read call: large reads keep syscalls per MiB low.
const READ_CHUNK: usize = 1 << 20;
/// Bytes read from one file before the others get a turn.
const FAIR_SHARE: usize = 8 << 20;
/// The longest the reader sleeps without looking at its files.
const POLL: Duration = Duration::from_secs(1);

pub struct Settings {
    pub max_line_bytes: usize,
    pub read_from: ReadFrom,
    pub rotate_wait: Duration,
    pub close_inactive: Duration,
    pub scan_interval: Duration,
}

enum Verdict {
    Keep,
    Finish(&'static str),
}

pub struct Tailer {
    settings: Settings,
    metadata: Arc<Metadata>,
    discovery: Discovery,
    store: Arc<Mutex<Store>>,
    emitter: Emitter,
    metrics: Metrics,
    files: HashMap<FileKey, Tracked>,
    closed: HashMap<FileKey, Closed>,
    /// Checkpoints loaded at start whose file was not found under its inode:
    /// a file with the same fingerprint (renamed or copied while we were
    /// down) resumes from them.
    orphans: Vec<Orphan>,
    buf: Vec<u8>,
    last_scan: Instant,
    first_start: bool,
    /// Paths inotify named since the last pass. A file at its end is looked
    /// at again when named here, or after POLL: with many idle files, one
    /// busy file's events do not make us stat all of them.
    touched: std::collections::HashSet<PathBuf>,
    /// Look at every file in the next pass (inotify events were dropped).
    touch_all: bool,
}

impl Tailer {
    pub fn new(
        settings: Settings,
        metadata: Arc<Metadata>,
        discovery: Discovery,
        store: Arc<Mutex<Store>>,
        emitter: Emitter,
        metrics: Metrics,
    ) -> Tailer {
        let first_start = lock(&store).first_start;
        Tailer {
            settings,
            metadata,
            discovery,
            store,
            emitter,
            metrics,
            files: HashMap::new(),
            closed: HashMap::new(),
            orphans: Vec::new(),
            buf: vec![0; READ_CHUNK],
            last_scan: Instant::now(),
            first_start,
            touched: std::collections::HashSet::new(),
            touch_all: false,
        }
    }

    /// Runs until shutdown. Unacknowledged data is simply not checkpointed,
    /// so stopping anywhere loses nothing.
    pub fn run(mut self, wake: Receiver<Wake>, overflow: Arc<AtomicBool>) {
        self.scan(true);
        'outer: loop {
            if self.emitter.stopping() {
                break;
            }
            let mut rescan = false;
            if overflow.swap(false, Ordering::Relaxed) {
                // Events were dropped: any file may have changed.
                rescan = true;
                self.touch_all = true;
            }
            loop {
                match wake.try_recv() {
                    Ok(Wake::Fs {
                        rescan: r,
                        paths,
                        renamed,
                    }) => {
                        rescan |= r || self.names_changed(&paths);
                        self.touched.extend(paths);
                        self.follow_renames(renamed);
                    }
                    Ok(Wake::Shutdown) | Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                        break 'outer
                    }
                    Err(std::sync::mpsc::TryRecvError::Empty) => break,
                }
            }
            if rescan
                || self.last_scan.elapsed() >= self.settings.scan_interval
                || self.closed_file_touched()
            {
                self.scan(false);
            }
            let Some(read) = self.read_pass() else { break };
            if !self.emitter.tick() {
                break;
            }
            self.update_gauges();
            if read > 0 {
                continue;
            }
            if !self.emitter.caught_up() {
                break;
            }
            let now = Instant::now();
            let mut until = now + POLL;
            until = until.min(self.last_scan + self.settings.scan_interval);
            if let Some(d) = self.emitter.deadline() {
                until = until.min(d);
            }
            match wake.recv_timeout(until.saturating_duration_since(now)) {
                Ok(Wake::Fs {
                    rescan,
                    paths,
                    renamed,
                }) => {
                    let rescan = rescan || self.names_changed(&paths);
                    self.touched.extend(paths);
                    self.follow_renames(renamed);
                    if rescan {
                        self.scan(false);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Ok(Wake::Shutdown) | Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        // Send what is complete. Partial lines and open multiline events stay
        // unsent, so the checkpoint stays before them and a restart reads them whole.
        self.emitter.drop_pending();
        self.emitter.flush();
        tracing::debug!("reader stopped");
    }

    fn update_gauges(&self) {
        let store = self.store.lock().unwrap_or_else(|e| e.into_inner());
        let lag: u64 = self
            .files
            .values()
            .map(|t| t.last_size.saturating_sub(store.acked(&t.key).unwrap_or(0)))
            .sum();
        self.metrics.lag_bytes.set(lag as i64);
        self.metrics.open_files.set(self.files.len() as i64);
    }

    /// Finds files: new ones are opened, renamed ones get their new path.
    fn scan(&mut self, initial: bool) {
        self.last_scan = Instant::now();
        let found = self.discovery.scan();
        if initial {
            self.collect_orphans(&found);
        }
        let mut seen = std::collections::HashSet::new();
        for (path, meta) in found {
            let key = FileKey {
                dev: meta.dev(),
                ino: meta.ino(),
            };
            if !seen.insert(key) {
                continue; // the same file under two names (links): tail it once
            }
            if let Some(t) = self.files.get_mut(&key) {
                if t.path != path && !same_file(&t.path, key) {
                    tracing::info!(from = %t.path.display(), to = %path.display(), "file renamed");
                    t.set_path(&path);
                    if t.state == State::Live {
                        t.state = State::Rotated;
                    }
                    lock(&self.store).set_path(&key, &path);
                }
                continue;
            }
            let resume = match self.closed.get(&key) {
                Some(c) if meta.len() == c.offset && meta.modified().ok() == c.mtime => continue,
                Some(c) if c.same_content(&path) => Some(c.offset),
                // open() finds the checkpoint's fingerprint stale too.
                Some(_) => None,
                None => None,
            };
            self.closed.remove(&key);
            self.open(&path, &meta, key, initial, resume);
        }
        // Closed files no glob matches any more are forgotten, and so are
        // their checkpoints (Filebeat's clean_removed).
        self.closed.retain(|k, _| seen.contains(k));
        let files = &self.files;
        let closed = &self.closed;
        lock(&self.store).retain(|k| files.contains_key(k) || closed.contains_key(k));
    }

    /// Whether file events named a path that is not (or no longer) a file
    /// we tail: a file created, renamed or deleted, which only a scan sorts
    /// out. Writes to the files we tail need no scan.
    fn names_changed(&self, paths: &[PathBuf]) -> bool {
        paths.iter().any(|p| {
            !self
                .files
                .values()
                .any(|t| t.path == *p && same_file(p, t.key))
        })
    }

    /// Whether inotify named a closed file (closed for inactivity, it grew).
    fn closed_file_touched(&self) -> bool {
        !self.touched.is_empty() && self.closed.values().any(|c| self.touched.contains(&c.path))
    }

    /// A file renamed from a path the globs match to one they do not
    /// (logrotate `create` with rotated names outside the glob) that we
    /// never opened: it lived at its path only between two of our scans
    /// (two quick rotations). It holds lines nobody read yet: read it from
    /// its start, then close it as a rotated file.
    fn follow_renames(&mut self, renamed: Vec<(PathBuf, PathBuf)>) {
        for (from, to) in final_names(&renamed) {
            self.follow_rename(from, to);
        }
    }

    fn follow_rename(&mut self, from: &Path, to: &Path) {
        if !self.discovery.matches(from) || self.discovery.matches(to) {
            return;
        }
        let Ok(meta) = std::fs::symlink_metadata(to) else {
            return;
        };
        if !meta.is_file() {
            return;
        }
        let key = FileKey {
            dev: meta.dev(),
            ino: meta.ino(),
        };
        if self.files.contains_key(&key) {
            return;
        }
        // Closed for inactivity, then written to and rotated between two
        // looks: what it got since is read from where we were.
        let resume = match self.closed.get(&key) {
            Some(c) if meta.len() > c.offset && c.same_content(to) => Some(c.offset),
            Some(_) => return,
            None => None,
        };
        self.closed.remove(&key);
        tracing::info!(from = %from.display(), to = %to.display(), "file rotated away before we opened it");
        self.open(to, &meta, key, false, resume);
        if let Some(t) = self.files.get_mut(&key) {
            if t.state == State::Live {
                t.state = State::Rotated;
            }
        }
    }

    fn open(
        &mut self,
        path: &Path,
        meta: &std::fs::Metadata,
        key: FileKey,
        initial: bool,
        resume: Option<u64>,
    ) {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot open; will retry at the next scan");
                return;
            }
        };
        let size = meta.len();
        let head = match read_head(&file, size) {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot read");
                return;
            }
        };
        let mut state = State::Live;
        let stored = lock(&self.store).get(&key).cloned();
        let (start, why) = if let Some(e) = stored.filter(|_| resume.is_none()) {
            if e.fingerprint.bytes <= head.len()
                && Fingerprint::of(&head[..e.fingerprint.bytes]) == e.fingerprint
                && e.offset <= size
            {
                (e.offset, "checkpoint")
            } else {
                tracing::info!(path = %path.display(), "inode reused or file rewritten: reading from the start");
                (0, "new content")
            }
        } else if let Some(off) = resume {
            (off, "reopened")
        } else {
            match self.classify(&head, path) {
                Class::Resume { offset, was } => {
                    tracing::info!(path = %path.display(), %was, "known content under a new name");
                    (offset.min(size), "checkpoint of a renamed or copied file")
                }
                Class::CopyOf(of) => {
                    state = State::PendingCopy { of };
                    let acked = lock(&self.store).acked(&of).unwrap_or(0);
                    (acked.min(size), "copy of a tailed file")
                }
                Class::Undecided => {
                    state = State::Undecided;
                    (0, "maybe a copy being written")
                }
                Class::Fresh
                    if initial && self.first_start && self.settings.read_from == ReadFrom::End =>
                {
                    (size, "--read-from end")
                }
                Class::Fresh => (0, "new file"),
            }
        };
        // Checkpointed before it is logged: whoever reads the log (a test, an
        // operator about to restart us) may rely on the next save holding it.
        lock(&self.store).track(key, 0, path, Fingerprint::of(&head), start);
        tracing::info!(path = %path.display(), offset = start, reason = why, "tailing file");
        self.metrics.files_opened.inc();
        let mut t = Tracked {
            key,
            generation: 0,
            file,
            path: PathBuf::new(),
            path_json: String::new(),
            fields: Arc::default(),
            fields_gen: None,
            pos: start,
            cutter: LineCutter::at(start),
            head,
            state,
            eof_since: None,
            visited: Instant::now(),
            last_size: size,
            last_mtime: meta.modified().ok(),
        };
        t.set_path(path);
        self.files.insert(key, t);
    }

    /// Reads every file up to its end (each at most FAIR_SHARE per pass).
    /// Returns bytes read, or None when shutdown interrupted.
    fn read_pass(&mut self) -> Option<usize> {
        let keys: Vec<FileKey> = self.files.keys().copied().collect();
        let mut total = 0;
        for key in keys {
            let Some(t) = self.files.get(&key) else {
                continue;
            };
            match t.state {
                State::PendingCopy { of } => {
                    self.settle_copy(key, of);
                    continue;
                }
                State::Undecided => {
                    self.decide(key);
                    if self.files[&key].state != State::Live {
                        continue;
                    }
                }
                State::Live | State::Rotated => {}
            }
            let t = &self.files[&key];
            if t.eof_since.is_some()
                && t.visited.elapsed() < POLL / 2
                && !self.touch_all
                && !self.touched.contains(&t.path)
            {
                continue; // idle, and nothing happened to it
            }
            self.files
                .get_mut(&key)
                .expect("listed file is tracked")
                .visited = Instant::now();
            self.refresh_fields(key);
            let mut budget = FAIR_SHARE;
            let mut at_eof = false;
            while budget > 0 {
                // Before every read: after a copytruncate our offset points
                // into new content, which must be read from its start instead.
                if self.was_truncated(key) {
                    self.truncated(key);
                }
                let t = self
                    .files
                    .get_mut(&key)
                    .expect("file being read is tracked");
                let n = match t.file.read_at(&mut self.buf, t.pos) {
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        tracing::warn!(path = %t.path.display(), error = %e, "read failed");
                        at_eof = true;
                        break;
                    }
                };
                if n == 0 {
                    at_eof = true;
                    break;
                }
                t.eof_since = None;
                self.metrics.bytes_read.inc_by(n as u64);
                self.emitter.tick_clock();
                let base = t.pos;
                t.pos += n as u64;
                let Tracked {
                    cutter,
                    path_json,
                    fields,
                    key,
                    generation,
                    head,
                    ..
                } = t;
                let (emitter, metrics) = (&mut self.emitter, &self.metrics);
                let seeds = Seeds::new(path_json, *key, head);
                let more = cutter.feed(&self.buf[..n], base, self.settings.max_line_bytes, |l| {
                    let src = source(path_json, fields, *key, *generation, seeds.at(l.end));
                    emit(emitter, metrics, &src, l)
                });
                if !more {
                    return None;
                }
                total += n;
                budget = budget.saturating_sub(n);
            }
            if at_eof {
                let t = self
                    .files
                    .get_mut(&key)
                    .expect("file being read is tracked");
                t.eof_since.get_or_insert_with(Instant::now);
                match self.check(key) {
                    Verdict::Keep => {}
                    Verdict::Finish(why) => {
                        if !self.finish(key, why) {
                            return None;
                        }
                    }
                }
            }
        }
        self.touched.clear();
        self.touch_all = false;
        Some(total)
    }

    /// Whether the file shrank below our offset, or its first bytes changed
    /// (truncated and written again before we looked). Grows the head
    /// (the content fingerprint) as the file grows.
    fn was_truncated(&mut self, key: FileKey) -> bool {
        let t = self.files.get_mut(&key).expect("checked file is tracked");
        let Ok(meta) = t.file.metadata() else {
            return false;
        };
        let size = meta.len();
        if size < t.pos {
            return true;
        }
        let mtime = meta.modified().ok();
        if size == t.last_size && mtime == t.last_mtime {
            return false;
        }
        match read_head(&t.file, size) {
            Ok(h) if !h.starts_with(&t.head) && !t.head.starts_with(&h) => return true,
            Ok(h) if h.len() > t.head.len() => {
                t.head = h;
                lock(&self.store).set_fingerprint(&key, Fingerprint::of(&t.head));
            }
            _ => {}
        }
        t.last_size = size;
        t.last_mtime = mtime;
        false
    }

    /// Looks at a file that is at its end: deleted, renamed, done?
    fn check(&mut self, key: FileKey) -> Verdict {
        let rotate_wait = self.settings.rotate_wait;
        let close_inactive = self.settings.close_inactive;
        let t = self.files.get_mut(&key).expect("checked file is tracked");
        let Ok(meta) = t.file.metadata() else {
            return Verdict::Finish("stat failed");
        };
        if meta.len() > t.pos {
            return Verdict::Keep; // grew since the read: read on
        }
        if meta.nlink() == 0 {
            return Verdict::Finish("deleted");
        }
        if t.state == State::Live && !same_file(&t.path, key) {
            tracing::info!(path = %t.path.display(), "file rotated away; reading it to its end");
            t.state = State::Rotated;
        }
        if t.state == State::Rotated && t.eof_since.is_some_and(|s| s.elapsed() >= rotate_wait) {
            return Verdict::Finish("rotated");
        }
        // A partial line stays open with the file: the writer may finish it.
        if t.state == State::Live
            && !t.cutter.mid_line()
            && t.eof_since.is_some_and(|s| s.elapsed() >= close_inactive)
        {
            return Verdict::Finish("inactive");
        }
        Verdict::Keep
    }

    /// Builds a file's event fields again if its path or the Kubernetes
    /// metadata changed since they were built: lines read from now on carry
    /// the new values.
    fn refresh_fields(&mut self, key: FileKey) {
        let generation = self.metadata.generation();
        let t = self.files.get_mut(&key).expect("refreshed file is tracked");
        if t.fields_gen != Some(generation) {
            let meta = self.metadata.for_path(&t.path.to_string_lossy());
            t.fields = self.emitter.fields(&meta);
            t.fields_gen = Some(generation);
        }
    }

    /// Sends a last unterminated line (the writer is gone), closes the file.
    fn finish(&mut self, key: FileKey, why: &str) -> bool {
        self.refresh_fields(key);
        let mut t = self.files.remove(&key).expect("finished file is tracked");
        let mut ok = true;
        let seed = Seeds::new(&t.path_json, t.key, &t.head).at(t.pos);
        let src = source(&t.path_json, &t.fields, t.key, t.generation, seed);
        if let Some(last) = t.cutter.finish(t.pos) {
            ok = emit(&mut self.emitter, &self.metrics, &src, last);
        }
        ok = ok && self.emitter.flush_pending(&key);
        ok = ok && self.emitter.persist(&self.store);
        let (path, offset) = (t.path.clone(), t.pos);
        let closed = Closed::of(&t.file, &t.head, offset, &t.path);
        drop(t);
        tracing::info!(path = %path.display(), reason = why, offset, "closed file");
        self.metrics.files_closed.inc();
        if why == "deleted" {
            lock(&self.store).remove(&key);
        } else {
            self.closed.insert(key, closed);
        }
        ok
    }
}

/// Where each renamed file is now: events arrive in batches, and a file
/// renamed `app.log` → `app.log.1` may since have moved on to `app.log.2`
/// (logrotate's next round), while `app.log.1` is now another file.
fn final_names(renamed: &[(PathBuf, PathBuf)]) -> Vec<(&Path, &Path)> {
    renamed
        .iter()
        .enumerate()
        .map(|(i, (from, to))| {
            let now = renamed[i + 1..]
                .iter()
                .fold(to, |at, (f, t)| if f == at { t } else { at });
            (from.as_path(), now.as_path())
        })
        .collect()
}

/// Hands one line to the emitter and counts it. False when shutdown
/// interrupted.
fn emit(em: &mut Emitter, m: &Metrics, src: &Source, l: Cut) -> bool {
    m.lines_read.inc();
    if l.truncated {
        m.lines_truncated.inc();
    }
    em.line(src, l.text, l.start, l.end, l.truncated)
}

fn lock(store: &Mutex<Store>) -> std::sync::MutexGuard<'_, Store> {
    store.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renames_are_followed_to_where_the_file_is_now() {
        let p = |s: &str| PathBuf::from(s);
        // Three logrotate rounds in one batch, each renaming the older
        // rotated file first.
        let renamed = [
            (p("a.log"), p("a.log.1")),
            (p("a.log.1"), p("a.log.2")),
            (p("a.log"), p("a.log.1")),
            (p("a.log.2"), p("a.log.3")),
            (p("a.log.1"), p("a.log.2")),
            (p("a.log"), p("a.log.1")),
        ];
        let finals: Vec<(&Path, &Path)> = final_names(&renamed)
            .into_iter()
            .filter(|(from, _)| *from == Path::new("a.log"))
            .collect();
        assert_eq!(
            finals,
            [
                (Path::new("a.log"), Path::new("a.log.3")),
                (Path::new("a.log"), Path::new("a.log.2")),
                (Path::new("a.log"), Path::new("a.log.1")),
            ]
        );
    }
}
