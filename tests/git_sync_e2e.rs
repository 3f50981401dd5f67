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
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED (needs root): mount namespace");
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
mount --bind "$ROOT" "$ROOT"
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
    if out.status.code() == Some(97)
        || stderr.contains("unshare failed")
        || stderr.contains("Operation not permitted")
    {
        eprintln!("SKIPPED (cannot make a read-only mount namespace): {stderr}");
        return;
    }
    assert!(out.status.success(), "{stderr}");
    assert_eq!(s.published(), sha);
    assert_eq!(s.content(), "one");
    assert!(s.root.join("_sync_lock").exists());
    s.assert_real_worktree(&sha);
}
