//! HTTPS (rustls via sidecar_runtime::tls) with HTTP/2 by ALPN, and h2c by
//! prior knowledge, against real clients: curl, nghttp, h2load, openssl s_client.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use super::support::{self, http};
use super::{serve_admin, site};

fn run(cmd: &mut Command) -> Output {
    support::run_cmd(cmd)
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// `curl -sS ARGS` and what it printed on stdout.
fn curl(args: &[&str]) -> String {
    let out = run(Command::new("curl").arg("-sS").args(args));
    assert!(out.status.success(), "curl {args:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A self-signed certificate for 127.0.0.1 with common name `cn`, written
/// to `dir/cn.{crt,key}`.
fn certificate(dir: &Path, cn: &str) -> (PathBuf, PathBuf) {
    let (crt, key) = (dir.join(format!("{cn}.crt")), dir.join(format!("{cn}.key")));
    let out = run(Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
        .args(["-subj", &format!("/CN={cn}")])
        .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&crt));
    assert!(out.status.success(), "{}", text(&out));
    (crt, key)
}

/// `openssl s_client` against `addr` with extra flags; its whole output.
fn s_client(addr: std::net::SocketAddr, args: &[&str]) -> String {
    let out = run(Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &addr.to_string(),
            "-servername",
            "localhost",
        ])
        .args(args)
        .stdin(Stdio::null()));
    text(&out)
}

fn peers(names: &[&str]) -> bool {
    names.iter().all(|n| support::require_peer(n))
}

#[test]
fn h2c_by_prior_knowledge_serves_what_http1_serves_with_h2_limits() {
    if !peers(&["curl", "nghttp", "h2load"]) {
        return;
    }
    let dir = site();
    let (_sc, addr, _admin) = serve_admin(&dir.path().join("www"), &["--http2-cleartext"]);
    let url = format!("http://{addr}/hello.txt");
    let h2 = ["--http2-prior-knowledge"];
    assert_eq!(
        curl(&[&h2[..], &["-w", " %{http_version}", &url]].concat()),
        "hello world\n 2"
    );
    // HTTP/1.1 clients on the same listener.
    assert_eq!(curl(&["-w", " %{http_version}", &url]), "hello world\n 1.1");
    // Ranges and conditional requests over h2.
    assert_eq!(
        curl(&[&h2[..], &["-r", "1-3", "-w", " %{http_code}", &url]].concat()),
        "ell 206"
    );
    let etag = http::get(addr, "/hello.txt")
        .header("etag")
        .unwrap()
        .to_string();
    assert_eq!(
        curl(
            &[
                &h2[..],
                &[
                    "-H",
                    &format!("if-none-match: {etag}"),
                    "-w",
                    "%{http_code}",
                    &url
                ]
            ]
            .concat()
        ),
        "304"
    );
    // The limits the server announces.
    let out = run(Command::new("nghttp").args(["-nv", &url]));
    let settings = text(&out);
    assert!(
        settings.contains("SETTINGS_MAX_CONCURRENT_STREAMS(0x03):128")
            && settings.contains("SETTINGS_MAX_HEADER_LIST_SIZE(0x06):16384"),
        "{settings}"
    );
    // Many streams on few connections, all answered.
    let out = run(Command::new("h2load").args(["-n", "2000", "-c", "4", "-m", "32", &url]));
    let report = text(&out);
    assert!(
        report.contains("2000 succeeded, 0 failed, 0 errored"),
        "{report}"
    );
    // A header list above the cap is refused; the server carries on.
    let big = format!("x-big: {}", "a".repeat(20 * 1024));
    let out = run(Command::new("curl").args([
        "-sS",
        "--http2-prior-knowledge",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-H",
        &big,
        &url,
    ]));
    assert_ne!(
        String::from_utf8_lossy(&out.stdout),
        "200",
        "{}",
        text(&out)
    );
    assert_eq!(curl(&[&h2[..], &[&url[..]]].concat()), "hello world\n");
}

#[test]
fn https_with_alpn_h2_follows_certificate_rotation_and_keeps_the_old_on_a_bad_file() {
    if !peers(&["curl", "openssl"]) {
        return;
    }
    let dir = site();
    let tls = dir.path().join("tls");
    std::fs::create_dir(&tls).unwrap();
    let (one_crt, one_key) = certificate(&tls, "one");
    let (crt, key) = (tls.join("tls.crt"), tls.join("tls.key"));
    std::fs::copy(&one_crt, &crt).unwrap();
    std::fs::copy(&one_key, &key).unwrap();
    let (mut sc, addr, admin) = serve_admin(
        &dir.path().join("www"),
        &[
            "--tls-cert",
            crt.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    let url = format!("https://localhost:{}/hello.txt", addr.port());
    let resolve = format!("localhost:{}:127.0.0.1", addr.port());
    let https = |ca: &Path, extra: &[&str]| {
        let ca = ca.to_str().unwrap().to_string();
        curl(
            &[
                &["--resolve", &resolve, "--cacert", &ca][..],
                extra,
                &[&url[..]],
            ]
            .concat(),
        )
    };
    assert_eq!(
        https(&one_crt, &["-w", " %{http_version}"]),
        "hello world\n 2"
    );
    assert_eq!(
        https(&one_crt, &["--http1.1", "-w", " %{http_version}"]),
        "hello world\n 1.1"
    );
    assert_eq!(https(&one_crt, &["-r", "0-4"]), "hello");
    // TLS 1.2 and 1.3, h2 by ALPN.
    for (flag, version) in [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")] {
        let out = s_client(addr, &[flag, "-alpn", "h2"]);
        assert!(
            out.contains(&format!("Protocol  : {version}"))
                || out.contains(&format!("New, {version}")),
            "{out}"
        );
        assert!(out.contains("ALPN protocol: h2"), "{out}");
    }

    // cert-manager rotates the files: new connections get the new certificate.
    let (two_crt, two_key) = certificate(&tls, "two");
    let swap = |from: &Path, to: &Path| {
        let tmp = tls.join("incoming");
        std::fs::copy(from, &tmp).unwrap();
        std::fs::rename(&tmp, to).unwrap();
    };
    swap(&two_key, &key);
    swap(&two_crt, &crt);
    sc.wait_for_log("TLS certificate reloaded");
    assert!(s_client(addr, &[]).contains("CN = two"));
    assert_eq!(https(&two_crt, &[]), "hello world\n");

    // A bad file keeps the certificate in use; logged and counted.
    std::fs::write(&crt, "not a certificate\n").unwrap();
    sc.wait_for_log("TLS files not reloaded");
    assert_eq!(https(&two_crt, &[]), "hello world\n");
    let failed =
        support::metrics::metric(admin, "static_serve_tls_reloads_total{result=\"failed\"}");
    assert!(failed.is_some_and(|n| n >= 1.0), "{failed:?}");
}

#[test]
fn tls_files_missing_unpaired_or_mismatched_exit_2_naming_the_flag() {
    if !peers(&["openssl"]) {
        return;
    }
    let dir = site();
    let www = dir.path().join("www");
    let (one_crt, one_key) = certificate(dir.path(), "one");
    let (_, two_key) = certificate(dir.path(), "two");
    let (one_crt, one_key, two_key) = (
        one_crt.to_str().unwrap(),
        one_key.to_str().unwrap(),
        two_key.to_str().unwrap(),
    );
    for (args, flag) in [
        (vec!["--tls-cert", one_crt], "--tls-key"),
        (vec!["--tls-key", one_key], "--tls-cert"),
        (
            vec!["--tls-cert", "/nonexistent/tls.crt", "--tls-key", one_key],
            "--tls-cert",
        ),
        (
            vec!["--tls-cert", one_crt, "--tls-key", "/nonexistent/tls.key"],
            "--tls-key",
        ),
        (
            vec!["--tls-cert", one_crt, "--tls-key", two_key],
            "--tls-key",
        ),
    ] {
        let mut all = vec![
            "static-serve",
            "--admin-addr=off",
            "--root",
            www.to_str().unwrap(),
        ];
        all.extend(args.iter().copied());
        let out = support::run(&all);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        assert!(text(&out).contains(flag), "{args:?}: {}", text(&out));
    }
}
