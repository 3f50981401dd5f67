//! Who the client is (`--ssh-key-file`s, tried in order) and whether the
//! server is who it says (`--ssh-known-hosts-file`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context as _, Result};
use russh::client;
use russh::keys::PublicKeyOrCertificate;
use russh::keys::{Algorithm, PrivateKey, PrivateKeyWithHashAlg, PublicKeyBase64};
use russh::Preferred;

use super::known_hosts::Known;
use super::target::Target;
use crate::config::Ssh;

/// Checks the server's host key as the URL names the server.
pub struct HostCheck {
    /// None: `--ssh-known-hosts=false`, any key is accepted. Otherwise the
    /// file, and what it lists for this host (read once per connection).
    known_hosts: Option<(PathBuf, Result<Known>)>,
    host: String,
}

impl HostCheck {
    pub fn new(ssh: &Ssh, target: &Target) -> HostCheck {
        let known_hosts = ssh.known_hosts.then(|| {
            let file = ssh.known_hosts_file.clone();
            let known = Known::read(&file, &target.host, target.port);
            (file, known)
        });
        HostCheck {
            known_hosts,
            host: target.host.clone(),
        }
    }

    /// russh's settings, asking first for the host key types the known
    /// hosts file lists for this server, as OpenSSH does.
    pub fn config(&self) -> client::Config {
        let known: Vec<&str> = match &self.known_hosts {
            Some((_, Ok(known))) => known.key_types().collect(),
            _ => Vec::new(),
        };
        let is_known = |a: &Algorithm| {
            known
                .iter()
                .any(|&t| t == a.as_str() || (t == "ssh-rsa" && matches!(a, Algorithm::Rsa { .. })))
        };
        let default = Preferred::default();
        let (mut key, rest): (Vec<_>, Vec<_>) = default.key.iter().cloned().partition(is_known);
        key.extend(rest);
        client::Config {
            preferred: Preferred {
                key: key.into(),
                ..default
            },
            ..Default::default()
        }
    }
}

impl client::Handler for HostCheck {
    type Error = anyhow::Error;

    async fn check_server_key(&mut self, key: &PublicKeyOrCertificate) -> Result<bool> {
        let Some((file, known)) = &self.known_hosts else {
            return Ok(true);
        };
        let host = &self.host;
        let PublicKeyOrCertificate::PublicKey { key, .. } = key else {
            bail!("Host key verification failed: {host} sent a host certificate, which is not supported");
        };
        match known {
            Ok(known) if known.lists(&key.public_key_bytes()) => Ok(true),
            Ok(_) => bail!(
                "Host key verification failed: {host} is not in {} with this key",
                file.display()
            ),
            Err(e) => bail!("Host key verification failed: {e:#}"),
        }
    }
}

/// Offers each key in turn until the server accepts one. A key is read
/// only when its turn comes, as libgit2 did.
pub async fn log_in(
    session: &mut client::Handle<HostCheck>,
    user: &str,
    key_files: &[PathBuf],
) -> Result<()> {
    for file in key_files {
        let key = read_key(file)?;
        // RSA signs with SHA-2 when the server says it can (OpenSSH 8.8 and
        // later refuse ssh-rsa, SHA-1).
        let hash = if matches!(key.algorithm(), Algorithm::Rsa { .. }) {
            session.best_supported_rsa_hash().await?.flatten()
        } else {
            None
        };
        let key = PrivateKeyWithHashAlg::new(Arc::new(key), hash);
        if session.authenticate_publickey(user, key).await?.success() {
            return Ok(());
        }
    }
    let tried: Vec<_> = key_files.iter().map(|f| f.display().to_string()).collect();
    bail!(
        "Permission denied (publickey): no --ssh-key-file was accepted ({})",
        tried.join(", ")
    )
}

fn read_key(file: &Path) -> Result<PrivateKey> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("can't read --ssh-key-file {}", file.display()))?;
    russh::keys::decode_secret_key(&text, None).map_err(|e| match e {
        russh::keys::Error::KeyIsEncrypted => anyhow::anyhow!(
            "--ssh-key-file {}: keys with a passphrase are not supported",
            file.display()
        ),
        e => anyhow::anyhow!(
            "--ssh-key-file {}: not a usable private key: {e}",
            file.display()
        ),
    })
}
