//! git-sync authentication against real servers on loopback: git
//! http-backend behind lighttpd with basic auth, and sshd with keys and
//! known_hosts. Ports upstream's auth e2e cases.

#[path = "git_sync/helpers.rs"]
mod helpers;
mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use helpers::{git, Setup};
use support::http::Receiver;

fn run_env(args: &[String], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(support::bin());
    cmd.args(["git-sync", "--admin-addr=off", "--one-time"])
        .args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    support::run_cmd(&mut cmd)
}

/// Fails the test with the sync's stderr unless it succeeded.
#[track_caller]
fn assert_success(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn http_setup() -> Option<(Setup, helpers::Peer, String)> {
    let s = Setup::new();
    s.up.commit("one");
    let (peer, port) = helpers::lighttpd(s.tmp.path(), s.tmp.path(), "testuser:testpass\n")?;
    let url = format!("http://127.0.0.1:{port}/git/repo");
    Some((s, peer, url))
}

fn base_args(s: &Setup, url: &str) -> Vec<String> {
    vec![
        format!("--repo={url}"),
        s.root_arg(),
        "--link=link".into(),
        "--touch-file=_sync_lock".into(),
    ]
}

#[test]
fn http_basic_auth_username_and_password() {
    let Some((s, _peer, url)) = http_setup() else {
        return;
    };
    let mut args = base_args(&s, &url);
    args.push("--username=wrong".into());
    assert!(!run_env(&args, &[("GITSYNC_PASSWORD", "testpass")])
        .status
        .success());
    assert!(!s.link().exists());

    let mut args = base_args(&s, &url);
    args.push("--username=testuser".into());
    assert!(!run_env(&args, &[("GITSYNC_PASSWORD", "wrong")])
        .status
        .success());
    let out = run_env(&args, &[("GITSYNC_PASSWORD", "testpass")]);
    assert_success(&out);
    s.assert_real_worktree(&s.up.head());

    // Upstream's e2e spelling of the password.
    let mut args = base_args(&s, &url);
    args.push("--username=testuser".into());
    args.push("--__env__GITSYNC_PASSWORD=testpass".into());
    assert!(run_env(&args, &[]).status.success());

    // The deprecated `--password` flag, as upstream's auth_http_password uses it.
    let mut args = base_args(&s, &url);
    args.push("--username=testuser".into());
    args.push("--password=testpass".into());
    assert!(run_env(&args, &[]).status.success());
    let mut args = base_args(&s, &url);
    args.push("--username=testuser".into());
    args.push("--password=wrong".into());
    assert!(!run_env(&args, &[]).status.success());
}

#[test]
fn http_password_in_url_is_used_and_never_logged() {
    let Some((s, _peer, url)) = http_setup() else {
        return;
    };
    let with_pass = url.replace("http://", "http://testuser:testpass@");
    let out = run_env(&base_args(&s, &with_pass), &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("testpass"), "{stderr}");
    let bad = url.replace("http://", "http://testuser:nope@");
    let out = run_env(&base_args(&s, &bad), &[]);
    assert!(!out.status.success());
    assert!(!String::from_utf8_lossy(&out.stderr).contains("nope"));
}

#[test]
fn http_password_file_is_reread_every_sync() {
    let Some((s, _peer, url)) = http_setup() else {
        return;
    };
    let pw = s.tmp.path().join("password");
    std::fs::write(&pw, "wrong").unwrap();
    let mut args = base_args(&s, &url);
    args.push("--username=testuser".into());
    args.push(format!("--password-file={}", pw.display()));
    assert!(!run_env(&args, &[]).status.success());

    std::fs::write(&pw, "testpass").unwrap();
    args.push("--period=100ms".into());
    args.push("--max-failures=-1".into());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut sc = support::Sidecar::start("git-sync", &refs);
    s.wait_for_sync();
    // Rotated to a wrong secret: the next update fails...
    std::fs::write(&pw, "rotated-wrong").unwrap();
    let sha2 = s.up.commit("two");
    sc.wait_for_log("authentication failed");
    assert_ne!(s.published(), sha2);
    // ...and the right one is picked up without a restart.
    std::fs::write(&pw, "testpass").unwrap();
    s.wait_for_sync();
    assert_eq!(s.published(), sha2);
}

#[test]
fn http_credential_json_and_askpass_url() {
    let Some((s, _peer, url)) = http_setup() else {
        return;
    };
    let mut args = base_args(&s, &url);
    args.push(format!(
        r#"--credential={{"url":"{url}","username":"testuser","password":"testpass"}}"#
    ));
    let out = run_env(&args, &[]);
    assert_success(&out);

    let pwfile = s.tmp.path().join("pw");
    std::fs::write(&pwfile, "testpass").unwrap();
    let mut args = base_args(&s, &url);
    args.push(format!(
        r#"--credential=[{{"url":"{url}","username":"testuser","password-file":"{}"}}]"#,
        pwfile.display()
    ));
    assert!(run_env(&args, &[]).status.success());

    let askpass = Receiver::with(|_| (200, "username=testuser\npassword=testpass\n".into()));
    let mut args = base_args(&s, &url);
    args.push(format!("--askpass-url={}", askpass.url("/creds")));
    let out = run_env(&args, &[]);
    assert_success(&out);
    assert_eq!(askpass.next().path, "/creds");

    let wrong = Receiver::with(|_| (200, "username=testuser\npassword=nope\n".into()));
    let mut args = base_args(&s, &url);
    args.push(format!("--askpass-url={}", wrong.url("/")));
    assert!(!run_env(&args, &[]).status.success());
}

fn ssh_setup(
    keys: &[&str],
    authorized: &[&str],
) -> Option<(Setup, helpers::Peer, u16, std::path::PathBuf)> {
    let s = Setup::new();
    s.up.commit("one");
    for k in keys {
        helpers::keygen(&s.tmp.path().join(k));
    }
    let auth: Vec<_> = authorized.iter().map(|k| s.tmp.path().join(k)).collect();
    let (peer, port, known) = helpers::sshd(s.tmp.path(), &auth)?;
    Some((s, peer, port, known))
}

fn key_arg(dir: &Path, k: &str) -> String {
    format!("--ssh-key-file={}", dir.join(k).display())
}

#[test]
fn ssh_with_keys_and_known_hosts() {
    let Some((s, _peer, port, known)) = ssh_setup(&["wrong", "right"], &["right"]) else {
        return;
    };
    let url = format!("ssh://root@127.0.0.1:{port}{}", s.up.dir.display());
    let kh = format!("--ssh-known-hosts-file={}", known.display());
    let dir = s.tmp.path();

    let mut args = base_args(&s, &url);
    args.extend([key_arg(dir, "wrong"), kh.clone()]);
    assert!(
        !run_env(&args, &[]).status.success(),
        "a wrong key must fail"
    );

    // Several keys: the accepted one is found (auth_ssh).
    let mut args = base_args(&s, &url);
    args.extend([key_arg(dir, "wrong"), key_arg(dir, "right"), kh.clone()]);
    let out = run_env(&args, &[]);
    assert_success(&out);
    s.assert_real_worktree(&s.up.head());

    // The env var form is ':'-separated.
    let keys = format!(
        "{}:{}",
        dir.join("wrong").display(),
        dir.join("right").display()
    );
    let out = run_env(
        &base_args(&s, &url),
        &[
            ("GITSYNC_SSH_KEY_FILE", keys.as_str()),
            ("GITSYNC_SSH_KNOWN_HOSTS_FILE", &known.display().to_string()),
        ],
    );
    assert_success(&out);

    // The same known_hosts hashed by OpenSSH (`|1|salt|hash` entries).
    let hashed = dir.join("known_hosts_hashed");
    std::fs::copy(&known, &hashed).unwrap();
    let st = Command::new("ssh-keygen")
        .args(["-q", "-H", "-f"])
        .arg(&hashed)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let text = std::fs::read_to_string(&hashed).unwrap();
    assert!(text.starts_with("|1|"), "{text}");
    let mut args = base_args(&s, &url);
    args.extend([
        key_arg(dir, "right"),
        format!("--ssh-known-hosts-file={}", hashed.display()),
    ]);
    let out = run_env(&args, &[]);
    assert_success(&out);
}

#[test]
fn ssh_rejects_unknown_host_keys_unless_checking_is_off() {
    let Some((s, _peer, port, _known)) = ssh_setup(&["right"], &["right"]) else {
        return;
    };
    let url = format!("ssh://root@127.0.0.1:{port}{}", s.up.dir.display());
    let other = s.tmp.path().join("other_known_hosts");
    helpers::keygen(&s.tmp.path().join("impostor"));
    let impostor = std::fs::read_to_string(s.tmp.path().join("impostor.pub")).unwrap();
    std::fs::write(&other, format!("[127.0.0.1]:{port} {impostor}")).unwrap();

    let mut args = base_args(&s, &url);
    args.extend([
        key_arg(s.tmp.path(), "right"),
        format!("--ssh-known-hosts-file={}", other.display()),
    ]);
    let out = run_env(&args, &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Host key verification failed"), "{err}");

    args.push("--ssh-known-hosts=false".into());
    let out = run_env(&args, &[]);
    assert_success(&out);
    assert_eq!(git(&s.link(), &["rev-parse", "HEAD"]), s.up.head());
}

/// RSA keys, in OpenSSH's format and in PEM's (`BEGIN RSA PRIVATE KEY`),
/// and ECDSA keys (OpenSSH's format and PKCS#8) log in as ed25519 ones do. The test sshd (OpenSSH 8.8 or
/// later) refuses RSA signatures over SHA-1, so RSA signs with rsa-sha2.
#[test]
fn ssh_rsa_and_ecdsa_keys() {
    let s = Setup::new();
    s.up.commit("one");
    let dir = s.tmp.path();
    let kinds: [(&str, &[&str]); 4] = [
        ("rsa", &["-t", "rsa", "-b", "2048"]),
        ("rsa-pem", &["-t", "rsa", "-b", "2048", "-m", "PEM"]),
        ("ecdsa", &["-t", "ecdsa"]),
        ("ecdsa-pkcs8", &["-t", "ecdsa", "-m", "PKCS8"]),
    ];
    for (name, args) in kinds {
        helpers::keygen_with(&dir.join(name), &[args, &["-N", ""]].concat());
    }
    let pem = std::fs::read_to_string(dir.join("rsa-pem")).unwrap();
    assert!(pem.starts_with("-----BEGIN RSA PRIVATE KEY-----"), "{pem}");
    let authorized: Vec<_> = kinds.iter().map(|(k, _)| dir.join(k)).collect();
    let Some((_peer, port, known)) = helpers::sshd(dir, &authorized) else {
        return;
    };
    let url = format!("ssh://root@127.0.0.1:{port}{}", s.up.dir.display());
    for (name, _) in kinds {
        let mut args = base_args(&s, &url);
        args.extend([
            key_arg(dir, name),
            format!("--ssh-known-hosts-file={}", known.display()),
        ]);
        let out = run_env(&args, &[]);
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        s.assert_real_worktree(&s.up.head());
    }
}

/// A server with several host keys shows the one the known_hosts file
/// lists (OpenSSH asks for the known key types first): here RSA, where the
/// client would otherwise take ed25519.
#[test]
fn ssh_host_key_type_follows_known_hosts() {
    let s = Setup::new();
    s.up.commit("one");
    let dir = s.tmp.path();
    helpers::keygen(&dir.join("right"));
    let Some((_peer, port, known)) = helpers::sshd_with_host_keys(
        dir,
        &[dir.join("right")],
        "127.0.0.1",
        helpers::free_port(),
        &["rsa", "ed25519"],
    ) else {
        return;
    };
    let text = std::fs::read_to_string(&known).unwrap();
    assert!(text.contains(" ssh-rsa "), "{text}");
    let url = format!("ssh://root@127.0.0.1:{port}{}", s.up.dir.display());
    let mut args = base_args(&s, &url);
    args.extend([
        key_arg(dir, "right"),
        format!("--ssh-known-hosts-file={}", known.display()),
    ]);
    let out = run_env(&args, &[]);
    assert_success(&out);
    s.assert_real_worktree(&s.up.head());
}

/// What fails on the server or in a key file is named: a repository that
/// is not there (upload-pack's own message), a key with a passphrase, a
/// key file that is not a key. scp-like syntax reaches a port in brackets.
#[test]
fn ssh_errors_name_what_failed() {
    let Some((s, _peer, port, known)) = ssh_setup(&["right"], &["right"]) else {
        return;
    };
    let dir = s.tmp.path();
    let kh = format!("--ssh-known-hosts-file={}", known.display());
    let sync = |url: &str, key: &str| {
        let mut args = base_args(&s, url);
        args.extend([key_arg(dir, key), kh.clone()]);
        run_env(&args, &[])
    };

    let missing = dir.join("no-such-repo");
    let out = sync(
        &format!("[root@127.0.0.1:{port}]:{}", missing.display()),
        "right",
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "'{}' does not appear to be a git repository",
            missing.display()
        )) && err.contains("exited with status 128"),
        "{err}"
    );

    helpers::keygen_with(&dir.join("locked"), &["-t", "ed25519", "-N", "secret"]);
    std::fs::write(dir.join("garbage"), "not a key\n").unwrap();
    let url = format!("[root@127.0.0.1:{port}]:{}", s.up.dir.display());
    for (key, why) in [
        ("locked", "keys with a passphrase are not supported"),
        ("garbage", "not a usable private key"),
    ] {
        let out = sync(&url, key);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        let want = format!("--ssh-key-file {}: {why}", dir.join(key).display());
        assert!(err.contains(&want), "{err}");
    }

    let out = sync(&url, "right");
    assert_success(&out);
    s.assert_real_worktree(&s.up.head());
}

/// git http-backend behind lighttpd with TLS (a self-signed certificate,
/// returned) and basic auth, and a one-time sync's flags with the right
/// password. None when lighttpd is missing (outside CI).
fn https_setup(s: &Setup) -> Option<(helpers::Peer, Vec<String>, PathBuf)> {
    let (peer, port, cert) =
        helpers::lighttpd_tls(s.tmp.path(), s.tmp.path(), "testuser:testpass\n")?;
    let mut args = base_args(s, &format!("https://127.0.0.1:{port}/git/repo"));
    let pw = s.tmp.path().join("pw");
    std::fs::write(&pw, "testpass").unwrap();
    args.push("--username=testuser".into());
    args.push(format!("--password-file={}", pw.display()));
    Some((peer, args, cert))
}

#[test]
fn https_trusts_the_ca_named_by_ssl_cert_file() {
    let s = Setup::new();
    let sha = s.up.commit("one");
    let Some((_peer, args, cert)) = https_setup(&s) else {
        return;
    };
    // An unknown CA is refused...
    let empty = s.tmp.path().join("empty-ca.pem");
    std::fs::write(&empty, "").unwrap();
    let out = run_env(&args, &[("SSL_CERT_FILE", empty.to_str().unwrap())]);
    let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(!out.status.success(), "an untrusted certificate must fail");
    assert!(err.contains("certificate"), "{err}");
    // ...and the one SSL_CERT_FILE names is trusted (a scratch image's only CA bundle).
    let out = run_env(&args, &[("SSL_CERT_FILE", cert.to_str().unwrap())]);
    assert_success(&out);
    assert_eq!(git(&s.link(), &["rev-parse", "HEAD"]), sha);
}

/// Debian's layout: the bundle, and a directory with each of its
/// certificates under its subject hash (update-ca-certificates writes both).
/// git-sync then trusts the CA through the directory, which OpenSSL reads
/// only as far as a server's chain needs, without loading the bundle.
#[test]
fn https_trusts_a_ca_in_the_hashed_ssl_cert_dir() {
    let s = Setup::new();
    let sha = s.up.commit("one");
    let Some((_peer, mut args, cert)) = https_setup(&s) else {
        return;
    };
    let hash = Command::new("openssl")
        .args(["x509", "-noout", "-subject_hash", "-in"])
        .arg(&cert)
        .output()
        .unwrap();
    let hash = String::from_utf8(hash.stdout).unwrap();
    let dir = s.tmp.path().join("certs");
    std::fs::create_dir(&dir).unwrap();
    std::fs::copy(&cert, dir.join(format!("{}.0", hash.trim()))).unwrap();
    let bundle = dir.join("ca-certificates.crt");
    std::fs::copy(&cert, &bundle).unwrap();
    args.push("--log-level=sidecar_git_sync=debug,info".into());
    let out = run_env(
        &args,
        &[
            ("SSL_CERT_FILE", bundle.to_str().unwrap()),
            ("SSL_CERT_DIR", dir.to_str().unwrap()),
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(git(&s.link(), &["rev-parse", "HEAD"]), sha);
    // Trusted through the directory: the bundle was left unloaded.
    assert!(err.contains("CA bundle not loaded"), "{err}");
}

/// Like git, git-sync reads the CA bundle only for http(s) remotes: a
/// `file://` sync works with a bundle that would not load, and hooks see
/// `SSL_CERT_FILE` as it was given (git-sync hides it from libgit2's start).
#[test]
fn ca_bundle_is_read_only_for_https_remotes() {
    let s = Setup::new();
    let sha = s.up.commit("one");
    let garbage = s.tmp.path().join("garbage-ca.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap();
    let seen = s.tmp.path().join("hook-saw");
    let hook = s.tmp.path().join("hook.sh");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\nprintf %s \"$SSL_CERT_FILE\" > {}\n",
            seen.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut args = base_args(&s, &s.up.url());
    args.push(format!("--exechook-command={}", hook.display()));
    let out = run_env(&args, &[("SSL_CERT_FILE", garbage.to_str().unwrap())]);
    assert_success(&out);
    assert_eq!(git(&s.link(), &["rev-parse", "HEAD"]), sha);
    assert_eq!(
        std::fs::read_to_string(&seen).unwrap(),
        garbage.to_str().unwrap()
    );
}

/// `--cookie-file` (upstream's fixed /etc/git-secret/cookie_file, here put
/// in place in a private mount namespace): the git host lets only requests
/// carrying the session cookie through.
#[test]
fn cookie_file_cookies_are_sent() {
    let s = Setup::new();
    s.up.commit("one");
    let Some((_peer, port)) = helpers::lighttpd_with(
        s.tmp.path(),
        s.tmp.path(),
        "testuser:testpass\n",
        "$HTTP[\"cookie\"] !~ \"(^|; )session=s3cr3t(;|$)\" {\n  url.access-deny = ( \"\" )\n}\n",
    ) else {
        assert!(std::env::var("CI").is_err(), "lighttpd is missing");
        return;
    };
    let url = format!("http://127.0.0.1:{port}/git/repo");
    let cookies = s.tmp.path().join("cookie_file");
    let run_with = |cookie_line: &str| {
        std::fs::write(
            &cookies,
            format!("# Netscape HTTP Cookie File\n{cookie_line}\n"),
        )
        .unwrap();
        // /etc is replaced in this process's mount namespace only; the
        // binary is static and needs nothing from it.
        let script = r#"mount -t tmpfs none /etc && mkdir /etc/git-secret &&
cp "$1" /etc/git-secret/cookie_file && shift && exec "$@""#;
        let mut cmd = Command::new("unshare");
        cmd.args(["-m", "--propagation", "private", "sh", "-c", script, "sh"])
            .arg(&cookies)
            .arg(support::bin())
            .args([
                "git-sync",
                "--admin-addr=off",
                "--one-time",
                "--cookie-file",
            ])
            .args(base_args(&s, &url))
            .args(["--username=testuser", "--password-file"])
            .arg(s.tmp.path().join("pw"))
            .env_remove("SSL_CERT_FILE")
            .env_remove("SSL_CERT_DIR");
        support::run_cmd(&mut cmd)
    };
    std::fs::write(s.tmp.path().join("pw"), "testpass").unwrap();
    if !nix::unistd::geteuid().is_root() {
        assert!(
            std::env::var("CI").is_err(),
            "needs root for a mount namespace"
        );
        return;
    }
    let out = run_with("127.0.0.1\tFALSE\t/\tFALSE\t0\tsession\twrong");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a wrong cookie must be refused");
    assert!(stderr.contains("403"), "{stderr}");
    assert!(!s.link().exists());
    let out = run_with("127.0.0.1\tFALSE\t/git\tFALSE\t0\tsession\ts3cr3t");
    assert_success(&out);
    s.assert_real_worktree(&s.up.head());
    // Without the flag the cookie is not sent.
    let mut args = base_args(&s, &url);
    args.extend([
        "--username=testuser".into(),
        "--__env__GITSYNC_PASSWORD=testpass".into(),
    ]);
    assert!(!run_env(&args, &[]).status.success());
}

/// A server certificate issued by a CA (as public git hosts have), found
/// through `SSL_CERT_FILE` or by its issuer in a hashed `SSL_CERT_DIR`;
/// a certificate for another name is refused, saying so.
#[test]
fn https_checks_the_chain_and_the_name_against_the_ca() {
    let s = Setup::new();
    let sha = s.up.commit("one");
    let Some((_peer, port, ca)) =
        helpers::lighttpd_ca_tls(s.tmp.path(), s.tmp.path(), "testuser:testpass\n", "")
    else {
        return;
    };
    let pw = s.tmp.path().join("pw");
    std::fs::write(&pw, "testpass").unwrap();
    let args = |host: &str| {
        let mut a = base_args(&s, &format!("https://{host}:{port}/git/repo"));
        a.push("--username=testuser".into());
        a.push(format!("--password-file={}", pw.display()));
        a
    };
    let out = run_env(
        &args("127.0.0.1"),
        &[("SSL_CERT_FILE", ca.to_str().unwrap())],
    );
    assert_success(&out);
    assert_eq!(git(&s.link(), &["rev-parse", "HEAD"]), sha);

    let hash = Command::new("openssl")
        .args(["x509", "-noout", "-subject_hash", "-in"])
        .arg(&ca)
        .output()
        .unwrap();
    let dir = s.tmp.path().join("certs");
    std::fs::create_dir(&dir).unwrap();
    let hashed = dir.join(format!(
        "{}.0",
        String::from_utf8(hash.stdout).unwrap().trim()
    ));
    std::fs::copy(&ca, hashed).unwrap();
    let empty = s.tmp.path().join("empty-ca.pem");
    std::fs::write(&empty, "").unwrap();
    let env = [
        ("SSL_CERT_FILE", empty.to_str().unwrap()),
        ("SSL_CERT_DIR", dir.to_str().unwrap()),
    ];
    let out = run_env(&args("127.0.0.1"), &env);
    assert_success(&out);
    assert_eq!(git(&s.link(), &["rev-parse", "HEAD"]), sha);

    // The certificate names 127.0.0.1 only.
    let out = run_env(&args("localhost"), &env);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("certificate not valid for name \"localhost\""),
        "{err}"
    );
}

/// The listing follows a redirect, and the fetch goes where it pointed
/// (as libgit2 did); from https to plain http is refused.
#[test]
fn http_redirects_are_followed_but_not_to_plain_http() {
    let s = Setup::new();
    let sha = s.up.commit("one");
    let redirect = "server.modules += ( \"mod_redirect\" )\nurl.redirect = ( \"^/moved/(.*)$\" => \"/git/$1\" )\n";
    let Some((_peer, port)) =
        helpers::lighttpd_with(s.tmp.path(), s.tmp.path(), "testuser:testpass\n", redirect)
    else {
        return;
    };
    let mut args = base_args(&s, &format!("http://127.0.0.1:{port}/moved/repo"));
    args.push("--username=testuser".into());
    args.push("--password=testpass".into());
    let out = run_env(&args, &[]);
    assert_success(&out);
    assert_eq!(git(&s.link(), &["rev-parse", "HEAD"]), sha);

    let tls = s.tmp.path().join("tls");
    std::fs::create_dir(&tls).unwrap();
    let downgrade = format!(
        "server.modules += ( \"mod_redirect\" )\nurl.redirect = ( \"^/moved/(.*)$\" => \"http://127.0.0.1:{port}/git/$1\" )\n"
    );
    let Some((_tls_peer, tls_port, ca)) =
        helpers::lighttpd_ca_tls(&tls, s.tmp.path(), "testuser:testpass\n", &downgrade)
    else {
        return;
    };
    let mut args = base_args(&s, &format!("https://127.0.0.1:{tls_port}/moved/repo"));
    args.push("--username=testuser".into());
    args.push("--password=testpass".into());
    let out = run_env(&args, &[("SSL_CERT_FILE", ca.to_str().unwrap())]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("cannot redirect from 'https' to 'http'"),
        "{err}"
    );
}

/// A one-thread HTTP/1.1 server for the cases a real git server cannot be
/// made to play: each connection's requests are answered by `respond`
/// (request head in, raw response out; `None` hands the stream over to it,
/// which then owns the connection). Requests' heads are recorded.
fn scripted_server(
    respond: impl Fn(&str, &mut std::net::TcpStream) -> Option<String> + Send + Sync + 'static,
) -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let heads = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let (seen, respond) = (heads.clone(), std::sync::Arc::new(respond));
    std::thread::spawn(move || {
        for stream in listener.incoming().take(32) {
            let Ok(mut stream) = stream else { continue };
            let (seen, respond) = (seen.clone(), respond.clone());
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                // At most a few requests per connection: git-sync makes two.
                for _ in 0..8 {
                    let mut head = String::new();
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                        head.push_str(&line);
                    }
                    seen.lock().unwrap().push(head.clone());
                    match respond(&head, &mut stream) {
                        Some(resp) => {
                            if stream.write_all(resp.as_bytes()).is_err() {
                                return;
                            }
                        }
                        None => return,
                    }
                }
            });
        }
    });
    (port, heads)
}

fn has_authorization(head: &str) -> bool {
    head.lines()
        .any(|l| l.to_ascii_lowercase().starts_with("authorization:"))
}

/// Credentials answered to one host never go to another after a redirect
/// (as git and curl): the other host gets a request without them, and its
/// own 401 finds no credentials configured for it.
#[test]
fn credentials_do_not_follow_a_redirect_to_another_host() {
    let s = Setup::new();
    let unauthorized = "HTTP/1.1 401 Unauthorized\r\nwww-authenticate: Basic realm=\"git\"\r\ncontent-length: 0\r\n\r\n";
    let (other_port, other_heads) = scripted_server(move |_, _| Some(unauthorized.into()));
    let (port, heads) = scripted_server(move |head, _| {
        Some(if has_authorization(head) {
            format!(
                "HTTP/1.1 302 Found\r\nlocation: http://localhost:{other_port}/repo/info/refs?service=git-upload-pack\r\ncontent-length: 0\r\n\r\n"
            )
        } else {
            unauthorized.into()
        })
    });
    let mut args = base_args(&s, &format!("http://127.0.0.1:{port}/repo"));
    args.push("--username=testuser".into());
    args.push("--password=s3cret-pass".into());
    let out = run_env(&args, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    // The first host asked and got the credentials, then redirected.
    assert!(heads.lock().unwrap().iter().any(|h| has_authorization(h)));
    let other = other_heads.lock().unwrap();
    assert!(!other.is_empty(), "the redirect was not followed: {err}");
    assert!(
        !other.iter().any(|h| has_authorization(h)),
        "credentials went to the other host: {other:?}"
    );
    assert!(
        err.contains("no credentials configured"),
        "the other host's 401 is answered from its own credentials: {err}"
    );
}

/// `--sync-timeout` bounds an http(s) exchange as a whole: a server that
/// trickles its ref advertisement a byte at a time, each within the read
/// timeout, no longer holds the sync (it would have for two minutes, the
/// server's own bound, past the test's deadline).
#[test]
fn a_trickling_http_server_is_cut_off_at_the_sync_timeout() {
    use std::io::Write;
    let s = Setup::new();
    let (port, _) = scripted_server(|_, stream| {
        let _ = stream.write_all(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/x-git-upload-pack-advertisement\r\ntransfer-encoding: chunked\r\n\r\n",
        );
        // A valid advertisement that never ends: the service line, then
        // one ref after another, each byte its own chunk, a byte every
        // 100 ms, for at most two minutes or until git-sync hangs up.
        let mut adv = String::from("001e# service=git-upload-pack\n0000");
        for i in 0..40 {
            let caps = if i == 0 { "\0multi_ack" } else { "" };
            let line = format!("{} refs/heads/b{i:02}{caps}\n", "1".repeat(40));
            adv.push_str(&format!("{:04x}{line}", line.len() + 4));
        }
        for b in adv.bytes().take(1200) {
            let chunk = [b'1', b'\r', b'\n', b, b'\r', b'\n'];
            if stream.write_all(&chunk).is_err() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        None
    });
    let mut args = base_args(&s, &format!("http://127.0.0.1:{port}/repo"));
    args.push("--sync-timeout=1s".into());
    let out = run_env(&args, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("timed out"), "{err}");
}

/// Proxies as git uses them: `http_proxy` / `https_proxy` from the
/// environment (https through CONNECT), and `http.proxy` from
/// `--git-config`, through a real forward proxy.
#[test]
fn http_and_https_go_through_the_configured_proxy() {
    let s = Setup::new();
    let sha = s.up.commit("one");
    let proxy_dir = s.tmp.path().join("proxy");
    std::fs::create_dir(&proxy_dir).unwrap();
    let Some((_proxy, proxy_port, proxy_log)) = helpers::tinyproxy(&proxy_dir) else {
        return;
    };
    let Some((_peer, port)) = helpers::lighttpd(s.tmp.path(), s.tmp.path(), "testuser:testpass\n")
    else {
        return;
    };
    let proxy = format!("http://127.0.0.1:{proxy_port}");
    let logged = || std::fs::read_to_string(&proxy_log).unwrap_or_default();

    let mut args = base_args(&s, &format!("http://127.0.0.1:{port}/git/repo"));
    args.extend(["--username=testuser".into(), "--password=testpass".into()]);
    let out = run_env(&args, &[("http_proxy", &proxy), ("no_proxy", "")]);
    assert_success(&out);
    assert_eq!(git(&s.link(), &["rev-parse", "HEAD"]), sha);
    let want = format!("GET http://127.0.0.1:{port}/git/repo/info/refs");
    assert!(
        logged().contains(&want),
        "not through the proxy: {}",
        logged()
    );

    // `http.proxy` wins over the variables (this one points nowhere).
    let mut args = base_args(&s, &format!("http://127.0.0.1:{port}/git/repo"));
    args.extend([
        "--username=testuser".into(),
        "--password=testpass".into(),
        format!("--git-config=http.proxy:{proxy}"),
    ]);
    let before = logged().matches(&want).count();
    let out = run_env(
        &args,
        &[("http_proxy", "http://127.0.0.1:9"), ("no_proxy", "")],
    );
    assert_success(&out);
    assert!(logged().matches(&want).count() > before, "{}", logged());

    // https: a CONNECT tunnel; the server's certificate is still checked
    // end to end.
    let tls = s.tmp.path().join("tls");
    std::fs::create_dir(&tls).unwrap();
    let Some((_tls_peer, tls_port, ca)) =
        helpers::lighttpd_ca_tls(&tls, s.tmp.path(), "testuser:testpass\n", "")
    else {
        return;
    };
    let mut args = base_args(&s, &format!("https://127.0.0.1:{tls_port}/git/repo"));
    args.extend(["--username=testuser".into(), "--password=testpass".into()]);
    let out = run_env(
        &args,
        &[
            ("https_proxy", &proxy),
            ("no_proxy", ""),
            ("SSL_CERT_FILE", ca.to_str().unwrap()),
        ],
    );
    assert_success(&out);
    assert!(
        logged().contains(&format!("CONNECT 127.0.0.1:{tls_port}")),
        "not through the proxy: {}",
        logged()
    );
}
