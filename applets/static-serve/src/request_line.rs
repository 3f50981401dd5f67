//! A request line longer than nginx's 8 KiB header buffer gets 414 URI Too
//! Long, as nginx answers, instead of hyper's 431 for the whole head (which
//! hyper only sends once 16 KiB have arrived). hyper cannot be told to do
//! this, so the socket wrapper watches the first request line of a connection
//! and writes the 414 itself. Only the first: before a later request hyper may
//! still hold part of the previous response unwritten, which a 414 written
//! beside hyper would overtake. Later requests get the handler's 414 when
//! their head fits in 16 KiB, else hyper's 431.

use std::time::SystemTime;

/// Longest request line (method, target, version) accepted.
pub const MAX_REQUEST_LINE: usize = 8 * 1024;

/// Counts the bytes of a connection's first request line as they are read.
pub struct LineWatch {
    /// Bytes of the line seen so far; `None` once its LF has arrived.
    seen: Option<usize>,
}

impl Default for LineWatch {
    fn default() -> LineWatch {
        LineWatch { seen: Some(0) }
    }
}

impl LineWatch {
    /// Watches nothing: TLS connections (the socket carries ciphertext).
    pub fn off() -> LineWatch {
        LineWatch { seen: None }
    }

    /// Feeds bytes just read; true once the line is over the limit.
    pub fn too_long(&mut self, bytes: &[u8]) -> bool {
        let Some(seen) = self.seen else {
            return false;
        };
        let (len, ended) = match bytes.iter().position(|&b| b == b'\n') {
            Some(lf) => (lf, true),
            None => (bytes.len(), false),
        };
        self.seen = (!ended).then_some(seen + len);
        seen + len > MAX_REQUEST_LINE
    }
}

/// The whole 414 response; the connection closes after it (the rest of the
/// line is never read, so it could not be parsed as a request anyway).
pub fn response() -> Vec<u8> {
    let body = "414 URI Too Long\n";
    format!(
        "HTTP/1.1 414 URI Too Long\r\ncontent-type: text/plain; charset=utf-8\r\n\
         content-length: {}\r\nconnection: close\r\ndate: {}\r\n\r\n{body}",
        body.len(),
        httpdate::fmt_http_date(SystemTime::now())
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_first_line_counts() {
        let mut w = LineWatch::default();
        let long = vec![b'a'; MAX_REQUEST_LINE / 2 + 1];
        assert!(!w.too_long(b"GET /"));
        assert!(!w.too_long(&long));
        assert!(w.too_long(&long));
        // A line that ends in time, then long header lines: fine.
        let mut w = LineWatch::default();
        assert!(!w.too_long(b"GET / HTTP/1.1\r\nx: "));
        assert!(!w.too_long(&long));
        assert!(!w.too_long(&long));
        // All in one read.
        let mut w = LineWatch::default();
        let mut all = b"GET /".to_vec();
        all.extend(vec![b'a'; MAX_REQUEST_LINE]);
        all.extend(b" HTTP/1.1\r\n\r\n");
        assert!(w.too_long(&all));
    }
}
