//! git-sync cases that upstream's e2e suite or its users rely on and that
//! need an unusual environment: a restart over a hand-edited worktree, an
//! scp-style ssh URL (port 22, so a loopback address of its own), and a
//! read-only root filesystem where only `--root` is writable (a private
//! mount namespace).

#[path = "git_sync/helpers.rs"]
mod helpers;
mod support;

use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

use helpers::{git, Setup};

/// Upstream re-runs `git reset --hard` on the published worktree in the
/// first pass after a start: edited, deleted and staged tracked files come
/// back, untracked files stay (as with git), the link keeps its target.
#[test]
fn a_restart_restores_edited_worktree_files() {
    let s = Setup::new();
    s.up.commit_file("other", b"other");
    let sha = s.up.commit("one");
    assert!(s.run_once(&[]).status.success());

    let link = s.link();
    std::fs::write(link.join("file"), "edited").unwrap();
    std::fs::remove_file(link.join("other")).unwrap();
    std::fs::write(link.join("untracked"), "mine").unwrap();
    let out = s.run_once(&[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(s.published(), sha);
    assert_eq!(s.content(), "one");
    assert_eq!(
        std::fs::read_to_string(link.join("other")).unwrap(),
        "other"
    );
    assert_eq!(
        std::fs::read_to_string(link.join("untracked")).unwrap(),
        "mine"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("worktree files were modified"));

    // A staged edit is undone too, and the tree is then what git calls clean.
    std::fs::remove_file(link.join("untracked")).unwrap();
    std::fs::write(link.join("file"), "staged").unwrap();
    git(&link, &["add", "file"]);
    assert!(s.run_once(&[]).status.success());
    assert_eq!(s.content(), "one");
    s.assert_real_worktree(&sha);
}

/// `user@host:/path` (upstream's `auth_ssh` form) connects to port 22 of the
/// host, checks its key under the plain host name and syncs.
#[test]
fn scp_style_ssh_url() {
    // A loopback address of this test's own, so port 22 is free to take.
    let pid = std::process::id();
    let ip = format!("127.{}.{}.{}", 20 + pid % 200, (pid >> 8) % 250 + 1, 22);
    let addr: SocketAddr = format!("{ip}:22").parse().unwrap();
    if TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok() {
        eprintln!("SKIPPED (something already listens on {addr})");
        return;
    }
    let s = Setup::new();
    s.up.commit("one");
    let key = s.tmp.path().join("key");
    helpers::keygen(&key);
    let Some((_peer, _, known)) =
        helpers::sshd_on(s.tmp.path(), std::slice::from_ref(&key), &ip, 22)
    else {
        return;
    };
    let url = format!("root@{ip}:{}", s.up.dir.display());
    let mut args = vec![
        "git-sync".to_string(),
        "--admin-addr=off".into(),
        "--one-time".into(),
        format!("--repo={url}"),
        s.root_arg(),
        "--link=link".into(),
        format!("--ssh-key-file={}", key.display()),
        format!("--ssh-known-hosts-file={}", known.display()),
    ];
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = support::run(&refs);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    s.assert_real_worktree(&s.up.head());
    assert_eq!(s.content(), "one");

    // The default link name is the URL's last part, as for other URLs.
    args.retain(|a| a != "--link=link");
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    assert!(support::run(&refs).status.success());
    assert_eq!(
        std::fs::read_to_string(s.root.join("repo/file")).unwrap(),
        "one"
    );
}

/// `readOnlyRootFilesystem: true` with a volume at `--root`: nothing is
/// written anywhere else (no temp gitconfig, no HOME files), and the touch
/// and error files live in root.
#[test]
fn read_only_root_filesystem_with_only_root_writable() {
    if !support::require_root("mount namespace") {
        return;
    }
    let s = Setup::new();
    let sha = s.up.commit("one");
    std::fs::create_dir_all(&s.root).unwrap();
    // In a private mount namespace: root bound onto itself (its own mount,
    // left writable), then every other mount remounted read-only.
    let script = r#"
set -e
ROOT="$1"; shift
mount --bind "$ROOT" "$ROOT" || exit 97
for mp in $(awk '{print $2}' /proc/self/mounts | sort -r); do
  case "$mp" in "$ROOT"|/proc|/proc/*|/sys|/sys/*|/dev|/dev/*) continue;; esac
  mount -o remount,bind,ro "$mp" 2>/dev/null || true
done
if touch "$ROOT/../probe" 2>/dev/null; then echo "setup: parent still writable" >&2; exit 97; fi
if touch /tmp/git-sync-probe 2>/dev/null; then echo "setup: /tmp still writable" >&2; exit 97; fi
exec "$@"
"#;
    let root = s.root.display().to_string();
    let mut cmd = Command::new("unshare");
    cmd.args(["-m", "--propagation", "private", "sh", "-c", script, "sh"])
        .arg(&root)
        .arg(support::bin())
        .args(["git-sync", "--admin-addr=off", "--one-time"])
        .args(s.args(&["--error-file=error.json", "-v=6"]))
        .env("HOME", "/nonexistent");
    let out = support::run_cmd(&mut cmd);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let made = !(out.status.code() == Some(97)
        || stderr.contains("unshare failed")
        || stderr.contains("Operation not permitted"));
    if !support::require(made, &format!("a read-only mount namespace ({stderr})")) {
        return;
    }
    assert!(out.status.success(), "{stderr}");
    assert_eq!(s.published(), sha);
    assert_eq!(s.content(), "one");
    assert!(s.root.join("_sync_lock").exists());
    s.assert_real_worktree(&sha);
}

/// Upstream's `init_root_flag_is_weird`, `init_root_flag_has_symlink`,
/// `sync_branch_switch`, `sync_repo_switch` and `sync_sha_shafile_exists`:
/// one-time runs in the same root.
#[test]
fn root_spellings_and_switching_branch_repo_and_sha() {
    let s = Setup::new();
    s.up.commit("one");
    let ok = |args: &[String]| {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = support::run(&refs);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let base = |root: String, extra: &[&str]| {
        let mut v = vec![
            "git-sync".to_string(),
            "--admin-addr=off".into(),
            "--one-time".into(),
            format!("--repo={}", s.up.url()),
            root,
            "--link=link".into(),
        ];
        v.extend(extra.iter().map(|a| a.to_string()));
        v
    };

    // A relative root full of `..`, normalised.
    let r = s.root.display().to_string();
    let depth = std::env::current_dir().unwrap().components().count();
    let weird = format!("--root={}{r}/../../../../../..{r}", "../".repeat(depth + 2));
    ok(&base(weird, &[]));
    assert_eq!(s.content(), "one");

    // A root that is a symlink: the link goes in the real directory.
    let real = s.tmp.path().join("real");
    std::fs::create_dir(&real).unwrap();
    let alias = s.tmp.path().join("alias");
    std::os::unix::fs::symlink(&real, &alias).unwrap();
    ok(&base(format!("--root={}", alias.display()), &[]));
    assert_eq!(
        std::fs::read_to_string(real.join("link/file")).unwrap(),
        "one"
    );

    // depth 1 on one branch, then another branch.
    ok(&base(s.root_arg(), &["--ref=e2e-branch", "--depth=1"]));
    s.up.git(&["checkout", "-q", "-b", "e2e-branch2"]);
    let sha2 = s.up.commit("two");
    ok(&base(s.root_arg(), &["--ref=e2e-branch2"]));
    assert_eq!(s.content(), "two");

    // A plain file named like the hash to sync does not get in the way.
    let sha3 = s.up.commit("three");
    s.up.commit("four");
    std::fs::write(s.root.join(&sha3), "not a worktree").unwrap();
    ok(&base(s.root_arg(), &[&format!("--ref={sha3}")]));
    assert_eq!(s.published(), sha3);
    assert_eq!(s.content(), "three");

    // Another repository in the same root.
    let other = s.tmp.path().join("other");
    helpers::git(
        s.tmp.path(),
        &["clone", "-q", s.up.dir.to_str().unwrap(), "other"],
    );
    std::fs::write(other.join("file"), "other repo").unwrap();
    git(&other, &["commit", "-qam", "other"]);
    let mut args = base(s.root_arg(), &[]);
    args[3] = format!("--repo=file://{}", other.display());
    ok(&args);
    assert_eq!(s.content(), "other repo");
    s.assert_real_worktree(&git(&other, &["rev-parse", "HEAD"]));
    let _ = sha2;
}

/// Upstream's `worktree_cleanup`: a real git worktree of another repository
/// squatting `.worktrees/<next sha>`, plus junk, are replaced and removed.
#[test]
fn a_foreign_worktree_at_the_next_hash_and_junk_are_cleaned() {
    let s = Setup::new();
    s.up.commit("one");
    assert!(s.run_once(&[]).status.success());
    let sha = s.up.commit_file("file2", b"ok");
    let squat = s.root.join(".worktrees").join(&sha);
    s.up.git(&[
        "worktree",
        "add",
        "-q",
        squat.to_str().unwrap(),
        "-b",
        "e2e",
        "--no-checkout",
    ]);
    std::fs::create_dir_all(s.root.join(".worktrees/not_a_hash/subdir")).unwrap();
    std::fs::write(s.root.join(".worktrees/not_a_directory"), "").unwrap();
    let out = s.run_once(&[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(s.link().join("file2")).unwrap(),
        "ok"
    );
    s.assert_real_worktree(&sha);
    let left: Vec<_> = std::fs::read_dir(s.root.join(".worktrees"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(left, vec![sha]);
}

/// Upstream's `gc_*` and `additional_git_configs` cases: every `--git-gc`
/// mode syncs, and upstream's quoted `--git-config` string is accepted.
#[test]
fn gc_modes_and_upstream_git_config_string() {
    let s = Setup::new();
    for mode in ["auto", "always", "aggressive", "off"] {
        let sha = s.up.commit(mode);
        let out = s.run_once(&[
            &format!("--git-gc={mode}"),
            r#"--git-config=http.postBuffer:10485760,sect.k1:"a val",sect.k2:another val"#,
        ]);
        assert!(
            out.status.success(),
            "{mode}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(s.content(), mode);
        s.assert_real_worktree(&sha);
    }
    assert_eq!(git(&s.root, &["config", "sect.k1"]), "a val");
    assert_eq!(git(&s.root, &["config", "sect.k2"]), "another val");
}

/// Upstream's `touch_file_abs_path`: the touch file (absolute, in a new
/// directory) appears after the first pass and each change, and not after
/// passes that found nothing new (counted by the noop metric, not timed).
#[test]
fn touch_file_marks_changes_only() {
    let s = Setup::new();
    s.up.commit("one");
    let touch = s.root.join("dir/touch.file");
    let mut sc = s.start(&[
        "--period=100ms",
        &format!("--touch-file={}", touch.display()),
    ]);
    let admin = sc.admin_addr();
    let noops = || helpers::metric(admin, r#"git_sync_count_total{status="noop"}"#).unwrap_or(0.0);
    for (i, content) in ["one", "two"].into_iter().enumerate() {
        if i > 0 {
            s.up.commit(content);
        }
        support::wait_until("the touch file", || touch.exists());
        std::fs::remove_file(&touch).unwrap();
        assert_eq!(s.content(), content);
        let seen = noops();
        support::wait_until("three passes without change", || noops() >= seen + 3.0);
        assert!(!touch.exists(), "touched without a change");
    }
}

/// Upstream's `exechook_startup_after_crash` with its hook script: a restart
/// on an unchanged hash runs the hook once, in the worktree, with the
/// inherited environment and `GITSYNC_HASH`.
#[test]
fn exechook_runs_after_a_restart_on_the_same_hash() {
    use std::os::unix::fs::PermissionsExt;
    let s = Setup::new();
    s.up.commit("crash");
    assert!(s.run_once(&["--ref=e2e-branch"]).status.success());
    let runlog = s.tmp.path().join("runlog");
    let hook = s.tmp.path().join("exechook_command.sh");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\nif [ -z \"$GITSYNC_HASH\" ]; then echo unset > exechook; exit 1; fi\n\
             cat file > exechook\necho \"ENVKEY=$ENVKEY\" > exechook-env\necho run >> {}\n",
            runlog.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut args = vec![
        "git-sync".to_string(),
        "--admin-addr=off".into(),
        "--one-time".into(),
        format!("--exechook-command={}", hook.display()),
        "--ref=e2e-branch".into(),
    ];
    args.extend(s.args(&[]));
    let out = support::run_cmd(
        Command::new(support::bin())
            .args(&args)
            .env("ENVKEY", "envval"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let link = s.link();
    assert_eq!(
        std::fs::read_to_string(link.join("exechook")).unwrap(),
        "crash"
    );
    assert_eq!(
        std::fs::read_to_string(link.join("exechook-env")).unwrap(),
        "ENVKEY=envval\n"
    );
    assert_eq!(std::fs::read_to_string(&runlog).unwrap(), "run\n");
}

/// Upstream's `sync_default_ref`, `readlink` and `sync_depth_across_updates`:
/// no `--ref` follows the remote's HEAD, here a branch checked out after
/// the first commit; forward and backward moves each count one success and
/// one fetch, the link's basename is the hash, and depth stays 1.
#[test]
fn default_ref_follows_remote_head_on_another_branch() {
    let s = Setup::new();
    s.up.commit("one");
    s.up.git(&["checkout", "-q", "-b", "weird-name"]);
    let sha1 = s.up.commit("default 1");
    let mut sc = s.start(&["--period=100ms"]);
    let admin = sc.admin_addr();
    let counts = || {
        (
            helpers::metric(admin, r#"git_sync_count_total{status="success"}"#),
            helpers::metric(admin, "git_fetch_count_total"),
        )
    };
    s.wait_for_sync();
    assert_eq!(
        (s.published(), s.content()),
        (sha1.clone(), "default 1".into())
    );
    assert_eq!(counts(), (Some(1.0), Some(1.0)));
    assert_eq!(s.rev_count(), 1);

    let sha2 = s.up.commit("default 2");
    s.wait_for_sync();
    assert_eq!((s.published(), s.content()), (sha2, "default 2".into()));
    assert_eq!(counts(), (Some(2.0), Some(2.0)));
    assert_eq!(s.rev_count(), 1);

    s.up.git(&["reset", "-q", "--hard", "HEAD^"]);
    s.wait_for_sync();
    assert_eq!((s.published(), s.content()), (sha1, "default 1".into()));
    assert_eq!(counts(), (Some(3.0), Some(3.0)));
    assert_eq!(s.rev_count(), 1);
}

/// Upstream's `sync_on_signal_sighup` and `sync_on_signal_1` (the `HUP`
/// spelling is in git_sync.rs), and `expose_http_after_restart`: on a root
/// synced by an earlier run, `/` on `--http-bind` is 200 after the first pass.
#[test]
fn signal_spellings_and_readiness_after_a_restart() {
    let s = Setup::new();
    s.up.commit("one");
    assert!(s.run_once(&[]).status.success());
    s.wait_for_sync();
    for (i, spelling) in ["SIGHUP", "1"].into_iter().enumerate() {
        let mut sc = s.start(&[
            "--period=100s",
            &format!("--sync-on-signal={spelling}"),
            "--http-bind=127.0.0.1:0",
        ]);
        let line = sc.wait_for_log("serving HTTP");
        let addr = support::addr_field(&line, "endpoint=").unwrap();
        s.wait_for_sync();
        assert_eq!(support::http::get(addr, "/").status, 200);
        let content = format!("signal {i}");
        let sha = s.up.commit(&content);
        sc.signal(nix::sys::signal::Signal::SIGHUP);
        s.wait_for_sync();
        assert_eq!((s.published(), s.content()), (sha, content));
    }
}

/// Upstream's `auth_askpass_url_flaky` and `auth_askpass_url_sometimes_wrong`:
/// the askpass URL answers 503 or a wrong password every other call; with
/// `--max-failures=2` git-sync keeps going and follows forward and backward
/// moves. (Upstream checks the credential with a `--git` wrapper; here a
/// real http-backend behind basic auth does.)
#[test]
fn askpass_url_flaky_or_sometimes_wrong() {
    type Bad = fn() -> (u16, String);
    let bad_answers: [Bad; 2] = [
        || (503, String::new()),
        || (200, "username=testuser\npassword=wrong\n".into()),
    ];
    for bad in bad_answers {
        let s = Setup::new();
        let sha1 = s.up.commit("one");
        let Some((_peer, port)) =
            helpers::lighttpd(s.tmp.path(), s.tmp.path(), "testuser:testpass\n")
        else {
            return;
        };
        let mut calls = 0u32;
        let askpass = support::http::Receiver::with(move |_| {
            calls += 1;
            if calls % 2 == 1 {
                bad()
            } else {
                (200, "username=testuser\npassword=testpass\n".into())
            }
        });
        let args = [
            format!("--repo=http://127.0.0.1:{port}/git/repo"),
            s.root_arg(),
            "--link=link".into(),
            "--touch-file=_sync_lock".into(),
            "--period=100ms".into(),
            "--max-failures=2".into(),
            format!("--askpass-url={}", askpass.url("/git_askpass")),
        ];
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let _sc = support::Sidecar::start("git-sync", &refs);
        s.wait_for_sync();
        assert_eq!(s.published(), sha1);
        let sha2 = s.up.commit("two");
        s.wait_for_sync();
        assert_eq!(s.published(), sha2);
        s.up.git(&["reset", "-q", "--hard", "HEAD^"]);
        s.wait_for_sync();
        assert_eq!((s.published(), s.content()), (sha1, "one".to_string()));
    }
}

/// Upstream's `submodule_sync_over_http_different_passwords`: the repository,
/// its submodule and the submodule's own submodule sit on three HTTP servers
/// with three different users; one `--credential` each, matched by URL.
#[test]
fn submodules_over_http_with_a_credential_each() {
    let tmp = support::tempdir();
    let mut servers = Vec::new();
    let mut repos = Vec::new();
    for name in ["top", "sub", "nested"] {
        let base = tmp.path().join(name);
        let srv = base.join("srv");
        std::fs::create_dir_all(&srv).unwrap();
        let users = format!("user-{name}:pass-{name}\n");
        let Some((peer, port)) = helpers::lighttpd(&srv, &base, &users) else {
            return;
        };
        servers.push(peer);
        let up = helpers::Upstream::new(&base);
        up.commit(&format!("{name} file"));
        repos.push((up, format!("http://127.0.0.1:{port}/git/repo"), name));
    }
    // Each parent records its child by path, then points .gitmodules at
    // the child's server.
    for i in [1, 0] {
        let (parent, child) = (&repos[i].0, &repos[i + 1]);
        let name = child.2;
        let path = child.0.dir.to_str().unwrap();
        parent.git(&[
            "-c",
            "protocol.file.allow=always",
            "submodule",
            "-q",
            "add",
            path,
            name,
        ]);
        parent.git(&[
            "config",
            "-f",
            ".gitmodules",
            &format!("submodule.{name}.url"),
            &child.1,
        ]);
        parent.git(&["add", "-A"]);
        parent.git(&["commit", "-q", "-m", &format!("add {name}")]);
    }
    let root = tmp.path().join("root");
    let mut args = vec![
        "git-sync".to_string(),
        "--admin-addr=off".into(),
        "--one-time".into(),
        format!("--repo={}", repos[0].1),
        format!("--root={}", root.display()),
        "--link=link".into(),
    ];
    for (_, url, name) in &repos {
        args.push(format!(
            r#"--credential={{"url":"{url}","username":"user-{name}","password":"pass-{name}"}}"#
        ));
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = support::run(&refs);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let link = root.join("link");
    let read = |p: &str| std::fs::read_to_string(link.join(p)).unwrap();
    assert_eq!(read("file"), "top file");
    assert_eq!(read("sub/file"), "sub file");
    assert_eq!(read("sub/nested/file"), "nested file");

    // Without the nested submodule's credential the sync fails.
    args.pop();
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    std::fs::remove_dir_all(&root).unwrap();
    assert!(!support::run(&refs).status.success());
    drop(servers);
}

/// Upstream's `submodule_sync_over_ssh_different_keys`: the repository, its
/// submodule and the nested submodule on three sshd servers that each accept
/// one key; all three `--ssh-key-file`s are given and every host is checked
/// against one known_hosts file.
#[test]
fn submodules_over_ssh_with_a_key_each() {
    let tmp = support::tempdir();
    let mut servers = Vec::new();
    let mut repos = Vec::new();
    let mut keys = Vec::new();
    let mut known = String::new();
    for name in ["top", "sub", "nested"] {
        let base = tmp.path().join(name);
        std::fs::create_dir_all(&base).unwrap();
        let key = tmp.path().join(format!("key-{name}"));
        helpers::keygen(&key);
        let Some((peer, port, kh)) = helpers::sshd(&base, std::slice::from_ref(&key)) else {
            return;
        };
        servers.push(peer);
        known.push_str(&std::fs::read_to_string(kh).unwrap());
        keys.push(key);
        let up = helpers::Upstream::new(&base);
        up.commit(&format!("{name} file"));
        let url = format!("ssh://root@127.0.0.1:{port}{}", up.dir.display());
        repos.push((up, url, name));
    }
    for i in [1, 0] {
        let (parent, child) = (&repos[i].0, &repos[i + 1]);
        let name = child.2;
        parent.git(&[
            "-c",
            "protocol.file.allow=always",
            "submodule",
            "-q",
            "add",
            child.0.dir.to_str().unwrap(),
            name,
        ]);
        parent.git(&[
            "config",
            "-f",
            ".gitmodules",
            &format!("submodule.{name}.url"),
            &child.1,
        ]);
        parent.git(&["add", "-A"]);
        parent.git(&["commit", "-q", "-m", &format!("add {name}")]);
    }
    let known_file = tmp.path().join("known_hosts");
    std::fs::write(&known_file, known).unwrap();
    let root = tmp.path().join("root");
    let mut args = vec![
        "git-sync".to_string(),
        "--admin-addr=off".into(),
        "--one-time".into(),
        format!("--repo={}", repos[0].1),
        format!("--root={}", root.display()),
        "--link=link".into(),
        format!("--ssh-known-hosts-file={}", known_file.display()),
    ];
    args.extend(
        keys.iter()
            .map(|k| format!("--ssh-key-file={}", k.display())),
    );
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = support::run(&refs);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let link = root.join("link");
    let read = |p: &str| std::fs::read_to_string(link.join(p)).unwrap();
    assert_eq!(read("file"), "top file");
    assert_eq!(read("sub/file"), "sub file");
    assert_eq!(read("sub/nested/file"), "nested file");
    drop(servers);
}

/// Upstream's `auth_askpass_url_slow_start`: the askpass server is not up
/// yet; the failed passes count against `--max-failures=5` and publish
/// nothing, and the sync succeeds once the server answers.
#[test]
fn askpass_url_that_starts_late() {
    use std::io::{BufRead, BufReader, Write};
    let s = Setup::new();
    let sha = s.up.commit("one");
    let Some((_peer, port)) = helpers::lighttpd(s.tmp.path(), s.tmp.path(), "testuser:testpass\n")
    else {
        return;
    };
    let askpass_port = helpers::free_port();
    let args = [
        format!("--repo=http://127.0.0.1:{port}/git/repo"),
        s.root_arg(),
        "--link=link".into(),
        "--touch-file=_sync_lock".into(),
        // Upstream's pacing: 1s leaves four retries' time to start the server.
        "--period=1s".into(),
        "--max-failures=5".into(),
        format!("--askpass-url=http://127.0.0.1:{askpass_port}/git_askpass"),
    ];
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut sc = support::Sidecar::start("git-sync", &refs);
    sc.wait_for_log("can't get credentials from --askpass-url");
    assert!(
        std::fs::symlink_metadata(s.link()).is_err(),
        "published without credentials"
    );

    // The server comes up: a minimal HTTP/1.1 answer per connection.
    let listener = std::net::TcpListener::bind(("127.0.0.1", askpass_port)).unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                line.clear();
            }
            let body = "username=testuser\npassword=testpass\n";
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    s.wait_for_sync();
    assert_eq!(s.published(), sha);
    assert_eq!(s.content(), "one");
}
