//! log-tail-ship's disk buffer (`--buffer-dir`): a sink down while the real
//! logrotate renames and deletes files, kill -9 while a burst is buffered,
//! a segment garbled on purpose, a full buffer, and its flags.

#[path = "log_tail_ship/common.rs"]
mod common;
mod support;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use common::{logrotate_keep, metric, Writer};
use nix::sys::signal::Signal;
use serde_json::Value;
use support::{http, Sidecar};

/// A shipper's directories: logs, checkpoints, buffer.
struct Dirs {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    logs: PathBuf,
}

impl Dirs {
    fn new() -> Dirs {
        let tmp = support::tempdir();
        let root = tmp.path().to_path_buf();
        let logs = root.join("logs");
        std::fs::create_dir(&logs).unwrap();
        Dirs {
            _tmp: tmp,
            root,
            logs,
        }
    }

    fn buffer(&self) -> PathBuf {
        self.root.join("buffer")
    }

    /// The flags of a shipper with a disk buffer sending to `url`.
    fn args(&self, url: &str, extra: &[&str]) -> Vec<String> {
        let mut a: Vec<String> = [
            format!("--path={}/*.log", self.logs.display()),
            format!("--data-dir={}", self.root.join("data").display()),
            format!("--buffer-dir={}", self.buffer().display()),
            "--sink=http".into(),
            format!("--http-url={url}"),
            "--batch-timeout=20ms".into(),
            "--retry-max-backoff=200ms".into(),
        ]
        .into();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    }
}

fn start(args: &[String]) -> (Sidecar, SocketAddr) {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut sc = Sidecar::start("log-tail-ship", &args);
    let admin = sc.admin_addr();
    (sc, admin)
}

/// An HTTP sink that answers 503 until it is up, and keeps the messages of
/// the requests it accepted.
struct Sink {
    recv: http::Receiver,
    up: Arc<AtomicBool>,
    accepted: Arc<Mutex<Vec<String>>>,
}

impl Sink {
    fn down() -> Sink {
        let up = Arc::new(AtomicBool::new(false));
        let accepted: Arc<Mutex<Vec<String>>> = Arc::default();
        let (u, a) = (up.clone(), accepted.clone());
        let recv = http::Receiver::with(move |req| {
            if !u.load(Ordering::SeqCst) {
                return (503, "down".into());
            }
            let mut a = a.lock().unwrap();
            for l in String::from_utf8(req.body.clone()).unwrap().lines() {
                let v: Value = serde_json::from_str(l).unwrap();
                a.push(v["message"].as_str().unwrap().to_string());
            }
            (200, String::new())
        });
        Sink { recv, up, accepted }
    }

    fn url(&self) -> String {
        self.recv.url("/")
    }

    fn up(&self) {
        self.up.store(true, Ordering::SeqCst);
    }

    /// Waits until every one of `expected` was accepted (at least once);
    /// returns every message accepted so far.
    fn receive_all(&self, expected: &[String]) -> Vec<String> {
        loop {
            {
                let got = self.accepted.lock().unwrap();
                let seen: HashSet<&str> = got.iter().map(String::as_str).collect();
                if expected.iter().all(|m| seen.contains(m.as_str())) {
                    return got.clone();
                }
            }
            // Each request is recorded after it was answered: an event to
            // wait on, bounded by the harness's deadline.
            self.recv.next();
        }
    }
}

fn wait_metric(admin: SocketAddr, name: &str, at_least: f64) {
    support::metrics::wait_for(admin, &format!("{name} >= {at_least}"), |m| {
        support::metrics::sample(m, name).is_some_and(|v| v >= at_least)
    });
}

/// Descriptors of `pid` open on deleted files under `dir`.
fn deleted_open(pid: u32, dir: &Path) -> Vec<String> {
    let dir = dir.to_string_lossy().into_owned();
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .map(|t| t.to_string_lossy().into_owned())
        .filter(|t| t.starts_with(&dir) && t.ends_with(" (deleted)"))
        .collect()
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut s: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    s.sort();
    s
}

fn lines(tag: &str, n: usize, width: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("{tag} {i:06} {}", "x".repeat(width)))
        .collect()
}

/// The sink is down while logrotate renames the log and deletes the
/// oldest rotated file, round after round, and the lines are more than the
/// memory cap. The shipper buffers them on disk, closes every deleted file
/// (its space is given back), and delivers every line once the sink is back.
#[test]
fn sink_down_while_logrotate_deletes_files_releases_them_and_loses_nothing() {
    let d = Dirs::new();
    let log = d.logs.join("app.log");
    let sink = Sink::down();
    let args = d.args(
        &sink.url(),
        &[
            "--buffer-max-bytes=64KiB",
            "--batch-max-bytes=16KiB",
            "--rotate-wait=100ms",
        ],
    );
    let (sc, admin) = start(&args);
    let mut expected = Vec::new();
    for round in 0..4 {
        let mut w = Writer::append(&log);
        for l in lines(&format!("round-{round}"), 500, 100) {
            w.line(&l);
            expected.push(l);
        }
        // Once the round is in the buffer, logrotate renames it away and
        // deletes the round before last (rotate 1).
        wait_metric(
            admin,
            "log_tail_ship_disk_buffer_events",
            expected.len() as f64,
        );
        logrotate_keep(&d.root, &log, "create", 1);
    }
    support::wait_until("deleted logs closed", || {
        deleted_open(sc.pid(), &d.logs).is_empty()
    });
    let m = support::metrics::scrape(admin);
    assert!(metric(&m, "log_tail_ship_files_closed_total") >= 3.0, "{m}");
    // More than the memory cap waits on disk.
    assert!(
        metric(&m, "log_tail_ship_disk_buffer_bytes") > 64.0 * 1024.0,
        "{m}"
    );
    assert_eq!(metric(&m, "log_tail_ship_events_acked_total"), 0.0);

    sink.up();
    let got = sink.receive_all(&expected);
    assert_eq!(got.len(), expected.len(), "no line sent twice");
    support::metrics::wait_for(admin, "an empty buffer", |m| {
        support::metrics::sample(m, "log_tail_ship_disk_buffer_events") == Some(0.0)
    });
}

/// kill -9 while a burst is being written into the buffer (the sink is
/// down), then a restart with the sink up: every line arrives, at least
/// once. Where the kill lands is up to the scheduler, so the test also
/// leaves what a kill in the middle of an append leaves, the first bytes
/// of a record at the end of the last segment: the restart finds it torn,
/// cuts and counts it.
#[test]
fn kill_9_while_a_burst_is_buffered_loses_nothing() {
    let d = Dirs::new();
    let expected = lines("burst", 60_000, 120);
    let mut w = Writer::append(&d.logs.join("app.log"));
    for l in &expected {
        w.line(l);
    }
    let sink = Sink::down();
    let args = d.args(
        &sink.url(),
        &["--batch-max-events=20000", "--batch-max-bytes=8MiB"],
    );
    let (mut sc, admin) = start(&args);
    wait_metric(admin, "log_tail_ship_disk_buffer_events", 1.0);
    sc.signal(Signal::SIGKILL);
    sc.wait_exit();
    drop(sc);
    let segs = segments(&d.buffer());
    let torn = std::fs::read(&segs[0]).unwrap()[..100].to_vec();
    let mut last = std::fs::OpenOptions::new()
        .append(true)
        .open(segs.last().unwrap())
        .unwrap();
    std::io::Write::write_all(&mut last, &torn).unwrap();

    sink.up();
    let (mut sc, admin) = start(&args);
    sc.wait_for_log("torn or corrupt record in the disk buffer");
    sink.receive_all(&expected);
    let m = support::metrics::scrape(admin);
    assert_eq!(metric(&m, "log_tail_ship_disk_buffer_corrupt_total"), 1.0);
    assert_eq!(
        metric(&m, "log_tail_ship_disk_buffer_corrupt_bytes_total"),
        100.0
    );
}

/// Clean restarts: the lines buffered while the sink was down are sent
/// from the buffer after the restart, not read again from the file, and
/// once acknowledged (the ledger) they are not sent again by the next start.
#[test]
fn restarts_resume_from_the_buffer_without_sending_twice() {
    let d = Dirs::new();
    let sink = Sink::down();
    let args = d.args(&sink.url(), &["--shutdown-grace=2s"]);
    let (mut sc, admin) = start(&args);
    let mut w = Writer::append(&d.logs.join("app.log"));
    let mut expected = lines("held", 20, 10);
    for l in &expected {
        w.line(l);
    }
    wait_metric(admin, "log_tail_ship_disk_buffer_events", 20.0);
    sc.signal(Signal::SIGTERM);
    assert_eq!(sc.wait_exit().code(), Some(0), "{}", sc.stderr());
    drop(sc);

    sink.up();
    for round in 0..2 {
        let (mut sc, _) = start(&args);
        let more = lines(&format!("after-{round}"), 2, 10);
        for l in &more {
            w.line(l);
        }
        expected.extend(more);
        let got = sink.receive_all(&expected);
        let c = common::counts(&got);
        let twice: Vec<_> = c.iter().filter(|(_, n)| **n > 1).collect();
        assert!(twice.is_empty(), "sent twice: {twice:?}");
        sc.signal(Signal::SIGTERM);
        assert_eq!(sc.wait_exit().code(), Some(0), "{}", sc.stderr());
    }
}

/// A segment garbled at its end while the shipper is stopped: at start the
/// bad record is found by its checksum, the segment is cut there, counted
/// and logged, and the records before it are delivered. The garbled
/// record's lines were past the checkpoint (the buffer owned them): lost,
/// and counted.
#[test]
fn a_garbled_segment_tail_is_cut_counted_and_the_rest_delivered() {
    let d = Dirs::new();
    let sink = Sink::down();
    let args = d.args(&sink.url(), &["--shutdown-grace=2s"]);
    let (mut sc, admin) = start(&args);
    let mut w = Writer::append(&d.logs.join("app.log"));
    let first = lines("first", 10, 10);
    for l in &first {
        w.line(l);
    }
    wait_metric(admin, "log_tail_ship_disk_buffer_events", 10.0);
    let last = lines("last", 10, 10);
    for l in &last {
        w.line(l);
    }
    wait_metric(admin, "log_tail_ship_disk_buffer_events", 20.0);
    sc.signal(Signal::SIGTERM);
    assert_eq!(sc.wait_exit().code(), Some(0), "{}", sc.stderr());
    drop(sc);

    let segs = segments(&d.buffer());
    let seg = segs.last().expect("a segment file");
    let mut raw = std::fs::read(seg).unwrap();
    let n = raw.len();
    raw[n - 16..].copy_from_slice(&[b'Z'; 16]);
    std::fs::write(seg, &raw).unwrap();

    sink.up();
    let (mut sc, admin) = start(&args);
    sc.wait_for_log("torn or corrupt record in the disk buffer");
    sink.receive_all(&first);
    let after = lines("after", 3, 10);
    for l in &after {
        w.line(l);
    }
    let got = sink.receive_all(&after);
    assert!(
        !got.iter().any(|m| m.starts_with("last")),
        "the garbled record's lines cannot come back"
    );
    let m = support::metrics::scrape(admin);
    assert_eq!(metric(&m, "log_tail_ship_disk_buffer_corrupt_total"), 1.0);
    assert!(metric(&m, "log_tail_ship_disk_buffer_corrupt_bytes_total") > 16.0);
}

/// A small buffer and a sink that is down: reading stops when the buffer is
/// full (counted), the buffer stays under its cap, and once the sink is
/// back every line arrives.
#[test]
fn a_full_buffer_stops_reading_and_resumes_when_drained() {
    let d = Dirs::new();
    let log = d.logs.join("app.log");
    let expected = lines("full", 20_000, 150);
    let mut w = Writer::append(&log);
    for l in &expected {
        w.line(l);
    }
    let size = std::fs::metadata(&log).unwrap().len() as f64;
    let sink = Sink::down();
    let cap = 256.0 * 1024.0;
    let args = d.args(
        &sink.url(),
        &["--buffer-max-bytes-disk=256KiB", "--batch-max-bytes=16KiB"],
    );
    let (_sc, admin) = start(&args);
    wait_metric(admin, "log_tail_ship_disk_buffer_full_total", 1.0);
    let m = support::metrics::scrape(admin);
    assert!(metric(&m, "log_tail_ship_disk_buffer_bytes") <= cap, "{m}");
    let on_disk: u64 = segments(&d.buffer())
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    assert!(on_disk as f64 <= cap, "{on_disk} bytes of segments");
    // At most the buffer's worth of lines, a batch and one read chunk.
    assert!(metric(&m, "log_tail_ship_bytes_read_total") < size, "{m}");

    sink.up();
    sink.receive_all(&expected);
}

#[test]
fn buffer_flags_are_checked_and_named() {
    let d = Dirs::new();
    let data = format!("--data-dir={}", d.root.join("data").display());
    let buf = format!("--buffer-dir={}", d.buffer().display());
    let path = format!("--path={}/*.log", d.logs.display());
    let cases: &[(&[&str], &str)] = &[
        (&[&path, &buf], "--data-dir"),
        (
            &[&path, &data, &buf, "--buffer-max-bytes-disk=lots"],
            "--buffer-max-bytes-disk",
        ),
        (
            &[&path, &data, &buf, "--buffer-max-bytes-disk=1KiB"],
            "--buffer-max-bytes-disk",
        ),
        (
            &[&path, &data, "--buffer-dir=/etc/hostname/buffer"],
            "--buffer-dir",
        ),
    ];
    for (args, flag) in cases {
        for check in [&[][..], &["--check"][..]] {
            let mut full = vec!["log-tail-ship", "--admin-addr=off"];
            full.extend_from_slice(check);
            full.extend_from_slice(args);
            let out = support::run(&full);
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{full:?}: {err}");
            assert!(err.contains(flag), "{full:?}: does not name {flag}: {err}");
        }
    }
    // A good buffer configuration passes --check and creates nothing.
    let out = support::run(&["log-tail-ship", "--check", &path, &data, &buf]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(!d.buffer().exists());
}
