//! Tail log files and ship them to Elasticsearch, Loki, HTTP or stdout.

use sidecar_runtime::{Applet, Context};

#[derive(Debug, clap::Args)]
pub struct LogTailShip {}

impl Applet for LogTailShip {
    const NAME: &'static str = "log-tail-ship";
    const ABOUT: &'static str = "Tail log files and ship them to Elasticsearch, Loki, HTTP or stdout";
    const ADMIN_ADDR: &'static str = "0.0.0.0:9542";

    async fn run(self, _ctx: Context) -> anyhow::Result<()> {
        anyhow::bail!("log-tail-ship is not implemented yet")
    }
}
