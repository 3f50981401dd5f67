//! One version of the served tree, pinned for the life of a request.
//!
//! git-sync publishes a new version by swapping a symlink. Resolving the root
//! once per request (`open(root, O_PATH)`) and opening everything else relative
//! to that descriptor with `openat2(RESOLVE_BENEATH)` means a response's file,
//! index, precompressed variant and listing all come from the same worktree,
//! however often the link moves, and that the kernel (not string compares)
//! keeps every open below the root.

use std::ffi::OsString;
use std::fs::File;
use std::hash::{Hash, Hasher};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstat, fstatat, FileStat, Mode, SFlag};

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
        Meta::new(
            st.st_dev,
            st.st_ino,
            st.st_size as u64,
            (st.st_mtime, st.st_mtime_nsec),
            (st.st_ctime, st.st_ctime_nsec),
        )
    }

    /// For files opened outside the tree (an absolute `--not-found-page`).
    pub fn from_metadata(md: &std::fs::Metadata) -> Meta {
        use std::os::unix::fs::MetadataExt;
        Meta::new(
            md.dev(),
            md.ino(),
            md.size(),
            (md.mtime(), md.mtime_nsec()),
            (md.ctime(), md.ctime_nsec()),
        )
    }

    fn new(dev: u64, ino: u64, size: u64, mtime: (i64, i64), ctime: (i64, i64)) -> Meta {
        let mut h = std::hash::DefaultHasher::new();
        (ino, size, mtime, ctime).hash(&mut h);
        Meta {
            id: FileId {
                dev,
                ino,
                size,
                mtime,
                ctime,
            },
            changed: time(ctime),
            size,
            modified: time(mtime),
            etag: format!("\"{:016x}\"", h.finish()),
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

/// An open regular file and its metadata.
pub struct OpenFile {
    pub file: File,
    pub meta: Meta,
}

/// What a path names.
pub enum Entry {
    File(OpenFile),
    Dir(OwnedFd),
}

/// The root as resolved at the start of one request.
pub struct Tree {
    fd: OwnedFd,
}

impl Tree {
    /// Resolves the root (following a swapped symlink) once: one syscall.
    pub fn pin(root: &Path) -> io::Result<Tree> {
        let fd = nix::fcntl::open(
            root,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        // SAFETY: `open` just returned this descriptor and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Tree { fd })
    }

    /// Whether `root` still resolves to this tree. A miss on a tree that was
    /// swapped out (and perhaps deleted) since it was pinned is retried on the new one.
    pub fn is_current(&self, root: &Path) -> bool {
        let Ok(pinned) = fstat(self.fd.as_raw_fd()) else {
            return false;
        };
        // A deleted directory's inode number can be reused by the next
        // worktree, so a removed tree (no links left) is never current.
        if pinned.st_nlink == 0 {
            return false;
        }
        match nix::sys::stat::stat(root) {
            Ok(st) => (st.st_dev, st.st_ino) == (pinned.st_dev, pinned.st_ino),
            Err(_) => false,
        }
    }

    /// Opens `rel` (relative, no `..`) beneath the root under `policy`.
    pub fn open(&self, rel: &Path, policy: Policy) -> Result<Entry, OpenError> {
        let fd = match self.openat(rel, true) {
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
            SFlag::S_IFREG => Ok(Entry::File(OpenFile {
                file: File::from(fd),
                meta: Meta::from_stat(&st),
            })),
            SFlag::S_IFDIR => Ok(Entry::Dir(fd)),
            _ => Err(OpenError::NotFound),
        }
    }

    /// Opens a regular file, treating a directory as absent.
    pub fn open_file(&self, rel: &Path, policy: Policy) -> Result<OpenFile, OpenError> {
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
        // EAGAIN: a concurrent rename raced the kernel's containment check; retry.
        for _ in 0..8 {
            match openat2(self.fd.as_raw_fd(), rel, how) {
                Err(Errno::EAGAIN) | Err(Errno::EINTR) => continue,
                // SAFETY: openat2 just returned this descriptor.
                r => return r.map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            }
        }
        Err(Errno::EAGAIN)
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

        let t = Tree::pin(&root).unwrap();
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
        let t = Tree::pin(dir.path()).unwrap();
        let first = t.open_file(Path::new("a"), ALL).unwrap().meta;
        std::fs::write(&f, "two").unwrap();
        File::options()
            .write(true)
            .open(&f)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        let second = t.open_file(Path::new("a"), ALL).unwrap().meta;
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
        let t = Tree::pin(&link).unwrap();
        assert!(t.is_current(&link));
        std::os::unix::fs::symlink("v2", dir.path().join("next")).unwrap();
        std::fs::rename(dir.path().join("next"), &link).unwrap();
        assert!(!t.is_current(&link));
    }
}
