//! Detects `subPath` mounts, which never see ConfigMap or Secret updates:
//! the kubelet bind-mounts the file resolved at container start, so the
//! `..data` swap happens in a directory the container cannot see.

use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Path inside the source filesystem (field 4).
    pub root: String,
    /// Where it is mounted (field 5).
    pub mount_point: PathBuf,
}

/// Parses /proc/self/mountinfo text. Paths escape space, tab, newline and
/// backslash as octal (`\040`).
pub fn parse(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let mut f = line.split(' ');
            let root = unescape(f.nth(3)?);
            let mount_point = PathBuf::from(unescape(f.next()?));
            Some(Mount { root, mount_point })
        })
        .collect()
}

fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mounts that pin a watched path: a mount point at the path or below
/// it that is a single file, or whose source is inside a kubelet
/// timestamped `..` directory (the tell-tale of a subPath of a ConfigMap,
/// Secret, downward API or projected volume).
pub fn pinned<'a>(mounts: &'a [Mount], watched: &Path) -> Vec<&'a Mount> {
    mounts
        .iter()
        .filter(|m| m.mount_point.starts_with(watched))
        .filter(|m| {
            let from_atomic_writer = Path::new(&m.root)
                .components()
                .any(|c| c.as_os_str().to_string_lossy().starts_with(".."));
            from_atomic_writer || std::fs::metadata(&m.mount_point).is_ok_and(|md| md.is_file())
        })
        .collect()
}

/// Logs a warning for each watched path that a subPath-style mount pins.
pub fn warn_pinned(watched: &[PathBuf]) {
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let mounts = parse(&text);
    for path in watched {
        let abs = std::fs::canonicalize(path).unwrap_or_else(|_| path.clone());
        for m in pinned(&mounts, &abs) {
            tracing::warn!(
                path = %path.display(),
                mount_point = %m.mount_point.display(),
                source = %m.root,
                "watched path is a subPath-style bind mount: it will never see ConfigMap/Secret updates; mount the whole volume instead"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw
30 22 8:1 /var/lib/kubelet/pods/u/volumes/kubernetes.io~configmap/cfg /etc/config ro,relatime - ext4 /dev/sda1 rw
31 22 0:40 /..2024_05_01_10_00_00.123/app.yaml /etc/app/app.yaml ro,relatime - tmpfs tmpfs rw
32 22 8:1 /var/lib/kubelet/pods/u/volume-subpaths/cfg/app/0 /etc/my\\040app/conf.yaml ro - ext4 /dev/sda1 rw
";

    #[test]
    fn parses_and_unescapes() {
        let m = parse(SAMPLE);
        assert_eq!(m.len(), 4);
        assert_eq!(m[3].mount_point, PathBuf::from("/etc/my app/conf.yaml"));
    }

    #[test]
    fn flags_subpath_of_atomic_writer_volumes_only() {
        let m = parse(SAMPLE);
        assert!(pinned(&m, Path::new("/etc/config")).is_empty());
        assert_eq!(pinned(&m, Path::new("/etc/app")).len(), 1);
        assert_eq!(pinned(&m, Path::new("/etc/app/app.yaml")).len(), 1);
        assert!(pinned(&m, Path::new("/etc/other")).is_empty());
    }
}
