//! Conditional requests (RFC 9110 §13): If-Match, If-Unmodified-Since,
//! If-None-Match, If-Modified-Since, evaluated in the RFC's order, and If-Range.

use std::time::{SystemTime, UNIX_EPOCH};

use http::header::{IF_MATCH, IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE, IF_UNMODIFIED_SINCE};
use http::HeaderMap;

#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Proceed,
    NotModified,
    PreconditionFailed,
}

/// The representation's validators.
pub struct Validators<'a> {
    pub etag: &'a str,
    pub modified: SystemTime,
}

impl Validators<'_> {
    /// Evaluates the preconditions of a GET or HEAD.
    pub fn evaluate(&self, headers: &HeaderMap) -> Outcome {
        // A list may come as several field lines: they are one list (RFC
        // 9110 §5.3), so a tag on the second line counts too.
        if headers.contains_key(IF_MATCH) {
            if !self.matches_any_line(headers, IF_MATCH, true) {
                return Outcome::PreconditionFailed;
            }
        } else if let Some(date) = header(headers, IF_UNMODIFIED_SINCE).and_then(parse_date) {
            if secs(self.modified) > date {
                return Outcome::PreconditionFailed;
            }
        }
        if headers.contains_key(IF_NONE_MATCH) {
            if self.matches_any_line(headers, IF_NONE_MATCH, false) {
                return Outcome::NotModified;
            }
        } else if let Some(date) = header(headers, IF_MODIFIED_SINCE).and_then(parse_date) {
            if secs(self.modified) <= date {
                return Outcome::NotModified;
            }
        }
        Outcome::Proceed
    }

    /// Whether a `Range` may be honoured: no `If-Range`, or one that still
    /// names this representation (a strong ETag, or exactly its Last-Modified).
    pub fn range_allowed(&self, headers: &HeaderMap) -> bool {
        let Some(v) = header(headers, IF_RANGE) else {
            return true;
        };
        let v = v.trim();
        if v.starts_with('"') {
            return v == self.etag;
        }
        if v.starts_with("W/") {
            return false;
        }
        parse_date(v) == Some(secs(self.modified))
    }

    fn matches_any_line(&self, headers: &HeaderMap, name: http::HeaderName, strong: bool) -> bool {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| self.matches_any(v, strong))
    }

    /// `*` or any listed tag; `strong` comparison refuses weak tags (RFC 9110 §8.8.3.2).
    fn matches_any(&self, list: &str, strong: bool) -> bool {
        list.split(',').map(str::trim).any(|t| {
            if t == "*" {
                return true;
            }
            match t.strip_prefix("W/") {
                Some(weak) => !strong && weak == self.etag,
                None => t == self.etag,
            }
        })
    }
}

fn header(headers: &HeaderMap, name: http::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn parse_date(s: &str) -> Option<u64> {
    httpdate::parse_http_date(s.trim()).ok().map(secs)
}

/// HTTP dates have one-second resolution.
fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn v() -> Validators<'static> {
        Validators {
            etag: "\"abc\"",
            modified: UNIX_EPOCH + Duration::from_millis(1_000_000_500),
        }
    }

    fn h(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, val) in pairs {
            m.insert(*k, val.parse().unwrap());
        }
        m
    }

    /// Last-Modified of `v()`, and a day earlier.
    const AT: &str = "Mon, 12 Jan 1970 13:46:40 GMT";
    const EARLIER: &str = "Sun, 11 Jan 1970 13:46:40 GMT";

    #[test]
    fn rfc_order() {
        use Outcome::*;
        let cases: &[(&[(&str, &str)], Outcome)] = &[
            (&[], Proceed),
            (&[("if-none-match", "*")], NotModified),
            (&[("if-none-match", "\"x\", W/\"abc\"")], NotModified),
            (&[("if-none-match", "\"x\"")], Proceed),
            (&[("if-match", "W/\"abc\"")], PreconditionFailed),
            (&[("if-match", "\"abc\"")], Proceed),
            (&[("if-modified-since", AT)], NotModified),
            (&[("if-modified-since", EARLIER)], Proceed),
            (&[("if-unmodified-since", EARLIER)], PreconditionFailed),
            // If-None-Match wins over If-Modified-Since.
            (
                &[("if-none-match", "\"x\""), ("if-modified-since", AT)],
                Proceed,
            ),
        ];
        for (headers, want) in cases {
            assert_eq!(v().evaluate(&h(headers)), *want, "{headers:?}");
        }
    }

    #[test]
    fn if_range() {
        assert!(v().range_allowed(&h(&[])));
        assert!(v().range_allowed(&h(&[("if-range", "\"abc\"")])));
        assert!(!v().range_allowed(&h(&[("if-range", "W/\"abc\"")])));
        assert!(v().range_allowed(&h(&[("if-range", AT)])));
        assert!(!v().range_allowed(&h(&[("if-range", EARLIER)])));
    }

    #[test]
    fn a_tag_list_split_over_field_lines_is_one_list() {
        let mut headers = HeaderMap::new();
        headers.append(IF_NONE_MATCH, "\"other\"".parse().unwrap());
        headers.append(IF_NONE_MATCH, "\"abc\"".parse().unwrap());
        assert!(matches!(v().evaluate(&headers), Outcome::NotModified));
        let mut headers = HeaderMap::new();
        headers.append(IF_MATCH, "\"other\"".parse().unwrap());
        headers.append(IF_MATCH, "\"abc\"".parse().unwrap());
        assert!(matches!(v().evaluate(&headers), Outcome::Proceed));
    }
}
