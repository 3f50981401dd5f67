//! git-sync against real repositories (file:// and git daemon), checked with
//! the real git CLI. Ports of upstream's e2e cases where they apply.

#[path = "git_sync/helpers.rs"]
mod helpers;
mod support;

use std::process::Command;

use helpers::{git, metric, Setup};
use support::{http, Sidecar};

#[test]
fn one_time_sync_publishes_a_real_worktree_in_a_new_root() {
    let s = Setup::new();
    s.up.commit("one");
    s.up.commit("two");
    let sha = s.up.commit("three");
    // A missing, nested root is created (init_root_doesnt_exist).
    let root = s.tmp.path().join("a/b/../root");
    let out = support::run(&[
        "git-sync",
        "--admin-addr=off",
        "--one-time",
        &format!("--repo={}", s.up.url()),
        &format!("--root={}", root.display()),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let link = s.tmp.path().join("a/root/repo");
    assert_eq!(std::fs::read_to_string(link.join("file")).unwrap(), "three");
    assert_eq!(git(&link, &["rev-parse", "HEAD"]), sha);
    assert_eq!(
        std::fs::read_link(&link).unwrap().to_str().unwrap(),
        format!(".worktrees/{sha}")
    );
    // Default depth 1 (sync_depth_default_shallow).
    assert_eq!(git(&link, &["rev-list", "HEAD"]).lines().count(), 1);
    assert_eq!(git(&link, &["status", "--porcelain"]), "");
    git(
        &s.tmp.path().join("a/root"),
        &["fsck", "--no-progress", "--connectivity-only"],
    );
}

#[test]
fn follows_a_branch_forward_and_backward_and_cleans_up() {
    let s = Setup::new();
    let sha1 = s.up.commit("one");
    let mut sc = s.start(&["--period=100ms", "--ref=e2e-branch"]);
    let admin = sc.admin_addr();
    s.wait_for_sync();
    assert_eq!(s.published(), sha1);
    s.assert_real_worktree(&sha1);
    assert_eq!(
        metric(admin, "git_sync_count_total{status=\"success\"}"),
        Some(1.0)
    );
    assert_eq!(metric(admin, "git_fetch_count_total"), Some(1.0));

    let sha2 = s.up.commit("two");
    s.wait_for_sync();
    assert_eq!(s.published(), sha2);
    assert_eq!(s.content(), "two");
    s.assert_real_worktree(&sha2);

    // Force-push backwards (sync_branch rewind).
    s.up.git(&["reset", "-q", "--hard", &sha1]);
    s.wait_for_sync();
    assert_eq!(s.published(), sha1);
    assert_eq!(s.content(), "one");
    s.assert_real_worktree(&sha1);
    assert_eq!(
        metric(admin, "git_sync_count_total{status=\"success\"}"),
        Some(3.0)
    );
    assert_eq!(metric(admin, "git_fetch_count_total"), Some(3.0));
    // Polls that find nothing new count as noop and do not download.
    support::wait_until("a noop poll", || {
        metric(admin, "git_sync_count_total{status=\"noop\"}").is_some()
    });
    assert_eq!(metric(admin, "git_fetch_count_total"), Some(3.0));

    // Stale worktrees are gone (default timeout 0) and the repo is consistent.
    let wts: Vec<_> = std::fs::read_dir(s.root.join(".worktrees"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(wts, vec![std::ffi::OsString::from(&sha1)]);
    git(&s.root, &["fsck", "--no-progress"]);
    assert_eq!(git(&s.root, &["worktree", "list"]).lines().count(), 2);
}

#[test]
fn tags_annotated_tags_hashes_and_head() {
    let s = Setup::new();
    let sha1 = s.up.commit("one");
    s.up.git(&["tag", "light"]);
    s.up.git(&["tag", "-a", "-m", "annotated", "annotated"]);
    let sha2 = s.up.commit("two");
    s.up.commit("three");

    for (r, want) in [
        ("light", &sha1),
        ("annotated", &sha1),
        (sha2.as_str(), &sha2),
        ("HEAD", &s.up.head()),
    ] {
        let out = s.run_once(&[&format!("--ref={r}")]);
        assert!(
            out.status.success(),
            "--ref={r}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(&s.published(), want, "--ref={r}");
        s.assert_real_worktree(want);
    }

    // A tag moved back is followed (sync_tag).
    let mut sc = s.start(&["--period=100ms", "--ref=annotated"]);
    s.wait_for_sync();
    s.up.git(&["tag", "-f", "-a", "-m", "moved", "annotated", &sha2]);
    s.wait_for_sync();
    assert_eq!(s.published(), sha2);
    s.up.git(&["tag", "-f", "-a", "-m", "back", "annotated", &sha1]);
    s.wait_for_sync();
    assert_eq!(s.published(), sha1);
    sc.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(sc.wait_exit().success());
}

#[test]
fn sha_ref_stops_after_the_first_sync() {
    let s = Setup::new();
    let sha1 = s.up.commit("one");
    s.up.commit("two");
    let mut sc = s.start(&["--period=100ms", &format!("--ref={sha1}")]);
    s.wait_for_sync();
    assert_eq!(s.published(), sha1);
    sc.wait_for_log("no further sync needed");
}

#[test]
fn bad_ref_fails_and_writes_the_error_file() {
    let s = Setup::new();
    s.up.commit("one");
    let out = s.run_once(&["--ref=does-not-exist", "--error-file=error.json"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(!s.link().exists());
    let err = std::fs::read_to_string(s.root.join("error.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&err).unwrap();
    assert!(
        json["Err"]
            .as_str()
            .unwrap()
            .contains("couldn't find remote ref"),
        "{err}"
    );
    assert!(json["Msg"].is_string());
    // The log line's key/values, an object as upstream's.
    assert_eq!(
        json["Args"],
        serde_json::json!({ "failCount": 1, "maxFailures": 0 })
    );

    // A later success deletes it (export_error); absolute path in a new dir.
    let abs = s.tmp.path().join("dir/error.json");
    let out = s.run_once(&[
        "--ref=does-not-exist",
        &format!("--error-file={}", abs.display()),
    ]);
    assert!(!out.status.success());
    assert!(abs.exists());
    let out = s.run_once(&[&format!("--error-file={}", abs.display())]);
    assert!(out.status.success());
    assert!(!abs.exists());
}

#[test]
fn max_failures_counts_consecutive_failures() {
    let s = Setup::new();
    let missing = s.tmp.path().join("missing");
    let mut sc = Sidecar::start(
        "git-sync",
        &[
            &format!("--repo=file://{}", missing.display()),
            &s.root_arg(),
            "--period=10ms",
            "--max-failures=3",
        ],
    );
    let st = sc.wait_exit();
    assert_eq!(st.code(), Some(1));
    let tries = sc
        .stderr()
        .matches("error syncing repo, will retry")
        .count();
    assert_eq!(tries, 2, "{}", sc.stderr());
    assert!(sc.logged("too many failures"));
}

#[test]
fn env_vars_and_legacy_names() {
    let s = Setup::new();
    let sha = s.up.commit("one");
    let out = support::run_cmd(
        Command::new(support::bin())
            .args(["git-sync", "--admin-addr=off"])
            .env("GITSYNC_REPO", s.up.url())
            .env("GIT_SYNC_ROOT", &s.root)
            .env("GITSYNC_LINK", "new-name")
            .env("GIT_SYNC_LINK", "legacy-name")
            .env("GITSYNC_ONE_TIME", "true")
            .env("GITSYNC_REF", "e2e-branch"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The legacy name wins, as upstream v4.4+.
    assert!(s.root.join("legacy-name").exists());
    assert!(!s.root.join("new-name").exists());
    assert_eq!(
        git(&s.root.join("legacy-name"), &["rev-parse", "HEAD"]),
        sha
    );
}

#[test]
fn bad_and_unsupported_flags_exit_2_naming_them() {
    let s = Setup::new();
    for (flag, needle) in [
        ("--filter=blob:none", "--filter"),
        ("--git=/usr/bin/git-wrapper", "--git"),
        ("--period=5ms", "--period"),
        ("--depth=-1", "--depth"),
        ("--one-time=maybe", "--one-time"),
        ("--submodules=some", "--submodules"),
        ("--git-gc=sometimes", "--git-gc"),
        ("--http-metrics", "--http-bind"),
        ("--cookie-file", "--cookie-file"),
        ("--github-app-client-id=x", "--github-app-client-id"),
    ] {
        let out = support::run(&[
            "git-sync",
            "--admin-addr=off",
            &format!("--repo={}", s.up.url()),
            &s.root_arg(),
            flag,
        ]);
        assert_eq!(out.status.code(), Some(2), "{flag}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{flag}: {err}");
    }
    let out = support::run(&["git-sync", "--admin-addr=off", &s.root_arg()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--repo"));
}

#[test]
fn depth_changes_across_restarts() {
    let s = Setup::new();
    for i in 0..4 {
        s.up.commit(&format!("c{i}"));
    }
    for (depth, want) in [("1", 1), ("2", 2), ("1", 1), ("0", 4)] {
        let out = s.run_once(&[&format!("--depth={depth}")]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(s.rev_count(), want, "--depth={depth}");
        git(&s.root, &["fsck", "--no-progress", "--connectivity-only"]);
    }
}

#[test]
fn repairs_what_a_crash_or_tampering_left() {
    let s = Setup::new();
    let sha1 = s.up.commit("one");
    assert!(s.run_once(&[]).status.success());

    // A leftover temporary link and a half-made worktree for the next hash.
    let sha2 = s.up.commit("two");
    std::os::unix::fs::symlink("nowhere", s.root.join("tmp-link")).unwrap();
    let half = s.root.join(".worktrees").join(&sha2);
    std::fs::create_dir_all(&half).unwrap();
    std::fs::write(half.join("partial"), "x").unwrap();
    std::fs::write(s.root.join(".worktrees/not_a_directory"), "junk").unwrap();
    assert!(s.run_once(&[]).status.success());
    assert_eq!(s.published(), sha2);
    assert!(!half.join("partial").exists());
    assert!(!s.root.join("tmp-link").exists());
    assert!(!s.root.join(".worktrees/not_a_directory").exists());
    s.assert_real_worktree(&sha2);

    // The link deleted (sync_crash_no_link_cleanup_retry).
    std::fs::remove_file(s.link()).unwrap();
    assert!(s.run_once(&[]).status.success());
    assert_eq!(s.published(), sha2);

    // The worktrees deleted (sync_crash_no_worktree_cleanup_retry).
    std::fs::remove_dir_all(s.root.join(".worktrees")).unwrap();
    assert!(s.run_once(&[]).status.success());
    assert_eq!(s.content(), "two");
    s.assert_real_worktree(&sha2);

    // A broken repository is re-initialised (init_root_fails_sanity).
    std::fs::write(s.root.join(".git/HEAD"), "ref: refs/heads/nonexistent\n").unwrap();
    assert!(s.run_once(&[]).status.success());
    s.assert_real_worktree(&sha2);

    // A commit made inside the worktree is undone (sync_recover_wrong_worktree_hash).
    let mut sc = s.start(&["--period=100ms"]);
    s.wait_for_sync();
    std::fs::write(s.link().join("file"), "local change").unwrap();
    git(&s.link(), &["commit", "-qam", "local"]);
    s.wait_for_sync();
    assert_eq!(s.content(), "two");
    s.assert_real_worktree(&sha2);
    sc.wait_for_log("worktree is missing or broken");
    let _ = sha1;
}

#[test]
fn root_inside_another_repo_is_wiped_and_synced() {
    let s = Setup::new();
    let sha = s.up.commit("one");
    let parent = s.tmp.path().join("parent");
    std::fs::create_dir_all(&parent).unwrap();
    git(&parent, &["init", "-q"]);
    let root = parent.join("root");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("junk"), "x").unwrap();
    let out = support::run(&[
        "git-sync",
        "--admin-addr=off",
        "--one-time",
        &format!("--repo={}", s.up.url()),
        &format!("--root={}", root.display()),
        "--link=link",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!root.join("junk").exists());
    assert_eq!(git(&root.join("link"), &["rev-parse", "HEAD"]), sha);
}

#[test]
fn absolute_and_nested_links_outside_root() {
    let s = Setup::new();
    let sha = s.up.commit("one");
    let link = s.tmp.path().join("other/dir/link");
    let out = s.run_once(&[&format!("--link={}", link.display())]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(git(&link, &["rev-parse", "HEAD"]), sha);
    assert!(std::fs::read_link(&link).unwrap().is_relative());
    let out = s.run_once(&["--link=sub/dir/link"]);
    assert!(out.status.success());
    assert_eq!(
        git(&s.root.join("sub/dir/link"), &["rev-parse", "HEAD"]),
        sha
    );
}

#[test]
fn over_git_daemon_shallow_and_by_hash() {
    let s = Setup::new();
    let sha1 = s.up.commit("one");
    s.up.commit("two");
    s.up.commit("three");
    // Fetching an unadvertised hash needs the server's consent (upstream #917).
    s.up.git(&["config", "uploadpack.allowReachableSHA1InWant", "true"]);
    let (_daemon, port) = helpers::git_daemon(s.tmp.path());
    let url = format!("git://127.0.0.1:{port}/repo");
    let mut sc = Sidecar::start(
        "git-sync",
        &[
            &format!("--repo={url}"),
            &s.root_arg(),
            "--link=link",
            "--touch-file=_sync_lock",
            "--period=100ms",
        ],
    );
    s.wait_for_sync();
    assert_eq!(s.content(), "three");
    assert_eq!(s.rev_count(), 1);
    s.assert_real_worktree(&s.up.head());
    let sha4 = s.up.commit("four");
    s.wait_for_sync();
    assert_eq!(s.published(), sha4);
    assert_eq!(s.rev_count(), 1);
    git(&s.root, &["fsck", "--no-progress"]);
    sc.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(sc.wait_exit().success());

    let out = support::run(&[
        "git-sync",
        "--admin-addr=off",
        "--one-time",
        &format!("--repo={url}"),
        &s.root_arg(),
        "--link=link",
        &format!("--ref={sha1}"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(s.published(), sha1);
    s.assert_real_worktree(&sha1);
}

#[test]
fn disk_stays_bounded_with_depth_1() {
    // Upstream's gc_default: commits that each replace a 4 MiB random blob.
    let s = Setup::new();
    let blob = |seed: u8| -> Vec<u8> {
        let mut x: u64 = 0x9E3779B97F4A7C15 ^ seed as u64;
        (0..4 << 20)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    };
    s.up.commit_file("big", &blob(1));
    let mut sc = s.start(&["--period=100ms"]);
    s.wait_for_sync();
    for seed in 2..5 {
        s.up.commit_file("big", &blob(seed));
        s.wait_for_sync();
    }
    let du = Command::new("du")
        .args(["-sk"])
        .arg(&s.root)
        .output()
        .unwrap();
    let kb: u64 = String::from_utf8_lossy(&du.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    // One 4 MiB blob packed plus one checked out: upstream's 7000-9000 KB.
    assert!((7000..=9000).contains(&kb), "root uses {kb} KB");
    git(&s.root, &["fsck", "--no-progress"]);
    sc.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(sc.wait_exit().success());
}

#[test]
fn http_bind_readiness_and_metrics() {
    let s = Setup::new();
    s.up.commit("one");
    let mut sc = s.start(&[
        "--period=100ms",
        "--http-bind=127.0.0.1:0",
        "--http-metrics",
        "--http-pprof",
    ]);
    let admin = sc.admin_addr();
    let line = sc.wait_for_log("serving HTTP");
    let addr = support::addr_field(&line, "endpoint=").unwrap();
    s.wait_for_sync();
    assert_eq!(http::get(addr, "/").status, 200);
    let m = support::metrics::scrape(addr);
    assert!(
        m.contains("git_sync_count_total{status=\"success\"} 1"),
        "{m}"
    );
    assert!(m.contains("git_sync_duration_seconds"), "{m}");
    assert_eq!(http::get(addr, "/debug/pprof/").status, 200);
    assert_eq!(http::get(admin, "/readyz").status, 200);
}

#[test]
fn http_bind_is_not_ready_before_the_first_sync() {
    let s = Setup::new();
    // No repository yet: every sync fails, so the endpoint stays 503.
    let mut sc = Sidecar::start(
        "git-sync",
        &[
            &format!("--repo=file://{}", s.tmp.path().join("missing").display()),
            &s.root_arg(),
            "--period=50ms",
            "--max-failures=-1",
            "--http-bind=127.0.0.1:0",
        ],
    );
    let admin = sc.admin_addr();
    let line = sc.wait_for_log("serving HTTP");
    let addr = support::addr_field(&line, "endpoint=").unwrap();
    sc.wait_for_log("error syncing repo");
    let r = http::get(addr, "/");
    assert_eq!(r.status, 503);
    assert!(r.text().contains("repo is not ready"));
    assert_eq!(http::get(admin, "/readyz").status, 503);
}

#[test]
fn sync_on_demand_by_signal_and_post() {
    let s = Setup::new();
    s.up.commit("one");
    let token = s.tmp.path().join("token");
    std::fs::write(&token, "s3cret\n").unwrap();
    let mut sc = s.start(&[
        "--period=100s",
        "--sync-on-signal=HUP",
        &format!("--sync-token-file={}", token.display()),
    ]);
    let admin = sc.admin_addr();
    s.wait_for_sync();

    let sha2 = s.up.commit("two");
    sc.signal(nix::sys::signal::Signal::SIGHUP);
    s.wait_for_sync();
    assert_eq!(s.published(), sha2);

    let sha3 = s.up.commit("three");
    let denied = http::request(admin, "POST", "/sync", &[], b"");
    assert_eq!(denied.status, 401);
    let ok = http::request(
        admin,
        "POST",
        "/sync",
        &[("authorization", "Bearer s3cret")],
        b"",
    );
    assert_eq!(ok.status, 202);
    s.wait_for_sync();
    assert_eq!(s.published(), sha3);
}

#[test]
fn readiness_expires_with_ready_max_staleness() {
    let s = Setup::new();
    s.up.commit("one");
    // Syncs succeed once, then the repository disappears: readiness must drop.
    let mut sc = s.start(&[
        "--period=50ms",
        "--max-failures=-1",
        "--ready-max-staleness=300ms",
    ]);
    let admin = sc.admin_addr();
    s.wait_for_sync();
    assert!(metric(admin, "git_sync_last_success_timestamp_seconds").unwrap() > 0.0);
    std::fs::remove_dir_all(&s.up.dir).unwrap();
    sc.wait_for_log("last successful sync is too old");
    assert_eq!(http::get(admin, "/readyz").status, 503);
}

#[test]
fn accepts_upstream_e2e_harness_flags() {
    // The flags upstream's e2e suite passes to every run.
    let s = Setup::new();
    let sha = s.up.commit("one");
    let out = s.run_once(&[
        "-v=6",
        "--add-user",
        "--group-write",
        "--git-config-add=protocol.file.allow:always",
        "--git-config-add=safe.directory:*",
        "--git-config=http.lowSpeedLimit:1,\"core.quotePath\":\"false\"",
        "--http-bind=127.0.0.1:0",
        "--http-metrics",
        "--http-pprof",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    s.assert_real_worktree(&sha);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(s.root.join(".worktrees"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o020,
        0o020,
        "--group-write makes directories group-writable"
    );
}

#[test]
fn v3_layout_is_upgraded_in_place() {
    let s = Setup::new();
    let sha = s.up.commit("one");
    std::fs::create_dir_all(s.root.join(&sha)).unwrap();
    std::fs::write(s.root.join(&sha).join("file"), "v3").unwrap();
    std::os::unix::fs::symlink(&sha, s.link()).unwrap();
    let out = s.run_once(&[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_link(s.link()).unwrap().to_str().unwrap(),
        format!(".worktrees/{sha}")
    );
    assert!(!s.root.join(&sha).exists());
    s.assert_real_worktree(&sha);
}

#[test]
fn stale_worktrees_are_kept_for_the_timeout() {
    let s = Setup::new();
    let sha1 = s.up.commit("one");
    assert!(s
        .run_once(&["--stale-worktree-timeout=1h"])
        .status
        .success());
    let sha2 = s.up.commit("two");
    assert!(s
        .run_once(&["--stale-worktree-timeout=1h"])
        .status
        .success());
    assert_eq!(s.published(), sha2);
    let old = s.root.join(".worktrees").join(&sha1);
    assert!(old.is_dir(), "replaced worktree kept within the timeout");
    git(&old, &["rev-parse", "HEAD"]);
    // Once older than the timeout it goes (its mtime starts the clock).
    let st = Command::new("touch")
        .args(["-d", "2 hours ago"])
        .arg(&old)
        .status()
        .unwrap();
    assert!(st.success());
    assert!(s
        .run_once(&["--stale-worktree-timeout=1h"])
        .status
        .success());
    assert!(!old.exists());
    assert!(!s.root.join(".git/worktrees").join(&sha1).exists());
    git(&s.root, &["fsck", "--no-progress"]);
}

#[test]
fn sync_timeout_bounds_a_stuck_server() {
    // A git:// server that accepts and never answers (error_slow_git_short_timeout).
    let s = Setup::new();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in listener.incoming().flatten() {
            held.push(c);
        }
    });
    let out = support::run(&[
        "git-sync",
        "--admin-addr=off",
        "--one-time",
        &format!("--repo=git://127.0.0.1:{port}/repo"),
        &s.root_arg(),
        "--sync-timeout=1s",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("timed out") || err.contains("timeout"),
        "{err}"
    );
    assert!(!s.root.join("repo").exists());
}

#[test]
fn runs_as_a_uid_without_passwd_entry_and_empty_env() {
    if !support::require_root("switching to an unknown uid") {
        return;
    }
    let s = Setup::new();
    let sha = s.up.commit("one");
    // The upstream is owned by root: ownership checks must not refuse it.
    let st = Command::new("chmod")
        .args(["-R", "a+rwX"])
        .arg(s.tmp.path())
        .status()
        .unwrap();
    assert!(st.success());
    let out = support::run_cmd(
        Command::new("setpriv")
            .args(["--reuid=54321", "--regid=54321", "--clear-groups"])
            .arg(support::bin())
            .args(["git-sync", "--admin-addr=off", "--one-time", "--link=link"])
            .arg(format!("--repo={}", s.up.url()))
            .arg(s.root_arg())
            .env_clear(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Owned by another uid: the CLI (as root) needs safe.directory.
    let link = s.link();
    assert_eq!(
        git(&link, &["-c", "safe.directory=*", "rev-parse", "HEAD"]),
        sha
    );
    assert_eq!(
        git(&link, &["-c", "safe.directory=*", "status", "--porcelain"]),
        ""
    );
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(s.root.join(".git")).unwrap().uid(), 54321);
}

#[test]
fn checkout_keeps_modes_symlinks_and_attributes() {
    use std::os::unix::fs::PermissionsExt;
    let s = Setup::new();
    s.up.commit_file("dir/sub/deep.txt", b"deep");
    s.up.commit_file("run.sh", b"#!/bin/sh\necho hi\n");
    std::fs::set_permissions(
        s.up.dir.join("run.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::os::unix::fs::symlink("dir/sub/deep.txt", s.up.dir.join("alias")).unwrap();
    s.up.git(&["add", "-A"]);
    s.up.git(&["commit", "-q", "-m", "modes"]);
    let sha = s.up.head();
    assert!(s.run_once(&[]).status.success());
    s.assert_real_worktree(&sha);
    let link = s.link();
    assert_eq!(
        std::fs::read_link(link.join("alias")).unwrap().to_str(),
        Some("dir/sub/deep.txt")
    );
    assert_eq!(std::fs::read_to_string(link.join("alias")).unwrap(), "deep");
    let mode = std::fs::metadata(link.join("run.sh"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o111, 0o111, "executable bit kept");

    // A tree with .gitattributes goes through libgit2's filtering checkout.
    let sha2 = s.up.commit_file(".gitattributes", b"*.txt text\n");
    assert!(s.run_once(&[]).status.success());
    s.assert_real_worktree(&sha2);
}

#[test]
fn a_crafted_tree_cannot_escape_the_worktree() {
    // A tree entry named ".." (git itself refuses to create one): the sync
    // must fail without writing outside .worktrees/<sha>.
    let s = Setup::new();
    s.up.commit("one");
    let payload = s.tmp.path().join("payload");
    std::fs::write(&payload, "escaped").unwrap();
    let blob = s.up.git(&["hash-object", "-w", payload.to_str().unwrap()]);
    let mut raw = b"100644 ..\0".to_vec();
    raw.extend((0..20).map(|i| u8::from_str_radix(&blob[2 * i..2 * i + 2], 16).unwrap()));
    let tree_file = s.tmp.path().join("tree.bin");
    std::fs::write(&tree_file, &raw).unwrap();
    let tree = s.up.git(&[
        "hash-object",
        "-w",
        "-t",
        "tree",
        "--literally",
        tree_file.to_str().unwrap(),
    ]);
    let commit = s.up.git(&["commit-tree", &tree, "-m", "evil"]);
    s.up.git(&["update-ref", "refs/heads/evil", &commit]);
    let out = s.run_once(&["--ref=evil"]);
    assert!(
        !out.status.success(),
        "a '..' entry must not be checked out"
    );
    assert!(!s.root.join(".worktrees/..").is_file());
    assert!(!s.root.join("..").join("..").is_file());
    assert!(!s.link().exists());
}

#[test]
fn sparse_checkout_file() {
    // Upstream's sparse_checkout case: only file2 is checked out.
    let s = Setup::new();
    s.up.commit_file("file", b"one");
    s.up.commit_file("file2", b"two");
    s.up.commit_file("dir/file3", b"three");
    let sha = s.up.head();
    let patterns = s.tmp.path().join("sparse");
    std::fs::write(&patterns, "!/*\n!/*/\nfile2\n").unwrap();
    let out = s.run_once(&[&format!("--sparse-checkout-file={}", patterns.display())]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let link = s.link();
    assert_eq!(std::fs::read_to_string(link.join("file2")).unwrap(), "two");
    assert!(!link.join("file").exists());
    assert!(!link.join("dir").exists());
    // git sees the excluded files as skipped, not deleted.
    assert_eq!(git(&link, &["rev-parse", "HEAD"]), sha);
    assert_eq!(git(&link, &["status", "--porcelain"]), "");
    let skipped = git(&link, &["ls-files", "-t"]);
    assert!(
        skipped.contains("S file") && skipped.contains("H file2"),
        "{skipped}"
    );

    // A restart with another sparse file applies it to the published
    // worktree (same commit, same directory), as upstream's configureWorktree.
    let wt = std::fs::canonicalize(&link).unwrap();
    std::fs::write(&patterns, "!/*\n!/*/\ndir/\n").unwrap();
    let out = s.run_once(&[&format!("--sparse-checkout-file={}", patterns.display())]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(s.published(), sha);
    assert_eq!(std::fs::canonicalize(&link).unwrap(), wt);
    assert_eq!(
        std::fs::read_to_string(link.join("dir/file3")).unwrap(),
        "three"
    );
    assert!(!link.join("file2").exists());
    assert_eq!(git(&link, &["status", "--porcelain"]), "");
    let listed = git(&link, &["ls-files", "-t"]);
    assert!(
        listed.contains("S file2") && listed.contains("H dir/file3"),
        "{listed}"
    );
    let info = s
        .root
        .join(".git/worktrees")
        .join(&sha)
        .join("info/sparse-checkout");
    assert!(std::fs::read_to_string(info).unwrap().contains("dir/"));
}

#[test]
fn a_busy_default_admin_port_does_not_stop_git_sync() {
    // Pod specs written for upstream set no admin address; two git-syncs in
    // one Pod (one network namespace) must both run.
    let s = Setup::new();
    s.up.commit("one");
    let held = std::net::TcpListener::bind("0.0.0.0:9540");
    let out = support::run(&[
        "git-sync",
        "--one-time",
        &format!("--repo={}", s.up.url()),
        &s.root_arg(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    if held.is_ok() {
        assert!(String::from_utf8_lossy(&out.stderr).contains("admin server off"));
    }
}

#[test]
fn init_max_failures_applies_before_the_first_success() {
    let s = Setup::new();
    let missing = s.tmp.path().join("missing");
    let mut sc = Sidecar::start(
        "git-sync",
        &[
            &format!("--repo=file://{}", missing.display()),
            &s.root_arg(),
            "--period=100s",
            "--init-period=10ms",
            "--init-max-failures=2",
            "--max-failures=-1",
        ],
    );
    // --init-period, not --period, paces the retries before the first success.
    assert_eq!(sc.wait_exit().code(), Some(1));
    assert_eq!(
        sc.stderr()
            .matches("error syncing repo, will retry")
            .count(),
        1
    );
}

#[test]
fn config_errors_go_to_the_error_file_too() {
    let s = Setup::new();
    let out = support::run(&[
        "git-sync",
        "--admin-addr=off",
        &format!("--repo={}", s.up.url()),
        &s.root_arg(),
        "--error-file=err.txt",
        "--period=1ms",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let text = std::fs::read_to_string(s.root.join("err.txt")).unwrap();
    assert!(text.contains("--period"), "{text}");
}

/// A git daemon started by a test goes with it, children included: a client
/// that holds a connection open keeps an upload-pack child alive, and
/// dropping the peer (as a failing test's unwinding does) kills the group.
#[test]
fn git_daemon_and_its_children_do_not_outlive_the_test() {
    use std::io::{Read, Write};
    let s = Setup::new();
    s.up.commit("one");
    let (daemon, port) = helpers::git_daemon(s.tmp.path());
    let pgid = daemon.0.id();
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let req = "git-upload-pack /repo\0host=127.0.0.1\0";
    write!(conn, "{:04x}{req}", req.len() + 4).unwrap();
    // The ref advertisement comes from the forked child.
    let mut first = [0u8; 4];
    conn.read_exact(&mut first).unwrap();
    assert!(
        helpers::group_members(pgid).len() >= 2,
        "no upload-pack child in the daemon's group"
    );
    drop(daemon);
    support::wait_until("the daemon's group to be gone", || {
        helpers::group_members(pgid).is_empty()
    });
}

/// Publishing a change reuses the previous worktree's unmodified files
/// (cloned, never hard-linked) and writes the rest from the commit: the new
/// tree is exactly the commit's, even when someone edited the old one.
#[test]
fn a_change_reuses_unmodified_files_and_publishes_exactly_the_commit() {
    use std::os::unix::fs::MetadataExt;
    let s = Setup::new();
    s.up.write_files(200, 10);
    // A large file is cloned (reflink or kernel copy); small ones are cloned
    // only where the filesystem can reflink.
    let big: String = (0..20_000).map(|i| format!("{i:05}\n")).collect();
    std::fs::write(s.up.dir.join("big"), &big).unwrap();
    s.up.commit("one");
    let mut sc = s.start(&["--period=100ms", "--log-level=sidecar_git_sync=debug,info"]);
    s.wait_for_sync();
    let old = std::fs::canonicalize(s.link()).unwrap();
    let old_ino = |f: &str| std::fs::metadata(old.join(f)).unwrap().ino();
    let old_inos = [old_ino("big"), old_ino("d3/f3")];
    // A consumer edits two files of the published tree (same size: only the
    // stat data tells), and adds one.
    std::fs::write(old.join("d1/f1"), "FILE 1\n").unwrap();
    std::fs::write(old.join("d2/f2"), "edited and longer\n").unwrap();
    std::fs::write(old.join("untracked"), "x").unwrap();
    let sha = s.up.commit("two");
    s.wait_for_sync();
    assert_eq!(s.published(), sha);
    let new = std::fs::canonicalize(s.link()).unwrap();
    assert_ne!(new, old);
    assert_eq!(s.content(), "two");
    assert_eq!(
        std::fs::read_to_string(new.join("d1/f1")).unwrap(),
        "file 1\n"
    );
    assert_eq!(
        std::fs::read_to_string(new.join("d2/f2")).unwrap(),
        "file 2\n"
    );
    assert!(!new.join("untracked").exists());
    s.assert_real_worktree(&sha);
    // Unchanged files were taken from the old tree, as copies.
    let first = sc.wait_for_log("worktree files written");
    assert!(first.contains("cloned=0"), "{first}");
    // (The spare tree, written after the first sync, logs its files too.)
    sc.wait_for_log("spare tree prepared");
    let second = sc.wait_for_log("worktree files written");
    assert!(!second.contains("cloned=0"), "{second}");
    assert_eq!(std::fs::read_to_string(new.join("big")).unwrap(), big);
    for (f, old_ino) in ["big", "d3/f3"].into_iter().zip(old_inos) {
        let m = std::fs::metadata(new.join(f)).unwrap();
        assert_eq!(m.nlink(), 1, "{f} is a hard link");
        assert_ne!(m.ino(), old_ino, "{f} is shared with the old tree");
    }
    sc.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(sc.wait_exit().success());
}

/// From the second change after a start, the tree cleanup retired (here the
/// first one, edited by a consumer while it was published) becomes the next
/// commit's tree (the first change adopts a spare written from the first
/// commit): only what differs is written. The result is exactly the
/// commit's tree (edits, additions and deletions by the consumer undone, a
/// deleted file and an emptied directory gone, a mode change and a symlink
/// change applied), and it shares no file with the tree it replaces.
#[test]
fn a_small_change_publishes_exactly_the_commit_from_the_spare_tree() {
    use std::io::Read;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let s = Setup::new();
    let up = &s.up.dir;
    s.up.write_files(50, 5);
    std::fs::write(up.join("script"), "#!/bin/sh\necho hi\n").unwrap();
    std::fs::write(up.join("gone"), "bye\n").unwrap();
    std::fs::create_dir_all(up.join("olddir")).unwrap();
    std::fs::write(up.join("olddir/only"), "x\n").unwrap();
    std::os::unix::fs::symlink("d0/f0", up.join("ln")).unwrap();
    s.up.commit("one");
    let mut sc = s.start(&["--period=100ms", "--log-level=sidecar_git_sync=debug,info"]);
    s.wait_for_sync();
    let a = std::fs::canonicalize(s.link()).unwrap();
    // A consumer edits the published tree.
    std::fs::write(a.join("d1/f1"), "FILE 1\n").unwrap();
    std::fs::remove_file(a.join("d2/f2")).unwrap();
    std::fs::write(a.join("untracked"), "x").unwrap();
    std::fs::create_dir_all(a.join("newdir/deeper")).unwrap();
    std::fs::write(a.join("newdir/deeper/y"), "y").unwrap();

    // The first change adopts the spare prepared from the first commit
    // (the consumer's edits are not in it); the edited tree is retired.
    let sha2 = s.up.commit("two");
    s.wait_for_sync();
    assert_eq!(s.published(), sha2);
    sc.wait_for_log("spare tree prepared");
    let second = sc.wait_for_log("worktree files written");
    assert!(!second.contains("kept=0"), "{second}");
    let b = std::fs::canonicalize(s.link()).unwrap();
    let b_ino = std::fs::metadata(b.join("d3/f3")).unwrap().ino();
    let mut b_file = std::fs::File::open(b.join("d3/f3")).unwrap();

    // A small change: one file edited, one deleted, a mode change, a
    // symlink retargeted, a directory emptied.
    std::fs::write(up.join("d4/f4"), "changed\n").unwrap();
    std::fs::remove_file(up.join("gone")).unwrap();
    std::fs::set_permissions(up.join("script"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::remove_file(up.join("ln")).unwrap();
    std::os::unix::fs::symlink("d0/f5", up.join("ln")).unwrap();
    std::fs::remove_file(up.join("olddir/only")).unwrap();
    let sha3 = s.up.commit("three");
    s.wait_for_sync();
    assert_eq!(s.published(), sha3);
    let third = sc.wait_for_log("worktree files written");
    assert!(
        !third.contains("kept=0"),
        "the spare tree was not used: {third}"
    );
    s.assert_real_worktree(&sha3);
    let c = std::fs::canonicalize(s.link()).unwrap();

    // Exactly the commit's files, no more.
    let tree = tree_of(&c);
    assert_eq!(tree.empty_dirs, Vec::<String>::new(), "empty directories");
    // Sorted, as a BTreeMap's keys are.
    let on_disk: Vec<String> = tree.files.into_keys().collect();
    let listed = git(&c, &["ls-tree", "-r", "--name-only", "HEAD"]);
    let mut want: Vec<String> = listed.lines().map(str::to_string).collect();
    want.sort();
    assert_eq!(on_disk, want);
    assert_eq!(
        git(&c, &["status", "--porcelain", "--ignored", "-uall"]),
        ""
    );
    assert_eq!(
        std::fs::read_to_string(c.join("d1/f1")).unwrap(),
        "file 1\n"
    );
    assert_eq!(
        std::fs::read_to_string(c.join("d2/f2")).unwrap(),
        "file 2\n"
    );
    assert_eq!(
        std::fs::read_to_string(c.join("d4/f4")).unwrap(),
        "changed\n"
    );
    assert!(!c.join("gone").exists() && !c.join("olddir").exists());
    assert_ne!(
        std::fs::metadata(c.join("script")).unwrap().mode() & 0o111,
        0
    );
    assert_eq!(
        std::fs::read_link(c.join("ln")).unwrap(),
        std::path::PathBuf::from("d0/f5")
    );

    // No file is shared with the tree it replaced: an edit in the new tree
    // does not reach the old one.
    for f in &on_disk {
        let m = std::fs::symlink_metadata(c.join(f)).unwrap();
        assert_eq!(m.nlink(), 1, "{f} is a hard link");
    }
    assert_ne!(std::fs::metadata(c.join("d3/f3")).unwrap().ino(), b_ino);
    std::fs::write(c.join("d3/f3"), "edited in the new tree\n").unwrap();
    let mut old = String::new();
    b_file.read_to_string(&mut old).unwrap();
    assert_eq!(old, "file 3\n");
    sc.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(sc.wait_exit().success());
}

/// The first change after a start, and after a restart, costs what the
/// others do: it adopts a spare tree (prepared once the first sync has
/// published, or kept from before the restart) and writes only the changed
/// file. The result is exactly the commit, with no file shared with the
/// tree it replaces.
#[test]
fn the_first_change_after_a_start_or_a_restart_writes_only_the_change() {
    use std::os::unix::fs::MetadataExt;
    let s = Setup::new();
    s.up.write_files(50, 5);
    s.up.commit("one");
    let args = ["--period=100ms", "--log-level=sidecar_git_sync=debug,info"];
    // A commit of `content` is published by writing that one file, exactly,
    // sharing no file with another tree; returns the published directory.
    let publishes_only_the_change = |sc: &mut Sidecar, content: &str| {
        let sha = s.up.commit(content);
        s.wait_for_sync();
        assert_eq!(s.published(), sha);
        let change = sc.wait_for_log("worktree files written");
        assert!(
            change.contains("files=1 ") && change.contains("kept=50"),
            "{change}"
        );
        s.assert_real_worktree(&sha);
        assert_eq!(s.content(), content);
        let dir = std::fs::canonicalize(s.link()).unwrap();
        for i in 0..50 {
            let m = std::fs::metadata(dir.join(format!("d{}/f{i}", i % 5))).unwrap();
            assert_eq!(m.nlink(), 1, "d{}/f{i} is a hard link", i % 5);
        }
        dir
    };

    let mut sc = s.start(&args);
    s.wait_for_sync();
    assert!(sc
        .wait_for_log("worktree files written")
        .contains("files=51"));
    sc.wait_for_log("spare tree prepared");
    let old = std::fs::canonicalize(s.link()).unwrap();
    assert_ne!(publishes_only_the_change(&mut sc, "two"), old);
    sc.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(sc.wait_exit().success());

    let mut sc = s.start(&args);
    s.wait_for_sync();
    publishes_only_the_change(&mut sc, "three");
    sc.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(sc.wait_exit().success());
}

/// A spare tree kept by a version that checked the spare's files at the
/// publish (its index named `index`, not `checked-index`) is not trusted
/// after an upgrade: a file edited in it does not reach the next tree.
#[test]
fn a_spare_kept_by_an_older_version_is_not_trusted() {
    let s = Setup::new();
    s.up.write_files(20, 2);
    s.up.commit("one");
    let args = ["--period=100ms", "--log-level=sidecar_git_sync=debug,info"];
    let mut sc = s.start(&args);
    s.wait_for_sync();
    sc.wait_for_log("spare tree prepared");
    sc.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(sc.wait_exit().success());
    // What an older version could leave: its index name, and a file edited
    // while the tree was published (same size: only stat data tell).
    let spare = s.root.join(".git/sidecar-spare");
    std::fs::rename(spare.join("checked-index"), spare.join("index")).unwrap();
    std::fs::write(spare.join("tree/d1/f1"), "FILE 1\n").unwrap();

    let sha = s.up.commit("two");
    let mut sc = s.start(&args);
    s.wait_for_sync();
    assert_eq!(s.published(), sha);
    s.assert_real_worktree(&sha);
    assert_eq!(
        std::fs::read_to_string(s.link().join("d1/f1")).unwrap(),
        "file 1\n"
    );
    assert!(sc.wait_for_log("worktree files written").contains("kept=0"));
    sc.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(sc.wait_exit().success());
}

/// What a process does in a retired tree after cleanup retired it (the tree
/// the link named before the latest publish) never reaches a published
/// tree: the commit after that is published exactly. `cwd` is where a
/// shell has its working directory from while the tree was published (an
/// app container's `workingDir: /repo/link`, a `kubectl exec` shell), and
/// `script` what it runs there once the tree is retired; `held` is a
/// tracked file the test opens for writing while it is published and
/// rewrites (same size) once it is retired.
fn retired_tree_changes_are_not_published(cwd: &str, script: &str, held: Option<&str>) {
    use std::io::{Seek, Write};
    let s = Setup::new();
    s.up.write_files(50, 5);
    s.up.commit("one");
    let mut sc = s.start(&["--period=100ms"]);
    s.wait_for_sync();
    let a = std::fs::canonicalize(s.link()).unwrap();
    let mut shell = Command::new("sh")
        .current_dir(a.join(cwd))
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut held = held.map(|f| {
        std::fs::OpenOptions::new()
            .write(true)
            .open(a.join(f))
            .unwrap()
    });

    // The next commit retires the first tree.
    s.up.commit("two");
    s.wait_for_sync();
    assert!(!a.exists(), "{} was not retired", a.display());
    let mut stdin = shell.stdin.take().unwrap();
    stdin.write_all(script.as_bytes()).unwrap();
    drop(stdin);
    // Whether its writes succeed depends on what became of its directory.
    let _ = shell.wait().unwrap();
    if let Some(f) = &mut held {
        f.rewind().unwrap();
        f.write_all(b"FILE 3\n").unwrap();
    }

    let sha = s.up.commit("three");
    s.wait_for_sync();
    assert_eq!(s.published(), sha);
    s.assert_real_worktree(&sha);
    let c = std::fs::canonicalize(s.link()).unwrap();
    assert_eq!(
        git(&c, &["status", "--porcelain", "--ignored", "-uall"]),
        ""
    );
    // The upstream checkout holds exactly the commit's files.
    assert_eq!(tree_of(&c).files, tree_of(&s.up.dir).files);
    sc.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(sc.wait_exit().success());
}

/// What a tree holds, `.git` left out.
struct Tree {
    /// Every file's content, by path.
    files: std::collections::BTreeMap<String, Vec<u8>>,
    /// Directories with nothing in them.
    empty_dirs: Vec<String>,
}

fn tree_of(dir: &std::path::Path) -> Tree {
    let mut tree = Tree {
        files: Default::default(),
        empty_dirs: Vec::new(),
    };
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let mut empty = true;
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            empty = false;
            let rel = e
                .path()
                .strip_prefix(dir)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if rel == ".git" {
                continue;
            }
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                tree.files.insert(rel, std::fs::read(e.path()).unwrap());
            }
        }
        if empty {
            tree.empty_dirs.push(d.display().to_string());
        }
    }
    tree
}

#[test]
fn files_added_in_a_retired_tree_are_not_published() {
    retired_tree_changes_are_not_published(
        ".",
        "echo stray > stray; mkdir __pycache__; echo x > __pycache__/m.pyc\n",
        None,
    );
}

#[test]
fn a_file_deleted_in_a_retired_tree_is_still_published() {
    // From a subdirectory: `cd /repo/link/d1` in a shell.
    retired_tree_changes_are_not_published("d1", "rm f1\n", None);
}

#[test]
fn a_file_rewritten_in_a_retired_tree_is_published_as_committed() {
    retired_tree_changes_are_not_published(".", "printf 'FILE 2\\n' > d2/f2\n", None);
}

#[test]
fn a_file_written_through_a_descriptor_held_in_a_retired_tree_is_published_as_committed() {
    retired_tree_changes_are_not_published(".", "", Some("d3/f3"));
}
