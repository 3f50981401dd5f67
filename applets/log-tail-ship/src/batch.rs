//! A batch: events as NDJSON in one buffer, where each one ends, and how far
//! each file is covered once the sink acknowledges the batch.

use bytes::Bytes;
use tokio::sync::OwnedSemaphorePermit;

use crate::checkpoint::Mark;

#[derive(Default)]
pub struct Batch {
    /// Documents, each followed by `\n`; for Elasticsearch without a disk
    /// buffer each one after its `_bulk` action line, so that the body is
    /// the request (see `starts`).
    pub body: Vec<u8>,
    /// End offset in `body` (after the `\n`) of each document.
    pub ends: Vec<usize>,
    /// Where each document starts in `body` when action lines come before
    /// them; empty when `body` holds the documents alone.
    pub starts: Vec<usize>,
    /// Bytes of `body` that are action lines.
    pub framing: usize,
    /// `body` once [`share`](Self::share)d with the request sending it.
    shared: Bytes,
    /// Event time of each document, Unix nanoseconds.
    pub times: Vec<i64>,
    /// A stable id per document (file content stream + offset): the same
    /// line read again after a crash gets the same id.
    pub ids: Vec<u128>,
    /// One per file touched: the offset just past its last line in this batch.
    pub marks: Vec<Mark>,
    /// Holds `body.len()` bytes of `--buffer-max-bytes` until acknowledged.
    pub permit: Option<OwnedSemaphorePermit>,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Document `i` without its newline.
    pub fn doc(&self, i: usize) -> &[u8] {
        let body = if self.shared.is_empty() {
            &self.body[..]
        } else {
            &self.shared[..]
        };
        let start = match (self.starts.get(i), i) {
            (Some(&s), _) => s,
            (None, 0) => 0,
            (None, _) => self.ends[i - 1],
        };
        &body[start..self.ends[i] - 1]
    }

    /// The body as the `_bulk` request of the whole batch, without copying
    /// it, if it was built as one.
    pub fn share(&mut self) -> Option<Bytes> {
        if self.starts.is_empty() {
            return None;
        }
        if self.shared.is_empty() {
            self.shared = Bytes::from(std::mem::take(&mut self.body));
        }
        Some(self.shared.clone())
    }

    /// Records that everything before `end` in the file is in this batch (or
    /// was skipped, like empty lines).
    pub fn mark(&mut self, m: Mark) {
        // Batches touch few files; the last mark is almost always the one.
        match self.marks.iter_mut().rev().find(|x| x.key == m.key) {
            Some(x) if x.generation == m.generation => x.end = x.end.max(m.end),
            Some(x) => *x = m,
            None => self.marks.push(m),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::FileKey;

    #[test]
    fn docs_and_marks() {
        let mut b = Batch::default();
        for d in [&b"{\"a\":1}"[..], b"{}"] {
            b.body.extend_from_slice(d);
            b.body.push(b'\n');
            b.ends.push(b.body.len());
        }
        assert_eq!(b.doc(0), b"{\"a\":1}");
        assert_eq!(b.doc(1), b"{}");
        let key = FileKey { dev: 1, ino: 1 };
        b.mark(Mark {
            key,
            generation: 0,
            end: 5,
        });
        b.mark(Mark {
            key,
            generation: 0,
            end: 9,
        });
        b.mark(Mark {
            key,
            generation: 1,
            end: 2,
        });
        assert_eq!(b.marks.len(), 1);
        assert_eq!((b.marks[0].generation, b.marks[0].end), (1, 2));
    }
}
