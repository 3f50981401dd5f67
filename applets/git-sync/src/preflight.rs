//! Files the configuration names that must be usable before anything
//! starts (upstream fails on them at startup, before its first sync).

use anyhow::Result;
use sidecar_runtime::usage;

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
