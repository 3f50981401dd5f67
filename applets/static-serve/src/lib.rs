//! Serve static files, following atomic root swaps.

use sidecar_runtime::{Applet, Context};

#[derive(Debug, clap::Args)]
pub struct StaticServe {}

impl Applet for StaticServe {
    const NAME: &'static str = "static-serve";
    const ABOUT: &'static str = "Serve static files, following atomic root swaps";
    const ADMIN_ADDR: &'static str = "0.0.0.0:9541";

    async fn run(self, _ctx: Context) -> anyhow::Result<()> {
        anyhow::bail!("static-serve is not implemented yet")
    }
}
