//! Protocol detection, as linkerd2-proxy does it: read the client's first
//! bytes; an HTTP/1.x request line or the HTTP/2 connection preface means
//! HTTP, anything else TCP. A client that sends nothing within the detection
//! timeout is relayed as TCP, so server-speaks-first protocols (SMTP, MySQL)
//! work, only delayed by the timeout.
//!
//! The bytes are read, not peeked: peeking cannot wait for *more* bytes
//! without spinning. They are handed on to whichever side takes over.

use std::future::Future;
use std::io;

use tokio::net::TcpStream;

/// Enough for any request line a real client sends before giving up on it.
const MAX_PEEK: usize = 8 * 1024;
/// Longer than any registered method (UPDATEREDIRECTREF has 17 letters).
const MAX_METHOD: usize = 20;
/// The HTTP/2 client connection preface (RFC 9113 §3.4).
pub(crate) const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detected {
    Http,
    /// `timed_out`: the client said nothing (or too little) in time.
    Tcp {
        timed_out: bool,
    },
}

const TCP: Detected = Detected::Tcp { timed_out: false };

/// What `bytes` (the start of a connection) say so far; None = cannot tell yet.
fn classify(bytes: &[u8]) -> Option<Detected> {
    // Empty lines before a request line are ignored by HTTP servers (RFC
    // 9112 §2.2), hyper included: they must not make a request TCP.
    let bytes = skip_empty_lines(bytes);
    if bytes.is_empty() {
        return None;
    }
    let n = bytes.len().min(H2_PREFACE.len());
    if bytes[..n] == H2_PREFACE[..n] {
        return (n == H2_PREFACE.len()).then_some(Detected::Http);
    }
    match bytes.iter().position(|&b| b == b'\n' || b == b'\r') {
        Some(end) => Some(if is_request_line(&bytes[..end]) {
            Detected::Http
        } else {
            TCP
        }),
        None if !could_be_request_line(bytes) => Some(TCP),
        // A request line longer than we read (a padded URL) is still HTTP:
        // hyper answers it (414 or 431 when too long), and routes, limits and
        // the smuggling checks apply to it as to any other.
        None if bytes.len() >= MAX_PEEK => Some(if has_target(bytes) {
            Detected::Http
        } else {
            TCP
        }),
        None => None,
    }
}

/// Methods whose start, sent alone, is taken for a stalled request.
const METHODS: [&[u8]; 10] = [
    b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH", b"CONNECT", b"TRACE", b"PRI",
];

/// An undecided start that is a request line begun: a method and a target
/// begun, or the start of a common method. Another word alone (`DATA`)
/// may be a TCP protocol's, and goes on as TCP.
fn stalled_request_line(buf: &[u8]) -> bool {
    let start = skip_empty_lines(buf);
    !start.is_empty() && (has_target(start) || METHODS.iter().any(|m| m.starts_with(start)))
}

fn skip_empty_lines(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(bytes.len());
    &bytes[start..]
}

fn is_space(b: &u8) -> bool {
    *b == b' ' || *b == b'\t'
}

/// `METHOD SP` and the start of a target: all a request line's start can show.
fn has_target(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .position(is_space)
        .is_some_and(|sp| sp > 0 && bytes[sp..].iter().any(|b| b.is_ascii_graphic()))
}

/// `METHOD SP TARGET SP HTTP/…`: a method, a target and a version that
/// names HTTP, however spaced and whatever the version. What is not quite
/// right (two spaces, a tab, `HTTP/1.2`, a bare CR) is still an attempt at
/// HTTP: hyper answers it with a 400 rather than relaying it unchecked to
/// an app that may read it leniently.
fn is_request_line(line: &[u8]) -> bool {
    let mut words = line.split(is_space).filter(|w| !w.is_empty());
    let (Some(method), Some(_target)) = (words.next(), words.next()) else {
        return false;
    };
    let version = words.next_back().unwrap_or_default();
    is_token(method) && version.len() >= 5 && version[..5].eq_ignore_ascii_case(b"HTTP/")
}

/// A start of a request line that has not reached its end yet. Methods in
/// use are upper case (GET, PROPFIND, M-SEARCH): a lower-case start such as
/// `hello` or `ping` is relayed at once instead of waiting for the timeout.
fn could_be_request_line(bytes: &[u8]) -> bool {
    let method_char = |b: &u8| b.is_ascii_uppercase() || *b == b'-' || *b == b'_';
    match bytes.iter().position(is_space) {
        None => bytes.len() <= MAX_METHOD && bytes.iter().all(method_char),
        Some(sp) => {
            sp <= MAX_METHOD
                && bytes[..sp].iter().all(method_char)
                && bytes[sp + 1..]
                    .iter()
                    .all(|b| b.is_ascii_graphic() || is_space(b))
        }
    }
}

fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_tchar(b))
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Where detection reads a connection's first bytes from.
pub trait ReadSome: Send {
    /// Appends what is there to `buf`, waiting for something; Ok(0) at EOF.
    fn read_some(&mut self, buf: &mut Vec<u8>) -> impl Future<Output = io::Result<usize>> + Send;
}

/// A plaintext client: read through a shared handle (the relay keeps it).
impl ReadSome for &TcpStream {
    async fn read_some(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
        self.readable().await?;
        self.try_read_buf(buf)
    }
}

/// The decrypted side of a TLS connection whose client offered no ALPN.
impl ReadSome for &mut crate::tls::ServerStream {
    async fn read_some(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
        tokio::io::AsyncReadExt::read_buf(*self, buf).await
    }
}

/// Reads the start of a connection into `buf` (which may hold bytes read
/// before) from `from`, until it tells HTTP from TCP, the peer closes its
/// side, or `deadline` passes: TCP then, unless what arrived is the start of
/// a request line with its target begun (a slow client is not a way around
/// HTTP handling).
pub async fn detect(
    buf: &mut Vec<u8>,
    deadline: tokio::time::Instant,
    mut from: impl ReadSome,
) -> io::Result<Detected> {
    loop {
        if let Some(found) = classify(buf) {
            return Ok(found);
        }
        buf.reserve(512.min(MAX_PEEK.saturating_sub(buf.len())).max(1));
        match tokio::time::timeout_at(deadline, from.read_some(buf)).await {
            // Undecided means it could still be a request line (`classify`):
            // one begun and stalled (`GE`, then nothing) stays HTTP, for
            // hyper to time out or refuse.
            Err(_) if stalled_request_line(buf) => return Ok(Detected::Http),
            Err(_) => return Ok(Detected::Tcp { timed_out: true }),
            Ok(Ok(0)) => return Ok(TCP),
            Ok(Ok(_)) => {}
            Ok(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => {}
            Ok(Err(e)) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_http_from_tcp() {
        assert_eq!(
            classify(b"GET / HTTP/1.1\r\nHost: a\r\n"),
            Some(Detected::Http)
        );
        assert_eq!(classify(b"OPTIONS * HTTP/1.0\r\n"), Some(Detected::Http));
        assert_eq!(classify(H2_PREFACE), Some(Detected::Http));
        assert_eq!(classify(&H2_PREFACE[..10]), None);
        assert_eq!(classify(b"GET /very/long"), None);
        assert_eq!(classify(b"GE"), None);
        assert_eq!(classify(b"hello"), Some(TCP));
        assert_eq!(classify(b"PING"), None);
        assert_eq!(classify(b"\x16\x03\x01\x02\x00"), Some(TCP));
        assert_eq!(classify(b"*1\r\n$4\r\nPING\r\n"), Some(TCP));
        assert_eq!(classify(b"HELO x\r\n"), Some(TCP));
        // Not quite right, but HTTP: hyper answers these, with a 400 when
        // it cannot parse them; nothing is relayed unchecked.
        for odd in [
            &b"\r\nGET / HTTP/1.1\r\n"[..],
            b"\nGET / HTTP/1.1\n",
            b"GET  /two-spaces HTTP/1.1\r\n",
            b"GET\t/tab HTTP/1.1\r\n",
            b"GET / HTTP/1.2\r\n",
            b"GET / http/1.1\r\n",
            b"GET / HTTP/2.0\r\n",
            b"GET /bare-cr HTTP/1.1\rHost: a\r",
        ] {
            assert_eq!(classify(odd), Some(Detected::Http), "{:?}", odd);
        }
        assert!(stalled_request_line(b"GE"));
        assert!(stalled_request_line(b"\r\nPOS"));
        assert!(stalled_request_line(b"FOO /x"));
        assert!(!stalled_request_line(b"DATA"));
        assert!(!stalled_request_line(b"\r\n"));
        assert_eq!(classify(b"\r\n"), None);
        assert_eq!(classify(b"\r\nGE"), None);
        assert_eq!(classify(&[b'A'; MAX_PEEK]), Some(TCP));
        // A padded URL longer than what detection reads is still a request.
        let padded = [b"GET /".as_slice(), &[b'a'; MAX_PEEK]].concat();
        assert_eq!(classify(&padded), Some(Detected::Http));
    }
}
