//! Removing replaced worktrees and the objects only they needed.
//!
//! libgit2 has no `git gc`. What the kept worktrees reach (down to the
//! shallow boundary) is live; everything else goes, as with upstream's `gc`
//! and `gc.pruneExpire=now`, at a cost that follows the garbage rather than
//! the repository:
//! - a pack holding nothing live (the objects of a replaced commit) is
//!   deleted, and unreachable loose objects too;
//! - packs holding some garbage (one old blob in a large tree's pack) stay
//!   until the garbage of all packs passes 1/10 of their bytes, or packs
//!   pile up; then (and always with `--git-gc=aggressive`) all live objects
//!   are repacked into one pack and the rest deleted.

use std::collections::{BTreeSet, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, Result};
use git2::{Oid, Repository};

use crate::config::GcMode;
use crate::layout::{self, Layout};
use crate::packfeed::Feed;
use crate::{packidx, shallow, spare, worktree};

/// Deletes every entry of `.worktrees/` except `keep` whose mtime is older
/// than `stale` (junk files included), then prunes admin dirs and, if
/// anything went, collects garbage. With `spare`, one removed worktree is
/// kept as the spare tree instead (see `spare`); without, the spare goes.
/// Returns how many entries were removed.
pub fn cleanup(
    repo: &Repository,
    l: &Layout,
    keep: &str,
    stale: Duration,
    mode: GcMode,
    spare: bool,
) -> Result<usize> {
    if !spare {
        spare::discard(l)?;
    }
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
            let recycled = spare
                && spare::recycle(l, &name).unwrap_or_else(|e| {
                    tracing::warn!(error = %format!("{e:#}"), "cannot keep the stale worktree as the spare");
                    false
                });
            if recycled {
                tracing::debug!(name, "stale worktree kept as the spare tree");
            }
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
        mode => collect(repo, mode == GcMode::Aggressive)?,
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

/// Packs with more than this many live ones are merged into one.
const MAX_PACKS: usize = 16;

/// What the tips reach, down to the shallow boundary.
struct Live {
    commits: Vec<Oid>,
    objects: HashSet<Oid>,
    boundary: BTreeSet<Oid>,
}

fn live(repo: &Repository) -> Result<Live> {
    let odb = repo.odb()?;
    let shallow_set = shallow::read(repo.path());
    let mut objects = HashSet::new();
    let mut commits = Vec::new();
    let mut boundary = BTreeSet::new();
    let mut queue: VecDeque<Oid> = tips(repo).into_iter().collect();
    while let Some(c) = queue.pop_front() {
        if !objects.insert(c) {
            continue;
        }
        commits.push(c);
        let tree = repo
            .find_commit(c)
            .with_context(|| format!("gc: cannot read commit {c}"))?
            .tree_id();
        mark_tree(repo, tree, &mut objects)?;
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
    Ok(Live {
        commits,
        objects,
        boundary,
    })
}

/// Marks a tree and what it holds (a tree seen before is skipped whole).
fn mark_tree(repo: &Repository, tree: Oid, seen: &mut HashSet<Oid>) -> Result<()> {
    if !seen.insert(tree) {
        return Ok(());
    }
    let t = repo
        .find_tree(tree)
        .with_context(|| format!("gc: cannot read tree {tree}"))?;
    for entry in t.iter() {
        match entry.kind() {
            Some(git2::ObjectType::Tree) => mark_tree(repo, entry.id(), seen)?,
            Some(git2::ObjectType::Blob) => {
                seen.insert(entry.id());
            }
            // Submodule commits live in other repositories.
            _ => {}
        }
    }
    Ok(())
}

/// Drops everything the tips do not reach (see the module comment).
pub fn collect(repo: &Repository, aggressive: bool) -> Result<()> {
    let live = live(repo)?;
    if live.commits.is_empty() {
        return Ok(());
    }
    let pack_dir = repo.path().join("objects/pack");
    let mut kept = 0;
    let mut merge = aggressive;
    let (mut all_bytes, mut all_garbage) = (0u64, 0u64);
    for pack in packs(&pack_dir) {
        let idx = pack.with_extension("idx");
        let objs = match packidx::objects(&idx, &pack) {
            Ok(o) => o,
            Err(e) => {
                tracing::debug!(error = %format!("{e:#}"), "gc: repacking everything");
                merge = true;
                kept += 1;
                continue;
            }
        };
        let total: u64 = objs.iter().map(|(_, s)| s).sum();
        let garbage: u64 = objs
            .iter()
            .filter(|(o, _)| !live.objects.contains(o))
            .map(|(_, s)| s)
            .sum();
        if garbage == total {
            tracing::debug!(pack = %pack.display(), "gc: deleting a pack with nothing live");
            remove_pack(&pack)?;
        } else {
            kept += 1;
            all_bytes += total;
            all_garbage += garbage;
        }
    }
    // Garbage is counted over all packs: each change leaves a little in
    // the packs of the changes before it (their old trees), and judging a
    // small pack alone would repack everything every other change.
    merge |= all_garbage * 10 > all_bytes;
    if merge || kept > MAX_PACKS {
        repack(repo, &live)?;
    } else {
        remove_loose(repo.path(), Some(&live.objects))?;
    }
    shallow::write(repo.path(), &live.boundary)?;
    // Reflogs would name pruned commits.
    layout::remove_any(&repo.path().join("logs"))?;
    Ok(())
}

/// The `.pack` files of a pack directory.
pub(crate) fn packs(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "pack"))
                .collect()
        })
        .unwrap_or_default()
}

/// A pack and its companions (`.idx`, `.rev`, `.keep`, `.promisor`, …).
fn remove_pack(pack: &Path) -> Result<()> {
    let (Some(dir), Some(stem)) = (pack.parent(), pack.file_stem()) else {
        return Ok(());
    };
    for e in std::fs::read_dir(dir)?.flatten() {
        if e.path().file_stem() == Some(stem) {
            layout::remove_any(&e.path())?;
        }
    }
    Ok(())
}

/// Loose objects: every one, or those not in `keep`.
fn remove_loose(gitdir: &Path, keep: Option<&HashSet<Oid>>) -> Result<()> {
    for dir in std::fs::read_dir(gitdir.join("objects"))?.flatten() {
        let prefix = dir.file_name().to_string_lossy().into_owned();
        if prefix.len() != 2 || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
            continue;
        }
        let Some(keep) = keep else {
            layout::remove_any(&dir.path())?;
            continue;
        };
        for obj in std::fs::read_dir(dir.path())?.flatten() {
            let name = format!("{prefix}{}", obj.file_name().to_string_lossy());
            if Oid::from_str(&name).is_ok_and(|o| !keep.contains(&o)) {
                layout::remove_any(&obj.path())?;
            }
        }
    }
    Ok(())
}

/// Packs every live object into one new pack and deletes the rest.
fn repack(repo: &Repository, live: &Live) -> Result<()> {
    let mut pb = repo.packbuilder()?;
    for c in &live.commits {
        pb.insert_commit(*c)
            .with_context(|| format!("gc: cannot pack commit {c}"))?;
    }
    let pack_dir = repo.path().join("objects/pack");
    std::fs::create_dir_all(&pack_dir)?;
    let before = packs(&pack_dir);
    // Through our feed, not `PackBuilder::write`, which hands the indexer
    // each object on its own.
    let odb = repo.odb()?;
    let mut feed = Feed::new(&odb)?;
    let mut failed = None;
    pb.foreach(|chunk| match feed.put(chunk) {
        Ok(()) => true,
        Err(e) => {
            failed = Some(e);
            false
        }
    })
    .context("gc: cannot write pack")?;
    if let Some(e) = failed {
        return Err(e.context("gc: cannot write pack"));
    }
    feed.commit().context("gc: cannot write pack")?;
    let new: Vec<PathBuf> = packs(&pack_dir)
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    // An identical pack already there would be among `before`: then keep
    // everything rather than guess which one it is.
    if new.is_empty() {
        return Ok(());
    }
    for p in &before {
        remove_pack(p)?;
    }
    remove_loose(repo.path(), None)?;
    tracing::debug!(objects = pb.object_count(), "repacked");
    Ok(())
}
