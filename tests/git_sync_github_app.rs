//! GitHub App auth (upstream's auth_github_app_application_id and
//! auth_github_app_client_id, which need real GitHub secrets there): a local
//! server implements GitHub's documented
//! `POST /app/installations/{installation_id}/access_tokens` (201 with
//! `token` and `expires_at`; 401 for a JWT it cannot verify; 404 for an
//! unknown installation), verifying the RS256 JWT with the openssl CLI
//! against the app's public key. The token then opens a git http-backend
//! behind lighttpd, as the HTTPS password with username `-`.

#[path = "git_sync/helpers.rs"]
mod helpers;
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use helpers::{metric, Setup};
use support::http::{Receiver, Request};

const INSTALLATION: &str = "4242";
const APP_ID: &str = "1234";
const TOKEN: &str = "ghs_16C7e42F292c6912E7710c838347Ae178B4a";

fn openssl(args: &[&str]) {
    let st = Command::new("openssl")
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run openssl");
    assert!(
        st.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&st.stderr)
    );
}

/// An RSA key pair as GitHub hands it out (PKCS#1 PEM) and its public key.
fn app_key(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let key = dir.join(format!("{name}.pem"));
    let public = dir.join(format!("{name}.pub.pem"));
    openssl(&[
        "genrsa",
        "-traditional",
        "-out",
        key.to_str().unwrap(),
        "2048",
    ]);
    openssl(&[
        "rsa",
        "-in",
        key.to_str().unwrap(),
        "-pubout",
        "-out",
        public.to_str().unwrap(),
    ]);
    (key, public)
}

/// Whether `jwt` is an RS256 JWT signed by `public`'s key, issued by `iss`
/// and valid now for at most 10 minutes, as GitHub checks it.
fn verify_jwt(jwt: &str, public: &Path, iss: &str, scratch: &Path) -> bool {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let parts: Vec<&str> = jwt.split('.').collect();
    let [header, claims, sig] = parts[..] else {
        return false;
    };
    let (Ok(h), Ok(c), Ok(sig)) = (b64.decode(header), b64.decode(claims), b64.decode(sig)) else {
        return false;
    };
    let h: serde_json::Value = serde_json::from_slice(&h).unwrap_or_default();
    let c: serde_json::Value = serde_json::from_slice(&c).unwrap_or_default();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let (iat, exp) = (
        c["iat"].as_u64().unwrap_or(0),
        c["exp"].as_u64().unwrap_or(0),
    );
    if h["alg"] != "RS256" || c["iss"] != iss || iat > now || exp <= now || exp - iat > 600 {
        return false;
    }
    let input = scratch.join(format!("jwt-input-{}", std::process::id()));
    let sig_file = scratch.join(format!("jwt-sig-{}", std::process::id()));
    std::fs::write(&input, format!("{header}.{claims}")).unwrap();
    std::fs::write(&sig_file, sig).unwrap();
    Command::new("openssl")
        .args(["dgst", "-sha256", "-verify"])
        .arg(public)
        .arg("-signature")
        .arg(&sig_file)
        .arg(&input)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// GitHub's endpoint for one app: `expires_in` seconds of token lifetime.
fn github(public: PathBuf, iss: &'static str, scratch: PathBuf, expires_in: u64) -> Receiver {
    Receiver::with(move |req: &Request| {
        let want = format!("/app/installations/{INSTALLATION}/access_tokens");
        let jwt = req
            .header("authorization")
            .and_then(|a| a.strip_prefix("Bearer "))
            .unwrap_or_default();
        if !verify_jwt(jwt, &public, iss, &scratch) {
            return (
                401,
                r#"{"message":"A JSON web token could not be decoded","documentation_url":"https://docs.github.com/rest"}"#.into(),
            );
        }
        if req.method != "POST" || req.path != want {
            return (
                404,
                r#"{"message":"Not Found","documentation_url":"https://docs.github.com/rest/apps/apps#create-an-installation-access-token-for-an-app"}"#.into(),
            );
        }
        let expires = SystemTime::now() + std::time::Duration::from_secs(expires_in);
        let expires = expires.duration_since(UNIX_EPOCH).unwrap().as_secs();
        let when = Command::new("date")
            .args(["-u", "-d", &format!("@{expires}"), "+%Y-%m-%dT%H:%M:%SZ"])
            .output()
            .unwrap();
        let when = String::from_utf8_lossy(&when.stdout).trim().to_string();
        (
            201,
            format!(
                r#"{{"token":"{TOKEN}","expires_at":"{when}","permissions":{{"contents":"read"}},"repository_selection":"selected"}}"#
            ),
        )
    })
}

struct World {
    s: Setup,
    _git_host: helpers::Peer,
    url: String,
    key: PathBuf,
    public: PathBuf,
}

fn world() -> Option<World> {
    let s = Setup::new();
    s.up.commit("one");
    // The installation token is the password of user `-`.
    let (git_host, port) = helpers::lighttpd(s.tmp.path(), s.tmp.path(), &format!("-:{TOKEN}\n"))?;
    let url = format!("http://127.0.0.1:{port}/git/repo");
    let (key, public) = app_key(s.tmp.path(), "app");
    Some(World {
        s,
        _git_host: git_host,
        url,
        key,
        public,
    })
}

fn one_time(w: &World, extra: &[String]) -> std::process::Output {
    let mut cmd = Command::new(support::bin());
    cmd.args(["git-sync", "--admin-addr=off", "--one-time"])
        .arg(format!("--repo={}", w.url))
        .arg(w.s.root_arg())
        .arg("--link=link")
        .args(extra);
    support::run_cmd(&mut cmd)
}

#[test]
fn application_id_and_key_file_buy_a_token_that_is_renewed() {
    let Some(w) = world() else {
        assert!(std::env::var("CI").is_err(), "lighttpd is missing");
        return;
    };
    // Tokens that expire within the renewal margin: every pass renews.
    let gh = github(w.public.clone(), APP_ID, w.s.tmp.path().into(), 20);
    let mut sc = support::Sidecar::start(
        "git-sync",
        &[
            &format!("--repo={}", w.url),
            &w.s.root_arg(),
            "--link=link",
            "--touch-file=_sync_lock",
            "--period=100ms",
            &format!("--github-base-url={}", gh.url("/")),
            &format!("--github-app-private-key-file={}", w.key.display()),
            &format!("--github-app-application-id={APP_ID}"),
            &format!("--github-app-installation-id={INSTALLATION}"),
        ],
    );
    let admin = sc.admin_addr();
    w.s.wait_for_sync();
    w.s.assert_real_worktree(&w.s.up.head());
    let sha = w.s.up.commit("two");
    w.s.wait_for_sync();
    assert_eq!(w.s.published(), sha);
    // One exchange per pass at least: the first, and renewals.
    let first = gh.next();
    assert_eq!(first.method, "POST");
    assert_eq!(first.header("accept"), Some("application/vnd.github+json"));
    gh.next();
    support::wait_until("renewals counted", || {
        metric(
            admin,
            "git_sync_refresh_github_app_token_count_total{status=\"success\"}",
        )
        .is_some_and(|n| n >= 2.0)
    });
    assert!(!sc.stderr().contains(TOKEN), "the token was logged");
    sc.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(sc.wait_exit().success());
}

#[test]
fn client_id_and_key_in_env_keep_a_long_lived_token() {
    let Some(w) = world() else {
        assert!(std::env::var("CI").is_err(), "lighttpd is missing");
        return;
    };
    let gh = github(
        w.public.clone(),
        "Iv1.8a61f9b3a7aba766",
        w.s.tmp.path().into(),
        3600,
    );
    let pem = std::fs::read_to_string(&w.key).unwrap();
    let mut cmd = support::Sidecar::command(
        "git-sync",
        &[
            &format!("--repo={}", w.url),
            &w.s.root_arg(),
            "--link=link",
            "--touch-file=_sync_lock",
            "--period=100ms",
        ],
    );
    cmd.env("GITSYNC_GITHUB_BASE_URL", gh.url(""))
        .env("GITSYNC_GITHUB_APP_PRIVATE_KEY", pem)
        .env("GITSYNC_GITHUB_APP_CLIENT_ID", "Iv1.8a61f9b3a7aba766")
        .env("GITSYNC_GITHUB_APP_INSTALLATION_ID", INSTALLATION);
    let mut sc = support::Sidecar::spawn(&mut cmd);
    w.s.wait_for_sync();
    let sha = w.s.up.commit("two");
    w.s.wait_for_sync();
    assert_eq!(w.s.published(), sha);
    // An hour-long token is fetched once, not per pass.
    gh.next();
    assert!(gh.drain().is_empty(), "the token was fetched again");
    sc.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(sc.wait_exit().success());
}

#[test]
fn unknown_installation_and_foreign_key_fail_with_githubs_answer() {
    let Some(w) = world() else {
        assert!(std::env::var("CI").is_err(), "lighttpd is missing");
        return;
    };
    let gh = github(w.public.clone(), APP_ID, w.s.tmp.path().into(), 3600);
    let base = format!("--github-base-url={}", gh.url("/"));
    let key = format!("--github-app-private-key-file={}", w.key.display());
    let app = format!("--github-app-application-id={APP_ID}");

    // 404: no such installation.
    let out = one_time(
        &w,
        &[
            base.clone(),
            key.clone(),
            app.clone(),
            "--github-app-installation-id=7".into(),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("status 404"), "{stderr}");
    assert!(stderr.contains("Not Found"), "{stderr}");
    assert!(!w.s.link().exists());

    // 401: a JWT signed by a key GitHub does not know for this app.
    let (other, _) = app_key(w.s.tmp.path(), "other");
    let out = one_time(
        &w,
        &[
            base.clone(),
            format!("--github-app-private-key-file={}", other.display()),
            app.clone(),
            format!("--github-app-installation-id={INSTALLATION}"),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("status 401"), "{stderr}");
    assert!(!w.s.link().exists());

    // The right key and installation.
    let out = one_time(
        &w,
        &[
            base,
            key,
            app,
            format!("--github-app-installation-id={INSTALLATION}"),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    w.s.assert_real_worktree(&w.s.up.head());
}

#[test]
fn bad_github_app_flags_exit_2_naming_them() {
    let tmp = support::tempdir();
    let not_a_key = tmp.path().join("key.pem");
    std::fs::write(&not_a_key, "not a key").unwrap();
    // The app's public key where its private key belongs parses as PEM,
    // but cannot sign.
    let (_, public) = app_key(tmp.path(), "app");
    let root = format!("--root={}", tmp.path().join("root").display());
    for (flags, needle) in [
        (
            vec!["--github-app-application-id=1".to_string()],
            "--github-app-installation-id",
        ),
        (
            vec![
                "--github-app-application-id=1".into(),
                "--github-app-installation-id=2".into(),
            ],
            "--github-app-private-key-file",
        ),
        (
            vec![
                "--github-app-application-id=1".into(),
                "--github-app-client-id=x".into(),
            ],
            "only one of --github-app-application-id or --github-app-client-id",
        ),
        (
            vec![
                "--github-app-client-id=x".into(),
                "--github-app-installation-id=2".into(),
                format!("--github-app-private-key-file={}", not_a_key.display()),
            ],
            "not an RSA private key",
        ),
        (
            vec![
                "--github-app-client-id=x".into(),
                "--github-app-installation-id=2".into(),
                format!("--github-app-private-key-file={}", public.display()),
            ],
            "not an RSA private key",
        ),
        (
            vec!["--github-app-installation-id=2".into()],
            "--github-app-installation-id may only be specified",
        ),
    ] {
        let mut args = vec![
            "git-sync".to_string(),
            "--admin-addr=off".into(),
            "--repo=https://example.com/r".into(),
            root.clone(),
        ];
        args.extend(flags.iter().cloned());
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = support::run(&refs);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flags:?}: {stderr}");
        assert!(stderr.contains(needle), "{flags:?}: {stderr}");
    }
}

/// A token endpoint that cannot be reached: the error says why, not only
/// that sending failed.
#[test]
fn an_unreachable_token_endpoint_is_named_with_its_cause() {
    let tmp = support::tempdir();
    let (key, _) = app_key(tmp.path(), "app");
    let closed = support::free_addr();
    let out = support::run(&[
        "git-sync",
        "--admin-addr=off",
        "--one-time",
        "--repo=https://example.invalid/r",
        &format!("--root={}", tmp.path().join("root").display()),
        "--github-app-client-id=x",
        "--github-app-installation-id=2",
        &format!("--github-app-private-key-file={}", key.display()),
        &format!("--github-base-url=http://{closed}"),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("GitHub app token request"), "{stderr}");
    assert!(stderr.contains("Connection refused"), "{stderr}");
}
