//! The spare tree: publishing a commit at a cost that follows the change.
//!
//! A new commit is published in a new directory (`.worktrees/<sha>`), so
//! readers of the old one never see it change. Writing that directory from
//! scratch costs a file creation per file of the tree, however small the
//! change. Instead, the worktree that cleanup retires (the one upstream
//! deletes at that point) is kept as the spare: `<root>/.git/sidecar-spare`,
//! its files in `tree/` and its index, with their stat data, in `index`.
//! It is not a git worktree any more and holds no object alive.
//!
//! The next new commit adopts it: `tree/` is renamed to `.worktrees/<sha>`
//! and reconciled with the commit's tree (`reconcile`). A file is kept only
//! if the commit has the same blob and mode at its path and its stat data
//! still match the index, as `git status` decides; everything else (what
//! the change touched, what a consumer edited or added while the tree was
//! published) is removed and written anew. Kept files are the spare's own
//! inodes, never shared with a published tree.
//!
//! To bound the disk it takes, the spare keeps no file of `KEEP_MAX` bytes
//! or more: writing such a file costs its bytes more than its creation.
//!
//! The first change after a start has no retired tree yet, so once the
//! first sync has published, a spare is written from that commit while
//! the process is idle (`prepare`): the first change then costs what the
//! others do, instead of a checkout of the whole tree.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::Metadata;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use git2::{Oid, Repository};

use crate::checkout::{self, Item};
use crate::indexfile;
use crate::layout::{self, Layout};

/// Larger files are dropped from the spare.
const KEEP_MAX: u32 = 64 * 1024;

// Index entries carry modes as u32, the tree walk as i32.
const MODE_LINK: u32 = checkout::MODE_LINK as u32;
const MODE_SUBMODULE: u32 = checkout::MODE_SUBMODULE as u32;

fn spare_dir(l: &Layout) -> PathBuf {
    l.root.join(".git/sidecar-spare")
}

/// Deletes the spare (settings that cannot use one, e.g. a sparse checkout).
pub fn discard(l: &Layout) -> Result<()> {
    layout::remove_any(&spare_dir(l))
}

/// The index of worktree `name`, if that tree can serve as a spare: a full
/// checkout (no sparse checkout), no submodules (their directories hold
/// repositories of their own), no attributes (files checked out through
/// eol or filters do not hold their blobs as they are).
fn usable_index(l: &Layout, name: &str) -> Option<Vec<indexfile::Read>> {
    let admin = l.root.join(".git/worktrees").join(name);
    if !l.worktree(name).join(".git").is_file() || admin.join("info/sparse-checkout").exists() {
        return None;
    }
    let index = indexfile::read(&admin.join("index")).ok()?;
    let attributes = |p: &[u8]| p == b".gitattributes" || p.ends_with(b"/.gitattributes");
    let usable = !index
        .iter()
        .any(|e| e.mode == MODE_SUBMODULE || attributes(&e.path));
    usable.then_some(index)
}

/// Makes the retired worktree `name` the spare instead of deleting it, if
/// there is no spare yet and the tree can serve as one. Returns whether it
/// did; the caller deletes it otherwise.
pub fn recycle(l: &Layout, name: &str) -> Result<bool> {
    let spare = spare_dir(l);
    let wt = l.worktree(name);
    let admin = l.root.join(".git/worktrees").join(name);
    if spare.exists() {
        return Ok(false);
    }
    let Some(index) = usable_index(l, name) else {
        return Ok(false);
    };
    // Assembled under another name and renamed: a crash leaves no spare
    // half made.
    let tmp = l.root.join(".git/sidecar-spare.new");
    layout::remove_any(&tmp)?;
    std::fs::create_dir(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    std::fs::rename(admin.join("index"), tmp.join("index"))
        .context("cannot move the retired worktree's index")?;
    std::fs::rename(&wt, tmp.join("tree"))
        .with_context(|| format!("cannot move {}", wt.display()))?;
    layout::remove_any(&tmp.join("tree/.git"))?;
    for e in &index {
        if e.size >= KEEP_MAX && e.mode != MODE_LINK {
            let _ = std::fs::remove_file(tmp.join("tree").join(OsStr::from_bytes(&e.path)));
        }
    }
    std::fs::rename(&tmp, &spare).context("cannot keep the retired worktree as the spare")?;
    layout::remove_any(&admin)?;
    Ok(true)
}

/// Writes a spare tree for the published commit `hash` when there is none
/// and its worktree could serve as one, from the object database (the
/// published tree may have been edited). Its index carries the stat data
/// of the files written, so `reconcile` keeps them. Returns whether it did.
pub fn prepare(l: &Layout, hash: &str) -> Result<bool> {
    let spare = spare_dir(l);
    if spare.exists() || usable_index(l, hash).is_none() {
        return Ok(false);
    }
    let repo = Repository::open(&l.root)?;
    let tree = repo.find_commit(Oid::from_str(hash)?)?.tree()?;
    // Written under another name and renamed: a crash leaves no spare half
    // made.
    let tmp = l.root.join(".git/sidecar-spare.new");
    layout::remove_any(&tmp)?;
    let dir = tmp.join("tree");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let dest = checkout::Dest {
        dir: &dir,
        index: tmp.join("index"),
        size_limit: Some(KEEP_MAX.into()),
    };
    if !checkout::write_tree(&repo, &tree, &dest, None, None, None)? {
        layout::remove_any(&tmp)?;
        return Ok(false);
    }
    std::fs::rename(&tmp, &spare).context("cannot keep the prepared spare tree")?;
    Ok(true)
}

/// The spare's index, for `reconcile`.
pub struct Adopted {
    entries: HashMap<Vec<u8>, indexfile::Read>,
    /// When the index was written: entries as new as this are not trusted.
    written: (i64, i64),
}

/// Moves the spare's tree to `dir` (which must not exist) and returns its
/// index, or None without a usable spare.
pub fn adopt(l: &Layout, dir: &Path) -> Result<Option<Adopted>> {
    let spare = spare_dir(l);
    if !spare.exists() {
        return Ok(None);
    }
    let read = || -> Result<Adopted> {
        let path = spare.join("index");
        let m = std::fs::metadata(&path)?;
        let entries = indexfile::read(&path)?
            .into_iter()
            // The path is the key; the entry keeps an empty one.
            .map(|mut e| (std::mem::take(&mut e.path), e))
            .collect();
        Ok(Adopted {
            entries,
            written: (m.mtime(), m.mtime_nsec()),
        })
    };
    let adopted = match read() {
        Ok(a) if spare.join("tree").is_dir() => {
            std::fs::rename(spare.join("tree"), dir)
                .with_context(|| format!("cannot move the spare tree to {}", dir.display()))?;
            Some(a)
        }
        Ok(_) => None,
        Err(e) => {
            tracing::debug!(error = %format!("{e:#}"), "spare tree not used");
            None
        }
    };
    layout::remove_any(&spare)?;
    Ok(adopted)
}

/// Makes the adopted tree at `wt` hold only what `items` keeps: removes
/// every file, symlink and directory that the commit does not have as is
/// (unchanged blob and mode, unmodified since the index was written), and
/// returns the kept files' stat data by item number. The caller writes the
/// rest.
pub fn reconcile(wt: &Path, items: &[Item], base: &Adopted) -> Result<HashMap<usize, Metadata>> {
    let by_path: HashMap<&[u8], usize> = items
        .iter()
        .enumerate()
        .map(|(i, it)| (it.path.as_slice(), i))
        .collect();
    let dirs: HashSet<&[u8]> = items
        .iter()
        .filter(|it| it.mode == checkout::MODE_TREE)
        .map(|it| it.path.as_slice())
        .collect();
    let mut kept = HashMap::new();
    let mut stack = vec![Vec::new()];
    while let Some(rel) = stack.pop() {
        let dir = wt.join(OsStr::from_bytes(&rel));
        let entries =
            std::fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))?;
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            if rel.is_empty() && name == ".git" {
                continue;
            }
            let mut path = rel.clone();
            if !path.is_empty() {
                path.push(b'/');
            }
            path.extend_from_slice(name.as_bytes());
            if entry.file_type()?.is_dir() {
                if dirs.contains(path.as_slice()) {
                    stack.push(path);
                } else {
                    layout::remove_any(&entry.path())?;
                }
                continue;
            }
            let keep = by_path.get(path.as_slice()).and_then(|&i| {
                let e = base.entries.get(&path)?;
                let item = &items[i];
                if e.id != item.id || e.mode != item.mode as u32 {
                    return None;
                }
                // lstat relative to the directory being read.
                let m = entry.metadata().ok()?;
                let same = match stat_state(e, &m, base.written) {
                    Stat::Clean => true,
                    // Written in the index's last clock tick: its stat data
                    // cannot tell, its content can (as git decides).
                    Stat::Racy => {
                        m.is_file()
                            && Oid::hash_file(git2::ObjectType::Blob, entry.path())
                                .is_ok_and(|id| id == e.id)
                    }
                    Stat::Modified => false,
                };
                same.then_some((i, m))
            });
            match keep {
                Some((i, m)) => {
                    kept.insert(i, m);
                }
                None => layout::remove_any(&entry.path())?,
            }
        }
    }
    Ok(kept)
}

/// Whether a file still holds what its index entry says, by the stat data
/// git compares. An entry as new as the index itself is "racily clean" and
/// not trusted by its stat data alone, as in git.
pub fn unmodified(e: &indexfile::Read, m: &Metadata, written: (i64, i64)) -> bool {
    stat_state(e, m, written) == Stat::Clean
}

#[derive(PartialEq)]
enum Stat {
    Clean,
    /// The stat data match, but the file changed in the index's last tick.
    Racy,
    Modified,
}

fn stat_state(e: &indexfile::Read, m: &Metadata, written: (i64, i64)) -> Stat {
    let kind_ok = if e.mode == MODE_LINK {
        m.file_type().is_symlink()
    } else {
        m.is_file() && (m.mode() & 0o100 != 0) == (e.mode == 0o100755)
    };
    let same = kind_ok
        && m.size() as u32 == e.size
        && (m.mtime() as u32, m.mtime_nsec() as u32) == e.mtime
        && (m.ctime() as u32, m.ctime_nsec() as u32) == e.ctime
        && m.ino() as u32 == e.ino;
    match (same, (m.mtime(), m.mtime_nsec()) < written) {
        (false, _) => Stat::Modified,
        (true, true) => Stat::Clean,
        (true, false) => Stat::Racy,
    }
}
