//! tcp-proxy against real TCP peers on loopback: relaying, half-close,
//! resets, timeouts, backpressure, limits, load balancing, discovery,
//! health, PROXY protocol and drain.

#[path = "tcp_proxy/peers.rs"]
mod peers;
mod support;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use peers::{closed, connect, read_n, read_to_end, recv, which, Proxy, Upstream};
use support::{http, wait_until};

fn proxy_to(upstreams: &[&Upstream], extra: &[&str]) -> Proxy {
    let ups: Vec<String> = upstreams.iter().map(|u| u.addr.to_string()).collect();
    let mut args = vec![
        "--listen=127.0.0.1:0".to_string(),
        format!("--upstream={}", ups.join(",")),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Proxy::start(&args, 1)
}

#[test]
fn server_speaks_first_and_half_close_passes_each_way() {
    let (up, accepted) = Upstream::manual();
    let p = proxy_to(&[&up], &[]);
    let mut c = p.connect();
    let mut u = recv(&accepted);

    // The server talks first; the client has sent nothing.
    u.write_all(b"220 hello\r\n").unwrap();
    assert_eq!(read_n(&mut c, 11), b"220 hello\r\n");

    // Client half-closes: the upstream sees the data, then EOF ...
    c.write_all(b"QUIT\r\n").unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_end(&mut u), b"QUIT\r\n");
    // ... and can still answer through the other direction.
    u.write_all(b"221 bye\r\n").unwrap();
    u.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_end(&mut c), b"221 bye\r\n");
}

#[test]
fn upstream_half_close_first_keeps_client_direction_open() {
    let (up, accepted) = Upstream::manual();
    let p = proxy_to(&[&up], &[]);
    let mut c = p.connect();
    c.write_all(b"x").unwrap();
    let mut u = recv(&accepted);
    assert_eq!(read_n(&mut u, 1), b"x");
    u.write_all(b"done").unwrap();
    u.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_end(&mut c), b"done");
    c.write_all(b"late data").unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_end(&mut u), b"late data");
}

#[test]
fn refused_upstream_closes_the_client_after_retries() {
    let dead = support::free_addr();
    let p = Proxy::start(
        &[
            "--listen=127.0.0.1:0",
            &format!("--upstream={dead}"),
            "--connect-retries=2",
        ],
        1,
    );
    let mut c = p.connect();
    assert!(closed(&mut c), "client left hanging");
    p.wait_metric(
        "tcp_proxy_connect_failures_total",
        &["reason=\"refused\""],
        3.0,
    );
    p.wait_metric(
        "tcp_proxy_rejected_connections_total",
        &["reason=\"connect_failed\""],
        1.0,
    );
}

/// A listener whose accept queue is full: further SYNs are dropped, so a
/// connect to it never completes.
fn blackhole() -> (TcpListener, Vec<std::net::TcpStream>) {
    let s = TcpListener::bind("127.0.0.1:0").unwrap();
    // Shrink the accept queue to its minimum.
    assert_eq!(
        unsafe { libc::listen(std::os::fd::AsRawFd::as_raw_fd(&s), 0) },
        0
    );
    let addr = s.local_addr().unwrap();
    // Fill the queue; connects beyond it stay in SYN_SENT.
    let mut fillers = Vec::new();
    for _ in 0..4 {
        if let Ok(c) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
            fillers.push(c);
        }
    }
    (s, fillers)
}

#[test]
fn upstream_that_never_accepts_trips_the_connect_timeout() {
    let (hole, _fill) = blackhole();
    let addr = hole.local_addr().unwrap();
    let p = Proxy::start(
        &[
            "--listen=127.0.0.1:0",
            &format!("--upstream={addr}"),
            "--connect-timeout=300ms",
            "--connect-retries=1",
        ],
        1,
    );
    let mut c = p.connect();
    assert!(closed(&mut c), "client left hanging");
    p.wait_metric(
        "tcp_proxy_connect_failures_total",
        &["reason=\"timeout\""],
        2.0,
    );
}

#[test]
fn client_reset_is_passed_on_to_the_upstream() {
    let (up, accepted) = Upstream::manual();
    let p = proxy_to(&[&up], &[]);
    let c = p.connect();
    (&c).write_all(b"partial").unwrap();
    let mut u = recv(&accepted);
    assert_eq!(read_n(&mut u, 7), b"partial");
    peers::set_reset_on_close(&c);
    drop(c);
    let mut buf = [0u8; 16];
    let err = loop {
        match u.read(&mut buf) {
            Ok(0) => panic!("upstream saw FIN, not a reset"),
            Ok(_) => continue,
            Err(e) => break e,
        }
    };
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
    p.wait_metric("tcp_proxy_closes_total", &["reason=\"reset\""], 1.0);
}

#[test]
fn upstream_reset_is_passed_on_to_the_client() {
    let (up, accepted) = Upstream::manual();
    let p = proxy_to(&[&up], &[]);
    let mut c = p.connect();
    // A byte through first, so the proxy's connect has surely completed (a
    // reset racing the connect is a connect failure, and retried).
    c.write_all(b"x").unwrap();
    let mut u = recv(&accepted);
    assert_eq!(read_n(&mut u, 1), b"x");
    peers::set_reset_on_close(&u);
    drop(u);
    let mut buf = [0u8; 16];
    let err = c.read(&mut buf).expect_err("client should see a reset");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
}

#[test]
fn client_reset_after_its_half_close_is_passed_on() {
    let (up, accepted) = Upstream::manual();
    let p = proxy_to(&[&up], &[]);
    let mut c = p.connect();
    c.write_all(b"req").unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let mut u = recv(&accepted);
    assert_eq!(read_to_end(&mut u), b"req");
    // The client's direction is done; the quiet upstream must still learn
    // that the client is gone, not hold the connection until the idle timeout.
    // (It has read EOF already, so reads keep answering 0: the reset shows
    // as the socket's pending error.)
    peers::set_reset_on_close(&c);
    drop(c);
    wait_until("the upstream socket is reset", || {
        u.take_error().ok().flatten().is_some()
    });
    p.wait_metric("tcp_proxy_closes_total", &["reason=\"reset\""], 1.0);
}

#[test]
fn upstream_reset_after_its_half_close_is_passed_on() {
    let (up, accepted) = Upstream::manual();
    let p = proxy_to(&[&up], &[]);
    let mut c = p.connect();
    c.write_all(b"x").unwrap();
    let mut u = recv(&accepted);
    assert_eq!(read_n(&mut u, 1), b"x");
    u.write_all(b"bye").unwrap();
    u.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_end(&mut c), b"bye");
    peers::set_reset_on_close(&u);
    drop(u);
    wait_until("the client socket is reset", || {
        c.take_error().ok().flatten().is_some()
    });
    p.wait_metric("tcp_proxy_closes_total", &["reason=\"reset\""], 1.0);
}

#[test]
fn idle_connections_are_closed() {
    let up = Upstream::echo();
    let p = proxy_to(&[&up], &["--idle-timeout=300ms"]);
    let mut c = p.connect();
    c.write_all(b"ping").unwrap();
    assert_eq!(read_n(&mut c, 4), b"ping");
    assert!(closed(&mut c));
    p.wait_metric("tcp_proxy_closes_total", &["reason=\"idle_timeout\""], 1.0);
}

#[test]
fn busy_connections_are_closed_at_the_lifetime_cap() {
    let up = Upstream::echo();
    let p = proxy_to(&[&up], &["--max-connection-duration=500ms"]);
    let mut c = p.connect();
    // Keep the connection busy: the cap applies regardless of traffic.
    let mut buf = [0u8; 4];
    let reason = loop {
        if c.write_all(b"ping").is_err() {
            break "write failed";
        }
        match c.read(&mut buf) {
            Ok(0) | Err(_) => break "closed",
            Ok(_) => {}
        }
    };
    assert!(!reason.is_empty());
    p.wait_metric("tcp_proxy_closes_total", &["reason=\"max_duration\""], 1.0);
}

/// 50 MiB from the upstream to a client that does not read: the proxy's
/// memory stays flat (backpressure), and once the client reads every byte
/// arrives intact, after the client already half-closed its side.
#[test]
fn fifty_mib_to_a_peer_that_is_not_reading() {
    const TOTAL: usize = 50 << 20;
    let written = Arc::new(AtomicU64::new(0));
    let w = written.clone();
    let up = Upstream::start(move |mut s| {
        let chunk: Vec<u8> = (0..65536u32).map(|i| (i % 251) as u8).collect();
        let mut sent = 0;
        while sent < TOTAL {
            if s.write_all(&chunk).is_err() {
                return;
            }
            sent += chunk.len();
            w.store(sent as u64, Ordering::SeqCst);
        }
        let _ = s.shutdown(Shutdown::Write);
    });
    let p = proxy_to(&[&up], &[]);
    let pid = p.sidecar.pid();
    let (base, _) = peers::rss_kib(pid);
    let mut c = p.connect();
    c.shutdown(Shutdown::Write).unwrap();

    // Wait until the writer stalls: its count stops moving while we do not read.
    let mut last = 0;
    wait_until("upstream writer blocked by backpressure", || {
        std::thread::sleep(Duration::from_millis(300));
        let now = written.load(Ordering::SeqCst);
        let stalled = now > 0 && now == last;
        last = now;
        stalled
    });
    assert!(last < TOTAL as u64, "the proxy absorbed all 50 MiB");

    let mut got = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    let mut expected = (0..65536u32).map(|i| (i % 251) as u8).cycle();
    loop {
        let n = c.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        assert!(
            buf[..n].iter().all(|b| Some(*b) == expected.next()),
            "corrupted at {got}"
        );
        got += n;
    }
    assert_eq!(got, TOTAL);
    let (_, peak) = peers::rss_kib(pid);
    assert!(
        peak < base + 16 * 1024,
        "proxy memory grew from {base} KiB to a peak of {peak} KiB"
    );
}

#[test]
fn a_thousand_concurrent_connections() {
    peers::raise_fd_limit();
    let up = Upstream::echo();
    let p = proxy_to(&[&up], &[]);
    let mut conns: Vec<_> = (0..1000).map(|_| p.connect()).collect();
    for (i, c) in conns.iter_mut().enumerate() {
        c.write_all(format!("{i:06}").as_bytes()).unwrap();
    }
    for (i, c) in conns.iter_mut().enumerate() {
        assert_eq!(read_n(c, 6), format!("{i:06}").as_bytes());
        c.shutdown(Shutdown::Write).unwrap();
    }
    for c in conns.iter_mut() {
        assert!(read_to_end(c).is_empty());
    }
    p.wait_metric("tcp_proxy_closes_total", &["reason=\"done\""], 1000.0);
}

#[test]
fn round_robin_spreads_and_least_conn_avoids_busy_upstreams() {
    let ups = [
        Upstream::named("a"),
        Upstream::named("b"),
        Upstream::named("c"),
    ];
    let refs: Vec<&Upstream> = ups.iter().collect();
    let p = proxy_to(&refs, &[]);
    let mut seen = std::collections::HashMap::new();
    for _ in 0..9 {
        *seen.entry(which(&mut p.connect())).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert!(seen.values().all(|&n| n == 3), "{seen:?}");

    let p = proxy_to(&refs, &["--lb=least-conn"]);
    let mut held = Vec::new();
    let mut names = std::collections::HashSet::new();
    for _ in 0..3 {
        let mut c = p.connect();
        names.insert(which(&mut c));
        held.push(c);
    }
    assert_eq!(
        names.len(),
        3,
        "each open connection went to a different upstream"
    );
}

#[test]
fn hash_source_keeps_a_client_on_one_upstream() {
    let ups = [
        Upstream::named("a"),
        Upstream::named("b"),
        Upstream::named("c"),
    ];
    let refs: Vec<&Upstream> = ups.iter().collect();
    let p = proxy_to(&refs, &["--lb=hash-source"]);
    let first = which(&mut p.connect());
    for _ in 0..5 {
        assert_eq!(which(&mut p.connect()), first);
    }
}

#[test]
fn failing_endpoint_is_ejected_and_returns() {
    let good = Upstream::named("good");
    let dead_addr = support::free_addr();
    let mut p = Proxy::start(
        &[
            "--listen=127.0.0.1:0",
            &format!("--upstream={},{dead_addr}", good.addr),
            "--outlier-failures=2",
            "--outlier-ejection-time=500ms",
        ],
        1,
    );
    // Every client is served: failed connects retry on the good endpoint.
    for _ in 0..4 {
        assert_eq!(which(&mut p.connect()), "good");
    }
    p.sidecar.wait_for_log("endpoint ejected");
    // The admin server lists both endpoints with their state.
    let state: serde_json::Value =
        serde_json::from_str(&http::get(p.admin, "/endpoints").text()).unwrap();
    let listed: Vec<String> = state[0]["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["address"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        listed,
        [good.addr.to_string(), dead_addr.to_string()],
        "{state}"
    );
    p.wait_metric(
        "tcp_proxy_ejections_total",
        &[&format!("upstream=\"{dead_addr}\"")],
        1.0,
    );
    // Bring the endpoint up; after its ejection ends it gets traffic again.
    let _back = Upstream::on(TcpListener::bind(dead_addr).unwrap(), |mut s| {
        let _ = s.write_all(b"back\n");
        peers::echo(s)
    });
    p.sidecar.wait_for_log("endpoint returned from ejection");
    let mut names = std::collections::HashSet::new();
    for _ in 0..4 {
        names.insert(which(&mut p.connect()));
    }
    assert!(names.contains("back"), "{names:?}");
}

#[test]
fn active_health_checks_mark_endpoints_down_and_up() {
    let good = Upstream::named("good");
    let dead_addr = support::free_addr();
    let mut p = Proxy::start(
        &[
            "--listen=127.0.0.1:0",
            &format!("--upstream={},{dead_addr}", good.addr),
            "--health-check-interval=100ms",
            "--health-check-unhealthy-threshold=1",
            "--health-check-healthy-threshold=1",
        ],
        1,
    );
    // The first check can fail before the proxy logs that it listens, so the
    // log cursor may already be past "endpoint unhealthy": wait on the gauge.
    p.wait_metric("tcp_proxy_endpoints", &["state=\"unhealthy\""], 1.0);
    for _ in 0..4 {
        assert_eq!(which(&mut p.connect()), "good");
    }
    let _back = Upstream::on(TcpListener::bind(dead_addr).unwrap(), |mut s| {
        let _ = s.write_all(b"back\n");
        peers::echo(s)
    });
    p.sidecar.wait_for_log("endpoint healthy");
    let mut names = std::collections::HashSet::new();
    for _ in 0..4 {
        names.insert(which(&mut p.connect()));
    }
    assert!(names.contains("back"), "{names:?}");
}

#[test]
fn health_checks_with_send_and_expect_catch_a_listening_but_broken_endpoint() {
    // Both accept connections; only one answers PING with PONG.
    let serve = |answer: &'static [u8], name: &'static str| {
        Upstream::start(move |mut s| {
            let mut buf = [0u8; 6];
            if s.read_exact(&mut buf).is_ok() && &buf == b"PING\r\n" {
                let _ = s.write_all(answer);
            } else {
                // not a health check: a client through the proxy
                let _ = s.write_all(format!("{name}\n").as_bytes());
                peers::echo(s)
            }
        })
    };
    let good = serve(b"PONG\r\n", "good");
    let broken = serve(b"ERR\r\n", "broken");
    let mut p = Proxy::start(
        &[
            "--listen=127.0.0.1:0",
            &format!("--upstream={},{}", good.addr, broken.addr),
            "--health-check-interval=100ms",
            "--health-check-send=PING\\r\\n",
            "--health-check-expect=PONG",
            "--health-check-unhealthy-threshold=1",
        ],
        1,
    );
    let line = p.sidecar.wait_for_log("endpoint unhealthy");
    assert!(line.contains(&broken.addr.to_string()), "{line}");
    for _ in 0..4 {
        let mut c = p.connect();
        c.write_all(b"client").unwrap();
        assert_eq!(which(&mut c), "good");
    }
}

#[test]
fn upstreams_file_reload_keeps_open_connections() {
    let a = Upstream::named("a");
    let b = Upstream::named("b");
    let dir = support::tempdir();
    let file = dir.path().join("upstreams");
    support::write(&file, &format!("# endpoints\n{}\n", a.addr));
    let mut p = Proxy::start(
        &[
            "--listen=127.0.0.1:0",
            &format!("--upstreams-file={}", file.display()),
        ],
        1,
    );
    let mut old = p.connect();
    assert_eq!(which(&mut old), "a");

    // Replace the file the way a ConfigMap update does: write aside, rename.
    let tmp = dir.path().join(".upstreams.tmp");
    support::write(&tmp, &format!("{}\n", b.addr));
    std::fs::rename(&tmp, &file).unwrap();
    p.sidecar.wait_for_log("upstreams file reloaded");
    p.sidecar.wait_for_log(&format!("endpoints={}", b.addr));
    assert_eq!(which(&mut p.connect()), "b");
    // The connection opened before the reload still relays.
    old.write_all(b"still here").unwrap();
    assert_eq!(read_n(&mut old, 10), b"still here");

    // A broken file is rejected and the previous upstreams stay.
    support::write(&file, "not an upstream\n");
    p.sidecar.wait_for_log("upstreams file rejected");
    assert_eq!(which(&mut p.connect()), "b");
}

#[test]
fn names_are_resolved_and_every_address_is_an_endpoint() {
    let up = Upstream::echo();
    let p = Proxy::start(
        &[
            "--listen=127.0.0.1:0",
            &format!("--upstream=localhost:{}", up.addr.port()),
            "--dns-refresh=200ms",
        ],
        1,
    );
    // Logged before the listener, which Proxy::start waited for.
    let log = p.sidecar.stderr();
    let line = log
        .lines()
        .find(|l| l.contains("endpoints updated"))
        .expect("endpoints logged");
    assert!(
        line.contains(&format!("127.0.0.1:{}", up.addr.port())),
        "{line}"
    );
    let mut c = p.connect();
    c.write_all(b"hi").unwrap();
    assert_eq!(read_n(&mut c, 2), b"hi");
}

#[test]
fn several_routes_each_reach_their_upstreams() {
    let a = Upstream::named("a");
    let b = Upstream::named("b");
    let p = Proxy::start(
        &[
            &format!("--route=127.0.0.1:0={}", a.addr),
            &format!("--route=127.0.0.1:0={}", b.addr),
        ],
        2,
    );
    assert_eq!(which(&mut connect(p.listens[0])), "a");
    assert_eq!(which(&mut connect(p.listens[1])), "b");
}

#[test]
fn send_proxy_protocol_v1_and_v2() {
    for version in ["v1", "v2"] {
        let (up, accepted) = Upstream::manual();
        let p = proxy_to(&[&up], &[&format!("--send-proxy-protocol={version}")]);
        let mut c = p.connect();
        c.write_all(b"payload").unwrap();
        let client = c.local_addr().unwrap();
        let mut u = recv(&accepted);
        if version == "v1" {
            let expected = format!(
                "PROXY TCP4 127.0.0.1 127.0.0.1 {} {}\r\npayload",
                client.port(),
                p.addr().port()
            );
            assert_eq!(
                String::from_utf8(read_n(&mut u, expected.len())).unwrap(),
                expected
            );
        } else {
            let h = read_n(&mut u, 28 + 7);
            assert_eq!(&h[..12], b"\r\n\r\n\0\r\nQUIT\n");
            assert_eq!(&h[12..16], &[0x21, 0x11, 0, 12]);
            assert_eq!(&h[16..20], &[127, 0, 0, 1]);
            assert_eq!(u16::from_be_bytes([h[24], h[25]]), client.port());
            assert_eq!(u16::from_be_bytes([h[26], h[27]]), p.addr().port());
            assert_eq!(&h[28..], b"payload");
        }
    }
}

#[test]
fn accept_proxy_protocol_passes_the_announced_client_on() {
    let (up, accepted) = Upstream::manual();
    let p = proxy_to(
        &[&up],
        &["--accept-proxy-protocol", "--send-proxy-protocol=v1"],
    );
    // A v2 header split across two writes, with payload right behind it.
    let mut c = p.connect();
    let mut header = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
    header.extend_from_slice(&[192, 0, 2, 7, 198, 51, 100, 9]);
    header.extend_from_slice(&4321u16.to_be_bytes());
    header.extend_from_slice(&443u16.to_be_bytes());
    c.write_all(&header[..10]).unwrap();
    c.flush().unwrap();
    let mut rest = header[10..].to_vec();
    rest.extend_from_slice(b"hello");
    c.write_all(&rest).unwrap();
    let mut u = recv(&accepted);
    let expected = "PROXY TCP4 192.0.2.7 198.51.100.9 4321 443\r\nhello";
    assert_eq!(
        String::from_utf8(read_n(&mut u, expected.len())).unwrap(),
        expected
    );

    // No header: turned away and counted.
    let mut bad = p.connect();
    bad.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    assert!(closed(&mut bad));
    p.wait_metric(
        "tcp_proxy_rejected_connections_total",
        &["reason=\"proxy_protocol\""],
        1.0,
    );
}

#[test]
fn accepted_proxy_v2_headers_may_be_as_long_as_their_length_field_allows() {
    // Envoy's V2ParseExtensionsLargeThanInitMaxReadBytes: one 65,520-byte TLV.
    let (up, accepted) = Upstream::manual();
    let p = proxy_to(&[&up], &["--accept-proxy-protocol"]);
    let mut c = p.connect();
    let mut header = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\xff\xff".to_vec();
    header.extend_from_slice(&[1, 2, 3, 4, 0, 1, 1, 2, 3, 5, 0, 2]);
    header.extend_from_slice(&[0x02, 0xff, 0xf0]);
    header.extend(std::iter::repeat_n(b'a', 65520));
    c.write_all(&header).unwrap();
    c.write_all(b"DATA").unwrap();
    let mut u = recv(&accepted);
    assert_eq!(read_n(&mut u, 4), b"DATA");
}

#[test]
fn a_client_that_never_sends_its_proxy_header_is_closed_at_the_timeout() {
    let (up, accepted) = Upstream::manual();
    let p = proxy_to(
        &[&up],
        &["--accept-proxy-protocol", "--proxy-protocol-timeout=300ms"],
    );
    // Half a v1 header, then silence.
    let mut c = p.connect();
    c.write_all(b"PROXY TCP4 192.0.2.7").unwrap();
    assert!(closed(&mut c));
    p.wait_metric(
        "tcp_proxy_rejected_connections_total",
        &["reason=\"proxy_protocol\""],
        1.0,
    );
    assert!(
        accepted.try_recv().is_err(),
        "no upstream connection is made for it"
    );
}

#[test]
fn limits_and_rate_limit_turn_connections_away() {
    let up = Upstream::echo();
    let p = proxy_to(&[&up], &["--max-connections=1"]);
    let mut held = p.connect();
    held.write_all(b"1").unwrap();
    assert_eq!(read_n(&mut held, 1), b"1");
    let mut over = p.connect();
    assert!(closed(&mut over));
    p.wait_metric(
        "tcp_proxy_rejected_connections_total",
        &["reason=\"max_connections\""],
        1.0,
    );

    let p = proxy_to(&[&up], &["--rate-limit=2/m"]);
    for _ in 0..2 {
        let mut c = p.connect();
        c.write_all(b"x").unwrap();
        assert_eq!(read_n(&mut c, 1), b"x");
    }
    let mut limited = p.connect();
    assert!(closed(&mut limited));
    p.wait_metric(
        "tcp_proxy_rejected_connections_total",
        &["reason=\"rate_limited\""],
        1.0,
    );

    let p = proxy_to(&[&up], &["--max-connections-per-upstream=1"]);
    let mut held = p.connect();
    held.write_all(b"1").unwrap();
    assert_eq!(read_n(&mut held, 1), b"1");
    let mut over = p.connect();
    assert!(closed(&mut over));
    p.wait_metric(
        "tcp_proxy_rejected_connections_total",
        &["reason=\"upstream_limit\""],
        1.0,
    );
}

#[test]
fn metrics_count_bytes_per_route_and_upstream_and_access_log_records() {
    let up = Upstream::echo();
    let dir = support::tempdir();
    let log = dir.path().join("access.log");
    let p = proxy_to(&[&up], &[&format!("--access-log={}", log.display())]);
    let mut c = p.connect();
    c.write_all(&[7u8; 1000]).unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_end(&mut c).len(), 1000);
    let route = format!("route=\"{}\"", p.addr());
    let upstream = format!("upstream=\"{}\"", up.addr);
    p.wait_metric("tcp_proxy_closes_total", &[&route, "reason=\"done\""], 1.0);
    for dir in ["upstream", "downstream"] {
        let d = format!("direction=\"{dir}\"");
        assert_eq!(
            p.metric("tcp_proxy_bytes_total", &[&route, &upstream, &d]),
            1000.0
        );
    }
    assert_eq!(p.metric("tcp_proxy_connections_total", &[&route]), 1.0);
    assert_eq!(p.metric("tcp_proxy_connections_active", &[&route]), 0.0);
    assert_eq!(
        p.metric("tcp_proxy_upstream_connections_total", &[&route, &upstream]),
        1.0
    );
    assert_eq!(
        p.metric("tcp_proxy_connection_duration_seconds_count", &[&route]),
        1.0
    );

    wait_until("access log record", || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.ends_with('\n'))
    });
    let text = std::fs::read_to_string(&log).unwrap();
    let rec: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(rec["bytes_sent"], 1000);
    assert_eq!(rec["bytes_received"], 1000);
    assert_eq!(rec["close"], "done");
    assert_eq!(rec["upstream"], up.addr.to_string());
    assert_eq!(rec["client"], c.local_addr().unwrap().to_string());
    assert!(
        rec["upstream_local"]
            .as_str()
            .is_some_and(|a| a.starts_with("127.0.0.1:")),
        "{rec}"
    );
}

#[test]
fn sigterm_stops_accepting_and_lets_open_connections_finish() {
    let up = Upstream::echo();
    let mut p = proxy_to(&[&up], &["--shutdown-grace=30s"]);
    let mut c = p.connect();
    c.write_all(b"before").unwrap();
    assert_eq!(read_n(&mut c, 6), b"before");

    p.sidecar.signal(nix::sys::signal::Signal::SIGTERM);
    p.sidecar.wait_for_log("stopped accepting");
    assert_eq!(http::get(p.admin, "/readyz").status, 503);
    wait_until("listener closed", || {
        std::net::TcpStream::connect_timeout(&p.addr(), Duration::from_millis(500)).is_err()
    });
    // The open connection still works, and closing it ends the process.
    c.write_all(b"during").unwrap();
    assert_eq!(read_n(&mut c, 6), b"during");
    c.shutdown(Shutdown::Write).unwrap();
    assert!(read_to_end(&mut c).is_empty());
    p.sidecar.wait_for_log("drained");
    assert_eq!(p.sidecar.wait_exit().code(), Some(0));
}

#[test]
fn quitquitquit_drains_like_sigterm() {
    let up = Upstream::echo();
    let mut p = proxy_to(&[&up], &[]);
    let mut c = p.connect();
    c.write_all(b"x").unwrap();
    assert_eq!(read_n(&mut c, 1), b"x");
    let r = http::request(p.admin, "POST", "/quitquitquit", &[], b"");
    assert_eq!(r.status, 200);
    p.sidecar.wait_for_log("stopped accepting");
    assert_eq!(http::get(p.admin, "/readyz").status, 503);
    c.shutdown(Shutdown::Write).unwrap();
    assert!(read_to_end(&mut c).is_empty());
    assert_eq!(p.sidecar.wait_exit().code(), Some(0));
}

#[test]
fn sigterm_closes_what_is_left_after_the_grace_period() {
    let up = Upstream::echo();
    let mut p = proxy_to(&[&up], &["--shutdown-grace=500ms"]);
    let mut c = p.connect();
    c.write_all(b"x").unwrap();
    assert_eq!(read_n(&mut c, 1), b"x");
    p.sidecar.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(closed(&mut c));
    assert_eq!(p.sidecar.wait_exit().code(), Some(0));
}

#[test]
fn the_grace_period_running_out_resets_the_upstream_too() {
    // A FIN would tell the upstream that the client's upload is complete.
    let (up, accepted) = Upstream::manual();
    let mut p = proxy_to(&[&up], &["--shutdown-grace=300ms"]);
    let mut c = p.connect();
    c.write_all(b"partial upload").unwrap();
    let mut u = recv(&accepted);
    assert_eq!(read_n(&mut u, 14), b"partial upload");
    p.sidecar.signal(nix::sys::signal::Signal::SIGTERM);
    let err = u
        .read(&mut [0u8; 16])
        .expect_err("upstream should see a reset, not EOF");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
    assert!(closed(&mut c));
    assert_eq!(p.sidecar.wait_exit().code(), Some(0));
}

#[test]
fn bad_flags_exit_2_naming_the_flag() {
    for (args, needle) in [
        (vec!["tcp-proxy"], "nothing to proxy"),
        (
            vec!["tcp-proxy", "--listen=127.0.0.1:0", "--upstream=nohost"],
            "--upstream",
        ),
        (
            vec!["tcp-proxy", "--listen=nowhere", "--upstream=a:1"],
            "--listen",
        ),
        (vec!["tcp-proxy", "--route=127.0.0.1:0"], "--route"),
        (
            vec![
                "tcp-proxy",
                "--listen=127.0.0.1:0",
                "--upstream=a:1",
                "--lb=best",
            ],
            "--lb",
        ),
        (
            vec![
                "tcp-proxy",
                "--listen=127.0.0.1:0",
                "--upstream=a:1",
                "--rate-limit=fast",
            ],
            "--rate-limit",
        ),
        (
            vec![
                "tcp-proxy",
                "--listen=127.0.0.1:0",
                "--upstreams-file=/nonexistent/file",
            ],
            "--upstreams-file",
        ),
    ] {
        // Off, so the default admin port in use elsewhere cannot decide the exit code.
        let mut args = args;
        args.push("--admin-addr=off");
        let out = support::run(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

#[test]
fn port_in_use_fails_start_up_clearly() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let out = support::run(&[
        "tcp-proxy",
        &format!("--listen={addr}"),
        "--upstream=127.0.0.1:1",
        "--admin-addr=off",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--listen") && err.contains("cannot listen"),
        "{err}"
    );
}

/// Out of file descriptors, accept fails: the proxy backs off instead of
/// spinning, and serves again once connections close.
#[test]
fn fd_exhaustion_backs_off_and_recovers() {
    use std::os::unix::process::CommandExt;
    let up = Upstream::echo();
    let mut cmd = std::process::Command::new(support::bin());
    cmd.args([
        "tcp-proxy",
        "--admin-addr=127.0.0.1:0",
        "--listen=127.0.0.1:0",
        &format!("--upstream={}", up.addr),
    ]);
    unsafe {
        cmd.pre_exec(|| {
            let r = libc::rlimit {
                rlim_cur: 48,
                rlim_max: 48,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &r) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut p = Proxy::spawn(&mut cmd, 1);
    let mut held = Vec::new();
    for i in 0..40 {
        let mut c = p.connect();
        c.write_all(format!("{i:03}").as_bytes()).unwrap();
        held.push(c);
    }
    p.sidecar.wait_for_log("accept failed");
    drop(held);
    wait_until("proxy serves again", || {
        let mut c = p.connect();
        c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        c.write_all(b"ok?").is_ok() && {
            let mut buf = [0u8; 3];
            c.read_exact(&mut buf).is_ok() && &buf == b"ok?"
        }
    });
    assert!(p.metric("tcp_proxy_accept_errors_total", &[]) >= 1.0);
}

/// DNS re-resolution for real: the proxy runs in its own mount namespace
/// with a private /etc/hosts, and the name moves from one upstream to
/// another while the proxy runs. Needs root (unshare, mount).
#[test]
fn names_are_resolved_again_every_dns_refresh() {
    use std::ffi::CString;
    use std::os::unix::process::CommandExt;
    if !support::require_root("private /etc/hosts through a mount namespace") {
        return;
    }
    let can_unshare = std::process::Command::new("unshare")
        .args(["-m", "true"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !support::require(can_unshare, "CAP_SYS_ADMIN (`unshare -m` failed)") {
        return;
    }
    // Two upstreams on one port, at two loopback addresses.
    let a = TcpListener::bind("127.0.0.2:0").unwrap();
    let port = a.local_addr().unwrap().port();
    let b = TcpListener::bind(("127.0.0.3", port)).unwrap();
    let _a = Upstream::on(a, |mut s| {
        let _ = s.write_all(b"a\n");
        peers::echo(s)
    });
    let _b = Upstream::on(b, |mut s| {
        let _ = s.write_all(b"b\n");
        peers::echo(s)
    });

    let dir = support::tempdir();
    let hosts = dir.path().join("hosts");
    support::write(&hosts, "127.0.0.2 backend.test\n");
    // Built before fork: the child may not allocate.
    let src = CString::new(hosts.to_str().unwrap()).unwrap();
    let root = CString::new("/").unwrap();
    let target = CString::new("/etc/hosts").unwrap();
    let mut cmd = std::process::Command::new(support::bin());
    cmd.args([
        "tcp-proxy",
        "--admin-addr=127.0.0.1:0",
        "--listen=127.0.0.1:0",
        &format!("--upstream=backend.test:{port}"),
        "--dns-refresh=100ms",
    ]);
    unsafe {
        cmd.pre_exec(move || {
            if libc::unshare(libc::CLONE_NEWNS) != 0
                || libc::mount(
                    std::ptr::null(),
                    root.as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ) != 0
                || libc::mount(
                    src.as_ptr(),
                    target.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND,
                    std::ptr::null(),
                ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut p = Proxy::spawn(&mut cmd, 1);
    assert_eq!(which(&mut p.connect()), "a");

    // Rewritten in place (the bind mount pins the inode).
    std::fs::write(&hosts, "127.0.0.3 backend.test\n").unwrap();
    p.sidecar
        .wait_for_log(&format!("endpoints=127.0.0.3:{port}"));
    assert_eq!(which(&mut p.connect()), "b");
}
