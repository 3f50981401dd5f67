//! The response body: in-memory pieces and byte ranges of one open file.
//!
//! A whole file, a single range and a multipart/byteranges response are all a
//! queue of parts, so one type covers them and the exact length is known up
//! front (hyper sends `Content-Length`, never chunked, for files). File bytes are
//! sent with `sendfile` on a connection (see `sendfile.rs`), else read with
//! `pread`, when hyper asks for them: the file was opened from the pinned tree,
//! so even if the root is swapped and the old worktree deleted mid-response,
//! the body still comes from the version the headers describe.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use hyper::body::{Frame, SizeHint};
use sidecar_runtime::prometheus_client::metrics::counter::Counter;

use crate::sendfile::{self, Spans};

/// Largest read per frame: big enough for few syscalls, small enough that a
/// slow client does not pin much memory.
const CHUNK: u64 = 128 * 1024;
/// Over HTTP/2, one default-sized frame: a stream is read one chunk ahead of
/// the window its client grants, and a client may hold 128 streams open
/// without granting any, so each holds this much rather than `CHUNK`.
const H2_CHUNK: u64 = 16 * 1024;
/// File parts at least this long go by sendfile: below, one read and a copy
/// cost less than the extra syscall.
pub const SENDFILE_MIN: u64 = 8 * 1024;

enum Part {
    Bytes(Bytes),
    File { offset: u64, len: u64 },
}

/// A queue of parts that holds the first one without allocating: most
/// bodies are one part (a file, or a message).
#[derive(Default)]
struct Parts {
    /// Empty only if `rest` is too, or once it was popped.
    head: Option<Part>,
    rest: VecDeque<Part>,
}

impl Parts {
    fn push_back(&mut self, p: Part) {
        if self.is_empty() {
            self.head = Some(p);
        } else {
            self.rest.push_back(p);
        }
    }

    fn push_front(&mut self, p: Part) {
        if let Some(h) = self.head.replace(p) {
            self.rest.push_front(h);
        }
    }

    fn pop_front(&mut self) -> Option<Part> {
        self.head.take().or_else(|| self.rest.pop_front())
    }

    fn is_empty(&self) -> bool {
        self.head.is_none() && self.rest.is_empty()
    }

    fn clear(&mut self) {
        self.head = None;
        self.rest.clear();
    }
}

/// What is told when a response is finished (the end of a request for the
/// connection's idle tracking), and when its body moves on.
pub trait Finish: Send + Sync {
    fn finish(&self);
    /// The body handed an HTTP/2 connection another chunk.
    fn progress(&self);
}

/// Calls [`Finish::finish`] when dropped: with the response, or with the
/// request if it never got one. An `Arc` (of the connection's state), so a
/// request costs a reference count, not an allocation.
pub struct Guard(Arc<dyn Finish>);

impl Guard {
    pub fn new(f: Arc<dyn Finish>) -> Guard {
        Guard(f)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.finish();
    }
}

pub struct Body {
    parts: Parts,
    file: Option<Arc<File>>,
    /// Where to record file spans sent as placeholders (the connection's).
    spans: Option<Arc<Spans>>,
    /// The whole file, already in memory (content cache): parts not sent by
    /// sendfile are slices of it instead of reads.
    memory: Option<Bytes>,
    remaining: u64,
    sent: Option<Counter>,
    guard: Option<Guard>,
    /// Sent over HTTP/2: reads frame-sized chunks, and tells the
    /// connection of each (its only sign of progress, see `Finish`).
    h2: bool,
}

impl Body {
    pub fn empty() -> Body {
        Body {
            parts: Parts::default(),
            file: None,
            spans: None,
            memory: None,
            remaining: 0,
            sent: None,
            guard: None,
            h2: false,
        }
    }

    pub fn bytes(b: impl Into<Bytes>) -> Body {
        let mut body = Body::empty();
        body.push_bytes(b.into());
        body
    }

    /// A body that will read from `file`; add ranges with [`Body::push_file`].
    pub fn file(file: Arc<File>) -> Body {
        Body {
            file: Some(file),
            ..Body::empty()
        }
    }

    /// `content` is the whole file: ranges not sent by sendfile are sliced from it.
    pub fn keep_in_memory(&mut self, content: Bytes) {
        self.memory = Some(content);
    }

    pub fn push_bytes(&mut self, b: Bytes) {
        if !b.is_empty() {
            self.remaining += b.len() as u64;
            self.parts.push_back(Part::Bytes(b));
        }
    }

    pub fn push_file(&mut self, offset: u64, len: u64) {
        if len > 0 {
            self.remaining += len;
            self.parts.push_back(Part::File { offset, len });
        }
    }

    pub fn len(&self) -> u64 {
        self.remaining
    }

    /// Counts the bytes handed to the connection.
    pub fn count_into(&mut self, c: Counter) {
        self.sent = Some(c);
    }

    /// Sends file parts by sendfile through this connection's spans.
    pub fn sendfile_via(&mut self, spans: Arc<Spans>) {
        self.spans = Some(spans);
    }

    /// Ties the body to its request's end and progress; over HTTP/2 it
    /// reads in frame-sized chunks.
    pub fn guard(&mut self, g: Guard, h2: bool) {
        self.guard = Some(g);
        self.h2 = h2;
    }

    /// Drops the content but keeps length-independent state (HEAD, 304).
    pub fn discard(&mut self) {
        self.parts.clear();
        self.remaining = 0;
        self.file = None;
        self.memory = None;
    }

    fn next_chunk(&mut self) -> Option<io::Result<Bytes>> {
        let part = self.parts.pop_front()?;
        let chunk = match part {
            Part::Bytes(b) => Ok(b),
            Part::File { offset, len } => match (&self.spans, &self.file, &self.memory) {
                (Some(spans), Some(file), _) if len >= SENDFILE_MIN => {
                    let n = len.min(sendfile::SPAN as u64);
                    let placeholder = spans.push(file.clone(), offset, n as usize);
                    if n < len {
                        self.parts.push_front(Part::File {
                            offset: offset + n,
                            len: len - n,
                        });
                    }
                    Ok(placeholder)
                }
                (_, _, Some(m)) => Ok(m.slice(offset as usize..(offset + len) as usize)),
                _ => {
                    let n = len.min(if self.h2 { H2_CHUNK } else { CHUNK });
                    match self.read_at(offset, n as usize) {
                        Ok(b) => {
                            if n < len {
                                self.parts.push_front(Part::File {
                                    offset: offset + n,
                                    len: len - n,
                                });
                            }
                            Ok(b)
                        }
                        Err(e) => {
                            self.parts.clear();
                            Err(e)
                        }
                    }
                }
            },
        };
        if let Ok(b) = &chunk {
            self.remaining -= b.len() as u64;
            if let Some(c) = &self.sent {
                c.inc_by(b.len() as u64);
            }
            // HTTP/1 progress is the socket's writes; HTTP/2's is this.
            if let Some(g) = self.guard.as_ref().filter(|_| self.h2) {
                g.0.progress();
            }
        }
        Some(chunk)
    }

    /// Reads exactly `n` bytes at `offset`; a file truncated under us is an
    /// error (the connection is aborted rather than sending a short body).
    fn read_at(&self, offset: u64, n: usize) -> io::Result<Bytes> {
        let file = self
            .file
            .as_ref()
            .ok_or_else(|| io::Error::other("no file"))?;
        let mut buf = BytesMut::with_capacity(n);
        while buf.len() < n {
            let want = n - buf.len();
            let pos = offset + buf.len() as u64;
            let spare = buf.spare_capacity_mut();
            // SAFETY: pread writes at most `want` bytes into the spare capacity,
            // which holds at least `want` bytes; only the bytes written are
            // then marked initialised.
            let got = unsafe {
                libc::pread(
                    file.as_raw_fd(),
                    spare.as_mut_ptr().cast(),
                    want,
                    pos as libc::off_t,
                )
            };
            if got < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if got == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "file shrank while being sent",
                ));
            }
            // SAFETY: pread initialised `got` more bytes.
            unsafe { buf.set_len(buf.len() + got as usize) };
        }
        Ok(buf.freeze())
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        // Reads come from the page cache in the common case; a blocking pool
        // hop per chunk would cost more than the read itself.
        Poll::Ready(self.next_chunk().map(|r| r.map(Frame::data)))
    }

    fn is_end_stream(&self) -> bool {
        self.parts.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn collect(mut b: Body) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(c) = b.next_chunk() {
            out.extend_from_slice(&c.unwrap());
        }
        out
    }

    #[test]
    fn parts_in_order_across_chunks() {
        let mut f = tempfile::tempfile().unwrap();
        let data: Vec<u8> = (0..300_000u32).map(|i| i as u8).collect();
        f.write_all(&data).unwrap();
        let mut b = Body::file(Arc::new(f));
        b.push_bytes(Bytes::from_static(b"<"));
        b.push_file(10, 200_000);
        b.push_bytes(Bytes::from_static(b">"));
        assert_eq!(b.len(), 200_002);
        let out = collect(b);
        assert_eq!(out[0], b'<');
        assert_eq!(&out[1..200_001], &data[10..200_010]);
        assert_eq!(out[200_001], b'>');
    }

    #[test]
    fn parts_queue_keeps_order_when_refilled_at_either_end() {
        let mut q = Parts::default();
        let bytes = |s: &'static str| Part::Bytes(Bytes::from_static(s.as_bytes()));
        q.push_back(bytes("a"));
        q.push_back(bytes("b"));
        q.push_front(bytes("0"));
        let mut order = Vec::new();
        for _ in 0..2 {
            if let Some(Part::Bytes(b)) = q.pop_front() {
                order.push(b);
            }
        }
        // The head is gone and `rest` still holds "b": a new part goes after it.
        q.push_back(bytes("c"));
        q.push_front(bytes("1"));
        while let Some(Part::Bytes(b)) = q.pop_front() {
            order.push(b);
        }
        assert_eq!(order, ["0", "a", "1", "b", "c"]);
        assert!(q.is_empty());
    }

    #[test]
    fn memory_ranges_are_slices() {
        let mut b = Body::file(Arc::new(tempfile::tempfile().unwrap()));
        b.keep_in_memory(Bytes::from_static(b"0123456789"));
        b.push_file(2, 3);
        b.push_bytes(Bytes::from_static(b"|"));
        b.push_file(8, 2);
        assert_eq!(collect(b), b"234|89");
    }

    #[test]
    fn truncated_file_is_an_error() {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(b"short").unwrap();
        let mut b = Body::file(Arc::new(f));
        b.push_file(0, 100);
        assert!(b.next_chunk().unwrap().is_err());
    }
}
