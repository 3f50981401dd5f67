//! Request smuggling refused on every HTTP/1 request of a connection.
//!
//! hyper reads a request with both Content-Length and Transfer-Encoding as
//! chunked and merges equal duplicate Content-Length headers, so those
//! spellings cannot be refused once hyper has parsed them. `HeadGuard` sits
//! between the client's stream and hyper and follows the byte stream's
//! framing itself: each request head is held back until it is complete and
//! checked on its raw bytes (`inspect`); bodies pass through
//! while their length (Content-Length, or the chunked coding) is counted, so
//! the next head is found wherever a pipelined client puts it. A refused
//! head never reaches hyper, and so never an upstream. hyper is not shown
//! the end of the stream (a server that reads EOF with a response under way
//! drops it): reads stay pending, and once every request before the refused
//! head has reached the service, `Link::finish` asks the connection to
//! finish gracefully. hyper answers those requests, and when it shuts the
//! connection down the guard writes the 400 first.
//!
//! What the guard cannot follow (a head over `MAX_HEAD`, a malformed chunk) is
//! passed through as is, and hyper refuses it itself. A tunnel (an upgrade's
//! 101, a CONNECT's 2xx) stops being HTTP/1: the service says when it opens
//! one (`Link::tunnel_opened`), and the guard passes everything on from then.
//! Until then an upgrade or CONNECT request is one request like the others,
//! so one that is declined is no way around the checks.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::CancellationToken;

/// The largest request head the guard holds back; hyper's read buffer is
/// capped to the same, so a larger head is hyper's 431, not a way around.
pub const MAX_HEAD: usize = 64 * 1024;
/// A chunk-size line or a trailer section longer than this is malformed.
const MAX_CHUNK_LINE: usize = 4 * 1024;

/// Where the next bytes of the client's stream belong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Head,
    /// Body bytes still to come (Content-Length).
    Body(u64),
    Chunked(Chunk),
    /// Not followed any more (see the module comment).
    Through,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// In a chunk-size line, this many bytes into it.
    SizeLine { len: usize },
    /// Chunk data still to come, then its CRLF.
    Data(u64),
    /// After the data: the rest of the line (CRLF).
    DataEnd,
    /// In the trailer section (after the last chunk), this many bytes into
    /// the current line and the section.
    Trailer { line: usize, total: usize },
}

/// What the guard and the connection's service tell each other: a refused
/// head and when to close for it, and an opened tunnel.
#[derive(Default)]
pub struct Link {
    cause: OnceLock<&'static str>,
    /// The refused request's method and target, for the access log.
    refused: OnceLock<(String, String)>,
    tunnel: AtomicBool,
    /// Heads the guard has handed to hyper, and requests hyper has handed
    /// to the service: when equal, no checked head waits in hyper's buffer.
    released: AtomicUsize,
    served: AtomicUsize,
    /// Cancelled once a head was refused and every request before it has
    /// reached the service: the connection is to finish them and close.
    pub finish: CancellationToken,
}

impl Link {
    /// Called by the service when its answer opens a tunnel.
    pub fn tunnel_opened(&self) {
        self.tunnel.store(true, Ordering::Release);
    }

    /// Why a head was refused, if one was.
    pub fn cause(&self) -> Option<&'static str> {
        self.cause.get().copied()
    }

    /// Called by the service for each request hyper hands it.
    pub fn request_served(&self) {
        self.served.fetch_add(1, Ordering::AcqRel);
        self.finish_when_done();
    }

    fn head_released(&self) {
        self.released.fetch_add(1, Ordering::AcqRel);
    }

    /// The refused request's method and target (as sent, lossily UTF-8).
    pub fn refused_request(&self) -> Option<&(String, String)> {
        self.refused.get()
    }

    fn refuse(&self, cause: &'static str, head: &[u8]) {
        let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
        let mut words = line.trim_ascii().split(|&b| b == b' ');
        let mut word = || String::from_utf8_lossy(words.next().unwrap_or_default()).into_owned();
        let _ = self.refused.set((word(), word()));
        let _ = self.cause.set(cause);
        self.finish_when_done();
    }

    fn finish_when_done(&self) {
        if self.cause.get().is_some()
            && self.served.load(Ordering::Acquire) >= self.released.load(Ordering::Acquire)
        {
            self.finish.cancel();
        }
    }
}

pub struct HeadGuard<S> {
    inner: S,
    framing: Framing,
    /// The head being read, held back until it is complete and checked.
    head: Vec<u8>,
    /// The chunk-size line being read (its digits decide the chunk's size).
    size_line: Vec<u8>,
    /// Checked bytes not yet handed to hyper, from `ready_at` on.
    ready: Vec<u8>,
    ready_at: usize,
    link: Arc<Link>,
    /// The 400 still to write before the shutdown, from `answer_at` on.
    answer: Vec<u8>,
    answer_at: usize,
}

impl<S> HeadGuard<S> {
    pub fn new(inner: S, link: Arc<Link>) -> Self {
        HeadGuard {
            inner,
            framing: Framing::Head,
            head: Vec::new(),
            size_line: Vec::new(),
            ready: Vec::new(),
            ready_at: 0,
            link,
            answer: Vec::new(),
            answer_at: 0,
        }
    }

    /// Takes in bytes read from the client; returns how many of them, from
    /// the start, can go to hyper now. What follows those is the start of a
    /// head (kept in `head` until it is complete) or a refused head (dropped).
    fn follow(&mut self, bytes: &[u8]) -> usize {
        let mut at = 0;
        while at < bytes.len() {
            match self.framing {
                Framing::Through => return bytes.len(),
                Framing::Head => {
                    let rest = &bytes[at..];
                    let Some(end) = head_end(rest) else {
                        self.head.extend_from_slice(rest);
                        return at;
                    };
                    match inspect(&rest[..end]) {
                        Ok(framing) => {
                            self.framing = framing;
                            self.link.head_released();
                            at += end;
                        }
                        Err(cause) => {
                            self.answer = super::refuse_smuggling(cause);
                            self.link.refuse(cause, &rest[..end]);
                            return at;
                        }
                    }
                }
                Framing::Body(left) => {
                    let n = left.min((bytes.len() - at) as u64);
                    at += n as usize;
                    self.framing = if left == n {
                        Framing::Head
                    } else {
                        Framing::Body(left - n)
                    };
                }
                Framing::Chunked(c) => at += self.follow_chunked(c, &bytes[at..]),
            }
        }
        at
    }

    /// Follows the chunked coding over the start of `bytes`; returns how
    /// many bytes it took (at least one, unless `bytes` is empty).
    fn follow_chunked(&mut self, c: Chunk, bytes: &[u8]) -> usize {
        match c {
            Chunk::SizeLine { len } => {
                let Some(nl) = bytes.iter().position(|&b| b == b'\n') else {
                    self.size_line.extend_from_slice(bytes);
                    self.set_chunk_or_through(len + bytes.len(), |len| Chunk::SizeLine { len });
                    return bytes.len();
                };
                self.size_line.extend_from_slice(&bytes[..nl]);
                let size = chunk_size(&self.size_line);
                self.size_line.clear();
                self.framing = match size {
                    Some(0) => Framing::Chunked(Chunk::Trailer { line: 0, total: 0 }),
                    Some(n) => Framing::Chunked(Chunk::Data(n)),
                    None => Framing::Through,
                };
                nl + 1
            }
            Chunk::Data(left) => {
                let n = left.min(bytes.len() as u64);
                self.framing = Framing::Chunked(if left == n {
                    Chunk::DataEnd
                } else {
                    Chunk::Data(left - n)
                });
                n as usize
            }
            Chunk::DataEnd => match bytes.iter().position(|&b| b == b'\n') {
                Some(nl) => {
                    self.framing = Framing::Chunked(Chunk::SizeLine { len: 0 });
                    nl + 1
                }
                None => bytes.len(),
            },
            Chunk::Trailer { line, total } => match bytes.iter().position(|&b| b == b'\n') {
                Some(nl) => {
                    let line_len = line + nl;
                    // An empty line (CR alone before the LF) ends the message.
                    let empty =
                        line_len == 0 || (line_len == 1 && (nl == 0 || bytes[nl - 1] == b'\r'));
                    if empty {
                        self.framing = Framing::Head;
                    } else {
                        self.set_chunk_or_through(total + nl + 1, |total| Chunk::Trailer {
                            line: 0,
                            total,
                        });
                    }
                    nl + 1
                }
                None => {
                    self.set_chunk_or_through(total + bytes.len(), |total| Chunk::Trailer {
                        line: line + bytes.len(),
                        total,
                    });
                    bytes.len()
                }
            },
        }
    }

    fn set_chunk_or_through(&mut self, len: usize, state: impl FnOnce(usize) -> Chunk) {
        self.framing = if len > MAX_CHUNK_LINE {
            Framing::Through
        } else {
            Framing::Chunked(state(len))
        };
    }
}

/// The end of a complete head in `buf` (just past its empty line), found
/// from the line ends: a head has a handful.
fn head_end(buf: &[u8]) -> Option<usize> {
    memchr::memchr_iter(b'\n', buf).find_map(|i| match &buf[i + 1..] {
        [b'\n', ..] => Some(i + 2),
        [b'\r', b'\n', ..] => Some(i + 3),
        _ => None,
    })
}

/// Checks a complete head on its raw bytes, in one pass: the spellings that
/// let two parsers disagree about where a request ends are refused (the
/// cause); otherwise, how its body is framed. A Transfer-Encoding other
/// than chunked is hyper's 400, and not followed.
fn inspect(head: &[u8]) -> Result<Framing, &'static str> {
    // The request line says nothing about framing.
    let lines = head.split(|&b| b == b'\n').skip(1);
    let (mut lengths, mut length, mut te, mut chunked, mut hosts) = (0, None, 0, false, 0);
    for line in lines {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(&first) = line.first() else { break };
        if first == b' ' || first == b'\t' {
            return Err("obsolete line folding in a header");
        }
        let Some(colon) = memchr::memchr(b':', line) else {
            continue;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if name.eq_ignore_ascii_case(b"content-length") {
            lengths += 1;
            // Digits only (RFC 9110 §8.6): `+3`, `0x3` or `3 4` are read
            // differently by different parsers.
            if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
                return Err("invalid Content-Length");
            }
            length = std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.parse::<u64>().ok());
        } else if name.eq_ignore_ascii_case(b"host") {
            hosts += 1;
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            te += 1;
            chunked = value
                .rsplit(|&b| b == b',')
                .next()
                .is_some_and(|v| v.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        }
    }
    if lengths > 0 && te > 0 {
        return Err("both Content-Length and Transfer-Encoding");
    }
    if lengths > 1 {
        return Err("duplicate Content-Length");
    }
    // Routes would follow one Host and the app perhaps the other (RFC 9112
    // §3.2: 400).
    if hosts > 1 {
        return Err("duplicate Host");
    }
    Ok(if te > 0 {
        if chunked {
            Framing::Chunked(Chunk::SizeLine { len: 0 })
        } else {
            Framing::Through
        }
    } else {
        match (lengths, length) {
            (0, _) | (_, Some(0)) => Framing::Head,
            (_, Some(n)) => Framing::Body(n),
            (_, None) => Framing::Through,
        }
    })
}

/// The size of a chunk from its size line (`1a;ext=x`), None if malformed.
fn chunk_size(line: &[u8]) -> Option<u64> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let digits = line.split(|&b| b == b';').next()?.trim_ascii();
    let digits = std::str::from_utf8(digits).ok()?;
    if digits.is_empty() || digits.len() > 15 {
        return None;
    }
    u64::from_str_radix(digits, 16).ok()
}

impl<S: AsyncRead + Unpin> AsyncRead for HeadGuard<S> {
    /// Reads into hyper's buffer and hands on what `follow` releases; a
    /// head that arrives whole is checked where it lies, and only a head
    /// split across reads is copied aside until its end comes.
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.ready_at < this.ready.len() {
                let n = (this.ready.len() - this.ready_at).min(buf.remaining());
                buf.put_slice(&this.ready[this.ready_at..this.ready_at + n]);
                this.ready_at += n;
                return Poll::Ready(Ok(()));
            }
            if this.framing != Framing::Through && this.link.tunnel.load(Ordering::Acquire) {
                this.pass_held_head();
                continue;
            }
            if this.link.cause().is_some() {
                // Nothing more for hyper; `Link::finish` ends the connection.
                return Poll::Pending;
            }
            if this.framing == Framing::Through {
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            let before = buf.filled().len();
            ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
            if buf.filled().len() == before {
                // The client's end: hyper gets what it sent, a partial head
                // included, and answers that.
                if this.head.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                this.pass_held_head();
                continue;
            }
            if this.head.is_empty() {
                let n = this.follow(&buf.filled()[before..]);
                buf.set_filled(before + n);
                if n > 0 {
                    return Poll::Ready(Ok(()));
                }
            } else {
                this.head.extend_from_slice(&buf.filled()[before..]);
                buf.set_filled(before);
                let held = std::mem::take(&mut this.head);
                let n = this.follow(&held);
                this.ready = held;
                this.ready.truncate(n);
                this.ready_at = 0;
            }
            if this.head.len() > MAX_HEAD {
                this.pass_held_head();
            }
        }
    }
}

impl<S> HeadGuard<S> {
    /// Gives up on the head being held (the stream ended, or it is over
    /// `MAX_HEAD`): hyper gets it as it is, after what is ready, and answers
    /// it itself.
    fn pass_held_head(&mut self) {
        let head = std::mem::take(&mut self.head);
        self.ready.drain(..self.ready_at);
        self.ready_at = 0;
        self.ready.extend_from_slice(&head);
        self.framing = Framing::Through;
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for HeadGuard<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    /// Writes a refused head's 400 first: hyper shuts the connection down
    /// after answering the requests before it.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        while this.answer_at < this.answer.len() {
            let n =
                ready!(Pin::new(&mut this.inner).poll_write(cx, &this.answer[this.answer_at..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            this.answer_at += n;
        }
        ready!(Pin::new(&mut this.inner).poll_flush(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// What hyper would read from a client that sends `sent` in pieces of
    /// `piece` bytes, and the refusal cause.
    async fn through(sent: &[u8], piece: usize) -> (Vec<u8>, Option<&'static str>) {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        for part in sent.chunks(piece) {
            client.write_all(part).await.unwrap();
        }
        client.shutdown().await.unwrap();
        let link = Arc::new(Link::default());
        let mut g = HeadGuard::new(server, link.clone());
        let mut got = Vec::new();
        // Everything was sent: the guard pends only after a refusal.
        loop {
            let mut chunk = [0u8; 1000];
            let mut rb = ReadBuf::new(&mut chunk);
            let polled =
                std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut g).poll_read(cx, &mut rb)))
                    .await;
            match polled {
                Poll::Ready(r) => r.unwrap(),
                Poll::Pending => break,
            }
            if rb.filled().is_empty() {
                break;
            }
            got.extend_from_slice(rb.filled());
        }
        if link.cause().is_some() {
            // Each released head reaching the service lets the connection finish.
            assert!(!link.finish.is_cancelled());
            for _ in 0..link.released.load(Ordering::Acquire) {
                link.request_served();
            }
            assert!(link.finish.is_cancelled());
        }
        (got, link.cause())
    }

    const GOOD: &[u8] = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\
GET /b HTTP/1.1\r\nHost: x\r\n\r\n\
POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3;e=1\r\nabc\r\n0\r\nX-T: 1\r\n\r\n\
GET /d HTTP/1.1\r\nHost: x\r\n\r\n";

    #[test]
    fn smuggling_spellings_and_framings() {
        let ok = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n";
        assert_eq!(inspect(ok), Ok(Framing::Body(3)));
        let both = b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(inspect(both).is_err());
        let dup = b"POST / HTTP/1.1\r\ncontent-length: 3\r\nContent-Length: 3\r\n\r\n";
        assert_eq!(inspect(dup), Err("duplicate Content-Length"));
        let hosts = b"GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n";
        assert_eq!(inspect(hosts), Err("duplicate Host"));
        let fold = b"GET / HTTP/1.1\r\nX-A: a\r\n b\r\n\r\n";
        assert!(inspect(fold).is_err());
        for bad in ["abc", "+3", "-1", "0x3", "3 4", ""] {
            let head = format!("POST / HTTP/1.1\r\nContent-Length: {bad}\r\n\r\n");
            assert_eq!(
                inspect(head.as_bytes()),
                Err("invalid Content-Length"),
                "{bad:?}"
            );
        }
        let gzip_chunked = b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n";
        assert_eq!(
            inspect(gzip_chunked),
            Ok(Framing::Chunked(Chunk::SizeLine { len: 0 }))
        );
        assert_eq!(head_end(b"GET / HTTP/1.1\nHost: a\n\nrest"), Some(24));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nrest"), Some(27));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: a\r\n"), None);
    }

    #[tokio::test]
    async fn well_framed_requests_pass_unchanged_however_they_arrive() {
        for piece in [1, 2, 3, 7, 64, GOOD.len()] {
            assert_eq!(through(GOOD, piece).await, (GOOD.to_vec(), None), "{piece}");
        }
    }

    #[tokio::test]
    async fn a_smuggling_head_after_good_requests_is_held_back() {
        for (bad, cause) in [
            (
                &b"GET /e HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"[..],
                "both Content-Length and Transfer-Encoding",
            ),
            (
                b"GET /e HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\nabc",
                "both Content-Length and Transfer-Encoding",
            ),
            (
                b"GET /e HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
                "duplicate Content-Length",
            ),
            (
                b"GET /e HTTP/1.1\r\nX-A: 1\r\n  folded\r\n\r\n",
                "obsolete line folding in a header",
            ),
        ] {
            let sent = [GOOD, bad].concat();
            for piece in [1, 5, sent.len()] {
                assert_eq!(through(&sent, piece).await, (GOOD.to_vec(), Some(cause)), "{piece}");
            }
        }
    }

    #[tokio::test]
    async fn a_body_that_looks_like_a_head_is_body() {
        let inner = b"GET /x HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n";
        let head = format!(
            "POST /a HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            inner.len()
        );
        let sent = [head.as_bytes(), inner].concat();
        assert_eq!(through(&sent, 3).await, (sent.clone(), None));
    }

    #[tokio::test]
    async fn a_declined_upgrade_is_no_way_around_and_an_opened_tunnel_passes() {
        let up = b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\n".as_slice();
        let bad = b"GET /x HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx".as_slice();
        let sent = [up, bad].concat();
        assert_eq!(
            through(&sent, 4).await,
            (up.to_vec(), Some("duplicate Content-Length"))
        );

        // The service answered 101: what follows is the tunnel's, unchecked.
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let link = Arc::new(Link::default());
        let mut g = HeadGuard::new(server, link.clone());
        client.write_all(up).await.unwrap();
        let mut got = vec![0u8; up.len()];
        g.read_exact(&mut got).await.unwrap();
        link.tunnel_opened();
        client.write_all(bad).await.unwrap();
        client.shutdown().await.unwrap();
        got.clear();
        g.read_to_end(&mut got).await.unwrap();
        assert_eq!((got.as_slice(), link.cause()), (bad, None));
    }

    #[tokio::test]
    async fn oversized_heads_go_to_hyper_unchecked() {
        let big = [
            b"GET / HTTP/1.1\r\nX: ".as_slice(),
            &vec![b'a'; MAX_HEAD + 10],
            b"\r\n\r\n",
        ]
        .concat();
        assert_eq!(through(&big, 4096).await, (big.clone(), None));
    }
}
