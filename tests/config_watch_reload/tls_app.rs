//! An app whose reload endpoint is served over TLS with a self-signed
//! certificate, as a Prometheus with its own `web.tlsConfig` is: lighttpd
//! serving `GET /-/reload` from a file.

use std::path::Path;
use std::process::{Child, Command, Stdio};

/// The server, stopped on drop.
pub struct TlsApp {
    child: Child,
    pub port: u16,
}

impl Drop for TlsApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl TlsApp {
    /// `None` (after saying so) when lighttpd's TLS module or openssl is
    /// missing; .ci/packages.d/config-watch-reload lists them.
    pub fn start(dir: &Path) -> Option<TlsApp> {
        let have_openssl = Command::new("openssl")
            .arg("version")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !Path::new("/usr/lib/lighttpd/mod_openssl.so").exists() || !have_openssl {
            eprintln!("SKIPPED (lighttpd-mod-openssl or openssl missing)");
            return None;
        }
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        let made = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            ])
            .args(["-subj", "/CN=prometheus.example", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run openssl");
        assert!(made.success(), "openssl req failed");
        let root = dir.join("www");
        std::fs::create_dir_all(root.join("-")).unwrap();
        std::fs::write(root.join("-/reload"), "reloaded\n").unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let conf = dir.join("lighttpd.conf");
        std::fs::write(
            &conf,
            format!(
                "server.document-root = \"{root}\"\nserver.bind = \"127.0.0.1\"\nserver.port = {port}\n\
                 server.errorlog = \"{dir}/lighttpd.log\"\nserver.modules += ( \"mod_openssl\" )\n\
                 ssl.engine = \"enable\"\nssl.pemfile = \"{cert}\"\nssl.privkey = \"{key}\"\n",
                root = root.display(),
                dir = dir.display(),
                cert = cert.display(),
                key = key.display(),
            ),
        )
        .unwrap();
        let child = Command::new("/usr/sbin/lighttpd")
            .arg("-D")
            .arg("-f")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start lighttpd");
        crate::support::http::wait_listening(format!("127.0.0.1:{port}").parse().unwrap());
        Some(TlsApp { child, port })
    }
}
