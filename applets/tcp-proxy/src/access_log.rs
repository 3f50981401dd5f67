//! Optional JSON access log: one line per closed connection. A writer
//! thread does the I/O so a slow stdout never stalls relaying; when it falls
//! behind, records are dropped and counted.

use std::io::Write;
use std::path::Path;
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};

use prometheus_client::metrics::counter::Counter;
use sidecar_runtime::prometheus_client;
use sidecar_runtime::usage;

const QUEUE: usize = 4096;

#[derive(Clone)]
pub struct AccessLog {
    tx: SyncSender<String>,
    dropped: Counter,
}

impl AccessLog {
    /// `off` → None; `stdout`; or a file opened for appending.
    /// `--check`: a file named can be opened for appending.
    pub fn check(spec: &str) -> anyhow::Result<()> {
        match spec {
            "off" | "" | "stdout" | "-" => Ok(()),
            path => sidecar_runtime::check::writable_file("--access-log", Path::new(path)),
        }
    }

    pub fn open(spec: &str, dropped: Counter) -> anyhow::Result<Option<AccessLog>> {
        let mut out: Box<dyn Write + Send> = match spec {
            "off" | "" => return Ok(None),
            "stdout" | "-" => Box::new(std::io::stdout()),
            path => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| usage!("--access-log: cannot open {path}: {e}"))?,
            ),
        };
        let (tx, rx) = sync_channel::<String>(QUEUE);
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || {
                for line in rx {
                    let _ = out.write_all(line.as_bytes());
                    let _ = out.flush();
                }
            })?;
        Ok(Some(AccessLog { tx, dropped }))
    }

    pub fn record(&self, record: serde_json::Value) {
        let mut line = record.to_string();
        line.push('\n');
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = self.tx.try_send(line) {
            self.dropped.inc();
        }
    }
}
