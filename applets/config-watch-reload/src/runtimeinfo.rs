//! prometheus-config-reloader's signal-mode confirmation: a SIGHUP says
//! nothing about whether Prometheus accepted the new config, so its
//! `/api/v1/status/runtimeinfo` is read before the signal and polled after
//! it until the reload shows up there (or fails there).

use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use sidecar_runtime::redact::redact_url;

/// prometheus-config-reloader's default `--runtimeinfo-url`.
pub const DEFAULT_URL: &str = "http://127.0.0.1:9090/api/v1/status/runtimeinfo";

const POLL: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct RuntimeInfo {
    pub client: reqwest::Client,
    pub url: String,
    /// Bound on one confirmation (`--reload-timeout`).
    pub timeout: Duration,
}

/// The two fields that tell whether a reload happened and worked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadState {
    pub success: bool,
    pub last_config_time: String,
}

impl RuntimeInfo {
    pub fn new(url: &str, timeout: Duration) -> Result<RuntimeInfo> {
        // The actions' client: same TLS roots and user agent.
        let client = sidecar_runtime::actions::HttpAction::new(url)?.client;
        Ok(RuntimeInfo {
            client,
            url: url.to_string(),
            timeout,
        })
    }

    /// Reads the current reload state; needs a 2xx answer with
    /// `"status": "success"`.
    pub async fn state(&self) -> Result<ReloadState> {
        let url = redact_url(&self.url);
        let resp = self
            .client
            .get(&self.url)
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("GET {url}: {}", e.without_url()))?;
        let status = resp.status();
        if !status.is_success() {
            bail!("GET {url}: status {}", status.as_u16());
        }
        let body: serde_json::Value = resp
            .json()
            .await
            .with_context(|| format!("GET {url}: not JSON"))?;
        parse(&body).with_context(|| format!("GET {url}"))
    }

    /// Polls until Prometheus reports a reload newer than `before`: success
    /// if it worked, an error as soon as it reports failure after a success,
    /// or an error at the timeout.
    pub async fn confirm(&self, before: &ReloadState) -> Result<()> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            tokio::time::sleep(POLL).await;
            match self.state().await {
                Ok(now) if now.success && now.last_config_time != before.last_config_time => {
                    return Ok(())
                }
                Ok(now) if before.success && !now.success => {
                    bail!(
                        "Prometheus reports that reloading the configuration failed (see its log)"
                    )
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(error = %format!("{e:#}"), "runtimeinfo not readable yet")
                }
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "Prometheus did not report a reload within {:?}",
                    self.timeout
                );
            }
        }
    }
}

fn parse(body: &serde_json::Value) -> Result<ReloadState> {
    if body["status"] != "success" {
        bail!("status is {}, not \"success\"", body["status"]);
    }
    let data = &body["data"];
    Ok(ReloadState {
        success: data["reloadConfigSuccess"]
            .as_bool()
            .context("no data.reloadConfigSuccess")?,
        last_config_time: data["lastConfigTime"]
            .as_str()
            .context("no data.lastConfigTime")?
            .to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_prometheus_runtimeinfo() {
        let body = serde_json::json!({"status": "success", "data": {
            "reloadConfigSuccess": true, "lastConfigTime": "2026-01-01T00:00:00.123Z", "goroutineCount": 40}});
        assert_eq!(
            parse(&body).unwrap(),
            ReloadState {
                success: true,
                last_config_time: "2026-01-01T00:00:00.123Z".into()
            }
        );
        assert!(parse(&serde_json::json!({"status": "error"})).is_err());
        assert!(parse(&serde_json::json!({"status": "success", "data": {}})).is_err());
    }
}
