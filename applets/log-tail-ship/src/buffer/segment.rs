//! Segment files and the acknowledgement ledger, as found at start.
//!
//! A segment is `<id>.seg` (20 digits, so names sort as ids do): records
//! appended one after another. `acked.json` says how many records of the
//! oldest segment the sink acknowledged; older segments are deleted once
//! acknowledged, so nothing else needs remembering.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::record::{self, Bad, FRAME_HEAD};

pub const LEDGER: &str = "acked.json";
const SUFFIX: &str = ".seg";

pub fn name(id: u64) -> String {
    format!("{id:020}{SUFFIX}")
}

/// The id of a segment file name; None for other files.
pub fn parse_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// How far the sink got: the first `records` records of segment `segment`
/// are acknowledged (and every older segment).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    pub segment: u64,
    pub records: u64,
}

/// The ledger in `dir`; None if there is none yet. An unreadable one is
/// treated as none: acknowledged records are then sent again (at least
/// once), never skipped.
pub fn read_ledger(dir: &Path) -> io::Result<Option<Ledger>> {
    match std::fs::read(dir.join(LEDGER)) {
        Ok(raw) => match serde_json::from_slice(&raw) {
            Ok(l) => Ok(Some(l)),
            Err(e) => {
                tracing::warn!(file = %dir.join(LEDGER).display(), error = %e, "unreadable acknowledgement ledger; the buffer is sent again from its start");
                Ok(None)
            }
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

pub fn write_ledger(dir: &Path, l: Ledger) -> io::Result<()> {
    let raw = serde_json::to_vec(&l).expect("ledger serializes");
    sidecar_runtime::fsutil::write_atomic(&dir.join(LEDGER), &raw, 0o600)
}

/// What a segment holds, checked record by record.
#[derive(Debug, PartialEq, Eq)]
pub struct Scan {
    /// Bytes of whole, good records from the start: the file is cut here.
    pub valid: u64,
    /// Good records.
    pub records: u64,
    /// Where the first record not acknowledged starts (`valid` if none).
    pub read_at: u64,
    /// Events in the records from `read_at` on.
    pub events: u64,
    /// Why the bytes after `valid` are not a record (None: there are none).
    pub bad: Option<Bad>,
}

/// Reads the `len` bytes of a segment, checking every record, and stops at
/// the first that is torn (a crash in the middle of an append) or corrupt.
/// The first `acked` records are skipped by the sink.
pub fn scan(file: &File, len: u64, acked: u64) -> io::Result<Scan> {
    let mut s = Scan {
        valid: 0,
        records: 0,
        read_at: 0,
        events: 0,
        bad: None,
    };
    let mut payload = Vec::new();
    while s.valid < len {
        let rest = len - s.valid;
        if rest < FRAME_HEAD as u64 {
            s.bad = Some(Bad::Checksum);
            break;
        }
        let mut head = [0; FRAME_HEAD];
        file.read_exact_at(&mut head, s.valid)?;
        let (plen, _) = record::parse_head(&head);
        if u64::from(plen) > rest - FRAME_HEAD as u64 {
            s.bad = Some(Bad::Checksum);
            break;
        }
        payload.resize(plen as usize, 0);
        file.read_exact_at(&mut payload, s.valid + FRAME_HEAD as u64)?;
        match record::verify(&head, &[&payload]) {
            Ok(n) => {
                if s.records >= acked {
                    s.events += u64::from(n);
                }
            }
            Err(b) => {
                s.bad = Some(b);
                break;
            }
        }
        s.records += 1;
        s.valid += FRAME_HEAD as u64 + u64::from(plen);
        if s.records == acked {
            s.read_at = s.valid;
        }
    }
    if acked > s.records {
        s.read_at = s.valid;
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::Batch;

    fn batch(n: usize) -> Batch {
        let mut b = Batch::default();
        for i in 0..n {
            b.body
                .extend_from_slice(format!("{{\"i\":{i}}}\n").as_bytes());
            b.ends.push(b.body.len());
            b.times.push(0);
            b.ids.push(i as u128);
        }
        b
    }

    /// A segment file with records of 1, 2 and 3 events.
    fn segment() -> (tempfile::NamedTempFile, Vec<u64>) {
        let f = tempfile::NamedTempFile::new().unwrap();
        let mut ends = Vec::new();
        let mut at = 0;
        for n in 1..=3 {
            let b = batch(n);
            let head = record::encode_head(&b);
            f.as_file().write_all_at(&head, at).unwrap();
            f.as_file()
                .write_all_at(&b.body, at + head.len() as u64)
                .unwrap();
            at += record::frame_len(&b);
            ends.push(at);
        }
        (f, ends)
    }

    #[test]
    fn names_sort_as_ids() {
        assert_eq!(name(42), "00000000000000000042.seg");
        assert_eq!(parse_name(&name(42)), Some(42));
        assert_eq!(parse_name("42.seg"), None);
        assert_eq!(parse_name("acked.json"), None);
        assert!(name(9) < name(10));
    }

    #[test]
    fn a_whole_segment_scans_clean_and_skips_acknowledged_records() {
        let (f, ends) = segment();
        let s = scan(f.as_file(), ends[2], 0).unwrap();
        assert_eq!(
            (s.valid, s.records, s.read_at, s.events),
            (ends[2], 3, 0, 6)
        );
        assert_eq!(s.bad, None);
        let s = scan(f.as_file(), ends[2], 2).unwrap();
        assert_eq!((s.read_at, s.events), (ends[1], 3));
        // A ledger ahead of the file (its tail was cut): nothing to send.
        let s = scan(f.as_file(), ends[2], 7).unwrap();
        assert_eq!((s.read_at, s.events), (ends[2], 0));
    }

    #[test]
    fn a_torn_tail_ends_the_segment_at_the_last_whole_record() {
        let (f, ends) = segment();
        // Cut anywhere inside the last record, header included.
        for len in ends[1] + 1..ends[2] {
            let s = scan(f.as_file(), len, 0).unwrap();
            assert_eq!((s.valid, s.records, s.events), (ends[1], 2, 3), "len {len}");
            assert_eq!(s.bad, Some(Bad::Checksum));
        }
    }

    #[test]
    fn a_garbled_record_ends_the_segment_before_it() {
        let (f, ends) = segment();
        // One byte of the second record's body changed.
        f.as_file().write_all_at(b"X", ends[1] - 3).unwrap();
        let s = scan(f.as_file(), ends[2], 0).unwrap();
        assert_eq!((s.valid, s.records, s.events), (ends[0], 1, 1));
        assert_eq!(s.bad, Some(Bad::Checksum));
        // A length field pointing past the end.
        f.as_file().write_all_at(&[0xff; 4], 0).unwrap();
        let s = scan(f.as_file(), ends[2], 0).unwrap();
        assert_eq!((s.valid, s.records), (0, 0));
    }

    #[test]
    fn the_ledger_round_trips_and_a_bad_one_counts_as_none() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_ledger(dir.path()).unwrap(), None);
        let l = Ledger {
            segment: 3,
            records: 17,
        };
        write_ledger(dir.path(), l).unwrap();
        assert_eq!(read_ledger(dir.path()).unwrap(), Some(l));
        std::fs::write(dir.path().join(LEDGER), "{").unwrap();
        assert_eq!(read_ledger(dir.path()).unwrap(), None);
    }
}
