//! `.git/shallow`: the commits whose parents are deliberately absent. git and
//! libgit2 treat them as roots, so `git log`/`rev-list` in a worktree stop
//! there, and the repack in `gc` keeps nothing older.

use std::collections::{BTreeSet, HashSet, VecDeque};
use std::path::Path;

use anyhow::{Context as _, Result};
use git2::{ObjectType, Odb, Oid};

pub fn read(gitdir: &Path) -> BTreeSet<Oid> {
    std::fs::read_to_string(gitdir.join("shallow"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| Oid::from_str(l.trim()).ok())
        .collect()
}

/// Replaces the file atomically; an empty set removes it (a full clone).
pub fn write(gitdir: &Path, set: &BTreeSet<Oid>) -> Result<()> {
    let path = gitdir.join("shallow");
    if set.is_empty() {
        return crate::layout::remove_any(&path);
    }
    let tmp = gitdir.join("shallow.git-sync.tmp");
    let body: String = set.iter().map(|o| format!("{o}\n")).collect();
    std::fs::write(&tmp, body).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))
}

/// A commit's parents as recorded in the object, ignoring shallow grafts.
pub fn parents(odb: &Odb, commit: Oid) -> Result<Vec<Oid>> {
    let obj = odb
        .read(commit)
        .with_context(|| format!("missing commit {commit}"))?;
    anyhow::ensure!(obj.kind() == ObjectType::Commit, "{commit} is not a commit");
    let mut out = Vec::new();
    for line in obj.data().split(|b| *b == b'\n') {
        if line.is_empty() {
            break; // end of the header
        }
        if let Some(hex) = line.strip_prefix(b"parent ") {
            out.push(Oid::from_str(std::str::from_utf8(hex)?)?);
        }
    }
    Ok(out)
}

/// The history of `tip` down to `depth` commits (0 = all) as present in
/// `odb`: every commit, and the boundary (commits kept whose parents are not).
pub struct History {
    pub commits: Vec<Oid>,
    pub boundary: BTreeSet<Oid>,
}

/// Walks `tip`'s history breadth-first, as `git fetch --depth` counts it.
/// `stop` marks commits not to walk past (existing shallow roots).
pub fn history(odb: &Odb, tip: Oid, depth: u32, stop: &BTreeSet<Oid>) -> Result<History> {
    let mut seen = HashSet::new();
    let mut commits = Vec::new();
    let mut boundary = BTreeSet::new();
    let mut queue = VecDeque::from([(tip, 1u32)]);
    seen.insert(tip);
    while let Some((c, d)) = queue.pop_front() {
        commits.push(c);
        let ps = parents(odb, c)?;
        let at_limit = depth != 0 && d >= depth;
        if ps.is_empty() {
            continue;
        }
        if at_limit
            || stop.contains(&c)
            || ps
                .iter()
                .any(|p| !odb.exists_ext(*p, git2::OdbLookupFlags::NO_REFRESH))
        {
            boundary.insert(c);
            continue;
        }
        for p in ps {
            if seen.insert(p) {
                queue.push_back((p, d + 1));
            }
        }
    }
    Ok(History { commits, boundary })
}

/// After fetching `h`: the new boundary becomes shallow, and commits whose
/// parents are now all present stop being shallow.
pub fn merge(old: &BTreeSet<Oid>, h: &History) -> BTreeSet<Oid> {
    let mut out: BTreeSet<Oid> = old.union(&h.boundary).copied().collect();
    for c in &h.commits {
        if !h.boundary.contains(c) {
            out.remove(c);
        }
    }
    out
}
