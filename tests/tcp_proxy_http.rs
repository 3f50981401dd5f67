//! tcp-proxy as an HTTP proxy: protocol detection, per-request routing and
//! balancing, retries and their budget, local answers, header rules and
//! smuggling refusal, against real peers (nginx upstreams; curl, h2load and
//! raw sockets as clients).

#[path = "tcp_proxy/peers.rs"]
mod peers;
mod support;
#[path = "tcp_proxy/web.rs"]
mod web;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::process::Command;

use peers::{connect, read_n, read_to_end, recv, Proxy, Upstream};
use support::http::{self, Receiver};
use support::require_peer;
use web::{curl, Nginx};

fn proxy(upstreams: &[SocketAddr], extra: &[&str]) -> Proxy {
    Proxy::start_command(&mut proxy_command(upstreams, extra), 1)
}

/// `sidecar tcp-proxy` on one loopback listener in front of `upstreams`.
fn proxy_command(upstreams: &[SocketAddr], extra: &[&str]) -> Command {
    let ups: Vec<String> = upstreams.iter().map(|u| u.to_string()).collect();
    let mut args = vec![
        "--listen=127.0.0.1:0".to_string(),
        format!("--upstream={}", ups.join(",")),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    support::Sidecar::command("tcp-proxy", &args)
}

fn url(p: &Proxy, path: &str) -> String {
    format!("http://{}{path}", p.addr())
}

fn count(text: &str, name: &str) -> usize {
    text.lines().filter(|l| *l == name).count()
}

#[test]
fn http1_keep_alive_connection_is_balanced_per_request() {
    if !require_peer("curl") || !require_peer("nginx") {
        return;
    }
    let (a, b) = (Nginx::http1("A"), Nginx::http1("B"));
    let p = proxy(&[a.addr, b.addr], &["--lb=round-robin"]);
    // One curl, ten URLs: curl reuses its one keep-alive connection.
    let target = url(&p, "/");
    let mut args = vec!["-w", "connects=%{num_connects}\\n"];
    args.extend(std::iter::repeat_n(target.as_str(), 10));
    let out = curl(&args);
    assert_eq!(count(&out, "connects=1"), 1, "{out}");
    assert_eq!(count(&out, "connects=0"), 9, "{out}");
    assert_eq!((count(&out, "A"), count(&out, "B")), (5, 5), "{out}");
    assert_eq!(
        p.metric("tcp_proxy_connections_total", &[]),
        1.0,
        "one client connection"
    );
    let route = format!("route=\"{}\"", p.addr());
    for up in [a.addr, b.addr] {
        let labels = [
            route.as_str(),
            &format!("upstream=\"{up}\""),
            "class=\"2xx\"",
        ];
        assert_eq!(p.metric("tcp_proxy_http_requests_total", &labels), 5.0);
        // The latency histogram per endpoint too.
        let upstream = format!("upstream=\"{up}\"");
        assert_eq!(
            p.metric(
                "tcp_proxy_http_response_seconds_count",
                &[route.as_str(), &upstream]
            ),
            5.0
        );
    }
}

#[test]
fn h2c_prior_knowledge_and_h2c_upgrade_are_served() {
    if !require_peer("curl") || !require_peer("nginx") {
        return;
    }
    let h2 = Nginx::h2c("H2");
    let p = proxy(&[h2.addr], &[]);
    let out = curl(&[
        "--http2-prior-knowledge",
        "-w",
        "%{http_version}\\n",
        &url(&p, "/"),
    ]);
    assert_eq!(out, "H2\n2\n");

    // `curl --http2` on plain HTTP asks to upgrade to h2c: served as HTTP/1.1.
    let h1 = Nginx::http1("H1");
    let p = proxy(&[h1.addr], &[]);
    let out = curl(&["--http2", "-w", "%{http_version}\\n", &url(&p, "/")]);
    assert_eq!(out, "H1\n1.1\n");
}

#[test]
fn h2load_multiplexed_requests_spread_over_endpoints() {
    if !require_peer("h2load") || !require_peer("nginx") {
        return;
    }
    let (a, b) = (Nginx::h2c("A"), Nginx::h2c("B"));
    // Default balancer for HTTP: peak-EWMA with two random choices.
    let p = proxy(&[a.addr, b.addr], &[]);
    let out = support::run_cmd(Command::new("h2load").args([
        "-n",
        "400",
        "-c",
        "1",
        "-m",
        "20",
        &url(&p, "/"),
    ]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("400 succeeded"), "{text}");
    assert!(text.contains("400 2xx"), "{text}");
    let route = format!("route=\"{}\"", p.addr());
    let per = |up: SocketAddr| {
        p.metric(
            "tcp_proxy_http_requests_total",
            &[&route, &format!("upstream=\"{up}\"")],
        )
    };
    let (na, nb) = (per(a.addr), per(b.addr));
    assert_eq!(na + nb, 400.0);
    assert!(
        na > 0.0 && nb > 0.0,
        "one connection, spread per request: {na} / {nb}"
    );
}

/// 200 requests from h2load over `conns` connections of 10 streams each,
/// every one answered 2xx.
fn h2load_200(url: &str, conns: usize) {
    let conns = conns.to_string();
    let out =
        support::run_cmd(Command::new("h2load").args(["-n", "200", "-c", &conns, "-m", "10", url]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("200 2xx"), "{text}");
}

/// The runtime's worker threads in a process.
fn runtime_workers(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter(|t| {
            let comm = std::fs::read_to_string(t.as_ref().unwrap().path().join("comm")).unwrap();
            comm.starts_with("tokio-rt")
        })
        .count()
}

/// By default the proxy runs on one thread, as Linkerd's proxy does: the
/// single-threaded runtime, no worker threads; `--concurrency 2` runs two.
/// Either way HTTP/1.1 keep-alive, h2c and multiplexed load are served.
#[test]
fn one_thread_by_default_and_more_with_concurrency() {
    if !require_peer("curl") || !require_peer("h2load") || !require_peer("nginx") {
        return;
    }
    let (h1, h2) = (Nginx::http1("H1"), Nginx::h2c("H2"));
    let start = |up: SocketAddr, extra: &[&str]| {
        let mut cmd = proxy_command(&[up], extra);
        Proxy::start_command(cmd.env_remove("TOKIO_WORKER_THREADS"), 1)
    };
    for extra in [&[][..], &["--concurrency", "2"][..]] {
        let (p1, p2) = (start(h1.addr, extra), start(h2.addr, extra));
        let target = url(&p1, "/");
        let out = curl(&[&target, &target, &target]);
        assert_eq!(out, "H1\nH1\nH1\n");
        let out = curl(&["--http2-prior-knowledge", &url(&p2, "/")]);
        assert_eq!(out, "H2\n");
        h2load_200(&url(&p2, "/"), 2);
        for p in [&p1, &p2] {
            let workers = runtime_workers(p.sidecar.pid());
            if extra.is_empty() {
                assert_eq!(workers, 0, "a runtime worker thread runs by default");
            } else {
                assert!(workers >= 2, "--concurrency 2: {workers} worker threads");
            }
        }
    }
}

#[test]
fn routes_by_host_and_longest_path_prefix() {
    if !require_peer("curl") || !require_peer("nginx") {
        return;
    }
    let (api, v1, other, fallback) = (
        Nginx::http1("api"),
        Nginx::http1("v1"),
        Nginx::http1("other"),
        Nginx::http1("fallback"),
    );
    let p = proxy(
        &[fallback.addr],
        &[
            &format!("--http-route=/v1/={}", v1.addr),
            &format!("--http-route=api.shop/v1/={}", api.addr),
            &format!("--http-route=api.shop/v1/other/={}", other.addr),
            &format!("--http-route=/v1/orders/={}", v1.addr),
        ],
    );
    let get = |host: &str, path: &str| curl(&["-H", &format!("Host: {host}"), &url(&p, path)]);
    // The host's routes first (Envoy's virtual host), though the
    // host-less `/v1/orders/` is a longer prefix.
    assert_eq!(get("api.shop:8080", "/v1/orders/7"), "api\n");
    assert_eq!(get("elsewhere", "/v1/orders/7"), "v1\n");
    assert_eq!(get("API.shop", "/v1/other/x"), "other\n");
    assert_eq!(get("elsewhere", "/v1/x"), "v1\n");
    assert_eq!(get("api.shop", "/v2/x"), "fallback\n");
    let route = "route=\"api.shop/v1/\"";
    assert_eq!(p.metric("tcp_proxy_http_requests_total", &[route]), 1.0);
}

#[test]
fn headers_forwarded_request_id_and_hop_by_hop() {
    let up = Receiver::start();
    let p = proxy(&[up.addr], &[]);
    let resp = http::request(
        p.addr(),
        "GET",
        "/h",
        &[
            ("Connection", "x-private, close"),
            ("x-private", "secret"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("x-forwarded-for", "203.0.113.9"),
        ],
        b"",
    );
    assert_eq!(resp.status, 200);
    let got = up.next();
    assert_eq!(got.header("x-private"), None);
    assert_eq!(got.header("keep-alive"), None);
    assert_eq!(got.header("te"), Some("trailers"));
    assert_eq!(
        got.header("x-forwarded-for"),
        Some("203.0.113.9, 127.0.0.1")
    );
    assert_eq!(got.header("x-forwarded-proto"), Some("http"));
    let id = got.header("x-request-id").expect("a request id is added");
    assert_eq!(id.len(), 32);

    http::request(p.addr(), "GET", "/h", &[("x-request-id", "mine-1")], b"");
    assert_eq!(up.next().header("x-request-id"), Some("mine-1"));
}

/// The Host the upstream sees is the authority the route was chosen by;
/// two Hosts are refused; Connection cannot strip Host or the request id;
/// identity headers a client sends are dropped.
#[test]
fn host_request_id_and_identity_headers_cannot_be_played_with() {
    let (secret, other) = (Receiver::start(), Receiver::start());
    let route = format!("secret.local/={}", secret.addr);
    let p = proxy(&[other.addr], &["--http-route", &route]);
    let answer = raw(
        &p,
        b"GET http://secret.local/x HTTP/1.1\r\nHost: other\r\nConnection: close\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let got = secret.drain();
    assert_eq!(got[0].header("host"), Some("secret.local"));
    assert!(other.drain().is_empty());

    let answer = raw(
        &p,
        b"GET /x HTTP/1.1\r\nHost: other\r\nHost: secret.local\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("duplicate Host"), "{answer}");
    assert!(secret.drain().is_empty() && other.drain().is_empty());
    // RFC 9112 §3.2: HTTP/1.1 needs one Host, and a valid one; userinfo in
    // the target is refused too (RFC 9110 §4.2.4).
    for (head, why) in [
        ("GET /x HTTP/1.1\r\n", "missing Host"),
        (
            "GET /x HTTP/1.1\r\nHost: secret.local/x\r\n",
            "invalid Host",
        ),
        ("GET /x HTTP/1.1\r\nHost: a b\r\n", "invalid Host"),
        (
            "GET http://other@secret.local/x HTTP/1.1\r\nHost: secret.local\r\n",
            "userinfo",
        ),
    ] {
        let answer = raw(&p, format!("{head}Connection: close\r\n\r\n").as_bytes());
        assert!(answer.starts_with("HTTP/1.1 400"), "{head}: {answer}");
        assert!(answer.contains(why), "{head}: {answer}");
    }
    assert!(secret.drain().is_empty() && other.drain().is_empty());

    raw(
        &p,
        b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close, host, x-request-id\r\nx-request-id: abc\r\n\
          l5d-client-id: admin.shop\r\nx-forwarded-client-cert: URI=spiffe://evil\r\n\r\n",
    );
    let got = other.drain();
    assert_eq!(got[0].header("host"), Some("a"));
    assert_eq!(got[0].header("x-request-id"), Some("abc"));
    assert_eq!(got[0].header("l5d-client-id"), None);
    assert_eq!(got[0].header("x-forwarded-client-cert"), None);
}

/// A route cannot be bypassed by another spelling of its path: the path
/// is made canonical (RFC 3986, Envoy's `normalize_path`) before it is
/// routed, and the upstream gets the path the route was chosen by.
#[test]
fn paths_are_made_canonical_before_routing() {
    let (admin, public) = (Receiver::start(), Receiver::start());
    let route = format!("/admin/={}", admin.addr);
    let p = proxy(&[public.addr], &["--http-route", &route]);
    for spelling in [
        "/public/../admin/x",
        "/public/%2e%2E/admin/x",
        "/%61dmin/x",
        "/public/..\\admin/x",
        "//admin/x",
        "/.//admin//x",
    ] {
        let resp = http::request(p.addr(), "GET", spelling, &[], b"");
        assert_eq!(resp.status, 200, "{spelling}");
        assert_eq!(admin.next().path, "/admin/x", "{spelling}");
        assert!(public.drain().is_empty(), "{spelling}");
    }
    let resp = http::request(p.addr(), "GET", "/admin/./y?q=/../z", &[], b"");
    assert_eq!(resp.status, 200);
    assert_eq!(admin.next().path, "/admin/y?q=/../z");

    let resp = http::request(p.addr(), "GET", "/admin/%zz", &[], b"");
    assert_eq!(resp.status, 400);
    assert!(resp.text().contains("percent-escape"), "{}", resp.text());
    assert!(admin.drain().is_empty() && public.drain().is_empty());

    // Escaped slashes are kept by default (Envoy's and Istio's default)
    // and decoded when asked; `none` forwards the path as it came.
    let decoding = proxy(
        &[public.addr],
        &[
            "--http-route",
            &route,
            "--http-path-normalization=DECODE_AND_MERGE_SLASHES",
        ],
    );
    http::request(
        decoding.addr(),
        "GET",
        "/public%2F..%2F%2Fadmin//x",
        &[],
        b"",
    );
    assert_eq!(admin.next().path, "/admin/x");
    let raw_paths = proxy(
        &[public.addr],
        &["--http-route", &route, "--http-path-normalization=none"],
    );
    http::request(raw_paths.addr(), "GET", "/public/../admin/x", &[], b"");
    assert_eq!(public.next().path, "/public/../admin/x");
    assert!(admin.drain().is_empty());
}

/// An upstream response no proxy may pass on gets 502, counted as the
/// endpoint's failure and as a local answer, not relayed and counted as a
/// success (Envoy answers 502 too): framing given two ways (Content-Length
/// and Transfer-Encoding), a 101 to a request that asked for no upgrade, a
/// head over 64 KiB. A 204 that claims a length is passed on without it.
#[test]
fn bad_upstream_responses_get_502() {
    let up = Upstream::start(|mut s| {
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && s.read(&mut b).unwrap_or(0) == 1 {
            head.push(b[0]);
        }
        let head = String::from_utf8_lossy(&head);
        let answer = if head.starts_with("GET /two-framings") {
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n\
              0\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n"
                .to_vec()
        } else if head.starts_with("GET /switch") {
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n"
                .to_vec()
        } else if head.starts_with("GET /huge") {
            let filler = format!("x-filler: {}\r\n", "a".repeat(1000)).repeat(100);
            format!("HTTP/1.1 200 OK\r\n{filler}Content-Length: 0\r\n\r\n").into_bytes()
        } else {
            b"HTTP/1.1 204 No Content\r\nContent-Length: 7\r\n\r\n".to_vec()
        };
        let _ = s.write_all(&answer);
    });
    let p = proxy(&[up.addr], &[]);
    for (path, what) in [
        ("/two-framings", "both Content-Length and Transfer-Encoding"),
        (
            "/switch",
            "101 Switching Protocols to a request that asked for no upgrade",
        ),
        (
            "/huge",
            "a response head that does not parse, or over 64 KiB",
        ),
    ] {
        let resp = http::get(p.addr(), path);
        assert_eq!(resp.status, 502, "{path}");
        assert_eq!(
            resp.text(),
            format!("tcp-proxy: bad upstream response: {what}\n")
        );
    }
    let local = ["cause=\"bad_response\"", "status=\"502\""];
    assert_eq!(
        p.metric("tcp_proxy_http_local_responses_total", &local),
        3.0
    );
    assert_eq!(
        p.metric("tcp_proxy_http_requests_total", &["class=\"2xx\""]),
        0.0
    );

    let resp = http::get(p.addr(), "/empty");
    assert_eq!((resp.status, resp.header("content-length")), (204, None));
}

/// A response that keeps streaming (server-sent events, a gRPC server
/// stream) keeps its connection from being idle: only one whose body has
/// not moved on for --idle-timeout is. The app sends a chunk every 300 ms
/// for 3 s, well past twice the 1 s idle timeout.
#[test]
fn a_streaming_response_outlives_the_idle_timeout() {
    if !require_peer("curl") {
        return;
    }
    let up = Upstream::start(|mut s| {
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && s.read(&mut b).unwrap_or(0) == 1 {
            head.push(b[0]);
        }
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
        for i in 0..10 {
            std::thread::sleep(std::time::Duration::from_millis(300));
            let line = format!("event {i}\n");
            let _ = s.write_all(format!("{:x}\r\n{line}\r\n", line.len()).as_bytes());
        }
        let _ = s.write_all(b"0\r\n\r\n");
    });
    let p = proxy(&[up.addr], &["--idle-timeout=1s"]);
    for version in ["--http1.1", "--http2-prior-knowledge"] {
        let out = curl(&[version, &url(&p, "/events")]);
        assert_eq!(out.lines().count(), 10, "{version}: {out}");
        assert!(out.ends_with("event 9\n"), "{version}: {out}");
    }
}

/// --max-connection-duration holds for HTTP connections too: a busy
/// keep-alive connection is closed after its lifetime (its request in
/// flight answered first), as Envoy's max_connection_duration drains one.
#[test]
fn http_connections_end_at_max_connection_duration() {
    let up = Receiver::start();
    let p = proxy(&[up.addr], &["--max-connection-duration=1s"]);
    let mut c = p.connect();
    c.write_all(b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    let mut rest = Vec::new();
    c.read_to_end(&mut rest)
        .expect("closed by the proxy before the read timeout");
    let text = String::from_utf8_lossy(&rest);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    p.wait_metric("tcp_proxy_closes_total", &["reason=\"max_duration\""], 1.0);
}

/// `Expect: 100-continue` is answered by the proxy, to HTTP/1.1 and
/// HTTP/2 clients, and not passed on: an app answering it early (417, 403)
/// without reading the body would take the body for its next request.
#[test]
fn expect_100_continue_is_answered_here_and_not_passed_on() {
    if !require_peer("curl") {
        return;
    }
    let up = Receiver::start();
    let p = proxy(&[up.addr], &[]);
    let mut c = p.connect();
    c.write_all(
        b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
    )
    .unwrap();
    let continued = read_n(&mut c, 25);
    assert_eq!(continued, b"HTTP/1.1 100 Continue\r\n\r\n");
    c.write_all(b"hello").unwrap();
    let got = up.next();
    assert_eq!(
        (got.body.as_slice(), got.header("expect")),
        (&b"hello"[..], None)
    );

    // HTTP/2: the 100 is sent at once (curl -v shows it).
    let out = support::run_cmd(Command::new("curl").args([
        "-sS",
        "-v",
        "--http2-prior-knowledge",
        "-H",
        "Expect: 100-continue",
        "--data-binary",
        "hello",
        &url(&p, "/up2"),
    ]));
    let verbose = String::from_utf8_lossy(&out.stderr);
    assert!(verbose.contains("< HTTP/2 100"), "{verbose}");
    // (The endpoint was first asked whether it speaks HTTP/2: a `PRI`.)
    let got = up.drain();
    let got = got
        .iter()
        .find(|r| r.path == "/up2")
        .expect("/up2 reached the app");
    assert_eq!(
        (got.body.as_slice(), got.header("expect")),
        (&b"hello"[..], None)
    );
}

/// --max-connections-per-upstream holds on the HTTP path: with every
/// connection the endpoint is allowed busy, a request gets 503
/// `upstream_full` at once instead of another connection, and the endpoint
/// is not charged for it.
#[test]
fn http_requests_keep_to_max_connections_per_upstream() {
    let (up, accepted) = Upstream::manual();
    let p = proxy(&[up.addr], &["--max-connections-per-upstream=1"]);
    let mut first = connect(p.addr());
    first
        .write_all(b"GET /first HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    let mut held = recv(&accepted);
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && held.read(&mut b).unwrap_or(0) == 1 {
        head.push(b[0]);
    }
    let second = http::get(p.addr(), "/second");
    assert_eq!(second.status, 503, "{}", second.text());
    assert!(
        second.text().contains("--max-connections-per-upstream"),
        "{}",
        second.text()
    );
    let local = ["cause=\"upstream_full\"", "status=\"503\""];
    assert_eq!(
        p.metric("tcp_proxy_http_local_responses_total", &local),
        1.0
    );
    assert_eq!(p.metric("tcp_proxy_ejections_total", &[]), 0.0);

    // The held request is answered on the one connection.
    held.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        .unwrap();
    let mut answer = [0u8; 12];
    first.read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"HTTP/1.1 200");
}

/// Sends raw bytes on a fresh connection and returns everything answered.
fn raw(p: &Proxy, bytes: &[u8]) -> String {
    let mut s = connect(p.addr());
    s.write_all(bytes).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn request_smuggling_spellings_are_refused_before_the_upstream() {
    let up = Receiver::start();
    let p = proxy(&[up.addr], &[]);
    let cases: [&[u8]; 5] = [
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\nabcd",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Folded: a\r\n b\r\n\r\n",
    ];
    for case in cases {
        let answer = raw(&p, case);
        assert!(
            answer.starts_with("HTTP/1.1 400"),
            "{}\n→ {answer}",
            String::from_utf8_lossy(case)
        );
    }
    assert!(up.drain().is_empty(), "nothing reached the upstream");
    // A clean request on the same proxy does.
    assert_eq!(
        raw(
            &p,
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        )[..12]
            .to_string(),
        "HTTP/1.1 200"
    );
    assert_eq!(up.drain().len(), 1);
    assert_eq!(
        p.metric(
            "tcp_proxy_http_local_responses_total",
            &["cause=\"smuggling\""]
        ),
        5.0
    );
    // A head longer than detection reads (a padding header of 9,000 bytes)
    // is checked all the same.
    let padded = [
        &b"POST / HTTP/1.1\r\nHost: a\r\nX-Pad: "[..],
        &[b'p'; 9000],
        b"\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ]
    .concat();
    assert!(raw(&p, &padded).starts_with("HTTP/1.1 400"));
    assert!(up.drain().is_empty());
}

/// Every request of a kept-alive connection is checked on its raw bytes,
/// not only the first: the requests before a smuggling spelling are
/// answered, the spelling gets the 400 and the connection closes, and the
/// upstream never sees it nor what it would have smuggled.
#[test]
fn smuggling_spellings_on_a_later_request_are_refused_before_the_upstream() {
    let up = Receiver::start();
    let p = proxy(&[up.addr], &[]);
    let first = &b"GET /first HTTP/1.1\r\nHost: a\r\n\r\n"[..];
    let smuggled = &b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"[..];
    for spelling in [
        &b"POST /cl-te HTTP/1.1\r\nHost: a\r\nContent-Length: 38\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"[..],
        b"POST /te-cl HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 38\r\n\r\n0\r\n\r\n",
        b"POST /dup HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\nabcd",
        b"GET /fold HTTP/1.1\r\nHost: a\r\nX-F: a\r\n b\r\n\r\n",
    ] {
        // After a body, too: the guard follows both framings to the next head.
        let chunked = &b"POST /chunked HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"[..];
        let answer = raw(&p, &[first, chunked, spelling, smuggled].concat());
        let statuses: Vec<&str> = answer
            .match_indices("HTTP/1.1 ")
            .map(|(i, _)| &answer[i + 9..i + 12])
            .collect();
        assert_eq!(statuses, ["200", "200", "400"], "{answer}");
        assert!(answer.contains("request smuggling refused"), "{answer}");
        let got = up.drain();
        let paths: Vec<&str> = got.iter().map(|r| r.path.as_str()).collect();
        assert_eq!(paths, ["/first", "/chunked"]);
        assert_eq!(got[1].body, b"abc");
    }
    assert_eq!(
        p.metric(
            "tcp_proxy_http_local_responses_total",
            &["cause=\"smuggling\""]
        ),
        4.0
    );
    // An upgrade the upstream declines (200, not 101) opens no tunnel, and
    // the connection closes after its answer: what follows never reaches the
    // upstream (the guard would check it; see head_guard's tests).
    let upgrade =
        &b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"[..];
    let dup =
        &b"POST /dup HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\nabcd"[..];
    let answer = raw(&p, &[upgrade, dup, smuggled].concat());
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let paths: Vec<String> = up.drain().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, ["/ws"]);
}

/// A request line longer than protocol detection reads (a padded URL) is
/// still HTTP: routed, rate-limited and checked like any other.
#[test]
fn a_padded_request_line_is_still_handled_as_http() {
    let (api, other) = (Receiver::start(), Receiver::start());
    let route = format!("/api/={}", api.addr);
    let p = proxy(&[other.addr], &["--http-route", &route]);
    let long = format!("/api/{}", "a".repeat(9000));
    let answer = raw(
        &p,
        format!("GET {long} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let got = api.drain();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].path, long);
    assert!(got[0].header("x-request-id").is_some());
    assert!(other.drain().is_empty());
}

#[test]
fn local_answers_name_their_cause_and_are_counted() {
    if !require_peer("curl") {
        return;
    }
    let fmt = ["-w", "\\n%{http_code}"];
    // 429: over the route's rate, with Retry-After.
    let up = Receiver::start();
    let p = proxy(&[up.addr], &["--http-rate-limit=1/m"]);
    assert_eq!(curl(&[fmt[0], fmt[1], &url(&p, "/")]), "\n200");
    let out = curl(&["-i", &url(&p, "/")]);
    assert!(out.starts_with("HTTP/1.1 429"), "{out}");
    assert!(out.to_lowercase().contains("retry-after: 60"), "{out}");
    assert!(out.contains("rate limit"), "{out}");

    // 502: nothing listens at the endpoint.
    let p = proxy(&[support::free_addr()], &[]);
    let out = curl(&[fmt[0], fmt[1], &url(&p, "/")]);
    assert_eq!(
        out,
        "tcp-proxy: cannot connect to an upstream endpoint\n\n502"
    );

    // 503: the route has no endpoint.
    let up = Receiver::start();
    let p = proxy(&[up.addr], &["--http-route=/none/=no-such-host.invalid:80"]);
    let out = curl(&[fmt[0], fmt[1], &url(&p, "/none/x")]);
    assert_eq!(
        out,
        "tcp-proxy: no endpoint available for this route\n\n503"
    );

    // 503: every endpoint fails its health check (no panic mode for requests).
    let dead = support::free_addr();
    let p = proxy(
        &[dead],
        &[
            "--health-check-interval=100ms",
            "--health-check-unhealthy-threshold=1",
        ],
    );
    p.wait_metric("tcp_proxy_endpoints", &["state=\"unhealthy\""], 1.0);
    let out = curl(&[fmt[0], fmt[1], &url(&p, "/")]);
    assert_eq!(
        out,
        "tcp-proxy: no healthy endpoint for this route (health checks, outlier ejection)\n\n503"
    );
    assert_eq!(
        p.metric(
            "tcp_proxy_http_local_responses_total",
            &["cause=\"no_healthy_endpoints\""]
        ),
        1.0
    );

    // 504 and 503: an upstream that accepts and never answers.
    let (silent, accepted) = Upstream::manual();
    let p = proxy(
        &[silent.addr],
        &["--http-request-timeout=300ms", "--max-pending-requests=1"],
    );
    let target = url(&p, "/");
    let first = std::thread::spawn(move || curl(&["-w", "\n%{http_code}", &target]));
    let _held = recv(&accepted); // the first request is now pending there
    let out = curl(&[fmt[0], fmt[1], &url(&p, "/")]);
    assert!(out.ends_with("\n503"), "{out}");
    assert!(out.contains("--max-pending-requests"), "{out}");
    let out = first.join().unwrap();
    assert_eq!(
        out,
        "tcp-proxy: no response within --http-request-timeout\n\n504"
    );

    let m = p.metrics();
    for (status, cause) in [("503", "upstream_full"), ("504", "timeout")] {
        let labels = [
            &format!("status=\"{status}\"")[..],
            &format!("cause=\"{cause}\""),
        ];
        assert_eq!(
            support::metrics::sum(&m, "tcp_proxy_http_local_responses_total", &labels),
            1.0,
            "{m}"
        );
    }
}

#[test]
fn retries_go_to_another_endpoint() {
    if !require_peer("curl") || !require_peer("nginx") {
        return;
    }
    let good = Nginx::http1("good");
    let p = proxy(
        &[support::free_addr(), good.addr],
        &[
            "--lb=round-robin",
            "--http-retries=1",
            "--outlier-failures=0",
        ],
    );
    let target = url(&p, "/");
    let mut args = vec![];
    args.extend(std::iter::repeat_n(target.as_str(), 6));
    assert_eq!(curl(&args), "good\n".repeat(6));
    assert_eq!(p.metric("tcp_proxy_http_retries_total", &[]), 3.0);
    // Each failed attempt is the endpoint's connect failure, by reason.
    assert_eq!(
        p.metric("tcp_proxy_connect_failures_total", &["reason=\"refused\""]),
        3.0
    );
}

#[test]
fn retry_budget_holds_while_every_endpoint_fails() {
    if !require_peer("curl") {
        return;
    }
    let p = proxy(
        &[support::free_addr(), support::free_addr()],
        &[
            "--http-retries=3",
            "--http-retry-budget=20",
            "--outlier-failures=0",
        ],
    );
    let target = url(&p, "/");
    let mut args = vec!["-o", "/dev/null", "-w", "%{http_code}\\n"];
    args.extend(std::iter::repeat_n(target.as_str(), 100));
    let out = curl(&args);
    assert_eq!(count(&out, "502"), 100, "{out}");
    let retries = p.metric("tcp_proxy_http_retries_total", &[]);
    // Unbounded, 3 retries each would be 300: the budget allows 20% of the
    // 100 requests plus its reserve of 10.
    assert!(retries > 0.0 && retries <= 30.0, "{retries} retries");
}

#[test]
fn consecutive_5xx_eject_the_endpoint() {
    if !require_peer("curl") {
        return;
    }
    let bad = Receiver::with(|_| (500, "bad\n".into()));
    let good = Receiver::with(|_| (200, "good\n".into()));
    let p = proxy(
        &[bad.addr, good.addr],
        &["--lb=round-robin", "--outlier-failures=2"],
    );
    let target = url(&p, "/");
    let mut args = vec!["-o", "/dev/null", "-w", "%{http_code}\\n"];
    args.extend(std::iter::repeat_n(target.as_str(), 10));
    let out = curl(&args);
    // Round robin: bad, good, bad (second 5xx: ejected), then good only.
    assert_eq!(count(&out, "500"), 2, "{out}");
    assert_eq!(count(&out, "200"), 8, "{out}");
    let labels = [&format!("upstream=\"{}\"", bad.addr)[..]];
    assert_eq!(p.metric("tcp_proxy_ejections_total", &labels), 1.0);
}

#[test]
fn websocket_upgrade_becomes_a_tunnel() {
    // An upstream that accepts the upgrade, then echoes bytes.
    let up = Upstream::start(|mut s| {
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && s.read(&mut b).unwrap_or(0) == 1 {
            head.push(b[0]);
        }
        let head = String::from_utf8_lossy(&head).to_lowercase();
        assert!(head.contains("upgrade: websocket"), "{head}");
        s.write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
            .unwrap();
        peers::echo(s);
    });
    let p = proxy(&[up.addr], &["--idle-timeout=1s"]);
    let open_tunnel = || {
        let mut c = connect(p.addr());
        c.write_all(
            b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        )
        .unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            head.extend(read_n(&mut c, 1));
        }
        let head = String::from_utf8_lossy(&head).to_lowercase();
        assert!(head.starts_with("http/1.1 101"), "{head}");
        assert!(head.contains("upgrade: websocket"), "{head}");
        c
    };
    let mut c = open_tunnel();
    c.write_all(b"frames both ways").unwrap();
    assert_eq!(read_n(&mut c, 16), b"frames both ways");
    // The tunnel is still a connection of the proxy's: counted as one.
    let route = format!("route=\"{}\"", p.addr());
    assert_eq!(p.metric("tcp_proxy_connections_active", &[&route]), 1.0);
    c.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_end(&mut c), b"");

    // A tunnel with no bytes either way for --idle-timeout is closed, as a
    // TCP relay is.
    let mut idle = open_tunnel();
    assert_eq!(read_to_end(&mut idle), b"");
    p.wait_metric("tcp_proxy_closes_total", &["reason=\"idle_timeout\""], 1.0);
}

#[test]
fn connect_becomes_a_tunnel_to_the_endpoint() {
    let up = Upstream::echo();
    let p = proxy(&[up.addr], &[]);
    let mut c = connect(p.addr());
    c.write_all(b"CONNECT db.svc:5432 HTTP/1.1\r\nHost: db.svc:5432\r\n\r\n")
        .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.extend(read_n(&mut c, 1));
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    c.write_all(b"raw bytes").unwrap();
    assert_eq!(read_n(&mut c, 9), b"raw bytes");
}

#[test]
fn sigterm_lets_an_http2_request_in_flight_finish() {
    let wait = std::time::Duration::from_secs(30);
    let (arrived_tx, arrived) = std::sync::mpsc::channel();
    let (release, released) = std::sync::mpsc::channel::<()>();
    // The upstream (HTTP/1.1: the proxy's HTTP/2 preface probe is answered
    // at once) answers the request only once the test says so.
    let up = Receiver::with(move |req| {
        if req.path == "/slow" {
            let _ = arrived_tx.send(());
            let _ = released.recv_timeout(wait);
        }
        (200, "answered after the stop\n".into())
    });
    let mut p = proxy(&[up.addr], &["--shutdown-grace=30s"]);
    let url = url(&p, "/slow");
    let client = std::thread::spawn(move || curl(&["--http2-prior-knowledge", &url]));
    arrived
        .recv_timeout(wait)
        .expect("the request reaches the upstream");
    p.sidecar.signal(nix::sys::signal::Signal::SIGTERM);
    p.sidecar.wait_for_log("stopped accepting");
    release.send(()).unwrap();
    assert_eq!(client.join().unwrap(), "answered after the stop\n");
    assert_eq!(p.sidecar.wait_exit().code(), Some(0));
}

/// At SIGTERM a connection whose first request head is half sent has
/// nothing in flight: it is closed at once, not held for the grace period
/// (two minutes here, past the test's read deadline).
#[test]
fn sigterm_closes_a_connection_with_half_a_first_head_at_once() {
    let up = Receiver::start();
    let mut p = proxy(&[up.addr], &["--shutdown-grace=120s"]);
    let mut c = p.connect();
    c.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n").unwrap();
    // The proxy has the bytes: a full request on another connection is
    // answered after them.
    let other = raw(
        &p,
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert!(other.starts_with("HTTP/1.1 200"), "{other}");
    p.sidecar.signal(nix::sys::signal::Signal::SIGTERM);
    let mut answer = Vec::new();
    c.read_to_end(&mut answer)
        .expect("closed by the proxy before the read deadline");
    assert_eq!(answer, b"");
    assert_eq!(p.sidecar.wait_exit().code(), Some(0));
}

/// An idle HTTP/2 client that never reads the GOAWAY (nor acknowledges the
/// PING that comes with it) is closed one more idle timeout later, not
/// kept until the proxy stops.
#[test]
fn an_idle_http2_client_that_never_answers_is_still_closed() {
    let up = Receiver::start();
    let p = proxy(&[up.addr], &["--idle-timeout=1s"]);
    let mut c = p.connect();
    c.write_all(support::h2::PREFACE).unwrap();
    // Nothing is read or acknowledged from here on.
    p.wait_metric("tcp_proxy_closes_total", &["reason=\"idle_timeout\""], 1.0);
    drop(c);
}

/// Reads HTTP/2 frames until one of type `kind` on stream 1 and returns its
/// flags and payload; SETTINGS are acknowledged, as a client does.
fn h2_frame_on_stream_1(c: &mut std::net::TcpStream, kind: u8) -> (u8, Vec<u8>) {
    // Bounded: the read timeout ends a silent connection.
    loop {
        let head = read_n(c, 9);
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let payload = read_n(c, len);
        if (head[3], head[4] & 1) == (0x4, 0) {
            c.write_all(b"\0\0\0\x04\x01\0\0\0\0").unwrap();
        }
        if head[3] == kind && stream == 1 {
            return (head[4], payload);
        }
    }
}

#[test]
fn connect_over_http2_becomes_a_tunnel_on_its_stream() {
    let up = Upstream::echo();
    let p = proxy(&[up.addr], &[]);
    let mut c = p.connect();
    // The preface, empty SETTINGS, and HEADERS on stream 1 (END_HEADERS):
    // `:method: CONNECT`, `:authority: db.svc:5432`, as HPACK literals.
    c.write_all(support::h2::PREFACE).unwrap();
    c.write_all(b"\0\0\x16\x01\x04\0\0\0\x01\x02\x07CONNECT\x01\x0bdb.svc:5432")
        .unwrap();
    let (flags, head) = h2_frame_on_stream_1(&mut c, 0x1);
    // `:status: 200` (static table entry 8), and the stream stays open.
    assert_eq!(head.first(), Some(&0x88), "{head:?}");
    assert_eq!(flags & 0x1, 0, "END_STREAM on the answer to CONNECT");
    // DATA each way is the tunnel's bytes. An empty DATA frame first
    // (allowed, without END_STREAM) is not the end of the client's side:
    // read as EOF it would half-close the upstream (h2 drops such frames).
    c.write_all(b"\0\0\0\0\0\0\0\0\x01").unwrap();
    c.write_all(b"\0\0\x09\0\0\0\0\0\x01raw bytes").unwrap();
    let mut echoed = Vec::new();
    while echoed.len() < 9 {
        echoed.extend(h2_frame_on_stream_1(&mut c, 0x0).1);
    }
    assert_eq!(echoed, b"raw bytes");
}

/// What HTTP servers accept as a request line, or refuse with a 400, is
/// handled as HTTP, never relayed to the app unchecked: a leading empty
/// line, odd spacing, an unknown version, a bare CR, and a request line
/// that stalls past --detect-timeout.
#[test]
fn odd_or_stalled_request_lines_are_still_handled_as_http() {
    let up = Receiver::start();
    let p = proxy(&[up.addr], &["--detect-timeout=100ms"]);
    let answer = raw(
        &p,
        b"\r\nGET /crlf HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 6.6.6.6\r\nConnection: close\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let got = up.drain();
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].header("x-forwarded-for"),
        Some("6.6.6.6, 127.0.0.1"),
        "handled as HTTP: the client address is appended"
    );
    assert!(got[0].header("x-request-id").is_some());
    let dup = "Content-Length: 0\r\nContent-Length: 0\r\n\r\n";
    for line in [
        "GET  /two-spaces HTTP/1.1",
        "GET\t/tab HTTP/1.1",
        "GET / HTTP/1.2",
        "GET /bare-cr HTTP/1.1\rHost: a\r",
    ] {
        let answer = raw(&p, format!("{line}\r\nHost: a\r\n{dup}").as_bytes());
        assert!(answer.starts_with("HTTP/1.1 400"), "{line:?} → {answer}");
    }
    assert!(up.drain().is_empty(), "nothing reached the upstream");

    // A request line begun, then stalled past the timeout: still HTTP.
    let p = proxy(&[up.addr], &["--detect-timeout=100ms"]);
    let mut c = p.connect();
    c.write_all(b"GE").unwrap();
    let route = format!("route=\"{}\"", p.addr());
    support::wait_until("detection gives up waiting", || {
        p.metric(
            "tcp_proxy_detected_connections_total",
            &[&route, "protocol=\"http\""],
        ) == 1.0
    });
    c.write_all(format!("T /stalled HTTP/1.1\r\nHost: a\r\n{dup}").as_bytes())
        .unwrap();
    let mut answer = Vec::new();
    let _ = c.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.contains("request smuggling refused"), "{answer}");
    assert!(up.drain().is_empty());
}

/// A request whose body fails on the client's side (malformed chunking, a
/// client gone mid-upload) is a 400, not the endpoint's 502: it neither
/// counts towards ejection nor is retried.
#[test]
fn a_failing_request_body_is_not_charged_to_the_endpoint() {
    let (a, b) = (Receiver::start(), Receiver::start());
    let p = proxy(
        &[a.addr, b.addr],
        &[
            "--lb=round-robin",
            "--outlier-failures=2",
            "--http-retries=2",
        ],
    );
    for _ in 0..6 {
        let answer = raw(
            &p,
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        );
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        assert!(answer.contains("request body"), "{answer}");
    }
    // A client that sends part of its body and closes: not a bad request,
    // a closed one (nginx's 499).
    for _ in 0..4 {
        let mut c = p.connect();
        c.write_all(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\npartial")
            .unwrap();
        c.shutdown(Shutdown::Both).unwrap();
    }
    support::wait_until("four requests closed by their clients", || {
        p.metric(
            "tcp_proxy_http_local_responses_total",
            &["cause=\"client_closed\"", "status=\"499\""],
        ) == 4.0
    });
    assert_eq!(
        p.metric(
            "tcp_proxy_http_local_responses_total",
            &["cause=\"bad_request\""]
        ),
        6.0
    );
    assert_eq!(p.metric("tcp_proxy_ejections_total", &[]), 0.0);
    assert_eq!(p.metric("tcp_proxy_http_retries_total", &[]), 0.0);
    assert_eq!(
        p.metric("tcp_proxy_http_requests_total", &["class=\"5xx\""]),
        0.0
    );
}

/// Local answers to gRPC requests are gRPC statuses (trailers-only), so a
/// gRPC client sees UNAVAILABLE or RESOURCE_EXHAUSTED and the cause.
#[test]
fn local_answers_to_grpc_requests_are_grpc_statuses() {
    if !require_peer("curl") {
        return;
    }
    let p = proxy(&[support::free_addr()], &[]);
    let grpc = [
        "-s",
        "-i",
        "--http2-prior-knowledge",
        "-H",
        "content-type: application/grpc",
        "-H",
        "te: trailers",
        "--data-binary",
        "",
    ];
    let out = curl(&[&grpc[..], &[&url(&p, "/pkg.Svc/Method")]].concat()).to_lowercase();
    assert!(out.starts_with("http/2 200"), "{out}");
    assert!(out.contains("content-type: application/grpc"), "{out}");
    assert!(out.contains("grpc-status: 14"), "{out}");
    assert!(
        out.contains("grpc-message: tcp-proxy: cannot connect"),
        "{out}"
    );
    assert_eq!(
        p.metric(
            "tcp_proxy_http_local_responses_total",
            &["cause=\"connect_failed\""]
        ),
        1.0
    );

    let up = Receiver::start();
    let p = proxy(&[up.addr], &["--http-rate-limit=1/m"]);
    curl(&[&grpc[..], &[&url(&p, "/pkg.Svc/Method")]].concat());
    let out = curl(&[&grpc[..], &[&url(&p, "/pkg.Svc/Method")]].concat()).to_lowercase();
    assert!(out.contains("grpc-status: 8"), "{out}");
    // Not gRPC: the text answer.
    let out = curl(&["-s", &url(&p, "/")]);
    assert!(out.contains("rate limit"), "{out}");
}

#[test]
fn auto_detection_relays_server_speaks_first_and_opaque_ports_as_tcp() {
    // The client sends nothing: after --detect-timeout the banner flows.
    let up = Upstream::named("220 smtp ready");
    let p = proxy(&[up.addr], &["--detect-timeout=200ms"]);
    let mut c = p.connect();
    assert_eq!(read_n(&mut c, 15), b"220 smtp ready\n");
    c.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    assert_eq!(
        read_n(&mut c, 18),
        b"GET / HTTP/1.1\r\n\r\n",
        "still a byte relay"
    );
    let route = format!("route=\"{}\"", p.addr());
    assert_eq!(
        p.metric(
            "tcp_proxy_detected_connections_total",
            &[&route, "protocol=\"tcp\"", "reason=\"timeout\""]
        ),
        1.0
    );

    // A listener port in --opaque-ports is never sniffed: HTTP bytes are relayed.
    let port = support::free_addr();
    let p = Proxy::start(
        &[
            &format!("--listen={port}"),
            &format!("--upstream={}", Upstream::echo().addr),
            &format!("--opaque-ports=1-3,{}", port.port()),
        ],
        1,
    );
    let mut c = p.connect();
    c.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    assert_eq!(read_n(&mut c, 27), b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");

    // --protocol tcp: never HTTP.
    let p = proxy(&[Upstream::echo().addr], &["--protocol=tcp"]);
    let mut c = p.connect();
    c.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    assert_eq!(read_n(&mut c, 27), b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
}

#[test]
fn access_log_has_a_line_per_request() {
    let up = Receiver::start();
    let dir = support::tempdir();
    let log = dir.path().join("access.log");
    let p = proxy(&[up.addr], &[&format!("--access-log={}", log.display())]);
    http::request(p.addr(), "GET", "/a?q=1", &[("x-request-id", "req-7")], b"");
    http::request(p.addr(), "POST", "/b", &[], b"body");
    support::wait_until("two access-log lines", || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.lines().count() == 2)
    });
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["method"], "GET");
    assert_eq!(lines[0]["path"], "/a");
    assert_eq!(lines[0]["status"], 200);
    assert_eq!(lines[0]["request_id"], "req-7");
    assert_eq!(lines[0]["endpoint"], up.addr.to_string());
    assert_eq!(lines[0]["retries"], 0);
    assert_eq!(lines[1]["method"], "POST");
    assert_eq!(lines[0]["authority"], p.addr().to_string());

    // A request refused for smuggling gets its line too, and is counted.
    let answer = raw(
        &p,
        b"POST /dup HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
    );
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    support::wait_until("a third access-log line", || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.lines().count() == 3)
    });
    let text = std::fs::read_to_string(&log).unwrap();
    let refused: serde_json::Value = serde_json::from_str(text.lines().nth(2).unwrap()).unwrap();
    assert_eq!(
        (&refused["method"], &refused["path"], &refused["status"]),
        (&"POST".into(), &"/dup".into(), &400.into())
    );
    assert_eq!(refused["refused"], "duplicate Content-Length");

    // A client gone before its response has a line too: status 0 and
    // Envoy's flag DC (downstream connection termination).
    let (silent, accepted) = Upstream::manual();
    let log2 = dir.path().join("aborted.log");
    let q = proxy(
        &[silent.addr],
        &[&format!("--access-log={}", log2.display())],
    );
    let mut client = connect(q.addr());
    client
        .write_all(b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    let mut upstream = recv(&accepted);
    let mut head = [0u8; 16];
    upstream.read_exact(&mut head).unwrap();
    drop(client);
    support::wait_until("the aborted request's line", || {
        std::fs::read_to_string(&log2).is_ok_and(|t| t.lines().count() == 1)
    });
    let line: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(&log2).unwrap().trim()).unwrap();
    assert_eq!(
        (&line["path"], &line["status"]),
        (&"/slow".into(), &0.into())
    );
    assert_eq!(line["response_flags"], "DC");

    let route = format!("route=\"{}\"", p.addr());
    assert_eq!(
        p.metric(
            "tcp_proxy_http_requests_total",
            &[&route, "upstream=\"\"", "class=\"4xx\""]
        ),
        1.0
    );
}

/// A head hyper's parser refuses itself (a NUL in a header value) reaches
/// no upstream, and its 400 is counted and logged like our own refusals.
#[test]
fn a_malformed_head_is_refused_counted_and_logged() {
    let up = Receiver::start();
    let dir = support::tempdir();
    let log = dir.path().join("access.log");
    let p = proxy(&[up.addr], &[&format!("--access-log={}", log.display())]);
    let answer = raw(&p, b"GET /nul HTTP/1.1\r\nHost: a\r\nX-Bad: a\0b\r\n\r\n");
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(up.drain().is_empty(), "nothing reached the upstream");
    assert_eq!(
        p.metric(
            "tcp_proxy_http_local_responses_total",
            &["cause=\"malformed\"", "status=\"400\""]
        ),
        1.0
    );
    let route = format!("route=\"{}\"", p.addr());
    assert_eq!(
        p.metric("tcp_proxy_http_requests_total", &[&route, "class=\"4xx\""]),
        1.0
    );
    support::wait_until("an access-log line", || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.lines().count() == 1)
    });
    let line: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(&log).unwrap().trim()).unwrap();
    assert_eq!(line["status"], 400);
    assert!(
        line["refused"].as_str().is_some_and(|r| !r.is_empty()),
        "{line}"
    );
}

#[test]
fn bad_http_flags_exit_2_naming_the_flag() {
    for (args, flag) in [
        (&["--http-route=nohost=a:1"][..], "--http-route"),
        (&["--http-retry-on=sometimes"][..], "--http-retry-on"),
        (&["--opaque-ports=9-1"][..], "--opaque-ports"),
        (
            &["--protocol=tcp", "--http-route=/a/=b:1"][..],
            "--http-route",
        ),
    ] {
        let mut all = vec![
            "tcp-proxy",
            "--listen=127.0.0.1:0",
            "--upstream=127.0.0.1:1",
        ];
        all.extend(args);
        let out = support::run(&all);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(flag), "{args:?}: {err}");
    }
}

/// A grpcio server (tests/tcp_proxy/grpc_peer.py) and the port it bound.
fn grpc_server(name: &str) -> (support::Peer, SocketAddr) {
    let mut server = support::Peer::spawn(
        Command::new(PYTHON)
            .arg(GRPC_PEER)
            .args(["server", name])
            .stdout(std::process::Stdio::piped()),
    )
    .expect("start the gRPC server");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(server.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    let port = line
        .strip_prefix("listening ")
        .unwrap_or_else(|| panic!("gRPC server said {line:?}"))
        .trim();
    (server, format!("127.0.0.1:{port}").parse().unwrap())
}

/// Debian's python3 with python3-grpcio (not whatever python3 PATH finds).
const PYTHON: &str = "/usr/bin/python3";
const GRPC_PEER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tcp_proxy/grpc_peer.py");

#[test]
fn grpc_unary_bidi_streaming_trailers_and_status_pass_through() {
    let have_grpcio = Command::new(PYTHON)
        .args(["-c", "import grpc"])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !support::require(have_grpcio, "python3-grpcio") {
        return;
    }
    let (_s1, g1) = grpc_server("G1");
    let (_s2, g2) = grpc_server("G2");
    let p = proxy(&[g1, g2], &[]);
    let out = support::run_cmd(
        Command::new(PYTHON)
            .arg(GRPC_PEER)
            .args(["client", &p.addr().to_string()]),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: serde_json::Value = serde_json::from_str(&text).unwrap();
    let who = got["who"].as_str().unwrap();
    assert!(who == "G1" || who == "G2", "{got}");
    assert_eq!(got["trailer"], who, "trailing metadata arrives");
    let chat: Vec<&str> = got["chat"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(chat.len(), 5, "{got}");
    for (i, reply) in chat.iter().enumerate() {
        assert!(reply.ends_with(&format!(":m{i}")), "{got}");
    }
    assert_eq!(
        got["fail"], "NOT_FOUND: no such thing",
        "grpc-status trailer"
    );
    let route = format!("route=\"{}\"", p.addr());
    assert_eq!(
        p.metric("tcp_proxy_http_requests_total", &[&route, "class=\"2xx\""]),
        3.0
    );
}

#[test]
fn check_validates_flags_and_upstreams_file_without_binding() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = support::tempdir();
    let file = dir.path().join("upstreams");
    support::write(&file, "127.0.0.1:9\n");
    let good = [
        "tcp-proxy",
        "--check",
        "--listen",
        &addr,
        "--http-route=/api/=api:80",
        "--upstreams-file",
        file.to_str().unwrap(),
    ];
    // The listen port is taken: --check binds nothing, so it passes.
    let out = support::run(&good);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    support::write(&file, "not an upstream\n");
    let out = support::run(&good);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--upstreams-file"));
}

#[test]
fn send_proxy_protocol_keeps_http_connections_as_tcp_relays() {
    let (up, accepted) = Upstream::manual();
    let p = proxy(&[up.addr], &["--send-proxy-protocol=v1"]);
    let mut c = p.connect();
    c.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    let mut u = recv(&accepted);
    let mut got = Vec::new();
    while !got.ends_with(b"\r\n\r\n") {
        got.extend(read_n(&mut u, 1));
    }
    let got = String::from_utf8(got).unwrap();
    assert!(got.starts_with("PROXY TCP4 127.0.0.1 127.0.0.1 "), "{got}");
    assert!(
        got.ends_with("\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"),
        "{got}"
    );

    let out = support::run(&[
        "tcp-proxy",
        "--listen=127.0.0.1:0",
        "--upstream=127.0.0.1:1",
        "--protocol=http",
        "--send-proxy-protocol=v1",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--send-proxy-protocol"));
}

/// An HTTP/2 client in front of an app that speaks HTTP/1.1 only: the app
/// answers the HTTP/2 preface with an error, and the proxy sends it the
/// requests as HTTP/1.1 from then on (the client keeps HTTP/2).
#[test]
fn http2_requests_reach_an_http1_only_upstream_as_http11() {
    if !require_peer("curl") || !require_peer("nginx") || !require_peer("h2load") {
        return;
    }
    let h1 = Nginx::http1("only-h1");
    let mut p = proxy(&[h1.addr], &[]);
    let out = curl(&[
        "--http2-prior-knowledge",
        "-w",
        "%{http_code} %{http_version}\\n",
        &url(&p, "/a?b=c"),
    ]);
    assert_eq!(out, "only-h1\n200 2\n");
    // Multiplexed streams of one client connection, each an HTTP/1.1
    // request upstream.
    h2load_200(&url(&p, "/"), 1);
    let ok = format!("upstream=\"{}\"", h1.addr);
    assert_eq!(
        p.metric("tcp_proxy_http_requests_total", &[&ok, "class=\"2xx\""]),
        201.0
    );
    p.sidecar.wait_for_log("speaks HTTP/1.1 only");
}

/// --idle-timeout also closes HTTP client connections that have had no
/// request for that long: HTTP/1.1 by closing, HTTP/2 with GOAWAY.
#[test]
fn idle_http_connections_are_closed_after_the_idle_timeout() {
    let up = Receiver::start();
    let p = proxy(&[up.addr], &["--idle-timeout=1s"]);
    // HTTP/1.1: the response, then the close (raw() reads to EOF).
    let answer = raw(&p, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(answer.matches("HTTP/1.1").count(), 1, "{answer}");
    // A first request whose head never ends: closed too, unanswered.
    let mut c = p.connect();
    c.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n").unwrap();
    let mut answer = Vec::new();
    c.read_to_end(&mut answer)
        .expect("closed by the proxy before the read timeout");
    assert_eq!(answer, b"");

    // HTTP/2 with prior knowledge: the preface and an empty SETTINGS
    // frame, then only acknowledgements, until the proxy closes; its
    // frames include a GOAWAY.
    let mut c = p.connect();
    c.write_all(support::h2::PREFACE).unwrap();
    let mut types = Vec::new();
    let mut head = [0u8; 9];
    while c.read_exact(&mut head).is_ok() {
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let (kind, flags) = (head[3], head[4]);
        let payload = read_n(&mut c, len);
        types.push(kind);
        match (kind, flags & 1) {
            // SETTINGS and PING are acknowledged, as a client does.
            (0x4, 0) => c.write_all(b"\0\0\0\x04\x01\0\0\0\0").unwrap(),
            (0x6, 0) => {
                c.write_all(b"\0\0\x08\x06\x01\0\0\0\0").unwrap();
                c.write_all(&payload).unwrap();
            }
            _ => {}
        }
    }
    assert!(types.contains(&0x7), "GOAWAY among frame types {types:?}");
    p.wait_metric("tcp_proxy_closes_total", &["reason=\"idle_timeout\""], 3.0);
}

/// HTTP/2 rapid reset (CVE-2023-44487) against the inbound side: requests
/// cancelled right after their HEADERS, in a flood. The connection is ended
/// with GOAWAY ENHANCE_YOUR_CALM long before the flood is through, the
/// upstream sees a bounded share of it, and other clients are still served.
#[test]
fn an_http2_rapid_reset_flood_is_cut_off_with_enhance_your_calm() {
    use support::h2;
    let up = Receiver::start();
    let p = proxy(&[up.addr], &[]);
    let mut c = p.connect();
    const FLOOD: u32 = 1000;
    let mut bytes = h2::PREFACE.to_vec();
    bytes.extend(h2::rapid_reset_flood(FLOOD, "app.svc"));
    // The proxy may close while the flood is still being written.
    let _ = c.write_all(&bytes);
    let (goaway, answered) = h2::read_to_goaway(&mut c);
    assert_eq!(
        goaway,
        Some(h2::ENHANCE_YOUR_CALM),
        "no GOAWAY ENHANCE_YOUR_CALM after {FLOOD} reset streams ({answered} answered)"
    );
    // Another client is served, and its request reaches the upstream.
    let out = http::get(p.addr(), "/after");
    assert_eq!(out.status, 200);
    let reached = std::iter::from_fn(|| Some(up.next()))
        .take_while(|r| r.path != "/after")
        .take(FLOOD as usize)
        .count();
    assert!(
        reached < FLOOD as usize / 2,
        "{reached} of {FLOOD} reset requests reached the upstream"
    );
}

/// A CONTINUATION flood (RUSTSEC-2024-0332): a header block that never
/// ends is refused once it passes the header list limit, not buffered until
/// memory runs out; other clients are still served.
#[test]
fn an_http2_continuation_flood_ends_the_connection() {
    use support::h2;
    let up = Receiver::start();
    let p = proxy(&[up.addr], &[]);
    let mut c = p.connect();
    let mut bytes = h2::PREFACE.to_vec();
    // 10 MiB of headers in one block, against a 16 KiB limit.
    bytes.extend(h2::continuation_flood(10_000));
    let _ = c.write_all(&bytes);
    let (goaway, _) = h2::read_to_goaway(&mut c);
    assert!(
        goaway.is_some(),
        "no GOAWAY for a header block past the limit"
    );
    assert_eq!(http::get(p.addr(), "/after").status, 200);
}
