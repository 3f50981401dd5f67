//! Reload an app when its mounted ConfigMaps or Secrets change.

use sidecar_runtime::{Applet, Context};

#[derive(Debug, clap::Args)]
pub struct ConfigWatchReload {}

impl Applet for ConfigWatchReload {
    const NAME: &'static str = "config-watch-reload";
    const ABOUT: &'static str = "Reload an app when its mounted ConfigMaps or Secrets change";
    const ADMIN_ADDR: &'static str = "0.0.0.0:9533";

    async fn run(self, _ctx: Context) -> anyhow::Result<()> {
        anyhow::bail!("config-watch-reload is not implemented yet")
    }
}
