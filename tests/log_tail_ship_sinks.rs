//! log-tail-ship sinks against test doubles that follow the documented wire
//! formats: Elasticsearch `_bulk` (per-item statuses, 409 duplicates, 429
//! rejections, 400 mapping errors, whole-request failures, auth, failover,
//! gzip), Loki push (labels, tenant, gzip, 429 and 400), and plain HTTP.

#[path = "log_tail_ship/common.rs"]
mod common;
mod support;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use common::{metric, EsDouble, LokiDouble, Writer};
use serde_json::Value;
use support::{http, Sidecar};

fn glob(dir: &Path) -> String {
    format!("{}/*.log", dir.display())
}

fn start(args: &[&str]) -> (Sidecar, std::net::SocketAddr) {
    let mut full = vec!["--batch-timeout=20ms", "--retry-max-backoff=200ms"];
    full.extend_from_slice(args);
    let mut sc = Sidecar::start("log-tail-ship", &full);
    let admin = sc.admin_addr();
    (sc, admin)
}

fn dead_letters(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The dead letter file's entries, once there is at least one.
fn wait_dead_letters(path: &Path) -> Vec<Value> {
    support::wait_until("the dead letter", || !dead_letters(path).is_empty());
    dead_letters(path)
}

/// A request header as recorded by a test double.
fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Per item: 2xx done, 409 a duplicate (done), 429 retried alone, 400 to the
/// dead letter with the reason; a whole-request 503 retries the batch. The
/// checkpoint moves past every line once all are settled.
#[test]
fn elasticsearch_bulk_item_semantics() {
    let dir = support::tempdir();
    let log = dir.path().join("app.log");
    let dlq = dir.path().join("dead.ndjson");
    let data = dir.path().join("data");
    let mut w = Writer::append(&log);
    for l in ["ok-1", "bad-1", "dup-1", "busy-1", "ok-2"] {
        w.line(l);
    }
    let es = EsDouble::start();
    es.fail_next(503, r#"{"error":"unavailable"}"#);
    let attempts: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let a = attempts.clone();
    es.set_rule(move |doc| {
        let msg = doc["message"].as_str().unwrap().to_string();
        let mut a = a.lock().unwrap();
        let n = a.entry(msg.clone()).or_insert(0);
        *n += 1;
        match msg.as_str() {
            m if m.starts_with("bad") => 400,
            m if m.starts_with("dup") => 409,
            m if m.starts_with("busy") && *n == 1 => 429,
            _ => 201,
        }
    });
    let (mut sc, admin) = start(&[
        "--path",
        &glob(dir.path()),
        "--sink=elasticsearch",
        "--es-url",
        &es.url(),
        "--dead-letter",
        dlq.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    let st = es.wait("ok and busy lines stored", |s| s.docs.len() == 3);
    let mut stored = es.stored_messages();
    stored.sort();
    assert_eq!(stored, ["busy-1", "ok-1", "ok-2"]);
    // The 503 answered the first request; the next carried all five; the
    // retry carried only the 429 item.
    assert_eq!(
        st.requests.len(),
        2,
        "{:?}",
        st.requests.iter().map(|r| r.len()).collect::<Vec<_>>()
    );
    assert_eq!(st.requests[0].len(), 5);
    assert!(st.requests[0]
        .iter()
        .all(|(op, meta, _)| op == "create" && meta["_index"] == "logs-sidecar-default"));
    assert_eq!(st.requests[1].len(), 1);
    assert_eq!(st.requests[1][0].2["message"], "busy-1");
    assert!(
        st.paths
            .iter()
            .skip(1)
            .all(|p| p == "/_bulk?filter_path=errors%2Citems.*.error%2Citems.*.status"),
        "{:?}",
        st.paths
    );
    assert_eq!(
        header(&st.headers[1], "content-type"),
        Some("application/x-ndjson")
    );

    let dl = wait_dead_letters(&dlq);
    assert_eq!(dl.len(), 1);
    assert_eq!(dl[0]["status"], 400);
    assert!(
        dl[0]["reason"]
            .as_str()
            .unwrap()
            .contains("document_parsing_exception"),
        "{}",
        dl[0]
    );
    assert_eq!(dl[0]["event"]["message"], "bad-1");

    let size = std::fs::metadata(&log).unwrap().len();
    support::wait_until("the checkpoint to cover every line", || {
        std::fs::read(data.join("checkpoints.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .is_some_and(|v| v["files"][0]["offset"] == size)
    });
    let m = support::metrics::scrape(admin);
    assert_eq!(metric(&m, "log_tail_ship_events_dead_lettered_total"), 1.0);
    assert_eq!(metric(&m, "log_tail_ship_events_duplicate_total"), 1.0);
    assert_eq!(metric(&m, "log_tail_ship_events_acked_total"), 4.0);
    sc.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(sc.wait_exit().code(), Some(0));
}

/// 401 is logged and retried, never dropped; credentials come from a file;
/// the first --es-url is down, so the second takes over; bodies are gzipped;
/// the index is a strftime pattern on the event time; the pipeline is a
/// query parameter.
#[test]
fn elasticsearch_auth_failover_gzip_and_index_pattern() {
    let dir = support::tempdir();
    let log = dir.path().join("app.log");
    let pw = dir.path().join("password");
    std::fs::write(&pw, "changeme\n").unwrap();
    Writer::append(&log).line("hello es");
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let es = EsDouble::start();
    es.fail_next(401, r#"{"error":{"type":"security_exception"}}"#);
    let (mut sc, _) = start(&[
        "--path",
        &glob(dir.path()),
        "--sink=elasticsearch",
        "--es-url",
        &dead_url,
        "--es-url",
        &es.url(),
        "--es-user",
        "elastic",
        "--es-password-file",
        pw.to_str().unwrap(),
        "--es-index",
        "app-%Y.%m",
        "--es-pipeline",
        "logs@custom",
        "--compress",
        "gzip",
    ]);
    let st = es.wait("the document", |s| !s.docs.is_empty());
    sc.wait_for_log("refused the credentials");
    let (index, doc) = &st.docs[0];
    assert_eq!(doc["message"], "hello es");
    let ts = doc["@timestamp"].as_str().unwrap();
    assert_eq!(index, &format!("app-{}.{}", &ts[0..4], &ts[5..7]));
    assert_eq!(
        st.paths.last().unwrap(),
        "/_bulk?pipeline=logs%40custom&filter_path=errors%2Citems.*.error%2Citems.*.status"
    );
    let h = st.headers.last().unwrap();
    let get = |name: &str| header(h, name);
    assert_eq!(get("content-encoding"), Some("gzip"));
    // base64("elastic:changeme")
    assert_eq!(get("authorization"), Some("Basic ZWxhc3RpYzpjaGFuZ2VtZQ=="));
    assert!(!sc.stderr().contains("changeme"));
}

/// `--es-action index` with an API key; a 409 on `index` is not a duplicate
/// but a rejection.
#[test]
fn elasticsearch_index_action_and_api_key() {
    let dir = support::tempdir();
    let log = dir.path().join("app.log");
    let key = dir.path().join("api-key");
    std::fs::write(&key, "a2V5OnNlY3JldA==").unwrap();
    let dlq = dir.path().join("dead.ndjson");
    let mut w = Writer::append(&log);
    w.line("conflict");
    w.line("fine");
    let es = EsDouble::start();
    es.set_rule(|d| if d["message"] == "conflict" { 409 } else { 200 });
    let _sc = start(&[
        "--path",
        &glob(dir.path()),
        "--sink=elasticsearch",
        "--es-url",
        &es.url(),
        "--es-action=index",
        "--es-document-id=none",
        "--es-api-key-file",
        key.to_str().unwrap(),
        "--dead-letter",
        dlq.to_str().unwrap(),
    ]);
    let st = es.wait("the document", |s| !s.docs.is_empty());
    assert_eq!(st.requests[0][0].0, "index");
    assert!(
        st.requests[0][0].1.get("_id").is_none(),
        "--es-document-id none"
    );
    assert_eq!(
        header(&st.headers[0], "authorization"),
        Some("ApiKey a2V5OnNlY3JldA==")
    );
    assert_eq!(wait_dead_letters(&dlq)[0]["status"], 409);
}

/// Loki: JSON push with labels ($(VAR) expanded), tenant header and gzip;
/// 429 is retried; a 400 sends the batch to the dead letter.
#[test]
fn loki_push_labels_tenant_gzip_retry_and_dead_letter() {
    let dir = support::tempdir();
    let log = dir.path().join("app.log");
    let dlq = dir.path().join("dead.ndjson");
    let loki = LokiDouble::start();
    loki.fail_next(429);
    Writer::append(&log).line("to loki");
    let mut cmd = std::process::Command::new(support::bin());
    cmd.env("LTS_NS", "shop")
        .arg("log-tail-ship")
        .args([
            "--admin-addr=127.0.0.1:0",
            "--batch-timeout=20ms",
            "--retry-max-backoff=200ms",
        ])
        .args([
            "--path",
            &glob(dir.path()),
            "--sink=loki",
            "--loki-url",
            &loki.http.url(""),
        ])
        .args([
            "--loki-label",
            "job=app",
            "--loki-label",
            "namespace=$(LTS_NS)",
        ])
        .args([
            "--loki-tenant",
            "team-a",
            "--compress=gzip",
            "--dead-letter",
            dlq.to_str().unwrap(),
        ]);
    let _sc = Sidecar::spawn(&mut cmd);
    let st = loki.wait("the entry", |s| !s.entries.is_empty());
    let (labels, ts, line) = &st.entries[0];
    assert_eq!(
        labels,
        &serde_json::json!({"job": "app", "namespace": "shop"})
    );
    assert!(ts.len() >= 19, "nanoseconds: {ts}");
    let ev: Value = serde_json::from_str(line).unwrap();
    assert_eq!(ev["message"], "to loki");
    assert_eq!(st.paths, ["/loki/api/v1/push", "/loki/api/v1/push"]);
    let h = st.headers.last().unwrap();
    let get = |name: &str| header(h, name);
    assert_eq!(get("x-scope-orgid"), Some("team-a"));
    assert_eq!(get("content-encoding"), Some("gzip"));
    assert_eq!(get("content-type"), Some("application/json"));

    loki.fail_next(400);
    Writer::append(&log).line("too old");
    let dl = wait_dead_letters(&dlq);
    assert_eq!(dl[0]["status"], 400);
    assert_eq!(dl[0]["event"]["message"], "too old");
    assert!(dl[0]["reason"].as_str().unwrap().contains("too far behind"));
}

/// Plain HTTP: NDJSON with the configured headers; a 400 is final.
#[test]
fn http_sink_headers_and_rejection() {
    let dir = support::tempdir();
    let log = dir.path().join("app.log");
    let dlq = dir.path().join("dead.ndjson");
    Writer::append(&log).line("one");
    let recv = http::Receiver::start();
    let (_sc, admin) = start(&[
        "--path",
        &glob(dir.path()),
        "--sink=http",
        "--http-url",
        &recv.url("/in"),
        "--http-header",
        "X-Token: abc",
        "--dead-letter",
        dlq.to_str().unwrap(),
    ]);
    let req = recv.next();
    assert_eq!(req.path, "/in");
    assert_eq!(req.header("x-token"), Some("abc"));
    let ev: Value = serde_json::from_slice(req.body.strip_suffix(b"\n").unwrap()).unwrap();
    assert_eq!(ev["message"], "one");
    recv.set_response(|_| (400, "bad".into()));
    Writer::append(&log).line("two");
    assert_eq!(wait_dead_letters(&dlq)[0]["event"]["message"], "two");
    assert_eq!(
        metric(
            &support::metrics::scrape(admin),
            "log_tail_ship_events_dead_lettered_total"
        ),
        1.0
    );
}

/// Each document's `_id` derives from its file and offset: a line sent
/// again (here: a restart without a checkpoint) is a 409 on `create`,
/// counted as a duplicate and acknowledged, and Elasticsearch holds it once.
#[test]
fn elasticsearch_resend_is_a_conflict_not_a_copy() {
    let dir = support::tempdir();
    let log = dir.path().join("app.log");
    let mut w = Writer::append(&log);
    for l in ["one", "two", "three"] {
        w.line(l);
    }
    let es = EsDouble::start();
    let args = [
        "--path",
        &glob(dir.path()),
        "--sink=elasticsearch",
        "--es-url",
        &es.url(),
    ];
    let (mut sc, _) = start(&args);
    let st = es.wait("three documents", |s| s.docs.len() == 3);
    let ids: std::collections::HashSet<&str> = st.requests[0]
        .iter()
        .map(|(_, meta, _)| meta["_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 3);
    assert!(ids
        .iter()
        .all(|id| id.len() == 32 && id.chars().all(|c| c.is_ascii_hexdigit())));
    sc.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(sc.wait_exit().code(), Some(0));

    let (_sc, admin) = start(&args);
    es.wait("the resend", |s| s.requests.len() == 2);
    support::wait_until("three duplicates acknowledged", || {
        support::metrics::sample(
            &support::metrics::scrape(admin),
            "log_tail_ship_events_duplicate_total",
        ) == Some(3.0)
    });
    let st = es.state();
    assert_eq!(st.docs.len(), 3);
    let again: std::collections::HashSet<&str> = st.requests[1]
        .iter()
        .map(|(_, meta, _)| meta["_id"].as_str().unwrap())
        .collect();
    assert_eq!(again, ids);
}

/// A whole-request 413 (over Elasticsearch's `http.max_content_length`) is
/// not a verdict on the events: the batch is split in halves and each half
/// sent in order; only an event refused on its own goes to the dead letter.
#[test]
fn elasticsearch_413_splits_the_batch() {
    let dir = support::tempdir();
    let dlq = dir.path().join("dead.ndjson");
    four_lines(dir.path());
    let es = EsDouble::start();
    // All four: too large; then "a"+"b": too large; then "a" alone: too large.
    for _ in 0..3 {
        es.fail_next(413, r#"{"error":"Request Entity Too Large"}"#);
    }
    let (mut sc, admin) = start(&[
        "--path",
        &glob(dir.path()),
        "--sink=elasticsearch",
        "--es-url",
        &es.url(),
        "--dead-letter",
        dlq.to_str().unwrap(),
    ]);
    let st = es.wait("b, c and d stored", |s| s.docs.len() == 3);
    assert_eq!(es.stored_messages(), ["b", "c", "d"], "in order");
    let sizes: Vec<usize> = st.requests.iter().map(|r| r.len()).collect();
    assert_eq!(sizes, [1, 2], "b alone, then c and d");
    assert_only_a_dead_lettered(&dlq, admin);
    sc.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(sc.wait_exit().code(), Some(0));
}

/// Writes "a" to "d" into one file in `dir` for a single batch.
fn four_lines(dir: &Path) {
    let mut w = Writer::append(&dir.join("app.log"));
    for l in ["a", "b", "c", "d"] {
        w.line(l);
    }
}

/// The message of an event sent as one JSON line.
fn message(line: &str) -> String {
    let ev: Value = serde_json::from_str(line).unwrap();
    ev["message"].as_str().unwrap().to_string()
}

/// After a sink refused "a"+"b"+"c"+"d", "a"+"b" and "a" with 413: "a" alone
/// is dead-lettered and the other three acknowledged.
fn assert_only_a_dead_lettered(dlq: &Path, admin: std::net::SocketAddr) {
    let dl = wait_dead_letters(dlq);
    assert_eq!(dl.len(), 1);
    assert_eq!(dl[0]["status"], 413);
    assert_eq!(dl[0]["event"]["message"], "a");
    // The receiver had the last part before its answer reached the shipper.
    support::wait_until("the last answer to be counted", || {
        metric(
            &support::metrics::scrape(admin),
            "log_tail_ship_events_acked_total",
        ) == 3.0
    });
    assert_eq!(
        metric(
            &support::metrics::scrape(admin),
            "log_tail_ship_events_dead_lettered_total"
        ),
        1.0
    );
}

/// The 413 split is the shared delivery loop's: the http sink halves a
/// request refused as too large, in order, down to one event.
#[test]
fn http_413_splits_the_batch() {
    let dir = support::tempdir();
    let dlq = dir.path().join("dead.ndjson");
    four_lines(dir.path());
    let mut refusals = 3;
    let recv = http::Receiver::with(move |_| {
        if refusals == 0 {
            return (200, String::new());
        }
        refusals -= 1;
        (413, "Request Entity Too Large".into())
    });
    let (_sc, admin) = start(&[
        "--path",
        &glob(dir.path()),
        "--sink=http",
        "--http-url",
        &recv.url("/in"),
        "--dead-letter",
        dlq.to_str().unwrap(),
    ]);
    let parts: Vec<Vec<String>> = (0..5)
        .map(|_| {
            let req = recv.next();
            String::from_utf8(req.body)
                .unwrap()
                .lines()
                .map(message)
                .collect()
        })
        .collect();
    assert_eq!(
        parts,
        [
            vec!["a", "b", "c", "d"],
            vec!["a", "b"],
            vec!["a"],
            vec!["b"],
            vec!["c", "d"],
        ]
    );
    assert_only_a_dead_lettered(&dlq, admin);
}

/// Loki too: a 413 push is split, not dead-lettered whole.
#[test]
fn loki_413_splits_the_batch() {
    let dir = support::tempdir();
    let dlq = dir.path().join("dead.ndjson");
    four_lines(dir.path());
    let loki = LokiDouble::start();
    for _ in 0..3 {
        loki.fail_next(413);
    }
    let (_sc, admin) = start(&[
        "--path",
        &glob(dir.path()),
        "--sink=loki",
        "--loki-url",
        &loki.http.url(""),
        "--dead-letter",
        dlq.to_str().unwrap(),
    ]);
    let st = loki.wait("b, c and d pushed", |s| s.entries.len() == 3);
    let pushed: Vec<String> = st
        .entries
        .iter()
        .map(|(_, _, line)| message(line))
        .collect();
    assert_eq!(pushed, ["b", "c", "d"], "in order");
    assert_eq!(st.paths.len(), 5, "abcd, ab, a refused; then b, then cd");
    assert_only_a_dead_lettered(&dlq, admin);
}
