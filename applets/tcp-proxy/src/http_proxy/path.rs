//! Request paths made canonical before routing, so a route cannot be
//! bypassed by spelling its path another way (`/static/../admin`,
//! `/%61dmin`, and with slashes merged `//admin`; with escaped slashes
//! decoded `/static%2F..%2Fadmin`): Envoy's CVE-2019-9901 and
//! CVE-2021-29492. The levels are Istio's `pathNormalization`, and the
//! upstream gets the path the route was chosen by, as with Envoy. Our
//! default merges slashes (Istio's and Envoy's do not): an app such as
//! nginx reads `//admin` as `/admin`, and routes are often access control.

use http::uri::{PathAndQuery, Uri};

pub use crate::config::PathNormalization;

/// The canonical form of `path` (no query), None when it is already
/// canonical; Err for a path no canonical form exists for (a `%` not
/// followed by two hex digits, or not beginning with `/`).
pub fn normalize(path: &str, how: PathNormalization) -> Result<Option<String>, &'static str> {
    if how == PathNormalization::None {
        return Ok(None);
    }
    let merge = matches!(
        how,
        PathNormalization::MergeSlashes | PathNormalization::DecodeAndMergeSlashes
    );
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err("path does not begin with /");
    }
    // The common case, checked without allocating: nothing to decode, no
    // backslash, no segment beginning with a dot, no empty segment to merge.
    let needs_work = bytes.iter().any(|&b| b == b'%' || b == b'\\')
        || path.contains("/.")
        || (merge && path.contains("//"));
    if !needs_work {
        return Ok(None);
    }
    let mut decoded = decode(bytes, how == PathNormalization::DecodeAndMergeSlashes)?;
    if merge {
        decoded.dedup_by(|a, b| *a == b'/' && *b == b'/');
    }
    // RFC 3986 §5.2.4, segment by segment. A dot segment at the end leaves
    // the path ending in `/` (`/a/b/..` is `/a/`).
    let segments: Vec<&[u8]> = decoded[1..].split(|&b| b == b'/').collect();
    let last = segments.len() - 1;
    let mut out: Vec<&[u8]> = Vec::with_capacity(segments.len());
    for (i, seg) in segments.iter().enumerate() {
        match *seg {
            b"." => {}
            b".." => {
                out.pop();
            }
            s => {
                out.push(s);
                continue;
            }
        }
        if i == last {
            out.push(b"");
        }
    }
    let mut canonical = Vec::with_capacity(decoded.len());
    for seg in &out {
        canonical.push(b'/');
        canonical.extend_from_slice(seg);
    }
    if canonical.is_empty() {
        canonical.push(b'/');
    }
    // UTF-8 went in, split at `/` and given only ASCII from escapes.
    let canonical = String::from_utf8(canonical).map_err(|_| "path is not UTF-8")?;
    Ok((canonical != path).then_some(canonical))
}

/// Percent-decodes the unreserved characters (and `/`, `\` when asked),
/// upper-cases the escapes left, and turns `\` into `/`.
fn decode(bytes: &[u8], slashes: bool) -> Result<Vec<u8>, &'static str> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = |b: u8| (b as char).to_digit(16);
                let (hi, lo) = match (bytes.get(i + 1), bytes.get(i + 2)) {
                    (Some(&h), Some(&l)) => (h, l),
                    _ => return Err("incomplete percent-escape in path"),
                };
                let value = match (hex(hi), hex(lo)) {
                    (Some(h), Some(l)) => (h * 16 + l) as u8,
                    _ => return Err("invalid percent-escape in path"),
                };
                if value.is_ascii_alphanumeric() || b"-._~".contains(&value) {
                    out.push(value);
                } else if slashes && (value == b'/' || value == b'\\') {
                    out.push(b'/');
                } else {
                    out.push(b'%');
                    out.push(hi.to_ascii_uppercase());
                    out.push(lo.to_ascii_uppercase());
                }
                i += 3;
            }
            b'\\' => {
                out.push(b'/');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Ok(out)
}

/// Puts the canonical path into `uri`, keeping its query; Err names what
/// is wrong with the path. CONNECT's authority form and `*` have no path
/// to normalize: the caller leaves them alone.
pub fn normalize_uri(uri: &mut Uri, how: PathNormalization) -> Result<(), &'static str> {
    let Some(canonical) = normalize(uri.path(), how)? else {
        return Ok(());
    };
    let with_query = match uri.query() {
        Some(q) => format!("{canonical}?{q}"),
        None => canonical,
    };
    let mut parts = std::mem::take(uri).into_parts();
    parts.path_and_query =
        Some(PathAndQuery::try_from(with_query).map_err(|_| "path cannot be normalized")?);
    *uri = Uri::from_parts(parts).map_err(|_| "path cannot be normalized")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::PathNormalization::{Base, DecodeAndMergeSlashes, MergeSlashes};
    use super::*;

    fn n(path: &str, how: PathNormalization) -> String {
        normalize(path, how)
            .unwrap()
            .unwrap_or_else(|| path.to_string())
    }

    #[test]
    fn dot_segments_go_as_rfc_3986_says() {
        // RFC 3986 §5.4 and Envoy's path_utility_test cases.
        assert_eq!(n("/static/../admin", Base), "/admin");
        assert_eq!(n("/a/b/c/./../../g", Base), "/a/g");
        assert_eq!(n("/../../x", Base), "/x");
        assert_eq!(n("/a/b/..", Base), "/a/");
        assert_eq!(n("/a/b/.", Base), "/a/b/");
        assert_eq!(n("/..", Base), "/");
        assert_eq!(n("/.", Base), "/");
        assert_eq!(n("/a/..b/c.", Base), "/a/..b/c.");
        assert_eq!(n("/a/...", Base), "/a/...");
    }

    #[test]
    fn escapes_of_unreserved_characters_and_dots_are_decoded() {
        assert_eq!(n("/%61dmin", Base), "/admin");
        assert_eq!(n("/static/%2e%2E/admin", Base), "/admin");
        assert_eq!(n("/a%2fb", Base), "/a%2Fb");
        assert_eq!(n("/a%20b", Base), "/a%20b");
        assert_eq!(n("/a\\..\\admin", Base), "/admin");
        assert!(normalize("/a%2", Base).is_err());
        assert!(normalize("/a%zz", Base).is_err());
        assert!(normalize("*", Base).is_err());
    }

    #[test]
    fn slashes_merge_and_decode_only_when_asked() {
        assert_eq!(n("//admin", Base), "//admin");
        assert_eq!(n("//admin//x/", MergeSlashes), "/admin/x/");
        assert_eq!(n("/a//", MergeSlashes), "/a/");
        assert_eq!(
            n("/static%2F..%2Fadmin", MergeSlashes),
            "/static%2F..%2Fadmin"
        );
        assert_eq!(n("/static%2F..%2Fadmin", DecodeAndMergeSlashes), "/admin");
        assert_eq!(n("/a%5c%2f/b", DecodeAndMergeSlashes), "/a/b");
    }

    #[test]
    fn canonical_paths_are_left_alone() {
        for p in ["/", "/v1/orders/7", "/a/b/", "/x-y_z~"] {
            assert_eq!(normalize(p, Base), Ok(None), "{p}");
            assert_eq!(normalize(p, DecodeAndMergeSlashes), Ok(None), "{p}");
        }
        assert_eq!(normalize("/../x", PathNormalization::None), Ok(None));
    }

    #[test]
    fn the_query_survives() {
        let mut uri: Uri = "/a/../b?x=/../y".parse().unwrap();
        normalize_uri(&mut uri, Base).unwrap();
        assert_eq!(uri, "/b?x=/../y");
        let mut abs: Uri = "http://h:81/a/./b?q".parse().unwrap();
        normalize_uri(&mut abs, Base).unwrap();
        assert_eq!(abs, "http://h:81/a/b?q");
    }
}
