//! Delivery: one batch at a time, in order, until every event in it is
//! acknowledged or dead-lettered; only then do the batch's checkpoint marks
//! count. Failures that can heal (429, 5xx, 401/403, connection errors) are
//! retried forever with backoff; nothing is dropped silently.

mod dead_letter;
mod delivery;
mod elasticsearch;
mod http;
mod loki;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use sidecar_runtime::backoff::Backoff;
use sidecar_runtime::tls::rustls::pki_types::pem::PemObject;
use sidecar_runtime::tls::rustls::pki_types::CertificateDer;
use sidecar_runtime::tls::rustls::RootCertStore;
use tokio::sync::mpsc;

use crate::batch::Batch;
use crate::buffer::Buffer;
use crate::checkpoint::Store;
use crate::config::{Args, Compress, SinkKind};
use crate::metrics::Metrics;

pub use dead_letter::DeadLetter;
use delivery::Delivery;
pub use elasticsearch::ActionLines;

/// First retry wait; it doubles up to --retry-max-backoff.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// What every sink shares: the HTTP client, compression, the dead letter
/// file, counters and the retry pacing.
pub struct Common {
    pub client: reqwest::Client,
    pub compress: Compress,
    pub dead_letter: DeadLetter,
    pub metrics: Metrics,
    pub max_backoff: Duration,
}

impl Common {
    pub fn backoff(&self) -> Backoff {
        Backoff::new(FIRST_BACKOFF, self.max_backoff)
    }

    /// The request body, gzipped (level 1, as Filebeat) if asked.
    pub fn encode(&self, body: Bytes) -> (Bytes, Option<&'static str>) {
        match self.compress {
            Compress::None => (body, None),
            Compress::Gzip => {
                use std::io::Write;
                let mut gz = flate2::write::GzEncoder::new(
                    Vec::with_capacity(body.len() / 4),
                    flate2::Compression::fast(),
                );
                // Writing into a Vec cannot fail.
                let _ = gz.write_all(&body);
                (Bytes::from(gz.finish().unwrap_or_default()), Some("gzip"))
            }
        }
    }
}

pub enum Sink {
    Stdout(Metrics),
    Http(Delivery<http::HttpSink>),
    Elasticsearch(Delivery<elasticsearch::EsSink>),
    Loki(Delivery<loki::LokiSink>),
}

impl Sink {
    pub fn from_args(args: &Args, metrics: &Metrics) -> anyhow::Result<Sink> {
        let common = || -> anyhow::Result<Common> {
            Ok(Common {
                client: client(args)?,
                compress: args.compress,
                dead_letter: DeadLetter::open(args.dead_letter.as_deref())?,
                metrics: metrics.clone(),
                max_backoff: args.retry_max_backoff,
            })
        };
        Ok(match args.sink {
            SinkKind::Stdout => Sink::Stdout(metrics.clone()),
            SinkKind::Http => Sink::Http(Delivery::new(common()?, http::HttpSink::new(args)?)),
            SinkKind::Elasticsearch => {
                Sink::Elasticsearch(Delivery::new(common()?, elasticsearch::EsSink::new(args)?))
            }
            SinkKind::Loki => Sink::Loki(Delivery::new(common()?, loki::LokiSink::new(args)?)),
        })
    }

    /// Validates the sink's flags, URLs and secret files without opening
    /// the dead letter file or connecting anywhere.
    pub fn check(args: &Args) -> anyhow::Result<()> {
        match args.sink {
            SinkKind::Stdout => return Ok(()),
            SinkKind::Http => drop(http::HttpSink::new(args)?),
            SinkKind::Elasticsearch => drop(elasticsearch::EsSink::new(args)?),
            SinkKind::Loki => drop(loki::LokiSink::new(args)?),
        }
        client(args).map(drop)
    }

    /// Returns once every event of the batch is acknowledged or dead-lettered.
    async fn deliver(&mut self, batch: &mut Batch) {
        match self {
            Sink::Stdout(metrics) => {
                // One locked, blocking write per batch: events never interleave
                // and a slow reader of our stdout blocks a pool thread, not the runtime.
                let body = std::mem::take(&mut batch.body);
                let written = tokio::task::spawn_blocking(move || {
                    use std::io::Write;
                    let mut out = std::io::stdout().lock();
                    out.write_all(&body)?;
                    out.flush()
                })
                .await;
                if let Ok(Err(e)) = written {
                    // stdout closed: nobody can receive events any more.
                    tracing::error!(error = %e, "cannot write to stdout");
                    std::future::pending::<()>().await;
                }
                metrics.events_acked.inc_by(batch.len() as u64);
            }
            Sink::Http(s) => s.deliver(batch).await,
            Sink::Elasticsearch(s) => s.deliver(batch).await,
            Sink::Loki(s) => s.deliver(batch).await,
        }
    }
}

fn client(args: &Args) -> anyhow::Result<reqwest::Client> {
    let mut extra = RootCertStore::empty();
    if let Some(ca) = &args.ca_file {
        let pem = std::fs::read(ca)
            .map_err(|e| sidecar_runtime::usage!("--ca-file {}: {e}", ca.display()))?;
        let bad = |e: &dyn std::fmt::Display| {
            sidecar_runtime::usage!("--ca-file {}: not PEM certificates: {e}", ca.display())
        };
        for cert in CertificateDer::pem_slice_iter(&pem) {
            extra.add(cert.map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
        }
    }
    Ok(sidecar_runtime::tls::http_client_builder(extra)
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(60))
        .redirect(reqwest::redirect::Policy::none())
        .build()?)
}

/// Where the sink task takes batches from.
pub enum Queue {
    /// Straight from the reader; acknowledged batches move the checkpoints.
    Memory(mpsc::UnboundedReceiver<Batch>),
    /// From the disk buffer, which already moved the checkpoints;
    /// acknowledged records leave it.
    Disk(Arc<Buffer>),
}

/// Delivers batches in order and acknowledges them.
pub async fn run(mut sink: Sink, queue: Queue, store: Arc<Mutex<Store>>, metrics: Metrics) {
    match queue {
        Queue::Memory(mut rx) => {
            while let Some(mut batch) = rx.recv().await {
                if !batch.is_empty() {
                    sink.deliver(&mut batch).await;
                }
                store
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .ack(&batch.marks);
                if let Some(p) = batch.permit.take() {
                    metrics.buffer_bytes.dec_by(p.num_permits() as i64);
                }
            }
        }
        Queue::Disk(buffer) => {
            while let Some((mut batch, ticket)) = buffer.next().await {
                if !batch.is_empty() {
                    sink.deliver(&mut batch).await;
                }
                buffer.ack(ticket);
            }
        }
    }
}
