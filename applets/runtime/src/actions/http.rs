use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};

use super::Trigger;
use crate::redact::redact_url;

/// Which response statuses count as success.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatusMatch {
    /// Any of these codes.
    Codes(Vec<u16>),
    /// Do not wait for the response at all (git-sync's success status 0).
    FireAndForget,
}

#[derive(Debug, Clone)]
pub struct HttpAction {
    pub client: reqwest::Client,
    pub method: reqwest::Method,
    pub url: String,
    pub headers: Vec<(String, String)>,
    /// Read at every request, so a rotated token is picked up.
    pub bearer_token_file: Option<PathBuf>,
    pub accept: StatusMatch,
    pub timeout: Duration,
}

impl HttpAction {
    pub fn new(url: &str) -> Result<Self> {
        reqwest::Url::parse(url).with_context(|| format!("invalid URL {:?}", redact_url(url)))?;
        Ok(HttpAction {
            client: default_client()?,
            method: reqwest::Method::POST,
            url: url.to_string(),
            headers: Vec::new(),
            bearer_token_file: None,
            accept: StatusMatch::Codes(vec![200]),
            timeout: Duration::from_secs(10),
        })
    }

    pub fn describe(&self) -> String {
        format!("{} {}", self.method, redact_url(&self.url))
    }

    pub async fn run(&self, trigger: &Trigger) -> Result<()> {
        let mut req = self
            .client
            .request(self.method.clone(), &self.url)
            .timeout(self.timeout);
        for (k, v) in self.headers.iter().chain(&trigger.headers) {
            req = req.header(k, v);
        }
        if let Some(path) = &self.bearer_token_file {
            let token = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read bearer token file {}", path.display()))?;
            req = req.bearer_auth(token.trim());
        }
        let url = redact_url(&self.url);
        let codes = match &self.accept {
            StatusMatch::FireAndForget => {
                tokio::spawn(async move {
                    if let Err(e) = req.send().await {
                        tracing::debug!(url, error = %without_url(&e), "fire-and-forget request failed");
                    }
                });
                return Ok(());
            }
            StatusMatch::Codes(c) => c,
        };
        let resp = req
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("{} {url}: {}", self.method, without_url(&e)))?;
        let status = resp.status().as_u16();
        if codes.contains(&status) {
            return Ok(());
        }
        let body = resp.text().await.unwrap_or_default();
        let body: String = body.chars().take(200).collect();
        bail!(
            "{} {url}: status {status} (want {}): {}",
            self.method,
            codes
                .iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
                .join(","),
            body.trim()
        )
    }
}

/// reqwest errors print the URL, password included; keep only the cause.
fn without_url(e: &reqwest::Error) -> String {
    let mut msg = if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "connection failed".to_string()
    } else {
        "request failed".to_string()
    };
    for cause in crate::error::causes(e) {
        msg.push_str(": ");
        msg.push_str(&cause.to_string());
    }
    msg
}

/// The HTTP client actions share: TLS from the system (or `SSL_CERT_FILE`),
/// read at the first HTTPS request.
pub fn default_client() -> Result<reqwest::Client> {
    crate::tls::http_client_builder(rustls::RootCertStore::empty())
        .user_agent(concat!("sidecar/", env!("CARGO_PKG_VERSION")))
        .pool_max_idle_per_host(1)
        .build()
        .context("cannot build HTTP client")
}
