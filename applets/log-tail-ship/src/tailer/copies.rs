//! Copies and renames recognised by content: logrotate copytruncate's copy
//! (read from where we were in the original, never twice), a file renamed
//! or copied while we were down (resumes from its old checkpoint), and a new
//! file that may still be a copy being written.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::file::{read_head, same_file, Closed, State};
use super::{lock, Tailer};
use crate::checkpoint::{FileKey, Fingerprint, HEAD_BYTES};

/// Leading bytes two files must share before one counts as a copy of the
/// other (logrotate copytruncate): shorter prefixes match by chance.
const MIN_COPY_PREFIX: usize = 64;

/// A content stream that lost its file: a checkpoint loaded at start whose
/// inode now holds something else, or the old content of a truncated file.
/// A file that starts with the same bytes (a copy, or a file renamed while
/// we were down) resumes at `offset`.
pub(super) struct Orphan {
    pub fingerprint: Fingerprint,
    pub offset: u64,
    pub path: String,
    /// The bytes themselves, when known, so a copy still being written
    /// (shorter than the fingerprint) is recognised as one.
    pub head: Option<Vec<u8>>,
}

/// Retired streams kept for recognising their copies.
pub(super) const MAX_ORPHANS: usize = 64;

/// What a file with no checkpoint of its own is.
pub(super) enum Class {
    Resume { offset: u64, was: String },
    CopyOf(FileKey),
    Undecided,
    Fresh,
}

impl Tailer {
    pub(super) fn collect_orphans(&mut self, found: &[(PathBuf, std::fs::Metadata)]) {
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

    /// Recognises copies (logrotate copytruncate) and renamed files by
    /// their first bytes, so they are not read twice.
    pub(super) fn classify(&mut self, head: &[u8], path: &Path) -> Class {
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
    pub(super) fn decide(&mut self, key: FileKey) {
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
        t.cutter.reset(start);
        lock(&self.store).track(key, 0, &path, Fingerprint::of(&t.head), start);
    }

    /// copytruncate: the file was emptied (and maybe written again). Lines
    /// written after our last read are in the copy logrotate just made, so
    /// that copy is read from where we were; then the file from its start.
    pub(super) fn truncated(&mut self, key: FileKey) {
        self.metrics.files_truncated.inc();
        let t = self.files.get_mut(&key).expect("truncated file is tracked");
        tracing::info!(path = %t.path.display(), at = t.cutter.line_start, "file truncated; reading it from the start");
        let was_at = t.cutter.line_start;
        let old_head = std::mem::take(&mut t.head);
        let path = t.path.clone();
        t.generation += 1;
        t.pos = 0;
        t.cutter.reset(0);
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
                c.cutter.reset(was_at);
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
    pub(super) fn settle_copy(&mut self, key: FileKey, of: FileKey) {
        let rotate_wait = self.settings.rotate_wait;
        let orig_done = self
            .files
            .get(&of)
            .map(|o| (o.state != State::Live, o.cutter.line_start));
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
}
