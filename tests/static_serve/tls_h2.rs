//! HTTPS (rustls via sidecar_runtime::tls) with HTTP/2 by ALPN, and h2c by
//! prior knowledge, against real clients: curl, nghttp, h2load, openssl s_client.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use super::support::{self, http};
use super::{serve, serve_admin, site};

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
    // Checked before the start, loaded once: one line.
    assert_eq!(sc.stderr().matches("TLS certificate loaded").count(), 1);
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

    // A keep-alive connection opened before the rotation.
    let mut open = KeptAlive::connect(addr);
    assert!(open.get("/hello.txt").ends_with("\r\n\r\nhello world\n"));

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
    // The connection from before the rotation is still served.
    assert!(open.get("/hello.txt").ends_with("\r\n\r\nhello world\n"));
    drop(open);

    // A bad file keeps the certificate in use; logged and counted.
    std::fs::write(&crt, "not a certificate\n").unwrap();
    sc.wait_for_log("TLS files not reloaded");
    assert_eq!(https(&two_crt, &[]), "hello world\n");
    let failed =
        support::metrics::metric(admin, "static_serve_tls_reloads_total{result=\"failed\"}");
    assert!(failed.is_some_and(|n| n >= 1.0), "{failed:?}");
}

#[test]
fn static_web_server_tls_and_http2_switches_keep_their_meaning() {
    if !peers(&["curl", "openssl"]) {
        return;
    }
    let dir = site();
    let www = dir.path().join("www");
    let (crt, key) = certificate(dir.path(), "one");
    let (crt, key) = (crt.to_str().unwrap(), key.to_str().unwrap());
    let get = |addr: std::net::SocketAddr, scheme: &str| {
        let url = format!("{scheme}://localhost:{}/hello.txt", addr.port());
        let resolve = format!("localhost:{}:127.0.0.1", addr.port());
        curl(&[
            "--resolve",
            &resolve,
            "--cacert",
            crt,
            "-D",
            "-",
            "-w",
            "%{http_version}",
            &url,
        ])
    };

    // `--tls false`: plain HTTP, whatever certificate is named.
    let (_sc, addr) = serve(
        &www,
        &["--tls", "false", "--tls-cert", crt, "--tls-key", key],
    );
    assert!(get(addr, "http").ends_with("hello world\n1.1"));

    // `--http2 false`: TLS offers HTTP/1.1 only.
    let (_sc, addr) = serve(
        &www,
        &[
            "--tls",
            "--http2",
            "false",
            "--tls-cert",
            crt,
            "--tls-key",
            key,
        ],
    );
    assert!(get(addr, "https").ends_with("hello world\n1.1"));
    let out = s_client(addr, &["-alpn", "h2"]);
    assert!(out.contains("No ALPN negotiated"), "{out}");

    // `--http2`: h2, and SWS's security headers by default, HSTS included.
    let (_sc, addr) = serve(&www, &["--http2", "--tls-cert", crt, "--tls-key", key]);
    let answer = get(addr, "https");
    assert!(answer.ends_with("hello world\n2"), "{answer}");
    assert!(
        answer.contains("strict-transport-security: max-age=63072000"),
        "{answer}"
    );
    assert!(answer.contains("x-frame-options: DENY"), "{answer}");
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

/// One HTTP/1.1 keep-alive connection over TLS through `openssl s_client`.
struct KeptAlive {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    out: std::sync::mpsc::Receiver<Vec<u8>>,
}

impl KeptAlive {
    fn connect(addr: std::net::SocketAddr) -> KeptAlive {
        let mut child = Command::new("openssl")
            .args(["s_client", "-quiet", "-connect", &addr.to_string()])
            .args(["-servername", "localhost", "-alpn", "http/1.1"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let (tx, out) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = std::io::Read::read(&mut stdout, &mut buf) {
                if tx.send(buf[..n].to_vec()).is_err() {
                    return;
                }
            }
        });
        KeptAlive { child, stdin, out }
    }

    /// One GET on this connection; the whole response (its length known from
    /// `Content-Length`).
    fn get(&mut self, path: &str) -> String {
        use std::io::Write;
        write!(self.stdin, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
        self.stdin.flush().unwrap();
        let mut got = Vec::new();
        loop {
            let text = String::from_utf8_lossy(&got).into_owned();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse().unwrap())
                    })
                    .expect("content-length");
                if body.len() >= len {
                    return text;
                }
            }
            match self.out.recv_timeout(support::DEADLINE) {
                Ok(b) => got.extend_from_slice(&b),
                Err(e) => panic!("no whole response on the kept-alive connection ({e}): {text:?}"),
            }
        }
    }
}

impl Drop for KeptAlive {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A raw HTTP/2 (h2c, prior knowledge) connection: frames written and read
/// by hand, so the test controls exactly what goes over the wire.
struct H2 {
    s: std::net::TcpStream,
}

use support::h2::{frame, ACK, END_STREAM, GOAWAY, HEADERS, PREFACE, SETTINGS};
const DATA: u8 = 0;
const PING: u8 = 6;

impl H2 {
    fn connect(addr: std::net::SocketAddr) -> H2 {
        let s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(support::DEADLINE)).unwrap();
        let mut h = H2 { s };
        std::io::Write::write_all(&mut h.s, PREFACE).unwrap();
        h
    }

    fn frame(&mut self, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
        std::io::Write::write_all(&mut self.s, &frame(kind, flags, stream, payload)).unwrap();
    }

    /// The next frame (kind, flags, stream), or None when the server closed
    /// the connection. Settings are acknowledged on the way.
    fn next(&mut self) -> Option<(u8, u8, u32)> {
        use std::io::Read;
        let mut head = [0u8; 9];
        self.s.read_exact(&mut head).ok()?;
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let mut payload = vec![0; len];
        self.s.read_exact(&mut payload).ok()?;
        let (kind, flags) = (head[3], head[4]);
        if kind == SETTINGS && flags & ACK == 0 {
            self.frame(SETTINGS, ACK, 0, &[]);
        }
        let stream = u32::from_be_bytes([head[5] & 0x7f, head[6], head[7], head[8]]);
        Some((kind, flags, stream))
    }

    /// Sends a GET for `path` on `stream`.
    fn request(&mut self, stream: u32, path: &str) {
        // HPACK: :method GET, :scheme http (static table), :path as a literal.
        let mut block = vec![0x82, 0x86, 0x04, path.len() as u8];
        block.extend_from_slice(path.as_bytes());
        self.frame(HEADERS, 0x4 | END_STREAM, stream, &block);
    }

    /// GET `path` on `stream`; true once its response has ended.
    fn get(&mut self, stream: u32, path: &str) -> bool {
        self.request(stream, path);
        while let Some((kind, flags, s)) = self.next() {
            if s == stream && (kind == DATA || kind == HEADERS) && flags & END_STREAM != 0 {
                return true;
            }
        }
        false
    }

    /// A PING; true once it is acknowledged, false when the server closed the
    /// connection (or sent GOAWAY) instead.
    fn ping(&mut self) -> bool {
        self.frame(PING, 0, 0, b"12345678");
        while let Some((kind, flags, _)) = self.next() {
            match kind {
                PING if flags & ACK != 0 => return true,
                GOAWAY => return false,
                _ => {}
            }
        }
        false
    }

    /// Pings every 100 ms until the server closes the connection (true), for
    /// at most 30 s (false).
    fn pings_until_closed(&mut self) -> bool {
        (0..300).any(|_| {
            let open = self.ping();
            std::thread::sleep(std::time::Duration::from_millis(100));
            !open
        })
    }
}

/// An idle h2 connection is kept as an HTTP/1.1 keep-alive one is: the header
/// timeout does not apply between streams, and PINGs do not hold it open
/// past the idle timeout (nginx's `keepalive_timeout` for h2).
#[test]
fn an_idle_h2_connection_lives_to_the_idle_timeout_and_pings_do_not_extend_it() {
    let dir = site();
    let (_sc, addr) = serve(
        &dir.path().join("www"),
        &[
            "--http2-cleartext",
            "--header-timeout",
            "1s",
            "--idle-timeout",
            "6s",
        ],
    );
    let mut h2 = H2::connect(addr);
    assert!(h2.get(1, "/hello.txt"));
    // Pinging for twice the header timeout.
    let start = std::time::Instant::now();
    while start.elapsed() < std::time::Duration::from_secs(2) {
        assert!(
            h2.ping(),
            "closed while idle for less than the idle timeout"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(
        h2.get(3, "/hello.txt"),
        "a second request on the same connection"
    );
    // Pinging on: the idle timeout closes it all the same.
    assert!(
        h2.pings_until_closed(),
        "PINGs kept an idle h2 connection open past the idle timeout"
    );
}

/// A client that grants no flow-control window leaves its streams stalled
/// and pings to look alive: nothing moves, so the idle timeout closes the
/// connection (nginx's `send_timeout` on a blocked write).
#[test]
fn a_stalled_h2_stream_is_closed_by_the_idle_timeout_whatever_the_client_pings() {
    let dir = site();
    let www = dir.path().join("www");
    // Over the in-memory cache's limit: read from the file as it is sent.
    std::fs::write(www.join("big.bin"), vec![b'x'; 600 * 1024]).unwrap();
    let (_sc, addr) = serve(&www, &["--http2-cleartext", "--idle-timeout", "2s"]);
    let mut h2 = H2::connect(addr);
    // SETTINGS_INITIAL_WINDOW_SIZE = 0: no stream may be sent DATA.
    h2.frame(SETTINGS, 0, 0, &[0, 4, 0, 0, 0, 0]);
    for stream in [1, 3, 5] {
        h2.request(stream, "/big.bin");
    }
    assert!(
        h2.pings_until_closed(),
        "PINGs kept a connection with stalled streams open past the idle timeout"
    );
}

/// HTTP/2 rapid reset (CVE-2023-44487): a client that opens streams and
/// cancels each at once, in a flood, makes the server start work the client
/// never waits for. The connection is ended with GOAWAY ENHANCE_YOUR_CALM
/// long before the flood is through, and other clients are still served.
#[test]
fn an_h2_rapid_reset_flood_is_cut_off_with_enhance_your_calm() {
    use support::h2;
    let dir = site();
    let (_sc, addr) = serve(&dir.path().join("www"), &["--http2-cleartext"]);
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(support::DEADLINE)).unwrap();
    const FLOOD: u32 = 1000;
    let mut bytes = h2::PREFACE.to_vec();
    bytes.extend(h2::rapid_reset_flood(FLOOD, "localhost"));
    // The server may close while the flood is still being written.
    let _ = std::io::Write::write_all(&mut c, &bytes);
    let (goaway, answered) = h2::read_to_goaway(&mut c);
    assert_eq!(
        goaway,
        Some(h2::ENHANCE_YOUR_CALM),
        "no GOAWAY ENHANCE_YOUR_CALM after {FLOOD} reset streams ({answered} answered)"
    );
    assert!(
        answered < FLOOD as usize / 2,
        "{answered} of {FLOOD} reset streams answered"
    );
    // Another client is served as before.
    let mut other = H2::connect(addr);
    assert!(other.get(1, "/hello.txt"));
}

/// A CONTINUATION flood (RUSTSEC-2024-0332): a header block that never
/// ends is refused once it passes the header list limit, not buffered until
/// memory runs out; other clients are still served.
#[test]
fn an_h2_continuation_flood_ends_the_connection() {
    use support::h2;
    let dir = site();
    let (_sc, addr) = serve(&dir.path().join("www"), &["--http2-cleartext"]);
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(support::DEADLINE)).unwrap();
    let mut bytes = h2::PREFACE.to_vec();
    // 10 MiB of headers in one block, against a 16 KiB limit.
    bytes.extend(h2::continuation_flood(10_000));
    let _ = std::io::Write::write_all(&mut c, &bytes);
    let (goaway, _) = h2::read_to_goaway(&mut c);
    assert!(
        goaway.is_some(),
        "no GOAWAY for a header block past the limit"
    );
    let mut other = H2::connect(addr);
    assert!(other.get(1, "/hello.txt"));
}
