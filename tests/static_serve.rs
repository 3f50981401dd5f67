//! static-serve against a real client: the std harness client for ordinary
//! requests, raw TCP for malformed and slow ones, real files, symlinks and
//! root swaps on disk.

#[path = "static_serve/floods.rs"]
mod floods;
mod support;
#[path = "static_serve/sws.rs"]
mod sws;
#[path = "static_serve/tls_h2.rs"]
mod tls_h2;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;

use support::http::{self, Response};
use support::{write, Sidecar};

/// Starts static-serve on an ephemeral loopback port.
fn serve(root: &Path, args: &[&str]) -> (Sidecar, SocketAddr) {
    let (sc, addr, _) = serve_admin(root, args);
    (sc, addr)
}

/// Also returns the admin server's address (/metrics, /readyz).
fn serve_admin(root: &Path, args: &[&str]) -> (Sidecar, SocketAddr, SocketAddr) {
    let mut all = vec!["--root", root.to_str().unwrap(), "--listen", "127.0.0.1:0"];
    all.extend_from_slice(args);
    let mut sc = Sidecar::start("static-serve", &all);
    let admin = sc.admin_addr();
    let line = sc.wait_for_log("static-serve listening");
    let addr = support::addr_field(&line, "addr=").expect("addr= in the listening line");
    (sc, addr, admin)
}

fn get_with(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Response {
    http::request(addr, "GET", path, headers, b"")
}

/// Writes `raw` on a fresh connection and reads until the server closes it.
fn raw(addr: SocketAddr, raw: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(support::DEADLINE)).unwrap();
    s.write_all(raw).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

/// Sets a file's mtime, as a checkout or a build that stamps files would.
fn set_mtime(path: &Path, t: std::time::SystemTime) {
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(t)
        .unwrap();
}

fn site() -> tempfile::TempDir {
    let dir = support::tempdir();
    let www = dir.path().join("www");
    write(&www.join("index.html"), "<h1>home</h1>\n");
    write(&www.join("hello.txt"), "hello world\n");
    write(&www.join("docs/index.html"), "docs\n");
    write(&www.join("evil.com/index.html"), "not evil\n");
    write(&www.join("data.bin"), &"0123456789".repeat(100));
    dir
}

#[test]
fn serves_files_indexes_and_directory_redirects() {
    let dir = site();
    let (_sc, addr) = serve(&dir.path().join("www"), &[]);

    let r = http::get(addr, "/hello.txt");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "hello world\n");
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    assert_eq!(r.header("content-length"), Some("12"));
    assert_eq!(r.header("accept-ranges"), Some("bytes"));
    assert!(r.header("etag").is_some() && r.header("last-modified").is_some());

    assert_eq!(http::get(addr, "/").text(), "<h1>home</h1>\n");
    assert_eq!(http::get(addr, "/docs/").text(), "docs\n");
    let r = http::get(addr, "/docs?x=1");
    assert_eq!(r.status, 308);
    assert_eq!(r.header("location"), Some("/docs/?x=1"));
    // A directory named like a host never yields a protocol-relative Location.
    let r = http::get(addr, "//evil.com");
    assert_eq!(r.status, 308);
    assert_eq!(r.header("location"), Some("/evil.com/"));
    assert_eq!(http::get(addr, "/hello.txt/").status, 404);
    assert_eq!(http::get(addr, "/missing").status, 404);
    assert_eq!(
        http::get(addr, "/data.bin").header("content-type"),
        Some("application/octet-stream")
    );
    // An encoded dot inside a name is just a dot.
    assert_eq!(http::get(addr, "/hello%2etxt").status, 200);

    // HEAD: GET's headers, no body.
    let head = http::request(addr, "HEAD", "/hello.txt", &[], b"");
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some("12"));
    assert_eq!(
        head.header("etag"),
        http::get(addr, "/hello.txt").header("etag")
    );
    let raw_head = raw(
        addr,
        b"HEAD /hello.txt HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    );
    assert!(raw_head.ends_with(b"\r\n\r\n"), "HEAD sent a body");

    for method in ["POST", "PUT", "DELETE", "PATCH"] {
        let r = http::request(addr, method, "/hello.txt", &[], b"x");
        assert_eq!(r.status, 405, "{method}");
        assert_eq!(r.header("allow"), Some("GET, HEAD, OPTIONS"));
    }
    let r = http::request(addr, "OPTIONS", "/hello.txt", &[], b"");
    assert_eq!(r.status, 204);
    assert_eq!(r.header("allow"), Some("GET, HEAD, OPTIONS"));
}

#[test]
fn traversal_in_every_spelling_stays_inside_the_root() {
    let dir = site();
    write(&dir.path().join("secret.txt"), "TOP-SECRET\n");
    write(
        &dir.path().join("www-private/s.txt"),
        "TOP-SECRET sibling\n",
    );
    let (_sc, addr) = serve(&dir.path().join("www"), &[]);
    for path in [
        "/../secret.txt",
        "/%2e%2e/secret.txt",
        "/.%2e/secret.txt",
        "/%2e%2e%2fsecret.txt",
        "/..%2fsecret.txt",
        "/..%2f..%2f..%2fetc/passwd",
        "/%252e%252e/secret.txt",
        "/%%32%65%%32%65/secret.txt",
        "/..%5csecret.txt",
        "/%5c..%5csecret.txt",
        "/..\\secret.txt",
        "/docs/../../secret.txt",
        "//..//secret.txt",
        "/./docs/./../../secret.txt",
        "/../www-private/s.txt",
        "/secret.txt%00.html",
        "/hello.txt%00",
        "/C:/secret.txt",
        "/c:%5csecret.txt",
        "/C:%5C..%5Csecret.txt",
        "/../../../../../../etc/passwd",
    ] {
        let r = get_with(addr, path, &[]);
        assert!(
            r.status == 400 || r.status == 404,
            "{path}: status {} body {}",
            r.status,
            r.text()
        );
        assert!(
            !r.text().contains("SECRET") && !r.text().contains("root:"),
            "{path} leaked"
        );
    }
    // Traversal spellings are refused outright (400), not looked up.
    assert_eq!(http::get(addr, "/%2e%2e/secret.txt").status, 400);
    assert_eq!(http::get(addr, "/a%00b").status, 400);
    // `..` that stays below the root resolves (darkhttpd's `/dir/../` → index).
    assert_eq!(
        http::get(addr, "/docs/../hello.txt").text(),
        "hello world\n"
    );
    assert_eq!(http::get(addr, "//docs///..////").text(), "<h1>home</h1>\n");
    // A final `.` or `..` names a directory: a file under it is not found,
    // a directory's index is served.
    assert_eq!(http::get(addr, "/hello.txt/.").status, 404);
    assert_eq!(http::get(addr, "/docs/.").text(), "docs\n");
    assert_eq!(http::get(addr, "/docs/%2e%2e").text(), "<h1>home</h1>\n");
    // `//a///b` collapses to a/b.
    assert_eq!(http::get(addr, "//docs///index.html").text(), "docs\n");
}

#[test]
fn dotfiles_git_and_symlinks_follow_the_policy() {
    let dir = site();
    let www = dir.path().join("www");
    write(&www.join(".env"), "PASSWORD=x\n");
    write(&www.join(".git/config"), "[core]\n");
    write(&www.join("sub/.hidden"), "h\n");
    write(&www.join(".well-known/security.txt"), "contact\n");
    write(&dir.path().join("outside.txt"), "OUTSIDE\n");
    std::os::unix::fs::symlink("hello.txt", www.join("link.txt")).unwrap();
    std::os::unix::fs::symlink("docs", www.join("docs-link")).unwrap();
    std::os::unix::fs::symlink("../outside.txt", www.join("escape.txt")).unwrap();
    std::os::unix::fs::symlink(dir.path().join("outside.txt"), www.join("abs.txt")).unwrap();
    std::os::unix::fs::symlink("..", www.join("up")).unwrap();
    std::os::unix::fs::symlink(".git/config", www.join("gitconfig")).unwrap();
    std::os::unix::fs::symlink("nowhere", www.join("dangling")).unwrap();
    std::fs::remove_file(www.join("index.html")).unwrap();

    let (_sc, addr) = serve(&www, &["--listing"]);
    for p in [
        "/.env",
        "/.git/config",
        "/.git/",
        "/sub/.hidden",
        "/%2egit/config",
        "/.well-known/security.txt",
    ] {
        assert_eq!(http::get(addr, p).status, 404, "{p}");
    }
    assert_eq!(http::get(addr, "/link.txt").text(), "hello world\n");
    assert_eq!(http::get(addr, "/docs-link/").text(), "docs\n");
    for p in [
        "/escape.txt",
        "/abs.txt",
        "/up/outside.txt",
        "/gitconfig",
        "/dangling",
    ] {
        let r = http::get(addr, p);
        assert_eq!(r.status, 404, "{p}");
        assert!(!r.text().contains("OUTSIDE"));
    }
    let listing = get_with(addr, "/", &[("accept", "application/json")]);
    let names: Vec<String> = serde_json::from_slice::<Vec<serde_json::Value>>(&listing.body)
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_string())
        .collect();
    assert!(names.contains(&"link.txt".to_string()) && names.contains(&"docs-link".to_string()));
    for hidden in [
        ".env",
        ".git",
        "escape.txt",
        "abs.txt",
        "up",
        "gitconfig",
        "dangling",
    ] {
        assert!(
            !names.contains(&hidden.to_string()),
            "{hidden} listed: {names:?}"
        );
    }
    drop(_sc);

    let (_sc, addr) = serve(&www, &["--hidden-files", "--no-symlinks"]);
    assert_eq!(http::get(addr, "/.env").status, 200);
    assert_eq!(http::get(addr, "/.well-known/security.txt").status, 200);
    assert_eq!(
        http::get(addr, "/.git/config").status,
        404,
        ".git is never served"
    );
    for p in [
        "/link.txt",
        "/docs-link/",
        "/docs-link/index.html",
        "/escape.txt",
    ] {
        assert_eq!(http::get(addr, p).status, 404, "{p} under --no-symlinks");
    }
    assert_eq!(http::get(addr, "/hello.txt").status, 200);
}

#[test]
fn a_symlinked_root_is_served_and_its_hidden_parent_does_not_count() {
    let dir = site();
    // git-sync's layout: ROOT/.worktrees/<hash>, ROOT/current -> .worktrees/<hash>.
    let wt = dir.path().join(".worktrees/abc");
    std::fs::create_dir_all(dir.path().join(".worktrees")).unwrap();
    std::fs::rename(dir.path().join("www"), &wt).unwrap();
    std::os::unix::fs::symlink(".worktrees/abc", dir.path().join("current")).unwrap();
    let (_sc, addr) = serve(&dir.path().join("current"), &["--no-symlinks"]);
    assert_eq!(http::get(addr, "/hello.txt").text(), "hello world\n");
}

#[test]
fn conditional_requests() {
    let dir = site();
    let (_sc, addr) = serve(&dir.path().join("www"), &[]);
    let r = http::get(addr, "/hello.txt");
    let etag = r.header("etag").unwrap().to_string();
    let lm = r.header("last-modified").unwrap().to_string();
    assert!(etag.starts_with('"'), "strong ETag: {etag}");

    let status = |h: &[(&str, &str)]| get_with(addr, "/hello.txt", h).status;
    assert_eq!(status(&[("if-none-match", &etag)]), 304);
    assert_eq!(status(&[("if-none-match", "*")]), 304);
    // The validators come back, representation metadata does not (RFC 9110 §15.4.5).
    let not_modified = get_with(addr, "/hello.txt", &[("if-none-match", &etag)]);
    assert_eq!(not_modified.header("etag"), Some(etag.as_str()));
    assert_eq!(not_modified.header("content-type"), None);
    assert_eq!(
        status(&[("if-none-match", &format!("\"other\", W/{etag}"))]),
        304
    );
    assert_eq!(status(&[("if-none-match", "\"other\"")]), 200);
    assert_eq!(status(&[("if-modified-since", &lm)]), 304);
    assert_eq!(
        status(&[("if-modified-since", "Thu, 01 Jan 1970 00:00:01 GMT")]),
        200
    );
    assert_eq!(
        status(&[("if-none-match", "\"other\""), ("if-modified-since", &lm)]),
        200
    );
    assert_eq!(status(&[("if-match", &etag)]), 200);
    assert_eq!(status(&[("if-match", "\"other\"")]), 412);
    assert_eq!(status(&[("if-match", &format!("W/{etag}"))]), 412);
    assert_eq!(
        status(&[("if-unmodified-since", "Thu, 01 Jan 1970 00:00:01 GMT")]),
        412
    );
    assert_eq!(status(&[("if-unmodified-since", &lm)]), 200);

    let r = get_with(addr, "/hello.txt", &[("if-none-match", &etag)]);
    assert!(r.body.is_empty());
    assert_eq!(r.header("etag"), Some(etag.as_str()));

    // If-Range: a matching validator honours the range, a stale one sends everything.
    let r = get_with(
        addr,
        "/hello.txt",
        &[("range", "bytes=0-4"), ("if-range", &etag)],
    );
    assert_eq!((r.status, r.text().as_str()), (206, "hello"));
    let r = get_with(
        addr,
        "/hello.txt",
        &[("range", "bytes=0-4"), ("if-range", "\"stale\"")],
    );
    assert_eq!((r.status, r.text().as_str()), (200, "hello world\n"));
    let r = get_with(
        addr,
        "/hello.txt",
        &[("range", "bytes=0-4"), ("if-range", &lm)],
    );
    assert_eq!(r.status, 206);
    let r = get_with(
        addr,
        "/hello.txt",
        &[
            ("range", "bytes=0-4"),
            ("if-range", "Thu, 01 Jan 1970 00:00:01 GMT"),
        ],
    );
    assert_eq!(r.status, 200);
}

#[test]
fn etag_changes_when_a_checkout_rewrites_same_size_same_second() {
    let dir = site();
    let file = dir.path().join("www/hello.txt");
    let (_sc, addr) = serve(&dir.path().join("www"), &[]);
    let before = http::get(addr, "/hello.txt");
    let mtime = std::fs::metadata(&file).unwrap().modified().unwrap();
    // In place (same inode), and as a new file (what git does), both with the old mtime.
    std::fs::write(&file, "HELLO WORLD\n").unwrap();
    set_mtime(&file, mtime);
    let in_place = http::get(addr, "/hello.txt");
    assert_eq!(
        in_place.header("last-modified"),
        before.header("last-modified")
    );
    assert_ne!(in_place.header("etag"), before.header("etag"));
    assert_eq!(
        get_with(
            addr,
            "/hello.txt",
            &[("if-none-match", before.header("etag").unwrap())]
        )
        .status,
        200
    );
    let tmp = dir.path().join("www/.hello.tmp");
    std::fs::write(&tmp, "hello_world\n").unwrap();
    set_mtime(&tmp, mtime);
    std::fs::rename(&tmp, &file).unwrap();
    let replaced = http::get(addr, "/hello.txt");
    assert_eq!(replaced.text(), "hello_world\n");
    assert_ne!(replaced.header("etag"), in_place.header("etag"));
    assert_ne!(replaced.header("etag"), before.header("etag"));
}

#[test]
fn single_and_multiple_ranges() {
    let dir = site();
    let (_sc, addr) = serve(&dir.path().join("www"), &[]);
    let data = "0123456789".repeat(100);
    let range = |h: &str| get_with(addr, "/data.bin", &[("range", h)]);

    let r = range("bytes=10-19");
    assert_eq!(r.status, 206);
    assert_eq!(r.header("content-range"), Some("bytes 10-19/1000"));
    assert_eq!(r.header("content-length"), Some("10"));
    assert_eq!(r.text(), &data[10..20]);
    assert_eq!(range("bytes=-5").text(), &data[995..]);
    assert_eq!(range("bytes=990-").text(), &data[990..]);
    let r = range("bytes=100-99999");
    assert_eq!(r.header("content-range"), Some("bytes 100-999/1000"));
    assert_eq!(r.body.len(), 900);

    for bad in [
        "bytes=100-10",
        "bytes=",
        "bytes=xyx-abc",
        "bytes=1000-",
        "bytes=5000-6000",
    ] {
        let r = range(bad);
        assert_eq!(r.status, 416, "{bad}");
        assert_eq!(r.header("content-range"), Some("bytes */1000"), "{bad}");
    }
    // Integer overflow spellings (CVE-2017-7529 class) are harmless.
    let r = range("bytes=-1,-9223372036854775807");
    assert_eq!((r.status, r.body.len()), (206, 1000));
    let r = range("bytes=0-18446744073709551616");
    assert_eq!((r.status, r.body.len()), (206, 1000));

    // Two ranges: multipart/byteranges with each part's Content-Range.
    let r = range("bytes=0-1,5-6");
    assert_eq!(r.status, 206);
    let ct = r.header("content-type").unwrap().to_string();
    let boundary = ct
        .strip_prefix("multipart/byteranges; boundary=")
        .expect(&ct);
    let body = r.text();
    assert_eq!(r.header("content-length").unwrap(), body.len().to_string());
    assert!(
        body.contains("Content-Range: bytes 0-1/1000\r\n\r\n01\r\n"),
        "{body}"
    );
    assert!(
        body.contains("Content-Range: bytes 5-6/1000\r\n\r\n56\r\n"),
        "{body}"
    );
    assert!(body.ends_with(&format!("--{boundary}--\r\n")));

    // A thousand adjacent ranges merge into one; many sparse ones hit the cap.
    let adjacent: Vec<String> = (0..1000).map(|i| format!("{i}-{i}")).collect();
    let r = range(&format!("bytes={}", adjacent.join(",")));
    assert_eq!((r.status, r.body.len()), (206, 1000));
    let sparse: Vec<String> = (0..200).map(|i| format!("{}-{}", i * 5, i * 5)).collect();
    assert_eq!(range(&format!("bytes={}", sparse.join(","))).status, 416);
}

#[test]
fn precompressed_variants_and_on_the_fly_gzip() {
    let dir = site();
    let www = dir.path().join("www");
    let css = "body { color: red; }\n".repeat(200);
    write(&www.join("app.css"), &css);
    std::fs::write(www.join("app.css.br"), b"BROTLI-BYTES").unwrap();
    std::fs::write(www.join("app.css.gz"), gzip(css.as_bytes())).unwrap();
    // A variant larger than the original is still served whole (SWS #722).
    let small = "tiny\n";
    write(&www.join("small.js"), small);
    std::fs::write(www.join("small.js.zst"), vec![b'z'; 5000]).unwrap();
    let big_text = "lorem ipsum dolor sit amet ".repeat(6000);
    write(&www.join("page.html"), &big_text);
    let (_sc, addr) = serve(&www, &[]);

    let r = get_with(addr, "/app.css", &[("accept-encoding", "gzip, br")]);
    assert_eq!(r.header("content-encoding"), Some("br"));
    assert_eq!(r.header("content-type"), Some("text/css; charset=utf-8"));
    assert_eq!(r.header("vary"), Some("Accept-Encoding"));
    assert_eq!(r.body, b"BROTLI-BYTES");
    // The client's q-values order the acceptable codings (RFC 9110 §12.5.3).
    let r = get_with(
        addr,
        "/app.css",
        &[("accept-encoding", "br;q=0.1, gzip;q=1")],
    );
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    let r = get_with(addr, "/app.css", &[("accept-encoding", "gzip")]);
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    assert_eq!(gunzip(&r.body), css.as_bytes());
    let r = get_with(addr, "/app.css", &[("accept-encoding", "br;q=0, gzip;q=0")]);
    assert_eq!(
        (r.header("content-encoding"), r.text()),
        (None, css.clone())
    );
    assert_eq!(r.header("vary"), Some("Accept-Encoding"));

    let r = get_with(addr, "/small.js", &[("accept-encoding", "zstd")]);
    assert_eq!(r.header("content-encoding"), Some("zstd"));
    assert_eq!(r.header("content-length"), Some("5000"));
    assert_eq!(r.body.len(), 5000);

    // On the fly: text above the threshold, only when asked, not for ranges.
    let r = get_with(addr, "/page.html", &[("accept-encoding", "gzip")]);
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    assert_eq!(
        r.header("content-length").unwrap(),
        r.body.len().to_string()
    );
    assert!(r.body.len() < big_text.len() / 10);
    assert_eq!(gunzip(&r.body), big_text.as_bytes());
    let gz_etag = r.header("etag").unwrap().to_string();
    assert_ne!(
        Some(gz_etag.as_str()),
        http::get(addr, "/page.html").header("etag")
    );
    assert_eq!(
        get_with(
            addr,
            "/page.html",
            &[("accept-encoding", "gzip"), ("if-none-match", &gz_etag)]
        )
        .status,
        304
    );
    assert_eq!(
        http::get(addr, "/page.html").header("content-encoding"),
        None
    );
    let r = get_with(
        addr,
        "/page.html",
        &[("accept-encoding", "gzip"), ("range", "bytes=0-4")],
    );
    assert_eq!(
        (r.status, r.header("content-encoding"), r.text().as_str()),
        (206, None, "lorem")
    );
    // Small text is not worth compressing; images are never compressed.
    assert_eq!(
        get_with(addr, "/hello.txt", &[("accept-encoding", "gzip")]).header("content-encoding"),
        None
    );
    drop(_sc);

    let (_sc, addr) = serve(&www, &["--gzip=false"]);
    assert_eq!(
        get_with(addr, "/page.html", &[("accept-encoding", "gzip")]).header("content-encoding"),
        None
    );
}

/// Compresses with the system gzip, a peer independent of our encoder.
fn gzip(data: &[u8]) -> Vec<u8> {
    let dir = support::tempdir();
    let f = dir.path().join("x");
    std::fs::write(&f, data).unwrap();
    let out = support::run_cmd(Command::new("gzip").arg("-cn").arg(&f));
    assert!(out.status.success());
    out.stdout
}

/// Decompresses with the system gzip, a peer independent of our encoder.
fn gunzip(data: &[u8]) -> Vec<u8> {
    let dir = support::tempdir();
    let f = dir.path().join("x.gz");
    std::fs::write(&f, data).unwrap();
    // In place: the harness collects stdout only after exit, so keep it small.
    let out = support::run_cmd(Command::new("gzip").arg("-d").arg(&f));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(dir.path().join("x")).unwrap()
}

#[test]
fn listings_are_escaped_and_negotiated() {
    let dir = site();
    let www = dir.path().join("www");
    write(&www.join("list/<img src=x onerror=alert(1)>.txt"), "x");
    write(&www.join("list/escape(this)name"), "y");
    write(&www.join("list/sub dir/f"), "z");
    let (_sc, addr) = serve(&www, &["--listing"]);
    let r = http::get(addr, "/list/");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    let html = r.text();
    assert!(!html.contains("<img"), "{html}");
    assert!(
        html.contains("&lt;img src=x onerror=alert(1)&gt;.txt"),
        "{html}"
    );
    assert!(html.contains("href=\"./escape%28this%29name\""), "{html}");
    assert!(html.contains("href=\"./sub%20dir/\""), "{html}");
    let j = get_with(addr, "/list/", &[("accept", "application/json")]);
    assert_eq!(j.header("content-type"), Some("application/json"));
    let v: serde_json::Value = serde_json::from_slice(&j.body).unwrap();
    assert_eq!(v[0]["name"], "sub dir");
    assert_eq!(v[0]["type"], "directory");
    assert!(v
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["name"] == "escape(this)name" && e["size"] == 1));
    // A directory with an index file shows the index, not a listing.
    assert_eq!(http::get(addr, "/docs/").text(), "docs\n");
    drop(_sc);
    let (_sc, addr) = serve(&www, &[]);
    assert_eq!(
        http::get(addr, "/list/").status,
        404,
        "listing is off by default"
    );
}

#[test]
fn spa_fallback_and_custom_404_page() {
    let dir = site();
    let www = dir.path().join("www");
    write(&www.join("404.html"), "<p>custom missing</p>\n");
    let (_sc, addr) = serve(&www, &["--not-found-page", "404.html"]);
    let r = http::get(addr, "/nope");
    assert_eq!(r.status, 404);
    assert_eq!(r.text(), "<p>custom missing</p>\n");
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    drop(_sc);

    let (_sc, addr) = serve(
        &www,
        &[
            "--spa-fallback",
            "index.html",
            "--not-found-page",
            "404.html",
        ],
    );
    let r = http::get(addr, "/app/route/42");
    assert_eq!((r.status, r.text().as_str()), (200, "<h1>home</h1>\n"));
    assert_eq!(http::get(addr, "/hello.txt").text(), "hello world\n");
    // Refused paths are not rescued by the fallback.
    assert_eq!(http::get(addr, "/.env").status, 404);
    assert_eq!(http::get(addr, "/../x").status, 400);
}

#[test]
fn cors_custom_headers_and_cache_control() {
    let dir = site();
    write(&dir.path().join("www/assets/app.js"), "x()");
    let (_sc, addr) = serve(
        &dir.path().join("www"),
        &[
            "--cors-allow-origins",
            "https://a.example,https://b.example",
            "--header",
            "X-Frame-Options: DENY",
            "--cache-control",
            "assets/**=public, max-age=31536000, immutable",
            "--cache-control",
            "*.html=no-cache",
        ],
    );
    let r = get_with(addr, "/assets/app.js", &[("origin", "https://a.example")]);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://a.example")
    );
    assert_eq!(r.header("x-frame-options"), Some("DENY"));
    assert_eq!(
        r.header("cache-control"),
        Some("public, max-age=31536000, immutable")
    );
    assert!(r
        .headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("vary") && v.contains("Origin")));
    assert_eq!(
        r.header("access-control-expose-headers"),
        Some("origin, content-type")
    );
    // A disallowed origin is refused outright, as static-web-server does.
    let r = get_with(addr, "/", &[("origin", "https://evil.example")]);
    assert_eq!(r.status, 403);
    assert_eq!(r.header("access-control-allow-origin"), None);
    let r = http::get(addr, "/");
    assert_eq!(
        (r.status, r.header("cache-control")),
        (200, Some("no-cache"))
    );
    assert_eq!(r.header("x-frame-options"), Some("DENY"));
    assert_eq!(r.header("access-control-allow-origin"), None);
    assert_eq!(http::get(addr, "/hello.txt").header("cache-control"), None);

    let preflight = |origin: &str, method: &str, headers: &str| {
        let mut h = vec![
            ("origin", origin),
            ("access-control-request-method", method),
        ];
        if !headers.is_empty() {
            h.push(("access-control-request-headers", headers));
        }
        http::request(addr, "OPTIONS", "/assets/app.js", &h, b"")
    };
    let pre = preflight("https://b.example", "GET", "Content-Type, authorization");
    assert_eq!(pre.status, 204);
    assert_eq!(
        pre.header("access-control-allow-origin"),
        Some("https://b.example")
    );
    assert_eq!(
        pre.header("access-control-allow-methods"),
        Some("GET, HEAD, OPTIONS")
    );
    assert_eq!(
        pre.header("access-control-allow-headers"),
        Some("origin, content-type, authorization")
    );
    for (origin, method, headers) in [
        ("https://evil.example", "GET", ""),
        ("https://b.example", "POST", ""),
        ("https://b.example", "GET", "x-custom"),
    ] {
        let pre = preflight(origin, method, headers);
        assert_eq!(pre.status, 403, "{origin} {method} {headers}");
        assert_eq!(pre.header("access-control-allow-origin"), None);
    }
    // Without an Origin, OPTIONS is a plain 204 with Allow.
    let r = http::request(addr, "OPTIONS", "/", &[], b"");
    assert_eq!(
        (r.status, r.header("allow")),
        (204, Some("GET, HEAD, OPTIONS"))
    );
}

#[test]
fn cors_any_origin_with_custom_headers_from_env() {
    let dir = site();
    let root = dir.path().join("www");
    let mut sc = Sidecar::spawn(
        Command::new(support::bin())
            .args(["static-serve", "--root", root.to_str().unwrap()])
            .args(["--listen", "127.0.0.1:0", "--admin-addr=127.0.0.1:0"])
            .env("STATIC_SERVE_CORS_ALLOW_ORIGINS", "*")
            .env("STATIC_SERVE_CORS_ALLOW_HEADERS", "x-api-key")
            .env("STATIC_SERVE_CORS_EXPOSE_HEADERS", "etag,content-range"),
    );
    let line = sc.wait_for_log("static-serve listening");
    let addr = support::addr_field(&line, "addr=").unwrap();
    let r = get_with(addr, "/hello.txt", &[("origin", "https://any.example")]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    assert_eq!(
        r.header("access-control-expose-headers"),
        Some("etag, content-range")
    );
    assert!(!r
        .headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("vary") && v.contains("Origin")));
    let ok = [
        ("origin", "https://any.example"),
        ("access-control-request-method", "HEAD"),
        ("access-control-request-headers", "X-Api-Key"),
    ];
    let pre = http::request(addr, "OPTIONS", "/hello.txt", &ok, b"");
    assert_eq!(pre.status, 204);
    assert_eq!(
        pre.header("access-control-allow-headers"),
        Some("x-api-key")
    );
    let bad = [
        ("origin", "https://any.example"),
        ("access-control-request-method", "GET"),
        ("access-control-request-headers", "content-type"),
    ];
    assert_eq!(
        http::request(addr, "OPTIONS", "/hello.txt", &bad, b"").status,
        403
    );
}

#[test]
fn basic_auth_with_bcrypt_htpasswd() {
    let dir = site();
    let htpasswd = dir.path().join("htpasswd");
    // bcrypt of "s3cret" at cost 4 (htpasswd -bnBC 4 alice s3cret).
    std::fs::write(
        &htpasswd,
        "# team\nalice:$2b$04$dN.gIIRohXuUmgkED/BVJ.qVO50pLLT65pl63SxDIvIL3GX0Dwjlm\n",
    )
    .unwrap();
    let (mut sc, addr) = serve(
        &dir.path().join("www"),
        &["--basic-auth-file", htpasswd.to_str().unwrap()],
    );
    let r = http::get(addr, "/hello.txt");
    assert_eq!(r.status, 401);
    assert!(r
        .header("www-authenticate")
        .unwrap()
        .starts_with("Basic realm="));
    let ok = "Basic YWxpY2U6czNjcmV0"; // alice:s3cret
    for _ in 0..2 {
        assert_eq!(
            get_with(addr, "/hello.txt", &[("authorization", ok)]).text(),
            "hello world\n"
        );
    }
    for bad in [
        "Basic YWxpY2U6d3Jvbmc=",
        "Basic Ym9iOnMzY3JldA==",
        "Bearer x",
        "Basic !!!",
    ] {
        assert_eq!(
            get_with(addr, "/hello.txt", &[("authorization", bad)]).status,
            401,
            "{bad}"
        );
    }

    // A rotated file (Kubernetes swaps the Secret's symlink) is picked up.
    let next = dir.path().join("htpasswd.new");
    std::fs::write(
        &next,
        "bob:$2b$04$dN.gIIRohXuUmgkED/BVJ.qVO50pLLT65pl63SxDIvIL3GX0Dwjlm\n",
    )
    .unwrap();
    std::fs::rename(&next, &htpasswd).unwrap();
    let bob = "Basic Ym9iOnMzY3JldA=="; // bob:s3cret
    support::wait_until("the new htpasswd to load", || {
        get_with(addr, "/hello.txt", &[("authorization", bob)]).status == 200
    });
    assert_eq!(
        get_with(addr, "/hello.txt", &[("authorization", ok)]).status,
        401
    );
    // A broken file keeps the previous users.
    std::fs::write(&next, "garbage\n").unwrap();
    std::fs::rename(&next, &htpasswd).unwrap();
    sc.wait_for_log("does not parse");
    assert_eq!(
        get_with(addr, "/hello.txt", &[("authorization", bob)]).status,
        200
    );
}

#[test]
fn slow_malformed_and_oversized_requests_are_cut_off() {
    let dir = site();
    let (_sc, addr, admin) = serve_admin(
        &dir.path().join("www"),
        &[
            "--header-timeout",
            "1s",
            "--idle-timeout",
            "2s",
            "--max-connections",
            "2",
        ],
    );
    // Malformed request lines get 400 and the server carries on.
    let out = raw(addr, b"GARBAGE\r\n\r\n");
    assert!(
        out.starts_with(b"HTTP/1.1 400"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    // A head above 16 KiB: 431.
    let mut big = b"GET / HTTP/1.1\r\nhost: x\r\nx-big: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', 20 * 1024));
    big.extend_from_slice(b"\r\n\r\n");
    let out = raw(addr, &big);
    assert!(
        out.starts_with(b"HTTP/1.1 431"),
        "{}",
        String::from_utf8_lossy(&out[..out.len().min(200)])
    );
    assert_eq!(http::get(addr, "/hello.txt").status, 200);
    // A request line above 8 KiB: 414 (nginx), even when the head is above 16 KiB.
    for len in [9 * 1024, 20 * 1024] {
        let mut long = b"GET /".to_vec();
        long.extend(std::iter::repeat_n(b'a', len));
        long.extend_from_slice(b" HTTP/1.1\r\nhost: x\r\n\r\n");
        let out = raw(addr, &long);
        assert!(
            out.starts_with(b"HTTP/1.1 414"),
            "{len}: {}",
            String::from_utf8_lossy(&out[..out.len().min(200)])
        );
    }
    // Behind another request on the same connection, the handler answers 414.
    let mut two = b"GET /hello.txt HTTP/1.1\r\nhost: x\r\n\r\nGET /".to_vec();
    two.extend(std::iter::repeat_n(b'a', 9 * 1024));
    two.extend_from_slice(b" HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
    let out = String::from_utf8_lossy(&raw(addr, &two)).into_owned();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.contains("HTTP/1.1 414"), "{out}");
    assert_eq!(http::get(addr, "/hello.txt").status, 200);

    // Slowloris: half a head and silence is closed (read returns EOF, no response).
    let out = raw(addr, b"GET /hello.txt HTTP/1.1\r\nhost: x\r\n");
    assert!(out.is_empty(), "{}", String::from_utf8_lossy(&out));
    // An idle keep-alive connection is closed after a served request.
    let out = raw(addr, b"GET /hello.txt HTTP/1.1\r\nhost: x\r\n\r\n");
    assert!(out.starts_with(b"HTTP/1.1 200") && out.ends_with(b"hello world\n"));

    // --max-connections 2: with two idle clients holding the slots, a third
    // waits (whichever worker's socket it lands on) until a slot frees.
    let a = TcpStream::connect(addr).unwrap();
    let b = TcpStream::connect(addr).unwrap();
    support::wait_until("two connections open", || {
        http::get(admin, "/metrics")
            .text()
            .contains("static_serve_connections_open 2")
    });
    let waiter = std::thread::spawn(move || http::get(addr, "/hello.txt").status);
    drop(a);
    drop(b);
    assert_eq!(waiter.join().unwrap(), 200);
    let metrics = support::metrics::scrape(admin);
    assert!(
        metrics.contains("static_serve_connection_timeouts_total"),
        "{metrics}"
    );
}

#[test]
fn unix_socket_listener() {
    let dir = site();
    let sock = dir.path().join("s.sock");
    let listen = format!("unix:{}", sock.display());
    let mut sc = Sidecar::start(
        "static-serve",
        &[
            "--root",
            dir.path().join("www").to_str().unwrap(),
            "--listen",
            &listen,
        ],
    );
    sc.wait_for_log("static-serve listening");
    let mut s = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    s.set_read_timeout(Some(support::DEADLINE)).unwrap();
    s.write_all(b"GET /hello.txt HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let r = http::parse_response(&out, false);
    assert_eq!((r.status, r.text().as_str()), (200, "hello world\n"));
    sc.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(sc.wait_exit().code(), Some(0));
    assert!(!sock.exists(), "socket removed at exit");

    // A regular file at the socket path is somebody's data: refuse, exit 2.
    std::fs::write(&sock, "data").unwrap();
    let out = support::run(&["static-serve", "--admin-addr=off", "--listen", &listen]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a socket"));
    assert_eq!(std::fs::read_to_string(&sock).unwrap(), "data");
}

#[test]
fn sigterm_finishes_the_response_in_flight_then_exits_zero() {
    let dir = site();
    let big: Vec<u8> = (0..8 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(dir.path().join("www/big.bin"), &big).unwrap();
    let (mut sc, addr) = serve(&dir.path().join("www"), &[]);
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(support::DEADLINE)).unwrap();
    s.write_all(b"GET /big.bin HTTP/1.1\r\nhost: x\r\n\r\n")
        .unwrap();
    let mut first = [0u8; 4096];
    let n = s.read(&mut first).unwrap();
    assert!(n > 0);
    sc.signal(nix::sys::signal::Signal::SIGTERM);
    sc.wait_for_log("draining");
    // New connections are refused once draining.
    assert!(TcpStream::connect(addr).is_err());
    let mut out = first[..n].to_vec();
    s.read_to_end(&mut out).unwrap();
    let r = http::parse_response(&out, false);
    assert_eq!(r.status, 200);
    assert!(
        r.body == big,
        "body truncated: {} of {}",
        r.body.len(),
        big.len()
    );
    assert_eq!(sc.wait_exit().code(), Some(0), "{}", sc.stderr());
}

#[test]
fn missing_root_answers_503_until_it_appears_and_metrics_count() {
    let dir = site();
    let root = dir.path().join("later");
    let (_sc, addr, admin) = serve_admin(&root, &[]);
    assert_eq!(http::get(addr, "/").status, 503);
    assert_eq!(http::get(admin, "/readyz").status, 503);
    std::os::unix::fs::symlink("www", &root).unwrap();
    support::wait_until("ready", || http::get(admin, "/readyz").status == 200);
    assert_eq!(http::get(addr, "/hello.txt").status, 200);
    let m = support::metrics::scrape(admin);
    for needle in [
        "static_serve_requests_total{class=\"2xx\"}",
        "static_serve_requests_total{class=\"5xx\"}",
        "static_serve_response_body_bytes_total",
        "static_serve_request_duration_seconds_bucket",
        "static_serve_root_unavailable_total 1",
    ] {
        assert!(m.contains(needle), "{needle} missing:\n{m}");
    }
    // A root that goes away later: the first request that finds none turns
    // readiness off, until the root is back.
    std::fs::remove_file(&root).unwrap();
    assert_eq!(http::get(addr, "/hello.txt").status, 503);
    support::wait_until("not ready", || http::get(admin, "/readyz").status == 503);
    std::os::unix::fs::symlink("www", &root).unwrap();
    support::wait_until("ready again", || http::get(admin, "/readyz").status == 200);
    assert_eq!(http::get(addr, "/hello.txt").status, 200);
}

#[test]
fn bad_flags_exit_2_naming_the_flag() {
    let dir = site();
    let www = dir.path().join("www");
    let www = www.to_str().unwrap();
    for (args, flag) in [
        (vec!["--cache-control", "nonsense"], "--cache-control"),
        (vec!["--cache-control", "a[=x"], "--cache-control"),
        (
            vec!["--basic-auth-file", "/nonexistent/htpasswd"],
            "--basic-auth-file",
        ),
        (vec!["--listen", "nohost"], "--listen"),
        (vec!["--header", "bad header"], "--header"),
        (vec!["--spa-fallback", "../x.html"], "--spa-fallback"),
        (vec!["--idle-timeout", "soon"], "--idle-timeout"),
        (vec!["--gzip=maybe"], "--gzip"),
    ] {
        let mut all = vec!["static-serve", "--admin-addr=off", "--root", www];
        all.extend(args.iter().copied());
        let out = support::run(&all);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(flag), "{args:?}: {err}");
    }
    let hello = dir.path().join("www/hello.txt");
    let out = support::run(&[
        "static-serve",
        "--admin-addr=off",
        "--root",
        hello.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
}

/// git-sync's publish step, repeated under load: build a new tree, point the
/// root link at it with an atomic rename, delete the old tree at once. Every
/// response must succeed and come whole from exactly one version.
#[test]
fn root_swaps_under_load_never_mix_or_fail_responses() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;

    const SWAPS: usize = 200;
    const BIG: usize = 300 * 1024;
    let dir = support::tempdir();
    let base = dir.path().to_path_buf();
    let make = |v: usize| {
        let t = base.join(format!("v{v}"));
        write(
            &t.join("index.html"),
            &format!("version {v}\n{}", v.to_string().repeat(3000)),
        );
        std::fs::write(t.join("big.bin"), vec![b'a' + (v % 26) as u8; BIG]).unwrap();
        write(&t.join(format!("list/v{v}-a")), "a");
        write(&t.join(format!("list/v{v}-b")), "b");
        std::os::unix::fs::symlink(format!("v{v}"), base.join("next")).unwrap();
        std::fs::rename(base.join("next"), base.join("current")).unwrap();
    };
    make(0);
    let (_sc, addr) = serve(&base.join("current"), &["--listing"]);

    let done = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..4)
        .map(|c| {
            let (done, served) = (done.clone(), served.clone());
            std::thread::spawn(move || {
                let mut i = c;
                while !done.load(Ordering::SeqCst) {
                    i += 1;
                    match i % 3 {
                        0 => {
                            let r = http::get(addr, "/");
                            assert_eq!(r.status, 200, "{}", r.text());
                            let text = r.text();
                            let v = text
                                .lines()
                                .next()
                                .unwrap()
                                .strip_prefix("version ")
                                .unwrap()
                                .to_string();
                            assert_eq!(
                                text,
                                format!("version {v}\n{}", v.repeat(3000)),
                                "mixed index"
                            );
                        }
                        1 => {
                            let r = http::get(addr, "/big.bin");
                            assert_eq!(r.status, 200, "{}", r.text());
                            assert_eq!(r.body.len(), BIG);
                            assert!(r.body.iter().all(|b| *b == r.body[0]), "mixed big.bin");
                        }
                        _ => {
                            let r = get_with(addr, "/list/", &[("accept", "application/json")]);
                            assert_eq!(r.status, 200, "{}", r.text());
                            let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
                            let names: Vec<&str> = v
                                .as_array()
                                .unwrap()
                                .iter()
                                .map(|e| e["name"].as_str().unwrap())
                                .collect();
                            assert_eq!(names.len(), 2, "{names:?}");
                            let ver = names[0].trim_end_matches("-a");
                            assert_eq!(names[1], format!("{ver}-b"), "mixed listing {names:?}");
                        }
                    }
                    served.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();

    for v in 1..=SWAPS {
        // Swap only after clients made progress on the current version.
        let target = served.load(Ordering::SeqCst) + 4;
        support::wait_until("clients to make progress", || {
            served.load(Ordering::SeqCst) >= target
        });
        make(v);
        std::fs::remove_dir_all(base.join(format!("v{}", v - 1))).unwrap();
    }
    done.store(true, Ordering::SeqCst);
    for c in clients {
        c.join().expect("a client saw a failed or mixed response");
    }
    let r = http::get(addr, "/");
    assert!(r.text().starts_with(&format!("version {SWAPS}\n")));
}

/// With every cache warm (files, a missing name, a big file's open
/// descriptor, all settled), a root swap is seen by the very next request,
/// whole, and swapping back serves the first version again.
#[test]
fn warm_caches_follow_root_swaps_exactly() {
    let dir = support::tempdir();
    let base = dir.path();
    for v in ["v1", "v2"] {
        write(&base.join(v).join("page.html"), &format!("{v} page\n"));
        std::fs::write(base.join(v).join("big.bin"), v.repeat(100_000)).unwrap();
    }
    write(&base.join("v2/only-in-v2.txt"), "new\n");
    let link = |v: &str| {
        std::os::unix::fs::symlink(v, base.join("next")).unwrap();
        std::fs::rename(base.join("next"), base.join("current")).unwrap();
    };
    link("v1");
    // Settled: ctimes over a second old, so the caches take them.
    support::wait_until("the trees to settle", || {
        ["v1", "v2", "v1/page.html", "v2/page.html"]
            .iter()
            .all(|p| {
                std::fs::metadata(base.join(p))
                    .unwrap()
                    .modified()
                    .unwrap()
                    .elapsed()
                    .is_ok_and(|age| age > std::time::Duration::from_millis(1500))
            })
    });
    let (_sc, addr) = serve(&base.join("current"), &[]);
    let expect = |v: &str| {
        assert_eq!(http::get(addr, "/page.html").text(), format!("{v} page\n"));
        assert!(http::get(addr, "/big.bin").body == v.repeat(100_000).as_bytes());
        let only = http::get(addr, "/only-in-v2.txt");
        assert_eq!(only.status, if v == "v2" { 200 } else { 404 }, "{v}");
    };
    for _ in 0..3 {
        expect("v1");
    }
    link("v2");
    for _ in 0..3 {
        expect("v2");
    }
    link("v1");
    expect("v1");
}

/// Small files are kept in memory once settled; a rewrite (same size, same
/// mtime, in place) must still be served fresh, whole and in ranges.
#[test]
fn cached_small_files_never_go_stale() {
    let dir = site();
    let file = dir.path().join("www/hello.txt");
    let (_sc, addr) = serve(&dir.path().join("www"), &[]);
    // The cache only takes files whose ctime is over a second old.
    support::wait_until("hello.txt to settle", || {
        std::fs::metadata(&file)
            .unwrap()
            .modified()
            .unwrap()
            .elapsed()
            .is_ok_and(|age| age > std::time::Duration::from_millis(1500))
    });
    for _ in 0..2 {
        assert_eq!(http::get(addr, "/hello.txt").text(), "hello world\n");
    }
    let mtime = std::fs::metadata(&file).unwrap().modified().unwrap();
    std::fs::write(&file, "HELLO WORLD\n").unwrap();
    set_mtime(&file, mtime);
    assert_eq!(http::get(addr, "/hello.txt").text(), "HELLO WORLD\n");
    let r = get_with(addr, "/hello.txt", &[("range", "bytes=6-10")]);
    assert_eq!((r.status, r.text().as_str()), (206, "WORLD"));
}

/// Every flag has a STATIC_SERVE_* variable; a flag beats its variable.
#[test]
fn environment_variables_configure_the_server() {
    let dir = site();
    let www = dir.path().join("www");
    std::fs::remove_file(www.join("index.html")).unwrap();
    let mut cmd = Command::new(support::bin());
    cmd.args(["static-serve", "--admin-addr=127.0.0.1:0", "--gzip=true"])
        .env("STATIC_SERVE_ROOT", &www)
        .env("STATIC_SERVE_LISTEN", "127.0.0.1:0")
        .env("STATIC_SERVE_LISTING", "true")
        .env("STATIC_SERVE_HEADER", "X-One: 1\nX-Two: 2")
        .env("STATIC_SERVE_GZIP", "false");
    let mut sc = Sidecar::spawn(&mut cmd);
    let line = sc.wait_for_log("static-serve listening");
    let addr = support::addr_field(&line, "addr=").unwrap();
    let r = http::get(addr, "/");
    assert_eq!(r.status, 200, "listing from STATIC_SERVE_LISTING");
    assert!(r.text().contains("hello.txt"));
    assert_eq!(
        (r.header("x-one"), r.header("x-two")),
        (Some("1"), Some("2"))
    );
    write(&www.join("page.html"), &"text ".repeat(1000));
    let r = get_with(addr, "/page.html", &[("accept-encoding", "gzip")]);
    assert_eq!(
        r.header("content-encoding"),
        Some("gzip"),
        "--gzip=true beats the variable"
    );
}

/// Large file bodies go out by sendfile: whole, ranged, multipart, over
/// keep-alive and pipelined requests, and over a unix socket, byte for byte.
#[test]
fn large_files_are_byte_exact_in_every_shape() {
    let dir = site();
    let data: Vec<u8> = (0..1_000_003u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(dir.path().join("www/big.bin"), &data).unwrap();
    let sock = dir.path().join("s.sock");
    let unix = format!("unix:{}", sock.display());
    let (_sc, addr) = serve(&dir.path().join("www"), &["--listen", &unix]);

    assert!(http::get(addr, "/big.bin").body == data);
    let r = get_with(addr, "/big.bin", &[("range", "bytes=100000-700000")]);
    assert_eq!(r.status, 206);
    assert!(r.body == data[100_000..=700_000]);
    let head = http::request(addr, "HEAD", "/big.bin", &[], b"");
    assert_eq!(head.header("content-length"), Some("1000003"));

    let r = get_with(
        addr,
        "/big.bin",
        &[("range", "bytes=0-99999,500000-999999,-2")],
    );
    assert_eq!(r.status, 206);
    let ct = r.header("content-type").unwrap().to_string();
    let boundary = format!("--{}", ct.split("boundary=").nth(1).unwrap());
    let parts: Vec<&[u8]> = split(&r.body, boundary.as_bytes());
    let bodies: Vec<&[u8]> = parts
        .iter()
        .filter_map(|p| {
            let i = p.windows(4).position(|w| w == b"\r\n\r\n")?;
            Some(&p[i + 4..p.len() - 2])
        })
        .collect();
    assert_eq!(bodies.len(), 3);
    assert!(bodies[0] == &data[..100_000]);
    assert!(bodies[1] == &data[500_000..1_000_000]);
    assert!(bodies[2] == &data[1_000_001..]);

    // Two pipelined requests on one connection: each body intact, in order.
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(support::DEADLINE)).unwrap();
    s.write_all(
        b"GET /big.bin HTTP/1.1\r\nhost: x\r\nrange: bytes=10-200009\r\n\r\n\
          GET /big.bin HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let first_end = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert!(out[..first_end].starts_with(b"HTTP/1.1 206"));
    assert!(out[first_end..first_end + 200_000] == data[10..200_010]);
    let second = http::parse_response(&out[first_end + 200_000..], false);
    assert_eq!(second.status, 200);
    assert!(second.body == data);

    let mut u = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    u.set_read_timeout(Some(support::DEADLINE)).unwrap();
    u.write_all(b"GET /big.bin HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut out = Vec::new();
    u.read_to_end(&mut out).unwrap();
    assert!(http::parse_response(&out, false).body == data);
}

fn split<'a>(hay: &'a [u8], sep: &[u8]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut rest = hay;
    while let Some(i) = rest.windows(sep.len()).position(|w| w == sep) {
        out.push(&rest[..i]);
        rest = &rest[i + sep.len()..];
    }
    out.push(rest);
    out
}

/// Every response in `out`, in order: status and body (HEAD responses have
/// no body; the caller says which ones are HEAD).
fn responses(mut out: &[u8], heads: &[bool]) -> Vec<(u16, Vec<u8>)> {
    let mut all = Vec::new();
    for &head in heads {
        let end = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let r = http::parse_response(&out[..end], true);
        let len: usize = match head {
            true => 0,
            false => r.header("content-length").unwrap().parse().unwrap(),
        };
        all.push((r.status, out[end..end + len].to_vec()));
        out = &out[end + len..];
    }
    assert!(out.is_empty(), "trailing bytes: {}", out.len());
    all
}

#[test]
fn sendfile_bodies_stay_exact_when_pipelined_with_head_ranges_and_a_slow_reader() {
    // Bodies of files above 256 KiB leave by sendfile through placeholders
    // (src/sendfile.rs); a placeholder written as its own (zero) bytes would
    // show up here as a wrong body. HEAD bodies are never polled by hyper, so
    // they must not leave a span behind that shifts the next response.
    let dir = site();
    let data: Vec<u8> = (0..700_001u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 11) as u8 | 1)
        .collect();
    std::fs::write(dir.path().join("www/big.bin"), &data).unwrap();
    let (_sc, addr) = serve(&dir.path().join("www"), &[]);
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(support::DEADLINE)).unwrap();
    // A small receive window makes every sendfile partial.
    let small: libc::c_int = 64 * 1024;
    // SAFETY: setsockopt on an open socket with a c_int option value.
    let rc = unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&s),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&small as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0);
    s.write_all(
        b"HEAD /big.bin HTTP/1.1\r\nhost: x\r\n\r\n\
          GET /big.bin HTTP/1.1\r\nhost: x\r\nrange: bytes=300000-\r\n\r\n\
          HEAD /big.bin HTTP/1.1\r\nhost: x\r\nrange: bytes=1-2\r\n\r\n\
          GET /big.bin HTTP/1.0\r\nconnection: keep-alive\r\n\r\n\
          GET /big.bin HTTP/1.1\r\nhost: x\r\nif-none-match: *\r\n\r\n\
          GET /big.bin HTTP/1.1\r\nhost: x\r\nrange: bytes=0-9999,-300000\r\n\r\n\
          GET /hello.txt HTTP/1.1\r\nhost: x\r\n\r\n\
          GET /big.bin HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = s.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    let heads = [true, false, true, false, true, false, false, false];
    let r = responses(&out, &heads);
    assert_eq!(r[0].0, 200);
    assert_eq!((r[1].0, &r[1].1[..]), (206, &data[300_000..]));
    assert_eq!(r[2].0, 206);
    assert_eq!((r[3].0, &r[3].1[..]), (200, &data[..]));
    assert_eq!(r[4].0, 304);
    assert_eq!(r[5].0, 206);
    let multipart = &r[5].1;
    let at = |needle: &[u8]| multipart.windows(needle.len()).position(|w| w == needle);
    assert!(at(&data[..10_000]).is_some() && at(&data[400_001..]).is_some());
    assert_eq!((r[6].0, &r[6].1[..]), (200, &b"hello world\n"[..]));
    assert_eq!((r[7].0, &r[7].1[..]), (200, &data[..]));
    assert!(!out.windows(64).any(|w| w.iter().all(|&b| b == 0)));
}

#[test]
fn protocol_edge_cases_over_raw_tcp() {
    let dir = site();
    let (_sc, addr) = serve(&dir.path().join("www"), &[]);
    let text = |raw_req: &[u8]| String::from_utf8_lossy(&raw(addr, raw_req)).into_owned();
    let status = |raw_req: &[u8]| text(raw_req).get(9..12).unwrap_or("").to_string();

    // Two Host fields: 400 (RFC 9112 §3.2); one, or none, is served.
    assert_eq!(
        status(b"GET /hello.txt HTTP/1.1\r\nhost: a\r\nhost: b\r\nconnection: close\r\n\r\n"),
        "400"
    );
    assert_eq!(
        status(b"GET /hello.txt HTTP/1.1\r\nconnection: close\r\n\r\n"),
        "200"
    );
    // Absolute-form targets are resolved like origin-form ones.
    assert_eq!(
        status(b"GET http://x/../secret HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"),
        "400"
    );
    assert!(
        text(b"GET http://other/hello.txt HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .ends_with("hello world\n")
    );
    // Tomcat's `..;` and overlong / invalid UTF-8 are plain (missing) names.
    for target in [
        "/..;/hello.txt",
        "/%C0%AE%C0%AE/hello.txt",
        "/%ff%fe",
        "/%E2%82",
    ] {
        let req = format!("GET {target} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
        assert_eq!(status(req.as_bytes()), "404", "{target}");
    }
    assert_eq!(
        status(b"GET /%2e%2e%5chello.txt HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"),
        "400"
    );

    // Two Range fields are ambiguous: both ignored, the whole file sent.
    let out = text(
        b"GET /data.bin HTTP/1.1\r\nhost: x\r\nrange: bytes=0-0\r\nrange: bytes=5-5\r\nconnection: close\r\n\r\n",
    );
    assert!(
        out.starts_with("HTTP/1.1 200") && out.contains("content-length: 1000"),
        "{out}"
    );
    // `bytes=0-0,-1`: two parts, the first and the last byte.
    let out = text(
        b"GET /data.bin HTTP/1.1\r\nhost: x\r\nrange: bytes=0-0,-1\r\nconnection: close\r\n\r\n",
    );
    assert!(out.starts_with("HTTP/1.1 206"), "{out}");
    assert!(
        out.contains("bytes 0-0/1000") && out.contains("bytes 999-999/1000"),
        "{out}"
    );
    // A weak If-Range never matches: the full 200.
    let out = text(
        b"GET /data.bin HTTP/1.1\r\nhost: x\r\nrange: bytes=0-1\r\nif-range: W/\"x\"\r\nconnection: close\r\n\r\n",
    );
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");

    // OPTIONS * answers for the server.
    let out = text(b"OPTIONS * HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
    assert!(
        out.starts_with("HTTP/1.1 204") && out.contains("allow: GET, HEAD, OPTIONS"),
        "{out}"
    );

    // Smuggling spellings. TE + CL: the chunked body wins and the connection
    // closes after one response, so nothing rides along as a second request.
    let out = text(
        b"GET /hello.txt HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\ncontent-length: 5\r\n\r\n\
          0\r\n\r\nGET /data.bin HTTP/1.1\r\nhost: x\r\n\r\n",
    );
    assert_eq!(out.matches("HTTP/1.1 ").count(), 1, "{out}");
    for bad in [
        &b"GET /hello.txt HTTP/1.1\r\nhost: x\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nab"
            [..],
        b"GET /hello.txt HTTP/1.1\r\nhost: x\r\ntransfer-encoding: gzip\r\n\r\n",
        b"GET /hello.txt HTTP/1.1\r\nhost: x\r\nx-a: a\r\n folded\r\n\r\n",
        b"GET /hello.txt HTTP/1.1\r\nhost: x\r\nx-a : b\r\n\r\n",
    ] {
        let out = text(bad);
        assert!(
            out.starts_with("HTTP/1.1 400"),
            "{}: {out}",
            String::from_utf8_lossy(bad)
        );
        assert_eq!(out.matches("HTTP/1.1 ").count(), 1, "{out}");
    }
    // A GET's body is read as a body (and dropped), never as a request.
    let inner = b"GET /data.bin HTTP/1.1\r\nhost: x\r\n\r\n";
    let mut req = format!(
        "GET /hello.txt HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\r\n",
        inner.len()
    )
    .into_bytes();
    req.extend_from_slice(inner);
    req.extend_from_slice(b"GET /hello.txt HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
    let r = responses(&raw(addr, &req), &[false, false]);
    assert_eq!(r[0], (200, b"hello world\n".to_vec()));
    assert_eq!(r[1], (200, b"hello world\n".to_vec()));

    // More header fields than the parser holds: 431, not a crash.
    let mut many = b"GET /hello.txt HTTP/1.1\r\nhost: x\r\n".to_vec();
    for i in 0..200 {
        many.extend_from_slice(format!("x-{i}: a\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    assert_eq!(status(&many), "431");

    // HEAD: GET's headers, no body, and the connection stays usable.
    let out = raw(
        addr,
        b"HEAD /hello.txt HTTP/1.1\r\nhost: x\r\n\r\nGET /hello.txt HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    );
    let r = responses(&out, &[true, false]);
    assert_eq!(r[0], (200, vec![]));
    assert_eq!(r[1], (200, b"hello world\n".to_vec()));
}

#[test]
fn future_last_modified_is_capped_at_the_date() {
    let dir = site();
    let www = dir.path().join("www");
    let future = std::time::SystemTime::now() + std::time::Duration::from_secs(86_400 * 365);
    set_mtime(&www.join("hello.txt"), future);
    let (_sc, addr) = serve(&www, &[]);
    let r = http::get(addr, "/hello.txt");
    assert_eq!(r.status, 200);
    let date = r.header("date").expect("Date").to_string();
    assert_eq!(r.header("last-modified"), Some(date.as_str()));
    // The capped value is the validator: asking with it is a 304.
    let r = get_with(addr, "/hello.txt", &[("if-modified-since", &date)]);
    assert_eq!(r.status, 304);
    // An ordinary past mtime is sent as it is.
    let past = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000);
    set_mtime(&www.join("index.html"), past);
    let r = http::get(addr, "/index.html");
    assert_eq!(
        r.header("last-modified"),
        Some("Sun, 09 Sep 2001 01:46:40 GMT")
    );
}

#[test]
fn stale_precompressed_variants_are_not_served() {
    let dir = site();
    let www = dir.path().join("www");
    let old_css = "body { color: red; }\n".repeat(200);
    write(&www.join("app.css"), &old_css);
    std::fs::write(www.join("app.css.br"), b"OLD-BROTLI").unwrap();
    std::fs::write(www.join("app.css.gz"), gzip(old_css.as_bytes())).unwrap();
    // A checkout that only rewrote the original: the variants are now older.
    let new_css = "body { color: blue; }\n".repeat(200);
    write(&www.join("app.css"), &new_css);
    let earlier = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    for v in ["app.css.br", "app.css.gz"] {
        set_mtime(&www.join(v), earlier);
    }
    // A fresh variant next to it is still served.
    write(&www.join("fresh.css"), &old_css);
    std::fs::write(www.join("fresh.css.br"), b"FRESH-BROTLI").unwrap();
    let (_sc, addr, admin) = serve_admin(&www, &[]);

    let r = get_with(addr, "/app.css", &[("accept-encoding", "br")]);
    assert_eq!(
        (r.header("content-encoding"), r.text()),
        (None, new_css.clone())
    );
    // gzip accepted: compressed on the fly from the current original.
    let r = get_with(addr, "/app.css", &[("accept-encoding", "gzip, br")]);
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    assert_eq!(gunzip(&r.body), new_css.as_bytes());
    let r = get_with(addr, "/fresh.css", &[("accept-encoding", "br")]);
    assert_eq!(r.body, b"FRESH-BROTLI");
    let m = support::metrics::scrape(admin);
    assert!(
        m.contains("static_serve_stale_variants_skipped_total 3"),
        "{m}"
    );
}

/// Connections held open at once across several workers: a worker that gets
/// ahead hands new connections to the least loaded one (`balance.rs`), and a
/// client sees nothing of it. 32 connections over 4 workers are handed over
/// unless the kernel's hash happens to split them almost evenly in accept
/// order; either way every pipelined request on every connection is answered,
/// in order, including requests already sent while the connection moved.
#[test]
fn connections_spread_over_workers_are_all_served() {
    let dir = site();
    let www = dir.path().join("www");
    let args = ["--root", www.to_str().unwrap(), "--listen", "127.0.0.1:0"];
    let mut cmd = Sidecar::command("static-serve", &args);
    cmd.env("TOKIO_WORKER_THREADS", "4");
    let mut sc = Sidecar::spawn(&mut cmd);
    let line = sc.wait_for_log("static-serve listening");
    let addr = support::addr_field(&line, "addr=").unwrap();

    let request = b"GET /hello.txt HTTP/1.1\r\nhost: x\r\n\r\n";
    let conns: Vec<TcpStream> = (0..32)
        .map(|_| {
            let mut s = TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(support::DEADLINE)).unwrap();
            s.write_all(request).unwrap();
            s
        })
        .collect();
    for mut s in conns {
        s.write_all(b"GET /data.bin HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        let first_end = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let first = http::parse_response(&out[..first_end + 12], false);
        assert_eq!((first.status, first.text()), (200, "hello world\n".into()));
        let second = http::parse_response(&out[first_end + 12..], false);
        assert_eq!(second.status, 200);
        assert_eq!(second.text(), "0123456789".repeat(100));
    }
}
