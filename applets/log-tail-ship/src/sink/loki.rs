//! `--sink loki`: the push API in its JSON form
//! (https://grafana.com/docs/loki/latest/reference/loki-http-api/#ingest-logs):
//! `POST /loki/api/v1/push`, `{"streams":[{"stream":{labels},"values":[["<ns>","<line>"],…]}]}`,
//! optionally gzipped, tenant in `X-Scope-OrgID`. Each line is the event's
//! JSON (query it with `| json`). Statuses are handled by the shared
//! delivery loop: a 400 (out of order, too old, bad labels) dead-letters the
//! events without a retry, as Fluent Bit and Vector do, since Loki has kept
//! the other entries of the push and a resend would duplicate them.

use reqwest::header::{HeaderMap, HeaderValue};

use super::delivery::Protocol;
use crate::batch::Batch;
use crate::config::{expand_env, Args};
use sidecar_runtime::check::http_url as check_url;

pub struct LokiSink {
    url: String,
    /// `{"streams":[{"stream":{…},"values":[`, serialized once.
    prefix: Vec<u8>,
    headers: HeaderMap,
}

impl LokiSink {
    pub fn new(args: &Args) -> anyhow::Result<LokiSink> {
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
            url: u.to_string(),
            prefix,
            headers,
        })
    }
}

impl Protocol for LokiSink {
    const NAME: &'static str = "loki";
    const CONTENT_TYPE: &'static str = "application/json";
    const CREDENTIALS: &'static str = "--loki-tenant";

    fn url(&self) -> &str {
        &self.url
    }

    fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    fn body(&mut self, batch: &Batch, events: &[usize]) -> Vec<u8> {
        let docs: usize = events.iter().map(|&i| batch.doc(i).len()).sum();
        let mut b = Vec::with_capacity(docs * 5 / 4 + events.len() * 24 + self.prefix.len() + 8);
        b.extend_from_slice(&self.prefix);
        for (n, &i) in events.iter().enumerate() {
            if n > 0 {
                b.push(b',');
            }
            b.extend_from_slice(b"[\"");
            b.extend_from_slice(itoa::Buffer::new().format(batch.times[i]).as_bytes());
            b.extend_from_slice(b"\",");
            crate::event::write_str(&mut b, batch.doc(i));
            b.push(b']');
        }
        b.extend_from_slice(b"]}]}");
        b
    }
}

/// Prometheus label name rules, which Loki enforces.
fn valid_label_name(k: &str) -> bool {
    let mut chars = k.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}
