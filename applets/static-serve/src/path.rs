//! Turns a request path into components that are safe to open beneath the root.
//!
//! The path is percent-decoded exactly once, then split on `/`; every check is
//! made on whole components, never on strings. `..` is resolved lexically and
//! may not climb above the root. `%2F` therefore acts as a
//! separator (and `..%2F` is caught as a `..` component), `%252e` stays the
//! literal name `%2e`. The kernel enforces containment a second time
//! (`openat2(RESOLVE_BENEATH)`, see `tree.rs`).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use percent_encoding::{percent_decode, utf8_percent_encode, AsciiSet, CONTROLS};

/// Why a request path was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Rejected {
    /// Malformed or dangerous spelling: 400.
    BadRequest(&'static str),
    /// A dotfile (or `.git`): answered as if absent, 404.
    Hidden,
}

/// A decoded request path: components below the root, none empty, `.`, `..`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestPath {
    /// The components joined by `/` (`.` for the root): one buffer, so a
    /// request costs one allocation here, and the lookup borrows it.
    rel: Vec<u8>,
    /// The request named a directory (`/docs/`) rather than a file (`/docs`).
    pub trailing_slash: bool,
}

impl RequestPath {
    /// Decodes and checks the path part of a request target.
    pub fn parse(raw: &str, hidden_files: bool) -> Result<RequestPath, Rejected> {
        match RequestPath::plain(raw) {
            Some(p) => Ok(p),
            None => RequestPath::parse_any(raw, hidden_files),
        }
    }

    /// The common spelling, checked in one pass: `/` then names of letters,
    /// digits, `-`, `_`, `.` and `~`, none empty or starting with a dot. It
    /// has nothing to decode, resolve or refuse, so it names itself
    /// (`parse_any` gives the same answer, more slowly).
    fn plain(raw: &str) -> Option<RequestPath> {
        let b = raw.as_bytes();
        let mut prev = *b.first().filter(|&&c| c == b'/')?;
        for &c in &b[1..] {
            let ok = match c {
                b'/' | b'.' => prev != b'/',
                c => c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'~'),
            };
            if !ok {
                return None;
            }
            prev = c;
        }
        let trailing_slash = prev == b'/';
        let rel = &b[1..b.len() - usize::from(trailing_slash && b.len() > 1)];
        Some(RequestPath {
            rel: if rel.is_empty() {
                b".".to_vec()
            } else {
                rel.to_vec()
            },
            trailing_slash,
        })
    }

    fn parse_any(raw: &str, hidden_files: bool) -> Result<RequestPath, Rejected> {
        if !raw.starts_with('/') {
            return Err(Rejected::BadRequest("path must start with /"));
        }
        if !well_formed_escapes(raw.as_bytes()) {
            return Err(Rejected::BadRequest("malformed percent escape"));
        }
        // Borrowed unless the path has escapes.
        let decoded: std::borrow::Cow<[u8]> = percent_decode(raw.as_bytes()).into();
        if decoded.contains(&0) {
            return Err(Rejected::BadRequest("NUL byte in path"));
        }
        let mut rel: Vec<u8> = Vec::with_capacity(decoded.len());
        for c in decoded.split(|&b| b == b'/') {
            match c {
                b"" | b"." => continue,
                // Resolved lexically, as a browser would (`/dir/../` is `/`);
                // climbing above the root is a traversal attempt.
                b".." => {
                    if rel.is_empty() {
                        return Err(Rejected::BadRequest("'..' above the root"));
                    }
                    let parent = rel.iter().rposition(|&b| b == b'/').unwrap_or(0);
                    rel.truncate(parent);
                    continue;
                }
                _ => {}
            }
            if c.contains(&b'\\') {
                return Err(Rejected::BadRequest("backslash in path"));
            }
            if c.len() >= 2 && c[0].is_ascii_alphabetic() && c[1] == b':' {
                return Err(Rejected::BadRequest("drive letter in path"));
            }
            if !rel.is_empty() {
                rel.push(b'/');
            }
            rel.extend_from_slice(c);
        }
        // Bad spellings win over hidden names: a traversal attempt is a 400 wherever it sits.
        if rel
            .split(|&b| b == b'/')
            .any(|c| is_hidden_name(c, hidden_files))
        {
            return Err(Rejected::Hidden);
        }
        // A final `.` or `..` names a directory too (`/a/b/.` is `/a/b/`, as URL
        // normalisation has it), so `/file.txt/.` is a 404 like `/file.txt/`.
        let last = decoded.rsplit(|&b| b == b'/').next().unwrap_or_default();
        let trailing_slash = matches!(last, b"" | b"." | b"..");
        if rel.is_empty() {
            rel.push(b'.');
        }
        Ok(RequestPath {
            rel,
            trailing_slash,
        })
    }

    pub fn is_root(&self) -> bool {
        self.rel == b"."
    }

    /// The path relative to the root, `.` for the root itself.
    pub fn relative(&self) -> &Path {
        Path::new(OsStr::from_bytes(&self.rel))
    }

    /// Canonical URL path (`/a/b`, or `/a/b/` with `dir`), percent-encoded. Used for
    /// redirects: it always starts with exactly one `/`, so it can never be read
    /// as a protocol-relative URL (`//evil.com`).
    pub fn url(&self, dir: bool) -> String {
        let mut out = String::from("/");
        if self.is_root() {
            return out;
        }
        for (i, c) in self.rel.split(|&b| b == b'/').enumerate() {
            if i > 0 {
                out.push('/');
            }
            out.push_str(&encode_component(c));
        }
        if dir {
            out.push('/');
        }
        out
    }
}

/// `.git` in any letter case: never served, even with `--hidden-files`.
pub fn is_git_dir(c: &[u8]) -> bool {
    c.eq_ignore_ascii_case(b".git")
}

/// Whether a name below the root is hidden under the dotfile policy.
pub fn is_hidden_name(c: &[u8], hidden_files: bool) -> bool {
    is_git_dir(c) || (c.first() == Some(&b'.') && !hidden_files)
}

/// Whether every component of `rel` (a resolved path below the root) may be served.
pub fn visible(rel: &Path, hidden_files: bool) -> bool {
    rel.components().all(|c| match c {
        std::path::Component::Normal(n) => !is_hidden_name(n.as_bytes(), hidden_files),
        std::path::Component::CurDir => true,
        _ => false,
    })
}

/// Every `%` is followed by two hex digits.
fn well_formed_escapes(b: &[u8]) -> bool {
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            if i + 2 >= b.len() || !(b[i + 1].is_ascii_hexdigit() && b[i + 2].is_ascii_hexdigit()) {
                return false;
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    true
}

/// Characters escaped in one URL path component (RFC 3986 pchar complement,
/// plus `/`, `?`, `#`, `%` that would change the meaning).
const COMPONENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'\\')
    .add(b'^')
    .add(b'|')
    .add(b'[')
    .add(b']')
    .add(b'\'')
    .add(b'(')
    .add(b')');

/// Percent-encodes one path component (bytes that are not UTF-8 are escaped too).
pub fn encode_component(c: &[u8]) -> String {
    match std::str::from_utf8(c) {
        Ok(s) => utf8_percent_encode(s, COMPONENT).to_string(),
        Err(_) => c.iter().map(|b| format!("%{b:02X}")).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_paths_parse_as_the_general_parser_does() {
        for raw in [
            "/",
            "/a",
            "/a/",
            "/a/b.txt",
            "/a.b/c~d-e_f",
            "/A/9/",
            "/x.",
            "/x..",
            "/a/b./c",
        ] {
            let plain = RequestPath::plain(raw).unwrap_or_else(|| panic!("{raw} is plain"));
            for hidden_files in [false, true] {
                assert_eq!(
                    Ok(plain.clone()),
                    RequestPath::parse_any(raw, hidden_files),
                    "{raw}"
                );
            }
        }
        for raw in [
            "", "a", "//", "/a//b", "/.", "/..", "/.git", "/a/.x", "/a/../b", "/%2e", "/a b",
            "/c:", "/a\\b", "/./",
        ] {
            assert_eq!(RequestPath::plain(raw), None, "{raw}");
        }
    }

    fn ok(raw: &str) -> String {
        RequestPath::parse(raw, false)
            .unwrap()
            .relative()
            .display()
            .to_string()
    }

    fn bad(raw: &str) {
        assert!(
            matches!(RequestPath::parse(raw, false), Err(Rejected::BadRequest(_))),
            "{raw} should be rejected"
        );
    }

    #[test]
    fn traversal_spellings_are_rejected() {
        for raw in [
            "/../etc/passwd",
            "/%2e%2e/etc/passwd",
            "/.%2e/x",
            "/..%2f..%2fetc/passwd",
            "/a/b/../../../c",
            "/%5c..%5cetc",
            "/..\\windows\\win.ini",
            "/foo%00.html",
            "/C:/x",
            "/c:%5cx",
            "/x/D:\\foo",
            "/%zz",
            "/%2",
            "relative",
        ] {
            bad(raw);
        }
    }

    #[test]
    fn no_double_decoding_and_slashes_collapse() {
        assert_eq!(ok("/%252e%252e/x"), "%2e%2e/x");
        assert_eq!(ok("/foo%252fbar"), "foo%2fbar");
        assert_eq!(ok("/foo%2fbar"), "foo/bar");
        assert_eq!(ok("//a///b////c/////"), "a/b/c");
        assert_eq!(ok("/assets/index%2ehtml"), "assets/index.html");
        assert_eq!(ok("/"), ".");
        assert_eq!(ok("/./a/./b"), "a/b");
        assert!(RequestPath::parse("/a/", false).unwrap().trailing_slash);
        assert!(!RequestPath::parse("/a", false).unwrap().trailing_slash);
        assert!(RequestPath::parse("/a/.", false).unwrap().trailing_slash);
        assert!(
            RequestPath::parse("/a/b/%2e%2e", false)
                .unwrap()
                .trailing_slash
        );
        assert!(!RequestPath::parse("/a/.b.", true).unwrap().trailing_slash);
    }

    #[test]
    fn dotfiles_are_hidden_and_git_always() {
        assert_eq!(RequestPath::parse("/.env", false), Err(Rejected::Hidden));
        assert_eq!(
            RequestPath::parse("/a/.hidden/b", false),
            Err(Rejected::Hidden)
        );
        assert_eq!(
            RequestPath::parse("/%2egit/config", true),
            Err(Rejected::Hidden)
        );
        assert_eq!(
            RequestPath::parse("/.GIT/config", true),
            Err(Rejected::Hidden)
        );
        assert!(RequestPath::parse("/.env", true).is_ok());
        // A traversal spelling is a 400 even behind a dotfile.
        bad("/.env/../../x");
        // `..` that stays inside the root resolves lexically.
        assert_eq!(ok("/.env/../x"), "x");
        assert_eq!(ok("/dir/../"), ".");
        assert_eq!(ok("//dir///..////a"), "a");
        assert!(RequestPath::parse("/.git/../index.html", false).is_ok());
    }

    #[test]
    fn redirect_urls_never_start_with_two_slashes() {
        let p = RequestPath::parse("//evil.com", false).unwrap();
        assert_eq!(p.url(true), "/evil.com/");
        let p = RequestPath::parse("/a%20b/%3Cx%3E", false).unwrap();
        assert_eq!(p.url(false), "/a%20b/%3Cx%3E");
    }

    #[test]
    fn visibility_of_resolved_paths() {
        assert!(visible(Path::new("a/b.txt"), false));
        assert!(!visible(Path::new("a/.git/config"), true));
        assert!(!visible(Path::new(".env"), false));
        assert!(visible(Path::new(".env"), true));
    }
}
