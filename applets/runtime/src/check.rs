//! Static checks for [`crate::Applet::check`]: files, directories,
//! programs and URLs that flags name, examined without opening a socket,
//! writing a file or starting a process. Every error is a usage error (exit
//! 2) that names the flag and the path or URL.

use std::path::{Path, PathBuf};

use nix::unistd::AccessFlags;

use crate::redact::redact_url;
use crate::usage;

/// What a path that a flag names turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    File,
    Dir,
    /// Nothing there (yet): whether that is an error is the caller's call.
    Missing,
}

/// `path` exists as a file or directory this process can read (a directory
/// also searched); a missing one is [`Found::Missing`], not an error.
pub fn readable(flag: &str, path: &Path) -> anyhow::Result<Found> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Found::Missing),
        Err(e) => return Err(usage!("{flag} {}: {e}", path.display())),
    };
    let (found, mode) = if meta.is_dir() {
        (Found::Dir, AccessFlags::R_OK | AccessFlags::X_OK)
    } else {
        (Found::File, AccessFlags::R_OK)
    };
    access(path, mode).map_err(|e| usage!("{flag} {}: {e}", path.display()))?;
    Ok(found)
}

/// `path` is a file this process can read.
pub fn readable_file(flag: &str, path: &Path) -> anyhow::Result<()> {
    match readable(flag, path)? {
        Found::File => Ok(()),
        Found::Dir => Err(usage!("{flag} {}: is a directory", path.display())),
        Found::Missing => Err(usage!(
            "{flag} {}: no such file or directory",
            path.display()
        )),
    }
}

/// A file may be created at `path` (atomically, beside it): its directory
/// exists and this process may write there.
pub fn creatable(flag: &str, path: &Path) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(usage!(
                "{flag} {}: {} is not a directory",
                path.display(),
                dir.display()
            ))
        }
        Err(e) => return Err(usage!("{flag} {}: {}: {e}", path.display(), dir.display())),
    }
    if std::fs::metadata(path).is_ok_and(|m| m.is_dir()) {
        return Err(usage!("{flag} {}: is a directory", path.display()));
    }
    access(dir, AccessFlags::W_OK | AccessFlags::X_OK).map_err(|e| {
        usage!(
            "{flag} {}: cannot write in {}: {e}",
            path.display(),
            dir.display()
        )
    })
}

/// A file may be opened at `path` for writing or appending: an existing one
/// (a log file, `/dev/stderr`) is writable, a missing one [`creatable`].
pub fn writable_file(flag: &str, path: &Path) -> anyhow::Result<()> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Err(usage!("{flag} {}: is a directory", path.display())),
        Ok(_) => access(path, AccessFlags::W_OK)
            .map_err(|e| usage!("{flag} {}: cannot write: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => creatable(flag, path),
        Err(e) => Err(usage!("{flag} {}: {e}", path.display())),
    }
}

/// Files may be created in the directory `path`: it is one this process may
/// write in, or the nearest of its ancestors that exists is, so it can be
/// made.
pub fn writable_dir(flag: &str, path: &Path) -> anyhow::Result<()> {
    let Some(existing) = path
        .ancestors()
        .find(|a| a.exists() || a.as_os_str().is_empty())
    else {
        return Ok(());
    };
    let existing = if existing.as_os_str().is_empty() {
        Path::new(".")
    } else {
        existing
    };
    if !existing.is_dir() {
        return Err(usage!(
            "{flag} {}: {} is not a directory",
            path.display(),
            existing.display()
        ));
    }
    access(existing, AccessFlags::W_OK | AccessFlags::X_OK).map_err(|e| {
        usage!(
            "{flag} {}: cannot write in {}: {e}",
            path.display(),
            existing.display()
        )
    })
}

/// The program of an argv as `execvp` would find it: a name is looked up in
/// `PATH`, a path must be an executable file. Returns where it is.
pub fn program(flag: &str, program: &str) -> anyhow::Result<PathBuf> {
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file()) && access(p, AccessFlags::X_OK).is_ok()
    };
    if program.contains('/') {
        let p = PathBuf::from(program);
        return match std::fs::metadata(&p) {
            Err(e) => Err(usage!("{flag}: {program}: {e}")),
            Ok(_) if !executable(&p) => Err(usage!("{flag}: {program}: not an executable file")),
            Ok(_) => Ok(p),
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| executable(p))
        .ok_or_else(|| usage!("{flag}: {program}: command not found in PATH"))
}

/// An absolute `http://` or `https://` URL with a host. The URL in the error
/// has its password replaced.
pub fn http_url(flag: &str, raw: &str) -> anyhow::Result<url::Url> {
    match url::Url::parse(raw) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(u),
        Ok(u) => Err(usage!(
            "{flag} {:?}: expected an http:// or https:// URL, not {}:",
            redact_url(raw),
            u.scheme()
        )),
        Err(e) => Err(usage!("{flag} {:?}: {e}", redact_url(raw))),
    }
}

/// access(2): what the kernel will allow the later open or exec.
fn access(path: &Path, mode: AccessFlags) -> nix::Result<()> {
    nix::unistd::access(path, mode)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn message(r: anyhow::Result<impl std::fmt::Debug>) -> String {
        let e = r.unwrap_err();
        assert!(e.downcast_ref::<crate::UsageError>().is_some(), "{e}");
        e.to_string()
    }

    #[test]
    fn files_and_directories() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("f");
        std::fs::write(&f, "x").unwrap();
        assert_eq!(readable("--x", &f).unwrap(), Found::File);
        assert_eq!(readable("--x", d.path()).unwrap(), Found::Dir);
        assert_eq!(
            readable("--x", &d.path().join("no")).unwrap(),
            Found::Missing
        );
        readable_file("--x", &f).unwrap();
        assert!(message(readable_file("--x", d.path())).contains("is a directory"));
        let m = message(readable_file("--token", &d.path().join("no")));
        assert!(
            m.starts_with("--token ") && m.ends_with("no such file or directory"),
            "{m}"
        );
        // Below a file: not "missing" but wrong.
        assert!(message(readable("--x", &f.join("below"))).starts_with("--x "));
    }

    #[test]
    fn unreadable_file_named_with_its_flag() {
        if nix::unistd::geteuid().is_root() {
            return; // root reads everything
        }
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("secret");
        std::fs::write(&f, "x").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o000)).unwrap();
        assert!(message(readable("--secret", &f)).contains("Permission denied"));
    }

    #[test]
    fn creatable_needs_an_existing_directory() {
        let d = tempfile::tempdir().unwrap();
        creatable("--out", &d.path().join("new")).unwrap();
        assert!(message(creatable("--out", &d.path().join("no/new"))).starts_with("--out "));
        assert!(message(creatable("--out", d.path())).contains("is a directory"));
    }

    #[test]
    fn writable_files_and_directories() {
        let d = tempfile::tempdir().unwrap();
        writable_file("--log", &d.path().join("new.log")).unwrap();
        writable_file("--log", Path::new("/dev/null")).unwrap();
        assert!(message(writable_file("--log", d.path())).contains("is a directory"));
        writable_dir("--data-dir", d.path()).unwrap();
        writable_dir("--data-dir", &d.path().join("a/b/c")).unwrap();
        let f = d.path().join("f");
        std::fs::write(&f, "x").unwrap();
        let m = message(writable_dir("--data-dir", &f.join("sub")));
        assert!(
            m.starts_with("--data-dir ") && m.contains("is not a directory"),
            "{m}"
        );
    }

    #[test]
    fn programs_as_execvp_finds_them() {
        assert!(program("--exec", "sh").unwrap().is_absolute());
        assert!(message(program("--exec", "surely-no-such-program"))
            .contains("--exec: surely-no-such-program: command not found"));
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("script");
        std::fs::write(&f, "#!/bin/sh\n").unwrap();
        let s = f.to_str().unwrap();
        assert!(message(program("--exec", s)).contains("not an executable file"));
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(program("--exec", s).unwrap(), f);
    }

    #[test]
    fn http_urls_only_and_passwords_hidden() {
        http_url("--url", "https://h:1/p").unwrap();
        let m = message(http_url("--url", "ftp://u:secret@h/"));
        assert!(
            m.contains("--url") && m.contains("ftp") && !m.contains("secret"),
            "{m}"
        );
        assert!(message(http_url("--url", "not a url")).contains("--url"));
        assert!(message(http_url("--url", "http:/")).contains("--url"));
    }
}
