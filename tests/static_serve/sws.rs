//! static-web-server's flag names and SERVER_* variables, as a user swapping
//! SWS for static-serve would write them.

use super::site;
use super::support::{self, http, Sidecar};

#[test]
fn static_web_server_names_and_variables_keep_their_meaning() {
    let dir = site();
    let www = dir.path().join("www");
    support::write(&www.join("404.html"), "custom not found\n");
    std::fs::create_dir(www.join("empty")).unwrap();
    let port = support::free_port().to_string();
    let mut cmd = Sidecar::command(
        "static-serve",
        &[
            "-a",
            "127.0.0.1",
            "-p",
            &port,
            // SWS resolves a relative 404 page under the root.
            "--page404",
            "./404.html",
            "-z",
            "--health",
            "--security-headers",
            // What static-serve does anyway: the root is resolved per request.
            "--use-relative-root",
            "--basic-auth",
            "alice:$2b$04$dN.gIIRohXuUmgkED/BVJ.qVO50pLLT65pl63SxDIvIL3GX0Dwjlm",
            "--access-log",
        ],
    );
    cmd.current_dir(dir.path())
        .env("SERVER_ROOT", &www)
        .env("SERVER_CORS_ALLOW_ORIGINS", "https://app.example");
    let mut sc = Sidecar::spawn(&mut cmd);
    let line = sc.wait_for_log("static-serve listening");
    let addr = support::addr_field(&line, "addr=").unwrap();
    assert_eq!(addr.to_string(), format!("127.0.0.1:{port}"));

    // /health answers without credentials and is not logged.
    let health = http::get(addr, "/health");
    assert_eq!(health.status, 200);
    assert_eq!(http::get(addr, "/hello.txt").status, 401);

    let alice = ("authorization", "Basic YWxpY2U6czNjcmV0");
    let r = http::request(
        addr,
        "GET",
        "/hello.txt",
        &[alice, ("origin", "https://app.example")],
        b"",
    );
    assert_eq!((r.status, r.text().as_str()), (200, "hello world\n"));
    assert_eq!(r.header("x-frame-options"), Some("DENY"));
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    // HSTS only over TLS, as SWS (tls_h2.rs has the TLS side).
    assert_eq!(r.header("strict-transport-security"), None);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    // -z lists directories; --page404 is the 404 body.
    let listing = http::request(addr, "GET", "/empty/", &[alice], b"");
    assert_eq!(listing.status, 200);
    let missing = http::request(addr, "GET", "/nope", &[alice], b"");
    assert_eq!(
        (missing.status, missing.text().as_str()),
        (404, "custom not found\n")
    );
    sc.wait_for_log("path=/nope");
    assert!(!sc.stderr().contains("path=/health"), "{}", sc.stderr());
}

#[test]
fn unsupported_static_web_server_flags_and_values_exit_2_naming_them() {
    let dir = site();
    let www = dir.path().join("www");
    for (args, says) in [
        (vec!["--page50x", "50x.html"], "--page50x"),
        (vec!["-q", "5"], "--grace-period"),
        (vec!["--https-redirect"], "--https-redirect"),
        (vec!["--config-file", "sws.toml"], "--config-file"),
        (vec!["--maintenance-mode"], "--maintenance-mode"),
        (vec!["--etag", "false"], "only `true`"),
        (
            vec!["--compression-static", "false"],
            "--compression-static",
        ),
        (vec!["--http2"], "--http2"),
        (vec!["--tls"], "--tls"),
    ] {
        let mut all = vec![
            "static-serve",
            "--admin-addr=off",
            "--root",
            www.to_str().unwrap(),
        ];
        all.extend(args.iter().copied());
        let out = support::run(&all);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(
            err.contains("unsupported") || err.contains("not support") || err.contains("needs"),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn static_web_server_variables_of_unsupported_options_exit_2_naming_them() {
    let dir = site();
    let www = dir.path().join("www");
    let check = |var: &str, value: &str| {
        let mut cmd = Sidecar::command("static-serve", &["--admin-addr=off", "--check"]);
        cmd.env("SERVER_ROOT", &www).env(var, value);
        support::run_cmd(&mut cmd)
    };
    // Refused by name, or (SWS's defaults spelled out) what we do anyway.
    for (var, value, code) in [
        ("SERVER_MAINTENANCE_MODE", "true", 2),
        ("SERVER_ETAG", "false", 2),
        ("SERVER_CONFIG_FILE", "./sws.toml", 2),
        ("SERVER_GRACE_PERIOD", "5", 2),
        ("SERVER_REDIRECT_TRAILING_SLASH", "true", 0),
        ("SERVER_MAINTENANCE_MODE", "false", 0),
        ("SERVER_LOG_WITH_ANSI", "false", 0),
        ("SERVER_FALLBACK_PAGE", "", 0),
        ("SERVER_BASIC_AUTH", "", 0),
    ] {
        let out = check(var, value);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{var}={value}: {err}");
        if code == 2 {
            assert!(
                err.contains(var) && err.contains("not support"),
                "{var}: {err}"
            );
        }
    }
    // SWS's `pretty` log format is our text.
    let out = support::run(&[
        "static-serve",
        "--admin-addr=off",
        "--check",
        "--log-format",
        "pretty",
        "--root",
        www.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    // SERVER_LOG_LEVEL and -g are the log filter: a bad one is refused by name.
    for out in [
        check("SERVER_LOG_LEVEL", "no such=level"),
        support::run(&[
            "static-serve",
            "--admin-addr=off",
            "--check",
            "-g",
            "no such=level",
        ]),
    ] {
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains("--log-level"), "{err}");
    }
}

#[test]
fn listen_and_static_web_server_port_together_exit_2_naming_both() {
    let dir = site();
    let mut cmd = Sidecar::command(
        "static-serve",
        &["--admin-addr=off", "--check", "--listen", "127.0.0.1:1"],
    );
    cmd.env("SERVER_ROOT", dir.path().join("www"))
        .env("SERVER_PORT", "8787");
    let out = support::run_cmd(&mut cmd);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--listen") && err.contains("SERVER_PORT"),
        "{err}"
    );
}

#[test]
fn cache_control_headers_and_listing_formats_as_static_web_server() {
    let dir = site();
    let www = dir.path().join("www");
    for (name, body) in [("app.css", "a{}"), ("feed.json", "{}"), ("list/a.txt", "a")] {
        support::write(&www.join(name), body);
    }
    let (_sc, addr) = super::serve(
        &www,
        &["-e", "-z", "--directory-listing-format", "JSON", "--health"],
    );
    for (path, want) in [
        ("/app.css", "public, max-age=31536000"),
        ("/feed.json", "public, max-age=3600"),
        ("/hello.txt", "public, max-age=86400"),
    ] {
        assert_eq!(
            http::get(addr, path).header("cache-control"),
            Some(want),
            "{path}"
        );
    }
    // `json` lists as JSON whatever the client accepts.
    let r = http::request(addr, "GET", "/list/", &[("accept", "text/html")], b"");
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert!(r.text().contains("a.txt"), "{}", r.text());
    // SWS's /health body.
    let h = http::get(addr, "/health");
    assert_eq!((h.status, h.text().as_str()), (200, "OK"));

    let (_sc, addr) = super::serve(
        &www,
        &["-z", "--directory-listing-format", "html", "-e", "false"],
    );
    let r = http::request(
        addr,
        "GET",
        "/list/",
        &[("accept", "application/json")],
        b"",
    );
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    assert_eq!(http::get(addr, "/app.css").header("cache-control"), None);
}

/// A command written with SWS's names gets SWS's defaults for what it
/// leaves out: its Cache-Control table, symlinks refused, and `404.html`
/// under the root as the 404 page. The same tree served under our own
/// names keeps ours.
#[test]
fn static_web_server_spellings_bring_its_defaults() {
    let dir = site();
    let www = dir.path().join("www");
    support::write(&www.join("app.css"), "a{}");
    support::write(&www.join("404.html"), "sws not found\n");
    std::os::unix::fs::symlink("hello.txt", www.join("link.txt")).unwrap();

    let (_sc, addr) = super::serve(&www, &[]);
    let css = http::get(addr, "/app.css");
    assert_eq!(css.header("cache-control"), None);
    assert_eq!(http::get(addr, "/link.txt").text(), "hello world\n");
    let missing = http::get(addr, "/nope");
    assert_eq!(
        (missing.status, missing.text().as_str()),
        (404, "404 Not Found\n")
    );

    let port = support::free_port().to_string();
    let mut cmd = Sidecar::command("static-serve", &["-a", "127.0.0.1", "-p", &port]);
    cmd.env("SERVER_ROOT", &www);
    let mut sc = Sidecar::spawn(&mut cmd);
    let line = sc.wait_for_log("static-serve listening");
    let addr = support::addr_field(&line, "addr=").unwrap();
    assert_eq!(
        http::get(addr, "/app.css").header("cache-control"),
        Some("public, max-age=31536000")
    );
    assert_eq!(http::get(addr, "/link.txt").status, 404);
    let missing = http::get(addr, "/nope");
    assert_eq!(
        (missing.status, missing.text().as_str()),
        (404, "sws not found\n")
    );

    // Each default yields to its flag.
    let port = support::free_port().to_string();
    let mut cmd = Sidecar::command(
        "static-serve",
        &[
            "-p",
            &port,
            "-a",
            "127.0.0.1",
            "-e",
            "false",
            "--follow-symlinks",
        ],
    );
    cmd.env("SERVER_ROOT", &www);
    let mut sc = Sidecar::spawn(&mut cmd);
    let line = sc.wait_for_log("static-serve listening");
    let addr = support::addr_field(&line, "addr=").unwrap();
    assert_eq!(http::get(addr, "/app.css").header("cache-control"), None);
    assert_eq!(http::get(addr, "/link.txt").text(), "hello world\n");
}

/// An empty SWS switch (`SERVER_DIRECTORY_LISTING=`, a variable a manifest
/// left blank) means off, as SWS's empty values do; a word that is no
/// boolean still exits 2.
#[test]
fn an_empty_static_web_server_switch_means_off() {
    let dir = site();
    let www = dir.path().join("www");
    let check = |value: &str| {
        std::process::Command::new(support::bin())
            .args(["static-serve", "--admin-addr=off", "--check", "--root"])
            .arg(&www)
            .env("SERVER_DIRECTORY_LISTING", value)
            .output()
            .unwrap()
    };
    let out = check("");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = check("maybe");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a boolean"));
}
