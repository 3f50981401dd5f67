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
    if !tls_available() {
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
    openssl(cmd.arg("-keyout").arg(&key).arg("-out").arg(&cert));
    Some((tls_conf(&cert, &key), cert))
}

/// Like [`self_signed_tls`], with a server certificate (not a CA) issued
/// by a CA of its own, as public servers have: returns the config lines
/// and the CA's certificate to trust.
pub fn ca_signed_tls(dir: &Path, cn: &str, san: &str) -> Option<(String, PathBuf)> {
    if !tls_available() {
        return None;
    }
    let (ca, ca_key) = (dir.join("ca.pem"), dir.join("ca-key.pem"));
    openssl(
        Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            ])
            .args(["-subj", "/O=Test/CN=Test CA", "-keyout"])
            .arg(&ca_key)
            .arg("-out")
            .arg(&ca),
    );
    let (csr, cert, key) = (
        dir.join("server.csr"),
        dir.join("server.pem"),
        dir.join("server-key.pem"),
    );
    openssl(
        Command::new("openssl")
            .args(["req", "-new", "-newkey", "rsa:2048", "-nodes"])
            .args(["-subj", &format!("/CN={cn}"), "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&csr),
    );
    let ext = dir.join("server.ext");
    std::fs::write(
        &ext,
        format!("basicConstraints=CA:FALSE\nsubjectAltName={san}\n"),
    )
    .unwrap();
    openssl(
        Command::new("openssl")
            .args(["x509", "-req", "-days", "1", "-in"])
            .arg(&csr)
            .arg("-CA")
            .arg(&ca)
            .arg("-CAkey")
            .arg(&ca_key)
            .args(["-CAcreateserial", "-extfile"])
            .arg(&ext)
            .arg("-out")
            .arg(&cert),
    );
    Some((tls_conf(&cert, &key), ca))
}

/// Whether lighttpd, its TLS module and openssl are installed.
fn tls_available() -> bool {
    let have_openssl = Command::new("openssl")
        .arg("version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    available()
        && super::require_peer(TLS_MODULE)
        && super::require(have_openssl, "the test peer `openssl`")
}

fn openssl(cmd: &mut Command) {
    let made = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run openssl");
    assert!(made.success(), "openssl failed: {cmd:?}");
}

/// lighttpd's config lines that serve TLS with `cert` and `key`.
fn tls_conf(cert: &Path, key: &Path) -> String {
    format!(
        "server.modules += ( \"mod_openssl\" )\nssl.engine = \"enable\"\nssl.pemfile = \"{}\"\nssl.privkey = \"{}\"\n",
        cert.display(),
        key.display()
    )
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
