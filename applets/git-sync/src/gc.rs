//! Removing replaced worktrees and the objects only they needed.
//!
//! libgit2 has no `git gc`, so this repacks what the kept worktrees reach
//! (down to the shallow boundary) into one pack and deletes every other pack
//! and loose object: upstream's `gc` with `gc.pruneExpire=now`.

use std::collections::{BTreeSet, HashSet, VecDeque};
use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, Result};
use git2::{Oid, Repository};

use crate::config::GcMode;
use crate::layout::{self, Layout};
use crate::{shallow, worktree};

/// Deletes every entry of `.worktrees/` except `keep` whose mtime is older
/// than `stale` (junk files included), then prunes admin dirs and, if
/// anything went, collects garbage. Returns how many entries were removed.
pub fn cleanup(
    repo: &Repository,
    l: &Layout,
    keep: &str,
    stale: Duration,
    mode: GcMode,
) -> Result<usize> {
    let mut removed = 0;
    if let Ok(entries) = std::fs::read_dir(l.worktrees()) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name == keep {
                continue;
            }
            let age = entry
                .path()
                .symlink_metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .unwrap_or_default();
            if !stale.is_zero() && age < stale {
                continue;
            }
            tracing::info!(name, "removing stale worktree");
            worktree::remove(l, &name)?;
            removed += 1;
        }
    }
    if removed == 0 {
        return Ok(0);
    }
    tracing::debug!(removed, "stale worktrees removed");
    prune_worktree_admin(l)?;
    match mode {
        GcMode::Off => {}
        GcMode::Auto if !auto_gc_needed(repo.path()) => {}
        _ => repack(repo)?,
    }
    Ok(removed)
}

/// `git worktree prune`: admin dirs whose worktree is gone.
fn prune_worktree_admin(l: &Layout) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(l.root.join(".git/worktrees")) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        if !l.worktree(&entry.file_name().to_string_lossy()).exists() {
            layout::remove_any(&entry.path())?;
        }
    }
    Ok(())
}

/// `gc --auto`'s thresholds: many loose objects or many packs.
fn auto_gc_needed(gitdir: &Path) -> bool {
    let objects = gitdir.join("objects");
    let packs = std::fs::read_dir(objects.join("pack"))
        .map(|d| {
            d.flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "pack"))
                .count()
        })
        .unwrap_or(0);
    // git samples objects/17 and scales by 256.
    let loose = std::fs::read_dir(objects.join("17"))
        .map(|d| d.count())
        .unwrap_or(0)
        * 256;
    packs > 50 || loose > 6700
}

/// The commits to keep: the branch and the HEAD of every remaining worktree.
fn tips(repo: &Repository) -> Vec<Oid> {
    let mut out = Vec::new();
    if let Ok(r) = repo.find_reference("refs/heads/git-sync") {
        out.extend(r.target());
    }
    if let Ok(entries) = std::fs::read_dir(repo.path().join("worktrees")) {
        for e in entries.flatten() {
            let head = std::fs::read_to_string(e.path().join("HEAD")).unwrap_or_default();
            out.extend(Oid::from_str(head.trim()).ok());
        }
    }
    out
}

/// Packs everything reachable from the tips into one new pack and deletes
/// the rest. Objects that are not reachable are gone afterwards.
pub fn repack(repo: &Repository) -> Result<()> {
    let odb = repo.odb()?;
    let shallow_set = shallow::read(repo.path());
    let mut pb = repo.packbuilder()?;
    let mut seen = HashSet::new();
    let mut boundary = BTreeSet::new();
    let mut queue: VecDeque<Oid> = tips(repo).into_iter().collect();
    while let Some(c) = queue.pop_front() {
        if !seen.insert(c) {
            continue;
        }
        pb.insert_commit(c)
            .with_context(|| format!("gc: cannot pack commit {c}"))?;
        if shallow_set.contains(&c) {
            boundary.insert(c);
            continue;
        }
        for p in shallow::parents(&odb, c)? {
            if odb.exists_ext(p, git2::OdbLookupFlags::NO_REFRESH) {
                queue.push_back(p);
            } else {
                boundary.insert(c);
            }
        }
    }
    if seen.is_empty() {
        return Ok(());
    }
    let pack_dir = repo.path().join("objects/pack");
    std::fs::create_dir_all(&pack_dir)?;
    let before: Vec<_> = std::fs::read_dir(&pack_dir)?
        .flatten()
        .map(|e| e.path())
        .collect();
    pb.write(&pack_dir, 0o444)
        .context("gc: cannot write pack")?;
    let name = pb.name().context("gc: pack has no name")?.to_string();
    let new_prefix = format!("pack-{name}");
    for p in before {
        let stem = p
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        if stem != new_prefix {
            layout::remove_any(&p)?;
        }
    }
    // Loose objects: every two-hex-digit directory.
    for e in std::fs::read_dir(repo.path().join("objects"))?.flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        if n.len() == 2 && n.bytes().all(|b| b.is_ascii_hexdigit()) {
            layout::remove_any(&e.path())?;
        }
    }
    shallow::write(repo.path(), &boundary)?;
    // Reflogs would name pruned commits.
    layout::remove_any(&repo.path().join("logs"))?;
    tracing::debug!(objects = pb.object_count(), "repacked");
    Ok(())
}
