//! Helpers for git-sync's integration tests: an upstream repository driven
//! with the real git CLI, peers (git daemon, lighttpd + git-http-backend,
//! sshd) on loopback, and checks of the published worktree with the git CLI.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::support::{self, Sidecar};

/// Runs git with a fixed identity and no user or system config.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "test")
        .env("GIT_AUTHOR_EMAIL", "test@example.com")
        .env("GIT_COMMITTER_NAME", "test")
        .env("GIT_COMMITTER_EMAIL", "test@example.com")
        .stdin(Stdio::null())
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {args:?} in {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The upstream repository tests sync from (branch `e2e-branch`, file `file`).
pub struct Upstream {
    pub dir: PathBuf,
}

impl Upstream {
    pub fn new(parent: &Path) -> Upstream {
        let dir = parent.join("repo");
        std::fs::create_dir_all(&dir).unwrap();
        git(&dir, &["init", "-q", "-b", "e2e-branch"]);
        Upstream { dir }
    }

    pub fn url(&self) -> String {
        format!("file://{}", self.dir.display())
    }

    /// Commits `content` to `file` and returns the new hash.
    pub fn commit(&self, content: &str) -> String {
        self.commit_file("file", content.as_bytes())
    }

    pub fn commit_file(&self, name: &str, content: &[u8]) -> String {
        let path = self.dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, content).unwrap();
        git(&self.dir, &["add", "-A"]);
        git(
            &self.dir,
            &["commit", "-q", "-m", &format!("{name}: {}", content.len())],
        );
        self.head()
    }

    /// Writes `n` files `d{i % dirs}/f{i}` holding `file {i}` (not committed).
    pub fn write_files(&self, n: usize, dirs: usize) {
        for i in 0..n {
            let dir = self.dir.join(format!("d{}", i % dirs));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(format!("f{i}")), format!("file {i}\n")).unwrap();
        }
    }

    pub fn head(&self) -> String {
        git(&self.dir, &["rev-parse", "HEAD"])
    }

    pub fn git(&self, args: &[&str]) -> String {
        git(&self.dir, args)
    }
}

/// A test's root and upstream.
pub struct Setup {
    pub tmp: tempfile::TempDir,
    pub up: Upstream,
    pub root: PathBuf,
}

impl Setup {
    pub fn new() -> Setup {
        let tmp = support::tempdir();
        let up = Upstream::new(tmp.path());
        let root = tmp.path().join("root");
        Setup { tmp, up, root }
    }

    pub fn link(&self) -> PathBuf {
        self.root.join("link")
    }

    pub fn root_arg(&self) -> String {
        format!("--root={}", self.root.display())
    }

    /// Flags every test uses, as upstream's e2e harness does: the touch file
    /// is the sync barrier.
    pub fn args(&self, extra: &[&str]) -> Vec<String> {
        let mut v = vec![
            format!("--repo={}", self.up.url()),
            self.root_arg(),
            "--link=link".to_string(),
            "--touch-file=_sync_lock".to_string(),
        ];
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    }

    /// Starts a syncing process. A touch file left by an earlier process (a
    /// `run_once`, or a restart) is removed first: `wait_for_sync` would
    /// otherwise return before this process's first pass, and the next wait
    /// on the first pass's own touch, before the change it waits for.
    pub fn start(&self, extra: &[&str]) -> Sidecar {
        match std::fs::remove_file(self.root.join("_sync_lock")) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => panic!("touch file: {e}"),
            _ => {}
        }
        let args = self.args(extra);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        Sidecar::start("git-sync", &refs)
    }

    pub fn run_once(&self, extra: &[&str]) -> std::process::Output {
        let mut args = vec![
            "git-sync".to_string(),
            "--admin-addr=off".into(),
            "--one-time".into(),
        ];
        args.extend(self.args(extra));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        support::run(&refs)
    }

    /// Waits for the touch file and removes it. It is touched at the end of a
    /// pass that published a commit (the first, or a change), after cleanup.
    pub fn wait_for_sync(&self) {
        let f = self.root.join("_sync_lock");
        support::wait_until("a sync (touch file)", || f.exists());
        std::fs::remove_file(&f).unwrap();
    }

    /// The published hash, `basename(readlink(link))`.
    pub fn published(&self) -> String {
        let t = std::fs::read_link(self.link()).expect("link exists");
        t.file_name().unwrap().to_string_lossy().into_owned()
    }

    pub fn content(&self) -> String {
        std::fs::read_to_string(self.link().join("file")).unwrap()
    }

    /// The git CLI accepts the published worktree: HEAD, clean status,
    /// history, archive.
    pub fn assert_real_worktree(&self, hash: &str) {
        let link = self.link();
        assert_eq!(git(&link, &["rev-parse", "HEAD"]), hash);
        assert_eq!(
            git(&link, &["status", "--porcelain"]),
            "",
            "worktree is not clean"
        );
        git(&link, &["log", "--oneline", "-1"]);
        let out = Command::new("git")
            .arg("-C")
            .arg(&link)
            .args(["archive", "--format=tar", "HEAD"])
            .output()
            .unwrap();
        assert!(
            out.status.success() && !out.stdout.is_empty(),
            "git archive failed"
        );
        let target = std::fs::read_link(&link).unwrap();
        assert!(
            target.is_relative(),
            "link target {target:?} is not relative"
        );
    }

    pub fn rev_count(&self) -> usize {
        git(&self.link(), &["rev-list", "HEAD"]).lines().count()
    }
}

// Each test crate uses a different subset.
#[allow(unused_imports)]
pub use crate::support::{free_port, metrics::metric, peer::group_members, Peer};

/// `git daemon` serving `base` on loopback.
pub fn git_daemon(base: &Path) -> (Peer, u16) {
    let port = free_port();
    let peer = Peer::spawn(
        Command::new("git")
            .args([
                "daemon",
                "--reuseaddr",
                "--export-all",
                "--informative-errors",
                "--listen=127.0.0.1",
            ])
            .arg(format!("--port={port}"))
            .arg(format!("--base-path={}", base.display()))
            .arg(base)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
    .expect("start git daemon");
    support::http::wait_listening(format!("127.0.0.1:{port}").parse().unwrap());
    (peer, port)
}

/// lighttpd serving `git-http-backend` for repositories under `base` at
/// `/git/`, with basic auth from `users` (`name:password` lines).
pub fn lighttpd(dir: &Path, base: &Path, users: &str) -> Option<(Peer, u16)> {
    lighttpd_with(dir, base, users, "")
}

/// The same over TLS with a fresh self-signed certificate for 127.0.0.1;
/// returns the certificate to trust.
pub fn lighttpd_tls(dir: &Path, base: &Path, users: &str) -> Option<(Peer, u16, PathBuf)> {
    let (extra, cert) = support::lighttpd::self_signed_tls(dir, "127.0.0.1", Some("IP:127.0.0.1"))?;
    let (peer, port) = lighttpd_with(dir, base, users, &extra)?;
    Some((peer, port, cert))
}

/// The same over TLS with a server certificate for 127.0.0.1 issued by a
/// CA of its own; returns the CA's certificate to trust.
pub fn lighttpd_ca_tls(
    dir: &Path,
    base: &Path,
    users: &str,
    extra: &str,
) -> Option<(Peer, u16, PathBuf)> {
    let (tls, ca) = support::lighttpd::ca_signed_tls(dir, "127.0.0.1", "IP:127.0.0.1")?;
    let (peer, port) = lighttpd_with(dir, base, users, &format!("{tls}{extra}"))?;
    Some((peer, port, ca))
}

pub fn lighttpd_with(dir: &Path, base: &Path, users: &str, extra: &str) -> Option<(Peer, u16)> {
    if !support::lighttpd::available() {
        return None;
    }
    let exec_path = Command::new("git").arg("--exec-path").output().unwrap();
    let exec_path = String::from_utf8_lossy(&exec_path.stdout)
        .trim()
        .to_string();
    let port = free_port();
    let users_file = dir.join("users");
    std::fs::write(&users_file, users).unwrap();
    let conf = dir.join("lighttpd.conf");
    std::fs::write(
        &conf,
        format!(
            r#"server.document-root = "{dir}"
server.bind = "127.0.0.1"
server.port = {port}
server.modules = ( "mod_access", "mod_alias", "mod_auth", "mod_authn_file", "mod_cgi", "mod_setenv" )
server.errorlog = "{dir}/lighttpd.error.log"
alias.url = ( "/git/" => "{exec_path}/git-http-backend/" )
$HTTP["url"] =~ "^/git/" {{
  cgi.assign = ( "" => "" )
  setenv.add-environment = ( "GIT_PROJECT_ROOT" => "{base}", "GIT_HTTP_EXPORT_ALL" => "1" )
  auth.backend = "plain"
  auth.backend.plain.userfile = "{users}"
  auth.require = ( "" => ( "method" => "basic", "realm" => "git", "require" => "valid-user" ) )
}}
{extra}
"#,
            dir = dir.display(),
            base = base.display(),
            users = users_file.display(),
        ),
    )
    .unwrap();
    Some((support::lighttpd::spawn(&conf, port), port))
}

/// An sshd on loopback that accepts `authorized` public keys for the
/// current user and runs git-upload-pack. Returns the server and a
/// known_hosts file for it.
pub fn sshd(dir: &Path, authorized: &[PathBuf]) -> Option<(Peer, u16, PathBuf)> {
    sshd_on(dir, authorized, "127.0.0.1", free_port())
}

/// sshd on `ip:port`; the known_hosts line is `ip` on port 22 (what an
/// scp-style URL connects to) and `[ip]:port` otherwise.
pub fn sshd_on(
    dir: &Path,
    authorized: &[PathBuf],
    ip: &str,
    port: u16,
) -> Option<(Peer, u16, PathBuf)> {
    sshd_with_host_keys(dir, authorized, ip, port, &["ed25519"])
}

/// sshd with a host key of each type in `host_key_types` (`ssh-keygen -t`);
/// the known_hosts file lists the first only.
pub fn sshd_with_host_keys(
    dir: &Path,
    authorized: &[PathBuf],
    ip: &str,
    port: u16,
    host_key_types: &[&str],
) -> Option<(Peer, u16, PathBuf)> {
    if !support::require_root("sshd") || !support::require_peer("/usr/sbin/sshd") {
        return None;
    }
    let host_keys: Vec<PathBuf> = host_key_types
        .iter()
        .map(|t| {
            let key = dir.join(format!("ssh_host_{t}_key"));
            keygen_with(&key, &["-t", t, "-N", ""]);
            key
        })
        .collect();
    let host_key_lines: String = host_keys
        .iter()
        .map(|k| format!("HostKey {}\n", k.display()))
        .collect();
    let host_key = &host_keys[0];
    let auth_keys = dir.join("authorized_keys");
    let keys: String = authorized
        .iter()
        .map(|k| std::fs::read_to_string(k.with_extension("pub")).unwrap())
        .collect();
    std::fs::write(&auth_keys, keys).unwrap();
    let conf = dir.join("sshd_config");
    std::fs::write(
        &conf,
        format!(
            "ListenAddress {ip}:{port}\n{host_key_lines}AuthorizedKeysFile {}\nPermitRootLogin yes\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPidFile none\n",
            auth_keys.display()
        ),
    )
    .unwrap();
    std::fs::create_dir_all("/run/sshd").unwrap();
    let peer = Peer::spawn(
        Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
    .expect("start sshd");
    support::http::wait_listening(format!("{ip}:{port}").parse().unwrap());
    let pubkey = std::fs::read_to_string(host_key.with_extension("pub")).unwrap();
    let mut fields = pubkey.split_whitespace();
    let known_hosts = dir.join("known_hosts");
    std::fs::write(
        &known_hosts,
        format!(
            "{} {} {}\n",
            if port == 22 {
                ip.to_string()
            } else {
                format!("[{ip}]:{port}")
            },
            fields.next().unwrap(),
            fields.next().unwrap()
        ),
    )
    .unwrap();
    Some((peer, port, known_hosts))
}

/// A passphrase-less ed25519 key pair at `path` and `path.pub`.
pub fn keygen(path: &Path) {
    keygen_with(path, &["-t", "ed25519", "-N", ""]);
}

/// A key pair at `path` and `path.pub`, made by `ssh-keygen` with `args`
/// (type, format, passphrase).
pub fn keygen_with(path: &Path, args: &[&str]) {
    let st = Command::new("ssh-keygen")
        .arg("-q")
        .args(args)
        .arg("-f")
        .arg(path)
        .stdin(Stdio::null())
        .status()
        .expect("run ssh-keygen");
    assert!(st.success());
}

/// tinyproxy, a real forward proxy (plain requests and CONNECT), on
/// loopback. Returns it, its port, and its log, where each request it
/// relays is a line naming the method and the URL or host.
pub fn tinyproxy(dir: &Path) -> Option<(Peer, u16, PathBuf)> {
    if !support::peer::require_peer("tinyproxy") {
        return None;
    }
    let port = free_port();
    let log = dir.join("tinyproxy.log");
    let conf = dir.join("tinyproxy.conf");
    std::fs::write(
        &conf,
        format!(
            "Port {port}\nListen 127.0.0.1\nTimeout 60\nLogFile \"{}\"\nLogLevel Connect\nMaxClients 16\nAllow 127.0.0.1\n",
            log.display()
        ),
    )
    .unwrap();
    let peer = Peer::spawn(
        Command::new("tinyproxy")
            .args(["-d", "-c"])
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
    .unwrap();
    support::http::wait_listening(([127, 0, 0, 1], port).into());
    Some((peer, port, log))
}
