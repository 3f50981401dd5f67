//! Where the CA certificates are, and the ones that can have issued a
//! certificate, read the way OpenSSL read them for libgit2 (which trusted
//! the bundle and the directory together, as git and curl do).
//!
//! The directory (`SSL_CERT_DIR`, else the system's) is read by issuer:
//! each certificate is filed under its subject's hash, so a handshake reads
//! the one or two files of the issuers the server's chain names, and
//! nothing is kept afterwards. The bundle (`SSL_CERT_FILE`, else the
//! system's) has no index: when every one of its certificates is also in
//! the directory (update-ca-certificates writes both, as Debian and Alpine
//! ship them; so does the image), it adds nothing and is never read again.
//! Otherwise (a CA of one's own in the bundle only, a directory without
//! hashed names) each handshake reads it and keeps the issuers it wants:
//! parsing all of it into a store that lives as long as the process was
//! what made libgit2's OpenSSL cost 1.4 MiB of heap.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::hash::{BuildHasher, Hasher, RandomState};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use sidecar_runtime::tls::rustls::pki_types::pem::PemObject;
use sidecar_runtime::tls::rustls::pki_types::{CertificateDer, TrustAnchor};
use x509_parser::prelude::FromDer;

const FILE_VAR: &str = "SSL_CERT_FILE";
const DIR_VAR: &str = "SSL_CERT_DIR";
/// Bounds the scan of a certificate directory (Debian's has about 300 entries).
const MAX_DIR_ENTRIES: usize = 100_000;
/// Bounds the certificates filed under one hash (`<hash>.0`, `.1`, …).
const MAX_SAME_HASH: usize = 100;

/// The trusted certificates' locations, read from the environment once.
#[derive(Debug)]
pub struct Store {
    /// Named by the variable, or where the distribution keeps it.
    bundle: Option<PathBuf>,
    dirs: OsString,
    /// Whether the bundle holds certificates the directory lacks; decided
    /// at the first handshake.
    bundle_needed: OnceLock<bool>,
}

impl Store {
    pub fn from_env() -> Store {
        let probed = openssl_probe::probe();
        Store {
            bundle: std::env::var_os(FILE_VAR)
                .map(PathBuf::from)
                .or(probed.cert_file),
            dirs: std::env::var_os(DIR_VAR)
                .or_else(|| probed.cert_dir.map(OsString::from))
                .unwrap_or_default(),
            bundle_needed: OnceLock::new(),
        }
    }

    /// The trusted certificates whose subject is one of `issuers` (DER
    /// names), compared byte for byte as WebPKI compares them.
    pub fn issuers_of(&self, issuers: &[&[u8]]) -> Result<Vec<Trusted>, String> {
        let wanted: Vec<&[u8]> = issuers.iter().filter_map(|n| der_contents(n)).collect();
        let mut found = Vec::new();
        // Read as a stream and parsed only as far as a trust anchor: a bundle
        // read whole and parsed fully at each handshake kept 0.3 MiB of heap
        // and 0.6 MiB of code pages in an idle process.
        let mut keep = |pem: std::fs::File| {
            for der in CertificateDer::pem_reader_iter(pem).flatten() {
                let Ok(anchor) = webpki::anchor_from_trusted_cert(&der) else {
                    continue;
                };
                if wanted.contains(&anchor.subject.as_ref()) {
                    let anchor = anchor.to_owned();
                    found.push(Trusted { der, anchor });
                }
            }
        };
        for issuer in issuers {
            let Some(hash) = issuer_hash(issuer) else {
                continue;
            };
            for dir in cert_dirs(&self.dirs) {
                // OpenSSL's lookup stops at the first number missing too.
                for n in 0..MAX_SAME_HASH {
                    let Ok(pem) = std::fs::File::open(dir.join(format!("{hash:08x}.{n}"))) else {
                        break;
                    };
                    keep(pem);
                }
            }
        }
        if let Some(bundle) = self.bundle.as_deref().filter(|b| self.bundle_needed(b)) {
            let pem = std::fs::File::open(bundle)
                .map_err(|e| format!("{FILE_VAR}: cannot read {}: {e}", bundle.display()))?;
            keep(pem);
        }
        Ok(found)
    }

    fn bundle_needed(&self, bundle: &Path) -> bool {
        *self.bundle_needed.get_or_init(|| {
            let needed = !bundle_in_dirs(bundle, &self.dirs);
            if !needed {
                tracing::debug!(bundle = %bundle.display(), dirs = %self.dirs.to_string_lossy(), "CA bundle not loaded: each of its certificates is in the hashed directory, where issuers are looked up");
            }
            needed
        })
    }
}

/// The directories of an `SSL_CERT_DIR`-style list. An empty entry (an
/// unset list, or a trailing `:`) is skipped, as OpenSSL skips it: taken
/// as a path it would be the working directory.
fn cert_dirs(dirs: &OsStr) -> impl Iterator<Item = PathBuf> + '_ {
    std::env::split_paths(dirs).filter(|d| !d.as_os_str().is_empty())
}

/// A trusted certificate, and what WebPKI makes of it.
pub struct Trusted {
    pub der: CertificateDer<'static>,
    pub anchor: TrustAnchor<'static>,
}

/// The contents of a DER element (a name without its SEQUENCE header, as
/// a trust anchor's subject is kept).
fn der_contents(der: &[u8]) -> Option<&[u8]> {
    let (&first, rest) = der.get(1..)?.split_first()?;
    let (len, rest) = match first {
        n if n < 0x80 => (usize::from(n), rest),
        n => {
            let size = usize::from(n & 0x7f);
            let bytes = rest.get(..size).filter(|_| size <= 4)?;
            let len = bytes.iter().fold(0, |l, b| l << 8 | usize::from(*b));
            (len, &rest[size..])
        }
    };
    rest.get(..len)
}

/// The subject hash of a DER-encoded name.
fn issuer_hash(name: &[u8]) -> Option<u32> {
    let (_, name) = x509_parser::x509::X509Name::from_der(name).ok()?;
    super::namehash::subject_hash(&name)
}

/// Whether `bundle` holds at least one certificate, only certificates, and
/// each of them is in one of `dirs` (a `:`-separated list, as OpenSSL reads
/// it) in a file with a hashed name, where OpenSSL's lookup finds it.
/// Certificates are compared by their PEM text, through a keyed hash.
fn bundle_in_dirs(bundle: &Path, dirs: &OsStr) -> bool {
    let keys = RandomState::new();
    let wanted = match std::fs::read_to_string(bundle) {
        Ok(text) => pem_certificates(&text, &keys),
        Err(_) => None, // loading it reports the error
    };
    let Some(wanted) = wanted.filter(|w| !w.is_empty()) else {
        return false;
    };
    let mut found = HashSet::new();
    for dir in cert_dirs(dirs) {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten().take(MAX_DIR_ENTRIES) {
            if !is_hashed_name(&entry.file_name()) {
                continue;
            }
            if let Some(certs) = std::fs::read_to_string(entry.path())
                .ok()
                .and_then(|text| pem_certificates(&text, &keys))
            {
                found.extend(certs);
            }
        }
    }
    wanted.iter().all(|c| found.contains(c))
}

/// The keyed hashes of the PEM certificates in `text`, or None when it
/// holds a PEM block of another kind (a CRL, OpenSSL's `TRUSTED
/// CERTIFICATE` with trust settings): what loading it would do then is
/// more than the directory lookup does.
fn pem_certificates(text: &str, keys: &RandomState) -> Option<Vec<u64>> {
    let mut certs = Vec::new();
    let mut body: Option<std::hash::DefaultHasher> = None;
    for line in text.lines().map(str::trim) {
        if let Some(label) = line
            .strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"))
        {
            if label != "CERTIFICATE" {
                return None;
            }
            body = Some(keys.build_hasher());
        } else if line == "-----END CERTIFICATE-----" {
            certs.extend(body.take().map(|h| h.finish()));
        } else if let Some(h) = body.as_mut() {
            h.write(line.as_bytes());
        }
    }
    Some(certs)
}

/// `<8 hex digits>.<n>`: a certificate named by its subject hash, as
/// `openssl rehash` links them (a CRL's is `.r<n>`).
pub(super) fn is_hashed_name(name: &OsStr) -> bool {
    let Some((hash, n)) = name.to_str().and_then(|n| n.split_once('.')) else {
        return false;
    };
    hash.len() == 8
        && hash.bytes().all(|b| b.is_ascii_hexdigit())
        && !n.is_empty()
        && n.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_directory_entries_are_not_the_working_directory() {
        let dirs: Vec<_> = cert_dirs(OsStr::new("/etc/ssl/certs::/opt/certs:")).collect();
        assert_eq!(dirs, [Path::new("/etc/ssl/certs"), Path::new("/opt/certs")]);
        assert_eq!(cert_dirs(OsStr::new("")).count(), 0);
    }

    fn pem(body: &str) -> String {
        format!("-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----\n")
    }

    #[test]
    fn der_contents_skip_the_header() {
        assert_eq!(der_contents(&[0x30, 2, 5, 6, 7]), Some(&[5, 6][..]));
        let long: Vec<u8> = [0x30, 0x81, 200].into_iter().chain([9; 200]).collect();
        assert_eq!(der_contents(&long).map(<[u8]>::len), Some(200));
        assert_eq!(der_contents(&[0x30, 3, 1]), None);
        assert_eq!(der_contents(&[0x30]), None);
    }

    #[test]
    fn hashed_names_are_subject_hash_dot_number() {
        for ok in ["002c0b4f.0", "ABCDEF01.12"] {
            assert!(is_hashed_name(OsStr::new(ok)), "{ok}");
        }
        for not in [
            "002c0b4f.r0",
            "ca-certificates.crt",
            "002c0b4f.",
            "02c0b4f.0",
            "x02c0b4f.0",
        ] {
            assert!(!is_hashed_name(OsStr::new(not)), "{not}");
        }
    }

    #[test]
    fn only_certificate_blocks_qualify() {
        let keys = RandomState::new();
        let two = format!("# comment\n{}{}", pem("QUJD\nREVG"), pem("R0hJ"));
        assert_eq!(pem_certificates(&two, &keys).map(|c| c.len()), Some(2));
        let crl = format!(
            "{}-----BEGIN X509 CRL-----\nQUJD\n-----END X509 CRL-----\n",
            pem("R0hJ")
        );
        assert_eq!(pem_certificates(&crl, &keys), None);
    }

    #[test]
    fn the_bundle_is_skipped_only_when_the_directory_has_each_certificate() {
        let tmp = tempfile::tempdir().unwrap();
        let (dir, other) = (tmp.path().join("certs"), tmp.path().join("other"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::create_dir_all(&other).unwrap();
        std::fs::write(dir.join("11111111.0"), pem("QUJD\nREVG")).unwrap();
        std::fs::write(other.join("22222222.0"), pem("R0hJ")).unwrap();
        // Not under a hashed name: OpenSSL's lookup would not find it.
        std::fs::write(dir.join("mine.pem"), pem("SktM")).unwrap();
        let bundle = tmp.path().join("bundle.pem");
        let dirs = std::env::join_paths([&dir, &other]).unwrap();

        std::fs::write(&bundle, pem("QUJD\nREVG") + &pem("R0hJ")).unwrap();
        assert!(bundle_in_dirs(&bundle, &dirs));
        assert!(!bundle_in_dirs(&bundle, dir.as_os_str()));

        std::fs::write(&bundle, pem("QUJD\nREVG") + &pem("SktM")).unwrap();
        assert!(!bundle_in_dirs(&bundle, &dirs));

        for loaded_as_before in ["", "not a certificate\n"] {
            std::fs::write(&bundle, loaded_as_before).unwrap();
            assert!(!bundle_in_dirs(&bundle, &dirs));
        }
        assert!(!bundle_in_dirs(&tmp.path().join("missing.pem"), &dirs));
    }
}
