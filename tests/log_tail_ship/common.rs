//! Helpers for the log-tail-ship tests: the applet with its stdout collected
//! as events, a line writer, and test doubles for Elasticsearch `_bulk` and
//! the Loki push API built on the harness's real HTTP receiver.
#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use serde_json::{json, Value};

use crate::support::{self, http, Sidecar, DEADLINE};

type Shared<T> = Arc<(Mutex<T>, Condvar)>;

/// `sidecar log-tail-ship ARGS… --sink stdout` with stdout parsed as events.
pub struct Ship {
    pub sc: Sidecar,
    pub admin: std::net::SocketAddr,
    events: Shared<Vec<Value>>,
}

impl Ship {
    pub fn start(args: &[&str]) -> Ship {
        Self::start_env(args, &[])
    }

    pub fn start_env(args: &[&str], env: &[(&str, &str)]) -> Ship {
        let mut cmd = Command::new(support::bin());
        cmd.envs(env.iter().copied());
        cmd.arg("log-tail-ship")
            .args(args)
            .args([
                "--sink=stdout",
                "--batch-timeout=20ms",
                "--admin-addr=127.0.0.1:0",
            ])
            .stdout(Stdio::piped());
        let mut sc = Sidecar::spawn(&mut cmd);
        let admin = sc.admin_addr();
        let out = sc.child.stdout.take().unwrap();
        let events: Shared<Vec<Value>> = Arc::default();
        let e = events.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                let v: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|err| panic!("bad NDJSON {line:?}: {err}"));
                e.0.lock().unwrap().push(v);
                e.1.notify_all();
            }
        });
        Ship { sc, admin, events }
    }

    /// Waits until an event satisfies `pred`; returns all events so far.
    pub fn wait_for(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
        wait_shared(
            &self.events,
            what,
            |evs| evs.iter().any(&pred),
            || self.sc.stderr(),
        )
    }

    /// Waits for an event whose message is `msg`.
    pub fn wait_message(&self, msg: &str) -> Vec<Value> {
        self.wait_for(&format!("message {msg:?}"), |e| e["message"] == msg)
    }

    /// Waits until every one of `expected` arrived. Lines of a rotated file
    /// can arrive after lines of its successor, so waiting for the last line
    /// written is not enough.
    pub fn wait_messages(&self, expected: &[String]) {
        let want: std::collections::HashSet<&str> = expected.iter().map(String::as_str).collect();
        wait_shared(
            &self.events,
            &format!("all {} lines", want.len()),
            |evs| {
                let got: std::collections::HashSet<&str> =
                    evs.iter().filter_map(|e| e["message"].as_str()).collect();
                want.is_subset(&got)
            },
            || self.sc.stderr(),
        );
    }

    pub fn messages(&self) -> Vec<String> {
        messages(&self.events.0.lock().unwrap())
    }

    /// The messages sorted: files are read concurrently, so only each
    /// file's own order is defined.
    pub fn sorted_messages(&self) -> Vec<String> {
        let mut got = self.messages();
        got.sort();
        got
    }

    pub fn events(&self) -> Vec<Value> {
        self.events.0.lock().unwrap().clone()
    }

    /// SIGTERM, then the exit code.
    pub fn stop(mut self) -> Option<i32> {
        self.sc.signal(nix::sys::signal::Signal::SIGTERM);
        self.sc.wait_exit().code()
    }

    pub fn metrics(&self) -> String {
        crate::support::metrics::scrape(self.admin)
    }
}

/// The events of an NDJSON request body (the http sink's), one per line.
pub fn ndjson(body: &[u8]) -> Vec<Value> {
    std::str::from_utf8(body)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

pub fn messages(evs: &[Value]) -> Vec<String> {
    evs.iter()
        .map(|e| e["message"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn wait_shared<T>(
    s: &Shared<T>,
    what: &str,
    done: impl Fn(&T) -> bool,
    context: impl Fn() -> String,
) -> T
where
    T: Clone,
{
    let deadline = Instant::now() + DEADLINE;
    let mut g = s.0.lock().unwrap();
    loop {
        if done(&g) {
            return g.clone();
        }
        let now = Instant::now();
        if now >= deadline {
            drop(g);
            panic!("timed out waiting for {what}; stderr:\n{}", context());
        }
        g = s.1.wait_timeout(g, deadline - now).unwrap().0;
    }
}

/// Appends lines the way an application does: one write per line.
pub struct Writer {
    file: File,
}

impl Writer {
    /// O_APPEND, as well-behaved loggers open their files.
    pub fn append(path: &Path) -> Writer {
        Writer {
            file: OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .unwrap(),
        }
    }

    /// Without O_APPEND: after a copytruncate this writer keeps writing at
    /// its old offset and leaves a run of NUL bytes before its next line.
    pub fn at_offset(path: &Path) -> Writer {
        let mut file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(path)
            .unwrap();
        use std::io::Seek;
        file.seek(std::io::SeekFrom::End(0)).unwrap();
        Writer { file }
    }

    pub fn line(&mut self, s: &str) {
        self.file.write_all(format!("{s}\n").as_bytes()).unwrap();
    }

    pub fn raw(&mut self, s: &str) {
        self.file.write_all(s.as_bytes()).unwrap();
    }
}

/// The real logrotate with its own state file, forced to rotate now,
/// keeping 5 rotated files.
pub fn logrotate(dir: &Path, log: &Path, directives: &str) {
    logrotate_keep(dir, log, directives, 5)
}

/// [`logrotate`] keeping `keep` rotated files: the oldest is deleted.
pub fn logrotate_keep(dir: &Path, log: &Path, directives: &str, keep: u32) {
    let conf = dir.join("logrotate.conf");
    std::fs::write(
        &conf,
        format!(
            "{} {{\n{directives}\nrotate {keep}\nmissingok\n}}\n",
            log.display()
        ),
    )
    .unwrap();
    let out = support::run_cmd(
        Command::new("logrotate")
            .arg("-f")
            .arg("-s")
            .arg(dir.join("logrotate.state"))
            .arg(&conf),
    );
    assert!(
        out.status.success(),
        "logrotate: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Decompresses a gzip request body with the real gzip tool.
pub fn gunzip(body: &[u8]) -> Vec<u8> {
    let mut child = Command::new("gzip")
        .arg("-dc")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("gzip is installed (.ci/packages.d/log-tail-ship)");
    let mut stdin = child.stdin.take().unwrap();
    let body = body.to_vec();
    let feeder = std::thread::spawn(move || stdin.write_all(&body));
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap().unwrap();
    assert!(out.status.success(), "request body is not gzip");
    out.stdout
}

fn request_body(req: &http::Request) -> Vec<u8> {
    match req.header("content-encoding") {
        Some("gzip") => gunzip(&req.body),
        Some(other) => panic!("unexpected content-encoding {other}"),
        None => req.body.clone(),
    }
}

/// What the Elasticsearch double answers for one bulk item.
pub type ItemRule = Box<dyn FnMut(&Value) -> u16 + Send>;

#[derive(Default, Clone)]
pub struct EsState {
    /// Documents stored, with the index they went to.
    pub docs: Vec<(String, Value)>,
    /// Every bulk request: (action, action metadata, document) per item.
    pub requests: Vec<Vec<(String, Value, Value)>>,
    pub headers: Vec<Vec<(String, String)>>,
    pub paths: Vec<String>,
}

struct EsInner {
    state: EsState,
    /// `_id`s stored: a `create` with one of them is a 409 conflict.
    ids: std::collections::HashSet<String>,
    /// Whole-request answers for the next requests, before item handling.
    whole: VecDeque<(u16, String)>,
    rule: ItemRule,
}

/// An Elasticsearch `_bulk` endpoint following the documented request and
/// response format:
/// https://www.elastic.co/guide/en/elasticsearch/reference/current/docs-bulk.html
/// (NDJSON action/document pairs in; HTTP 200 with `errors` and per-item
/// `status`/`error` in request order out). Items fail on demand through a
/// rule; whole requests fail on demand through a queue.
pub struct EsDouble {
    pub http: http::Receiver,
    inner: Arc<(Mutex<EsInner>, Condvar)>,
}

impl EsDouble {
    pub fn start() -> EsDouble {
        let inner = Arc::new((
            Mutex::new(EsInner {
                state: EsState::default(),
                ids: Default::default(),
                whole: VecDeque::new(),
                rule: Box::new(|_| 201),
            }),
            Condvar::new(),
        ));
        let i = inner.clone();
        let http = http::Receiver::with(move |req| {
            let mut g = i.0.lock().unwrap();
            let r = bulk(&mut g, req);
            i.1.notify_all();
            r
        });
        EsDouble { http, inner }
    }

    pub fn url(&self) -> String {
        self.http.url("")
    }

    pub fn fail_next(&self, status: u16, body: &str) {
        self.inner
            .0
            .lock()
            .unwrap()
            .whole
            .push_back((status, body.to_string()));
    }

    pub fn set_rule(&self, rule: impl FnMut(&Value) -> u16 + Send + 'static) {
        self.inner.0.lock().unwrap().rule = Box::new(rule);
    }

    pub fn state(&self) -> EsState {
        self.inner.0.lock().unwrap().state.clone()
    }

    /// Waits until `done` holds for the state.
    pub fn wait(&self, what: &str, done: impl Fn(&EsState) -> bool) -> EsState {
        let deadline = Instant::now() + DEADLINE;
        let mut g = self.inner.0.lock().unwrap();
        loop {
            if done(&g.state) {
                return g.state.clone();
            }
            let now = Instant::now();
            assert!(now < deadline, "timed out waiting for {what}");
            g = self.inner.1.wait_timeout(g, deadline - now).unwrap().0;
        }
    }

    pub fn stored_messages(&self) -> Vec<String> {
        self.state()
            .docs
            .iter()
            .map(|(_, d)| d["message"].as_str().unwrap_or_default().to_string())
            .collect()
    }
}

fn bulk(g: &mut EsInner, req: &http::Request) -> (u16, String) {
    g.state.paths.push(req.path.clone());
    g.state.headers.push(req.headers.clone());
    if let Some((s, body)) = g.whole.pop_front() {
        return (s, body);
    }
    if req.method != "POST" || !req.path.split('?').next().unwrap().ends_with("/_bulk") {
        return (404, json!({"error": "no handler"}).to_string());
    }
    let body = request_body(req);
    let text = String::from_utf8(body).expect("bulk body is UTF-8");
    assert!(text.ends_with('\n'), "bulk body must end with a newline");
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines.len().is_multiple_of(2),
        "bulk body must be action/document pairs"
    );
    let mut items = Vec::new();
    let mut errors = false;
    let mut seen = Vec::new();
    for pair in lines.chunks(2) {
        let action: Value = serde_json::from_str(pair[0]).expect("action line is JSON");
        let doc: Value = serde_json::from_str(pair[1]).expect("document line is JSON");
        let (op, meta) = action.as_object().unwrap().iter().next().unwrap();
        let index = meta["_index"].as_str().unwrap_or_default().to_string();
        seen.push((op.clone(), meta.clone(), doc.clone()));
        let mut status = (g.rule)(&doc);
        let id = meta["_id"].as_str().map(str::to_string);
        if let Some(id) = &id {
            if (200..300).contains(&status) {
                if op == "create" && g.ids.contains(id) {
                    status = 409;
                } else {
                    g.ids.insert(id.clone());
                }
            }
        }
        let mut item = json!({"_index": index, "status": status});
        match status {
            200..=299 => {
                item["result"] = json!("created");
                g.state.docs.push((index, doc));
            }
            409 => {
                item["error"] = json!({"type": "version_conflict_engine_exception", "reason": "[1]: version conflict, document already exists"})
            }
            429 => {
                item["error"] = json!({"type": "es_rejected_execution_exception", "reason": "rejected execution of coordinating operation"})
            }
            400 => {
                item["error"] = json!({"type": "document_parsing_exception", "reason": "[1:15] failed to parse field [message] of type [long]"})
            }
            _ => item["error"] = json!({"type": "exception", "reason": format!("status {status}")}),
        }
        errors |= !(200..300).contains(&status);
        items.push(json!({ op.clone(): item }));
    }
    g.state.requests.push(seen);
    (
        200,
        json!({"took": 1, "errors": errors, "items": items}).to_string(),
    )
}

/// A Loki push endpoint (JSON form of
/// https://grafana.com/docs/loki/latest/reference/loki-http-api/#ingest-logs).
pub struct LokiDouble {
    pub http: http::Receiver,
    inner: Shared<LokiState>,
    statuses: Arc<Mutex<VecDeque<u16>>>,
}

#[derive(Default, Clone)]
pub struct LokiState {
    /// (labels, timestamp in ns, line) per entry accepted.
    pub entries: Vec<(Value, String, String)>,
    pub headers: Vec<Vec<(String, String)>>,
    pub paths: Vec<String>,
}

impl LokiDouble {
    pub fn start() -> LokiDouble {
        let inner: Shared<LokiState> = Arc::default();
        let statuses: Arc<Mutex<VecDeque<u16>>> = Arc::default();
        let (i, st) = (inner.clone(), statuses.clone());
        let http = http::Receiver::with(move |req| {
            let mut g = i.0.lock().unwrap();
            g.paths.push(req.path.clone());
            g.headers.push(req.headers.clone());
            if let Some(s) = st.lock().unwrap().pop_front() {
                i.1.notify_all();
                return (s, "entry too far behind".into());
            }
            let body: Value =
                serde_json::from_slice(&request_body(req)).expect("push body is JSON");
            for s in body["streams"].as_array().expect("streams[]") {
                for v in s["values"].as_array().expect("values[]") {
                    let ts = v[0].as_str().expect("timestamp is a string").to_string();
                    ts.parse::<u128>().expect("timestamp is ns digits");
                    g.entries
                        .push((s["stream"].clone(), ts, v[1].as_str().unwrap().to_string()));
                }
            }
            i.1.notify_all();
            (204, String::new())
        });
        LokiDouble {
            http,
            inner,
            statuses,
        }
    }

    pub fn fail_next(&self, status: u16) {
        self.statuses.lock().unwrap().push_back(status);
    }

    pub fn wait(&self, what: &str, done: impl Fn(&LokiState) -> bool) -> LokiState {
        wait_shared(&self.inner, what, done, String::new)
    }
}

/// Counts of each message: to assert nothing was lost or duplicated.
pub fn counts(msgs: &[String]) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for s in msgs {
        *m.entry(s.clone()).or_insert(0) += 1;
    }
    m
}

/// The value of a Prometheus sample, e.g. `log_tail_ship_lines_truncated_total`.
pub fn metric(text: &str, name: &str) -> f64 {
    crate::support::metrics::sample(text, name)
        .unwrap_or_else(|| panic!("metric {name} missing:\n{text}"))
}
