//! `--ssh-known-hosts-file`, read as OpenSSH reads a known_hosts file:
//! `host` or `[host]:port` patterns, `*`/`?` wildcards, `!` negation, and
//! hashed `|1|salt|hash` entries as `ssh-keygen -H` writes them.
//! `@cert-authority` and `@revoked` lines are skipped (no certificates).

use std::path::Path;

use anyhow::{Context as _, Result};
use base64::Engine as _;

/// The entries of a known_hosts file that name one host on one port.
pub struct Known {
    /// (key type, base64 key) of each matching line.
    entries: Vec<(String, String)>,
}

impl Known {
    /// Reads `file` for `host` on `port`.
    pub fn read(file: &Path, host: &str, port: u16) -> Result<Known> {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("can't read --ssh-known-hosts-file {}", file.display()))?;
        let name = if port == 22 {
            host.to_string()
        } else {
            format!("[{host}]:{port}")
        };
        let mut entries = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut fields = line.split_whitespace();
            let hosts = fields.next().unwrap_or_default();
            if hosts.starts_with('@') {
                continue;
            }
            let (Some(kind), Some(b64)) = (fields.next(), fields.next()) else {
                continue;
            };
            if names(hosts, &name) {
                entries.push((kind.to_string(), b64.to_string()));
            }
        }
        Ok(Known { entries })
    }

    /// Whether `key` (its wire encoding) is listed.
    pub fn lists(&self, key: &[u8]) -> bool {
        let b64 = base64::engine::general_purpose::STANDARD;
        self.entries
            .iter()
            .any(|(_, k)| b64.decode(k).is_ok_and(|k| k == key))
    }

    /// The key types listed (`ssh-ed25519`, …): OpenSSH asks the server for
    /// these first, so a server with several host keys shows the one known
    /// here.
    pub fn key_types(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(t, _)| t.as_str())
    }
}

/// Whether a line's comma-separated patterns name `name`.
fn names(hosts: &str, name: &str) -> bool {
    let mut matched = false;
    for pat in hosts.split(',') {
        if pat.starts_with("|1|") {
            matched |= hashed_host_matches(pat, name);
        } else if let Some(neg) = pat.strip_prefix('!') {
            if glob(neg, name) {
                return false;
            }
        } else if glob(pat, name) {
            matched = true;
        }
    }
    matched
}

/// A hashed known_hosts name: `|1|base64(salt)|base64(HMAC-SHA1(salt, name))`.
fn hashed_host_matches(pat: &str, name: &str) -> bool {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut parts = pat.trim_start_matches("|1|").splitn(2, '|');
    let (Some(salt), Some(hash)) = (parts.next(), parts.next()) else {
        return false;
    };
    let (Ok(salt), Ok(hash)) = (b64.decode(salt), b64.decode(hash)) else {
        return false;
    };
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &salt);
    ring::hmac::verify(&key, name.as_bytes(), &hash).is_ok()
}

/// OpenSSH host patterns: `*` and `?`.
fn glob(pat: &str, s: &str) -> bool {
    fn m(p: &[u8], s: &[u8]) -> bool {
        match (p.first(), s.first()) {
            (None, None) => true,
            (Some(b'*'), _) => m(&p[1..], s) || (!s.is_empty() && m(p, &s[1..])),
            (Some(b'?'), Some(_)) => m(&p[1..], &s[1..]),
            (Some(a), Some(b)) if a.eq_ignore_ascii_case(b) => m(&p[1..], &s[1..]),
            _ => false,
        }
    }
    m(pat.as_bytes(), s.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_hosts_matching() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("kh");
        let key = b"raw-key";
        let b64 = base64::engine::general_purpose::STANDARD.encode(key);
        std::fs::write(
            &f,
            format!("# c\nother ssh-rsa AAAA\n[127.0.0.1]:2222,h*.example ssh-ed25519 {b64}\n"),
        )
        .unwrap();
        let known = |host, port| Known::read(&f, host, port).unwrap();
        assert!(known("127.0.0.1", 2222).lists(key));
        assert!(known("host.example", 22).lists(key));
        assert!(!known("127.0.0.1", 22).lists(key));
        assert!(!known("127.0.0.1", 2222).lists(b"other"));
        assert_eq!(
            known("127.0.0.1", 2222).key_types().collect::<Vec<_>>(),
            ["ssh-ed25519"]
        );
        assert_eq!(known("other.example", 22).key_types().count(), 0);
    }

    #[test]
    fn hashed_known_hosts_entries() {
        // An entry for "[127.0.0.1]:2222" as `ssh-keygen -H` writes it:
        // a salt and the HMAC-SHA1 of the name under it (the integration
        // test syncs through a file hashed by ssh-keygen itself).
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("kh");
        let key = b"raw-key";
        let b64 = base64::engine::general_purpose::STANDARD;
        let salt = b"0123456789abcdefghij";
        let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, salt);
        let mac = ring::hmac::sign(&k, b"[127.0.0.1]:2222");
        std::fs::write(
            &f,
            format!(
                "|1|{}|{} ssh-ed25519 {}\n",
                b64.encode(salt),
                b64.encode(mac.as_ref()),
                b64.encode(key)
            ),
        )
        .unwrap();
        let known = |host, port| Known::read(&f, host, port).unwrap();
        assert!(known("127.0.0.1", 2222).lists(key));
        assert!(!known("127.0.0.1", 22).lists(key));
        assert!(!known("127.0.0.2", 2222).lists(key));
    }
}
