//! Reading a pack's `.idx` (version 2, SHA-1): which objects a pack holds
//! and how many bytes each takes in it, so `gc` can tell a pack that is all
//! garbage, or mostly live, without opening it through libgit2 (which has
//! no per-pack listing).

use std::path::Path;

use anyhow::{ensure, Context as _, Result};
use git2::Oid;

const MAGIC: &[u8; 4] = b"\xfftOc";
const OID_LEN: usize = 20;
const TRAILER: u64 = 20;

/// Each object of a pack with its packed size in bytes.
pub fn objects(idx: &Path, pack: &Path) -> Result<Vec<(Oid, u64)>> {
    let data = std::fs::read(idx).with_context(|| format!("cannot read {}", idx.display()))?;
    let pack_len = std::fs::metadata(pack)
        .with_context(|| format!("cannot stat {}", pack.display()))?
        .len();
    parse(&data, pack_len).with_context(|| format!("{}: not a version 2 pack index", idx.display()))
}

fn parse(data: &[u8], pack_len: u64) -> Result<Vec<(Oid, u64)>> {
    ensure!(data.len() >= 8 + 256 * 4, "too short");
    ensure!(&data[..4] == MAGIC && be32(&data[4..8]) == 2, "bad header");
    let n = be32(&data[8 + 255 * 4..8 + 256 * 4]) as usize;
    let oids_at = 8 + 256 * 4;
    let crcs_at = oids_at + n * OID_LEN;
    let offsets_at = crcs_at + n * 4;
    let large_at = offsets_at + n * 4;
    ensure!(data.len() >= large_at, "truncated");
    let mut objs = Vec::with_capacity(n);
    for i in 0..n {
        let oid = Oid::from_bytes(&data[oids_at + i * OID_LEN..oids_at + (i + 1) * OID_LEN])?;
        let raw = be32(&data[offsets_at + i * 4..]);
        let offset = if raw & 0x8000_0000 == 0 {
            u64::from(raw)
        } else {
            let at = large_at + (raw & 0x7fff_ffff) as usize * 8;
            ensure!(data.len() >= at + 8, "truncated large offset");
            u64::from_be_bytes(data[at..at + 8].try_into()?)
        };
        objs.push((oid, offset));
    }
    // An object's size is the distance to the next object (or the trailer).
    let mut by_offset: Vec<usize> = (0..n).collect();
    by_offset.sort_by_key(|&i| objs[i].1);
    let mut sizes = vec![0u64; n];
    for (k, &i) in by_offset.iter().enumerate() {
        let end = by_offset
            .get(k + 1)
            .map_or(pack_len.saturating_sub(TRAILER), |&j| objs[j].1);
        sizes[i] = end.saturating_sub(objs[i].1);
    }
    Ok(objs
        .into_iter()
        .zip(sizes)
        .map(|((oid, _), size)| (oid, size))
        .collect())
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_what_git_wrote() {
        // A pack written by libgit2 for two blobs.
        let dir = tempfile::tempdir().unwrap();
        let repo = git2::Repository::init_bare(dir.path()).unwrap();
        let a = repo.blob(b"aaaa").unwrap();
        let b = repo.blob(&[7u8; 5000]).unwrap();
        let mut pb = repo.packbuilder().unwrap();
        pb.insert_object(a, None).unwrap();
        pb.insert_object(b, None).unwrap();
        let packs = dir.path().join("packs");
        std::fs::create_dir(&packs).unwrap();
        pb.write(&packs, 0o644).unwrap();
        let name = pb.name().unwrap().to_string();
        let objs = super::objects(
            &packs.join(format!("pack-{name}.idx")),
            &packs.join(format!("pack-{name}.pack")),
        )
        .unwrap();
        let mut ids: Vec<_> = objs.iter().map(|(o, _)| *o).collect();
        ids.sort();
        let mut want = vec![a, b];
        want.sort();
        assert_eq!(ids, want);
        let total: u64 = objs.iter().map(|(_, s)| s).sum();
        let pack_len = std::fs::metadata(packs.join(format!("pack-{name}.pack")))
            .unwrap()
            .len();
        assert_eq!(total, pack_len - 12 - 20, "header and trailer excluded");
        assert!(objs.iter().all(|(_, s)| *s > 0));
    }
}
