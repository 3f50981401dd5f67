//! lighttpd as a real HTTP(S) peer: started per test on loopback, with a
//! fresh self-signed certificate when TLS is wanted.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const BINARY: &str = "/usr/sbin/lighttpd";
const TLS_MODULE: &str = "/usr/lib/lighttpd/mod_openssl.so";

/// Whether lighttpd is installed (see [`super::require`]).
pub fn available() -> bool {
    super::require_peer(BINARY)
}

/// Creates a self-signed certificate for `cn` (with `san`, e.g.
/// `IP:127.0.0.1`, when given) and returns the lighttpd config lines that
/// serve TLS with it, and the certificate to trust. None when lighttpd's
/// TLS module or openssl is missing (see [`super::require`]).
pub fn self_signed_tls(dir: &Path, cn: &str, san: Option<&str>) -> Option<(String, PathBuf)> {
    let have_openssl = Command::new("openssl")
        .arg("version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !available()
        || !super::require_peer(TLS_MODULE)
        || !super::require(have_openssl, "the test peer `openssl`")
    {
        return None;
    }
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let mut cmd = Command::new("openssl");
    cmd.args([
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
    ])
    .args(["-subj", &format!("/CN={cn}")]);
    if let Some(san) = san {
        cmd.args(["-addext", &format!("subjectAltName={san}")]);
    }
    let made = cmd
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run openssl");
    assert!(made.success(), "openssl req failed");
    let conf = format!(
        "server.modules += ( \"mod_openssl\" )\nssl.engine = \"enable\"\nssl.pemfile = \"{}\"\nssl.privkey = \"{}\"\n",
        cert.display(),
        key.display()
    );
    Some((conf, cert))
}

/// Starts lighttpd in the foreground with `conf` and waits until it
/// accepts on `port`.
pub fn spawn(conf: &Path, port: u16) -> super::Peer {
    let child = super::Peer::spawn(
        Command::new(BINARY)
            .arg("-D")
            .arg("-f")
            .arg(conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
    .expect("start lighttpd");
    super::http::wait_listening(format!("127.0.0.1:{port}").parse().unwrap());
    child
}
