//! libgit2's CA bundle, loaded when the first http(s) remote needs it.
//!
//! libgit2 initialises OpenSSL at its first call, and its TLS context loads
//! OpenSSL's default verify paths: the whole bundle (`SSL_CERT_FILE`, or the
//! one git2 probes for), about 140 certificates parsed into 1.4 MiB of heap
//! kept for the life of the process, even when every remote is `file://`,
//! `ssh://` or `git://`. So libgit2 is initialised while `SSL_CERT_FILE`
//! names an empty file (OpenSSL loads nothing from it, without an error),
//! the variable is put back at once (hooks inherit it unchanged), and the
//! bundle is loaded into libgit2's context before the first connection to
//! an http(s) URL. `SSL_CERT_DIR` needs nothing: OpenSSL looks certificates
//! up there only when verifying.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Mutex;

use anyhow::{Context as _, Result};

/// The bundle still to load, until the first http(s) remote.
static PENDING: Mutex<Option<PathBuf>> = Mutex::new(None);

const VAR: &str = "SSL_CERT_FILE";

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
    *pending() = bundle;
    result
}

/// Loads the bundle into libgit2 before its first connection to `url`, if
/// that is an http(s) URL (a plain http one may redirect to https).
pub fn load_for(url: &str) -> Result<()> {
    let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
    if !matches!(scheme.as_deref(), Some("https" | "http")) {
        return Ok(());
    }
    let mut pending = pending();
    let Some(bundle) = pending.as_ref() else {
        return Ok(());
    };
    // SAFETY: libgit2's global options; fetches (the only other libgit2
    // users of the context) run one at a time, on the sync loop.
    unsafe { git2::opts::set_ssl_cert_file(bundle) }
        .with_context(|| format!("{VAR}: cannot load {}", bundle.display()))?;
    *pending = None;
    Ok(())
}

fn pending() -> std::sync::MutexGuard<'static, Option<PathBuf>> {
    PENDING.lock().unwrap_or_else(|e| e.into_inner())
}
