//! git-sync's `--submodules`: recursive (with a relative URL), shallow, off,
//! and submodule updates. Ports upstream's submodule e2e cases.

#[path = "git_sync/helpers.rs"]
mod helpers;
mod support;

use std::path::Path;

use helpers::{git, Setup, Upstream};

const FILE_OK: &str = "protocol.file.allow=always";

fn commit_all(dir: &Path, msg: &str) {
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-q", "-m", msg]);
}

/// `repo` (the upstream) holds submodule `sub`, which holds `nested` by a
/// relative URL.
fn setup() -> (Setup, Upstream) {
    let s = Setup::new();
    let base = s.tmp.path().join("subs");
    let nested = Upstream::new(&base.join("n"));
    std::fs::rename(&nested.dir, base.join("nested")).unwrap();
    let nested = Upstream {
        dir: base.join("nested"),
    };
    nested.commit("nested one");
    let sub = Upstream::new(&base);
    std::fs::rename(&sub.dir, base.join("sub")).unwrap();
    let sub = Upstream {
        dir: base.join("sub"),
    };
    sub.commit("sub one");
    git(
        &sub.dir,
        &[
            "-c",
            FILE_OK,
            "submodule",
            "-q",
            "add",
            "../nested",
            "nested",
        ],
    );
    commit_all(&sub.dir, "add nested");
    s.up.commit("top one");
    let sub_url = sub.dir.display().to_string();
    git(
        &s.up.dir,
        &["-c", FILE_OK, "submodule", "-q", "add", &sub_url, "sub"],
    );
    commit_all(&s.up.dir, "add sub");
    (s, sub)
}

fn clean_submodules(link: &Path) {
    assert_eq!(git(link, &["status", "--porcelain"]), "");
    let status = git(link, &["submodule", "status", "--recursive"]);
    for line in status.lines() {
        // `-` not initialised, `+` other commit, `U` conflicts.
        assert!(
            !line.starts_with(['-', '+', 'U']),
            "submodule not checked out at its commit: {line}"
        );
    }
}

#[test]
fn recursive_submodules_follow_updates() {
    let (s, sub) = setup();
    let mut sc = s.start(&["--period=100ms"]);
    s.wait_for_sync();
    let link = s.link();
    assert_eq!(
        std::fs::read_to_string(link.join("sub/file")).unwrap(),
        "sub one"
    );
    assert_eq!(
        std::fs::read_to_string(link.join("sub/nested/file")).unwrap(),
        "nested one"
    );
    clean_submodules(&link);
    // --depth (default 1) applies to submodules too (submodule_sync_depth).
    assert_eq!(
        git(&link.join("sub"), &["rev-list", "HEAD"])
            .lines()
            .count(),
        1
    );

    // A new submodule commit, recorded in the upstream.
    sub.commit("sub two");
    git(
        &s.up.dir,
        &[
            "-c",
            FILE_OK,
            "submodule",
            "-q",
            "update",
            "--remote",
            "sub",
        ],
    );
    commit_all(&s.up.dir, "bump sub");
    s.wait_for_sync();
    assert_eq!(
        std::fs::read_to_string(s.link().join("sub/file")).unwrap(),
        "sub two"
    );
    clean_submodules(&s.link());
    sc.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(sc.wait_exit().success());
}

#[test]
fn shallow_and_off_submodule_modes() {
    let (s, _sub) = setup();
    let out = s.run_once(&["--submodules=shallow"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(s.link().join("sub/file").exists());
    assert!(!s.link().join("sub/nested/file").exists());

    let out = s.run_once(&["--submodules=off", "--link=off"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let off = s.root.join("off");
    assert!(off.join("sub").is_dir());
    assert!(!off.join("sub/file").exists());
}

/// A restart applies `--submodules` again to the published worktree (same
/// commit): what an `off` run left empty is checked out.
#[test]
fn a_restart_updates_submodules_of_the_published_worktree() {
    let (s, _sub) = setup();
    let out = s.run_once(&["--submodules=off"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let link = s.link();
    assert!(!link.join("sub/file").exists());
    let hash = s.published();
    let out = s.run_once(&[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(s.published(), hash);
    assert_eq!(
        std::fs::read_to_string(link.join("sub/nested/file")).unwrap(),
        "nested one"
    );
    clean_submodules(&link);
}

#[test]
fn full_depth_keeps_submodule_history() {
    let (s, _sub) = setup();
    let out = s.run_once(&["--depth=0"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        git(&s.link().join("sub"), &["rev-list", "HEAD"])
            .lines()
            .count(),
        2
    );
}

/// Upstream's `submodule_sync_relative` with a `file://` superproject: the
/// relative URL `../sub` resolves against `file:///…/repo` to
/// `file:///…/sub` (no `//` lost), at the top level and one level down.
#[test]
fn relative_submodule_urls_against_a_file_url() {
    let s = Setup::new();
    let base = s.tmp.path();
    let nested = Upstream {
        dir: base.join("nested"),
    };
    std::fs::create_dir_all(&nested.dir).unwrap();
    git(&nested.dir, &["init", "-q", "-b", "main"]);
    nested.commit("nested one");
    let sub = Upstream {
        dir: base.join("sub"),
    };
    std::fs::create_dir_all(&sub.dir).unwrap();
    git(&sub.dir, &["init", "-q", "-b", "main"]);
    sub.commit("sub one");
    git(
        &sub.dir,
        &[
            "-c",
            FILE_OK,
            "submodule",
            "-q",
            "add",
            "../nested",
            "nested",
        ],
    );
    commit_all(&sub.dir, "add nested");
    s.up.commit("top one");
    git(
        &s.up.dir,
        &["-c", FILE_OK, "submodule", "-q", "add", "../sub", "sub"],
    );
    commit_all(&s.up.dir, "add sub by a relative URL");
    let gitmodules = std::fs::read_to_string(s.up.dir.join(".gitmodules")).unwrap();
    assert!(gitmodules.contains("url = ../sub"), "{gitmodules}");
    assert!(s.up.url().starts_with("file:///"));

    let out = s.run_once(&[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let link = s.link();
    assert_eq!(
        std::fs::read_to_string(link.join("sub/file")).unwrap(),
        "sub one"
    );
    assert_eq!(
        std::fs::read_to_string(link.join("sub/nested/file")).unwrap(),
        "nested one"
    );
    clean_submodules(&link);
}

/// A sparse set that leaves out `.gitmodules` and the submodule's
/// directory: git reads `.gitmodules` from the commit and fills the
/// submodule in all the same, as upstream does (`git submodule update`
/// after `git sparse-checkout`); the sparse set still holds for the
/// superproject's own files.
#[test]
fn submodules_are_filled_in_when_the_sparse_set_leaves_them_out() {
    let (s, _sub) = setup();
    s.up.commit_file("docs/readme", b"docs");
    let sparse = s.tmp.path().join("sparse");
    for patterns in ["/file\n", "!/*\n!/*/\n/file\n", "/sub/\n/file\n"] {
        std::fs::write(&sparse, patterns).unwrap();
        // A fresh root for each set.
        let link = s.link();
        let _ = std::fs::remove_dir_all(link.parent().unwrap());
        let out = s.run_once(&[&format!("--sparse-checkout-file={}", sparse.display())]);
        assert!(
            out.status.success(),
            "{patterns:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            std::fs::read_to_string(link.join("sub/file")).unwrap(),
            "sub one",
            "{patterns:?}"
        );
        assert_eq!(
            std::fs::read_to_string(link.join("sub/nested/file")).unwrap(),
            "nested one"
        );
        assert_eq!(
            std::fs::read_to_string(link.join("file")).unwrap(),
            "top one"
        );
        assert!(
            !link.join("docs").exists(),
            "{patterns:?}: outside the sparse set"
        );
    }
}
