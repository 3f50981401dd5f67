//! A worktree's index file, written and read directly in git's format
//! (`DIRC` version 2, or 3 when an entry has the skip-worktree bit).
//! Adding every entry of a large tree through libgit2's `Index` and writing
//! it cost a quarter of publishing a one-file change; reading one through
//! libgit2 (a copy of every entry, a collision-detecting SHA-1 of the file)
//! cost a tenth, three times per change (the spare's, the previous
//! worktree's, the retired worktree's).

use std::fs::Metadata;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::{Context as _, Result};
use git2::Oid;
use sha1::{Digest as _, Sha1};

const FLAG_EXTENDED: u16 = 0x4000;
const HEADER: usize = 12;
const SHA1_LEN: usize = 20;
/// The fixed part of an entry: ten stat fields, the blob id, the flags.
const ENTRY_FIXED: usize = 40 + 20 + 2;
/// The skip-worktree bit of an entry's extended flags (sparse checkout).
const EXTENDED_SKIP_WORKTREE: u16 = 0x4000;

/// The stat data an index entry records, as git truncates them to 32 bits.
/// An entry without stat data (a path not checked out) has all zeros.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stat {
    pub ctime: (u32, u32),
    pub mtime: (u32, u32),
    pub dev: u32,
    pub ino: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u32,
}

impl Stat {
    pub fn of(m: &Metadata) -> Stat {
        Stat {
            ctime: (m.ctime() as u32, m.ctime_nsec() as u32),
            mtime: (m.mtime() as u32, m.mtime_nsec() as u32),
            dev: m.dev() as u32,
            ino: m.ino() as u32,
            uid: m.uid(),
            gid: m.gid(),
            size: m.size() as u32,
        }
    }
}

pub struct Entry<'a> {
    pub path: &'a [u8],
    pub id: Oid,
    pub mode: u32,
    /// The file's stat data; None for a path not checked out.
    pub stat: Option<Stat>,
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
        let s = e.stat.unwrap_or_default();
        let fields = [
            s.ctime.0, s.ctime.1, s.mtime.0, s.mtime.1, s.dev, s.ino, e.mode, s.uid, s.gid, s.size,
        ];
        for v in fields {
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
    let digest = Sha1::digest(&out);
    out.extend_from_slice(&digest);
    let lock = path.with_extension("lock");
    let mut f = std::fs::File::create(&lock)
        .with_context(|| format!("cannot create {}", lock.display()))?;
    f.write_all(&out)
        .with_context(|| format!("cannot write {}", lock.display()))?;
    drop(f);
    std::fs::rename(&lock, path).with_context(|| format!("cannot write {}", path.display()))
}

/// An entry as read back: what deciding whether a file is unmodified and
/// reusable needs.
pub struct Read {
    pub path: Vec<u8>,
    pub id: Oid,
    pub mode: u32,
    /// None for a path not checked out (no stat data recorded).
    pub stat: Option<Stat>,
    pub skip_worktree: bool,
}

/// Reads the index at `path`, checking its trailing SHA-1. Versions 2 and 3
/// (what git writes by default and what we write); version 4's compressed
/// paths are refused, and the caller then does without the index.
pub fn read(path: &Path) -> Result<Vec<Read>> {
    let data = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse(&data).with_context(|| format!("{}: not a usable index", path.display()))
}

fn parse(data: &[u8]) -> Result<Vec<Read>> {
    anyhow::ensure!(data.len() >= HEADER + SHA1_LEN, "too short");
    let (body, sum) = data.split_at(data.len() - SHA1_LEN);
    anyhow::ensure!(Sha1::digest(body).as_slice() == sum, "checksum mismatch");
    anyhow::ensure!(&body[..4] == b"DIRC", "no DIRC signature");
    let be32 = |b: &[u8], at: usize| u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
    let version = be32(body, 4);
    anyhow::ensure!(version == 2 || version == 3, "version {version}");
    let count = be32(body, 8) as usize;
    let mut out = Vec::with_capacity(count);
    let mut at = HEADER;
    for _ in 0..count {
        anyhow::ensure!(at + ENTRY_FIXED <= body.len(), "truncated entry");
        let e = &body[at..];
        let flags = u16::from_be_bytes([e[60], e[61]]);
        let extended = flags & FLAG_EXTENDED != 0;
        let name_at = ENTRY_FIXED + if extended { 2 } else { 0 };
        anyhow::ensure!(version == 3 || !extended, "extended flags in version 2");
        anyhow::ensure!(name_at <= e.len(), "truncated entry");
        let skip_worktree =
            extended && u16::from_be_bytes([e[62], e[63]]) & EXTENDED_SKIP_WORKTREE != 0;
        // The name ends at its NUL (its length field saturates at 0xfff).
        let name_len = e
            .get(name_at..)
            .and_then(|n| n.iter().position(|&b| b == 0))
            .context("unterminated path")?;
        out.push(Read {
            path: e[name_at..name_at + name_len].to_vec(),
            id: Oid::from_bytes(&e[40..60])?,
            mode: be32(e, 24),
            stat: Some(Stat {
                ctime: (be32(e, 0), be32(e, 4)),
                mtime: (be32(e, 8), be32(e, 12)),
                dev: be32(e, 16),
                ino: be32(e, 20),
                uid: be32(e, 28),
                gid: be32(e, 32),
                size: be32(e, 36),
            })
            .filter(|s| *s != Stat::default()),
            skip_worktree,
        });
        // NUL-padded to a multiple of 8 bytes, at least one NUL.
        at += (name_at + name_len + 8) / 8 * 8;
    }
    Ok(out)
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
                stat: None,
                skip_worktree: true,
            },
            super::Entry {
                path: b"a",
                id: a,
                mode: 0o100644,
                stat: Some(super::Stat::of(&meta)),
                skip_worktree: false,
            },
        ];
        super::write(&path, entries).unwrap();
        let index = git2::Index::open(&path).unwrap();
        let got: Vec<_> = index.iter().collect();
        // And so does our reader.
        let ours = super::read(&path).unwrap();
        assert_eq!(ours.len(), 2);
        for (o, g) in ours.iter().zip(&got) {
            assert_eq!(o.path, g.path);
            assert_eq!((o.id, o.mode), (g.id, g.mode));
            let s = o.stat.unwrap_or_default();
            assert_eq!(
                (s.dev, s.ino, s.uid, s.gid, s.size),
                (g.dev, g.ino, g.uid, g.gid, g.file_size)
            );
            assert_eq!(s.mtime, (g.mtime.seconds() as u32, g.mtime.nanoseconds()));
            assert_eq!(s.ctime, (g.ctime.seconds() as u32, g.ctime.nanoseconds()));
            assert_eq!(o.skip_worktree, g.flags_extended & 0x4000 != 0);
        }
        // The entry written without stat data reads back without.
        assert!(ours[1].stat.is_none() && ours[0].stat.is_some());
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

    /// An index git itself wrote (with its extensions after the entries)
    /// reads as `git ls-files --stage` lists it; a damaged one is refused.
    #[test]
    fn reads_what_git_writes() {
        let dir = tempfile::tempdir().unwrap();
        let git = |args: &[&str]| {
            let out = std::process::Command::new("git")
                .arg("-C")
                .arg(dir.path())
                .args(args)
                .env("GIT_CONFIG_GLOBAL", "/dev/null")
                .output()
                .unwrap();
            assert!(out.status.success(), "{args:?}: {out:?}");
            String::from_utf8(out.stdout).unwrap()
        };
        git(&["init", "-q"]);
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/a-rather-long-file-name"), "a").unwrap();
        std::fs::write(dir.path().join("b"), "bb").unwrap();
        git(&["add", "-A"]);
        // A cached tree: the TREE extension follows the entries.
        git(&["write-tree"]);
        let path = dir.path().join(".git/index");
        let read = super::read(&path).unwrap();
        let listed: Vec<String> = read
            .iter()
            .map(|e| {
                format!(
                    "{:o} {} 0\t{}",
                    e.mode,
                    e.id,
                    String::from_utf8_lossy(&e.path)
                )
            })
            .collect();
        assert_eq!(listed.join("\n") + "\n", git(&["ls-files", "--stage"]));
        assert_eq!(read[0].stat.unwrap().size, 2);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[20] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        assert!(super::read(&path).is_err());
    }
}
