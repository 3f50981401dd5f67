//! `--dead-letter FILE`: NDJSON of events a sink rejected for good, each with
//! why, so an operator can fix the mapping and replay them. Without the flag
//! they are only counted and logged.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use crate::metrics::Metrics;

pub struct DeadLetter {
    file: Option<Mutex<File>>,
}

impl DeadLetter {
    pub fn open(path: Option<&Path>) -> anyhow::Result<DeadLetter> {
        let file = match path {
            Some(p) => Some(Mutex::new(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .map_err(|e| {
                        sidecar_runtime::usage!("--dead-letter {}: cannot open: {e}", p.display())
                    })?,
            )),
            None => None,
        };
        Ok(DeadLetter { file })
    }

    /// Records that `doc` (one JSON event) was rejected with `status` for `reason`.
    pub fn reject(&self, metrics: &Metrics, doc: &[u8], status: Option<u16>, reason: &str) {
        metrics.events_dead_lettered.inc();
        let Some(f) = &self.file else {
            tracing::warn!(
                ?status,
                reason,
                "event rejected by the sink and dropped (no --dead-letter)"
            );
            return;
        };
        let mut line = Vec::with_capacity(doc.len() + reason.len() + 80);
        line.extend_from_slice(b"{\"@timestamp\":\"");
        line.extend_from_slice(
            humantime::format_rfc3339_millis(std::time::SystemTime::now())
                .to_string()
                .as_bytes(),
        );
        line.extend_from_slice(b"\",\"status\":");
        line.extend_from_slice(
            status
                .map_or("null".to_string(), |s| s.to_string())
                .as_bytes(),
        );
        line.extend_from_slice(b",\"reason\":");
        crate::event::write_str(&mut line, reason.as_bytes());
        line.extend_from_slice(b",\"event\":");
        line.extend_from_slice(doc);
        line.extend_from_slice(b"}\n");
        let mut f = f.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = f.write_all(&line) {
            tracing::error!(error = %e, reason, "cannot write to --dead-letter; event dropped");
        }
    }
}
