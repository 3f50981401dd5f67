//! One record of the disk buffer: a batch's events as they are stored.
//!
//! Pure: bytes in, bytes out. A record is framed so that a torn or
//! corrupted one is told from a good one without trusting any of its bytes:
//!
//! ```text
//! frame:   len u32 LE | crc u32 LE | payload (len bytes)
//!          crc = CRC-32 (IEEE) of the len bytes and the payload
//! payload: version u8 (1) | events u32 LE
//!          | per event: end u32 LE (in the body), time i64 LE, id u128 LE
//!          | body (the NDJSON documents, each ending in \n)
//! ```
//!
//! The checkpoint marks are not stored: once a record is durable the file
//! checkpoints move past its lines, so a record never needs them again.

use crate::batch::Batch;

/// Bytes before the payload: its length and checksum.
pub const FRAME_HEAD: usize = 8;
const VERSION: u8 = 1;
/// Bytes of the payload before the per-event index.
pub const PAYLOAD_HEAD: usize = 1 + 4;
const PER_EVENT: usize = 4 + 8 + 16;

/// Why a record cannot be used.
#[derive(Debug, PartialEq, Eq)]
pub enum Bad {
    /// The checksum does not match: torn or overwritten.
    Checksum,
    /// The checksum matches but the payload is not a record we write.
    Format(&'static str),
}

/// The frame head and the event index of `batch`: written before its body,
/// so the body is never copied. The checksum covers all three.
pub fn encode_head(batch: &Batch) -> Vec<u8> {
    let n = batch.len();
    let payload = PAYLOAD_HEAD + n * PER_EVENT + batch.body.len();
    let mut head = Vec::with_capacity(FRAME_HEAD + PAYLOAD_HEAD + n * PER_EVENT);
    head.extend_from_slice(&(payload as u32).to_le_bytes());
    head.extend_from_slice(&[0; 4]);
    head.push(VERSION);
    head.extend_from_slice(&(n as u32).to_le_bytes());
    for i in 0..n {
        head.extend_from_slice(&(batch.ends[i] as u32).to_le_bytes());
        head.extend_from_slice(&batch.times[i].to_le_bytes());
        head.extend_from_slice(&batch.ids[i].to_le_bytes());
    }
    let mut crc = crc32fast::Hasher::new();
    crc.update(&head[..4]);
    crc.update(&head[FRAME_HEAD..]);
    crc.update(&batch.body);
    let sum = crc.finalize();
    head[4..8].copy_from_slice(&sum.to_le_bytes());
    head
}

/// Bytes the record of `batch` takes on disk.
pub fn frame_len(batch: &Batch) -> u64 {
    (FRAME_HEAD + PAYLOAD_HEAD + batch.len() * PER_EVENT + batch.body.len()) as u64
}

/// Whether a record's body fits the frame's u32 length.
pub fn fits(batch: &Batch) -> bool {
    frame_len(batch) - (FRAME_HEAD as u64) <= u32::MAX as u64
}

/// The payload length and checksum a frame head announces.
pub fn parse_head(head: &[u8; FRAME_HEAD]) -> (u32, u32) {
    let len = u32::from_le_bytes(head[..4].try_into().expect("4 bytes"));
    let crc = u32::from_le_bytes(head[4..].try_into().expect("4 bytes"));
    (len, crc)
}

/// Checks a payload, given as consecutive `parts`, against its frame head;
/// returns how many events it holds.
pub fn verify(head: &[u8; FRAME_HEAD], parts: &[&[u8]]) -> Result<u32, Bad> {
    let (len, crc) = parse_head(head);
    let total: usize = parts.iter().map(|p| p.len()).sum();
    if len as usize != total {
        return Err(Bad::Checksum);
    }
    let mut h = crc32fast::Hasher::new();
    h.update(&head[..4]);
    for p in parts {
        h.update(p);
    }
    if h.finalize() != crc {
        return Err(Bad::Checksum);
    }
    let first = parts.first().copied().unwrap_or_default();
    if first.len() < PAYLOAD_HEAD || first[0] != VERSION {
        return Err(Bad::Format("unknown record version"));
    }
    let n = u32::from_le_bytes(first[1..5].try_into().expect("4 bytes"));
    if (n as usize).saturating_mul(PER_EVENT) > total - PAYLOAD_HEAD {
        return Err(Bad::Format("event index longer than the record"));
    }
    Ok(n)
}

/// Bytes of the event index that follows a payload's first
/// [`PAYLOAD_HEAD`] bytes.
pub fn index_len(payload_head: &[u8; PAYLOAD_HEAD]) -> usize {
    u32::from_le_bytes(payload_head[1..5].try_into().expect("4 bytes")) as usize * PER_EVENT
}

/// The batch of a verified payload (without checkpoint marks): `index` is
/// its first [`PAYLOAD_HEAD`] bytes and the event index, `body` the rest,
/// kept as it is (read into its own buffer, never copied).
pub fn decode(index: &[u8], body: Vec<u8>) -> Result<Batch, Bad> {
    let head: &[u8; PAYLOAD_HEAD] = index
        .get(..PAYLOAD_HEAD)
        .ok_or(Bad::Format("record too short"))?
        .try_into()
        .expect("PAYLOAD_HEAD bytes");
    let n = index_len(head) / PER_EVENT;
    if index.len() != PAYLOAD_HEAD + n * PER_EVENT {
        return Err(Bad::Format("event index of the wrong length"));
    }
    let mut batch = Batch::default();
    batch.ends.reserve_exact(n);
    batch.times.reserve_exact(n);
    batch.ids.reserve_exact(n);
    let mut prev = 0;
    for e in index[PAYLOAD_HEAD..].chunks_exact(PER_EVENT) {
        let end = u32::from_le_bytes(e[..4].try_into().expect("4 bytes")) as usize;
        if end <= prev || end > body.len() {
            return Err(Bad::Format("event ends out of order"));
        }
        prev = end;
        batch.ends.push(end);
        batch
            .times
            .push(i64::from_le_bytes(e[4..12].try_into().expect("8 bytes")));
        batch
            .ids
            .push(u128::from_le_bytes(e[12..28].try_into().expect("16 bytes")));
    }
    if prev != body.len() {
        return Err(Bad::Format("body longer than its events"));
    }
    batch.body = body;
    Ok(batch)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(docs: &[&str]) -> Batch {
        let mut b = Batch::default();
        for (i, d) in docs.iter().enumerate() {
            b.body.extend_from_slice(d.as_bytes());
            b.body.push(b'\n');
            b.ends.push(b.body.len());
            b.times.push(1_000 + i as i64);
            b.ids.push(u128::MAX - i as u128);
        }
        b
    }

    /// The frame of `b` as it lands on disk.
    fn frame(b: &Batch) -> Vec<u8> {
        let mut f = encode_head(b);
        f.extend_from_slice(&b.body);
        assert_eq!(f.len() as u64, frame_len(b));
        f
    }

    fn split(f: &[u8]) -> ([u8; FRAME_HEAD], &[u8]) {
        (f[..FRAME_HEAD].try_into().unwrap(), &f[FRAME_HEAD..])
    }

    /// A payload as the reader reads it: index, then body.
    fn decode_payload(p: &[u8]) -> Result<Batch, Bad> {
        let at = PAYLOAD_HEAD + index_len(p[..PAYLOAD_HEAD].try_into().unwrap());
        decode(&p[..at], p[at..].to_vec())
    }

    #[test]
    fn a_batch_survives_the_round_trip() {
        let b = batch(&[r#"{"message":"a"}"#, r#"{"message":"bé"}"#]);
        let f = frame(&b);
        let (head, payload) = split(&f);
        assert_eq!(verify(&head, &[payload]), Ok(2));
        let got = decode_payload(payload).unwrap();
        assert_eq!(got.body, b.body);
        assert_eq!(got.ends, b.ends);
        assert_eq!(got.times, b.times);
        assert_eq!(got.ids, b.ids);
        assert_eq!(got.doc(1), r#"{"message":"bé"}"#.as_bytes());
        assert!(got.marks.is_empty());
    }

    #[test]
    fn an_empty_batch_is_a_record_too() {
        let f = frame(&Batch::default());
        let (head, payload) = split(&f);
        assert_eq!(verify(&head, &[payload]), Ok(0));
        assert!(decode_payload(payload).unwrap().is_empty());
    }

    #[test]
    fn any_flipped_bit_or_missing_byte_is_caught() {
        let f = frame(&batch(&["{}", r#"{"x":1}"#]));
        for i in 0..f.len() {
            let mut g = f.clone();
            g[i] ^= 0x10;
            let (head, payload) = split(&g);
            assert_eq!(verify(&head, &[payload]), Err(Bad::Checksum), "byte {i}");
        }
        for cut in 1..f.len() - FRAME_HEAD {
            let (head, payload) = split(&f[..f.len() - cut]);
            assert_eq!(verify(&head, &[payload]), Err(Bad::Checksum), "cut {cut}");
        }
    }

    #[test]
    fn a_well_checksummed_record_of_another_shape_is_refused() {
        // Right checksum, wrong version: a later format read by this one.
        let b = batch(&["{}"]);
        let mut f = frame(&b);
        f[FRAME_HEAD] = 9;
        let mut h = crc32fast::Hasher::new();
        h.update(&f[..4]);
        h.update(&f[FRAME_HEAD..]);
        let sum = h.finalize().to_le_bytes();
        f[4..8].copy_from_slice(&sum);
        let (head, payload) = split(&f);
        assert!(matches!(verify(&head, &[payload]), Err(Bad::Format(_))));
        // Ends that do not cover the body.
        let mut bad = batch(&["{}", "{}"]);
        bad.ends[1] -= 1;
        let f = frame(&bad);
        let (_, payload) = split(&f);
        assert!(matches!(decode_payload(payload), Err(Bad::Format(_))));
    }
}
