//! Transparent mode for real: a network namespace made for the test, the
//! iptables REDIRECT rules from the README (uid 1337 excluded, as Istio
//! does), the proxy running as uid 1337 on the capture port, and a client
//! whose connections to several IPv4 and IPv6 destinations land on the
//! right upstream through the proxy. Needs root (CI runs as root).

#[path = "tcp_proxy/peers.rs"]
mod peers;
mod support;

use std::fs::File;
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::Command;

use peers::{closed, which, Upstream};
use support::{Sidecar, DEADLINE};

const PROXY_UID: u32 = 1337;

/// A named network namespace (`ip netns add`), deleted on drop.
struct Netns {
    name: String,
    file: File,
}

impl Netns {
    fn create(tag: &str) -> Netns {
        let name = format!("tcpproxy-{tag}-{}", std::process::id());
        sh(&["ip", "netns", "add", &name]);
        let file = File::open(format!("/run/netns/{name}")).unwrap();
        Netns { name, file }
    }

    fn exec(&self, args: &[&str]) {
        let mut full = vec!["ip", "netns", "exec", &self.name];
        full.extend_from_slice(args);
        sh(&full);
    }

    /// Runs `f` on a thread that entered the namespace; sockets it creates
    /// live there, whichever thread uses them later.
    fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let fd = self.file.try_clone().unwrap();
        std::thread::spawn(move || {
            assert_eq!(
                unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) },
                0,
                "setns"
            );
            f()
        })
        .join()
        .unwrap()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn sh(args: &[&str]) {
    let out = support::run_cmd(Command::new(args[0]).args(&args[1..]));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The README's rules: everything TCP leaving the namespace goes to the
/// capture port 15001, except the proxy's own traffic (uid 1337, the loop
/// guard) and the admin port.
fn install_redirect_rules(ns: &Netns) {
    for t in ["iptables", "ip6tables"] {
        for rule in [
            "-t nat -N PROXY_REDIRECT",
            "-t nat -A PROXY_REDIRECT -p tcp -j REDIRECT --to-ports 15001",
            "-t nat -N PROXY_OUTPUT",
            "-t nat -A OUTPUT -p tcp -j PROXY_OUTPUT",
            "-t nat -A PROXY_OUTPUT -m owner --uid-owner 1337 -j RETURN",
            "-t nat -A PROXY_OUTPUT -p tcp --dport 15000 -j RETURN",
            "-t nat -A PROXY_OUTPUT -j PROXY_REDIRECT",
        ] {
            let mut args = vec![t];
            args.extend(rule.split(' '));
            ns.exec(&args);
        }
    }
}

/// Root and the tools, or a visible skip.
fn preflight() -> bool {
    if !support::require_root("transparent mode needs a network namespace and iptables") {
        return false;
    }
    // iptables and ip live in sbin, which a non-login PATH may lack.
    static PATH: std::sync::Once = std::sync::Once::new();
    PATH.call_once(|| {
        let path = std::env::var("PATH").unwrap_or_default();
        if !path.contains("/usr/sbin") {
            std::env::set_var("PATH", format!("{path}:/usr/sbin:/sbin"));
        }
    });
    if !support::require_peer("iptables") || !support::require_peer("ip") {
        return false;
    }
    // Root in a container without CAP_SYS_ADMIN/CAP_NET_ADMIN, or a kernel
    // without NAT: say so loudly instead of failing on the environment.
    static PROBES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let probe = format!("tcpproxy-probe{n}-{}", std::process::id());
    let ok = Command::new("ip")
        .args(["netns", "add", &probe])
        .output()
        .is_ok_and(|o| o.status.success());
    if !support::require(ok, "CAP_SYS_ADMIN (cannot create a network namespace)") {
        return false;
    }
    let nat = Command::new("ip")
        .args([
            "netns", "exec", &probe, "iptables", "-t", "nat", "-L", "OUTPUT",
        ])
        .output()
        .is_ok_and(|o| o.status.success());
    let _ = Command::new("ip").args(["netns", "del", &probe]).status();
    if !support::require(
        nat,
        "iptables NAT in the kernel (`iptables -t nat -L` failed in a namespace)",
    ) {
        return false;
    }
    true
}

/// The proxy inside `ns` as uid 1337 (from a copy of the binary that uid
/// can execute), admin on 127.0.0.1:15000 there; returns once it is ready.
fn start_proxy(ns: &Netns, flags: &[&str]) -> (tempfile::TempDir, Sidecar) {
    let dir = support::tempdir();
    // The proxy's own directory: the binary, and room for its access log.
    std::os::unix::fs::chown(dir.path(), Some(PROXY_UID), Some(PROXY_UID)).unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let bin = dir.path().join("sidecar");
    std::fs::copy(support::bin(), &bin).unwrap();
    let mut cmd = Command::new(&bin);
    cmd.args([
        "tcp-proxy",
        "--admin-addr=127.0.0.1:15000",
        "--connect-timeout=5s",
    ]);
    cmd.args(flags).current_dir(dir.path());
    let netns_fd = ns.file.as_raw_fd();
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(netns_fd, libc::CLONE_NEWNET) != 0
                || libc::setgroups(0, std::ptr::null()) != 0
                || libc::setgid(PROXY_UID) != 0
                || libc::setuid(PROXY_UID) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut proxy = Sidecar::spawn(&mut cmd);
    proxy.wait_for_log("listening addr=");
    ns.run(|| {
        let admin: SocketAddr = "127.0.0.1:15000".parse().unwrap();
        support::wait_until("proxy ready", || {
            support::http::get(admin, "/readyz").status == 200
        })
    });
    (dir, proxy)
}

#[test]
fn redirected_connections_reach_their_original_destination() {
    if !preflight() {
        return;
    }
    let ns = Netns::create("out");
    ns.exec(&["ip", "link", "set", "lo", "up"]);
    ns.exec(&["ip", "addr", "add", "10.0.0.1/32", "dev", "lo"]);
    ns.exec(&["ip", "addr", "add", "10.0.0.2/32", "dev", "lo"]);
    ns.exec(&[
        "ip",
        "-6",
        "addr",
        "add",
        "fd00::1/128",
        "dev",
        "lo",
        "nodad",
    ]);
    install_redirect_rules(&ns);

    // Upstreams inside the namespace, each telling who it is.
    let destinations: Vec<(SocketAddr, &'static str)> = vec![
        ("10.0.0.1:8080".parse().unwrap(), "v4-a"),
        ("10.0.0.2:9090".parse().unwrap(), "v4-b"),
        ("[fd00::1]:8080".parse().unwrap(), "v6"),
    ];
    let ups: Vec<Upstream> = destinations
        .iter()
        .map(|&(addr, name)| {
            let l = ns.run(move || TcpListener::bind(addr).unwrap());
            Upstream::on(l, move |mut s| {
                let _ = s.write_all(format!("{name}\n").as_bytes());
                peers::echo(s)
            })
        })
        .collect();

    let (_dir, mut proxy) = start_proxy(&ns, &["--transparent-listen=[::]:15001"]);
    let admin: SocketAddr = "127.0.0.1:15000".parse().unwrap();

    // A client (root, so redirected) dials each destination directly.
    for &(dst, name) in &destinations {
        let got = ns.run(move || {
            let mut s = TcpStream::connect_timeout(&dst, DEADLINE).unwrap();
            s.set_read_timeout(Some(DEADLINE)).unwrap();
            let got = which(&mut s);
            s.write_all(b"ping").unwrap();
            (got, peers::read_n(&mut s, 4))
        });
        assert_eq!(got, (name.to_string(), b"ping".to_vec()), "via {dst}");
    }
    let metrics = ns.run(move || support::metrics::scrape(admin));
    assert_eq!(
        support::metrics::sum(&metrics, "tcp_proxy_connections_total", &[]),
        3.0,
        "all three went through the proxy:\n{metrics}"
    );
    for &(dst, _) in &destinations {
        let label = format!("upstream=\"{dst}\"");
        assert_eq!(
            support::metrics::sum(&metrics, "tcp_proxy_upstream_connections_total", &[&label]),
            1.0,
            "{dst}:\n{metrics}"
        );
    }

    // Straight to the capture port: its original destination is the proxy
    // itself, so it is refused instead of looping.
    for direct in ["127.0.0.1:15001", "10.0.0.1:15001"] {
        let direct: SocketAddr = direct.parse().unwrap();
        let was_closed = ns.run(move || {
            // The reset can beat connect_timeout's own error check.
            let mut s = match TcpStream::connect_timeout(&direct, DEADLINE) {
                Ok(s) => s,
                Err(e) => return e.kind() == std::io::ErrorKind::ConnectionReset,
            };
            s.set_read_timeout(Some(DEADLINE)).unwrap();
            closed(&mut s)
        });
        assert!(was_closed, "{direct} was not refused");
    }
    proxy.wait_for_log("refusing a connection addressed to the proxy itself");
    support::wait_until("loop rejections counted", || {
        let m = ns.run(move || support::metrics::scrape(admin));
        support::metrics::sum(
            &m,
            "tcp_proxy_rejected_connections_total",
            &["reason=\"loop\""],
        ) >= 2.0
    });
    drop(ups);
}

/// A redirected connection that speaks HTTP is detected and each request
/// goes to the connection's original destination, with the proxy's headers.
#[test]
fn redirected_http_requests_go_to_their_original_destination() {
    if !preflight() {
        return;
    }
    let ns = Netns::create("http");
    ns.exec(&["ip", "link", "set", "lo", "up"]);
    ns.exec(&["ip", "addr", "add", "10.0.0.3/32", "dev", "lo"]);
    install_redirect_rules(&ns);
    // An HTTP upstream that answers with the request head it received.
    let dst: SocketAddr = "10.0.0.3:8080".parse().unwrap();
    let listener = ns.run(move || TcpListener::bind(dst).unwrap());
    let _up = Upstream::on(listener, |mut s| {
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && std::io::Read::read(&mut s, &mut b).unwrap_or(0) == 1
        {
            head.push(b[0]);
        }
        let answer = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            head.len()
        );
        let _ = s.write_all(answer.as_bytes());
        let _ = s.write_all(&head);
    });
    let (_dir, _proxy) = start_proxy(&ns, &["--transparent-listen=[::]:15001"]);
    let answer = ns.run(move || {
        let mut s = TcpStream::connect_timeout(&dst, DEADLINE).unwrap();
        s.set_read_timeout(Some(DEADLINE)).unwrap();
        s.write_all(b"GET /x HTTP/1.1\r\nHost: svc\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        std::io::Read::read_to_string(&mut s, &mut out).unwrap();
        out.to_lowercase()
    });
    assert!(answer.starts_with("http/1.1 200"), "{answer}");
    assert!(answer.contains("x-forwarded-for: "), "{answer}");
    assert!(answer.contains("x-forwarded-proto: http"), "{answer}");
    assert!(answer.contains("x-request-id: "), "{answer}");
    let admin: SocketAddr = "127.0.0.1:15000".parse().unwrap();
    let metrics = ns.run(move || support::metrics::scrape(admin));
    let label = format!("upstream=\"{dst}\"");
    assert_eq!(
        support::metrics::sum(&metrics, "tcp_proxy_http_requests_total", &[&label]),
        1.0,
        "{metrics}"
    );
}

/// Inbound (provider side): a second namespace, joined by a veth pair, is
/// the remote client. PREROUTING redirects what arrives for the app to the
/// proxy on :15006, which sees the real client and relays to the app.
#[test]
fn inbound_redirect_reaches_the_app_and_sees_the_real_client() {
    if !preflight() {
        return;
    }
    let server = Netns::create("in-s");
    let client = Netns::create("in-c");
    let tag = std::process::id() % 100_000;
    let (veth_s, veth_c) = (format!("tps{tag}"), format!("tpc{tag}"));
    sh(&[
        "ip", "link", "add", &veth_s, "type", "veth", "peer", "name", &veth_c,
    ]);
    sh(&["ip", "link", "set", &veth_s, "netns", &server.name]);
    sh(&["ip", "link", "set", &veth_c, "netns", &client.name]);
    for (ns, dev, addr) in [
        (&server, &veth_s, "10.1.0.2/24"),
        (&client, &veth_c, "10.1.0.1/24"),
    ] {
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns.exec(&["ip", "addr", "add", addr, "dev", dev]);
        ns.exec(&["ip", "link", "set", dev, "up"]);
    }
    for rule in [
        "-t nat -N PROXY_INBOUND",
        "-t nat -A PREROUTING -p tcp -j PROXY_INBOUND",
        "-t nat -A PROXY_INBOUND -p tcp --dport 15000 -j RETURN",
        "-t nat -A PROXY_INBOUND -p tcp -j REDIRECT --to-ports 15006",
    ] {
        let mut args = vec!["iptables"];
        args.extend(rule.split(' '));
        server.exec(&args);
    }

    // The app tells each client the peer it sees.
    let app = server.run(|| TcpListener::bind("10.1.0.2:8080").unwrap());
    let _app = Upstream::on(app, |mut s| {
        let peer = s.peer_addr().unwrap();
        let _ = s.write_all(format!("app saw {}\n", peer.ip()).as_bytes());
        peers::echo(s)
    });
    let (dir, _proxy) = start_proxy(
        &server,
        &[
            "--transparent-listen=0.0.0.0:15006",
            // outbound capture beside it, as one sidecar serves both
            "--transparent-listen=[::]:15001",
            "--access-log=access.log",
        ],
    );

    let (greeting, client_addr) = client.run(|| {
        let dst: SocketAddr = "10.1.0.2:8080".parse().unwrap();
        let mut s = TcpStream::connect_timeout(&dst, DEADLINE).unwrap();
        s.set_read_timeout(Some(DEADLINE)).unwrap();
        (which(&mut s), s.local_addr().unwrap())
    });
    // REDIRECT mode: the app sees the proxy's address, not the client's.
    assert_eq!(greeting, "app saw 10.1.0.2");
    let metrics = server.run(|| support::metrics::scrape("127.0.0.1:15000".parse().unwrap()));
    assert_eq!(
        support::metrics::sum(
            &metrics,
            "tcp_proxy_upstream_connections_total",
            &["route=\"0.0.0.0:15006\"", "upstream=\"10.1.0.2:8080\""]
        ),
        1.0,
        "{metrics}"
    );
    // The proxy itself saw the real client and the app's address.
    let log = dir.path().join("access.log");
    support::wait_until("access log record", || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.ends_with('\n'))
    });
    let rec: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(&log)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(rec["peer"], client_addr.to_string(), "{rec}");
    assert_eq!(rec["original_dst"], "10.1.0.2:8080", "{rec}");
}
