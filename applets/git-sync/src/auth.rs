//! Credentials: http(s) username/password (flags, password files re-read
//! each sync, `--credential`, `--askpass-url`), which [`crate::smarthttp`]
//! offers, and ssh keys with known_hosts checking through libgit2's callbacks.

use std::cell::Cell;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Context as _, Result};
use base64::Engine as _;
use git2::{CertificateCheckStatus, Cred, CredentialType, RemoteCallbacks};
use sidecar_runtime::tls::rustls::RootCertStore;

use crate::config::{Config, Ssh};
use crate::cookies::Jar;

/// A username and password for URLs that match `url`.
#[derive(Clone)]
pub struct UserPass {
    pub url: String,
    pub username: String,
    pub password: String,
}

/// Everything the callbacks of one sync need.
#[derive(Clone)]
pub struct Auth {
    pub userpass: Vec<UserPass>,
    pub ssh: Ssh,
    /// `--cookie-file`, read for this sync.
    cookies: Option<Arc<Jar>>,
    /// Why a callback refused, since libgit2 replaces the callback's
    /// error with a generic one ("invalid or unknown remote ssh hostkey").
    refusal: Arc<Mutex<Option<String>>>,
}

impl Auth {
    /// Reads password files now, so a rotated secret is used by this sync.
    /// `fetched` are credentials obtained for this sync (`--askpass-url`,
    /// a GitHub App token); they come first.
    pub fn load(cfg: &Config, fetched: Vec<UserPass>) -> Result<Auth> {
        let mut userpass = fetched;
        for c in &cfg.credentials {
            let password = if c.password_file.is_empty() {
                c.password.clone()
            } else {
                std::fs::read_to_string(&c.password_file)
                    .with_context(|| format!("can't read password file {}", c.password_file))?
            };
            userpass.push(UserPass {
                url: c.url.clone(),
                username: c.username.clone(),
                password,
            });
        }
        let cookies = match &cfg.cookie_file {
            Some(f) => Some(Arc::new(Jar::load(f)?)),
            None => None,
        };
        Ok(Auth {
            userpass,
            ssh: cfg.ssh.clone(),
            cookies,
            refusal: Arc::default(),
        })
    }

    /// The `Cookie` header's value `--cookie-file` gives requests to `url`.
    pub fn cookie_header(&self, url: &str) -> Option<String> {
        self.cookies.as_ref()?.header_for(url)
    }

    /// Fetch options for `url`: these callbacks.
    pub fn fetch_options(&self, url: &str, cancel: Arc<AtomicBool>) -> git2::FetchOptions<'static> {
        let mut o = git2::FetchOptions::new();
        o.remote_callbacks(self.callbacks(url, cancel));
        o
    }

    /// Turns a libgit2 error into ours, keeping a callback's own reason.
    pub fn explain(&self, e: git2::Error) -> anyhow::Error {
        match self
            .refusal
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            Some(why) => anyhow::anyhow!("{why}"),
            None => anyhow::anyhow!("{}", e.message()),
        }
    }

    /// The credential for `url`: the longest matching path on the same
    /// scheme, host and port.
    pub fn userpass_for(&self, url: &str) -> Option<&UserPass> {
        let want = url::Url::parse(url).ok()?;
        let mut best: Option<(usize, &UserPass)> = None;
        for c in &self.userpass {
            let Ok(have) = url::Url::parse(&c.url) else {
                continue;
            };
            let same_host = have.scheme() == want.scheme()
                && have.host_str() == want.host_str()
                && have.port_or_known_default() == want.port_or_known_default();
            if !same_host {
                continue;
            }
            // git matches by host; a matching path prefix is preferred.
            let path = have.path().trim_end_matches('/').trim_end_matches(".git");
            let score = if want.path().starts_with(path) {
                path.len() + 1
            } else {
                0
            };
            if best.is_none_or(|(b, _)| score > b) {
                best = Some((score, c));
            }
        }
        best.map(|(_, c)| c)
    }

    /// libgit2 callbacks: credentials, host key checks, and cancellation
    /// through the transfer progress callback.
    pub fn callbacks(&self, repo_url: &str, cancel: Arc<AtomicBool>) -> RemoteCallbacks<'static> {
        let mut cb = RemoteCallbacks::new();
        let me = self.clone();
        let repo_url = repo_url.to_string();
        let attempt = Cell::new(0usize);
        cb.credentials(move |url, user_from_url, allowed| {
            let n = attempt.get();
            attempt.set(n + 1);
            if allowed.contains(CredentialType::SSH_KEY) {
                let user = user_from_url.unwrap_or("git");
                let Some(key) = me.ssh.key_files.get(n) else {
                    return Err(git2::Error::from_str(
                        "ssh: no key was accepted (--ssh-key-file)",
                    ));
                };
                return Cred::ssh_key(user, None, key, None);
            }
            if allowed.contains(CredentialType::USERNAME) {
                return Cred::username(user_from_url.unwrap_or("git"));
            }
            if allowed.contains(CredentialType::USER_PASS_PLAINTEXT) {
                // One try: libgit2 asks again after a 401, and the same
                // answer would loop forever.
                if n > 0 {
                    return Err(git2::Error::from_str("authentication failed"));
                }
                if let Some(c) = me.userpass_for(url) {
                    return Cred::userpass_plaintext(&c.username, &c.password);
                }
                return Err(git2::Error::from_str(
                    "authentication required but no credentials configured",
                ));
            }
            Err(git2::Error::from_str("no supported authentication method"))
        });
        let ssh = self.ssh.clone();
        let refusal = self.refusal.clone();
        cb.certificate_check(move |cert, host| {
            let Some(hostkey) = cert.as_hostkey() else {
                // TLS: let libgit2 and OpenSSL verify the chain.
                return Ok(CertificateCheckStatus::CertificatePassthrough);
            };
            if !ssh.known_hosts {
                return Ok(CertificateCheckStatus::CertificateOk);
            }
            let key = hostkey
                .hostkey()
                .ok_or_else(|| git2::Error::from_str("ssh: server sent no host key"))?;
            let port = ssh_port(&repo_url);
            let why = match known_host(&ssh.known_hosts_file, host, port, key) {
                Ok(true) => return Ok(CertificateCheckStatus::CertificateOk),
                Ok(false) => format!(
                    "Host key verification failed: {host} is not in {} with this key",
                    ssh.known_hosts_file.display()
                ),
                Err(e) => format!("Host key verification failed: {e:#}"),
            };
            *refusal.lock().unwrap_or_else(|e| e.into_inner()) = Some(why.clone());
            Err(git2::Error::from_str(&why))
        });
        let c = cancel.clone();
        cb.transfer_progress(move |_| !c.load(Ordering::Relaxed));
        cb.sideband_progress(move |_| !cancel.load(Ordering::Relaxed));
        cb
    }
}

/// The port of an `ssh://` URL (22 otherwise, including scp-like syntax).
fn ssh_port(url: &str) -> u16 {
    url::Url::parse(url)
        .ok()
        .filter(|u| u.scheme() == "ssh")
        .and_then(|u| u.port())
        .unwrap_or(22)
}

/// Whether `file` lists `key` for `host` (`host` or `[host]:port` patterns,
/// `*`/`?` wildcards, `!` negation, and hashed `|1|salt|hash` entries as
/// `ssh-keygen -H` writes them).
pub fn known_host(file: &Path, host: &str, port: u16, key: &[u8]) -> Result<bool> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("can't read --ssh-known-hosts-file {}", file.display()))?;
    let name = if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    };
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split_whitespace();
        let hosts = fields.next().unwrap_or_default();
        if hosts.starts_with('@') {
            // @cert-authority and @revoked need more than a key comparison.
            continue;
        }
        let (Some(_kind), Some(b64)) = (fields.next(), fields.next()) else {
            continue;
        };
        let mut matched = false;
        for pat in hosts.split(',') {
            if pat.starts_with("|1|") {
                matched |= hashed_host_matches(pat, &name);
            } else if let Some(neg) = pat.strip_prefix('!') {
                if glob(neg, &name) {
                    matched = false;
                    break;
                }
            } else if glob(pat, &name) {
                matched = true;
            }
        }
        if matched {
            if let Ok(k) = base64::engine::general_purpose::STANDARD.decode(b64) {
                if k == key {
                    return Ok(true);
                }
            }
        }
    }
    Ok(false)
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

/// `--askpass-url`: a GET (1s, no redirects) answering `username=` and
/// `password=` lines.
pub async fn askpass(url: &str, repo: &str) -> Result<UserPass> {
    let client = sidecar_runtime::tls::http_client_builder(RootCertStore::empty())
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(1))
        .build()?;
    let resp = client.get(url).send().await.map_err(|e| {
        anyhow::anyhow!(
            "askpass {}: {}",
            sidecar_runtime::redact::redact_url(url),
            e.without_url()
        )
    })?;
    let status = resp.status();
    anyhow::ensure!(
        status == reqwest::StatusCode::OK,
        "askpass: status {status} from --askpass-url"
    );
    let body = resp.text().await?;
    let mut username = String::new();
    let mut password = String::new();
    for line in body.lines() {
        if let Some(v) = line.strip_prefix("username=") {
            username = v.to_string();
        } else if let Some(v) = line.strip_prefix("password=") {
            password = v.to_string();
        }
    }
    Ok(UserPass {
        url: repo.to_string(),
        username,
        password,
    })
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
        assert!(known_host(&f, "127.0.0.1", 2222, key).unwrap());
        assert!(known_host(&f, "host.example", 22, key).unwrap());
        assert!(!known_host(&f, "127.0.0.1", 22, key).unwrap());
        assert!(!known_host(&f, "127.0.0.1", 2222, b"other").unwrap());
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
        assert!(known_host(&f, "127.0.0.1", 2222, key).unwrap());
        assert!(!known_host(&f, "127.0.0.1", 22, key).unwrap());
        assert!(!known_host(&f, "127.0.0.2", 2222, key).unwrap());
    }

    #[test]
    fn credential_matching_prefers_longest_path() {
        let a = Auth {
            userpass: vec![
                UserPass {
                    url: "http://h:8/".into(),
                    username: "any".into(),
                    password: String::new(),
                },
                UserPass {
                    url: "http://h:8/sub/repo".into(),
                    username: "sub".into(),
                    password: String::new(),
                },
            ],
            ssh: Ssh {
                key_files: vec![],
                known_hosts: true,
                known_hosts_file: "/x".into(),
            },
            cookies: None,
            refusal: Arc::default(),
        };
        assert_eq!(
            a.userpass_for("http://h:8/sub/repo.git/info/refs")
                .unwrap()
                .username,
            "sub"
        );
        assert_eq!(a.userpass_for("http://h:8/other").unwrap().username, "any");
        assert!(a.userpass_for("http://elsewhere/").is_none());
    }
}
