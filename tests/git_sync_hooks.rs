//! git-sync's hooks: exechook (real child processes) and webhook (a real
//! HTTP receiver), periodic and `--one-time`. Ports upstream's e2e hook cases.

#[path = "git_sync/helpers.rs"]
mod helpers;
mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use helpers::{metric, Setup};
use support::http::Receiver;

/// A hook script that appends `$GITSYNC_HASH $PWD $INHERITED` to `log` and
/// exits with `code`.
fn hook_script(dir: &Path, log: &Path, code: i32) -> PathBuf {
    let path = dir.join("hook.sh");
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\necho \"$GITSYNC_HASH $PWD $INHERITED\" >> {}\nexit {code}\n",
            log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

#[test]
fn exechook_runs_in_the_new_worktree_on_start_and_on_change() {
    let s = Setup::new();
    let sha1 = s.up.commit("one");
    let log = s.tmp.path().join("hook.log");
    let script = hook_script(s.tmp.path(), &log, 0);
    let args = s.args(&[
        "--period=100ms",
        &format!("--exechook-command={}", script.display()),
    ]);
    let mut cmd = std::process::Command::new(support::bin());
    cmd.arg("git-sync")
        .args(&args)
        .arg("--admin-addr=127.0.0.1:0")
        .env("INHERITED", "yes");
    let mut sc = support::Sidecar::spawn(&mut cmd);
    let admin = sc.admin_addr();
    support::wait_until("first hook run", || lines(&log).len() == 1);
    let root = s.root.canonicalize().unwrap();
    assert_eq!(
        lines(&log)[0],
        format!("{sha1} {}/.worktrees/{sha1} yes", root.display())
    );
    let sha2 = s.up.commit("two");
    support::wait_until("second hook run", || lines(&log).len() == 2);
    assert!(lines(&log)[1].starts_with(&format!("{sha2} ")));
    support::wait_until("hook metric", || {
        metric(
            admin,
            "git_sync_hook_run_count_total{name=\"exechook\",status=\"success\"}",
        ) == Some(2.0)
    });
}

#[test]
fn failing_exechook_is_retried() {
    let s = Setup::new();
    s.up.commit("one");
    let log = s.tmp.path().join("hook.log");
    let script = hook_script(s.tmp.path(), &log, 1);
    let mut sc = s.start(&[
        "--period=100ms",
        &format!("--exechook-command={}", script.display()),
        "--exechook-backoff=1s",
    ]);
    let admin = sc.admin_addr();
    support::wait_until("a retried hook", || lines(&log).len() >= 2);
    // The metric follows the process exit, just after the log line.
    support::wait_until("two failed runs counted", || {
        metric(
            admin,
            "git_sync_hook_run_count_total{name=\"exechook\",status=\"error\"}",
        )
        .is_some_and(|n| n >= 2.0)
    });
}

#[test]
fn one_time_exechook_runs_once_and_its_failure_fails_the_process() {
    let s = Setup::new();
    let sha = s.up.commit("one");
    let log = s.tmp.path().join("hook.log");
    let script = hook_script(s.tmp.path(), &log, 0);
    let out = s.run_once(&[&format!("--exechook-command={}", script.display())]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(lines(&log).len(), 1);

    let log2 = s.tmp.path().join("hook2.log");
    let dir2 = s.tmp.path().join("h2");
    std::fs::create_dir_all(&dir2).unwrap();
    let failing = hook_script(&dir2, &log2, 1);
    let out = s.run_once(&[&format!("--exechook-command={}", failing.display())]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(lines(&log2).len(), 1, "ran once, no retry");
    assert_eq!(
        s.published(),
        sha,
        "content synced despite the hook failure"
    );
}

#[test]
fn webhook_gets_the_hash_on_start_and_on_change() {
    let s = Setup::new();
    let sha1 = s.up.commit("one");
    let rx = Receiver::start();
    let _sc = s.start(&[
        "--period=100ms",
        &format!("--webhook-url={}", rx.url("/hook")),
    ]);
    let r = rx.next();
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/hook");
    assert_eq!(r.header("Gitsync-Hash"), Some(sha1.as_str()));
    let sha2 = s.up.commit("two");
    let r = rx.next();
    assert_eq!(r.header("Gitsync-Hash"), Some(sha2.as_str()));
}

#[test]
fn failing_webhook_is_retried_until_it_succeeds() {
    let s = Setup::new();
    let sha = s.up.commit("one");
    let rx = Receiver::with(|_| (500, "no".into()));
    let _sc = s.start(&[
        "--period=100ms",
        &format!("--webhook-url={}", rx.url("/")),
        "--webhook-method=PUT",
        "--webhook-backoff=1s",
    ]);
    assert_eq!(rx.next().method, "PUT");
    assert_eq!(rx.next().header("Gitsync-Hash"), Some(sha.as_str()));
    rx.set_response(|_| (200, String::new()));
    // Retried until a success; then no more calls for this hash.
    loop {
        let r = rx.next();
        assert_eq!(r.header("Gitsync-Hash"), Some(sha.as_str()));
        if rx.next_within(Duration::from_secs(3)).is_none() {
            break;
        }
    }
}

#[test]
fn one_time_webhook_hits_once_and_fails_the_process_on_error() {
    let s = Setup::new();
    s.up.commit("one");
    let rx = Receiver::with(|_| (500, String::new()));
    let out = s.run_once(&[&format!("--webhook-url={}", rx.url("/"))]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(rx.drain().len(), 1);
    assert!(s.link().exists());

    // Fire and forget: a 404 is fine with --webhook-success-status=0.
    let rx = Receiver::with(|_| (404, String::new()));
    let out = s.run_once(&[
        &format!("--webhook-url={}", rx.url("/")),
        "--webhook-success-status=0",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    rx.next();
}

#[test]
fn hook_flags_are_validated() {
    let s = Setup::new();
    for flag in ["--exechook-timeout=500ms", "--exechook-backoff=0s"] {
        let out = support::run(&[
            "git-sync",
            "--admin-addr=off",
            &format!("--repo={}", s.up.url()),
            &s.root_arg(),
            "--exechook-command=/bin/true",
            flag,
        ]);
        assert_eq!(out.status.code(), Some(2), "{flag}");
        let name = flag.split('=').next().unwrap();
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(name),
            "{flag}"
        );
    }
}
