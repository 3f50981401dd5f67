//! Files the configuration names that must be usable before anything
//! starts (upstream fails on them at startup, before its first sync).

use anyhow::Result;
use sidecar_runtime::usage;

use crate::config::Config;

pub fn check_files(cfg: &Config) -> Result<()> {
    if cfg.github_app.is_some() {
        return Err(usage!(
            "unsupported flag: --github-app-*: GitHub App auth is not implemented yet"
        ));
    }
    if let Some(f) = &cfg.cookie_file {
        std::fs::metadata(f).map_err(|e| {
            usage!(
                "--cookie-file: can't access git cookiefile {}: {e}",
                f.display()
            )
        })?;
        return Err(usage!(
            "unsupported flag: --cookie-file: sending cookies is not implemented yet"
        ));
    }
    Ok(())
}
