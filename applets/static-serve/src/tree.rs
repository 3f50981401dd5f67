//! One version of the served tree, pinned for the life of a request.
//!
//! git-sync publishes a new version by swapping a symlink. Resolving the root
//! once per request and opening everything else relative to that tree's
//! descriptor with `openat2(RESOLVE_BENEATH)` means a response's file, index,
//! precompressed variant and listing all come from the same worktree, however
//! often the link moves, and that the kernel (not string compares) keeps every
//! open below the root.
//!
//! The tree the root resolved to last stays open ([`Root`]): a request costs a
//! `stat` of the root, and an `open` only after a swap. Each tree keeps the
//! files it opened (nginx's `open_file_cache`), so a hit costs one `fstatat`
//! checking that the path still names exactly that version of the file
//! (device, inode, size, nanosecond mtime and ctime), and no open or close. The
//! cache goes with its tree when the root is swapped.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::File;
use std::hash::{Hash, Hasher};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::fcntl::{openat2, AtFlags, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstat, fstatat, FileStat, Mode, SFlag};

use crate::headers::FileHeaders;
use crate::path::visible;

/// What the path policy flags allow.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// `--no-symlinks` clears this: every symlink below the root is refused.
    pub symlinks: bool,
    /// `--hidden-files`.
    pub hidden_files: bool,
}

/// Why an open failed, as the client will see it.
#[derive(Debug)]
pub enum OpenError {
    /// Absent, escaping the root, refused by policy, or not a regular file or directory.
    NotFound,
    /// Absent from a directory that has not changed since it was last looked
    /// in (the negative cache): unlike `NotFound`, this cannot be the
    /// half-deleted tree of a swap, so it needs no second look at the root.
    Absent,
    /// Permission denied by the file system.
    Forbidden,
    Io(io::Error),
}

impl From<Errno> for OpenError {
    fn from(e: Errno) -> Self {
        match e {
            // EXDEV: resolution left the root; ELOOP: a symlink under --no-symlinks
            // (or a loop); ENOTDIR: `/file.txt/`; ENAMETOOLONG: nothing by that name.
            Errno::ENOENT | Errno::ENOTDIR | Errno::EXDEV | Errno::ELOOP | Errno::ENAMETOOLONG => {
                OpenError::NotFound
            }
            Errno::EACCES | Errno::EPERM => OpenError::Forbidden,
            e => OpenError::Io(io::Error::from(e)),
        }
    }
}

/// The metadata that drives caching headers.
#[derive(Debug, Clone)]
pub struct Meta {
    /// Exactly this version of this file (cache key).
    pub id: FileId,
    /// ctime: when the inode last changed.
    pub changed: SystemTime,
    pub size: u64,
    pub modified: SystemTime,
    /// A strong validator (quoted). Mixes inode, size, and nanosecond mtime and
    /// ctime, so a checkout that rewrites a file with the same size within the
    /// same mtime second still gets a new tag (ctime cannot be set back).
    pub etag: String,
}

impl Meta {
    fn from_stat(st: &FileStat) -> Meta {
        Meta::new(FileId::of(st))
    }

    /// For files opened outside the tree (an absolute `--not-found-page`).
    pub fn from_metadata(md: &std::fs::Metadata) -> Meta {
        use std::os::unix::fs::MetadataExt;
        Meta::new(FileId {
            dev: md.dev(),
            ino: md.ino(),
            size: md.size(),
            mtime: (md.mtime(), md.mtime_nsec()),
            ctime: (md.ctime(), md.ctime_nsec()),
        })
    }

    /// Whether the file's ctime is over a second old, so that no write within
    /// the file system's timestamp granularity can give new content the same
    /// [`FileId`]: only such files are cached by identity.
    pub fn settled(&self) -> bool {
        settled(self.changed)
    }

    fn new(id: FileId) -> Meta {
        let mut h = std::hash::DefaultHasher::new();
        (id.ino, id.size, id.mtime, id.ctime).hash(&mut h);
        Meta {
            changed: time(id.ctime),
            size: id.size,
            modified: time(id.mtime),
            etag: format!("\"{:016x}\"", h.finish()),
            id,
        }
    }
}

#[cfg(test)]
impl Meta {
    /// A listing entry for tests.
    pub fn with_size(mut self, size: u64, modified: SystemTime) -> Meta {
        self.size = size;
        self.modified = modified;
        self
    }
}

fn time((secs, nanos): (i64, i64)) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::new(secs as u64, nanos as u32)
    } else {
        UNIX_EPOCH
    }
}

/// Identifies one version of one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileId {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

/// Whether a ctime is over a second old (see [`Meta::settled`]).
fn settled(changed: SystemTime) -> bool {
    changed
        .elapsed()
        .is_ok_and(|age| age > Duration::from_secs(1))
}

impl FileId {
    fn of(st: &FileStat) -> FileId {
        FileId {
            dev: st.st_dev,
            ino: st.st_ino,
            size: st.st_size as u64,
            mtime: (st.st_mtime, st.st_mtime_nsec),
            ctime: (st.st_ctime, st.st_ctime_nsec),
        }
    }
}

/// An open regular file and its metadata, shared by the tree's cache and the
/// responses sending it.
pub struct OpenFile {
    pub file: Arc<File>,
    pub meta: Meta,
    /// The response headers that follow from this file alone, built on first use.
    pub headers: OnceLock<FileHeaders>,
}

impl OpenFile {
    pub fn new(file: File, meta: Meta) -> Arc<OpenFile> {
        Arc::new(OpenFile {
            file: Arc::new(file),
            meta,
            headers: OnceLock::new(),
        })
    }
}

/// What a path names.
pub enum Entry {
    File(Arc<OpenFile>),
    Dir(OwnedFd),
}

/// Set once openat2 answered ENOSYS: [`Tree::walk`] from then on.
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

/// Open files one tree keeps (each holds a descriptor).
pub const OPEN_FILES: usize = 1024;

/// `--root`, and the tree it resolved to when last looked at.
pub struct Root {
    path: PathBuf,
    /// Read per request by every worker; written once per swap.
    last: RwLock<Option<Arc<Tree>>>,
}

impl Root {
    pub fn new(path: PathBuf) -> Root {
        Root {
            path,
            last: RwLock::new(None),
        }
    }

    /// The tree the root resolves to now, for one request. The last tree is
    /// kept open, and while it is, its directory's inode number cannot be
    /// reused: a `stat` of the root that finds the same device and inode
    /// therefore means the root still resolves to exactly that tree.
    ///
    /// Also returns the tree's directory as that `stat` saw it (when it was
    /// the tree kept), which answers [`Tree::absent_by`] with no further call.
    pub fn pin(&self) -> io::Result<(Arc<Tree>, Option<FileId>)> {
        let st = nix::sys::stat::stat(&self.path)?;
        if let Some(t) = read(&self.last).as_ref() {
            if t.id == (st.st_dev, st.st_ino) {
                return Ok((t.clone(), Some(FileId::of(&st))));
            }
        }
        // Swapped (or first use): whatever the root resolves to by the time
        // it is opened is the tree this request gets.
        let t = Arc::new(Tree::open_dir(&self.path)?);
        *write(&self.last) = Some(t.clone());
        Ok((t, None))
    }

    /// Whether the root still resolves to `tree`. A miss on a tree that was
    /// swapped out (and perhaps deleted) since it was pinned is retried on the
    /// new one.
    pub fn is_current(&self, tree: &Tree) -> bool {
        nix::sys::stat::stat(&self.path).is_ok_and(|st| (st.st_dev, st.st_ino) == tree.id)
    }
}

/// The read side of a lock whose holders cannot leave it inconsistent.
/// Readers never wait for each other: a worker thread preempted while it
/// holds one does not stall the others.
pub fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

pub fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

/// One version of the root: its directory, held open.
pub struct Tree {
    fd: OwnedFd,
    /// The directory's device and inode.
    id: (u64, u64),
    /// What paths (relative, as the handler spelled them) named when looked up.
    /// Keyed by what clients ask for, absent names too: std's randomly keyed
    /// hash, since with an unkeyed one names crafted to collide would make
    /// every lookup a scan of all of them, under the lock.
    known: RwLock<HashMap<Box<[u8]>, Known>>,
}

/// A cached lookup, valid while what it was made from is unchanged.
enum Known {
    /// A settled file, open.
    File(Arc<OpenFile>),
    /// Nothing by that name in a settled directory, identified here: a new
    /// entry changes the directory's mtime and ctime, so an unchanged one
    /// still lacks it.
    Absent(FileId),
}

impl Tree {
    /// Opens `root` (following a swapped symlink) as it resolves now.
    fn open_dir(root: &Path) -> io::Result<Tree> {
        let fd = nix::fcntl::open(
            root,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        // SAFETY: `open` just returned this descriptor and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let st = fstat(fd.as_raw_fd())?;
        Ok(Tree {
            fd,
            id: (st.st_dev, st.st_ino),
            known: RwLock::new(HashMap::default()),
        })
    }

    /// Opens `rel` (relative, no `..`) beneath the root under `policy`: from
    /// the cache when the path still names the same version of the same file.
    pub fn open(&self, rel: &Path, policy: Policy) -> Result<Entry, OpenError> {
        self.open_seen(rel, policy, None)
    }

    /// [`Tree::open`], given the tree's directory as the request's pin just
    /// saw it: a name directly in the tree known to be absent then costs no
    /// further call (a top-level 404 is that one `stat`).
    pub fn open_seen(
        &self,
        rel: &Path,
        policy: Policy,
        dir: Option<&FileId>,
    ) -> Result<Entry, OpenError> {
        if let Some(known) = self.cached(rel, policy, dir) {
            return known;
        }
        let entry = self.open_uncached(rel, policy)?;
        if let Entry::File(f) = &entry {
            if f.meta.settled() {
                self.remember(rel, Known::File(f.clone()));
            }
        }
        Ok(entry)
    }

    /// What `rel` was found to be, if that still holds: one `fstatat`.
    ///
    /// A file: `rel` still names exactly that version of it. Its route was
    /// checked (beneath the root, symlinks and dotfiles under `policy`) when
    /// it was opened; an unchanged identity means the same content. Symlinks
    /// are not followed here when `policy` refuses them, so a path turned into
    /// a link misses. Absent: the directory that would hold it is unchanged.
    fn cached(
        &self,
        rel: &Path,
        policy: Policy,
        seen: Option<&FileId>,
    ) -> Option<Result<Entry, OpenError>> {
        let key = rel.as_os_str().as_bytes();
        let (path, want, found) = match read(&self.known).get(key)? {
            Known::File(f) => (rel, f.meta.id, Ok(Entry::File(f.clone()))),
            Known::Absent(dir) => (parent(rel), *dir, Err(OpenError::Absent)),
        };
        let now = match seen {
            Some(dir) if path.as_os_str().is_empty() => Some(*dir),
            _ => {
                let flags = if policy.symlinks {
                    AtFlags::empty()
                } else {
                    AtFlags::AT_SYMLINK_NOFOLLOW
                };
                self.stat(path, flags).ok().map(|st| FileId::of(&st))
            }
        };
        if now == Some(want) {
            return Some(found);
        }
        write(&self.known).remove(key);
        None
    }

    /// `rel` (`""`: the tree itself) as it is now.
    fn stat(&self, rel: &Path, flags: AtFlags) -> nix::Result<FileStat> {
        if rel.as_os_str().is_empty() {
            fstat(self.fd.as_raw_fd())
        } else {
            fstatat(Some(self.fd.as_raw_fd()), rel, flags)
        }
    }

    fn remember(&self, rel: &Path, known: Known) {
        let mut all = write(&self.known);
        if all.len() >= OPEN_FILES {
            // Any one goes: a full cache of hot paths is rare, and a miss
            // costs only what an uncached request does.
            if let Some(k) = all.keys().next().cloned() {
                all.remove(&k);
            }
        }
        all.insert(rel.as_os_str().as_bytes().into(), known);
    }

    /// Remembers that `rel` is absent, once its directory has settled (see
    /// [`Meta::settled`]: an entry added within the timestamp granularity
    /// could leave the directory's times as they were). Only for a walk that
    /// met no symlink: a dangling link's target could appear elsewhere.
    fn remember_absent(&self, rel: &Path) {
        let Ok(st) = self.stat(parent(rel), AtFlags::empty()) else {
            return;
        };
        let dir = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR;
        let id = FileId::of(&st);
        if dir && settled(time(id.ctime)) {
            self.remember(rel, Known::Absent(id));
        }
    }

    fn open_uncached(&self, rel: &Path, policy: Policy) -> Result<Entry, OpenError> {
        let fd = match self.openat(rel, true) {
            Err(Errno::ENOENT) => {
                self.remember_absent(rel);
                return Err(OpenError::NotFound);
            }
            Err(Errno::ELOOP) if policy.symlinks => {
                // A symlink on the way: follow it, but only beneath the root, and
                // check that what it resolves to is not a hidden file or `.git`.
                let fd = self.openat(rel, false)?;
                if !self.resolves_visible(&fd, policy.hidden_files) {
                    return Err(OpenError::NotFound);
                }
                fd
            }
            r => r?,
        };
        let st = fstat(fd.as_raw_fd())?;
        match SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT {
            SFlag::S_IFREG => Ok(Entry::File(OpenFile::new(
                File::from(fd),
                Meta::from_stat(&st),
            ))),
            SFlag::S_IFDIR => Ok(Entry::Dir(fd)),
            _ => Err(OpenError::NotFound),
        }
    }

    /// Opens a regular file, treating a directory as absent.
    pub fn open_file(&self, rel: &Path, policy: Policy) -> Result<Arc<OpenFile>, OpenError> {
        match self.open(rel, policy)? {
            Entry::File(f) => Ok(f),
            Entry::Dir(_) => Err(OpenError::NotFound),
        }
    }

    /// Lists a directory opened by [`Tree::open`]: visible entries under
    /// `policy`, with symlinks that escape the root or dangle left out.
    pub fn list(&self, dir: OwnedFd, rel: &Path, policy: Policy) -> io::Result<Vec<DirEntry>> {
        let dirfd = dir.as_raw_fd();
        let mut d = nix::dir::Dir::from_fd(std::os::fd::IntoRawFd::into_raw_fd(dir))?;
        let mut out = Vec::new();
        for e in d.iter() {
            let e = e?;
            let name = e.file_name().to_bytes();
            if name == b"."
                || name == b".."
                || crate::path::is_hidden_name(name, policy.hidden_files)
            {
                continue;
            }
            let name = OsString::from_vec(name.to_vec());
            let Ok(lst) = fstatat(
                Some(dirfd),
                name.as_os_str(),
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            ) else {
                continue;
            };
            let st = if SFlag::from_bits_truncate(lst.st_mode) & SFlag::S_IFMT == SFlag::S_IFLNK {
                if !policy.symlinks {
                    continue;
                }
                match self.open(&rel.join(&name), policy) {
                    Ok(Entry::File(f)) => stat_of(&f.file),
                    Ok(Entry::Dir(fd)) => fstat(fd.as_raw_fd()).ok(),
                    Err(_) => None,
                }
            } else {
                Some(lst)
            };
            let Some(st) = st else { continue };
            let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
            if kind != SFlag::S_IFREG && kind != SFlag::S_IFDIR {
                continue;
            }
            out.push(DirEntry {
                name,
                is_dir: kind == SFlag::S_IFDIR,
                meta: Meta::from_stat(&st),
            });
        }
        out.sort_by(|a, b| b.is_dir.cmp(&a.is_dir).then_with(|| a.name.cmp(&b.name)));
        Ok(out)
    }

    fn openat(&self, rel: &Path, no_symlinks: bool) -> Result<OwnedFd, Errno> {
        let mut resolve = ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS;
        if no_symlinks {
            resolve |= ResolveFlag::RESOLVE_NO_SYMLINKS;
        }
        let how = OpenHow::new()
            .flags(OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK | OFlag::O_NOCTTY)
            .resolve(resolve);
        if NO_OPENAT2.load(Ordering::Relaxed) {
            return self.walk(rel);
        }
        // EAGAIN: a concurrent rename raced the kernel's containment check; retry.
        for _ in 0..8 {
            match openat2(self.fd.as_raw_fd(), rel, how) {
                Err(Errno::EAGAIN) | Err(Errno::EINTR) => continue,
                Err(Errno::ENOSYS) => {
                    if !NO_OPENAT2.swap(true, Ordering::Relaxed) {
                        tracing::warn!("this kernel has no openat2 (Linux before 5.6): symlinks below the root are refused");
                    }
                    return self.walk(rel);
                }
                // SAFETY: openat2 just returned this descriptor.
                r => return r.map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            }
        }
        Err(Errno::EAGAIN)
    }

    /// `rel` opened one component at a time, none of them a symlink: where
    /// openat2 is missing (Linux before 5.6, some sandboxes), containment
    /// without it. `rel` has no `..` (`path.rs`), so refusing symlinks keeps
    /// every step beneath the root.
    fn walk(&self, rel: &Path) -> Result<OwnedFd, Errno> {
        let mut parts = rel.components().peekable();
        let mut dir: Option<OwnedFd> = None;
        while let Some(c) = parts.next() {
            let at = dir.as_ref().unwrap_or(&self.fd).as_raw_fd();
            let name = c.as_os_str();
            let flags = if parts.peek().is_some() {
                OFlag::O_PATH | OFlag::O_DIRECTORY
            } else {
                OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY
            };
            let fd = nix::fcntl::openat(
                Some(at),
                name,
                flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )?;
            // SAFETY: openat just returned this descriptor.
            dir = Some(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        dir.ok_or(Errno::ENOENT)
    }

    /// Where `fd` really is, relative to the root, must pass the dotfile policy.
    fn resolves_visible(&self, fd: &OwnedFd, hidden_files: bool) -> bool {
        let (Some(root), Some(target)) = (fd_path(&self.fd), fd_path(fd)) else {
            return false;
        };
        match target.strip_prefix(&root) {
            Ok(rel) => visible(rel, hidden_files),
            Err(_) => false,
        }
    }
}

/// The directory part of `rel` (`""` for a name directly in the tree).
fn parent(rel: &Path) -> &Path {
    // Byte-wise (`Path::parent` parses components): the handler's paths are
    // relative, with single separators and none at the end (`RequestPath`).
    let b = rel.as_os_str().as_bytes();
    let end = b.iter().rposition(|&c| c == b'/').unwrap_or(0);
    Path::new(std::ffi::OsStr::from_bytes(&b[..end]))
}

/// One entry of a directory listing.
pub struct DirEntry {
    pub name: OsString,
    pub is_dir: bool,
    pub meta: Meta,
}

impl DirEntry {
    pub fn name_bytes(&self) -> &[u8] {
        self.name.as_bytes()
    }
}

fn stat_of(f: &File) -> Option<FileStat> {
    fstat(f.as_raw_fd()).ok()
}

fn fd_path(fd: &OwnedFd) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: Policy = Policy {
        symlinks: true,
        hidden_files: false,
    };

    #[test]
    fn parent_is_paths_parent_for_the_handlers_paths() {
        for rel in ["a", "a/b", "a/b/c.txt", "./index.html", "a/index.html.gz"] {
            assert_eq!(
                parent(Path::new(rel)),
                Path::new(rel).parent().unwrap(),
                "{rel}"
            );
        }
    }

    #[test]
    fn symlinks_stay_beneath_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("www");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/a.txt"), "a").unwrap();
        std::fs::write(dir.path().join("secret"), "s").unwrap();
        std::os::unix::fs::symlink("sub/a.txt", root.join("inside")).unwrap();
        std::os::unix::fs::symlink("../secret", root.join("outside")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret"), root.join("absolute")).unwrap();
        std::fs::create_dir(root.join(".git")).unwrap();
        std::fs::write(root.join(".git/config"), "c").unwrap();
        std::os::unix::fs::symlink(".git/config", root.join("gitlink")).unwrap();

        let t = Root::new(root).pin().unwrap().0;
        assert!(t.open_file(Path::new("inside"), ALL).is_ok());
        for p in ["outside", "absolute", "gitlink", "missing", "sub/a.txt/x"] {
            assert!(
                matches!(t.open_file(Path::new(p), ALL), Err(OpenError::NotFound)),
                "{p}"
            );
        }
        let strict = Policy {
            symlinks: false,
            ..ALL
        };
        assert!(matches!(
            t.open_file(Path::new("inside"), strict),
            Err(OpenError::NotFound)
        ));
        assert!(t.open_file(Path::new("sub/a.txt"), strict).is_ok());
    }

    #[test]
    fn same_size_same_second_rewrite_changes_the_etag() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a");
        std::fs::write(&f, "one").unwrap();
        let mtime = std::fs::metadata(&f).unwrap().modified().unwrap();
        let t = Root::new(dir.path().into()).pin().unwrap().0;
        let first = t.open_file(Path::new("a"), ALL).unwrap().meta.clone();
        std::fs::write(&f, "two").unwrap();
        File::options()
            .write(true)
            .open(&f)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        let second = t.open_file(Path::new("a"), ALL).unwrap().meta.clone();
        assert_eq!(first.modified, second.modified);
        assert_ne!(first.etag, second.etag);
    }

    #[test]
    fn a_swapped_root_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("v1")).unwrap();
        std::fs::create_dir(dir.path().join("v2")).unwrap();
        let link = dir.path().join("current");
        std::os::unix::fs::symlink("v1", &link).unwrap();
        let root = Root::new(link.clone());
        let t = root.pin().unwrap().0;
        assert!(root.is_current(&t));
        assert!(
            Arc::ptr_eq(&t, &root.pin().unwrap().0),
            "the same tree stays pinned"
        );
        std::os::unix::fs::symlink("v2", dir.path().join("next")).unwrap();
        std::fs::rename(dir.path().join("next"), &link).unwrap();
        assert!(!root.is_current(&t));
        assert!(!Arc::ptr_eq(&t, &root.pin().unwrap().0));
    }

    #[test]
    fn without_openat2_the_walk_opens_files_and_directories_but_no_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("www");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/a.txt"), "a").unwrap();
        std::os::unix::fs::symlink("sub/a.txt", root.join("link")).unwrap();
        std::os::unix::fs::symlink("sub", root.join("dirlink")).unwrap();
        let t = Root::new(root).pin().unwrap().0;
        let read = |p: &str| -> Result<String, Errno> {
            let fd = t.walk(Path::new(p))?;
            Ok(std::io::read_to_string(File::from(fd)).unwrap())
        };
        assert_eq!(read("sub/a.txt"), Ok("a".to_string()));
        assert_eq!(read("./sub/a.txt"), Ok("a".to_string()));
        assert!(t.walk(Path::new("sub")).is_ok());
        assert_eq!(read("link"), Err(Errno::ELOOP));
        assert_eq!(read("dirlink/a.txt"), Err(Errno::ENOTDIR));
        assert_eq!(read("missing"), Err(Errno::ENOENT));
    }

    /// Waits (bounded) until `path`'s ctime is over a second old.
    fn settle(path: &Path) {
        for _ in 0..100 {
            let st = nix::sys::stat::stat(path).unwrap();
            if Meta::from_stat(&st).settled() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("{} did not settle", path.display());
    }

    #[test]
    fn cached_lookups_hold_only_while_the_file_or_directory_is_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a.txt");
        std::fs::write(&f, "one").unwrap();
        settle(&f);
        settle(dir.path());
        let t = Root::new(dir.path().into()).pin().unwrap().0;
        let open = |p: &str| t.open_file(Path::new(p), ALL);
        let first = open("a.txt").unwrap();
        assert!(Arc::ptr_eq(&first, &open("a.txt").unwrap()), "a hit");
        // Rewritten in place: a new version, never the cached one.
        std::fs::write(&f, "two").unwrap();
        let second = open("a.txt").unwrap();
        assert!(!Arc::ptr_eq(&first, &second));
        assert_eq!(std::io::read_to_string(&*second.file).unwrap(), "two");

        // Absent, then known absent, until the directory changes.
        assert!(matches!(open("b.txt"), Err(OpenError::NotFound)));
        assert!(matches!(open("b.txt"), Err(OpenError::Absent)));
        // As the pin sees the directory: no stat of its own.
        let now = |t: &Tree| FileId::of(&t.stat(Path::new(""), AtFlags::empty()).unwrap());
        let seen = |t: &Tree, d| t.open_seen(Path::new("b.txt"), ALL, Some(&d));
        assert!(matches!(seen(&t, now(&t)), Err(OpenError::Absent)));
        std::fs::write(dir.path().join("b.txt"), "b").unwrap();
        assert!(seen(&t, now(&t)).is_ok());
    }
}
