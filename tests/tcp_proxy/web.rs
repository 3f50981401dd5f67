//! Real HTTP peers for the tcp-proxy HTTP tests: nginx upstreams (HTTP/1.1
//! or h2c) that answer with their name, and curl / h2load as clients.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::process::{Command, Stdio};

use crate::support::free_addr;
use crate::support::{self, Peer};

/// An nginx server answering every request with `NAME\n` (and the header
/// `x-upstream: NAME`).
pub struct Nginx {
    pub addr: SocketAddr,
    _process: Peer,
    _dir: tempfile::TempDir,
}

impl Nginx {
    pub fn http1(name: &str) -> Nginx {
        Self::start(name, "")
    }

    /// HTTP/2 with prior knowledge on a plain port (h2c), as gRPC uses.
    pub fn h2c(name: &str) -> Nginx {
        Self::start(name, " http2")
    }

    fn start(name: &str, listen_opts: &str) -> Nginx {
        let dir = support::tempdir();
        let addr = free_addr();
        let d = dir.path().display();
        let conf = format!(
            "daemon off;\nmaster_process off;\nerror_log stderr error;\npid {d}/nginx.pid;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n access_log off;\n client_body_temp_path {d}/body;\n proxy_temp_path {d}/proxy;\n\
              fastcgi_temp_path {d}/fcgi;\n uwsgi_temp_path {d}/uwsgi;\n scgi_temp_path {d}/scgi;\n\
              keepalive_requests 100000;\n\
              server {{\n  listen {addr}{listen_opts};\n  add_header x-upstream {name} always;\n\
               location / {{ return 200 \"{name}\\n\"; }}\n }}\n}}\n"
        );
        let path = dir.path().join("nginx.conf");
        support::write(&path, &conf);
        let process = Peer::spawn(
            Command::new("nginx")
                .arg("-c")
                .arg(&path)
                .arg("-p")
                .arg(dir.path())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit()),
        )
        .expect("start nginx");
        support::http::wait_listening(addr);
        Nginx {
            addr,
            _process: process,
            _dir: dir,
        }
    }
}

/// Runs curl with `args` (bounded by its own --max-time) and returns stdout.
pub fn curl(args: &[&str]) -> String {
    let out = support::run_cmd(
        Command::new("curl")
            .args(["-sS", "--max-time", "30"])
            .args(args),
    );
    assert!(
        out.status.success(),
        "curl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}
