//! HTTP basic auth against an htpasswd file of bcrypt hashes.
//!
//! bcrypt is deliberately slow (tens of ms per check), so a successful check is
//! remembered as a SHA-256 digest of user, password and hash, compared in
//! constant time; the file's own hash is only run again when the password
//! differs. Unknown users are checked against a dummy hash of the users' own
//! cost (the most common one, when they differ), so response time does not
//! reveal which user names exist (SWS v2.41.0, darkhttpd CVE-2024-23771).
//!
//! The file is reloaded when `sidecar_runtime::watch` sees it change (a
//! Kubernetes Secret is updated by swapping a symlink); a file that no longer
//! parses keeps the previous users and is logged.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use sidecar_runtime::watch::{Fingerprint, Watch};

use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;

pub struct BasicAuth {
    /// The htpasswd file (none for an inline entry, which never changes).
    path: Option<PathBuf>,
    users: RwLock<Arc<Users>>,
    /// The file as it was when the users were read.
    loaded: Fingerprint,
    verified: Mutex<HashMap<String, [u8; 32]>>,
    /// Bounds the CPU that unauthenticated clients can make us burn on bcrypt.
    slots: Semaphore,
}

/// The users' hashes by name, and the hash unknown names are checked against.
struct Users {
    by_name: HashMap<String, String>,
    dummy: String,
}

impl Users {
    fn new(by_name: HashMap<String, String>) -> Result<Users, String> {
        // `$2b$NN$…`: NN is the cost, 2^NN rounds.
        let mut costs: HashMap<u32, usize> = HashMap::new();
        for hash in by_name.values() {
            if let Some(cost) = hash.get(4..6).and_then(|c| c.parse().ok()) {
                *costs.entry(cost).or_default() += 1;
            }
        }
        let cost = costs
            .into_iter()
            .max_by_key(|&(cost, n)| (n, cost))
            .map_or(bcrypt::DEFAULT_COST, |(cost, _)| cost);
        let dummy = bcrypt::hash("static-serve-dummy", cost).map_err(|e| e.to_string())?;
        Ok(Users { by_name, dummy })
    }
}

fn parse(path: &Path) -> Result<HashMap<String, String>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse_text(&text, &path.display().to_string())
}

/// Reads `user:bcrypt-hash` lines (`#` comments and blank lines skipped);
/// errors say `origin:line`.
fn parse_text(text: &str, origin: &str) -> Result<HashMap<String, String>, String> {
    let mut users = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (user, hash) = line
            .split_once(':')
            .ok_or_else(|| format!("{origin}:{}: expected user:hash", i + 1))?;
        if !["$2a$", "$2b$", "$2x$", "$2y$"]
            .iter()
            .any(|p| hash.starts_with(p))
        {
            return Err(format!(
                "{origin}:{}: only bcrypt hashes are supported (htpasswd -B)",
                i + 1
            ));
        }
        users.insert(user.to_string(), hash.to_string());
    }
    if users.is_empty() {
        return Err(format!("{origin}: no users"));
    }
    Ok(users)
}

impl BasicAuth {
    pub fn load(path: &Path) -> Result<BasicAuth, String> {
        let loaded = Fingerprint::of_files(&[path]);
        let users = parse(path)?;
        Self::new(Some(path.to_path_buf()), loaded, users)
    }

    /// One `user:bcrypt-hash` given inline (static-web-server's `--basic-auth`).
    pub fn entry(entry: &str) -> Result<BasicAuth, String> {
        let users = parse_text(entry, "--basic-auth")?;
        Self::new(None, Fingerprint::of_bytes(entry.as_bytes()), users)
    }

    fn new(
        path: Option<PathBuf>,
        loaded: Fingerprint,
        users: HashMap<String, String>,
    ) -> Result<BasicAuth, String> {
        Ok(BasicAuth {
            path,
            users: RwLock::new(Arc::new(Users::new(users)?)),
            loaded,
            verified: Mutex::new(HashMap::new()),
            slots: Semaphore::new(std::thread::available_parallelism().map_or(2, |n| n.get())),
        })
    }

    /// Reloads the file whenever it changes, for as long as `self` is in use.
    /// Needs a tokio runtime.
    pub fn watch(self: &Arc<Self>) {
        let Some(path) = self.path.clone() else {
            return;
        };
        // Watch first, then compare with what was read: a change in between
        // is a difference, not a missed event.
        let mut watch = Watch::files([&path]);
        let mut seen = self.loaded;
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let now = Fingerprint::of_files(&[&path]);
                if now != seen {
                    seen = now;
                    let Some(auth) = weak.upgrade() else { return };
                    auth.reload();
                }
                watch.changed().await;
                if weak.strong_count() == 0 {
                    return;
                }
            }
        });
    }

    fn reload(&self) {
        let Some(path) = &self.path else { return };
        match parse(path).and_then(Users::new) {
            Ok(users) => {
                tracing::info!(file = %path.display(), users = users.by_name.len(), "reloaded --basic-auth-file");
                *self.users.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(users);
                self.lock().clear();
            }
            Err(e) => {
                tracing::warn!(error = %e, "--basic-auth-file changed but does not parse; keeping the previous users")
            }
        }
    }

    /// Whether the `Authorization` header carries valid credentials.
    pub async fn check(self: &Arc<Self>, header: Option<&http::HeaderValue>) -> bool {
        let Some((user, pass)) = header.and_then(decode) else {
            return false;
        };
        let users = self.users.read().unwrap_or_else(|e| e.into_inner()).clone();
        let known = users.by_name.get(&user);
        let hash = known.unwrap_or(&users.dummy).clone();
        let digest: [u8; 32] = Sha256::new()
            .chain_update(user.as_bytes())
            .chain_update([0])
            .chain_update(pass.as_bytes())
            .chain_update([0])
            .chain_update(hash.as_bytes())
            .finalize()
            .into();
        if known.is_some() {
            let cached = self.lock().get(&user).copied();
            if cached.is_some_and(|c| bool::from(c.ct_eq(&digest))) {
                return true;
            }
        }
        let Ok(_slot) = self.slots.acquire().await else {
            return false;
        };
        let ok = tokio::task::spawn_blocking(move || bcrypt::verify(pass, &hash).unwrap_or(false))
            .await
            .unwrap_or(false);
        if ok && known.is_some() {
            self.lock().insert(user, digest);
            return true;
        }
        false
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, [u8; 32]>> {
        self.verified.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// `Basic base64(user:pass)` → (user, pass).
fn decode(v: &http::HeaderValue) -> Option<(String, String)> {
    let v = v.to_str().ok()?.trim();
    let (scheme, b64) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let raw = String::from_utf8(raw).ok()?;
    let (u, p) = raw.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user: &str, pass: &str) -> http::HeaderValue {
        let b = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
        format!("Basic {b}").parse().unwrap()
    }

    #[test]
    fn unknown_users_are_checked_at_the_users_cost() {
        // The cost an attacker would otherwise time: one user at cost 5
        // (`htpasswd -B`'s), or most users' when they differ.
        for (costs, want) in [(&[5][..], "$2b$05$"), (&[6, 4, 6], "$2b$06$")] {
            let by_name = costs
                .iter()
                .enumerate()
                .map(|(i, &c)| (format!("u{i}"), bcrypt::hash("x", c).unwrap()))
                .collect();
            let users = Users::new(by_name).unwrap();
            assert!(users.dummy.starts_with(want), "{costs:?}: {}", users.dummy);
        }
    }

    #[tokio::test]
    async fn bcrypt_users() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("htpasswd");
        std::fs::write(
            &f,
            format!("# users\nalice:{}\n", bcrypt::hash("s3cret", 4).unwrap()),
        )
        .unwrap();
        let a = Arc::new(BasicAuth::load(&f).unwrap());
        assert!(a.check(Some(&basic("alice", "s3cret"))).await);
        // Second time from the cache.
        assert!(a.check(Some(&basic("alice", "s3cret"))).await);
        assert!(!a.check(Some(&basic("alice", "wrong"))).await);
        assert!(!a.check(Some(&basic("bob", "s3cret"))).await);
        assert!(!a.check(None).await);
        assert!(!a.check(Some(&"Bearer x".parse().unwrap())).await);

        std::fs::write(&f, "alice:{SHA}abc\n").unwrap();
        assert!(BasicAuth::load(&f)
            .err()
            .unwrap()
            .contains(":1: only bcrypt"));
    }
}
