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
use std::time::{Duration, Instant, SystemTime};

use crate::checkpoint::{FileKey, Fingerprint, Store, HEAD_BYTES};
use crate::config::ReadFrom;
use crate::discovery::{Discovery, Wake};
use crate::emitter::{Emitter, Source};
use crate::event::json_string;
use crate::metrics::Metrics;

/// Bytes per read call: large reads keep syscalls per MiB low.
const READ_CHUNK: usize = 1 << 20;
/// Bytes read from one file before the others get a turn.
const FAIR_SHARE: usize = 8 << 20;
/// The longest the reader sleeps without looking at its files.
const POLL: Duration = Duration::from_secs(1);
/// Leading bytes two files must share before one counts as a copy of the
/// other (logrotate copytruncate): shorter prefixes match by chance.
const MIN_COPY_PREFIX: usize = 64;
/// Leading bytes of a file that go into its events' document ids.
const ID_PREFIX: usize = 64;

pub struct Settings {
    pub max_line_bytes: usize,
    pub read_from: ReadFrom,
    pub rotate_wait: Duration,
    pub close_inactive: Duration,
    pub scan_interval: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At its path: read and wait for more.
    Live,
    /// Renamed (rotated), or a copy being read: closed once it stayed at its
    /// end for `--rotate-wait`.
    Rotated,
    /// A copy of a live file (copytruncate's first half): not read unless
    /// the original is truncated before we read what the copy holds.
    PendingCopy { of: FileKey },
    /// Its bytes so far are the start of a live file: maybe a copy being
    /// written. Decided (and read, if it is not a copy) once it differs or
    /// holds the whole fingerprint.
    Undecided,
}

/// A content stream that lost its file: a checkpoint loaded at start whose
/// inode now holds something else, or the old content of a truncated file.
/// A file that starts with the same bytes (a copy, or a file renamed while
/// we were down) resumes at `offset`.
struct Orphan {
    fingerprint: Fingerprint,
    offset: u64,
    path: String,
    /// The bytes themselves, when known, so a copy still being written
    /// (shorter than the fingerprint) is recognised as one.
    head: Option<Vec<u8>>,
}

/// Retired streams kept for recognising their copies.
const MAX_ORPHANS: usize = 64;

/// What a file with no checkpoint of its own is.
enum Class {
    Resume { offset: u64, was: String },
    CopyOf(FileKey),
    Undecided,
    Fresh,
}

struct Tracked {
    key: FileKey,
    generation: u32,
    file: File,
    path: PathBuf,
    path_json: String,
    /// Next byte to read.
    pos: u64,
    /// Offset of the first byte of the line being assembled.
    line_start: u64,
    /// The line so far when a read ended mid-line (at most --max-line-bytes).
    partial: Vec<u8>,
    /// The current line outgrew --max-line-bytes: drop bytes until its newline.
    discarding: bool,
    /// The file's first bytes (up to HEAD_BYTES), its content identity.
    head: Vec<u8>,
    state: State,
    eof_since: Option<Instant>,
    /// When the file was last read or examined.
    visited: Instant,
    last_size: u64,
    last_mtime: Option<SystemTime>,
}

impl Tracked {
    /// Where a line ending at `end` comes from. Its seed names the line's
    /// content stream: path, inode and the file's first bytes (up to
    /// ID_PREFIX, or up to the line's end), so the same line read again
    /// after a crash gets the same Elasticsearch `_id`, and a file that
    /// reused the inode with other content does not.
    fn source(&self, end: u64) -> Source<'_> {
        let k = (end as usize).min(ID_PREFIX).min(self.head.len());
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        h.update(self.path_json.as_bytes());
        h.update(&self.key.dev.to_le_bytes());
        h.update(&self.key.ino.to_le_bytes());
        h.update(&self.head[..k]);
        Source {
            key: self.key,
            generation: self.generation,
            path_json: &self.path_json,
            seed: h.digest(),
        }
    }

    fn set_path(&mut self, path: &Path) {
        self.path = path.to_path_buf();
        self.path_json = json_string(&path.to_string_lossy());
    }
}

/// A file read to its end and closed that still exists: reopened only if it grows.
struct Closed {
    offset: u64,
    /// First bytes and mtime at closing: the inode may be reused by a new
    /// file (the rotated file deleted, a new one created), which must be
    /// read from its start, not from our old offset.
    head: Vec<u8>,
    mtime: Option<std::time::SystemTime>,
    /// Where it was: an inotify event naming it means a look is due.
    path: PathBuf,
}

impl Closed {
    fn of(file: &File, head: &[u8], offset: u64, path: &Path) -> Closed {
        Closed {
            offset,
            path: path.to_path_buf(),
            head: head.to_vec(),
            mtime: file.metadata().and_then(|m| m.modified()).ok(),
        }
    }

    /// Whether the file now at `path` still starts with what we closed.
    fn same_content(&self, path: &Path) -> bool {
        File::open(path)
            .and_then(|f| read_head(&f, HEAD_BYTES as u64))
            .is_ok_and(|h| h.starts_with(&self.head))
    }
}

enum Verdict {
    Keep,
    Finish(&'static str),
}

pub struct Tailer {
    settings: Settings,
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
        discovery: Discovery,
        store: Arc<Mutex<Store>>,
        emitter: Emitter,
        metrics: Metrics,
    ) -> Tailer {
        let first_start = lock(&store).first_start;
        Tailer {
            settings,
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
                        rescan |= r;
                        self.touched.extend(paths);
                        self.follow_rename(renamed);
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
                    self.touched.extend(paths);
                    self.follow_rename(renamed);
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

    /// Whether inotify named a closed file (closed for inactivity, it grew).
    fn closed_file_touched(&self) -> bool {
        !self.touched.is_empty() && self.closed.values().any(|c| self.touched.contains(&c.path))
    }

    /// A file renamed from a path the globs match to one they do not
    /// (logrotate `create` with rotated names outside the glob) that we
    /// never opened: it lived at its path only between two of our scans
    /// (two quick rotations). It holds lines nobody read yet: read it from
    /// its start, then close it as a rotated file.
    fn follow_rename(&mut self, renamed: Option<(PathBuf, PathBuf)>) {
        let Some((from, to)) = renamed else { return };
        if !self.discovery.matches(&from) || self.discovery.matches(&to) {
            return;
        }
        let Ok(meta) = std::fs::symlink_metadata(&to) else {
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
            Some(c) if meta.len() > c.offset && c.same_content(&to) => Some(c.offset),
            Some(_) => return,
            None => None,
        };
        self.closed.remove(&key);
        tracing::info!(from = %from.display(), to = %to.display(), "file rotated away before we opened it");
        self.open(&to, &meta, key, false, resume);
        if let Some(t) = self.files.get_mut(&key) {
            if t.state == State::Live {
                t.state = State::Rotated;
            }
        }
    }

    fn collect_orphans(&mut self, found: &[(PathBuf, std::fs::Metadata)]) {
        let by_key: HashMap<FileKey, &PathBuf> = found
            .iter()
            .map(|(p, m)| {
                (
                    FileKey {
                        dev: m.dev(),
                        ino: m.ino(),
                    },
                    p,
                )
            })
            .collect();
        let store = lock(&self.store);
        for e in store.entries() {
            let intact = by_key.get(&e.key).is_some_and(|p| {
                File::open(p)
                    .ok()
                    .and_then(|f| read_head(&f, e.fingerprint.bytes as u64).ok())
                    .is_some_and(|h| Fingerprint::of(&h) == e.fingerprint)
            });
            if !intact && e.fingerprint.bytes >= MIN_COPY_PREFIX {
                self.orphans.push(Orphan {
                    fingerprint: e.fingerprint.clone(),
                    offset: e.offset,
                    path: e.path.clone(),
                    head: None,
                });
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
        tracing::info!(path = %path.display(), offset = start, reason = why, "tailing file");
        lock(&self.store).track(key, 0, path, Fingerprint::of(&head), start);
        self.metrics.files_opened.inc();
        let mut t = Tracked {
            key,
            generation: 0,
            file,
            path: PathBuf::new(),
            path_json: String::new(),
            pos: start,
            line_start: start,
            partial: Vec::new(),
            discarding: false,
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

    /// Recognises copies (logrotate copytruncate) and renamed files by
    /// their first bytes, so they are not read twice.
    fn classify(&mut self, head: &[u8], path: &Path) -> Class {
        if let Some(i) = self.orphans.iter().position(|o| {
            o.fingerprint.bytes <= head.len()
                && Fingerprint::of(&head[..o.fingerprint.bytes]) == o.fingerprint
        }) {
            let o = self.orphans.swap_remove(i);
            return Class::Resume {
                offset: o.offset,
                was: o.path,
            };
        }
        // Only a file still at its path can have been copied by logrotate;
        // a deleted or renamed one was replaced, and its successor may well
        // start with the same bytes (an app writing the same banner).
        let live = || {
            self.files.values().filter(|t| {
                t.state == State::Live
                    && t.head.len() >= MIN_COPY_PREFIX
                    && t.path != path
                    && same_file(&t.path, t.key)
            })
        };
        if let Some(t) = live().find(|t| head.starts_with(&t.head)) {
            return Class::CopyOf(t.key);
        }
        let retired = self.orphans.iter().filter_map(|o| o.head.as_deref());
        if live().any(|t| t.head.starts_with(head)) || retired.clone().any(|h| h.starts_with(head))
        {
            return Class::Undecided;
        }
        Class::Fresh
    }

    /// An undecided file got more bytes: copy, renamed content, or new?
    fn decide(&mut self, key: FileKey) {
        let t = &self.files[&key];
        let Ok(head) = read_head(&t.file, HEAD_BYTES as u64) else {
            return;
        };
        if head.len() == t.head.len() {
            return;
        }
        let path = t.path.clone();
        let class = self.classify(&head, &path);
        let t = self.files.get_mut(&key).expect("undecided file is tracked");
        t.head = head;
        let (state, start) = match class {
            Class::Undecided => return,
            Class::Resume { offset, .. } => (State::Live, offset),
            Class::CopyOf(of) => (
                State::PendingCopy { of },
                lock(&self.store).acked(&of).unwrap_or(0),
            ),
            Class::Fresh => (State::Live, 0),
        };
        tracing::info!(path = %path.display(), offset = start, copy = matches!(state, State::PendingCopy { .. }), "decided what the new file is");
        t.state = state;
        t.pos = start;
        t.line_start = start;
        lock(&self.store).track(key, 0, &path, Fingerprint::of(&t.head), start);
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
                if !split_lines(
                    t,
                    &self.buf[..n],
                    base,
                    &mut self.emitter,
                    self.settings.max_line_bytes,
                    &self.metrics,
                ) {
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
            && t.partial.is_empty()
            && !t.discarding
            && t.eof_since.is_some_and(|s| s.elapsed() >= close_inactive)
        {
            return Verdict::Finish("inactive");
        }
        Verdict::Keep
    }

    /// copytruncate: the file was emptied (and maybe written again). Lines
    /// written after our last read are in the copy logrotate just made, so
    /// that copy is read from where we were; then the file from its start.
    fn truncated(&mut self, key: FileKey) {
        self.metrics.files_truncated.inc();
        let t = self.files.get_mut(&key).expect("truncated file is tracked");
        tracing::info!(path = %t.path.display(), at = t.line_start, "file truncated; reading it from the start");
        let was_at = t.line_start;
        let old_head = std::mem::take(&mut t.head);
        let path = t.path.clone();
        t.generation += 1;
        t.pos = 0;
        t.line_start = 0;
        t.partial.clear();
        t.discarding = false;
        t.last_size = 0;
        t.last_mtime = None;
        t.eof_since = None;
        let generation = t.generation;
        lock(&self.store).track(key, generation, &path, Fingerprint::default(), 0);
        if old_head.len() >= MIN_COPY_PREFIX {
            if self.orphans.len() >= MAX_ORPHANS {
                self.orphans.remove(0);
            }
            self.orphans.push(Orphan {
                fingerprint: Fingerprint::of(&old_head),
                offset: was_at,
                path: path.to_string_lossy().into_owned(),
                head: Some(old_head.clone()),
            });
        }
        // Copies we already know of.
        for c in self.files.values_mut() {
            if c.state == (State::PendingCopy { of: key }) {
                tracing::info!(path = %c.path.display(), from = was_at, "reading the rotated copy");
                c.state = State::Rotated;
                c.pos = was_at;
                c.line_start = was_at;
                lock(&self.store).track(c.key, 0, &c.path, Fingerprint::of(&c.head), was_at);
                self.orphans
                    .retain(|o| o.head.as_deref() != Some(&old_head[..]));
                return;
            }
        }
        if old_head.len() < MIN_COPY_PREFIX {
            return;
        }
        let Some(dir) = path.parent() else { return };
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let cpath = entry.path();
            let Ok(meta) = std::fs::metadata(&cpath) else {
                continue;
            };
            let ckey = FileKey {
                dev: meta.dev(),
                ino: meta.ino(),
            };
            if !meta.is_file() || meta.len() < was_at || self.files.contains_key(&ckey) {
                continue;
            }
            let Ok(f) = File::open(&cpath) else { continue };
            if read_head(&f, meta.len()).is_ok_and(|h| h.starts_with(&old_head)) {
                tracing::info!(path = %cpath.display(), from = was_at, "reading the rotated copy");
                self.closed.remove(&ckey);
                self.orphans
                    .retain(|o| o.head.as_deref() != Some(&old_head[..]));
                self.open(&cpath, &meta, ckey, false, Some(was_at));
                if let Some(c) = self.files.get_mut(&ckey) {
                    c.state = State::Rotated;
                }
                return;
            }
        }
    }

    /// A pending copy is done with once its original has read past its end
    /// and the copy stopped growing (logrotate may still be writing it).
    fn settle_copy(&mut self, key: FileKey, of: FileKey) {
        let rotate_wait = self.settings.rotate_wait;
        let orig_done = self
            .files
            .get(&of)
            .map(|o| (o.state != State::Live, o.line_start));
        let c = self.files.get_mut(&key).expect("pending copy is tracked");
        let Ok(size) = c.file.metadata().map(|m| m.len()) else {
            return;
        };
        if size != c.last_size || c.eof_since.is_none() {
            c.last_size = size;
            c.eof_since = Some(Instant::now());
            return;
        }
        let covered = match orig_done {
            Some((gone, read_to)) => gone || read_to >= size,
            None => true,
        };
        if covered && c.eof_since.is_some_and(|t| t.elapsed() >= rotate_wait) {
            let c = self.files.remove(&key).expect("pending copy is tracked");
            tracing::info!(path = %c.path.display(), "copy holds nothing unread; closing it");
            lock(&self.store).track(key, 0, &c.path, Fingerprint::of(&c.head), size);
            self.closed
                .insert(key, Closed::of(&c.file, &c.head, size, &c.path));
            self.metrics.files_closed.inc();
        }
    }

    /// Sends a last unterminated line (the writer is gone), closes the file.
    fn finish(&mut self, key: FileKey, why: &str) -> bool {
        let t = self.files.remove(&key).expect("finished file is tracked");
        let src = t.source(t.pos);
        let mut ok = true;
        if !t.partial.is_empty() || t.discarding {
            self.metrics.lines_read.inc();
            ok = self.emitter.line(
                &src,
                clean(&t.partial, t.line_start),
                t.line_start,
                t.pos,
                t.discarding,
            );
        }
        ok = ok && self.emitter.flush_pending(&key);
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

/// Cuts `data` (read at file offset `base`) into lines and hands complete
/// ones to the emitter. Returns false when shutdown interrupted.
fn split_lines(
    t: &mut Tracked,
    data: &[u8],
    base: u64,
    em: &mut Emitter,
    max: usize,
    m: &Metrics,
) -> bool {
    let mut rest = data;
    let mut off = base;
    loop {
        if t.partial.is_empty() && !t.discarding {
            // Leading NULs: what a writer without O_APPEND leaves after a
            // copytruncate (it writes at its old offset into a sparse file).
            let nul = rest.iter().take_while(|b| **b == 0).count();
            if nul > 0 {
                rest = &rest[nul..];
                off += nul as u64;
                t.line_start = off;
            }
        }
        let Some(i) = memchr::memchr(b'\n', rest) else {
            append_capped(t, rest, max);
            return true;
        };
        let end = off + i as u64 + 1;
        let src = t.source(end);
        let ok = if t.partial.is_empty() && !t.discarding {
            let seg = &rest[..i];
            let truncated = seg.len() > max;
            let text = if truncated { &seg[..max] } else { seg };
            if truncated {
                m.lines_truncated.inc();
            }
            m.lines_read.inc();
            em.line(
                &src,
                clean(text, t.line_start),
                t.line_start,
                end,
                truncated,
            )
        } else {
            let room = max.saturating_sub(t.partial.len());
            let take = i.min(room);
            t.partial.extend_from_slice(&rest[..take]);
            let truncated = t.discarding || take < i;
            if truncated {
                m.lines_truncated.inc();
            }
            m.lines_read.inc();
            let src = t.source(end);
            let ok = em.line(
                &src,
                clean(&t.partial, t.line_start),
                t.line_start,
                end,
                truncated,
            );
            t.partial.clear();
            t.discarding = false;
            ok
        };
        t.line_start = end;
        off = end;
        rest = &rest[i + 1..];
        if !ok {
            return false;
        }
    }
}

fn append_capped(t: &mut Tracked, bytes: &[u8], max: usize) {
    let room = max.saturating_sub(t.partial.len());
    if bytes.len() > room {
        t.partial.extend_from_slice(&bytes[..room]);
        t.discarding = true;
    } else {
        t.partial.extend_from_slice(bytes);
    }
}

/// A line's text: without a trailing `\r`, and for the file's first line
/// without a UTF-8 byte order mark (as Filebeat strips it).
fn clean(line: &[u8], start: u64) -> &[u8] {
    let line = match start {
        0 => line.strip_prefix(b"\xef\xbb\xbf").unwrap_or(line),
        _ => line,
    };
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// The first min(size, HEAD_BYTES) bytes.
fn read_head(f: &File, size: u64) -> std::io::Result<Vec<u8>> {
    let want = size.min(HEAD_BYTES as u64) as usize;
    let mut head = vec![0; want];
    let mut got = 0;
    while got < want {
        match f.read_at(&mut head[got..], got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    head.truncate(got);
    Ok(head)
}

/// Whether `path` still names the file `key`.
fn same_file(path: &Path, key: FileKey) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.dev() == key.dev && m.ino() == key.ino)
}

fn lock(store: &Mutex<Store>) -> std::sync::MutexGuard<'_, Store> {
    store.lock().unwrap_or_else(|e| e.into_inner())
}
