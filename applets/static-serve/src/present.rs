//! Which of the request headers the handler reads are there at all, found in
//! one pass over the request's few headers instead of a hashed lookup per
//! name: most requests carry none of them, and then the parsing they drive
//! (content negotiation, ranges, preconditions) is skipped.

use http::header::{self, HeaderMap};

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Present {
    /// `Host` fields (more than one is refused).
    pub hosts: usize,
    pub accept_encoding: bool,
    pub range: bool,
    /// Any of If-Match, If-None-Match, If-Modified-Since, If-Unmodified-Since.
    pub preconditions: bool,
}

impl Present {
    pub fn scan(headers: &HeaderMap) -> Present {
        let mut p = Present::default();
        for (name, _) in headers {
            if name == header::HOST {
                p.hosts += 1;
            } else if name == header::ACCEPT_ENCODING {
                p.accept_encoding = true;
            } else if name == header::RANGE {
                p.range = true;
            } else if name == header::IF_MATCH
                || name == header::IF_NONE_MATCH
                || name == header::IF_MODIFIED_SINCE
                || name == header::IF_UNMODIFIED_SINCE
            {
                p.preconditions = true;
            }
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_each_header_the_handler_reads() {
        let mut h = HeaderMap::new();
        assert_eq!(Present::scan(&h), Present::default());
        h.insert(header::USER_AGENT, "curl".parse().unwrap());
        h.append(header::HOST, "a".parse().unwrap());
        assert_eq!(Present::scan(&h).hosts, 1);
        h.append(header::HOST, "b".parse().unwrap());
        h.insert(header::ACCEPT_ENCODING, "gzip".parse().unwrap());
        h.insert(header::RANGE, "bytes=0-1".parse().unwrap());
        let p = Present::scan(&h);
        assert_eq!((p.hosts, p.accept_encoding, p.range), (2, true, true));
        assert!(!p.preconditions);
        for name in [
            header::IF_MATCH,
            header::IF_NONE_MATCH,
            header::IF_MODIFIED_SINCE,
            header::IF_UNMODIFIED_SINCE,
        ] {
            let mut h = HeaderMap::new();
            h.insert(name, "x".parse().unwrap());
            assert!(Present::scan(&h).preconditions);
        }
    }
}
