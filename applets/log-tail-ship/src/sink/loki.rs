//! `--sink loki`: the push API in its JSON form
//! (https://grafana.com/docs/loki/latest/reference/loki-http-api/#ingest-logs):
//! `POST /loki/api/v1/push`, `{"streams":[{"stream":{labels},"values":[["<ns>","<line>"],…]}]}`,
//! optionally gzipped, tenant in `X-Scope-OrgID`. Each line is the event's
//! JSON (query it with `| json`). 429/5xx (and 401/403) are retried; 400
//! (out of order, too old, bad labels) and other 4xx go to the dead letter.

use reqwest::header::{HeaderMap, HeaderValue};

use super::{check_url, excerpt, post, retryable, Common};
use crate::batch::Batch;
use crate::config::{expand_env, Args};

pub struct LokiSink {
    common: Common,
    url: String,
    /// `{"streams":[{"stream":{…},"values":[`, serialized once.
    prefix: Vec<u8>,
    headers: HeaderMap,
}

impl LokiSink {
    pub fn new(args: &Args, common: Common) -> anyhow::Result<LokiSink> {
        let raw = args
            .loki_url
            .as_deref()
            .ok_or_else(|| sidecar_runtime::usage!("--sink loki needs --loki-url"))?;
        let mut u = check_url("--loki-url", raw)?;
        if u.path().trim_matches('/').is_empty() {
            u.set_path("/loki/api/v1/push");
        }
        let mut labels = serde_json::Map::new();
        for (k, v) in &args.loki_labels {
            if !valid_label_name(k) {
                return Err(sidecar_runtime::usage!(
                    "--loki-label {k:?}: label names are letters, digits and _, not starting with a digit"
                ));
            }
            labels.insert(k.clone(), serde_json::Value::String(expand_env(v)));
        }
        if labels.is_empty() {
            labels.insert("job".into(), "log-tail-ship".into());
        }
        let mut prefix = b"{\"streams\":[{\"stream\":".to_vec();
        prefix.extend_from_slice(serde_json::Value::Object(labels).to_string().as_bytes());
        prefix.extend_from_slice(b",\"values\":[");
        let mut headers = HeaderMap::new();
        if let Some(t) = &args.loki_tenant {
            let v = HeaderValue::from_str(&expand_env(t)).map_err(|_| {
                sidecar_runtime::usage!("--loki-tenant {t:?}: not a valid header value")
            })?;
            headers.insert("X-Scope-OrgID", v);
        }
        Ok(LokiSink {
            common,
            url: u.to_string(),
            prefix,
            headers,
        })
    }

    fn body(&self, batch: &Batch) -> Vec<u8> {
        let mut b = Vec::with_capacity(batch.body.len() * 5 / 4 + self.prefix.len() + 8);
        b.extend_from_slice(&self.prefix);
        for i in 0..batch.len() {
            if i > 0 {
                b.push(b',');
            }
            b.extend_from_slice(format!("[\"{}\",", batch.times[i]).as_bytes());
            crate::event::write_str(&mut b, batch.doc(i));
            b.push(b']');
        }
        b.extend_from_slice(b"]}]}");
        b
    }

    pub async fn deliver(&mut self, batch: &mut Batch) {
        let (body, encoding) = self.common.encode(self.body(batch));
        let mut backoff = self.common.backoff();
        let redacted = sidecar_runtime::redact::redact_url(&self.url);
        loop {
            match post(
                &self.common,
                &self.url,
                body.clone(),
                encoding,
                "application/json",
                &self.headers,
            )
            .await
            {
                Ok((s, _)) if (200..300).contains(&s) => break,
                Ok((s, resp)) if !retryable(s) => {
                    let reason = format!("HTTP {s}: {}", excerpt(&resp));
                    tracing::error!(url = %redacted, status = s, reason, "loki rejected the push; events go to the dead letter");
                    for i in 0..batch.len() {
                        self.common.dead_letter.reject(
                            &self.common.metrics,
                            batch.doc(i),
                            Some(s),
                            &reason,
                        );
                    }
                    return;
                }
                Ok((s, resp)) => {
                    tracing::warn!(url = %redacted, status = s, body = %excerpt(&resp), "loki push failed; retrying")
                }
                Err(e) => tracing::warn!(url = %redacted, error = %e, "loki unreachable; retrying"),
            }
            self.common.metrics.retries.inc();
            tokio::time::sleep(backoff.next_delay()).await;
        }
        self.common.metrics.events_acked.inc_by(batch.len() as u64);
    }
}

/// Prometheus label name rules, which Loki enforces.
fn valid_label_name(k: &str) -> bool {
    let mut chars = k.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}
