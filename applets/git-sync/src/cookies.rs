//! `--cookie-file`: git's `http.cookiefile` (curl's Netscape cookie file,
//! read-only), as a `Cookie:` header on the HTTP(S) requests of a fetch.
//! The file is read before each sync, so a rotated Secret is picked up.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result};

struct Cookie {
    domain: String,
    subdomains: bool,
    path: String,
    secure: bool,
    expires: u64,
    name: String,
    value: String,
}

/// The cookies of a Netscape cookie file.
pub struct Jar(Vec<Cookie>);

impl Jar {
    pub fn load(path: &Path) -> Result<Jar> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("can't read git cookiefile {}", path.display()))?;
        Ok(Jar(text.lines().filter_map(parse_line).collect()))
    }

    /// The `Cookie` header's value for a request to `url`, if any cookie matches:
    /// domain (exact, or a subdomain when the flag allows), path prefix,
    /// `https` (or the local host) for secure cookies, not expired (0 = session cookie).
    pub fn header_for(&self, url: &str) -> Option<String> {
        let u = url::Url::parse(url).ok()?;
        if !matches!(u.scheme(), "http" | "https") {
            return None;
        }
        let host = u.host_str()?.to_ascii_lowercase();
        // curl (7.79+) counts plain HTTP to the local host as secure, as
        // browsers do: git-sync's own tests and local mirrors rely on it.
        let secure = u.scheme() == "https"
            || matches!(host.as_str(), "localhost" | "127.0.0.1" | "[::1]")
            || host.ends_with(".localhost");
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let pairs: Vec<String> = self
            .0
            .iter()
            .filter(|c| {
                let domain = c.domain.trim_start_matches('.');
                let host_ok =
                    host == domain || (c.subdomains && host.ends_with(&format!(".{domain}")));
                host_ok
                    && u.path().starts_with(&c.path)
                    && (!c.secure || secure)
                    && (c.expires == 0 || c.expires > now)
            })
            .map(|c| format!("{}={}", c.name, c.value))
            .collect();
        (!pairs.is_empty()).then(|| pairs.join("; "))
    }
}

/// `domain TAB subdomains TAB path TAB secure TAB expires TAB name TAB value`;
/// `#HttpOnly_` prefixes the domain of HttpOnly cookies, other `#` lines are
/// comments.
fn parse_line(line: &str) -> Option<Cookie> {
    let line = line.strip_prefix("#HttpOnly_").unwrap_or(line);
    if line.starts_with('#') || line.trim().is_empty() {
        return None;
    }
    let f: Vec<&str> = line.split('\t').collect();
    let [domain, subdomains, path, secure, expires, name, value] = f[..] else {
        return None;
    };
    Some(Cookie {
        domain: domain.to_ascii_lowercase(),
        subdomains: subdomains.eq_ignore_ascii_case("TRUE"),
        path: path.to_string(),
        secure: secure.eq_ignore_ascii_case("TRUE"),
        expires: expires.parse().unwrap_or(0),
        name: name.to_string(),
        value: value.trim_end_matches('\r').to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_like_curl() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("cookies");
        std::fs::write(
            &f,
            "# Netscape HTTP Cookie File\n\
             .example.com\tTRUE\t/\tFALSE\t0\to\tall\n\
             #HttpOnly_git.example.com\tFALSE\t/repo\tTRUE\t0\ts\tsecret\n\
             other.org\tFALSE\t/\tFALSE\t1\told\tgone\n",
        )
        .unwrap();
        let jar = Jar::load(&f).unwrap();
        assert_eq!(
            jar.header_for("https://git.example.com/repo.git/info/refs")
                .as_deref(),
            Some("o=all; s=secret")
        );
        assert_eq!(
            jar.header_for("http://git.example.com/repo").as_deref(),
            Some("o=all")
        );
        assert_eq!(jar.header_for("https://other.org/x"), None);
        let local = dir.path().join("local");
        std::fs::write(&local, "127.0.0.1\tFALSE\t/\tTRUE\t0\ts\tsecret\n").unwrap();
        let jar_local = Jar::load(&local).unwrap();
        assert_eq!(
            jar_local
                .header_for("http://127.0.0.1:8080/repo")
                .as_deref(),
            Some("s=secret")
        );
        assert_eq!(jar.header_for("ssh://git.example.com/repo"), None);
    }
}
