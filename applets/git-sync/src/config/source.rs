//! What to sync: `--repo`, `--ref` (and the deprecated `--branch`/`--rev`),
//! `--depth`, `--submodules`, `--sparse-checkout-file`.

use std::path::{Path, PathBuf};

use anyhow::Result;
use sidecar_runtime::usage;

use super::lookup::{non_empty, Lookup};
use super::{absolute_clean, Submodules};
use crate::GitSync;

pub struct Source {
    pub repo: String,
    pub ref_: String,
    pub depth: u32,
    pub submodules: Submodules,
    pub sparse_checkout_file: Option<PathBuf>,
}

pub fn resolve(f: &mut GitSync, l: &Lookup) -> Result<Source> {
    let repo = l.string(
        "repo",
        f.repo.take(),
        &["GITSYNC_REPO", "GIT_SYNC_REPO"],
        "",
    );
    if repo.is_empty() {
        return Err(usage!("required flag: --repo must be specified"));
    }
    let ref_ = resolve_ref(f, l)?;

    let depth = l.int(
        "depth",
        f.depth.take(),
        &["GITSYNC_DEPTH", "GIT_SYNC_DEPTH"],
        1,
    )?;
    if depth < 0 {
        return Err(usage!(
            "invalid flag: --depth must be greater than or equal to 0"
        ));
    }
    let depth = u32::try_from(depth).map_err(|_| usage!("invalid flag: --depth is too large"))?;

    let submodules = match l
        .string(
            "submodules",
            f.submodules.take(),
            &["GITSYNC_SUBMODULES", "GIT_SYNC_SUBMODULES"],
            "recursive",
        )
        .as_str()
    {
        "recursive" => Submodules::Recursive,
        "shallow" => Submodules::Shallow,
        "off" => Submodules::Off,
        _ => {
            return Err(usage!(
                "invalid flag: --submodules must be one of \"recursive\", \"shallow\", or \"off\""
            ))
        }
    };

    let sparse_checkout_file = non_empty(l.string(
        "sparse-checkout-file",
        f.sparse_checkout_file.take(),
        &[
            "GITSYNC_SPARSE_CHECKOUT_FILE",
            "GIT_SYNC_SPARSE_CHECKOUT_FILE",
        ],
        "",
    ))
    .map(|p| absolute_clean(Path::new(&p)));

    Ok(Source {
        repo,
        ref_,
        depth,
        submodules,
        sparse_checkout_file,
    })
}

/// `--ref`, or the deprecated `--branch` / `--rev` (both only if rev is HEAD).
fn resolve_ref(f: &mut GitSync, l: &Lookup) -> Result<String> {
    let mut ref_ = l.string("ref", f.ref_.take(), &["GITSYNC_REF"], "HEAD");
    let branch = l.string("branch", f.branch.take(), &["GIT_SYNC_BRANCH"], "");
    let rev = l.string("rev", f.rev.take(), &["GIT_SYNC_REV"], "");
    match (branch.is_empty(), rev.is_empty()) {
        (false, _) if rev.is_empty() || rev == "HEAD" => {
            l.note("setting --ref from deprecated --branch");
            ref_ = branch;
        }
        (true, false) => {
            l.note("setting --ref from deprecated --rev");
            ref_ = rev;
        }
        (false, false) => {
            return Err(usage!(
                "deprecated flag combo: can't set --ref from deprecated --branch and --rev (one or the other is OK)"
            ))
        }
        _ => {}
    }
    if ref_.is_empty() {
        return Err(usage!("required flag: --ref must be specified"));
    }
    Ok(ref_)
}
