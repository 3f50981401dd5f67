//! Files the configuration names that must be usable before anything
//! starts (upstream fails on them at startup, before its first sync).

use std::path::Path;

use anyhow::Result;
use sidecar_runtime::{check, usage};

use crate::config::Config;

pub fn check_files(cfg: &Config) -> Result<()> {
    if let Some(app) = &cfg.github_app {
        crate::github_app::check_key(&app.private_key).map_err(|e| usage!("{e:#}"))?;
    }
    if let Some(f) = &cfg.cookie_file {
        std::fs::metadata(f).map_err(|e| {
            usage!(
                "--cookie-file: can't access git cookiefile {}: {e}",
                f.display()
            )
        })?;
    }
    Ok(())
}

/// `--check` alone: what upstream finds only when it syncs or runs a hook
/// (the password file, an ssh repository's key and known hosts files, the
/// sparse-checkout file, the webhook's scheme, the exechook's program), and
/// that `--root` can be written or made.
pub fn check_strict(cfg: &Config) -> Result<()> {
    check::writable_dir("--root", &cfg.root)?;
    for c in cfg
        .credentials
        .iter()
        .filter(|c| !c.password_file.is_empty())
    {
        let flag = if c.url == cfg.repo {
            "--password-file"
        } else {
            "--credential password-file"
        };
        check::readable_file(flag, Path::new(&c.password_file))?;
    }
    if is_ssh(&cfg.repo) {
        for key in &cfg.ssh.key_files {
            check::readable_file("--ssh-key-file", key)?;
        }
        if cfg.ssh.known_hosts {
            check::readable_file("--ssh-known-hosts-file", &cfg.ssh.known_hosts_file)?;
        }
    }
    if let Some(f) = &cfg.sparse_checkout_file {
        check::readable_file("--sparse-checkout-file", f)?;
    }
    if let Some(w) = &cfg.webhook {
        check::http_url("--webhook-url", &w.url)?;
    }
    // A relative path names a file of the worktree, which the first sync makes.
    if let Some(h) = cfg
        .exechook
        .as_ref()
        .filter(|h| h.command.starts_with('/') || !h.command.contains('/'))
    {
        check::program("--exechook-command", &h.command)?;
    }
    Ok(())
}

/// `ssh://…`, `git+ssh://…`, or scp-like `[user@]host:path`.
fn is_ssh(repo: &str) -> bool {
    match repo.split_once("://") {
        Some((scheme, _)) => matches!(scheme, "ssh" | "git+ssh" | "ssh+git"),
        None => repo
            .split_once(':')
            .is_some_and(|(host, _)| !host.is_empty() && !host.contains('/')),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ssh_repositories() {
        for r in [
            "ssh://git@h/r",
            "git+ssh://h/r",
            "git@github.com:o/r.git",
            "h:r",
        ] {
            assert!(super::is_ssh(r), "{r}");
        }
        for r in ["https://h/r", "file:///r", "/srv/r.git", "./a:b"] {
            assert!(!super::is_ssh(r), "{r}");
        }
    }
}
