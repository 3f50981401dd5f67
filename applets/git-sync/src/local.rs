//! Fetching from a repository on the local filesystem (`file://` or a path).
//!
//! libgit2's local transport refuses `--depth`, and copying the whole history
//! would break the disk bound, so this reads the source repository directly
//! and packs exactly what `git fetch --depth N` would send: the commits down
//! to the depth and the trees and blobs this repository lacks.

use std::collections::HashSet;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{bail, Context as _, Result};
use git2::{ObjectType, Odb, Oid, Repository};
use sha1::{Digest as _, Sha1};

use crate::packfeed::Feed;
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
    // Nothing to look up in a repository without objects (a first sync).
    let dst_known = (!holds_no_objects(dst.path())).then_some(&dst_odb);
    let src_shallow = shallow::read(src.path());
    let history = shallow::history(&src_odb, tip, depth, &src_shallow)?;

    let mut objects = Vec::new();
    let mut trees_seen = HashSet::new();
    for c in &history.commits {
        if cancel.load(Ordering::Relaxed) {
            bail!("cancelled");
        }
        if present(dst_known, *c) {
            continue;
        }
        objects.push(*c);
        let tree = src.find_commit(*c)?.tree_id();
        add_tree(src, dst_known, tree, &mut objects, &mut trees_seen)?;
    }
    let count = objects.len();
    if count > 0 {
        write_pack(&src_odb, &objects, &dst_odb, cancel)?;
    }
    let old = shallow::read(dst.path());
    shallow::write(dst.path(), &shallow::merge(&old, &history))?;
    Ok(count)
}

/// Whether `odb` has `oid` (None: an empty database). A miss must not make
/// libgit2 rescan the pack directory (its default), which costs a directory
/// scan per missing object.
fn present(odb: Option<&Odb>, oid: Oid) -> bool {
    odb.is_some_and(|o| o.exists_ext(oid, git2::OdbLookupFlags::NO_REFRESH))
}

/// Whether a repository has no object: no pack, no loose object, no
/// alternates.
fn holds_no_objects(gitdir: &Path) -> bool {
    let objects = gitdir.join("objects");
    // Cheapest first, and stop at the first object found: this runs on
    // every fetch, and a synced repository has packs.
    let loose = || {
        std::fs::read_dir(&objects).is_ok_and(|d| {
            d.flatten().any(|e| {
                e.file_name().len() == 2
                    && std::fs::read_dir(e.path()).is_ok_and(|mut d| d.next().is_some())
            })
        })
    };
    crate::gc::packs(&objects.join("pack")).is_empty()
        && !objects.join("info/alternates").exists()
        && !loose()
}

/// Adds a tree and what it holds, skipping whatever `dst` already has (a
/// present tree implies its contents are present).
fn add_tree(
    src: &Repository,
    dst_odb: Option<&Odb>,
    tree: Oid,
    out: &mut Vec<Oid>,
    seen: &mut HashSet<Oid>,
) -> Result<()> {
    if !seen.insert(tree) || present(dst_odb, tree) {
        return Ok(());
    }
    out.push(tree);
    let t = src.find_tree(tree)?;
    for entry in t.iter() {
        match entry.kind() {
            Some(ObjectType::Tree) => add_tree(src, dst_odb, entry.id(), out, seen)?,
            Some(ObjectType::Blob) if seen.insert(entry.id()) && !present(dst_odb, entry.id()) => {
                out.push(entry.id());
            }
            // Submodule commits live in other repositories.
            _ => {}
        }
    }
    Ok(())
}

/// Writes `objects` into `dst` as one pack without deltas, through
/// libgit2's indexer: objects under `STORE_MAX` bytes are stored (zlib's
/// uncompressed blocks: compressing a small object costs more than the bytes
/// it saves), larger ones compressed at the fastest level by one reused
/// compressor.
///
/// `git fetch` from a local repository reuses the source's compressed
/// objects; libgit2's packbuilder would instead search deltas for every
/// object, which costs several times the whole copy. On a local disk the
/// few extra bytes of an undeltified pack cost less than that search.
fn write_pack(src_odb: &Odb, objects: &[Oid], dst_odb: &Odb, cancel: &AtomicBool) -> Result<()> {
    let mut feed = Feed::new(dst_odb)?;
    let mut sha = Sha1::new();
    let mut put = |bytes: &[u8], feed: &mut Feed| -> Result<()> {
        sha.update(bytes);
        feed.put(bytes)
    };
    let count = u32::try_from(objects.len()).context("too many objects for one pack")?;
    let mut compressor = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    put(b"PACK", &mut feed)?;
    put(&2u32.to_be_bytes(), &mut feed)?;
    put(&count.to_be_bytes(), &mut feed)?;
    for oid in objects {
        if cancel.load(Ordering::Relaxed) {
            bail!("cancelled");
        }
        let obj = src_odb.read(*oid)?;
        let kind: u8 = match obj.kind() {
            ObjectType::Commit => 1,
            ObjectType::Tree => 2,
            ObjectType::Blob => 3,
            ObjectType::Tag => 4,
            other => bail!("cannot pack a {other} object ({oid})"),
        };
        put(&object_header(kind, obj.len() as u64), &mut feed)?;
        if obj.len() < STORE_MAX {
            put(&zlib_stored(obj.data()), &mut feed)?;
        } else {
            compressor.write_all(obj.data())?;
            put(&compressor.reset(Vec::new())?, &mut feed)?;
        }
    }
    feed.put(&sha.finalize())?;
    feed.commit()
}

/// Objects smaller than this are stored, not compressed.
const STORE_MAX: usize = 4096;

/// A zlib stream of one stored (uncompressed) deflate block; `data` must be
/// under 64 KiB.
fn zlib_stored(data: &[u8]) -> Vec<u8> {
    let len = data.len() as u16;
    let mut out = Vec::with_capacity(data.len() + 11);
    out.extend_from_slice(&[0x78, 0x01, 0x01]);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&(!len).to_le_bytes());
    out.extend_from_slice(data);
    let (mut a, mut b) = (1u32, 0u32);
    for chunk in data.chunks(5552) {
        for &x in chunk {
            a += u32::from(x);
            b += a;
        }
        a %= 65521;
        b %= 65521;
    }
    out.extend_from_slice(&((b << 16) | a).to_be_bytes());
    out
}

/// A pack entry's header: type and size, 4 bits then 7 bits a byte, low
/// bits first, the high bit saying more follow.
fn object_header(kind: u8, size: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(10);
    let mut byte = (kind << 4) | (size & 0x0f) as u8;
    let mut rest = size >> 4;
    while rest > 0 {
        out.push(byte | 0x80);
        byte = (rest & 0x7f) as u8;
        rest >>= 7;
    }
    out.push(byte);
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn stored_zlib_streams_inflate() {
        use std::io::Read;
        for data in [&b""[..], b"hello", &[7u8; 4000][..]] {
            let z = super::zlib_stored(data);
            let mut out = Vec::new();
            flate2::read::ZlibDecoder::new(&z[..])
                .read_to_end(&mut out)
                .unwrap();
            assert_eq!(out, data);
        }
    }

    #[test]
    fn pack_entry_headers() {
        assert_eq!(super::object_header(3, 5), vec![0x35]);
        assert_eq!(super::object_header(1, 16), vec![0x90, 0x01]);
        assert_eq!(super::object_header(2, 300), vec![0xac, 0x12]);
    }
}
