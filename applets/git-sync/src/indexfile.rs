//! Writing a new worktree's index file directly, in git's format (`DIRC`
//! version 2, or 3 when an entry has the skip-worktree bit). Adding every
//! entry of a large tree through libgit2's `Index` and writing it cost a
//! quarter of publishing a one-file change.

use std::fs::Metadata;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::{Context as _, Result};
use git2::Oid;

const FLAG_EXTENDED: u16 = 0x4000;
/// The skip-worktree bit of an entry's extended flags (sparse checkout).
pub(crate) const EXTENDED_SKIP_WORKTREE: u16 = 0x4000;

pub struct Entry<'a> {
    pub path: &'a [u8],
    pub id: Oid,
    pub mode: u32,
    /// The file's stat data; None for a path not checked out.
    pub meta: Option<&'a Metadata>,
    pub skip_worktree: bool,
}

/// Writes `entries` (in any order) as the index at `path`, through a lock
/// file renamed into place as git does.
pub fn write(path: &Path, mut entries: Vec<Entry>) -> Result<()> {
    entries.sort_unstable_by(|a, b| a.path.cmp(b.path));
    let extended = entries.iter().any(|e| e.skip_worktree);
    let count = u32::try_from(entries.len()).context("too many index entries")?;
    let mut out = Vec::with_capacity(12 + entries.len() * 96);
    out.extend_from_slice(b"DIRC");
    out.extend_from_slice(&(if extended { 3u32 } else { 2 }).to_be_bytes());
    out.extend_from_slice(&count.to_be_bytes());
    for e in &entries {
        let start = out.len();
        // The stat fields are 32 bits, truncated as git does.
        let stat: [u32; 10] = match e.meta {
            Some(m) => [
                m.ctime() as u32,
                m.ctime_nsec() as u32,
                m.mtime() as u32,
                m.mtime_nsec() as u32,
                m.dev() as u32,
                m.ino() as u32,
                e.mode,
                m.uid(),
                m.gid(),
                m.size() as u32,
            ],
            None => [0, 0, 0, 0, 0, 0, e.mode, 0, 0, 0],
        };
        for v in stat {
            out.extend_from_slice(&v.to_be_bytes());
        }
        out.extend_from_slice(e.id.as_bytes());
        let mut flags = e.path.len().min(0xfff) as u16;
        if e.skip_worktree {
            flags |= FLAG_EXTENDED;
        }
        out.extend_from_slice(&flags.to_be_bytes());
        if e.skip_worktree {
            out.extend_from_slice(&EXTENDED_SKIP_WORKTREE.to_be_bytes());
        }
        out.extend_from_slice(e.path);
        // NUL-padded to a multiple of 8 bytes, at least one NUL.
        let len = out.len() - start;
        out.resize(start + (len + 8) / 8 * 8, 0);
    }
    let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &out);
    out.extend_from_slice(digest.as_ref());
    let lock = path.with_extension("lock");
    let mut f = std::fs::File::create(&lock)
        .with_context(|| format!("cannot create {}", lock.display()))?;
    f.write_all(&out)
        .with_context(|| format!("cannot write {}", lock.display()))?;
    drop(f);
    std::fs::rename(&lock, path).with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    /// libgit2 reads back what was written: paths, blobs, modes, stat data
    /// and the skip-worktree bit.
    #[test]
    fn libgit2_reads_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, "hello").unwrap();
        let meta = std::fs::metadata(&file).unwrap();
        let a = git2::Oid::from_str("1111111111111111111111111111111111111111").unwrap();
        let b = git2::Oid::from_str("2222222222222222222222222222222222222222").unwrap();
        let path = dir.path().join("index");
        let entries = vec![
            super::Entry {
                path: b"z/long-name-for-padding",
                id: b,
                mode: 0o100755,
                meta: None,
                skip_worktree: true,
            },
            super::Entry {
                path: b"a",
                id: a,
                mode: 0o100644,
                meta: Some(&meta),
                skip_worktree: false,
            },
        ];
        super::write(&path, entries).unwrap();
        let index = git2::Index::open(&path).unwrap();
        let got: Vec<_> = index.iter().collect();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].path, b"a");
        assert_eq!(got[0].id, a);
        assert_eq!(got[0].mode, 0o100644);
        assert_eq!(got[0].file_size, 5);
        assert_eq!(got[0].ino, {
            use std::os::unix::fs::MetadataExt;
            meta.ino() as u32
        });
        assert_eq!(got[1].path, b"z/long-name-for-padding");
        assert_eq!(got[1].mode, 0o100755);
        assert_eq!(got[1].flags_extended & 0x4000, 0x4000);
    }
}
