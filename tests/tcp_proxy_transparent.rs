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

use peers::{closed, metric_value, which, Upstream};
use support::{Sidecar, DEADLINE};

const PROXY_UID: u32 = 1337;

/// A named network namespace (`ip netns add`), deleted on drop.
struct Netns {
    name: String,
    file: File,
}

impl Netns {
    fn create() -> Netns {
        let name = format!("tcpproxy-test-{}", std::process::id());
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

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success())
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

#[test]
fn redirected_connections_reach_their_original_destination() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("SKIPPED (needs root): transparent mode needs a network namespace and iptables");
        return;
    }
    // iptables and ip live in sbin, which a non-login PATH may lack.
    let path = std::env::var("PATH").unwrap_or_default();
    std::env::set_var("PATH", format!("{path}:/usr/sbin:/sbin"));
    if !have("iptables") || !have("ip") {
        eprintln!("SKIPPED (needs iptables and iproute2; .ci/packages.d/tcp-proxy lists them)");
        return;
    }
    let ns = Netns::create();
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

    // The proxy as uid 1337 (a copy of the binary that uid can execute).
    let dir = support::tempdir();
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
        "--transparent-listen=[::]:15001",
        "--admin-addr=127.0.0.1:15000",
        "--connect-timeout=5s",
    ]);
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
    let admin: SocketAddr = "127.0.0.1:15000".parse().unwrap();
    ns.run(move || {
        support::wait_until("proxy ready", || {
            support::http::get(admin, "/readyz").status == 200
        })
    });

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
    let metrics = ns.run(move || support::http::get(admin, "/metrics").text());
    assert_eq!(
        metric_value(&metrics, "tcp_proxy_connections_total", &[]),
        3.0,
        "all three went through the proxy:\n{metrics}"
    );
    for &(dst, _) in &destinations {
        let label = format!("upstream=\"{dst}\"");
        assert_eq!(
            metric_value(&metrics, "tcp_proxy_upstream_connections_total", &[&label]),
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
        let m = ns.run(move || support::http::get(admin, "/metrics").text());
        metric_value(
            &m,
            "tcp_proxy_rejected_connections_total",
            &["reason=\"loop\""],
        ) >= 2.0
    });
    drop(ups);
}
