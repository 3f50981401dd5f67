//! Where things go on disk and how they are kept: `--root`, `--link` (and
//! the deprecated `--dest`), `--touch-file`, `--error-file`, `--group-write`,
//! `--add-user`, `--stale-worktree-timeout`, `--git-gc`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Result;
use sidecar_runtime::usage;

use super::lookup::{min_duration, non_empty, Lookup};
use super::{absolute_clean, GcMode};
use crate::GitSync;

pub struct Files {
    pub root: PathBuf,
    pub link: String,
    pub touch_file: Option<String>,
    pub error_file: Option<String>,
    pub group_write: bool,
    pub add_user: bool,
    pub stale_worktree_timeout: Duration,
    pub gc: GcMode,
}

/// `--root`, required, absolute and lexically clean.
pub fn root(f: &mut GitSync, l: &Lookup) -> Result<PathBuf> {
    let root = l.string(
        "root",
        f.root.take(),
        &["GITSYNC_ROOT", "GIT_SYNC_ROOT"],
        "",
    );
    if root.is_empty() {
        return Err(usage!("required flag: --root must be specified"));
    }
    Ok(absolute_clean(Path::new(&root)))
}

/// Everything but the root; `repo` names the default link.
pub fn resolve(f: &mut GitSync, l: &Lookup, root: PathBuf, repo: &str) -> Result<Files> {
    let gc = match l
        .string(
            "git-gc",
            f.git_gc.take(),
            &["GITSYNC_GIT_GC", "GIT_SYNC_GIT_GC"],
            "always",
        )
        .as_str()
    {
        "auto" => GcMode::Auto,
        "always" => GcMode::Always,
        "aggressive" => GcMode::Aggressive,
        "off" => GcMode::Off,
        _ => {
            return Err(usage!(
                "invalid flag: --git-gc must be one of \"auto\", \"always\", \"aggressive\", or \"off\""
            ))
        }
    };

    let mut link = l.string(
        "link",
        f.link.take(),
        &["GITSYNC_LINK", "GIT_SYNC_LINK"],
        "",
    );
    let dest = l.string("dest", f.dest.take(), &["GIT_SYNC_DEST"], "");
    if !dest.is_empty() {
        l.note("setting --link from deprecated --dest");
        link = dest;
    }
    if link.is_empty() {
        link = repo
            .trim_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_string();
    }

    let touch_file = non_empty(l.string(
        "touch-file",
        f.touch_file.take(),
        &["GITSYNC_TOUCH_FILE", "GIT_SYNC_TOUCH_FILE"],
        "",
    ));
    let error_file = non_empty(l.string(
        "error-file",
        f.error_file.take(),
        &["GITSYNC_ERROR_FILE", "GIT_SYNC_ERROR_FILE"],
        "",
    ));
    let add_user = l.bool(
        "add-user",
        f.add_user.take(),
        &["GITSYNC_ADD_USER", "GIT_SYNC_ADD_USER"],
        false,
    )?;
    let group_write = l.bool(
        "group-write",
        f.group_write.take(),
        &["GITSYNC_GROUP_WRITE", "GIT_SYNC_GROUP_WRITE"],
        false,
    )?;
    if l.int(
        "change-permissions",
        f.change_permissions.take(),
        &["GIT_SYNC_PERMISSIONS"],
        0,
    )? != 0
    {
        return Err(usage!(
            "deprecated flag: --change-permissions is no longer supported"
        ));
    }
    let stale = l.duration(
        "stale-worktree-timeout",
        f.stale_worktree_timeout.take(),
        &["GITSYNC_STALE_WORKTREE_TIMEOUT"],
        Duration::ZERO,
    )?;
    let stale_worktree_timeout = min_duration(stale, Duration::ZERO, "stale-worktree-timeout")?;
    Ok(Files {
        root,
        link,
        touch_file,
        error_file,
        group_write,
        add_user,
        stale_worktree_timeout,
        gc,
    })
}

/// Where `--error-file` points, from the raw flags (before validation, so a
/// config error can be written there). Relative to `--root`.
pub fn raw_error_file(f: &GitSync, l: &Lookup) -> Option<PathBuf> {
    let root = l.string(
        "root",
        f.root.clone(),
        &["GITSYNC_ROOT", "GIT_SYNC_ROOT"],
        "",
    );
    let file = l.string(
        "error-file",
        f.error_file.clone(),
        &["GITSYNC_ERROR_FILE", "GIT_SYNC_ERROR_FILE"],
        "",
    );
    if root.is_empty() || file.is_empty() {
        return None;
    }
    Some(absolute_clean(&Path::new(&root).join(file)))
}
