//! Conventions every applet of the binary keeps, checked across all five:
//! flags and their env vars, secrets kept out of logs and metrics, the admin
//! server's `off` switch, readiness during the drain, and exit 2 naming the
//! flag for a bad duration.

mod support;

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};

use nix::sys::signal::Signal;
use support::{http, run, Sidecar};

const APPLETS: [&str; 5] = [
    "config-watch-reload",
    "git-sync",
    "log-tail-ship",
    "static-serve",
    "tcp-proxy",
];

/// Flags shared by every applet (the runtime's), named `SIDECAR_*`.
const COMMON: [&str; 5] = [
    "admin-addr",
    "log-format",
    "log-level",
    "shutdown-grace",
    "check",
];

/// Flags deliberately without their own `<APPLET>_<FLAG>` variable, and why.
const NO_ENV: &[(&str, &str, &str)] = &[
    (
        "config-watch-reload",
        "web.listen-address",
        "configmap-reload/prometheus-config-reloader spelling of --admin-addr ($SIDECAR_ADMIN_ADDR)",
    ),
    (
        "config-watch-reload",
        "web.telemetry-path",
        "configmap-reload drop-in spelling; those tools read no env var for it",
    ),
    ("git-sync", "man", "upstream has no env var for --man"),
    (
        "git-sync",
        "git-config-add",
        "upstream: one `k:v` per use, repeatable, no env var",
    ),
];

/// The env var prefix of an applet's own flags.
fn prefix(applet: &str) -> String {
    match applet {
        "git-sync" => "GITSYNC_".to_string(),
        a => format!("{}_", a.to_uppercase().replace('-', "_")),
    }
}

/// `--help` as (long flag, the first `[env: NAME]` in its description).
fn flags_and_envs(help: &str) -> Vec<(String, Option<String>)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in help.lines() {
        // Options start at a small indent; descriptions (which may mention
        // `--other-flag` at a line start) are indented further.
        let indent = line.len() - line.trim_start().len();
        let t = line.trim_start();
        let t = t
            .strip_prefix('-')
            .filter(|r| r.chars().nth(1) == Some(','))
            .map_or(t, |r| r[2..].trim_start());
        if (1..=6).contains(&indent) && t.starts_with("--") {
            let name: String = t[2..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '-' || *c == '.' || *c == '_')
                .collect();
            out.push((name, t.to_string()));
        } else if let Some(last) = out.last_mut() {
            last.1.push(' ');
            last.1.push_str(line.trim());
        }
    }
    out.into_iter()
        .map(|(name, text)| {
            let env = text.find("[env:").map(|i| {
                text[i + 5..]
                    .trim_start()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect()
            });
            (name, env)
        })
        .collect()
}

#[test]
fn every_long_flag_shows_its_env_var() {
    let mut wrong = Vec::new();
    let mut excepted = HashSet::new();
    for applet in APPLETS {
        let out = run(&[applet, "--help"]);
        assert!(out.status.success(), "{applet} --help failed");
        let help = String::from_utf8(out.stdout).unwrap();
        let flags = flags_and_envs(&help);
        assert!(flags.len() > 5, "{applet}: no flags parsed from\n{help}");
        for (flag, env) in flags {
            if flag == "help" || flag == "version" {
                continue;
            }
            if NO_ENV.iter().any(|(a, f, _)| *a == applet && *f == flag) {
                excepted.insert((applet, flag));
                continue;
            }
            let snake = flag.to_uppercase().replace(['-', '.'], "_");
            let want = if COMMON.contains(&flag.as_str()) {
                format!("SIDECAR_{snake}")
            } else {
                format!("{}{snake}", prefix(applet))
            };
            if env.as_deref() != Some(want.as_str()) {
                wrong.push(format!(
                    "{applet} --{flag}: want [env: {want}], got {env:?}"
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // A stale exception (the flag was renamed or gained its variable) is
    // removed from the list rather than silently kept.
    for (a, f, why) in NO_ENV {
        assert!(
            excepted.contains(&(*a, f.to_string())),
            "exception {a} --{f} ({why}) no longer matches a flag without env var"
        );
    }
}

/// Runs an applet against a server that refuses it, then checks that none of
/// `secrets` appears in its stderr (text and JSON logs, debug level) or in
/// `/metrics`. `ready` waits for the evidence that the failing request
/// was made and logged, returning the requests it consumed. With
/// `sends_auth`, some request must have carried credentials: the
/// secret was in use, so its absence from the output means something.
fn assert_secrets_hidden(
    applet: &str,
    args: &[&str],
    secrets: &[&str],
    ready: &dyn Fn(&mut Sidecar, &http::Receiver) -> Vec<http::Request>,
    server: &http::Receiver,
    sends_auth: bool,
) {
    for format in ["text", "json"] {
        let mut full: Vec<&str> = args.to_vec();
        let fmt = format!("--log-format={format}");
        full.extend([fmt.as_str(), "--log-level=debug"]);
        let mut sc = Sidecar::start(applet, &full);
        let line = sc.wait_for_log("admin server listening");
        let admin = support::addr_field(&line, "addr=")
            .or_else(|| support::addr_field(&line, "\"addr\":"))
            .expect("the admin address in its log line");
        let mut seen = ready(&mut sc, server);
        let metrics = support::metrics::scrape(admin);
        sc.signal(Signal::SIGTERM);
        sc.wait_exit();
        let stderr = sc.stderr();
        for secret in secrets {
            assert!(
                !stderr.contains(secret),
                "{applet} ({format}) logged {secret:?}:\n{stderr}"
            );
            assert!(
                !metrics.contains(secret),
                "{applet} /metrics shows {secret:?}:\n{metrics}"
            );
        }
        seen.extend(server.drain());
        if sends_auth {
            assert!(
                seen.iter().any(|r| r.header("authorization").is_some()),
                "{applet} never sent the credentials: {seen:?}"
            );
        }
    }
}

/// `http://USER:SECRET@127.0.0.1:PORT/PATH` of `server`.
fn url_with_userinfo(server: &http::Receiver, userinfo: &str, path: &str) -> String {
    format!("http://{userinfo}@{}{path}", server.addr)
}

fn secret_file(dir: &Path, name: &str, secret: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, format!("{secret}\n")).unwrap();
    p.to_str().unwrap().to_string()
}

/// Waits for two requests: the first one's failure has been handled (and
/// logged) once the retry arrives.
fn two_requests(_: &mut Sidecar, server: &http::Receiver) -> Vec<http::Request> {
    vec![server.next(), server.next()]
}

/// A git host refusing every request with a Basic challenge (a 401 without
/// one makes libgit2 give up before it sends any credentials). Records the
/// requests it refused.
fn challenging_git_host() -> (SocketAddr, Arc<Mutex<Vec<http::Request>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(&stream);
            let mut head = Vec::new();
            let mut line = String::new();
            // A TLS handshake is not text: read_line fails and we hang up.
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                head.push(line.trim_end().to_string());
                line.clear();
            }
            let Some(first) = head.first() else { continue };
            let mut parts = first.split(' ');
            let headers = head[1..]
                .iter()
                .filter_map(|h| h.split_once(':'))
                .map(|(k, v)| (k.to_string(), v.trim().to_string()))
                .collect();
            s.lock().unwrap().push(http::Request {
                method: parts.next().unwrap_or("").to_string(),
                path: parts.next().unwrap_or("").to_string(),
                headers,
                body: Vec::new(),
            });
            let _ = (&stream).write_all(
                b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"git\"\r\n\
                  Content-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    });
    (addr, seen)
}

#[test]
fn git_sync_keeps_credentials_out_of_logs_and_metrics() {
    let (host, seen) = challenging_git_host();
    // Only to satisfy the helper's signature: git-sync talks to `host`.
    let unused = http::Receiver::start();
    let dir = support::tempdir();
    let root = dir.path().join("root");
    let root = root.to_str().unwrap();
    let wait_failure = |sc: &mut Sidecar, _: &http::Receiver| {
        sc.wait_for_log("error syncing repo");
        std::mem::take(&mut *seen.lock().unwrap())
    };
    let sync = [
        "--root",
        root,
        "--max-failures=-1",
        "--period=100ms",
        "-v=6",
    ];
    let repo = format!("--repo=http://alice:UrlS3cretGit@{host}/repo.git");
    let args: Vec<&str> = [repo.as_str()].iter().chain(&sync).copied().collect();
    assert_secrets_hidden(
        "git-sync",
        &args,
        &["UrlS3cretGit"],
        &wait_failure,
        &unused,
        true,
    );
    let pw = secret_file(dir.path(), "pw", "FileS3cretGit");
    let repo = format!("--repo=http://{host}/repo.git");
    let pw = format!("--password-file={pw}");
    let args: Vec<&str> = [repo.as_str(), "--username=alice", pw.as_str()]
        .iter()
        .chain(&sync)
        .copied()
        .collect();
    assert_secrets_hidden(
        "git-sync",
        &args,
        &["FileS3cretGit"],
        &wait_failure,
        &unused,
        true,
    );
    // An https URL: the TLS handshake with a plain HTTP server fails.
    let repo = format!("--repo=https://alice:TlsS3cretGit@{host}/repo.git");
    let args: Vec<&str> = [repo.as_str()].iter().chain(&sync).copied().collect();
    assert_secrets_hidden(
        "git-sync",
        &args,
        &["TlsS3cretGit"],
        &wait_failure,
        &unused,
        false,
    );
}

#[test]
fn config_watch_reload_keeps_credentials_out_of_logs_and_metrics() {
    let server = http::Receiver::with(|_| (500, "no\n".into()));
    let dir = support::tempdir();
    let url = url_with_userinfo(&server, "bob:S3cretReload", "/-/reload");
    assert_secrets_hidden(
        "config-watch-reload",
        &[
            "--watch",
            dir.path().to_str().unwrap(),
            "--reload-url",
            &url,
            "--reload-on-start",
            "--retry-interval=50ms",
        ],
        &["S3cretReload"],
        &two_requests,
        &server,
        true,
    );
    let token = secret_file(dir.path(), "token", "S3cretBearer");
    assert_secrets_hidden(
        "config-watch-reload",
        &[
            "--watch",
            dir.path().to_str().unwrap(),
            "--reload-url",
            &server.url("/-/reload"),
            "--reload-bearer-token-file",
            &token,
            "--reload-on-start",
            "--retry-interval=50ms",
        ],
        &["S3cretBearer"],
        &two_requests,
        &server,
        true,
    );
}

#[test]
fn log_tail_ship_keeps_sink_credentials_out_of_logs_and_metrics() {
    let server = http::Receiver::with(|_| (503, "no\n".into()));
    let dir = support::tempdir();
    support::write(&dir.path().join("logs/app.log"), "one line\n");
    let glob = format!("{}/logs/*.log", dir.path().display());
    let common = |data: &str| -> Vec<String> {
        vec![
            format!("--path={glob}"),
            format!("--data-dir={}", dir.path().join(data).display()),
            "--read-from=beginning".into(),
            "--batch-timeout=20ms".into(),
            "--retry-max-backoff=200ms".into(),
            // Undeliverable events hold the drain for the whole grace period.
            "--shutdown-grace=2s".into(),
        ]
    };
    let es_url = url_with_userinfo(&server, "carol:S3cretEsUrl", "");
    let pw = secret_file(dir.path(), "es-pw", "S3cretEsFile");
    let loki_url = url_with_userinfo(&server, "dave:S3cretLoki", "");
    let api_key = secret_file(dir.path(), "es-api-key", "S3cretApiKey");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["--sink=elasticsearch".into(), format!("--es-url={es_url}")],
            "S3cretEsUrl",
        ),
        (
            vec![
                "--sink=elasticsearch".into(),
                format!("--es-url={}", server.url("")),
                "--es-user=carol".into(),
                format!("--es-password-file={pw}"),
            ],
            "S3cretEsFile",
        ),
        (
            vec!["--sink=loki".into(), format!("--loki-url={loki_url}")],
            "S3cretLoki",
        ),
        (
            vec![
                "--sink=elasticsearch".into(),
                format!("--es-url={}", server.url("")),
                format!("--es-api-key-file={api_key}"),
            ],
            "S3cretApiKey",
        ),
    ];
    for (i, (sink, secret)) in cases.into_iter().enumerate() {
        let mut args = common(&format!("data{i}"));
        args.extend(sink);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        assert_secrets_hidden(
            "log-tail-ship",
            &args,
            &[secret],
            &two_requests,
            &server,
            true,
        );
    }
}

/// How many TCP addresses `pid` listens on.
fn listening_addresses(pid: u32) -> usize {
    let mut inodes = HashSet::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
    {
        if let Ok(target) = std::fs::read_link(fd.path()) {
            let t = target.to_string_lossy().to_string();
            if let Some(inode) = t.strip_prefix("socket:[").and_then(|r| r.strip_suffix(']')) {
                inodes.insert(inode.to_string());
            }
        }
    }
    // Addresses, not sockets: static-serve opens one SO_REUSEPORT socket per
    // worker on the same address, which is still one port a user sees.
    let mut addresses = HashSet::new();
    for table in ["tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            // Column 1 is the local address, st 0A = LISTEN, column 9 the inode.
            if cols.len() > 9 && cols[3] == "0A" && inodes.contains(cols[9]) {
                addresses.insert(format!("{table} {}", cols[1]));
            }
        }
    }
    addresses.len()
}

/// A typical configuration of each applet, the log line that says it is up,
/// and how many TCP listeners it has of its own (besides the admin server).
fn typical(applet: &str, dir: &Path) -> (Vec<String>, &'static str, usize) {
    let d = dir.display();
    match applet {
        "config-watch-reload" => {
            std::fs::create_dir_all(dir.join("w")).unwrap();
            (
                vec![format!("--watch={d}/w"), "--exec=true".into()],
                "watching",
                0,
            )
        }
        "git-sync" => (
            vec![
                // Nothing listens on port 1: each sync fails and is retried.
                "--repo=http://127.0.0.1:1/repo".into(),
                format!("--root={d}/root"),
                "--max-failures=-1".into(),
            ],
            "error syncing repo",
            0,
        ),
        "log-tail-ship" => {
            support::write(&dir.join("logs/a.log"), "");
            (
                vec![
                    format!("--path={d}/logs/*.log"),
                    format!("--data-dir={d}/data"),
                    "--sink=stdout".into(),
                ],
                "tailing file",
                0,
            )
        }
        "static-serve" => {
            support::write(&dir.join("www/index.html"), "hi\n");
            (
                vec![format!("--root={d}/www"), "--listen=127.0.0.1:0".into()],
                "static-serve listening",
                1,
            )
        }
        "tcp-proxy" => (
            vec![
                "--listen=127.0.0.1:0".into(),
                "--upstream=127.0.0.1:1".into(),
            ],
            "listening addr=",
            1,
        ),
        _ => unreachable!(),
    }
}

#[test]
fn admin_addr_off_runs_without_an_admin_listener() {
    for applet in APPLETS {
        let dir = support::tempdir();
        let (args, up, own) = typical(applet, dir.path());
        let mut full: Vec<&str> = args.iter().map(String::as_str).collect();
        full.push("--admin-addr=off");
        let mut sc = Sidecar::start(applet, &full);
        sc.wait_for_log(up);
        assert!(
            !sc.logged("admin server listening"),
            "{applet}: {}",
            sc.stderr()
        );
        assert_eq!(
            listening_addresses(sc.pid()),
            own,
            "{applet} listens on more than its own ports:\n{}",
            sc.stderr()
        );
        sc.signal(Signal::SIGTERM);
        assert_eq!(sc.wait_exit().code(), Some(0), "{applet}: {}", sc.stderr());
    }
}

/// With the admin server on, the same configuration has exactly one more
/// listener: the check above counts what it means to count.
#[test]
fn admin_addr_adds_exactly_one_listener() {
    for applet in APPLETS {
        let dir = support::tempdir();
        let (args, up, own) = typical(applet, dir.path());
        let full: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut sc = Sidecar::start(applet, &full);
        sc.admin_addr();
        sc.wait_for_log(up);
        assert_eq!(listening_addresses(sc.pid()), own + 1, "{applet}");
    }
}

/// tcp-proxy drains open connections after SIGTERM, so the window in which
/// `/readyz` must answer 503 is one the test controls. (log-tail-ship's is
/// below; config-watch-reload, git-sync and static-serve have nothing to
/// drain when idle and exit at once, so there is no window to observe.)
#[test]
fn tcp_proxy_readyz_is_503_while_draining() {
    let upstream = TcpListener::bind("127.0.0.1:0").unwrap();
    let up_addr = upstream.local_addr().unwrap();
    let mut sc = Sidecar::start(
        "tcp-proxy",
        &[
            "--listen=127.0.0.1:0",
            &format!("--upstream={up_addr}"),
            "--shutdown-grace=60s",
        ],
    );
    let admin = sc.admin_addr();
    let line = sc.wait_for_log("listening addr=");
    let listen: SocketAddr = support::addr_field(&line, "addr=").unwrap();
    support::wait_until("ready", || http::get(admin, "/readyz").status == 200);

    let mut client = TcpStream::connect(listen).unwrap();
    let (mut server_side, _) = upstream.accept().unwrap();
    client.write_all(b"ping").unwrap();
    let mut buf = [0u8; 4];
    server_side.read_exact(&mut buf).unwrap();

    sc.signal(Signal::SIGTERM);
    sc.wait_for_log("draining");
    assert_eq!(http::get(admin, "/readyz").status, 503);
    assert_eq!(http::get(admin, "/healthz").status, 200);
    // The open connection still works during the drain.
    server_side.write_all(b"pong").unwrap();
    client.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"pong");
    drop(client);
    drop(server_side);
    assert_eq!(sc.wait_exit().code(), Some(0), "{}", sc.stderr());
}

#[test]
fn bad_duration_exits_2_naming_the_flag() {
    let dir = support::tempdir();
    let own = [
        ("config-watch-reload", "--debounce"),
        ("git-sync", "--period"),
        ("log-tail-ship", "--batch-timeout"),
        ("static-serve", "--header-timeout"),
        ("tcp-proxy", "--connect-timeout"),
    ];
    for (applet, flag) in own {
        // The same bad value from the flag's env var: exit 2, naming the
        // flag (clap) or the variable (git-sync, which reads them itself).
        let var = format!(
            "{}{}",
            prefix(applet),
            flag[2..].to_uppercase().replace('-', "_")
        );
        let (args, _, _) = typical(applet, dir.path());
        let out = support::run_cmd(
            std::process::Command::new(support::bin())
                .arg(applet)
                .args(&args)
                .arg("--admin-addr=off")
                .env(&var, "fortnight"),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{applet} ${var}: {stderr}");
        assert!(
            stderr.contains(flag) || stderr.contains(&var),
            "{applet}: the error names neither {flag} nor ${var}:\n{stderr}"
        );
        for bad_flag in [flag, "--shutdown-grace"] {
            let (mut args, _, _) = typical(applet, dir.path());
            args.push(format!("{bad_flag}=fortnight"));
            let args: Vec<&str> = std::iter::once(applet)
                .chain(args.iter().map(String::as_str))
                .chain(["--admin-addr=off"])
                .collect();
            let out = run(&args);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{applet} {bad_flag}: {stderr}");
            assert!(
                stderr.contains(bad_flag),
                "{applet}: the error does not name {bad_flag}:\n{stderr}"
            );
        }
    }
}

/// log-tail-ship holds its drain while events are undelivered: `/readyz`
/// answers 503 during it, and once the sink accepts, the drain ends with
/// exit 0.
#[test]
fn log_tail_ship_readyz_is_503_while_draining() {
    let server = http::Receiver::with(|_| (503, "busy\n".into()));
    let dir = support::tempdir();
    support::write(&dir.path().join("logs/app.log"), "one line\n");
    let mut sc = Sidecar::start(
        "log-tail-ship",
        &[
            &format!("--path={}/logs/*.log", dir.path().display()),
            &format!("--data-dir={}/data", dir.path().display()),
            "--read-from=beginning",
            "--sink=http",
            &format!("--http-url={}", server.url("/ingest")),
            "--batch-timeout=20ms",
            "--retry-max-backoff=200ms",
            "--shutdown-grace=60s",
        ],
    );
    let admin = sc.admin_addr();
    support::wait_until("ready", || http::get(admin, "/readyz").status == 200);
    server.next();
    server.next();
    // A refusing sink alone leaves it ready: the 503 below is the drain's.
    assert_eq!(http::get(admin, "/readyz").status, 200);
    sc.signal(Signal::SIGTERM);
    sc.wait_for_log("shutting down");
    // The refused batch is retried, so the drain is still going on.
    server.next();
    assert_eq!(http::get(admin, "/readyz").status, 503);
    server.set_response(|_| (200, String::new()));
    assert_eq!(sc.wait_exit().code(), Some(0), "{}", sc.stderr());
}

/// Every integration test is declared in Cargo.toml with the applets it
/// needs, so a build with fewer applets compiles it out instead of failing
/// (`cargo test --no-default-features --features tcp-proxy`).
#[test]
fn every_test_file_names_its_required_features() {
    let manifest =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml")).unwrap();
    let declared: Vec<&str> = manifest
        .split("[[test]]")
        .skip(1)
        .filter(|entry| entry.contains("required-features"))
        .filter_map(|entry| entry.lines().find_map(|l| l.strip_prefix("name = ")))
        .map(|n| n.trim_matches('"'))
        .collect();
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests");
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if let Some(test) = name.strip_suffix(".rs") {
            assert!(
                declared.contains(&test),
                "tests/{name}: add a [[test]] entry with required-features to Cargo.toml"
            );
        }
    }
}
