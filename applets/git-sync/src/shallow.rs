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

#[cfg(test)]
mod tests {
    use super::*;

    fn oid(n: u8) -> Oid {
        Oid::from_bytes(&[n; 20]).unwrap()
    }

    #[test]
    fn merge_deepens_and_shallows() {
        let (tip, parent) = (oid(1), oid(2));
        // depth 1 → 2 on the same tip: the tip stops being shallow.
        let deeper = History {
            commits: vec![tip, parent],
            boundary: [parent].into(),
        };
        assert_eq!(merge(&[tip].into(), &deeper), [parent].into());
        // depth 2 → 1: the tip becomes a boundary (the parent stays listed).
        let shallower = History {
            commits: vec![tip],
            boundary: [tip].into(),
        };
        assert_eq!(merge(&[parent].into(), &shallower), [tip, parent].into());
        // Full history: nothing is shallow any more.
        let full = History {
            commits: vec![tip, parent],
            boundary: BTreeSet::new(),
        };
        assert!(merge(&[tip].into(), &full).is_empty());
    }

    #[test]
    fn history_stops_at_depth() {
        let dir = tempfile::tempdir().unwrap();
        let repo = git2::Repository::init(dir.path()).unwrap();
        let sig = git2::Signature::now("t", "t@t").unwrap();
        let tree = repo.treebuilder(None).unwrap().write().unwrap();
        let tree = repo.find_tree(tree).unwrap();
        let mut parents: Vec<git2::Commit> = Vec::new();
        let mut last = None;
        for i in 0..4 {
            let refs: Vec<&git2::Commit> = parents.iter().collect();
            let id = repo
                .commit(None, &sig, &sig, &format!("c{i}"), &tree, &refs)
                .unwrap();
            parents = vec![repo.find_commit(id).unwrap()];
            last = Some(id);
        }
        let odb = repo.odb().unwrap();
        let h = history(&odb, last.unwrap(), 2, &BTreeSet::new()).unwrap();
        assert_eq!(h.commits.len(), 2);
        assert_eq!(h.boundary.len(), 1);
        let all = history(&odb, last.unwrap(), 0, &BTreeSet::new()).unwrap();
        assert_eq!(all.commits.len(), 4);
        assert!(all.boundary.is_empty());
    }
}
