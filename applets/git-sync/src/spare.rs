//! The spare tree: publishing a commit at a cost that follows the change.
//!
//! A new commit is published in a new directory (`.worktrees/<sha>`), so
//! readers of the old one never see it change. Writing that directory from
//! scratch costs a file creation per file of the tree, however small the
//! change. Instead, the worktree that cleanup retires (the one upstream
//! deletes at that point) is kept as the spare: `<root>/.git/sidecar-spare`,
//! its files in `tree/` and its index, with their stat data, in
//! `checked-index`.
//! It is not a git worktree any more and holds no object alive.
//!
//! The retired tree is checked when it becomes the spare (`recycle`, in
//! the cleanup after a publish, off the publishing pass): a file stays
//! only if its stat data still match the index, as `git status` decides;
//! what a consumer edited or added while the tree was published goes, and
//! the spare's index then lists exactly the files its tree holds. The next
//! new commit adopts the spare (`tree/` is renamed to `.worktrees/<sha>`)
//! and reconciles it with the commit's tree by comparing the index with
//! the tree (`reconcile`), touching only the files the change removes; the
//! caller writes what differs. A publish thus makes system calls in
//! proportion to the change, plus an lstat per file (below).
//!
//! The published tree must be exactly the commit's, and a retired tree is
//! not out of everyone's reach: a process can hold its working directory
//! in it (an app container's `workingDir: /repo/link`, a `kubectl exec`
//! shell), or a file open. So:
//! - The spare's directories are new ones: the kept files are renamed
//!   into them and the retired directories deleted, as upstream deletes
//!   the whole tree. A working directory never follows a retired tree into
//!   the spare, nor later into a published tree (whatever it writes there
//!   would be published, now or at any time after; its later writes fail,
//!   as they do upstream). Knowing which directories are some process's
//!   working directory would take seeing every process of the pod.
//! - A file held open can still be written. The adopted tree is checked
//!   again before it is used (`intact`: its directories listed, each file
//!   lstat'ed against the stat data the spare recorded, as `git status`
//!   does), and any difference discards it: every file is then written.
//!   That lstat per file (24 ms for 10,000 files on a journaled ext4,
//!   on one thread; the walk uses several, `treewalk`) is the price of
//!   exactness; directories' stat data alone would miss a file
//!   rewritten in place. A write through such a descriptor after the
//!   check reaches the published tree, as one to a published file does;
//!   only copying every kept file (its bytes, not its creation) would
//!   prevent it.
//!
//! Kept files are the spare's own inodes, never shared with a published
//! tree (never hard links).
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
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use anyhow::{Context as _, Result};
use git2::{Oid, Repository};

use crate::checkout::{self, Item};
use crate::indexfile::{self, Stat};
use crate::layout::{self, Layout};
use crate::treewalk;

/// Larger files are dropped from the spare.
const KEEP_MAX: u32 = 64 * 1024;

/// The spare's index, named for what it promises: it lists exactly the
/// files of `tree/`, checked. A spare kept by a version that checked files
/// at the publish instead has only an `index`, is not trusted, and goes.
const CHECKED_INDEX: &str = "checked-index";

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

/// Makes the unmodified files of the retired worktree `name` the spare, if
/// there is no spare yet and the tree can serve as one. Returns whether it
/// did. The caller deletes the retired tree either way (with what stayed
/// in it: its directories, what was changed).
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
    std::fs::create_dir_all(tmp.join("tree"))
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    let written = std::fs::metadata(admin.join("index"))?;
    let written = (written.mtime(), written.mtime_nsec());
    let kept = verify(&wt, &tmp.join("tree"), index, written)?;
    let entries = kept
        .iter()
        .map(|e| indexfile::Entry {
            path: &e.path,
            id: e.id,
            mode: e.mode,
            stat: e.stat,
            skip_worktree: false,
        })
        .collect();
    indexfile::write(&tmp.join(CHECKED_INDEX), entries)?;
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
        index: tmp.join(CHECKED_INDEX),
        size_limit: Some(KEEP_MAX.into()),
    };
    if checkout::write_tree(&repo, &tree, &dest, None, None, None)? == checkout::Written::Nothing {
        layout::remove_any(&tmp)?;
        return Ok(false);
    }
    std::fs::rename(&tmp, &spare).context("cannot keep the prepared spare tree")?;
    Ok(true)
}

/// The spare's index, for `reconcile`: the files its tree holds (entries
/// without stat data are files not written, such as large ones).
pub struct Adopted {
    entries: HashMap<Vec<u8>, indexfile::Read>,
}

/// Moves the spare's tree to `dir` (which must not exist) and returns its
/// index, or None without a usable spare. A spare changed since `recycle`
/// or `prepare` wrote it is not used (see the module comment).
pub fn adopt(l: &Layout, dir: &Path) -> Result<Option<Adopted>> {
    let spare = spare_dir(l);
    if !spare.exists() {
        return Ok(None);
    }
    let read = || -> Result<(Adopted, (i64, i64))> {
        let index = spare.join(CHECKED_INDEX);
        let written = std::fs::metadata(&index)?;
        let entries = indexfile::read(&index)?
            .into_iter()
            // The path is the key; the entry keeps an empty one.
            .map(|mut e| (std::mem::take(&mut e.path), e))
            .collect();
        Ok((Adopted { entries }, (written.mtime(), written.mtime_nsec())))
    };
    let adopted = match read() {
        Ok((a, written)) if spare.join("tree").is_dir() => {
            std::fs::rename(spare.join("tree"), dir)
                .with_context(|| format!("cannot move the spare tree to {}", dir.display()))?;
            // Checked where nothing but this pass reaches it any more.
            match intact(dir, &a, written) {
                Ok(true) => Some(a),
                checked => {
                    let error = checked.err().map(|e| format!("{e:#}"));
                    tracing::warn!(
                        ?error,
                        "the spare tree changed since it was checked, writing every file"
                    );
                    layout::remove_any(dir)?;
                    None
                }
            }
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

/// Whether the tree at `dir` holds exactly the files its index (written at
/// `written`) lists with stat data, unmodified, and the directories above
/// them, nothing else.
fn intact(dir: &Path, index: &Adopted, written: (i64, i64)) -> Result<bool> {
    let files = index.entries.values().filter(|e| e.stat.is_some()).count();
    let dirs: HashSet<&[u8]> = index
        .entries
        .iter()
        .filter(|(_, e)| e.stat.is_some())
        .flat_map(|(p, _)| parents(p))
        .collect();
    let (same_files, same_dirs, other) = (
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicBool::new(false),
    );
    treewalk::walk(dir, treewalk::threads_for(files), |path, entry| {
        if entry.file_type()?.is_dir() {
            let known = dirs.contains(path);
            if known {
                same_dirs.fetch_add(1, Ordering::Relaxed);
            } else {
                other.store(true, Ordering::Relaxed);
            }
            return Ok(known);
        }
        let same = index
            .entries
            .get(path)
            .is_some_and(|e| e.stat.is_some() && unchanged(e, entry, written));
        if same {
            same_files.fetch_add(1, Ordering::Relaxed);
        } else {
            other.store(true, Ordering::Relaxed);
        }
        Ok(false)
    })?;
    Ok(!other.into_inner()
        && same_files.into_inner() == files
        && same_dirs.into_inner() == dirs.len())
}

/// Makes the adopted tree at `wt` hold only what `items` keeps: removes
/// every file and symlink the commit does not have as is (same blob and
/// mode at the same path), and every directory it does not have, and
/// returns the kept files' stat data by item number. The caller writes the
/// rest. Only removed paths are touched: the spare's index lists exactly
/// what its tree holds (`adopt` checked it).
pub fn reconcile(wt: &Path, items: &[Item], base: &Adopted) -> Result<HashMap<usize, Stat>> {
    let by_path: HashMap<&[u8], usize> = items
        .iter()
        .enumerate()
        .map(|(i, it)| (it.path.as_slice(), i))
        .collect();
    let mut kept = HashMap::with_capacity(base.entries.len());
    let mut gone = Vec::new();
    for (path, e) in &base.entries {
        let same = by_path.get(path.as_slice()).filter(|&&i| {
            let item = &items[i];
            item.mode != checkout::MODE_TREE && item.id == e.id && item.mode as u32 == e.mode
        });
        match (same, e.stat) {
            (Some(&i), Some(stat)) => {
                kept.insert(i, stat);
            }
            _ => gone.push(path.as_slice()),
        }
    }
    // A directory the commit lacks holds only removed files: the outermost
    // such directory goes whole.
    let is_dir = |p: &[u8]| {
        by_path
            .get(p)
            .is_some_and(|&i| items[i].mode == checkout::MODE_TREE)
    };
    let mut removed = HashSet::new();
    for path in gone {
        let outermost_missing = parents(path).find(|d| !is_dir(d));
        let target = outermost_missing.unwrap_or(path);
        if removed.insert(target) {
            layout::remove_any(&wt.join(OsStr::from_bytes(target)))?;
        }
    }
    Ok(kept)
}

/// The directories above `path`, outermost first (`a`, `a/b` for `a/b/c`).
pub fn parents(path: &[u8]) -> impl Iterator<Item = &[u8]> {
    path.iter()
        .enumerate()
        .filter(|(_, &b)| b == b'/')
        .map(move |(at, _)| &path[..at])
}

/// Moves into the empty directory `to` what the retired tree at `from`
/// holds unmodified of its index (written at `written`): every file and
/// symlink the index lists with the same stat data (as `git status`
/// decides) and not too large to keep, in new directories (see the module
/// comment). Directories left empty go. Returns the entries of the files
/// moved, with their stat data there (a rename changes a file's ctime).
fn verify(
    from: &Path,
    to: &Path,
    index: Vec<indexfile::Read>,
    written: (i64, i64),
) -> Result<Vec<indexfile::Read>> {
    let keepable = |e: &indexfile::Read| {
        !e.skip_worktree
            && e.mode != MODE_SUBMODULE
            && e.stat
                .is_some_and(|s| s.size < KEEP_MAX || e.mode == MODE_LINK)
    };
    let by_path: HashMap<&[u8], &indexfile::Read> = index
        .iter()
        .filter(|e| keepable(e))
        .map(|e| (e.path.as_slice(), e))
        .collect();
    let dirs: HashSet<&[u8]> = by_path.keys().flat_map(|p| parents(p)).collect();
    let kept = Mutex::new(HashMap::new());
    treewalk::walk(from, treewalk::threads_for(by_path.len()), |path, entry| {
        let dest = to.join(OsStr::from_bytes(path));
        if entry.file_type()?.is_dir() {
            let wanted = dirs.contains(path);
            if wanted {
                std::fs::create_dir(&dest)
                    .with_context(|| format!("cannot create {}", dest.display()))?;
            }
            return Ok(wanted);
        }
        let Some(e) = by_path.get(path) else {
            return Ok(false);
        };
        if let Some(stat) = keep(e, entry, &dest, written)? {
            kept.lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(path.to_vec(), stat);
        }
        Ok(false)
    })?;
    // Directories whose files all went, deepest first; a directory still
    // holding something stays (rmdir refuses it).
    let mut dirs: Vec<&[u8]> = dirs.into_iter().collect();
    dirs.sort_unstable_by_key(|d| std::cmp::Reverse(d.len()));
    for d in dirs {
        let _ = std::fs::remove_dir(to.join(OsStr::from_bytes(d)));
    }
    let kept = kept.into_inner().unwrap_or_else(|p| p.into_inner());
    Ok(index
        .into_iter()
        .filter_map(|mut e| {
            e.stat = Some(*kept.get(&e.path)?);
            Some(e)
        })
        .collect())
}

/// Moves the retired file `entry` to `dest` if it still holds what its
/// index entry `e` says, and returns its stat data there; None if it
/// stays behind.
fn keep(
    e: &indexfile::Read,
    entry: &std::fs::DirEntry,
    dest: &Path,
    written: (i64, i64),
) -> Result<Option<Stat>> {
    if !unchanged(e, entry, written) {
        return Ok(None);
    }
    std::fs::rename(entry.path(), dest)
        .with_context(|| format!("cannot move {}", entry.path().display()))?;
    let moved = std::fs::symlink_metadata(dest)?;
    let before = e.stat.unwrap_or_default();
    let now = Stat::of(&moved);
    // Written between the check and the rename (through a descriptor held
    // open): it goes.
    if (now.size, now.mtime, now.ino) != (before.size, before.mtime, before.ino) {
        layout::remove_any(dest)?;
        return Ok(None);
    }
    Ok(Some(now))
}

/// Whether the file `entry` holds what its index entry `e` says (the index
/// written at `written`).
fn unchanged(e: &indexfile::Read, entry: &std::fs::DirEntry, written: (i64, i64)) -> bool {
    // lstat relative to the directory being read.
    let Ok(m) = entry.metadata() else {
        return false;
    };
    match stat_state(e, &m, written) {
        State::Clean => true,
        // Written in the index's last clock tick: its stat data cannot
        // tell, its content can (as git decides).
        State::Racy => content_id(&entry.path(), &m).is_some_and(|id| id == e.id),
        State::Modified => false,
    }
}

/// The blob id of a file's content, or of a symlink's target.
fn content_id(path: &Path, m: &Metadata) -> Option<Oid> {
    if m.file_type().is_symlink() {
        let target = std::fs::read_link(path).ok()?;
        Oid::hash_object(git2::ObjectType::Blob, target.as_os_str().as_bytes()).ok()
    } else {
        Oid::hash_file(git2::ObjectType::Blob, path).ok()
    }
}

/// Whether a file still holds what its index entry says, by the stat data
/// git compares. An entry as new as the index itself is "racily clean" and
/// not trusted by its stat data alone, as in git.
pub fn unmodified(e: &indexfile::Read, m: &Metadata, written: (i64, i64)) -> bool {
    stat_state(e, m, written) == State::Clean
}

#[derive(PartialEq)]
enum State {
    Clean,
    /// The stat data match, but the file changed in the index's last tick.
    Racy,
    Modified,
}

fn stat_state(e: &indexfile::Read, m: &Metadata, written: (i64, i64)) -> State {
    let kind_ok = if e.mode == MODE_LINK {
        m.file_type().is_symlink()
    } else {
        m.is_file() && (m.mode() & 0o100 != 0) == (e.mode == 0o100755)
    };
    // What git's `ie_match_stat` compares (uid and gid, when they differ,
    // only after a chown, which changes ctime too).
    let same = kind_ok
        && e.stat.is_some_and(|s| {
            let now = Stat::of(m);
            (now.size, now.mtime, now.ctime, now.ino) == (s.size, s.mtime, s.ctime, s.ino)
        });
    match (same, (m.mtime(), m.mtime_nsec()) < written) {
        (false, _) => State::Modified,
        (true, true) => State::Clean,
        (true, false) => State::Racy,
    }
}
