//! Real TCP peers for the tcp-proxy tests: upstream servers on loopback and
//! a proxy launcher that reads the bound addresses from the log.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc::{channel, Receiver};
use std::time::Duration;

use crate::support::{self, Sidecar, DEADLINE};

/// A started proxy and the addresses its listeners bound, in flag order.
pub struct Proxy {
    pub sidecar: Sidecar,
    pub listens: Vec<SocketAddr>,
    pub admin: SocketAddr,
}

impl Proxy {
    /// `sidecar tcp-proxy ARGS`, waiting until `routes` listeners are bound
    /// and the proxy is ready.
    pub fn start(args: &[&str], routes: usize) -> Proxy {
        Self::start_command(&mut Sidecar::command("tcp-proxy", args), routes)
    }

    /// Like `start`, for a command the test prepared (its environment).
    pub fn start_command(cmd: &mut std::process::Command, routes: usize) -> Proxy {
        let proxy = Self::spawn(cmd, routes);
        support::wait_until("proxy ready", || {
            support::http::get(proxy.admin, "/readyz").status == 200
        });
        proxy
    }

    /// Like `start`, for a command the test prepared (limits, uid, namespace).
    pub fn spawn(cmd: &mut std::process::Command, routes: usize) -> Proxy {
        let mut sidecar = Sidecar::spawn(cmd);
        let admin = sidecar.admin_addr();
        let listens = (0..routes)
            .map(|_| {
                let line = sidecar.wait_for_log("listening addr=");
                support::addr_field(&line, "addr=").expect("addr= in listening line")
            })
            .collect();
        Proxy {
            sidecar,
            listens,
            admin,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.listens[0]
    }

    pub fn connect(&self) -> TcpStream {
        connect(self.addr())
    }

    pub fn metrics(&self) -> String {
        support::metrics::scrape(self.admin)
    }

    /// The value of the metric line that starts with `prefix` (name and labels), or 0.
    pub fn metric(&self, name: &str, labels: &[&str]) -> f64 {
        support::metrics::sum(&self.metrics(), name, labels)
    }

    /// Waits until the metric reaches at least `min`.
    pub fn wait_metric(&self, name: &str, labels: &[&str], min: f64) {
        support::wait_until(&format!("{name}{labels:?} >= {min}"), || {
            self.metric(name, labels) >= min
        });
    }
}

pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, DEADLINE).expect("connect to proxy");
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s.set_write_timeout(Some(DEADLINE)).unwrap();
    s
}

/// Reads exactly `n` bytes.
pub fn read_n(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    s.read_exact(&mut buf).expect("read from stream");
    buf
}

/// Reads until EOF; panics on a reset or the deadline.
pub fn read_to_end(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    s.read_to_end(&mut out).expect("read to EOF");
    out
}

/// Whether the peer closed (EOF or reset) within the deadline.
pub fn closed(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
                ) =>
            {
                return true
            }
            Err(_) => return false,
        }
    }
}

/// An upstream server; every accepted connection is handed to `serve` on
/// its own thread.
pub struct Upstream {
    pub addr: SocketAddr,
}

impl Upstream {
    pub fn start(serve: impl Fn(TcpStream) + Send + Sync + Clone + 'static) -> Upstream {
        Self::on(TcpListener::bind("127.0.0.1:0").unwrap(), serve)
    }

    pub fn on(
        listener: TcpListener,
        serve: impl Fn(TcpStream) + Send + Sync + Clone + 'static,
    ) -> Upstream {
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for s in listener.incoming() {
                let Ok(s) = s else { continue };
                s.set_read_timeout(Some(DEADLINE)).unwrap();
                let serve = serve.clone();
                std::thread::spawn(move || serve(s));
            }
        });
        Upstream { addr }
    }

    /// Echoes until EOF, then half-closes.
    pub fn echo() -> Upstream {
        Self::start(echo)
    }

    /// Sends `name\n` first, then echoes: tells tests which upstream they reached.
    pub fn named(name: &'static str) -> Upstream {
        Self::start(move |mut s| {
            let _ = s.write_all(format!("{name}\n").as_bytes());
            echo(s)
        })
    }

    /// Hands every accepted connection to the test.
    pub fn manual() -> (Upstream, Receiver<TcpStream>) {
        let (tx, rx) = channel();
        let tx = std::sync::Mutex::new(tx);
        let tx = std::sync::Arc::new(tx);
        let up = Self::start(move |s| {
            let _ = tx.lock().unwrap().send(s);
        });
        (up, rx)
    }
}

pub fn echo(mut s: TcpStream) {
    let mut buf = [0u8; 16384];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if s.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
    let _ = s.shutdown(Shutdown::Write);
}

/// Reads the `name\n` a named upstream sends first.
pub fn which(s: &mut TcpStream) -> String {
    let mut name = Vec::new();
    let mut b = [0u8; 1];
    while s.read(&mut b).expect("read upstream name") == 1 && b[0] != b'\n' {
        name.push(b[0]);
    }
    String::from_utf8(name).unwrap()
}

pub fn recv(rx: &Receiver<TcpStream>) -> TcpStream {
    rx.recv_timeout(DEADLINE)
        .expect("upstream accepted a connection")
}

/// Raises this process's fd limit to the hard limit (children inherit it).
pub fn raise_fd_limit() {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
        r.rlim_cur = r.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &r);
    }
}

/// A process's resident set size (current and peak) in KiB.
pub fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

pub const SHORT: Duration = Duration::from_millis(200);

/// SO_LINGER 0: the coming close sends RST instead of FIN.
pub fn set_reset_on_close(s: &TcpStream) {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    let rc = unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(s),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &l as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0);
}
