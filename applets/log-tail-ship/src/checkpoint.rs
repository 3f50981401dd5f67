//! Checkpoints: per file, the offset up to which the sink acknowledged every
//! event. Written atomically (temp file, fsync, rename, fsync of the
//! directory) to `<data-dir>/checkpoints.json`, so a crash leaves either the
//! old or the new file, never a torn one.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub const FILE_NAME: &str = "checkpoints.json";

/// Device and inode: who a file is while it is open. The fingerprint below
/// tells an inode reused by a new file apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FileKey {
    pub dev: u64,
    pub ino: u64,
}

/// A hash of the first `bytes` bytes of the file (at most [`HEAD_BYTES`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Fingerprint {
    pub bytes: usize,
    pub sha256: String,
}

/// How many leading bytes identify a file's content.
pub const HEAD_BYTES: usize = 1024;

impl Fingerprint {
    pub fn of(head: &[u8]) -> Fingerprint {
        let digest = Sha256::digest(head);
        Fingerprint {
            bytes: head.len(),
            sha256: digest[..16].iter().map(|b| format!("{b:02x}")).collect(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    pub path: String,
    #[serde(flatten)]
    pub key: FileKey,
    pub fingerprint: Fingerprint,
    /// Everything before this offset was acknowledged by the sink.
    pub offset: u64,
    /// Bumped when the file is truncated; acks for older data are ignored.
    #[serde(skip)]
    pub generation: u32,
}

#[derive(Serialize, Deserialize)]
struct OnDisk {
    version: u32,
    files: Vec<Entry>,
}

/// Where a batch ends in one file: acknowledging the batch moves the
/// checkpoint there.
#[derive(Debug, Clone, Copy)]
pub struct Mark {
    pub key: FileKey,
    pub generation: u32,
    pub end: u64,
}

pub struct Store {
    /// No checkpoint file existed: `--read-from end` applies to the files
    /// found now. On later starts, files without a checkpoint appeared
    /// while we were down and are read from their beginning.
    pub first_start: bool,
    /// Held for the life of the process: two shippers writing one
    /// checkpoint file would each undo the other's progress.
    _lock: Option<nix::fcntl::Flock<fs::File>>,
    dir: Option<PathBuf>,
    entries: HashMap<FileKey, Entry>,
    dirty: bool,
}

impl Store {
    /// Loads `<dir>/checkpoints.json` if present. A leftover temp file is an
    /// interrupted write and is ignored: the renamed file is the last good one.
    pub fn load(dir: Option<&Path>) -> anyhow::Result<Store> {
        let mut entries = HashMap::new();
        let mut lock = None;
        // Without a data dir every start is a first start.
        let mut first_start = dir.is_none();
        if let Some(dir) = dir {
            fs::create_dir_all(dir).map_err(|e| {
                sidecar_runtime::usage!("--data-dir {}: cannot create: {e}", dir.display())
            })?;
            let f = fs::File::create(dir.join("lock")).map_err(|e| {
                sidecar_runtime::usage!("--data-dir {}: not writable: {e}", dir.display())
            })?;
            lock = Some(
                nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(
                    |(_, e)| {
                        sidecar_runtime::usage!(
                            "--data-dir {}: in use by another log-tail-ship ({e})",
                            dir.display()
                        )
                    },
                )?,
            );
            let path = dir.join(FILE_NAME);
            match fs::read(&path) {
                Ok(raw) => {
                    let disk: OnDisk = serde_json::from_slice(&raw).map_err(|e| {
                        sidecar_runtime::usage!("{}: not a checkpoint file: {e}", path.display())
                    })?;
                    for e in disk.files {
                        entries.insert(e.key, e);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => first_start = true,
                Err(e) => anyhow::bail!("{}: {e}", path.display()),
            }
        }
        Ok(Store {
            first_start,
            _lock: lock,
            dir: dir.map(Path::to_path_buf),
            entries,
            dirty: false,
        })
    }

    pub fn get(&self, key: &FileKey) -> Option<&Entry> {
        self.entries.get(key)
    }

    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values()
    }

    /// Starts (or restarts, after truncation) tracking a file at `offset`.
    pub fn track(
        &mut self,
        key: FileKey,
        generation: u32,
        path: &Path,
        fingerprint: Fingerprint,
        offset: u64,
    ) {
        self.entries.insert(
            key,
            Entry {
                path: path.to_string_lossy().into_owned(),
                key,
                fingerprint,
                offset,
                generation,
            },
        );
        self.dirty = true;
    }

    pub fn set_path(&mut self, key: &FileKey, path: &Path) {
        if let Some(e) = self.entries.get_mut(key) {
            e.path = path.to_string_lossy().into_owned();
            self.dirty = true;
        }
    }

    /// The fingerprint grows with the file until it covers [`HEAD_BYTES`].
    pub fn set_fingerprint(&mut self, key: &FileKey, fp: Fingerprint) {
        if let Some(e) = self.entries.get_mut(key) {
            if e.fingerprint != fp {
                e.fingerprint = fp;
                self.dirty = true;
            }
        }
    }

    pub fn ack(&mut self, marks: &[Mark]) {
        for m in marks {
            if let Some(e) = self.entries.get_mut(&m.key) {
                if e.generation == m.generation && m.end > e.offset {
                    e.offset = m.end;
                    self.dirty = true;
                }
            }
        }
    }

    pub fn acked(&self, key: &FileKey) -> Option<u64> {
        self.entries.get(key).map(|e| e.offset)
    }

    pub fn retain(&mut self, mut keep: impl FnMut(&FileKey) -> bool) {
        let before = self.entries.len();
        self.entries.retain(|k, _| keep(k));
        self.dirty |= self.entries.len() != before;
    }

    pub fn remove(&mut self, key: &FileKey) {
        self.dirty |= self.entries.remove(key).is_some();
    }

    /// The on-disk bytes if anything changed since the last call.
    pub fn snapshot_if_dirty(&mut self) -> Option<(PathBuf, Vec<u8>)> {
        let dir = self.dir.clone()?;
        if !self.dirty {
            return None;
        }
        self.dirty = false;
        let mut files: Vec<Entry> = self.entries.values().cloned().collect();
        files.sort_by(|a, b| a.path.cmp(&b.path));
        let raw =
            serde_json::to_vec_pretty(&OnDisk { version: 1, files }).expect("entries serialize");
        Some((dir, raw))
    }
}

/// Temp file, fsync, rename over the old one, fsync the directory.
pub fn write_atomic(dir: &Path, raw: &[u8]) -> std::io::Result<()> {
    sidecar_runtime::fsutil::write_atomic(&dir.join(FILE_NAME), raw, 0o644)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_move_forward_within_a_generation_and_survive_reload() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::load(Some(dir.path())).unwrap();
        let key = FileKey { dev: 1, ino: 2 };
        s.track(key, 0, Path::new("/l/a.log"), Fingerprint::of(b"abc\n"), 0);
        s.ack(&[Mark {
            key,
            generation: 0,
            end: 40,
        }]);
        s.ack(&[Mark {
            key,
            generation: 0,
            end: 20,
        }]);
        assert_eq!(s.acked(&key), Some(40));
        // After truncation (generation 1), late acks of old data do not count.
        s.track(key, 1, Path::new("/l/a.log"), Fingerprint::default(), 0);
        s.ack(&[Mark {
            key,
            generation: 0,
            end: 80,
        }]);
        assert_eq!(s.acked(&key), Some(0));
        s.ack(&[Mark {
            key,
            generation: 1,
            end: 5,
        }]);
        let (d, raw) = s.snapshot_if_dirty().unwrap();
        write_atomic(&d, &raw).unwrap();
        assert!(s.snapshot_if_dirty().is_none());
        // The directory is locked while a store holds it.
        assert!(Store::load(Some(dir.path())).is_err());
        drop(s);
        let s2 = Store::load(Some(dir.path())).unwrap();
        assert_eq!(s2.acked(&key), Some(5));
        assert_eq!(s2.get(&key).unwrap().path, "/l/a.log");
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    }
}
