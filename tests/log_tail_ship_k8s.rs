//! log-tail-ship in Kubernetes: container runtime log formats (CRI, Docker
//! json-file) with split lines joined, pod metadata from kubelet log paths,
//! kubelet-style rotation (rename, create, gzip later), and this pod's
//! metadata from the downward API (env and a podinfo volume the kubelet
//! updates by swapping its `..data` link).

#[path = "log_tail_ship/common.rs"]
mod common;
mod support;

use std::path::{Path, PathBuf};

use common::{counts, metric, Ship, Writer};
use serde_json::{json, Value};

const T0: &str = "2024-05-01T10:00:00.000000001Z";
const T1: &str = "2024-05-01T10:00:01.5Z";

/// `<root>/<ns>_<pod>_<uid>/<container>/`, as the kubelet lays it out.
fn pod_dir(root: &Path, ns: &str, pod: &str, uid: &str, container: &str) -> PathBuf {
    let d = root.join(format!("{ns}_{pod}_{uid}")).join(container);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn pods_glob(root: &Path) -> String {
    format!("{}/*/*/*.log", root.display())
}

fn by_message<'a>(evs: &'a [Value], msg: &str) -> &'a Value {
    evs.iter()
        .find(|e| e["message"] == msg)
        .unwrap_or_else(|| panic!("no event {msg:?} in {evs:#?}"))
}

#[test]
fn cri_lines_are_decoded_and_split_lines_joined() {
    let dir = support::tempdir();
    let d = pod_dir(dir.path(), "shop", "web-7d9f", "0c1d-22", "nginx");
    let mut w = Writer::append(&d.join("0.log"));
    w.line(&format!("{T0} stdout F GET / 200"));
    w.line(&format!("{T0} stderr P first half, "));
    w.line(&format!("{T1} stdout F interleaved"));
    w.line(&format!("{T1} stderr P second half, "));
    w.line(&format!("{T1} stderr F end"));
    w.line("not a CRI line");
    let ship = Ship::start(&["--path", &pods_glob(dir.path()), "--format", "cri"]);
    let evs = ship.wait_message("not a CRI line");

    let e = by_message(&evs, "GET / 200");
    assert_eq!(e["@timestamp"], T0);
    assert_eq!(e["log"]["iostream"], "stdout");
    assert_eq!(
        e["kubernetes"],
        json!({"namespace": "shop", "pod": {"name": "web-7d9f", "uid": "0c1d-22"},
               "container": {"name": "nginx"}})
    );
    let joined = by_message(&evs, "first half, second half, end");
    assert_eq!(joined["log"]["iostream"], "stderr");
    assert_eq!(
        joined["@timestamp"], T0,
        "a joined line has its first part's time"
    );
    assert!(joined["log"].get("flags").is_none(), "{joined}");
    assert_eq!(by_message(&evs, "interleaved")["log"]["iostream"], "stdout");
    let bad = by_message(&evs, "not a CRI line");
    assert_eq!(bad["error"]["type"], "format");
    assert_eq!(evs.len(), 4, "{evs:#?}");
}

#[test]
fn joined_lines_are_capped_at_max_line_bytes_and_flagged() {
    let dir = support::tempdir();
    let d = pod_dir(dir.path(), "ns", "p", "u", "c");
    let mut w = Writer::append(&d.join("0.log"));
    // 50 bytes: the line itself is over the cap, so its part is cut.
    w.line(&format!("{T0} stdout P 0123456789"));
    w.line(&format!("{T0} stdout F XYZ"));
    // 44 bytes each: every line fits, their join does not.
    for _ in 0..12 {
        w.line(&format!("{T0} stdout P abcd"));
    }
    w.line(&format!("{T0} stdout F e"));
    w.line(&format!("{T0} stdout F after"));
    let ship = Ship::start(&[
        "--path",
        &pods_glob(dir.path()),
        "--format=cri",
        "--max-line-bytes=45",
    ]);
    let evs = ship.wait_message("after");
    assert_eq!(evs[0]["message"], "01234XYZ", "{evs:#?}");
    assert_eq!(evs[0]["log"]["flags"], json!(["truncated"]));
    assert_eq!(evs[1]["message"], "abcd".repeat(12)[..45]);
    assert_eq!(evs[1]["log"]["flags"], json!(["truncated"]));
    assert!(evs[2]["log"].get("flags").is_none());
    assert_eq!(evs.len(), 3);
    assert_eq!(
        metric(&ship.metrics(), "log_tail_ship_lines_truncated_total"),
        1.0,
        "one line over the cap as read"
    );
}

#[test]
fn docker_json_file_lines_are_decoded_and_split_lines_joined() {
    let dir = support::tempdir();
    let d = pod_dir(dir.path(), "ns", "api-0", "u-1", "app");
    let mut w = Writer::append(&d.join("0.log"));
    let line =
        |log: &str, stream: &str| json!({"log": log, "stream": stream, "time": T1}).to_string();
    w.line(&line("hello \"docker\"\n", "stdout"));
    w.line(&line("long line part one, ", "stderr"));
    w.line(&line("part two\n", "stderr"));
    w.line("{broken json");
    let ship = Ship::start(&["--path", &pods_glob(dir.path()), "--format", "docker"]);
    let evs = ship.wait_message("{broken json");
    let e = by_message(&evs, "hello \"docker\"");
    assert_eq!(e["@timestamp"], T1);
    assert_eq!(e["log"]["iostream"], "stdout");
    assert_eq!(e["kubernetes"]["pod"]["name"], "api-0");
    assert_eq!(
        by_message(&evs, "long line part one, part two")["log"]["iostream"],
        "stderr"
    );
    assert_eq!(by_message(&evs, "{broken json")["error"]["type"], "format");
    assert_eq!(evs.len(), 3);
}

/// The kubelet rotates a container log by renaming `0.log` to
/// `0.log.<timestamp>` and creating a new `0.log`; a later pass gzips the
/// rotated file and deletes it. Every line arrives once, the rotated file
/// is read to its end though the glob does not match its name, and it is
/// closed when the gzip pass deletes it.
#[test]
fn kubelet_rotation_loses_and_duplicates_nothing() {
    let dir = support::tempdir();
    let d = pod_dir(dir.path(), "ns", "web", "u", "app");
    let log = d.join("0.log");
    let mut w = Writer::append(&log);
    let mut expected = Vec::new();
    let mut write = |w: &mut Writer, i: usize| {
        let msg = format!("line {i}");
        w.line(&format!("{T0} stdout F {msg}"));
        expected.push(msg);
    };
    for i in 0..100 {
        write(&mut w, i);
    }
    let mut ship = Ship::start(&["--path", &pods_glob(dir.path()), "--format=cri"]);
    ship.wait_message("line 99");
    let mut rotated = Vec::new();
    for round in 0..3 {
        // Lines written between the rename and the runtime's reopen land
        // in the rotated file.
        let r = d.join(format!("0.log.2024050110000{round}"));
        std::fs::rename(&log, &r).unwrap();
        for i in 0..50 {
            write(&mut w, 1000 * (round + 1) + i);
        }
        w = Writer::append(&log);
        for i in 50..100 {
            write(&mut w, 1000 * (round + 1) + i);
        }
        rotated.push(r);
    }
    w.line(&format!("{T0} stdout F END"));
    expected.push("END".into());
    ship.wait_messages(&expected);
    // The compression pass: gzip replaces each rotated file with a .gz.
    for r in &rotated {
        let out = support::run_cmd(std::process::Command::new("gzip").arg(r));
        assert!(
            out.status.success(),
            "gzip is installed (.ci/packages.d/log-tail-ship)"
        );
    }
    for _ in &rotated {
        ship.sc.wait_for_log("closed file");
    }
    let fds: Vec<String> = std::fs::read_dir(format!("/proc/{}/fd", ship.sc.pid()))
        .unwrap()
        .flatten()
        .map(|fd| {
            std::fs::read_link(fd.path())
                .unwrap_or_default()
                .display()
                .to_string()
        })
        .filter(|t| t.contains("0.log.2024"))
        .collect();
    assert!(fds.is_empty(), "rotated files still open: {fds:?}");
    let got = ship.messages();
    let c = counts(&got);
    let dups: Vec<_> = c.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dups.is_empty(), "duplicates: {dups:?}");
    assert_eq!(got.len(), expected.len());
}

/// Writes `files` into a downwardAPI-style volume the way the kubelet's
/// AtomicWriter does: a new timestamped directory, a `..data` link swapped
/// to it by rename, and top-level links through `..data`.
fn kubelet_write(dir: &Path, round: u32, files: &[(&str, &str)]) {
    let ts = format!("..2024_05_01_10_00_0{round}.000000001");
    std::fs::create_dir_all(dir.join(&ts)).unwrap();
    for (name, content) in files {
        std::fs::write(dir.join(&ts).join(name), content).unwrap();
    }
    let tmp = dir.join("..data_tmp");
    std::os::unix::fs::symlink(&ts, &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    for (name, _) in files {
        let link = dir.join(name);
        if link.symlink_metadata().is_err() {
            std::os::unix::fs::symlink(format!("..data/{name}"), &link).unwrap();
        }
    }
}

#[test]
fn pod_metadata_from_env_and_podinfo_follows_label_changes_and_keeps_the_last_good() {
    let dir = support::tempdir();
    let info = dir.path().join("podinfo");
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&info).unwrap();
    std::fs::create_dir_all(&logs).unwrap();
    kubelet_write(
        &info,
        1,
        &[
            (
                "labels",
                "app.kubernetes.io/name=\"checkout\"\npod-template-hash=\"7d9f\"\n",
            ),
            ("annotations", "note=\"say \\\"hi\\\"\\n\"\n"),
        ],
    );
    let log = logs.join("app.log");
    let mut w = Writer::append(&log);
    w.line("first");
    let mut ship = Ship::start_env(
        &[
            "--path",
            &format!("{}/*.log", logs.display()),
            "--k8s-metadata",
            "--k8s-podinfo-dir",
            info.to_str().unwrap(),
        ],
        &[
            ("POD_NAME", "checkout-7d9f-x1"),
            ("POD_NAMESPACE", "shop"),
            ("POD_UID", "1234-abcd"),
            ("NODE_NAME", "node-a"),
            ("CONTAINER_NAME", "app"),
        ],
    );
    let evs = ship.wait_message("first");
    let e = &evs[0];
    assert_eq!(
        e["kubernetes"],
        json!({
            "pod": {"name": "checkout-7d9f-x1", "uid": "1234-abcd"},
            "namespace": "shop",
            "node": {"name": "node-a"},
            "container": {"name": "app"},
            "labels": {"app_kubernetes_io/name": "checkout", "pod-template-hash": "7d9f"},
            "annotations": {"note": "say \"hi\"\n"},
        })
    );
    assert_eq!(e["service"]["name"], "checkout");

    // The label changes: lines read after the change carry the new value.
    ship.sc.wait_for_log("pod metadata updated");
    kubelet_write(
        &info,
        2,
        &[
            ("labels", "app.kubernetes.io/name=\"checkout-v2\"\n"),
            ("annotations", ""),
        ],
    );
    ship.sc.wait_for_log("pod metadata updated");
    w.line("second");
    let evs = ship.wait_message("second");
    let e = evs.iter().find(|e| e["message"] == "second").unwrap();
    assert_eq!(e["service"]["name"], "checkout-v2");
    assert_eq!(
        e["kubernetes"]["labels"],
        json!({"app_kubernetes_io/name": "checkout-v2"})
    );
    assert!(e["kubernetes"].get("annotations").is_none());

    // A malformed labels file: logged, counted, the last good labels stay.
    kubelet_write(&info, 3, &[("labels", "app.kubernetes.io/name=unquoted\n")]);
    ship.sc.wait_for_log("malformed podinfo file");
    assert_eq!(
        metric(&ship.metrics(), "log_tail_ship_podinfo_errors_total"),
        1.0
    );
    w.line("third");
    let evs = ship.wait_message("third");
    let e = evs.iter().find(|e| e["message"] == "third").unwrap();
    assert_eq!(e["service"]["name"], "checkout-v2");
    assert_eq!(ship.stop(), Some(0));
}

#[test]
fn podinfo_dir_needs_k8s_metadata_and_must_exist() {
    let out = support::run(&[
        "log-tail-ship",
        "--admin-addr=off",
        "--path=/tmp/x.log",
        "--k8s-podinfo-dir=/tmp",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--k8s-metadata"));
    let out = support::run(&[
        "log-tail-ship",
        "--admin-addr=off",
        "--path=/tmp/x.log",
        "--k8s-metadata",
        "--k8s-podinfo-dir=/nonexistent/podinfo",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--k8s-podinfo-dir"));
}
