//! A file being tailed, and one closed that may be opened again.

use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use crate::checkpoint::{FileKey, HEAD_BYTES};
use crate::emitter::Source;
use crate::event::{json_string, Fields};
use crate::lines::LineCutter;

/// Leading bytes of a file that go into its events' document ids.
const ID_PREFIX: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
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

pub struct Tracked {
    pub key: FileKey,
    pub generation: u32,
    pub file: File,
    pub path: PathBuf,
    pub path_json: String,
    /// Host, `--field`s and Kubernetes metadata of its events, built for
    /// metadata generation `fields_gen` (None: to be built).
    pub fields: Arc<Fields>,
    pub fields_gen: Option<u64>,
    /// Next byte to read.
    pub pos: u64,
    /// The line being assembled.
    pub cutter: LineCutter,
    /// The file's first bytes (up to HEAD_BYTES), its content identity.
    pub head: Vec<u8>,
    pub state: State,
    pub eof_since: Option<Instant>,
    /// When the file was last read or examined.
    pub visited: Instant,
    pub last_size: u64,
    pub last_mtime: Option<SystemTime>,
}

impl Tracked {
    pub fn set_path(&mut self, path: &Path) {
        self.path = path.to_path_buf();
        self.path_json = json_string(&path.to_string_lossy());
        // The path may name another pod (kubelet paths carry metadata).
        self.fields_gen = None;
    }
}

/// Where a line comes from; `seed` is from [`Seeds::at`].
pub fn source<'a>(
    path_json: &'a str,
    fields: &'a Arc<Fields>,
    key: FileKey,
    generation: u32,
    seed: u64,
) -> Source<'a> {
    Source {
        key,
        generation,
        path_json,
        seed,
        fields,
    }
}

/// The seeds of a file's lines. A seed names the line's content stream:
/// path, inode and the file's first bytes (up to ID_PREFIX, or up to the
/// line's end), so the same line read again after a crash gets the same
/// Elasticsearch `_id`, and a file that reused the inode with other content
/// does not. Every line ending past the prefix shares one seed, hashed once
/// per read rather than once per line.
pub struct Seeds<'a> {
    path_json: &'a str,
    key: FileKey,
    head: &'a [u8],
    full: u64,
}

impl<'a> Seeds<'a> {
    pub fn new(path_json: &'a str, key: FileKey, head: &'a [u8]) -> Seeds<'a> {
        let full = seed(path_json, key, &head[..ID_PREFIX.min(head.len())]);
        Seeds {
            path_json,
            key,
            head,
            full,
        }
    }

    /// The seed of a line ending at `end`.
    pub fn at(&self, end: u64) -> u64 {
        let k = (end as usize).min(ID_PREFIX).min(self.head.len());
        if k == ID_PREFIX.min(self.head.len()) {
            self.full
        } else {
            seed(self.path_json, self.key, &self.head[..k])
        }
    }
}

fn seed(path_json: &str, key: FileKey, prefix: &[u8]) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(path_json.as_bytes());
    h.update(&key.dev.to_le_bytes());
    h.update(&key.ino.to_le_bytes());
    h.update(prefix);
    h.digest()
}

/// A file read to its end and closed that still exists: reopened only if it grows.
pub struct Closed {
    pub offset: u64,
    /// First bytes and mtime at closing: the inode may be reused by a new
    /// file (the rotated file deleted, a new one created), which must be
    /// read from its start, not from our old offset.
    pub head: Vec<u8>,
    pub mtime: Option<std::time::SystemTime>,
    /// Where it was: an inotify event naming it means a look is due.
    pub path: PathBuf,
}

impl Closed {
    pub fn of(file: &File, head: &[u8], offset: u64, path: &Path) -> Closed {
        Closed {
            offset,
            path: path.to_path_buf(),
            head: head.to_vec(),
            mtime: file.metadata().and_then(|m| m.modified()).ok(),
        }
    }

    /// Whether the file now at `path` still starts with what we closed.
    pub fn same_content(&self, path: &Path) -> bool {
        File::open(path)
            .and_then(|f| read_head(&f, HEAD_BYTES as u64))
            .is_ok_and(|h| h.starts_with(&self.head))
    }
}

/// The first min(size, HEAD_BYTES) bytes.
pub fn read_head(f: &File, size: u64) -> std::io::Result<Vec<u8>> {
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
pub fn same_file(path: &Path, key: FileKey) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.dev() == key.dev && m.ino() == key.ino)
}
