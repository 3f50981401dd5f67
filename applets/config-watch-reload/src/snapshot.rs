//! The content hash of the watched set: what decides whether to reload.
//!
//! Only relative paths and bytes count, never modes, times or inode numbers,
//! so a touch, a chmod, or a kubelet swap to identical content hashes the
//! same. Entries whose names start with `..` (the kubelet's `..data` link and
//! `..2024_…` directories) are skipped: the user-visible names point into
//! them, and their timestamped names change on every swap.

use std::collections::HashSet;
use std::io::ErrorKind;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Deeper trees are cut off: a symlink loop or a mistaken `--watch /`.
const MAX_DEPTH: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub hash: [u8; 32],
    /// Regular files hashed.
    pub files: usize,
    /// Every directory found under the roots (for `--recursive` watches).
    pub dirs: Vec<PathBuf>,
    /// Directories outside the roots that symlinked files point into: an
    /// edit there changes what the app reads, so they are watched too.
    pub link_dirs: Vec<PathBuf>,
    /// Files that exist but could not be read (permissions…).
    pub unreadable: Vec<String>,
}

impl Snapshot {
    /// Short hex form for logs and the `CONFIG_WATCH_RELOAD_HASH` variable.
    pub fn short(&self) -> String {
        hex(&self.hash[..6])
    }

    pub fn hex(&self) -> String {
        hex(&self.hash)
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Hashes every root (a file, a directory, or a path that does not exist)
/// in order, leaving out `exclude` (render outputs inside watched dirs, which
/// would otherwise re-trigger themselves).
pub fn take(roots: &[PathBuf], exclude: &HashSet<PathBuf>) -> Snapshot {
    let mut walk = Walk {
        hasher: Sha256::new(),
        files: 0,
        dirs: Vec::new(),
        link_dirs: Vec::new(),
        unreadable: Vec::new(),
        exclude,
        seen: HashSet::new(),
        base: PathBuf::new(),
    };
    for (i, root) in roots.iter().enumerate() {
        walk.hasher.update(format!("root\0{i}\0").as_bytes());
        // Each root is hashed whole, even where it overlaps another.
        walk.seen.clear();
        match std::fs::metadata(root) {
            Ok(m) if m.is_dir() => {
                walk.base = std::fs::canonicalize(root).unwrap_or_else(|_| root.clone());
                let base = walk.base.clone();
                walk.dir(&base, "", 0, &m);
            }
            Ok(m) if m.is_file() => {
                let parent = root.parent().and_then(|p| std::fs::canonicalize(p).ok());
                walk.base = parent.unwrap_or_default();
                walk.note_link(root);
                walk.file(root, "")
            }
            Ok(_) => walk.hasher.update(b"special\0"),
            Err(_) => walk.hasher.update(b"missing\0"),
        }
    }
    Snapshot {
        hash: walk.hasher.finalize().into(),
        files: walk.files,
        dirs: walk.dirs,
        link_dirs: walk.link_dirs,
        unreadable: walk.unreadable,
    }
}

struct Walk<'a> {
    hasher: Sha256,
    files: usize,
    dirs: Vec<PathBuf>,
    link_dirs: Vec<PathBuf>,
    unreadable: Vec<String>,
    exclude: &'a HashSet<PathBuf>,
    /// (dev, inode) of directories entered: symlinks may form cycles.
    seen: HashSet<(u64, u64)>,
    /// The canonical directory of the root being walked.
    base: PathBuf,
}

impl Walk<'_> {
    /// Records where a symlinked file really lives, when that is outside
    /// the root (the kubelet's links point inside it, into `..data`).
    fn note_link(&mut self, path: &Path) {
        if !std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
            return;
        }
        let Some(dir) = std::fs::canonicalize(path)
            .ok()
            .and_then(|t| t.parent().map(Path::to_path_buf))
        else {
            return;
        };
        if !dir.starts_with(&self.base) && !self.link_dirs.contains(&dir) {
            self.link_dirs.push(dir);
        }
    }

    fn dir(&mut self, path: &Path, rel: &str, depth: usize, meta: &std::fs::Metadata) {
        if depth > MAX_DEPTH || !self.seen.insert((meta.dev(), meta.ino())) {
            return;
        }
        self.dirs.push(path.to_path_buf());
        let mut names: Vec<_> = match std::fs::read_dir(path) {
            Ok(rd) => rd.filter_map(|e| e.ok()).map(|e| e.file_name()).collect(),
            Err(e) => {
                self.hasher
                    .update(format!("unlistable\0{rel}\0{:?}\0", e.kind()).as_bytes());
                return;
            }
        };
        names.sort();
        for name in names {
            let name_s = name.to_string_lossy();
            if name_s.starts_with("..") {
                continue;
            }
            let child = path.join(&name);
            if self.exclude.contains(&child) {
                continue;
            }
            let child_rel = if rel.is_empty() {
                name_s.into_owned()
            } else {
                format!("{rel}/{name_s}")
            };
            // Follows symlinks: the kubelet's `key -> ..data/key` links.
            match std::fs::metadata(&child) {
                Ok(m) if m.is_dir() => {
                    self.hasher.update(format!("dir\0{child_rel}\0").as_bytes());
                    self.dir(&child, &child_rel, depth + 1, &m);
                }
                Ok(m) if m.is_file() => {
                    self.note_link(&child);
                    self.file(&child, &child_rel)
                }
                // Dangling links, sockets, fifos: their name is all there is.
                _ => self
                    .hasher
                    .update(format!("other\0{child_rel}\0").as_bytes()),
            }
        }
    }

    fn file(&mut self, path: &Path, rel: &str) {
        self.hasher.update(format!("file\0{rel}\0").as_bytes());
        match std::fs::read(path) {
            Ok(content) => {
                self.files += 1;
                self.hasher.update((content.len() as u64).to_le_bytes());
                self.hasher.update(&content);
            }
            // Gone mid-swap: the swap's last event (removing the old
            // directory) comes after this, and triggers a new snapshot.
            Err(e) if e.kind() == ErrorKind::NotFound => self.hasher.update(b"vanished\0"),
            Err(e) => {
                self.hasher
                    .update(format!("unreadable\0{:?}\0", e.kind()).as_bytes());
                self.unreadable.push(format!("{}: {e}", path.display()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn snap(roots: &[&Path]) -> Snapshot {
        take(
            &roots.iter().map(|p| p.to_path_buf()).collect::<Vec<_>>(),
            &HashSet::new(),
        )
    }

    #[test]
    fn content_changes_hash_but_metadata_does_not() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("a.conf");
        std::fs::write(&f, "x=1").unwrap();
        let first = snap(&[d.path()]);
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&f, "x=1").unwrap();
        assert_eq!(snap(&[d.path()]).hash, first.hash);
        std::fs::write(&f, "x=2").unwrap();
        assert_ne!(snap(&[d.path()]).hash, first.hash);
    }

    #[test]
    fn kubelet_internals_are_skipped_and_links_followed() {
        let d = tempfile::tempdir().unwrap();
        let ts1 = d.path().join("..2024_01_01_00_00_00.1");
        std::fs::create_dir(&ts1).unwrap();
        std::fs::write(ts1.join("k"), "v").unwrap();
        symlink("..2024_01_01_00_00_00.1", d.path().join("..data")).unwrap();
        symlink("..data/k", d.path().join("k")).unwrap();
        let first = snap(&[d.path()]);
        assert_eq!(first.files, 1);
        // The same content under a new timestamped dir: same hash.
        let ts2 = d.path().join("..2024_01_01_00_00_01.2");
        std::fs::create_dir(&ts2).unwrap();
        std::fs::write(ts2.join("k"), "v").unwrap();
        std::fs::remove_file(d.path().join("..data")).unwrap();
        symlink("..2024_01_01_00_00_01.2", d.path().join("..data")).unwrap();
        std::fs::remove_dir_all(&ts1).unwrap();
        assert_eq!(snap(&[d.path()]).hash, first.hash);
    }

    #[test]
    fn missing_roots_and_exclusions() {
        let d = tempfile::tempdir().unwrap();
        let missing = d.path().join("nope");
        let a = snap(&[&missing]);
        std::fs::write(&missing, "").unwrap();
        assert_ne!(snap(&[&missing]).hash, a.hash);
        let out = d.path().join("out");
        let before = take(
            &[d.path().to_path_buf()],
            &HashSet::from([d.path().canonicalize().unwrap().join("out")]),
        );
        std::fs::write(&out, "rendered").unwrap();
        let after = take(
            &[d.path().to_path_buf()],
            &HashSet::from([d.path().canonicalize().unwrap().join("out")]),
        );
        assert_eq!(before.hash, after.hash);
    }

    #[test]
    fn links_to_files_outside_the_root_are_noted() {
        let d = tempfile::tempdir().unwrap();
        let (root, outside) = (d.path().join("root"), d.path().join("outside"));
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("x"), "1").unwrap();
        std::fs::write(root.join("inside"), "1").unwrap();
        symlink("../outside/x", root.join("x")).unwrap();
        symlink("inside", root.join("y")).unwrap();
        let s = snap(&[&root]);
        assert_eq!(s.link_dirs, [outside.canonicalize().unwrap()]);
        assert_eq!(
            snap(&[&root.join("x")]).link_dirs,
            [outside.canonicalize().unwrap()]
        );
    }

    #[test]
    fn symlink_loops_end() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("sub")).unwrap();
        symlink("..", d.path().join("sub/up")).unwrap();
        let s = snap(&[d.path()]);
        assert_eq!(s.dirs.len(), 2);
    }
}
