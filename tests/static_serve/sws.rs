//! static-web-server's flag names and SERVER_* variables, as a user swapping
//! SWS for static-serve would write them.

use super::site;
use super::support::{self, http, Sidecar};

#[test]
fn static_web_server_names_and_variables_keep_their_meaning() {
    let dir = site();
    let www = dir.path().join("www");
    support::write(&dir.path().join("pages/404.html"), "custom not found\n");
    std::fs::create_dir(www.join("empty")).unwrap();
    let port = support::free_port().to_string();
    let mut cmd = Sidecar::command(
        "static-serve",
        &[
            "-a",
            "127.0.0.1",
            "-p",
            &port,
            // SWS resolves the page from the working directory.
            "--page404",
            "pages/404.html",
            "-z",
            "--health",
            "--security-headers",
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
    assert!(r.header("strict-transport-security").is_some());
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
        (
            vec!["--compression-static", "false"],
            "--compression-static",
        ),
        (vec!["-e"], "--cache-control-headers"),
        (
            vec!["--directory-listing-format", "json"],
            "--directory-listing-format",
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
