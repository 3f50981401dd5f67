//! Certificates for the mTLS tests, made by the `openssl` command line (the
//! same recipe as examples/mesh-demo.sh): one CA, leaves with a SPIFFE URI
//! SAN and a DNS SAN, good for server and client auth.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::run_cmd;

pub struct Pki {
    pub dir: PathBuf,
}

/// Paths of one identity's files.
pub struct Leaf {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Certificate then key in one file, as HAProxy's `crt` wants.
    pub pem: PathBuf,
}

impl Leaf {
    pub fn cert(&self) -> &str {
        self.cert.to_str().unwrap()
    }
    pub fn key(&self) -> &str {
        self.key.to_str().unwrap()
    }
    pub fn pem(&self) -> &str {
        self.pem.to_str().unwrap()
    }
}

fn openssl(args: &[&str]) {
    let out = run_cmd(Command::new("openssl").args(args));
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Pki {
    /// A new CA named `name` in `dir`.
    pub fn new(dir: &Path, name: &str) -> Pki {
        std::fs::create_dir_all(dir).unwrap();
        let pki = Pki {
            dir: dir.to_path_buf(),
        };
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &pki.path("ca.key"),
            "-out",
            &pki.path("ca.crt"),
        ]);
        pki
    }

    pub fn path(&self, name: &str) -> String {
        self.dir.join(name).to_str().unwrap().to_string()
    }

    pub fn ca(&self) -> String {
        self.path("ca.crt")
    }

    /// A leaf `name` with DNS SAN `dns` and URI SAN `uri`, signed by the CA;
    /// written to `name.crt`, `name.key` and `name.pem` (replaced atomically
    /// when they exist, as a Secret update does).
    pub fn leaf(&self, name: &str, dns: &str, uri: &str) -> Leaf {
        let tmp = |f: &str| self.path(&format!(".{name}.{f}.tmp"));
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={dns}"),
            "-CA",
            &self.path("ca.crt"),
            "-CAkey",
            &self.path("ca.key"),
            "-addext",
            &format!("subjectAltName=URI:{uri},DNS:{dns}"),
            "-addext",
            "extendedKeyUsage=serverAuth,clientAuth",
            "-addext",
            "basicConstraints=critical,CA:FALSE",
            "-keyout",
            &tmp("key"),
            "-out",
            &tmp("crt"),
        ]);
        let pem = format!(
            "{}{}",
            std::fs::read_to_string(tmp("crt")).unwrap(),
            std::fs::read_to_string(tmp("key")).unwrap()
        );
        std::fs::write(tmp("pem"), pem).unwrap();
        let leaf = Leaf {
            cert: self.dir.join(format!("{name}.crt")),
            key: self.dir.join(format!("{name}.key")),
            pem: self.dir.join(format!("{name}.pem")),
        };
        std::fs::rename(tmp("key"), &leaf.key).unwrap();
        std::fs::rename(tmp("crt"), &leaf.cert).unwrap();
        std::fs::rename(tmp("pem"), &leaf.pem).unwrap();
        leaf
    }
}
