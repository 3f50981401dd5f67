//! `--sink elasticsearch`: the `_bulk` API.
//!
//! Wire format (https://www.elastic.co/guide/en/elasticsearch/reference/current/docs-bulk.html):
//! `POST /_bulk`, `Content-Type: application/x-ndjson`, an action line then
//! the document, each ending in `\n`. The response is 200 even when items
//! fail: `"errors":true` and `items[]` in request order, each
//! `{"<action>":{"status":N,"error":{"type":…,"reason":…}}}`.
//!
//! Per item, as Filebeat does: 2xx is done; 409 on `create` means the
//! document is already there (a resend after a crash) and counts as done;
//! 429 and 5xx items, and only those, are sent again after a backoff; other
//! 4xx items (mapping errors) go to the dead letter with the reason.
//! Whole-request statuses are the shared delivery loop's; a 5xx or a
//! connection error moves to the next `--es-url`.

use std::collections::HashMap;

use base64::Engine;
use chrono::format::{Item, StrftimeItems};
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use serde::Deserialize;

use super::delivery::Protocol;
use super::Common;
use crate::batch::Batch;
use sidecar_runtime::check::http_url as check_url;

use crate::config::{Args, EsAction, EsDocumentId};

/// The parts of a bulk response [`EsSink::accepted`] reads, as Filebeat asks
/// for them: Elasticsearch leaves out the rest of each item (index, id,
/// version, shards, sequence numbers), about four fifths of the response.
const FILTER_PATH: &str = "errors,items.*.error,items.*.status";

pub struct EsSink {
    /// `<base>/_bulk?[pipeline=…&]filter_path=…` per `--es-url`.
    urls: Vec<String>,
    current: usize,
    lines: ActionLines,
    action: EsAction,
    headers: HeaderMap,
}

/// The action line before each document of a `_bulk` body. The reader
/// writes them into the batch as it builds it (a batch is then sent as it
/// is); the sink writes them for the requests it builds itself (retries of
/// some items, halves of a batch refused as too large, batches read back
/// from the disk buffer).
pub struct ActionLines {
    index: IndexName,
    /// Send each event's stable id as `_id`, so a resend is a 409, not a copy.
    ids: bool,
}

impl ActionLines {
    pub fn new(args: &Args) -> anyhow::Result<ActionLines> {
        Ok(ActionLines {
            index: IndexName::new(&args.es_index, args.es_action)?,
            ids: args.es_document_id == EsDocumentId::Offset,
        })
    }

    /// Appends the action line, with its newline, of the event at `time_ns`
    /// whose id is `id`.
    pub fn write(&mut self, out: &mut Vec<u8>, time_ns: i64, id: u128) {
        out.extend_from_slice(self.index.line(time_ns));
        if self.ids {
            out.extend_from_slice(b",\"_id\":\"");
            crate::json::write_hex128(out, id);
            out.push(b'"');
        }
        out.extend_from_slice(b"}}\n");
    }
}

/// The action line for an event, from `--es-index`.
enum IndexName {
    Fixed(Vec<u8>),
    /// A strftime pattern on the event time; the last second's line is cached.
    Pattern {
        pattern: String,
        action: EsAction,
        cached_secs: i64,
        cached: Vec<u8>,
    },
}

impl IndexName {
    fn new(pattern: &str, action: EsAction) -> anyhow::Result<IndexName> {
        if pattern.is_empty() {
            return Err(sidecar_runtime::usage!("--es-index: must not be empty"));
        }
        if !pattern.contains('%') {
            return Ok(IndexName::Fixed(action_line(action, pattern)));
        }
        if StrftimeItems::new(pattern).any(|i| matches!(i, Item::Error)) {
            return Err(sidecar_runtime::usage!(
                "--es-index {pattern:?}: invalid strftime pattern"
            ));
        }
        Ok(IndexName::Pattern {
            pattern: pattern.to_string(),
            action,
            cached_secs: i64::MIN,
            cached: Vec::new(),
        })
    }

    fn line(&mut self, time_ns: i64) -> &[u8] {
        match self {
            IndexName::Fixed(l) => l,
            IndexName::Pattern {
                pattern,
                action,
                cached_secs,
                cached,
            } => {
                let secs = time_ns.div_euclid(1_000_000_000);
                if secs != *cached_secs {
                    let t = chrono::DateTime::from_timestamp(secs, 0).unwrap_or_default();
                    *cached = action_line(*action, &t.format(pattern).to_string());
                    *cached_secs = secs;
                }
                cached
            }
        }
    }
}

/// `{"create":{"_index":"…"` — the action line up to where `_id` goes.
fn action_line(action: EsAction, index: &str) -> Vec<u8> {
    let mut l = format!("{{\"{}\":{{\"_index\":", action.as_str()).into_bytes();
    crate::event::write_str(&mut l, index.as_bytes());
    l
}

#[derive(Deserialize)]
struct BulkErrors {
    #[serde(default)]
    errors: bool,
}

#[derive(Deserialize)]
struct BulkResponse {
    #[serde(default)]
    items: Vec<HashMap<String, BulkItem>>,
}

#[derive(Deserialize)]
struct BulkItem {
    status: u16,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

impl EsSink {
    pub fn new(args: &Args) -> anyhow::Result<EsSink> {
        if args.es_urls.is_empty() {
            return Err(sidecar_runtime::usage!(
                "--sink elasticsearch needs --es-url"
            ));
        }
        let mut urls = Vec::new();
        for raw in &args.es_urls {
            let mut u = check_url("--es-url", raw)?;
            let path = format!("{}/_bulk", u.path().trim_end_matches('/'));
            u.set_path(&path);
            if let Some(p) = &args.es_pipeline {
                u.query_pairs_mut().append_pair("pipeline", p);
            }
            u.query_pairs_mut().append_pair("filter_path", FILTER_PATH);
            urls.push(u.to_string());
        }
        let mut headers = HeaderMap::new();
        if let (Some(user), Some(file)) = (&args.es_user, &args.es_password_file) {
            let pass = read_secret("--es-password-file", file)?;
            let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
            headers.insert(
                AUTHORIZATION,
                sensitive(&format!("Basic {token}"), "--es-user")?,
            );
        }
        if let Some(file) = &args.es_api_key_file {
            let key = read_secret("--es-api-key-file", file)?;
            headers.insert(
                AUTHORIZATION,
                sensitive(&format!("ApiKey {key}"), "--es-api-key-file")?,
            );
        }
        Ok(EsSink {
            urls,
            current: 0,
            lines: ActionLines::new(args)?,
            action: args.es_action,
            headers,
        })
    }
}

impl Protocol for EsSink {
    const NAME: &'static str = "elasticsearch";
    const CONTENT_TYPE: &'static str = "application/x-ndjson";
    const CREDENTIALS: &'static str = "--es-user/--es-api-key-file";

    fn url(&self) -> &str {
        &self.urls[self.current]
    }

    fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    fn body(&mut self, batch: &Batch, events: &[usize]) -> Vec<u8> {
        // Room for every action line (about the first one's length), so
        // the body is never copied to grow.
        let action = events
            .first()
            .map_or(0, |&i| self.lines.index.line(batch.times[i]).len() + 45);
        let docs: usize = events.iter().map(|&i| batch.doc(i).len() + 1).sum();
        let mut body = Vec::with_capacity(docs + events.len() * action);
        for &i in events {
            self.lines.write(&mut body, batch.times[i], batch.ids[i]);
            body.extend_from_slice(batch.doc(i));
            body.push(b'\n');
        }
        body
    }

    /// Applies the bulk response item by item (the request as a whole is a
    /// 200 even when items fail).
    fn accepted(
        &self,
        common: &Common,
        batch: &Batch,
        events: &[usize],
        resp: &[u8],
    ) -> Option<Vec<usize>> {
        let m = &common.metrics;
        if errors_false_up_front(resp) || !serde_json::from_slice::<BulkErrors>(resp).ok()?.errors {
            m.events_acked.inc_by(events.len() as u64);
            return Some(Vec::new());
        }
        let parsed: BulkResponse = serde_json::from_slice(resp).ok()?;
        if parsed.items.len() != events.len() {
            return None;
        }
        let mut retry = Vec::new();
        for (&i, item) in events.iter().zip(parsed.items) {
            let r = item.into_values().next()?;
            match r.status {
                200..=299 => {
                    m.events_acked.inc();
                }
                409 if self.action == EsAction::Create => {
                    m.events_acked.inc();
                    m.events_duplicate.inc();
                }
                s if s == 429 || s >= 500 => retry.push(i),
                s => {
                    let reason = describe(r.error.as_ref());
                    common.dead_letter.reject(m, batch.doc(i), Some(s), &reason);
                }
            }
        }
        Some(retry)
    }

    fn failover(&mut self) {
        if self.urls.len() > 1 {
            self.current = (self.current + 1) % self.urls.len();
            let next = sidecar_runtime::redact::redact_url(&self.urls[self.current]);
            tracing::warn!(url = %next, "switching to the next --es-url");
        }
    }
}

/// Whether the response says `"errors":false` before any other member than
/// `took`, as Elasticsearch writes it (`took`, `errors`, then `items`): then
/// every item succeeded, and the items (a sixth of the request's size, even
/// filtered) need not be walked to learn it. Any other shape is parsed whole.
fn errors_false_up_front(resp: &[u8]) -> bool {
    let Some(mut rest) = resp.trim_ascii_start().strip_prefix(b"{") else {
        return false;
    };
    loop {
        rest = rest.trim_ascii_start();
        if let Some(r) = member(rest, b"\"errors\"") {
            let Some(r) = r.strip_prefix(b"false") else {
                return false;
            };
            return matches!(r.trim_ascii_start().first(), Some(b',' | b'}'));
        }
        let Some(r) = member(rest, b"\"took\"") else {
            return false;
        };
        let digits = r.iter().take_while(|b| b.is_ascii_digit()).count();
        let Some(r) = r[digits..].trim_ascii_start().strip_prefix(b",") else {
            return false;
        };
        if digits == 0 {
            return false;
        }
        rest = r;
    }
}

/// The value after `"key":` if `s` starts with that member.
fn member<'a>(s: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    let r = s.strip_prefix(key)?.trim_ascii_start().strip_prefix(b":")?;
    Some(r.trim_ascii_start())
}

/// `type: reason` from a bulk item's `error`.
fn describe(error: Option<&serde_json::Value>) -> String {
    match error {
        Some(e @ serde_json::Value::Object(_)) => {
            let t = e.get("type").and_then(|v| v.as_str()).unwrap_or("error");
            let r = e.get("reason").and_then(|v| v.as_str()).unwrap_or("");
            format!("{t}: {r}")
        }
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => "rejected without an error description".into(),
    }
}

fn read_secret(flag: &str, path: &std::path::Path) -> anyhow::Result<String> {
    let raw = std::fs::read_to_string(path)
        .map_err(|e| sidecar_runtime::usage!("{flag} {}: {e}", path.display()))?;
    let s = raw.trim().to_string();
    if s.is_empty() {
        return Err(sidecar_runtime::usage!(
            "{flag} {}: file is empty",
            path.display()
        ));
    }
    Ok(s)
}

fn sensitive(value: &str, flag: &str) -> anyhow::Result<HeaderValue> {
    let mut v = HeaderValue::from_str(value)
        .map_err(|_| sidecar_runtime::usage!("{flag}: credentials contain invalid characters"))?;
    v.set_sensitive(true);
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_false_is_read_from_the_front_only_in_elasticsearch_s_shape() {
        for yes in [
            &br#"{"errors":false,"items":[{"create":{"status":201}}]}"#[..],
            br#"{"took":12,"errors":false,"items":[]}"#,
            br#" { "took" : 3 , "errors" : false }"#,
        ] {
            assert!(
                errors_false_up_front(yes),
                "{}",
                String::from_utf8_lossy(yes)
            );
        }
        for no in [
            &br#"{"errors":true,"items":[{"create":{"status":429}}]}"#[..],
            br#"{"items":[],"errors":false}"#,
            br#"{"took":"x","errors":false}"#,
            br#"{"errors":falsehood}"#,
            br#"{"errors":false"#,
            br#"{"error":{"type":"x"},"errors":false}"#,
            b"",
        ] {
            assert!(
                !errors_false_up_front(no),
                "{}",
                String::from_utf8_lossy(no)
            );
        }
    }

    #[test]
    fn index_patterns() {
        let mut fixed = IndexName::new("logs-app-default", EsAction::Create).unwrap();
        assert_eq!(
            fixed.line(0),
            b"{\"create\":{\"_index\":\"logs-app-default\""
        );
        let mut daily = IndexName::new("app-%Y.%m.%d", EsAction::Index).unwrap();
        // 2026-11-26T00:00:00Z
        let t = 1_795_651_200i64 * 1_000_000_000;
        assert_eq!(daily.line(t), b"{\"index\":{\"_index\":\"app-2026.11.26\"");
        assert!(IndexName::new("x-%Q", EsAction::Create).is_err());
    }
}
