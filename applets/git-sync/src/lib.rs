//! Keep a git ref checked out in a shared volume (kubernetes/git-sync v4 compatible).

use sidecar_runtime::{Applet, Context};

#[derive(Debug, clap::Args)]
pub struct GitSync {}

impl Applet for GitSync {
    const NAME: &'static str = "git-sync";
    const ABOUT: &'static str = "Keep a git ref checked out in a shared volume (kubernetes/git-sync v4 compatible)";
    const ADMIN_ADDR: &'static str = "0.0.0.0:9540";

    async fn run(self, _ctx: Context) -> anyhow::Result<()> {
        anyhow::bail!("git-sync is not implemented yet")
    }
}
