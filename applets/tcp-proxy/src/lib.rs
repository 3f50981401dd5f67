//! L4 proxy: forward, reverse and transparent, with load balancing and health.

use sidecar_runtime::{Applet, Context};

#[derive(Debug, clap::Args)]
pub struct TcpProxy {}

impl Applet for TcpProxy {
    const NAME: &'static str = "tcp-proxy";
    const ABOUT: &'static str = "L4 proxy: forward, reverse and transparent, with load balancing and health";
    const ADMIN_ADDR: &'static str = "0.0.0.0:15000";

    async fn run(self, _ctx: Context) -> anyhow::Result<()> {
        anyhow::bail!("tcp-proxy is not implemented yet")
    }
}
