//! Fetching from a repository on the local filesystem (`file://` or a path).
//!
//! libgit2's local transport refuses `--depth`, and copying the whole history
//! would break the disk bound, so this reads the source repository directly
//! and packs exactly what `git fetch --depth N` would send: the commits down
//! to the depth and the trees and blobs this repository lacks.

use std::collections::HashSet;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{bail, Context as _, Result};
use git2::{ObjectType, Odb, Oid, Repository};

use crate::{refname, shallow};

/// The path of a local URL, or None for a network URL.
pub fn local_path(url: &str) -> Option<std::path::PathBuf> {
    if let Some(rest) = url.strip_prefix("file://") {
        let u = url::Url::parse(&format!("file://{rest}")).ok()?;
        return u.to_file_path().ok();
    }
    // scp-like `host:path` and scheme URLs are remote; plain paths are local.
    if url.starts_with('/') || url.starts_with("./") || url.starts_with("../") {
        return Some(url.into());
    }
    None
}

/// Resolves `--ref` in the source repository to a commit.
pub fn resolve(src: &Repository, r: &str) -> Result<Oid> {
    let not_found = || anyhow::anyhow!("couldn't find remote ref {r}");
    if refname::is_full_hash(r) {
        let oid = Oid::from_str(r)?;
        return src
            .find_commit(oid)
            .map(|c| c.id())
            .map_err(|_| not_found());
    }
    if r == "HEAD" {
        return Ok(src.head().map_err(|_| not_found())?.peel_to_commit()?.id());
    }
    for name in refname::candidates(r) {
        if let Ok(reference) = src.find_reference(&name) {
            return Ok(reference.peel_to_commit()?.id());
        }
    }
    Err(not_found())
}

/// Copies `tip`'s history down to `depth` into `dst` and updates its shallow
/// file. Returns the number of objects copied.
pub fn fetch(
    src: &Repository,
    tip: Oid,
    depth: u32,
    dst: &Repository,
    cancel: &AtomicBool,
) -> Result<usize> {
    let src_odb = src.odb()?;
    let dst_odb = dst.odb()?;
    let src_shallow = shallow::read(src.path());
    let history = shallow::history(&src_odb, tip, depth, &src_shallow)?;

    let mut pb = src.packbuilder()?;
    let mut trees_seen = HashSet::new();
    for c in &history.commits {
        if cancel.load(Ordering::Relaxed) {
            bail!("cancelled");
        }
        if present(&dst_odb, *c) {
            continue;
        }
        pb.insert_object(*c, None)?;
        let tree = src.find_commit(*c)?.tree_id();
        add_tree(src, &dst_odb, tree, &mut pb, &mut trees_seen)?;
    }
    let count = pb.object_count();
    if count > 0 {
        let mut writer = dst_odb.packwriter()?;
        let mut failed: Option<std::io::Error> = None;
        pb.foreach(|chunk| match writer.write_all(chunk) {
            Ok(()) => !cancel.load(Ordering::Relaxed),
            Err(e) => {
                failed = Some(e);
                false
            }
        })
        .context("cannot pack objects")?;
        if let Some(e) = failed {
            return Err(e).context("cannot write pack");
        }
        writer.commit().context("cannot index pack")?;
    }
    let old = shallow::read(dst.path());
    shallow::write(dst.path(), &shallow::merge(&old, &history))?;
    Ok(count)
}

/// Whether `odb` has `oid`. A miss must not make libgit2 rescan the pack
/// directory (its default), which costs a directory scan per missing object.
fn present(odb: &Odb, oid: Oid) -> bool {
    odb.exists_ext(oid, git2::OdbLookupFlags::NO_REFRESH)
}

/// Adds a tree and what it holds, skipping whatever `dst` already has (a
/// present tree implies its contents are present).
fn add_tree(
    src: &Repository,
    dst_odb: &Odb,
    tree: Oid,
    pb: &mut git2::PackBuilder,
    seen: &mut HashSet<Oid>,
) -> Result<()> {
    if !seen.insert(tree) || present(dst_odb, tree) {
        return Ok(());
    }
    pb.insert_object(tree, None)?;
    let t = src.find_tree(tree)?;
    for entry in t.iter() {
        match entry.kind() {
            Some(ObjectType::Tree) => add_tree(src, dst_odb, entry.id(), pb, seen)?,
            Some(ObjectType::Blob) if seen.insert(entry.id()) && !present(dst_odb, entry.id()) => {
                pb.insert_object(entry.id(), None)?;
            }
            // Submodule commits live in other repositories.
            _ => {}
        }
    }
    Ok(())
}
