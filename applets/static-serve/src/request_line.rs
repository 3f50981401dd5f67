//! A request line longer than nginx's 8 KiB header buffer gets 414 URI Too
//! Long, as nginx answers, instead of hyper's 431 for the whole head (which
//! hyper only sends once 16 KiB have arrived). hyper cannot be told to do
//! this, so the socket wrapper watches the first line of each request head.

use std::time::SystemTime;

/// Longest request line (method, target, version) accepted.
pub const MAX_REQUEST_LINE: usize = 8 * 1024;

/// Counts the bytes of a request line as they are read.
#[derive(Default)]
pub struct LineWatch {
    /// Bytes of the current request line seen so far, while one is being read.
    seen: Option<usize>,
}

impl LineWatch {
    /// Feeds bytes just read; `head_starts` says they begin a new request head.
    /// Returns true once the line is over the limit.
    pub fn too_long(&mut self, head_starts: bool, bytes: &[u8]) -> bool {
        if head_starts {
            self.seen = Some(0);
        }
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
    fn only_the_first_line_of_a_head_counts() {
        let mut w = LineWatch::default();
        let long = vec![b'a'; MAX_REQUEST_LINE / 2 + 1];
        assert!(!w.too_long(true, b"GET /"));
        assert!(!w.too_long(false, &long));
        assert!(w.too_long(false, &long));
        // A line that ends in time, then long header lines: fine.
        let mut w = LineWatch::default();
        assert!(!w.too_long(true, b"GET / HTTP/1.1\r\nx: "));
        assert!(!w.too_long(false, &long));
        assert!(!w.too_long(false, &long));
        // All in one read.
        let mut w = LineWatch::default();
        let mut all = b"GET /".to_vec();
        all.extend(vec![b'a'; MAX_REQUEST_LINE]);
        all.extend(b" HTTP/1.1\r\n\r\n");
        assert!(w.too_long(true, &all));
    }
}
