//! git-sync's command line before any sync: `--man` and `--help`, and that
//! nothing listens until the configuration is known to be good.

mod support;

use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::Instant;

/// `git-sync --man | head -1` with the reader already gone: no panic (exit
/// 134 in release), exit 0 or the quiet death by SIGPIPE that `head`'s
/// other writers get, and no admin server started for it.
#[test]
fn man_to_a_closed_pipe_exits_quietly_and_starts_nothing() {
    let (read_end, write_end) = nix::unistd::pipe().unwrap();
    drop(read_end);
    let mut child = Command::new(support::bin())
        .args(["git-sync", "--man", "--admin-addr=127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::from(write_end))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(started.elapsed() < support::DEADLINE, "--man did not exit");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(
        status.code() == Some(0) || status.signal() == Some(libc::SIGPIPE),
        "{status:?}: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!stderr.contains("listening"), "{stderr}");
}

/// The man page is the long help, printed before anything starts; like
/// `--help` it documents `--sparse-checkout-file` as working.
#[test]
fn man_and_help_describe_sparse_checkout_as_supported() {
    for flag in ["--man", "--help"] {
        let out = support::run(&["git-sync", flag, "--admin-addr=127.0.0.1:0"]);
        assert_eq!(out.status.code(), Some(0), "{flag}");
        let text = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("listening"), "{flag}: {stderr}");
        // The flag's line and its description, up to the next flag.
        let mut lines = text
            .lines()
            .skip_while(|l| !l.trim_start().starts_with("--sparse-checkout-file"));
        let first = lines.next().expect("--sparse-checkout-file is documented");
        let rest: Vec<&str> = lines
            .take_while(|l| !l.trim_start().starts_with('-'))
            .collect();
        let para = format!("{first} {}", rest.join(" "));
        assert!(!para.contains("unsupported"), "{flag}: {para}");
        assert!(para.contains("patterns"), "{flag}: {para}");
    }
}

/// A bad flag is refused (exit 2, naming it) before the admin server or
/// `--http-bind` listen: neither logs an address.
#[test]
fn nothing_listens_before_the_flags_are_valid() {
    let tmp = support::tempdir();
    for bad in ["--period=1ms", "--depth=-1", "--cookie-file"] {
        let out = support::run(&[
            "git-sync",
            "--admin-addr=127.0.0.1:0",
            "--http-bind=127.0.0.1:0",
            "--repo=file:///nonexistent",
            &format!("--root={}", tmp.path().join("root").display()),
            bad,
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bad}: {stderr}");
        let name = bad.split('=').next().unwrap();
        assert!(stderr.contains(name), "{bad}: {stderr}");
        assert!(!stderr.contains("listening"), "{bad}: {stderr}");
        assert!(!stderr.contains("serving HTTP"), "{bad}: {stderr}");
        assert!(!tmp.path().join("root").exists(), "{bad}: root was created");
    }
}

/// `git-sync --check` validates and exits: 0 for a good configuration, 2
/// naming the flag for a bad one; no root, no sync.
#[test]
fn check_validates_without_syncing() {
    let tmp = support::tempdir();
    let root = tmp.path().join("root");
    let base = [
        "git-sync".to_string(),
        "--check".into(),
        "--repo=file:///nonexistent".into(),
        format!("--root={}", root.display()),
    ];
    let args: Vec<&str> = base.iter().map(String::as_str).collect();
    let out = support::run(&args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut bad = args.clone();
    bad.push("--submodules=some");
    let out = support::run(&bad);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--submodules"));
    assert!(!root.exists(), "--check created the root");
}
