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

/// The file an `--access-log` value names: none for `off` and `stdout`.
fn file_of(spec: &str) -> Option<&Path> {
    match spec {
        "off" | "" | "stdout" | "-" => None,
        path => Some(Path::new(path)),
    }
}

impl AccessLog {
    /// `--check`: a file named can be opened for appending.
    pub fn check(spec: &str) -> anyhow::Result<()> {
        file_of(spec).map_or(Ok(()), |path| {
            sidecar_runtime::check::writable_file("--access-log", path)
        })
    }

    /// `off` → None; `stdout`; or a file opened for appending.
    pub fn open(spec: &str, dropped: Counter) -> anyhow::Result<Option<AccessLog>> {
        let mut out: Box<dyn Write + Send> = match file_of(spec) {
            Some(path) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| usage!("--access-log: cannot open {spec}: {e}"))?,
            ),
            None if matches!(spec, "off" | "") => return Ok(None),
            None => Box::new(std::io::stdout()),
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
