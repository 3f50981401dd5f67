//! Credentials: http(s) username/password (flags, password files re-read
//! each sync, `--credential`, `--askpass-url`), which [`crate::smarthttp`]
//! offers. ssh's keys and known hosts are [`crate::sshproto`]'s.

use std::sync::Arc;

use anyhow::{Context as _, Result};
use sidecar_runtime::tls::rustls::RootCertStore;

use crate::config::Config;
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
    /// `--cookie-file`, read for this sync.
    cookies: Option<Arc<Jar>>,
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
        Ok(Auth { userpass, cookies })
    }

    /// The `Cookie` header's value `--cookie-file` gives requests to `url`.
    pub fn cookie_header(&self, url: &str) -> Option<String> {
        self.cookies.as_ref()?.header_for(url)
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
            cookies: None,
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
