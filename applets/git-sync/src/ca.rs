//! libgit2's CA certificates, loaded when the first http(s) remote needs
//! them, and then only as far as OpenSSL needs them.
//!
//! libgit2 initialises OpenSSL at its first call, and its TLS context loads
//! OpenSSL's default verify paths: the whole bundle (`SSL_CERT_FILE`, or the
//! one git2 probes for), about 140 certificates parsed into 1.4 MiB of heap
//! kept for the life of the process, even when every remote is `file://`,
//! `ssh://` or `git://`. So libgit2 is initialised while `SSL_CERT_FILE`
//! names an empty file (OpenSSL loads nothing from it, without an error),
//! the variable is put back at once (hooks inherit it unchanged), and the
//! bundle is loaded into libgit2's context before the first connection to
//! an http(s) URL.
//!
//! The directory (`SSL_CERT_DIR`, which git2 sets to the probed one when it
//! is unset) is part of the default verify paths from the start, at no
//! cost: OpenSSL reads from it, when verifying a server, only the issuers
//! that server's chain names, by their hashed file names. Git and curl
//! trust the bundle and the directory together, as libgit2 does. So when
//! every certificate of the bundle is in the directory under its hashed
//! name (update-ca-certificates writes both, as Debian and Alpine ship
//! them; so does the image), loading the bundle would add nothing but the
//! heap: it is left unloaded. Anything else (a CA of one's own in the
//! bundle only, a directory without hashed names) loads the bundle.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::hash::{BuildHasher, Hasher, RandomState};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context as _, Result};

/// What is still to decide at the first http(s) remote.
struct Pending {
    bundle: PathBuf,
    /// `SSL_CERT_DIR` as OpenSSL read it at libgit2's start.
    dirs: OsString,
}

static PENDING: Mutex<Option<Pending>> = Mutex::new(None);

const VAR: &str = "SSL_CERT_FILE";
const DIR_VAR: &str = "SSL_CERT_DIR";
/// Bounds the scan of a certificate directory (Debian's has about 300 entries).
const MAX_DIR_ENTRIES: usize = 100_000;

/// Runs `init`, libgit2's first call, with the bundle hidden.
///
/// # Safety
/// Changes the environment: only while the process has one thread.
pub unsafe fn init_without_bundle(init: impl FnOnce() -> Result<()>) -> Result<()> {
    let original: Option<OsString> = std::env::var_os(VAR);
    // What OpenSSL would load: the variable when set (a missing file is
    // reported at the first http(s) remote), else the bundle git2 finds
    // where distributions keep it.
    let bundle = match &original {
        Some(v) => Some(PathBuf::from(v)),
        None => openssl_probe::probe().cert_file,
    };
    // An existing file, so git2's probe keeps it rather than setting the
    // variable to the real bundle.
    std::env::set_var(VAR, "/dev/null");
    let result = init();
    match original {
        Some(v) => std::env::set_var(VAR, v),
        None => std::env::remove_var(VAR),
    }
    let dirs = std::env::var_os(DIR_VAR).unwrap_or_default();
    *pending() = bundle.map(|bundle| Pending { bundle, dirs });
    result
}

/// Readies libgit2's certificates before its first connection to `url`,
/// if that is an http(s) URL (a plain http one may redirect to https).
pub fn load_for(url: &str) -> Result<()> {
    let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
    if !matches!(scheme.as_deref(), Some("https" | "http")) {
        return Ok(());
    }
    let mut pending = pending();
    let Some(Pending { bundle, dirs }) = pending.as_ref() else {
        return Ok(());
    };
    if bundle_in_dirs(bundle, dirs) {
        tracing::debug!(bundle = %bundle.display(), dirs = %dirs.to_string_lossy(), "CA bundle not loaded: each of its certificates is in the hashed directory OpenSSL looks issuers up in");
    } else {
        // SAFETY: libgit2's global options; fetches (the only other libgit2
        // users of the context) run one at a time, on the sync loop.
        unsafe { git2::opts::set_ssl_cert_file(bundle) }
            .with_context(|| format!("{VAR}: cannot load {}", bundle.display()))?;
    }
    *pending = None;
    Ok(())
}

fn pending() -> std::sync::MutexGuard<'static, Option<Pending>> {
    PENDING.lock().unwrap_or_else(|e| e.into_inner())
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
    for dir in std::env::split_paths(dirs) {
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
fn is_hashed_name(name: &OsStr) -> bool {
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

    fn pem(body: &str) -> String {
        format!("-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----\n")
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
