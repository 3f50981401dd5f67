//! Writing a commit's tree into a fresh, empty worktree, and its index.
//!
//! libgit2's checkout resolves every path (about 14 readlink calls a file)
//! and is several times slower than git's on large trees; a fresh worktree
//! needs none of its conflict handling. So the tree is written directly:
//!
//! - A file whose content the previous worktree already holds, unmodified
//!   (its stat data still matches that worktree's index, as `git status`
//!   decides), is cloned from there when that is cheaper than inflating its
//!   blob: always by reflink where the filesystem can (btrfs, xfs), else by
//!   a kernel-side copy for files of `COPY_MIN` bytes or more (below that,
//!   opening a second file costs more than inflating a small blob). Never a
//!   hard link: an edit in one tree would show in the other.
//! - Files are written by several threads.
//! - The index carries every file's stat data, so `git status` is clean
//!   without rehashing.
//!
//! Trees with `.gitattributes` (eol, ident, filters) and names git refuses
//! are not written: they go through libgit2's validating checkout instead.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::{File, Metadata};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::io::{AsRawFd, FromRawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context as _, Result};
use git2::{Oid, Repository};
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use crate::indexfile::{self, Stat};
use crate::spare;
use crate::sparse::Sparse;
use crate::treewalk;

pub(crate) const MODE_TREE: i32 = 0o040000;
pub(crate) const MODE_LINK: i32 = 0o120000;
pub(crate) const MODE_SUBMODULE: i32 = 0o160000;
const MODE_EXEC: i32 = 0o100755;

/// Smaller unchanged files are inflated rather than copied when the
/// filesystem cannot reflink.
const COPY_MIN: u64 = 64 * 1024;

pub(crate) struct Item {
    pub path: Vec<u8>,
    pub id: Oid,
    pub mode: i32,
}

/// Where a file's content comes from.
enum Source {
    Blob,
    /// The same content, unmodified, in the previous worktree.
    Clone(PathBuf),
}

/// Where `write_tree` writes.
pub struct Dest<'a> {
    /// The directory: empty, or the adopted spare tree.
    pub dir: &'a Path,
    /// The index recording what was written, with its stat data.
    pub index: PathBuf,
    /// Blobs of this many bytes or more are not written (the spare tree's
    /// bound); their index entries carry no stat data.
    pub size_limit: Option<u64>,
}

/// What `write_tree` did.
#[derive(Debug, PartialEq)]
pub enum Written {
    /// Nothing: the tree needs libgit2's checkout.
    Nothing,
    /// The tree, which has submodules (gitlink entries) or not.
    Tree { submodules: bool },
}

/// Writes `tree` of `repo` into `dest` and its index. The directory is
/// empty, or the adopted spare tree (`base`, see `spare`), whose files
/// that the commit has unchanged stay. `previous` is the worktree published
/// before, whose unmodified files are cloned instead of inflated.
pub fn write_tree(
    repo: &Repository,
    tree: &git2::Tree,
    dest: &Dest,
    sparse: Option<&Sparse>,
    previous: Option<&Path>,
    base: Option<&spare::Adopted>,
) -> Result<Written> {
    let wt = dest.dir;
    let Some(items) = list(tree)? else {
        return Ok(Written::Nothing);
    };
    let kept = match base {
        Some(b) => spare::reconcile(wt, &items, b)?,
        None => HashMap::new(),
    };

    // The adopted spare's directories that hold a kept file exist already:
    // trying to create them would cost two system calls per directory of
    // the tree, however small the change.
    let present: HashSet<&[u8]> = kept
        .keys()
        .flat_map(|&i| spare::parents(&items[i].path))
        .collect();
    // Directories first, in tree order (parents before children).
    let mut files = Vec::new();
    let mut included = vec![true; items.len()];
    for (i, item) in items.iter().enumerate() {
        if kept.contains_key(&i) || present.contains(item.path.as_slice()) {
            continue;
        }
        let full = wt.join(OsStr::from_bytes(&item.path));
        if item.mode == MODE_TREE {
            // Sparse checkouts create directories only for included files.
            if sparse.is_none() {
                // The adopted tree may hold it already. Not a symlink to
                // a directory: files would be written through it, outside
                // the tree (the caller then writes a fresh tree).
                let is_dir = || full.symlink_metadata().is_ok_and(|m| m.is_dir());
                match std::fs::create_dir(&full) {
                    Err(e) if !(base.is_some() && is_dir()) => {
                        return Err(e).with_context(|| format!("cannot create {}", full.display()))
                    }
                    _ => {}
                }
            }
            continue;
        }
        if !sparse.is_none_or(|sp| sp.includes(OsStr::from_bytes(&item.path))) {
            included[i] = false;
            continue;
        }
        if sparse.is_some() {
            if let Some(dir) = full.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
            }
        }
        files.push((i, full));
    }
    let reusable = match previous {
        Some(p) => reusable_files(repo, p, wt, &items, &files),
        None => HashMap::new(),
    };
    let files: Vec<_> = files
        .into_iter()
        .map(|(i, full)| {
            let item = &items[i];
            let source = match reusable.get(&item.path) {
                Some((id, mode)) if *id == item.id && *mode == item.mode as u32 => {
                    Source::Clone(previous.unwrap_or(wt).join(OsStr::from_bytes(&item.path)))
                }
                _ => Source::Blob,
            };
            (i, full, source)
        })
        .collect();
    let cloned = files
        .iter()
        .filter(|(_, _, s)| matches!(s, Source::Clone(_)))
        .count();
    let metas = write_files(repo.commondir(), &items, files, dest.size_limit)?;
    tracing::debug!(
        files = metas.len(),
        cloned,
        kept = kept.len(),
        "worktree files written"
    );

    let entries = items
        .iter()
        .enumerate()
        .filter(|(_, item)| item.mode != MODE_TREE)
        .map(|(i, item)| indexfile::Entry {
            path: &item.path,
            id: item.id,
            mode: item.mode as u32,
            stat: metas.get(&i).or_else(|| kept.get(&i)).copied(),
            // Not checked out: the skip-worktree bit tells git not to look.
            skip_worktree: !included[i],
        })
        .collect();
    indexfile::write(&dest.index, entries)?;
    let submodules = items.iter().any(|it| it.mode == MODE_SUBMODULE);
    Ok(Written::Tree { submodules })
}

/// The tree's entries in pre-order, or None when it needs libgit2.
fn list(tree: &git2::Tree) -> Result<Option<Vec<Item>>> {
    let mut items = Vec::new();
    let mut refused = false;
    let walked = tree.walk(git2::TreeWalkMode::PreOrder, |dir, entry| {
        let name = entry.name_bytes();
        // Attributes need libgit2's filters; names git refuses need its
        // path validation (which then fails the checkout, as git would).
        if name == b".gitattributes" || !safe_name(name) {
            refused = true;
            return git2::TreeWalkResult::Abort;
        }
        let mut path = dir.as_bytes().to_vec();
        path.extend_from_slice(name);
        items.push(Item {
            path,
            id: entry.id(),
            mode: entry.filemode(),
        });
        git2::TreeWalkResult::Ok
    });
    if refused {
        return Ok(None);
    }
    walked?;
    Ok(Some(items))
}

/// The files to write (`files`, by item number) that the previous worktree
/// holds unmodified and that are worth cloning from there: path → (blob,
/// mode). Without reflinks only large files are worth copying, and when
/// none of a few files to write is large (the spare tree had the rest),
/// the previous worktree's index is not even read.
fn reusable_files(
    repo: &Repository,
    previous: &Path,
    wt: &Path,
    items: &[Item],
    files: &[(usize, PathBuf)],
) -> HashMap<Vec<u8>, (Oid, u32)> {
    /// Up to this many files, their sizes are looked up first.
    const FEW: usize = 64;
    let min = if can_reflink(previous, wt) {
        0
    } else {
        COPY_MIN
    };
    if min > 0 && files.len() <= FEW {
        let odb = repo.odb().ok();
        let large = |i: usize| {
            odb.as_ref()
                .and_then(|odb| odb.read_header(items[i].id).ok())
                .is_none_or(|(size, _)| size as u64 >= min)
        };
        if !files.iter().any(|&(i, _)| large(i)) {
            return HashMap::new();
        }
    }
    let wanted: HashSet<&[u8]> = files
        .iter()
        .map(|&(i, _)| items[i].path.as_slice())
        .collect();
    unmodified_files(previous, min, &wanted).unwrap_or_else(|e| {
        tracing::debug!(error = %format!("{e:#}"), "previous worktree not reused");
        HashMap::new()
    })
}

/// Files of `min` bytes or more of the worktree at `dir`, among `wanted`,
/// that still hold what its index says (`spare::unmodified`): path →
/// (blob, mode).
fn unmodified_files(
    dir: &Path,
    min: u64,
    wanted: &HashSet<&[u8]>,
) -> Result<HashMap<Vec<u8>, (Oid, u32)>> {
    let index_path = Repository::open(dir)?.path().join("index");
    let written = std::fs::metadata(&index_path)?;
    let index = indexfile::read(&index_path)?;
    let mut out = HashMap::with_capacity(index.len());
    let written = (written.mtime(), written.mtime_nsec());
    for e in index {
        let regular = e.mode == 0o100644 || e.mode == 0o100755;
        if !regular
            || e.skip_worktree
            || e.stat.map_or(0, |s| u64::from(s.size)) < min
            || !wanted.contains(e.path.as_slice())
        {
            continue;
        }
        let Ok(m) = std::fs::symlink_metadata(dir.join(OsStr::from_bytes(&e.path))) else {
            continue;
        };
        if spare::unmodified(&e, &m, written) {
            out.insert(e.path, (e.id, e.mode));
        }
    }
    Ok(out)
}

/// Writes the files on several threads, reading blobs from the repository
/// at `gitdir`; returns each one's stat data by item number (none for
/// submodule directories and blobs of `size_limit` bytes or more).
///
/// The files go out in runs of one directory, each taken by whichever
/// thread is free: creating a file locks its directory, so threads that
/// write into different directories do not wait on each other (handing
/// out files one by one in turn put every thread in the same directory),
/// and a thread the scheduler holds back on a busy machine leaves the
/// remaining runs to the others instead of finishing a fixed share late.
fn write_files(
    gitdir: &Path,
    items: &[Item],
    files: Vec<(usize, PathBuf, Source)>,
    size_limit: Option<u64>,
) -> Result<HashMap<usize, Stat>> {
    let runs = directory_runs(&files);
    let threads = treewalk::threads_for(files.len());
    let next = AtomicUsize::new(0);
    let work = Work {
        files: &files,
        runs: &runs,
        next: &next,
    };
    let results: Vec<Result<Vec<(usize, Stat)>>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| s.spawn(|| write_runs(gitdir, items, &work, size_limit)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| anyhow::bail!("checkout thread panicked"))
            })
            .collect()
    });
    let mut out = HashMap::with_capacity(files.len());
    for r in results {
        for (i, m) in r? {
            out.insert(i, m);
        }
    }
    Ok(out)
}

/// The files to write, cut into runs, and the next run to take.
struct Work<'a> {
    files: &'a [(usize, PathBuf, Source)],
    runs: &'a [std::ops::Range<usize>],
    next: &'a AtomicUsize,
}

impl Work<'_> {
    fn take(&self) -> Option<&[(usize, PathBuf, Source)]> {
        let r = self.runs.get(self.next.fetch_add(1, Ordering::Relaxed))?;
        Some(&self.files[r.clone()])
    }

    /// Leaves nothing more to take (after an error).
    fn stop(&self) {
        self.next.store(self.runs.len(), Ordering::Relaxed);
    }
}

/// Consecutive files of one directory (tree order lists a directory's
/// files together), at most `RUN` of them: a large directory is still
/// shared between threads.
fn directory_runs(files: &[(usize, PathBuf, Source)]) -> Vec<std::ops::Range<usize>> {
    const RUN: usize = 256;
    let mut runs = Vec::new();
    let mut start = 0;
    for i in 1..=files.len() {
        let split =
            i == files.len() || i - start == RUN || files[i].1.parent() != files[start].1.parent();
        if split {
            runs.push(start..i);
            start = i;
        }
    }
    runs
}

fn write_runs(
    gitdir: &Path,
    items: &[Item],
    work: &Work,
    size_limit: Option<u64>,
) -> Result<Vec<(usize, Stat)>> {
    let written = (|| {
        // Each thread reads blobs through its own handle (libgit2 objects
        // are not shared between threads).
        let repo = Repository::open(gitdir)?;
        let odb = repo.odb()?;
        let mut out = Vec::new();
        while let Some(run) = work.take() {
            // A run is one directory's files: each is created relative to
            // the directory, not by walking its whole path again.
            let parent = run[0].1.parent().context("a file without a directory")?;
            let dir =
                File::open(parent).with_context(|| format!("cannot open {}", parent.display()))?;
            for (i, full, source) in run {
                let meta = write_one(&odb, &items[*i], &dir, full, source, size_limit)?;
                if let Some(meta) = meta {
                    out.push((*i, Stat::of(&meta)));
                }
            }
        }
        Ok(out)
    })();
    if written.is_err() {
        work.stop();
    }
    written
}

/// Writes one file, symlink or submodule directory; its metadata, or None
/// for what the index records without stat data.
fn write_one(
    odb: &git2::Odb,
    item: &Item,
    dir: &File,
    full: &Path,
    source: &Source,
    size_limit: Option<u64>,
) -> Result<Option<Metadata>> {
    Ok(Some(match item.mode {
        MODE_SUBMODULE => {
            // A submodule: an empty directory until `submodule update`.
            std::fs::create_dir(full)
                .with_context(|| format!("cannot create {}", full.display()))?;
            return Ok(None);
        }
        MODE_LINK => {
            let target = odb.read(item.id)?;
            std::os::unix::fs::symlink(OsStr::from_bytes(target.data()), full)
                .with_context(|| format!("cannot create symlink {}", full.display()))?;
            full.symlink_metadata()?
        }
        _ if size_limit.is_some_and(|max| {
            odb.read_header(item.id)
                .is_ok_and(|(size, _)| size as u64 >= max)
        }) =>
        {
            return Ok(None)
        }
        mode => {
            let perm = if mode == MODE_EXEC { 0o777 } else { 0o666 };
            let mut f = create_new(dir, full, perm)
                .with_context(|| format!("cannot create {}", full.display()))?;
            let cloned = match source {
                Source::Clone(from) => clone_file(from, &mut f).is_ok(),
                Source::Blob => false,
            };
            if !cloned {
                let blob = odb.read(item.id)?;
                std::io::Write::write_all(&mut f, blob.data())
                    .with_context(|| format!("cannot write {}", full.display()))?;
            }
            f.metadata()?
        }
    }))
}

/// Creates the file `full` (which must not exist) relative to `dir`, the
/// directory it is in.
fn create_new(dir: &File, full: &Path, perm: u32) -> std::io::Result<File> {
    let name = full
        .file_name()
        .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    let fd = nix::fcntl::openat(
        Some(dir.as_raw_fd()),
        name,
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(perm),
    )
    // As std's errors read: "File exists (os error 17)".
    .map_err(std::io::Error::from)?;
    // SAFETY: openat just returned this descriptor, and nothing else holds it.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// `FICLONE`: share the source's extents (btrfs, xfs, bcachefs…).
const FICLONE: libc::c_ulong = 0x4004_9409;

/// Whether files of `from` can be reflinked into `to` (one probe file).
fn can_reflink(from: &Path, to: &Path) -> bool {
    let probe = to.join(".git-sync-reflink-probe");
    let ok = (|| -> std::io::Result<bool> {
        let src = File::open(from.join(".git"))?;
        let dst = File::create(&probe)?;
        // SAFETY: both descriptors are open for the duration of the call.
        Ok(unsafe { libc::ioctl(dst.as_raw_fd(), FICLONE as _, src.as_raw_fd()) } == 0)
    })()
    .unwrap_or(false);
    let _ = std::fs::remove_file(&probe);
    ok
}

/// Copies `from` into the empty file `to`: a reflink if the filesystem
/// can, else a kernel-side copy (`copy_file_range`). On error the caller
/// writes the blob instead, so a partial copy is truncated first.
fn clone_file(from: &Path, to: &mut File) -> std::io::Result<()> {
    let mut src = File::open(from)?;
    // SAFETY: both descriptors are open for the duration of the call.
    if unsafe { libc::ioctl(to.as_raw_fd(), FICLONE as _, src.as_raw_fd()) } == 0 {
        return Ok(());
    }
    let r = std::io::copy(&mut src, to).map(drop);
    if r.is_err() {
        to.set_len(0)?;
        std::io::Seek::rewind(to)?;
    }
    r
}

/// A tree entry name that is safe to create as is: not empty, `.`, `..`,
/// no separators or NUL, and not `.git` in any spelling Windows or macOS
/// filesystems fold to it (`.GIT`, `.git.`, `.git `, `git~1`).
fn safe_name(name: &[u8]) -> bool {
    if name.is_empty() || name == b"." || name == b".." {
        return false;
    }
    if name.iter().any(|b| matches!(b, b'/' | b'\\' | 0)) {
        return false;
    }
    let end = name.len()
        - name
            .iter()
            .rev()
            .take_while(|b| **b == b'.' || **b == b' ')
            .count();
    let trimmed = name[..end].to_ascii_lowercase();
    trimmed != b".git" && trimmed != b"git~1"
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    #[test]
    fn runs_hold_one_directory_and_are_bounded() {
        let mut paths: Vec<String> = (0..300).map(|i| format!("big/f{i}")).collect();
        paths.extend(["a/x", "a/y", "a/sub/z", "a/w", "top"].map(String::from));
        let files: Vec<_> = paths
            .iter()
            .enumerate()
            .map(|(i, p)| (i, PathBuf::from("/wt").join(p), super::Source::Blob))
            .collect();
        let runs: Vec<Vec<&str>> = super::directory_runs(&files)
            .into_iter()
            .map(|r| r.map(|i| paths[i].as_str()).collect())
            .collect();
        let sizes: Vec<usize> = runs.iter().map(Vec::len).collect();
        assert_eq!(sizes, [256, 44, 2, 1, 1, 1]);
        assert_eq!(
            runs[2..],
            [
                vec!["a/x", "a/y"],
                vec!["a/sub/z"],
                vec!["a/w"],
                vec!["top"]
            ]
        );
    }

    #[test]
    fn unsafe_names_are_refused() {
        for bad in [
            &b".."[..],
            b".",
            b"",
            b".git",
            b".GIT",
            b".git.",
            b".git ",
            b"git~1",
            b"a/b",
            b"a\\b",
        ] {
            assert!(!super::safe_name(bad), "{:?}", String::from_utf8_lossy(bad));
        }
        for good in [&b"file"[..], b".gitignore", b".github", b"git", b"..x"] {
            assert!(super::safe_name(good));
        }
    }
}
