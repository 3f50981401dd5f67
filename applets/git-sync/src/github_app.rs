//! GitHub App authentication, as upstream does it: a JWT (RS256) signed
//! with the app's private key buys an installation access token from
//! `POST {--github-base-url}/app/installations/{id}/access_tokens`; the
//! token is the HTTPS password (username `-`) and is renewed when it has
//! less than 30 seconds left.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};
use sidecar_runtime::tls::rustls::RootCertStore;

use crate::config::{GithubApp, PrivateKey};

/// Renew this long before the token expires (upstream's margin).
const RENEW_BEFORE: Duration = Duration::from_secs(30);
/// GitHub accepts JWTs that expire at most 10 minutes after they are issued;
/// issuing a minute in the past absorbs clock drift, as GitHub advises.
const JWT_BACKDATE: Duration = Duration::from_secs(60);
const JWT_LIFETIME: Duration = Duration::from_secs(9 * 60);
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

/// The username GitHub ignores for token auth; upstream's choice.
pub const USERNAME: &str = "-";

#[derive(Serialize)]
struct Claims {
    iss: String,
    iat: u64,
    exp: u64,
}

#[derive(Deserialize)]
struct TokenResponse {
    token: String,
    expires_at: String,
}

struct Token {
    secret: String,
    expires_at: SystemTime,
}

/// Keeps an installation token and renews it when needed.
pub struct TokenSource {
    app: GithubApp,
    client: reqwest::Client,
    current: Option<Token>,
}

impl TokenSource {
    pub fn new(app: GithubApp) -> Result<TokenSource> {
        // System roots load at the first HTTPS handshake, as for every
        // other client (runtime::tls::http_client_builder).
        let client = sidecar_runtime::tls::http_client_builder(RootCertStore::empty())
            .timeout(HTTP_TIMEOUT)
            .user_agent(concat!("sidecar-git-sync/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(TokenSource {
            app,
            client,
            current: None,
        })
    }

    /// The token to use now, and whether it was just renewed.
    pub async fn token(&mut self) -> Result<(String, bool)> {
        let fresh = self
            .current
            .as_ref()
            .is_some_and(|t| t.expires_at > SystemTime::now() + RENEW_BEFORE);
        if !fresh {
            self.current = Some(self.exchange().await?);
        }
        let t = self.current.as_ref().expect("just set");
        Ok((t.secret.clone(), !fresh))
    }

    async fn exchange(&self) -> Result<Token> {
        let jwt = sign_jwt(&self.app, SystemTime::now())?;
        let url = format!(
            "{}/app/installations/{}/access_tokens",
            self.app.base_url.trim_end_matches('/'),
            self.app.installation_id
        );
        let resp = self
            .client
            .post(&url)
            .bearer_auth(jwt)
            .header(reqwest::header::ACCEPT, "application/vnd.github+json")
            .header("X-GitHub-Api-Version", "2022-11-28")
            .send()
            .await
            // The error's sources say why (connection refused, a DNS
            // failure, TLS); its own message says only that sending failed.
            .map_err(|e| {
                anyhow::Error::new(e.without_url())
                    .context(format!("GitHub app token request to {url}"))
            })?;
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        anyhow::ensure!(
            status == reqwest::StatusCode::CREATED,
            "GitHub app installation endpoint returned status {}, body: {body:?}",
            status.as_u16()
        );
        let parsed: TokenResponse = serde_json::from_str(&body)
            .context("GitHub app installation endpoint: unexpected answer")?;
        let expires_at = humantime::parse_rfc3339_weak(&parsed.expires_at)
            .or_else(|_| humantime::parse_rfc3339(&parsed.expires_at))
            .with_context(|| {
                format!(
                    "GitHub app installation endpoint: bad expires_at {:?}",
                    parsed.expires_at
                )
            })?;
        tracing::info!(expires_at = %parsed.expires_at, "got a GitHub app installation token");
        Ok(Token {
            secret: parsed.token,
            expires_at,
        })
    }
}

/// The private key's PEM: the variable's value, or the file read now (so a
/// rotated key is used at the next renewal).
fn private_key_pem(key: &PrivateKey) -> Result<Vec<u8>> {
    match key {
        PrivateKey::Inline(pem) => Ok(pem.as_bytes().to_vec()),
        PrivateKey::File(path) => std::fs::read(path).with_context(|| {
            format!(
                "can't read --github-app-private-key-file {}",
                path.display()
            )
        }),
    }
}

/// Checks that the key is an RSA private key in PEM (at startup).
pub fn check_key(key: &PrivateKey) -> Result<()> {
    let pem = private_key_pem(key)?;
    // Parsing alone takes a public key too; signing is what needs the private one.
    let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    jsonwebtoken::EncodingKey::from_rsa_pem(&pem)
        .and_then(|k| jsonwebtoken::encode(&header, &serde_json::json!({}), &k))
        .map(drop)
        .map_err(|e| {
            let what = match key {
                PrivateKey::Inline(_) => "$GITSYNC_GITHUB_APP_PRIVATE_KEY".to_string(),
                PrivateKey::File(p) => format!("--github-app-private-key-file {}", p.display()),
            };
            anyhow::anyhow!("{what}: not an RSA private key in PEM: {e}")
        })
}

/// The app's JWT: RS256, issuer = client ID or application ID.
fn sign_jwt(app: &GithubApp, now: SystemTime) -> Result<String> {
    let pem = private_key_pem(&app.private_key)?;
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(&pem)
        .context("GitHub app private key: not an RSA private key in PEM")?;
    let now = now.duration_since(UNIX_EPOCH)?.as_secs();
    let claims = Claims {
        iss: app.issuer.clone(),
        iat: now - JWT_BACKDATE.as_secs(),
        exp: now + JWT_LIFETIME.as_secs(),
    };
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
        &claims,
        &key,
    )
    .context("cannot sign the GitHub app JWT")
}
