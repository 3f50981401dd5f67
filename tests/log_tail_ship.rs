//! log-tail-ship: tailing real files through appends, partial lines,
//! restarts (clean and kill -9), rotation by the real logrotate (create and
//! copytruncate), deletion, long lines, and backpressure.

#[path = "log_tail_ship/common.rs"]
mod common;
mod support;

use std::collections::HashSet;
use std::path::Path;

use common::{counts, logrotate, messages, metric, ndjson, Ship, Writer};
use nix::sys::signal::Signal;
use serde_json::Value;
use support::{http, Sidecar};

fn glob(dir: &Path, pat: &str) -> String {
    format!("{}/{pat}", dir.display())
}

/// Every one of `expected` arrived exactly once.
fn assert_exactly_once(got: &[String], expected: &[String]) {
    let c = counts(got);
    let missing: Vec<&String> = expected.iter().filter(|m| !c.contains_key(*m)).collect();
    let dups: Vec<(&String, &usize)> = c.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        missing.is_empty(),
        "lost {} lines, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    assert!(
        dups.is_empty(),
        "duplicated lines, e.g. {:?}",
        &dups[..dups.len().min(5)]
    );
}

#[test]
fn ships_ecs_events_and_holds_a_partial_line_until_complete() {
    let dir = support::tempdir();
    let log = dir.path().join("app.log");
    let mut w = Writer::append(&log);
    w.line("first");
    w.raw("second ha");
    let ship = Ship::start_env(
        &[
            "--path",
            &glob(dir.path(), "*.log"),
            "--field",
            "kubernetes.pod.name=$(LTS_POD)",
            "--field",
            "team=${LTS_TEAM}",
            "--host-name",
            "node-a",
        ],
        &[("LTS_POD", "web-1"), ("LTS_TEAM", "core")],
    );
    let evs = ship.wait_message("first");
    let e = &evs[0];
    assert_eq!(e["log"]["file"]["path"], log.to_str().unwrap());
    assert_eq!(e["log"]["offset"], 0);
    assert_eq!(e["host"]["name"], "node-a");
    assert_eq!(e["kubernetes"]["pod"]["name"], "web-1");
    assert_eq!(e["team"], "core");
    assert!(e["@timestamp"].as_str().unwrap().ends_with('Z'));

    w.raw("lf\r\n");
    w.line("");
    w.line("third");
    let evs = ship.wait_message("third");
    assert_eq!(messages(&evs), ["first", "second half", "third"]);
    assert_eq!(evs[1]["log"]["offset"], 6);
}

#[test]
fn restart_resumes_from_the_checkpoint_and_completes_a_partial_line_once() {
    let dir = support::tempdir();
    let log = dir.path().join("app.log");
    let data = dir.path().join("data");
    let args = [
        "--path",
        &glob(dir.path(), "*.log"),
        "--data-dir",
        data.to_str().unwrap(),
    ];
    let mut w = Writer::append(&log);
    w.line("a");
    w.line("b");
    w.raw("parti");
    let ship = Ship::start(&args);
    ship.wait_message("b");
    assert_eq!(ship.stop(), Some(0));
    let ck: Value =
        serde_json::from_slice(&std::fs::read(data.join("checkpoints.json")).unwrap()).unwrap();
    assert_eq!(ck["files"][0]["offset"], 4, "{ck}");

    w.raw("al line\n");
    w.line("c");
    let ship = Ship::start(&args);
    let evs = ship.wait_message("c");
    assert_eq!(messages(&evs), ["partial line", "c"]);
    assert_eq!(evs[0]["log"]["offset"], 4);
    assert_eq!(ship.stop(), Some(0));
}

/// kill -9 in the middle of batches: the restart sends again what was not
/// acknowledged, and nothing is lost.
#[test]
fn kill_9_mid_batch_loses_nothing() {
    let dir = support::tempdir();
    let log = dir.path().join("app.log");
    let data = dir.path().join("data");
    let total = 20_000;
    let mut w = Writer::append(&log);
    for i in 0..total {
        w.line(&format!("line {i:05} {}", "x".repeat(40)));
    }
    let recv = http::Receiver::start();
    let args = [
        "--path",
        &glob(dir.path(), "*.log"),
        "--data-dir",
        data.to_str().unwrap(),
        "--sink",
        "http",
        "--http-url",
        &recv.url("/ingest"),
        "--batch-max-events",
        "500",
    ];
    let mut seen = HashSet::new();
    let collect = |seen: &mut HashSet<String>, req: http::Request| {
        assert_eq!(req.header("content-type"), Some("application/x-ndjson"));
        for v in ndjson(&req.body) {
            seen.insert(v["message"].as_str().unwrap().to_string());
        }
    };
    let mut sc = Sidecar::start("log-tail-ship", &args);
    for _ in 0..5 {
        collect(&mut seen, recv.next());
    }
    sc.signal(Signal::SIGKILL);
    sc.wait_exit();
    drop(sc);
    let _sc = Sidecar::start("log-tail-ship", &args);
    while seen.len() < total {
        collect(&mut seen, recv.next());
    }
}

#[test]
fn logrotate_create_while_writing_loses_and_duplicates_nothing() {
    let dir = support::tempdir();
    let log = dir.path().join("app.log");
    std::fs::write(&log, "").unwrap();
    let mut ship = Ship::start(&[
        "--path",
        &glob(dir.path(), "app.log"),
        "--rotate-wait",
        "1s",
    ]);
    ship.sc.wait_for_log("tailing file");
    let (progress_tx, progress_rx) = std::sync::mpsc::channel();
    let (reopen_tx, reopen_rx) = std::sync::mpsc::channel::<bool>();
    let path = log.clone();
    // The application: appends through its open file without pause and
    // reopens the path when told (as after SIGHUP), so lines written between
    // the rename and the reopen land in the rotated file.
    let writer = std::thread::spawn(move || {
        let mut w = Writer::append(&path);
        let mut expected = Vec::new();
        for i in 0.. {
            match reopen_rx.try_recv() {
                Ok(true) => w = Writer::append(&path),
                Ok(false) => break,
                Err(_) => {}
            }
            let line = format!("create {i}");
            w.line(&line);
            expected.push(line);
            if i % 200 == 199 {
                let _ = progress_tx.send(());
            }
        }
        expected
    });
    for _ in 0..3 {
        progress_rx.recv().unwrap();
        logrotate(dir.path(), &log, "create");
        reopen_tx.send(true).unwrap();
    }
    progress_rx.recv().unwrap();
    reopen_tx.send(false).unwrap();
    let mut expected = writer.join().unwrap();
    // After the writer's last reopen, the final line marks the end.
    Writer::append(&log).line("END");
    expected.push("END".into());
    ship.wait_messages(&expected);
    assert_exactly_once(&ship.messages(), &expected);
}

fn copytruncate_rounds(glob_pat: &str, stale_writer: bool) {
    let dir = support::tempdir();
    let log = dir.path().join("app.log");
    std::fs::write(&log, "").unwrap();
    let mut ship = Ship::start(&["--path", &glob(dir.path(), glob_pat), "--rotate-wait", "1s"]);
    ship.sc.wait_for_log("tailing file");
    let mut w = if stale_writer {
        Writer::at_offset(&log)
    } else {
        Writer::append(&log)
    };
    let mut expected = Vec::new();
    for round in 0..4 {
        for i in 0..400 {
            let line = format!("round {round} line {i} {}", "y".repeat(30));
            w.line(&line);
            expected.push(line);
        }
        // Lines of a file nobody read before it was copied and emptied exist
        // only in the copy: the first line read makes the copy recognisable,
        // and the rest of the round may be unread yet (then it comes from the
        // copy). The writer keeps its file open across the rotation.
        ship.wait_message(&format!("round {round} line 0 {}", "y".repeat(30)));
        logrotate(dir.path(), &log, "copytruncate");
    }
    w.line("END");
    expected.push("END".into());
    // Lines of the last round may still come from its copy.
    ship.wait_messages(&expected);
    let got = ship.messages();
    assert!(got.iter().all(|m| !m.contains('\0')), "NUL bytes shipped");
    assert_exactly_once(&got, &expected);
}

#[test]
fn logrotate_copytruncate_loses_and_duplicates_nothing() {
    copytruncate_rounds("app.log", false);
}

#[test]
fn logrotate_copytruncate_with_copies_matched_by_the_glob() {
    copytruncate_rounds("app.log*", false);
}

#[test]
fn copytruncate_with_a_writer_lacking_o_append_skips_nul_bytes() {
    copytruncate_rounds("app.log", true);
}

#[test]
fn deleted_file_is_closed_promptly_and_a_recreated_path_is_read() {
    let dir = support::tempdir();
    let log = dir.path().join("app.log");
    Writer::append(&log).line("before delete");
    let mut ship = Ship::start(&["--path", &glob(dir.path(), "*.log")]);
    ship.wait_message("before delete");
    std::fs::remove_file(&log).unwrap();
    ship.sc.wait_for_log("reason=\"deleted\"");
    let fds = std::fs::read_dir(format!("/proc/{}/fd", ship.sc.pid())).unwrap();
    for fd in fds.flatten() {
        let target = std::fs::read_link(fd.path()).unwrap_or_default();
        assert!(
            !target.to_string_lossy().contains("app.log"),
            "still open: {target:?}"
        );
    }
    Writer::append(&log).line("after recreate");
    ship.wait_message("after recreate");
    assert_eq!(ship.messages(), ["before delete", "after recreate"]);
    let m = ship.metrics();
    assert_eq!(metric(&m, "log_tail_ship_files_closed_total"), 1.0);
}

#[test]
fn long_lines_are_truncated_flagged_and_counted() {
    let dir = support::tempdir();
    let log = dir.path().join("app.log");
    let mut w = Writer::append(&log);
    w.line("before");
    w.line(&"z".repeat(10 * 1024));
    w.line("after");
    let ship = Ship::start(&[
        "--path",
        &glob(dir.path(), "*.log"),
        "--max-line-bytes",
        "1000",
    ]);
    let evs = ship.wait_message("after");
    assert_eq!(evs.len(), 3);
    assert_eq!(evs[1]["message"].as_str().unwrap().len(), 1000);
    assert_eq!(evs[1]["log"]["flags"], serde_json::json!(["truncated"]));
    assert_eq!(evs[2]["log"]["offset"], 7 + 10 * 1024 + 1);
    assert_eq!(
        metric(&ship.metrics(), "log_tail_ship_lines_truncated_total"),
        1.0
    );
    support::wait_until("three events acknowledged", || {
        support::metrics::sample(&ship.metrics(), "log_tail_ship_events_acked_total") == Some(3.0)
    });
    let m = ship.metrics();
    // Acknowledged implies sent: events_sent was once counted after the
    // hand-over, and a scrape found 3 acknowledged and 0 sent.
    let context = || format!("{m}\nstderr:\n{}", ship.sc.stderr());
    assert_eq!(
        metric(&m, "log_tail_ship_lines_read_total"),
        3.0,
        "{}",
        context()
    );
    assert_eq!(
        metric(&m, "log_tail_ship_events_sent_total"),
        3.0,
        "{}",
        context()
    );
    assert_eq!(metric(&m, "log_tail_ship_open_files"), 1.0);
}

#[test]
fn read_from_end_applies_to_files_found_at_start_only() {
    let dir = support::tempdir();
    let old = dir.path().join("old.log");
    Writer::append(&old).line("old line");
    let mut ship = Ship::start(&["--path", &glob(dir.path(), "*.log"), "--read-from", "end"]);
    ship.sc.wait_for_log("--read-from end");
    Writer::append(&old).line("appended");
    ship.wait_message("appended");
    Writer::append(&dir.path().join("new.log")).line("fresh file");
    ship.wait_message("fresh file");
    assert_eq!(ship.sorted_messages(), ["appended", "fresh file"]);
}

#[test]
fn parse_json_merges_fields_and_flags_bad_lines() {
    let dir = support::tempdir();
    let log = dir.path().join("app.log");
    let mut w = Writer::append(&log);
    w.line(r#"{"message":"structured","level":"warn","http":{"status":503}}"#);
    w.line("plain text");
    let ship = Ship::start(&[
        "--path",
        &glob(dir.path(), "*.log"),
        "--parse",
        "json",
        "--field",
        "env=prod",
    ]);
    let evs = ship.wait_message("plain text");
    assert_eq!(evs[0]["message"], "structured");
    assert_eq!(evs[0]["level"], "warn");
    assert_eq!(evs[0]["http"]["status"], 503);
    assert_eq!(evs[0]["env"], "prod");
    assert_eq!(evs[0]["log"]["offset"], 0);
    assert_eq!(evs[1]["error"]["type"], "json");
}

#[test]
fn multiline_groups_stack_traces() {
    let dir = support::tempdir();
    let log = dir.path().join("app.log");
    let mut w = Writer::append(&log);
    for l in ["2026-01-01 boom", "  at a()", "  at b()", "2026-01-01 next"] {
        w.line(l);
    }
    let ship = Ship::start(&[
        "--path",
        &glob(dir.path(), "*.log"),
        "--multiline-start",
        r"^\d{4}-",
        "--multiline-timeout",
        "200ms",
    ]);
    let evs = ship.wait_message("2026-01-01 next");
    assert_eq!(
        messages(&evs),
        ["2026-01-01 boom\n  at a()\n  at b()", "2026-01-01 next"]
    );
    assert_eq!(evs[0]["log"]["flags"], serde_json::json!(["multiline"]));
}

/// The sink is down while the application writes: memory stays under
/// --buffer-max-bytes (reading pauses), and everything arrives afterwards.
#[test]
fn backpressure_bounds_memory_and_loses_nothing() {
    let dir = support::tempdir();
    let log = dir.path().join("app.log");
    let total = 40_000;
    let mut w = Writer::append(&log);
    for i in 0..total {
        w.line(&format!("bp {i:06} {}", "b".repeat(150)));
    }
    let file_size = std::fs::metadata(&log).unwrap().len();
    let recv = http::Receiver::with(|_| (503, "down".into()));
    let mut sc = Sidecar::start(
        "log-tail-ship",
        &[
            "--path",
            &glob(dir.path(), "*.log"),
            "--sink=http",
            "--http-url",
            &recv.url("/"),
            "--buffer-max-bytes=256KiB",
            "--batch-max-bytes=64KiB",
            "--retry-max-backoff=200ms",
        ],
    );
    let admin = sc.admin_addr();
    let m = || support::metrics::scrape(admin);
    support::wait_until("retries while the sink is down", || {
        support::metrics::sample(&m(), "log_tail_ship_retries_total").unwrap_or(0.0) >= 5.0
    });
    let text = m();
    let read = metric(&text, "log_tail_ship_bytes_read_total");
    assert!(
        metric(&text, "log_tail_ship_buffer_bytes") <= 256.0 * 1024.0,
        "{text}"
    );
    // At most the buffer, the batch being built and one read chunk.
    assert!(
        read <= (256 * 1024 + 64 * 1024 + (1 << 20)) as f64,
        "read {read} of {file_size} while the sink was down"
    );
    assert!(read < file_size as f64);
    // More lines, one write each, while the reader waits: their inotify
    // events overflow the reader's queue, which must not lose them.
    let more = 10_000;
    for i in total..total + more {
        w.line(&format!("bp {i:06} {}", "b".repeat(150)));
    }
    recv.set_response(|_| (200, String::new()));
    let total = total + more;
    let mut seen = HashSet::new();
    while seen.len() < total {
        let req = recv.next();
        for v in ndjson(&req.body) {
            seen.insert(v["message"].as_str().unwrap()[..9].to_string());
        }
    }
}

#[test]
fn bad_flags_exit_2_naming_the_flag() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["--path", "/tmp/x.log", "--multiline-start", "("],
            "--multiline-start",
        ),
        (
            &["--path", "/tmp/x.log", "--sink", "elasticsearch"],
            "--es-url",
        ),
        (&["--path", "/tmp/x.log", "--sink", "loki"], "--loki-url"),
        (
            &[
                "--path",
                "/tmp/x.log",
                "--sink",
                "http",
                "--http-url",
                "ftp://x",
            ],
            "--http-url",
        ),
        (
            &["--path", "/tmp/x.log", "--max-line-bytes", "0"],
            "--max-line-bytes",
        ),
        (
            &["--path", "/tmp/x.log", "--max-line-bytes", "lots"],
            "--max-line-bytes",
        ),
        (
            &[
                "--path",
                "/tmp/x.log",
                "--batch-max-bytes",
                "2MiB",
                "--buffer-max-bytes",
                "1MiB",
            ],
            "--batch-max-bytes",
        ),
        (&["--path", "/tmp/[x.log"], "--path"),
        (
            &[
                "--path",
                "/tmp/x.log",
                "--sink",
                "elasticsearch",
                "--es-url",
                "http://h:9200",
                "--es-index",
                "x-%Q",
            ],
            "--es-index",
        ),
        (&[], "--path"),
    ];
    for (args, flag) in cases {
        // A normal start and `--check` refuse the same flags the same way.
        for check in [&[][..], &["--check"][..]] {
            let mut full = vec!["log-tail-ship", "--admin-addr=off"];
            full.extend_from_slice(check);
            full.extend_from_slice(args);
            let out = support::run(&full);
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{full:?}: {err}");
            assert!(
                err.contains(flag),
                "{full:?}: message does not name {flag}: {err}"
            );
        }
    }
}

/// `--check` accepts a good configuration without creating the data dir or
/// the dead letter file, and without reading any log.
#[test]
fn check_accepts_a_good_configuration_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("password"), "s3cret").unwrap();
    let data = d.join("data");
    let dead = d.join("dead.ndjson");
    let out = support::run(&[
        "log-tail-ship",
        "--check",
        &format!("--path={}", glob(d, "*.log")),
        &format!("--data-dir={}", data.display()),
        &format!("--dead-letter={}", dead.display()),
        "--sink=elasticsearch",
        "--es-url=http://127.0.0.1:9",
        "--es-user=shipper",
        &format!("--es-password-file={}", d.join("password").display()),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("configuration is valid"), "{err}");
    assert!(!data.exists() && !dead.exists());
}

#[test]
fn a_data_dir_in_use_exits_2() {
    let dir = support::tempdir();
    let data = dir.path().join("data");
    let args = [
        "--path",
        &glob(dir.path(), "*.log"),
        "--data-dir",
        data.to_str().unwrap(),
    ];
    let mut first = Ship::start(&args);
    first.sc.wait_for_log("log-tail-ship started");
    let mut full = vec!["log-tail-ship", "--admin-addr=off"];
    full.extend_from_slice(&args);
    let out = support::run(&full);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--data-dir") && err.contains("in use"),
        "{err}"
    );
}

/// SIGTERM while the sink is down: the process still exits 0 within the
/// grace period, the checkpoint stays before the unacknowledged lines, and
/// the next start delivers them.
#[test]
fn sigterm_with_the_sink_down_keeps_unacknowledged_lines_for_the_restart() {
    let dir = support::tempdir();
    let data = dir.path().join("data");
    Writer::append(&dir.path().join("app.log")).line("undelivered");
    let recv = http::Receiver::with(|_| (503, "down".into()));
    let args = [
        "--path",
        &glob(dir.path(), "*.log"),
        "--data-dir",
        data.to_str().unwrap(),
        "--sink=http",
        "--http-url",
        &recv.url("/"),
        "--batch-timeout=20ms",
        "--shutdown-grace=2s",
    ];
    let mut sc = Sidecar::start("log-tail-ship", &args);
    recv.next();
    sc.signal(Signal::SIGTERM);
    assert_eq!(sc.wait_exit().code(), Some(0), "{}", sc.stderr());
    let ck: Value =
        serde_json::from_slice(&std::fs::read(data.join("checkpoints.json")).unwrap()).unwrap();
    assert_eq!(ck["files"][0]["offset"], 0, "{ck}");
    recv.drain();
    recv.set_response(|_| (200, String::new()));
    let _sc = Sidecar::start("log-tail-ship", &args);
    let req = recv.next();
    let ev: Value = serde_json::from_slice(req.body.strip_suffix(b"\n").unwrap()).unwrap();
    assert_eq!(ev["message"], "undelivered");
}

/// A backlog (lines written while the shipper was down) goes out in full
/// batches, and its last lines right after them: they do not wait for
/// --batch-timeout.
#[test]
fn the_end_of_a_backlog_does_not_wait_for_the_batch_timeout() {
    let dir = support::tempdir();
    let mut w = Writer::append(&dir.path().join("app.log"));
    let expected: Vec<String> = (0..250).map(|i| format!("backlog {i:03}")).collect();
    for l in &expected {
        w.line(l);
    }
    let recv = http::Receiver::with(|_| (200, String::new()));
    let _sc = Sidecar::start(
        "log-tail-ship",
        &[
            "--path",
            &glob(dir.path(), "*.log"),
            "--sink=http",
            "--http-url",
            &recv.url("/"),
            "--batch-max-events=100",
            "--batch-timeout=1h",
        ],
    );
    let mut sizes = Vec::new();
    let mut got = Vec::new();
    while got.len() < expected.len() {
        let batch = messages(&ndjson(&recv.next().body));
        sizes.push(batch.len());
        got.extend(batch);
    }
    assert_eq!(sizes, [100, 100, 50]);
    assert_eq!(got, expected);
}

/// An app that deletes its log and writes the same lines again: the new
/// file starts with the old one's bytes but is new content, read in full.
#[test]
fn recreated_file_with_identical_content_is_read_again() {
    let dir = support::tempdir();
    let log = dir.path().join("app.log");
    let banner = format!("service starting {}", "=".repeat(80));
    Writer::append(&log).line(&banner);
    let mut ship = Ship::start(&["--path", &glob(dir.path(), "*.log")]);
    ship.wait_message(&banner);
    std::fs::remove_file(&log).unwrap();
    let mut w = Writer::append(&log);
    w.line(&banner);
    w.line("second life");
    ship.sc.wait_for_log("reason=\"deleted\"");
    let evs = ship.wait_message("second life");
    assert_eq!(
        messages(&evs),
        [banner.as_str(), banner.as_str(), "second life"]
    );
}

/// The dead letter and the checkpoints live beside the logs, inside the
/// glob: they are not tailed (that would feed rejections back in).
#[test]
fn own_files_inside_the_glob_are_not_tailed() {
    let dir = support::tempdir();
    Writer::append(&dir.path().join("app.log")).line("x");
    let ship = Ship::start(&[
        "--path",
        &glob(dir.path(), "**/*"),
        "--data-dir",
        dir.path().join("ship").to_str().unwrap(),
        "--dead-letter",
        dir.path().join("dead.log").to_str().unwrap(),
    ]);
    ship.wait_message("x");
    Writer::append(&dir.path().join("app.log")).line("y");
    let evs = ship.wait_message("y");
    assert_eq!(messages(&evs), ["x", "y"], "{}", ship.sc.stderr());
}

/// `--read-from end` is for the first start only: a file created while the
/// shipper was down is read from its beginning after the restart.
#[test]
fn read_from_end_does_not_skip_files_created_while_down() {
    let dir = support::tempdir();
    let data = dir.path().join("data");
    Writer::append(&dir.path().join("old.log")).line("before the first start");
    let args = [
        "--path",
        &glob(dir.path(), "*.log"),
        "--read-from",
        "end",
        "--data-dir",
        data.to_str().unwrap(),
    ];
    let mut ship = Ship::start(&args);
    ship.sc.wait_for_log("--read-from end");
    assert_eq!(ship.stop(), Some(0));
    Writer::append(&dir.path().join("new.log")).line("written while down");
    let ship = Ship::start(&args);
    let evs = ship.wait_message("written while down");
    assert_eq!(messages(&evs), ["written while down"]);
}

/// While the shipper is down: one file is truncated and rewritten in place
/// (same inode, new content: the fingerprint no longer matches, so it is
/// read from the start), another is renamed (same inode and content: it
/// resumes where it was, under its new name).
#[test]
fn restart_tells_rewritten_files_from_renamed_ones() {
    let dir = support::tempdir();
    let data = dir.path().join("data");
    let rewritten = dir.path().join("rewritten.log");
    let renamed = dir.path().join("renamed.log");
    Writer::append(&rewritten).line("old content");
    Writer::append(&renamed).line("kept content");
    let args = [
        "--path",
        &glob(dir.path(), "*.log"),
        "--data-dir",
        data.to_str().unwrap(),
    ];
    let ship = Ship::start(&args);
    ship.wait_message("old content");
    ship.wait_message("kept content");
    assert_eq!(ship.stop(), Some(0));

    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&rewritten)
        .unwrap();
    f.set_len(0).unwrap();
    drop(f);
    Writer::append(&rewritten).line("new content");
    std::fs::rename(&renamed, dir.path().join("renamed-2.log")).unwrap();
    Writer::append(&dir.path().join("renamed-2.log")).line("appended after rename");

    let ship = Ship::start(&args);
    ship.wait_message("new content");
    ship.wait_message("appended after rename");
    assert_eq!(
        ship.sorted_messages(),
        ["appended after rename", "new content"]
    );
}

/// A multiline event still collecting lines at shutdown is not sent: the
/// checkpoint stays before it, and after the restart it arrives whole, once.
#[test]
fn multiline_event_open_at_shutdown_arrives_whole_after_restart() {
    let dir = support::tempdir();
    let log = dir.path().join("app.log");
    let data = dir.path().join("data");
    let mut w = Writer::append(&log);
    w.line("2026-01-01 done");
    w.line("2026-01-01 boom");
    w.line("  at a()");
    let args = |timeout: &'static str| {
        vec![
            "--path".to_string(),
            glob(dir.path(), "*.log"),
            "--data-dir".into(),
            data.to_str().unwrap().into(),
            "--multiline-start".into(),
            r"^\d{4}-".into(),
            "--multiline-timeout".into(),
            timeout.into(),
        ]
    };
    let first = args("1h");
    let ship = Ship::start(&first.iter().map(String::as_str).collect::<Vec<_>>());
    ship.wait_message("2026-01-01 done");
    support::wait_until("all three lines read", || {
        support::metrics::sample(&ship.metrics(), "log_tail_ship_lines_read_total") == Some(3.0)
    });
    assert_eq!(ship.stop(), Some(0));
    w.line("  at b()");
    let second = args("100ms");
    let ship = Ship::start(&second.iter().map(String::as_str).collect::<Vec<_>>());
    let evs = ship.wait_message("2026-01-01 boom\n  at a()\n  at b()");
    assert_eq!(messages(&evs), ["2026-01-01 boom\n  at a()\n  at b()"]);
}

/// The app container owns the shared volume: a symlink it plants there to a
/// file of ours (a token) is not shipped unless --follow-symlinks.
#[test]
fn symlinks_are_not_followed_by_default() {
    let dir = support::tempdir();
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let secret = dir.path().join("token");
    std::fs::write(&secret, "s3cr3t-token\n").unwrap();
    std::os::unix::fs::symlink(&secret, logs.join("evil.log")).unwrap();
    Writer::append(&logs.join("app.log")).line("regular");
    let mut ship = Ship::start(&["--path", &glob(&logs, "*.log")]);
    ship.wait_message("regular");
    ship.sc.wait_for_log("skipping symlink");
    Writer::append(&logs.join("app.log")).line("later");
    ship.wait_message("later");
    assert_eq!(ship.messages(), ["regular", "later"]);

    let ship = Ship::start(&["--path", &glob(&logs, "*.log"), "--follow-symlinks"]);
    ship.wait_message("s3cr3t-token");
}

/// The glob's directory does not exist at start: its parent is watched, and
/// the file is picked up when the directory and file appear.
#[test]
fn discovers_files_in_a_directory_created_later() {
    let dir = support::tempdir();
    let sub = dir.path().join("pods/web");
    let mut ship = Ship::start(&["--path", &glob(&sub, "*.log"), "--scan-interval", "1h"]);
    ship.sc.wait_for_log("log-tail-ship started");
    std::fs::create_dir_all(&sub).unwrap();
    Writer::append(&sub.join("app.log")).line("from a new directory");
    ship.wait_message("from a new directory");
}

/// The file is emptied and written again with longer content between two of
/// our looks (the shipper is frozen with SIGSTOP meanwhile, so it cannot see
/// the empty file): the size grew past our offset, but the first bytes
/// changed, so it is read from the start: nothing lost, no tail of garbage.
#[test]
fn truncated_and_rewritten_longer_between_two_looks() {
    let dir = support::tempdir();
    let log = dir.path().join("app.log");
    Writer::append(&log).line("old-1");
    let ship = Ship::start(&["--path", &glob(dir.path(), "*.log")]);
    ship.wait_message("old-1");
    freeze(&ship);
    std::fs::write(&log, "brand-new-1\nbrand-new-2\n").unwrap();
    ship.sc.signal(Signal::SIGCONT);
    ship.wait_message("brand-new-2");
    assert_eq!(ship.messages(), ["old-1", "brand-new-1", "brand-new-2"]);
    assert_eq!(ship.stop(), Some(0));
}

/// The same while the shipper is down: the checkpoint's offset is inside
/// the new, longer content, but its fingerprint does not match, so the file
/// is read from the start.
#[test]
fn truncated_and_rewritten_longer_while_down() {
    let dir = support::tempdir();
    let data = dir.path().join("data");
    let log = dir.path().join("app.log");
    Writer::append(&log).line("old-1");
    let args = [
        "--path",
        &glob(dir.path(), "*.log"),
        "--data-dir",
        data.to_str().unwrap(),
    ];
    let ship = Ship::start(&args);
    ship.wait_message("old-1");
    assert_eq!(ship.stop(), Some(0));
    std::fs::write(&log, "brand-new-1\nbrand-new-2\n").unwrap();
    let ship = Ship::start(&args);
    ship.wait_message("brand-new-2");
    assert_eq!(ship.messages(), ["brand-new-1", "brand-new-2"]);
    assert_eq!(ship.stop(), Some(0));
}

/// Lines that are not valid UTF-8 are shipped with U+FFFD in place of the
/// bad bytes, never dropped, in text mode and in JSON mode (where a JSON
/// object with a bad byte is kept as text and flagged).
#[test]
fn invalid_utf8_lines_are_shipped_not_dropped() {
    let dir = support::tempdir();
    let log = dir.path().join("app.log");
    std::fs::write(&log, b"latin1 caf\xe9\n{\"k\":\"v\xff\"}\nend\n").unwrap();
    for parse in ["text", "json"] {
        let ship = Ship::start(&["--path", &glob(dir.path(), "*.log"), "--parse", parse]);
        let evs = ship.wait_message("end");
        assert_eq!(evs.len(), 3, "{parse}: {evs:?}");
        assert_eq!(evs[0]["message"], "latin1 caf\u{fffd}");
        assert_eq!(evs[1]["message"], "{\"k\":\"v\u{fffd}\"}");
        if parse == "json" {
            assert_eq!(evs[1]["error"]["type"], "json", "{}", evs[1]);
        }
        assert_eq!(ship.stop(), Some(0));
    }
}

/// SIGSTOP, and wait until the kernel has stopped the process: what we do to
/// files meanwhile happens between two of its looks.
fn freeze(ship: &Ship) {
    ship.sc.signal(Signal::SIGSTOP);
    let stat = format!("/proc/{}/stat", ship.sc.pid());
    support::wait_until("the shipper to be stopped", || {
        std::fs::read_to_string(&stat)
            .is_ok_and(|s| s.rsplit(')').next().unwrap().trim_start().starts_with('T'))
    });
}

/// Two rotations (rotated names outside the glob) between two of our looks:
/// the middle file was at the glob's path only while we were not looking.
/// inotify's rename event names it, so it is read anyway.
#[test]
fn a_file_rotated_away_before_we_saw_it_is_read() {
    let dir = support::tempdir();
    let log = dir.path().join("app.log");
    Writer::append(&log).line("a-1");
    let mut ship = Ship::start(&["--path", &glob(dir.path(), "app.log")]);
    ship.wait_message("a-1");
    freeze(&ship);
    std::fs::rename(&log, dir.path().join("app.log.1")).unwrap();
    Writer::append(&log).line("b-1");
    std::fs::rename(&log, dir.path().join("app.log.2")).unwrap();
    Writer::append(&log).line("c-1");
    ship.sc.signal(Signal::SIGCONT);
    ship.wait_messages(&["b-1".to_string(), "c-1".to_string()]);
    assert_eq!(ship.sorted_messages(), ["a-1", "b-1", "c-1"]);
    ship.sc
        .wait_for_log("file rotated away before we opened it");
    assert_eq!(ship.stop(), Some(0));
}

/// A closed rotated file is deleted and its inode goes to a new file (ext4
/// hands freed inodes out again at once) between two of our looks: the new
/// file is read from its start, not from the old file's offset.
#[test]
fn inode_reused_after_a_closed_file_is_deleted() {
    use std::os::unix::fs::MetadataExt;
    let dir = support::tempdir();
    let log = dir.path().join("x.log");
    let rotated = dir.path().join("x.log.1");
    Writer::append(&log).line("old-1");
    let mut ship = Ship::start(&[
        "--path",
        &glob(dir.path(), "*.log*"),
        "--rotate-wait",
        "50ms",
    ]);
    ship.wait_message("old-1");
    let ino = std::fs::metadata(&log).unwrap().ino();
    std::fs::rename(&log, &rotated).unwrap();
    ship.sc.wait_for_log("reason=\"rotated\"");
    let pads = dir.path().join("pads");
    std::fs::create_dir(&pads).unwrap();
    freeze(&ship);
    std::fs::remove_file(&rotated).unwrap();
    // ext4 hands out the lowest free inode of the group: other freed
    // inodes may come first, so keep files until ours comes back.
    let fresh = dir.path().join("y.log");
    let reused = (0..5000).any(|i| {
        let pad = pads.join(i.to_string());
        Writer::append(&pad).line("brand-new");
        std::fs::metadata(&pad).unwrap().ino() == ino && std::fs::rename(&pad, &fresh).is_ok()
    });
    ship.sc.signal(Signal::SIGCONT);
    if !reused {
        println!("SKIPPED (this file system did not reuse the inode)");
        return;
    }
    ship.wait_message("brand-new");
    assert_eq!(ship.messages(), ["old-1", "brand-new"]);
    assert_eq!(ship.stop(), Some(0));
}

/// A quiet file is closed after --close-inactive (its descriptor freed, so
/// hundreds of quiet files hold none) and opened again where it was when it
/// grows; a file holding a partial line stays open.
#[test]
fn inactive_files_are_closed_and_reopened_when_they_grow() {
    let dir = support::tempdir();
    let quiet = dir.path().join("quiet.log");
    let partial = dir.path().join("partial.log");
    Writer::append(&quiet).line("first");
    Writer::append(&partial).raw("half a ");
    let mut ship = Ship::start(&[
        "--path",
        &glob(dir.path(), "*.log"),
        "--close-inactive",
        "100ms",
    ]);
    ship.wait_message("first");
    ship.sc.wait_for_log("reason=\"inactive\"");
    support::wait_until("one file open", || {
        metric(&ship.metrics(), "log_tail_ship_open_files") == 1.0
    });
    let fds = |path: &Path| {
        std::fs::read_dir(format!("/proc/{}/fd", ship.sc.pid()))
            .unwrap()
            .filter_map(|e| std::fs::read_link(e.unwrap().path()).ok())
            .filter(|l| l == path)
            .count()
    };
    assert_eq!(fds(&quiet), 0, "the quiet file's descriptor is closed");
    assert_eq!(fds(&partial), 1, "a file with a partial line stays open");
    Writer::append(&quiet).line("second");
    Writer::append(&partial).line("line");
    ship.wait_message("second");
    ship.wait_message("half a line");
    ship.sc.wait_for_log("reason=\"reopened\"");
    assert_eq!(ship.sorted_messages(), ["first", "half a line", "second"]);
    assert_eq!(ship.stop(), Some(0));
}

/// A UTF-8 byte order mark at the start of a file is not part of the first
/// message (Filebeat's TestFilestreamBOMUTF8); CRLF endings and empty lines
/// (also `\r\n` alone) are handled as Fluent Bit's skip_empty_lines_crlf.
#[test]
fn utf8_bom_is_stripped_and_empty_crlf_lines_skipped() {
    let dir = support::tempdir();
    std::fs::write(
        dir.path().join("bom.log"),
        b"\xef\xbb\xbffirst\r\n\r\n\nsecond \xef\xbb\xbf kept\r\n",
    )
    .unwrap();
    let ship = Ship::start(&["--path", &glob(dir.path(), "*.log")]);
    ship.wait_message("second \u{feff} kept");
    assert_eq!(ship.messages(), ["first", "second \u{feff} kept"]);
    assert_eq!(ship.stop(), Some(0));
}
