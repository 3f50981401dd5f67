//! tcp-proxy's mutual TLS against independent TLS stacks: `openssl s_client`
//! (handshake, ALPN, refusals), HAProxy as mTLS client and as mTLS server,
//! and certificate rotation in the middle of traffic.

#[path = "tcp_proxy/peers.rs"]
mod peers;
#[path = "tcp_proxy/pki.rs"]
mod pki;
mod support;
#[path = "tcp_proxy/web.rs"]
mod web;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};

use peers::{closed, read_n, which, Proxy, Upstream};
use pki::{Leaf, Pki};
use support::peer::{require_peer, Peer};
use support::DEADLINE;

const WEB: &str = "spiffe://cluster.local/ns/shop/sa/web";
const API: &str = "spiffe://cluster.local/ns/shop/sa/api";
const TELLER: &str = "spiffe://cluster.local/ns/bank/sa/teller";
const SHOP_ANY: &str = "spiffe://cluster.local/ns/shop/sa/*";

/// The identities every test uses: the CA, a provider (`api`), an allowed
/// consumer (`web`) and a consumer from another namespace (`teller`).
struct Mesh {
    _dir: tempfile::TempDir,
    pki: Pki,
    api: Leaf,
    web: Leaf,
    teller: Leaf,
}

fn mesh() -> Option<Mesh> {
    if !require_peer("openssl") {
        return None;
    }
    let dir = support::tempdir();
    let pki = Pki::new(&dir.path().join("pki"), "mesh-ca");
    let api = pki.leaf("api", "api.shop", API);
    let web = pki.leaf("web", "web.shop", WEB);
    let teller = pki.leaf("teller", "teller.bank", TELLER);
    Some(Mesh {
        _dir: dir,
        pki,
        api,
        web,
        teller,
    })
}

/// A proxy terminating mTLS with `leaf` in front of `up`.
fn server_proxy(m: &Mesh, leaf: &Leaf, up: &Upstream, extra: &[&str]) -> Proxy {
    let mut args = vec![
        "--listen=127.0.0.1:0".to_string(),
        format!("--upstream={}", up.addr),
        format!("--tls-cert={}", leaf.cert()),
        format!("--tls-key={}", leaf.key()),
        format!("--tls-ca={}", m.pki.ca()),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Proxy::start(&args, 1)
}

/// A proxy originating mTLS as `web` to `upstreams`, which must present
/// `expect_id`.
fn client_proxy(m: &Mesh, upstreams: &str, expect_id: &str, extra: &[&str]) -> Proxy {
    let mut args = vec![
        "--listen=127.0.0.1:0".to_string(),
        format!("--upstream={upstreams}"),
        format!("--tls-cert={}", m.web.cert()),
        format!("--tls-key={}", m.web.key()),
        format!("--tls-ca={}", m.pki.ca()),
        "--tls-client".to_string(),
        format!("--tls-upstream-id={expect_id}"),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Proxy::start(&args, 1)
}

/// `openssl s_client` as a peer: its stdout comes line by line.
struct SClient {
    child: Peer,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    seen: String,
}

impl SClient {
    fn connect(addr: SocketAddr, args: &[&str]) -> SClient {
        let mut cmd = Command::new("openssl");
        cmd.arg("s_client")
            .arg("-connect")
            .arg(addr.to_string())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = Peer::spawn(&mut cmd).expect("openssl s_client");
        let stdin = child.0.stdin.take();
        let (tx, lines) = channel();
        for out in [
            Box::new(child.0.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.0.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        return;
                    }
                }
            });
        }
        SClient {
            child,
            stdin,
            lines,
            seen: String::new(),
        }
    }

    /// Waits for a line containing `needle`; false when the output ended first.
    fn saw(&mut self, needle: &str) -> bool {
        if self.seen.contains(needle) {
            return true;
        }
        let end = std::time::Instant::now() + DEADLINE;
        while let Ok(line) = self
            .lines
            .recv_timeout(end.saturating_duration_since(std::time::Instant::now()))
        {
            self.seen.push_str(&line);
            self.seen.push('\n');
            if line.contains(needle) {
                return true;
            }
        }
        false
    }

    fn send(&mut self, data: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(data.as_bytes()).unwrap();
        stdin.flush().unwrap();
    }

    /// Closes stdin and waits for the output to end (the connection closed).
    fn finish(mut self) -> String {
        self.stdin = None;
        while self
            .lines
            .recv_timeout(DEADLINE)
            .map(|l| {
                self.seen.push_str(&l);
                self.seen.push('\n');
            })
            .is_ok()
        {}
        let _ = self.child.0.wait();
        self.seen
    }
}

fn client_cert_args(m: &Mesh, leaf: &Leaf) -> Vec<String> {
    vec![
        "-cert".into(),
        leaf.cert().into(),
        "-key".into(),
        leaf.key().into(),
        "-CAfile".into(),
        m.pki.ca(),
        "-verify_return_error".into(),
    ]
}

fn s_client(addr: SocketAddr, args: &[String]) -> SClient {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    SClient::connect(addr, &args)
}

#[test]
fn strict_mtls_with_openssl_alpn_identity_and_refusals_by_reason() {
    let Some(m) = mesh() else { return };
    let up = Upstream::named("app");
    let p = server_proxy(
        &m,
        &m.api,
        &up,
        &["--tls-server=strict", &format!("--tls-allow-id={SHOP_ANY}")],
    );

    // An allowed client: verified chain both ways, and the bytes reach the
    // app in plaintext.
    let mut args = client_cert_args(&m, &m.web);
    args.extend(["-verify_hostname".into(), "api.shop".into()]);
    let mut c = s_client(p.addr(), &args);
    assert!(
        c.saw("app"),
        "the app's greeting did not come through TLS: {}",
        c.seen
    );
    c.send("ping\n");
    assert!(c.saw("ping"));
    let out = c.finish();
    assert!(out.contains("Verify return code: 0 (ok)"), "{out}");
    assert!(out.contains("No ALPN negotiated"), "{out}");
    p.wait_metric(
        "tcp_proxy_tls_handshakes_total",
        &["side=\"server\"", "result=\"ok\""],
        1.0,
    );

    // ALPN: h2 preferred, http/1.1 taken, anything else refused.
    for (offer, chosen) in [("h2,http/1.1", "h2"), ("http/1.1", "http/1.1")] {
        let mut args = client_cert_args(&m, &m.web);
        args.extend(["-alpn".into(), offer.into()]);
        let out = s_client(p.addr(), &args).finish();
        assert!(out.contains(&format!("ALPN protocol: {chosen}")), "{out}");
    }
    let mut args = client_cert_args(&m, &m.web);
    args.extend(["-alpn".into(), "smtp".into()]);
    let out = s_client(p.addr(), &args).finish();
    assert!(!out.contains("ALPN protocol:"), "{out}");
    p.wait_metric(
        "tcp_proxy_rejected_connections_total",
        &["reason=\"tls_no_common_alpn\""],
        1.0,
    );

    // A client of the same CA whose identity is not allowed. One with two
    // URI SANs, one of them allowed: an X.509 SVID has exactly one, so this
    // certificate has no SPIFFE identity. And a DNS SAN spelling an allowed
    // SPIFFE ID is no DNS name, so no identity either.
    let two_uris = m.pki.leaf(
        "two-uris",
        "two.bank",
        &format!("spiffe://cluster.local/ns/bank/sa/evil,URI:{WEB}"),
    );
    let dns_spiffe = m.pki.leaf(
        "dns-spiffe",
        "x.bank",
        &format!("spiffe://cluster.local/ns/bank/sa/x,DNS:{WEB}"),
    );
    for (n, leaf) in [&m.teller, &two_uris, &dns_spiffe].into_iter().enumerate() {
        let out = s_client(p.addr(), &client_cert_args(&m, leaf)).finish();
        assert!(
            !out.contains("\napp\n"),
            "a refused client reached the app: {out}"
        );
        p.wait_metric(
            "tcp_proxy_rejected_connections_total",
            &["reason=\"tls_identity\""],
            1.0 + n as f64,
        );
    }

    // No client certificate at all.
    let args = vec!["-CAfile".to_string(), m.pki.ca()];
    let out = s_client(p.addr(), &args).finish();
    assert!(!out.contains("\napp\n"), "{out}");
    p.wait_metric(
        "tcp_proxy_rejected_connections_total",
        &["reason=\"tls_no_client_cert\""],
        1.0,
    );

    // A certificate from another CA with an allowed identity.
    let other = Pki::new(&m.pki.dir.join("other"), "other-ca");
    let forged = other.leaf("forged", "web.shop", WEB);
    let out = s_client(p.addr(), &client_cert_args(&m, &forged)).finish();
    assert!(!out.contains("\napp\n"), "{out}");
    p.wait_metric(
        "tcp_proxy_rejected_connections_total",
        &["reason=\"tls_untrusted_cert\""],
        1.0,
    );

    // Plaintext on a strict port.
    let mut plain = p.connect();
    plain.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    assert!(closed(&mut plain));
    p.wait_metric(
        "tcp_proxy_rejected_connections_total",
        &["reason=\"tls_handshake\""],
        1.0,
    );
    assert_eq!(p.metric("tcp_proxy_upstream_connections_total", &[]), 1.0);
}

#[test]
fn permissive_takes_tls_and_plaintext_on_one_port() {
    let Some(m) = mesh() else { return };
    let up = Upstream::named("app");
    let p = server_proxy(&m, &m.api, &up, &["--tls-server=permissive"]);

    let mut plain = p.connect();
    assert_eq!(which(&mut plain), "app");
    plain.write_all(b"hi").unwrap();
    assert_eq!(read_n(&mut plain, 2), b"hi");

    let mut c = s_client(p.addr(), &client_cert_args(&m, &m.web));
    assert!(c.saw("app"), "{}", c.seen);
    c.finish();
    p.wait_metric(
        "tcp_proxy_tls_handshakes_total",
        &["result=\"plaintext\""],
        1.0,
    );
    p.wait_metric("tcp_proxy_tls_handshakes_total", &["result=\"ok\""], 1.0);
}

fn haproxy(dir: &std::path::Path, config: &str) -> Peer {
    let path = dir.join(format!("haproxy-{}.cfg", support::free_port()));
    std::fs::write(&path, config).unwrap();
    let check = support::run_cmd(Command::new("haproxy").arg("-c").arg("-f").arg(&path));
    assert!(
        check.status.success(),
        "haproxy -c: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    Peer::spawn(
        Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
    .expect("haproxy")
}

const HAPROXY_GLOBAL: &str = "global\n  maxconn 100\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n";

#[test]
fn haproxy_interoperates_as_mtls_client_and_as_mtls_server() {
    let Some(m) = mesh() else { return };
    if !require_peer("haproxy") {
        return;
    }
    let up = Upstream::named("app");

    // HAProxy dials our strict listener with its client certificate and
    // checks our certificate's chain and name.
    let p = server_proxy(
        &m,
        &m.api,
        &up,
        &["--tls-server=strict", &format!("--tls-allow-id={SHOP_ANY}")],
    );
    let front = support::free_addr();
    let _client = haproxy(
        &m.pki.dir,
        &format!(
            "{HAPROXY_GLOBAL}listen out\n  bind {front}\n  server sidecar {} ssl crt {} ca-file {} verify required verifyhost api.shop\n",
            p.addr(),
            m.web.pem(),
            m.pki.ca()
        ),
    );
    support::http::wait_listening(front);
    let mut c = peers::connect(front);
    assert_eq!(which(&mut c), "app");
    c.write_all(b"through haproxy").unwrap();
    assert_eq!(read_n(&mut c, 15), b"through haproxy");
    p.wait_metric(
        "tcp_proxy_tls_handshakes_total",
        &["side=\"server\"", "result=\"ok\""],
        1.0,
    );

    // HAProxy terminates mTLS in front of the app, and requires our
    // certificate; we check its identity.
    let back = support::free_addr();
    let _server = haproxy(
        &m.pki.dir,
        &format!(
            "{HAPROXY_GLOBAL}listen in\n  bind {back} ssl crt {} ca-file {} verify required\n  server app {}\n",
            m.api.pem(),
            m.pki.ca(),
            up.addr
        ),
    );
    support::http::wait_listening(back);
    let ours = client_proxy(&m, &back.to_string(), API, &[]);
    let mut c = ours.connect();
    assert_eq!(which(&mut c), "app");
    c.write_all(b"mtls out").unwrap();
    assert_eq!(read_n(&mut c, 8), b"mtls out");
    ours.wait_metric(
        "tcp_proxy_tls_handshakes_total",
        &["side=\"client\"", "result=\"ok\""],
        1.0,
    );

    // The same server, expected under another identity, is refused.
    let wary = client_proxy(
        &m,
        &back.to_string(),
        "spiffe://cluster.local/ns/shop/sa/payments",
        &[],
    );
    let mut c = wary.connect();
    assert!(closed(&mut c));
    wary.wait_metric(
        "tcp_proxy_tls_handshakes_total",
        &["side=\"client\"", "result=\"identity\""],
        1.0,
    );
}

#[test]
fn rotation_mid_traffic_keeps_connections_and_new_handshakes_see_the_new_certificate() {
    let Some(m) = mesh() else { return };
    let up = Upstream::named("app");
    let p = server_proxy(&m, &m.api, &up, &["--tls-server=strict"]);

    let mut before = s_client(p.addr(), &client_cert_args(&m, &m.web));
    assert!(before.saw("subject=CN = api.shop"), "{}", before.seen);
    assert!(before.saw("app"));
    before.send("one\n");
    assert!(before.saw("one"));

    // Rotation, as a Secret update lands: new files renamed into place.
    m.pki.leaf("api", "api-v2.shop", API);
    p.wait_metric("tcp_proxy_tls_reloads_total", &["result=\"ok\""], 1.0);

    let mut after = s_client(p.addr(), &client_cert_args(&m, &m.web));
    assert!(after.saw("subject=CN = api-v2.shop"), "{}", after.seen);
    assert!(after.saw("app"));

    // The connection made before the rotation still carries traffic.
    before.send("two\n");
    assert!(before.saw("two"), "{}", before.seen);

    // A broken file keeps the last good certificate.
    std::fs::write(&m.api.cert, "-----BEGIN CERTIFICATE-----\ntruncated\n").unwrap();
    p.wait_metric("tcp_proxy_tls_reloads_total", &["result=\"failed\""], 1.0);
    let mut again = s_client(p.addr(), &client_cert_args(&m, &m.web));
    assert!(again.saw("subject=CN = api-v2.shop"), "{}", again.seen);
    assert!(again.saw("app"));
    drop((before, after, again));
}

#[test]
fn bad_tls_files_at_start_exit_2_naming_the_flag() {
    let Some(m) = mesh() else { return };
    let run = |args: &[&str]| {
        let mut all = vec![
            "tcp-proxy",
            "--listen=127.0.0.1:0",
            "--upstream=127.0.0.1:1",
            "--admin-addr=off",
        ];
        all.extend_from_slice(args);
        let out = support::run(&all);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let cert = format!("--tls-cert={}", m.api.cert());
    let ca = format!("--tls-ca={}", m.pki.ca());

    let (code, err) = run(&[
        "--tls-server=strict",
        &cert,
        &format!("--tls-key={}", m.web.key()),
        &ca,
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("--tls-key") && err.contains("does not match"),
        "{err}"
    );

    let (code, err) = run(&[
        "--tls-server=strict",
        &cert,
        &format!("--tls-key={}", m.api.key()),
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--tls-ca"), "{err}");

    // --check loads the files too, and says the same.
    let out = support::run(&[
        "tcp-proxy",
        "--check",
        "--listen=127.0.0.1:0",
        "--upstream=127.0.0.1:1",
        "--tls-server=strict",
        &cert,
        &format!("--tls-key={}", m.web.key()),
        &ca,
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not match"));

    let (code, err) = run(&[
        "--tls-client",
        "--tls-cert=/nonexistent/tls.crt",
        &format!("--tls-key={}", m.api.key()),
        &ca,
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("--tls-cert /nonexistent/tls.crt: cannot read"),
        "{err}"
    );
}

/// The mesh hop: a consumer sidecar (plain HTTP in, --tls-client out) and a
/// provider sidecar (--tls-server strict) balancing per request over two
/// replicas; and curl as an mTLS client speaking h2 by ALPN.
#[test]
fn http_over_mutual_tls_between_two_sidecars_and_from_curl_over_h2() {
    let Some(m) = mesh() else { return };
    if !require_peer("nginx") || !require_peer("curl") {
        return;
    }
    let (r1, r2) = (
        web::Nginx::http1("replica-1"),
        web::Nginx::http1("replica-2"),
    );
    let provider = Proxy::start(
        &[
            "--listen=127.0.0.1:0",
            &format!("--upstream={},{}", r1.addr, r2.addr),
            &format!("--tls-cert={}", m.api.cert()),
            &format!("--tls-key={}", m.api.key()),
            &format!("--tls-ca={}", m.pki.ca()),
            "--tls-server=strict",
            &format!("--tls-allow-id={SHOP_ANY}"),
            "--lb=round-robin",
        ],
        1,
    );
    let consumer = client_proxy(&m, &provider.addr().to_string(), API, &[]);

    // Four requests on one keep-alive connection reach both replicas.
    let url = format!("http://{}/", consumer.addr());
    let out = web::curl(&[&url, &url, &url, &url]);
    assert!(
        out.contains("replica-1") && out.contains("replica-2"),
        "{out}"
    );
    provider.wait_metric(
        "tcp_proxy_tls_handshakes_total",
        &["side=\"server\"", "result=\"ok\""],
        1.0,
    );
    // Labelled with the route the requests took (the listener's own).
    consumer.wait_metric(
        "tcp_proxy_tls_handshakes_total",
        &[
            "side=\"client\"",
            "result=\"ok\"",
            &format!("route=\"{}\"", consumer.addr()),
        ],
        1.0,
    );

    // curl with a client certificate: h2 by ALPN, carried on as h2 to an
    // h2c replica.
    let h2c = web::Nginx::h2c("h2c-replica");
    let h2_provider = Proxy::start(
        &[
            "--listen=127.0.0.1:0",
            &format!("--upstream={}", h2c.addr),
            &format!("--tls-cert={}", m.api.cert()),
            &format!("--tls-key={}", m.api.key()),
            &format!("--tls-ca={}", m.pki.ca()),
            "--tls-server=strict",
        ],
        1,
    );
    let port = h2_provider.addr().port();
    let out = web::curl(&[
        "--http2",
        "--cacert",
        &m.pki.ca(),
        "--cert",
        m.web.cert(),
        "--key",
        m.web.key(),
        "--resolve",
        &format!("api.shop:{port}:127.0.0.1"),
        "-w",
        " %{http_version}",
        &format!("https://api.shop:{port}/"),
    ]);
    assert_eq!(out, "h2c-replica\n 2");

    // Without a client certificate curl gets nothing from the app.
    let refused = support::run_cmd(Command::new("curl").args([
        "-sS",
        "--max-time",
        "30",
        "--cacert",
        &m.pki.ca(),
        "--resolve",
        &format!("api.shop:{port}:127.0.0.1"),
        &format!("https://api.shop:{port}/"),
    ]));
    assert!(!refused.status.success());
    h2_provider.wait_metric(
        "tcp_proxy_rejected_connections_total",
        &["reason=\"tls_no_client_cert\""],
        1.0,
    );
}

/// A failed handshake with one upstream endpoint is that endpoint's
/// failure, as a refused connect is: the connection goes on to another
/// endpoint, the failure is counted and ejects the endpoint.
#[test]
fn a_failed_upstream_handshake_tries_another_endpoint_and_counts_towards_ejection() {
    let Some(m) = mesh() else { return };
    let app = Upstream::named("app");
    let good = server_proxy(&m, &m.api, &app, &["--tls-server=strict"]);
    // Another mesh member: its certificate chains to the CA but does not
    // carry the identity the client expects.
    let impostor = Upstream::named("impostor");
    let bad = server_proxy(&m, &m.teller, &impostor, &["--tls-server=strict"]);
    let client = client_proxy(
        &m,
        &format!("{},{}", bad.addr(), good.addr()),
        API,
        &["--lb=round-robin", "--outlier-failures=2"],
    );
    for _ in 0..4 {
        let mut c = client.connect();
        assert_eq!(which(&mut c), "app");
    }
    let bad_up = format!("upstream=\"{}\"", bad.addr());
    assert!(
        client.metric(
            "tcp_proxy_connect_failures_total",
            &[&bad_up, "reason=\"tls\""]
        ) >= 2.0
    );
    client.wait_metric("tcp_proxy_ejections_total", &[&bad_up], 1.0);
    client.wait_metric(
        "tcp_proxy_tls_handshakes_total",
        &["side=\"client\"", "result=\"identity\""],
        2.0,
    );
}

/// An mTLS upstream that picks http/1.1 by ALPN (HAProxy in front of an
/// HTTP/1.1 app) gets the HTTP/2 requests of an h2c client as HTTP/1.1.
#[test]
fn http2_requests_go_as_http11_to_an_upstream_choosing_http11_by_alpn() {
    let Some(m) = mesh() else { return };
    if !require_peer("haproxy") || !require_peer("nginx") || !require_peer("curl") {
        return;
    }
    let app = web::Nginx::http1("h1-app");
    let back = support::free_addr();
    let _server = haproxy(
        &m.pki.dir,
        &format!(
            "global\n  maxconn 100\ndefaults\n  mode http\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n\
             frontend in\n  bind {back} ssl crt {} ca-file {} verify required alpn http/1.1\n  default_backend app\n\
             backend app\n  server app {}\n",
            m.api.pem(),
            m.pki.ca(),
            app.addr
        ),
    );
    support::http::wait_listening(back);
    let consumer = client_proxy(&m, &back.to_string(), API, &[]);
    let url = format!("http://{}/", consumer.addr());
    let fmt = "%{http_code} %{http_version}\\n";
    // Twice: over the connection ALPN chose, then from the HTTP/1.1 pool.
    // (One curl with two URLs fails on its own with prior knowledge, even
    // against nginx directly.)
    for _ in 0..2 {
        let out = web::curl(&["--http2-prior-knowledge", "-w", fmt, &url]);
        assert_eq!(out, "h1-app\n200 2\n");
    }
}

/// A sidecar's TCP relay to its peer says so by ALPN (`sidecar-tcp`): the
/// peer relays it as it is, with no protocol detection, so a server-first
/// app answers at once and nothing in the bytes is taken for HTTP.
#[test]
fn a_peer_sidecars_tcp_relay_is_relayed_not_sniffed() {
    let Some(m) = mesh() else { return };
    let app = Upstream::named("app");
    let provider = server_proxy(&m, &m.api, &app, &["--tls-server=strict"]);
    let consumer = client_proxy(&m, &provider.addr().to_string(), API, &["--protocol=tcp"]);
    let mut c = consumer.connect();
    assert_eq!(which(&mut c), "app");
    let bytes = b"GET /public/../admin HTTP/1.1\r\n\r\n";
    c.write_all(bytes).unwrap();
    assert_eq!(read_n(&mut c, bytes.len()), bytes);
    assert_eq!(
        provider.metric(
            "tcp_proxy_detected_connections_total",
            &["protocol=\"tcp\"", "reason=\"alpn\""]
        ),
        1.0
    );
}

/// Behind mutual TLS (a provider sidecar's side) every request head is
/// checked too: a smuggling spelling on a later request of the connection
/// is answered 400 after the request before it, and never reaches the app.
/// A client offering no ALPN is told apart by its decrypted bytes, and gets
/// the same HTTP handling.
#[test]
fn smuggling_spellings_are_refused_behind_mutual_tls() {
    let Some(m) = mesh() else { return };
    let app = support::http::Receiver::start();
    let p = Proxy::start(
        &[
            "--listen=127.0.0.1:0",
            &format!("--upstream={}", app.addr),
            &format!("--tls-cert={}", m.api.cert()),
            &format!("--tls-key={}", m.api.key()),
            &format!("--tls-ca={}", m.pki.ca()),
            "--tls-server=strict",
            &format!("--tls-allow-id={SHOP_ANY}"),
        ],
        1,
    );
    for alpn in [Some("http/1.1"), None] {
        let mut args = client_cert_args(&m, &m.web);
        if let Some(alpn) = alpn {
            args.extend(["-alpn".into(), alpn.into()]);
        }
        let mut c = s_client(p.addr(), &args);
        c.send(
            "GET /first HTTP/1.1\r\nHost: a\r\n\r\n\
             POST /cl-te HTTP/1.1\r\nHost: a\r\nContent-Length: 38\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n\
             GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
        );
        assert!(c.saw("request smuggling refused"), "{alpn:?}: {}", c.seen);
        let out = c.finish();
        assert!(out.contains("HTTP/1.1 200"), "{out}");
        assert!(out.contains("HTTP/1.1 400"), "{out}");
        let got = app.drain();
        let paths: Vec<&str> = got.iter().map(|r| r.path.as_str()).collect();
        assert_eq!(paths, ["/first"], "{alpn:?}");
        // The app is told the verified client identity, as Linkerd and Istio tell it.
        assert_eq!(got[0].header("l5d-client-id"), Some(WEB));
        assert_eq!(
            got[0].header("x-forwarded-client-cert"),
            Some(format!("URI={WEB}").as_str())
        );
    }
    p.wait_metric(
        "tcp_proxy_detected_connections_total",
        &["protocol=\"http\"", "reason=\"detected\""],
        1.0,
    );
}
