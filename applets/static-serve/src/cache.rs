//! Bounded in-memory caches of file-derived bytes, keyed by exact file
//! version: small file contents (no read per request) and gzip output.
//!
//! Keys identify one version of one file (device, inode, size, nanosecond
//! mtime and ctime), so a rewrite or a root swap never hits a stale entry; the
//! handler only stores contents of files whose ctime is older than a second,
//! so a write within the file system's timestamp granularity cannot alias.

use std::borrow::Borrow;
use std::collections::VecDeque;
use std::hash::Hash;
use std::sync::RwLock;

use crate::tree::{read, write};

use bytes::Bytes;
// FxHash: a lookup per request, and keys are versions of files in the tree
// (identities and ETags), not strings a client picks.
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};

pub struct BytesCache<K> {
    inner: RwLock<Inner<K>>,
    capacity: usize,
    max_entry: usize,
}

struct Inner<K> {
    map: HashMap<K, Bytes>,
    order: VecDeque<K>,
    bytes: usize,
    /// Being computed in the background.
    pending: HashSet<K>,
}

impl<K: Hash + Eq + Clone> BytesCache<K> {
    /// Holds at most `capacity` bytes, in entries of at most `max_entry` bytes;
    /// the oldest entries go first.
    pub fn new(capacity: usize, max_entry: usize) -> BytesCache<K> {
        BytesCache {
            inner: RwLock::new(Inner {
                map: HashMap::default(),
                order: VecDeque::new(),
                bytes: 0,
                pending: HashSet::default(),
            }),
            capacity,
            max_entry,
        }
    }

    pub fn get<Q: Hash + Eq + ?Sized>(&self, key: &Q) -> Option<Bytes>
    where
        K: Borrow<Q>,
    {
        read(&self.inner).map.get(key).cloned()
    }

    /// Claims `key` for a background computation; false if one already runs.
    pub fn claim(&self, key: K) -> bool {
        write(&self.inner).pending.insert(key)
    }

    pub fn insert(&self, key: K, value: Bytes) {
        let mut c = write(&self.inner);
        c.pending.remove(&key);
        if value.len() > self.max_entry || c.map.contains_key(&key) {
            return;
        }
        c.bytes += value.len();
        c.order.push_back(key.clone());
        c.map.insert(key, value);
        while c.bytes > self.capacity {
            let Some(old) = c.order.pop_front() else {
                break;
            };
            if let Some(b) = c.map.remove(&old) {
                c.bytes -= b.len();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_oldest_first() {
        let c = BytesCache::new(10, 6);
        c.insert(1, Bytes::from_static(b"aaaa"));
        c.insert(2, Bytes::from_static(b"bbbb"));
        c.insert(3, Bytes::from_static(b"toolarge"));
        assert!(c.get(&3).is_none());
        c.insert(4, Bytes::from_static(b"cccc"));
        assert!(c.get(&1).is_none(), "oldest evicted");
        assert_eq!(c.get(&2).unwrap(), "bbbb");
        assert_eq!(c.get(&4).unwrap(), "cccc");
        assert!(c.claim(5));
        assert!(!c.claim(5));
        c.insert(5, Bytes::new());
        assert!(c.claim(5), "insert ends the claim");
    }
}
