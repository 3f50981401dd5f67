//! Tail log files and ship them to Elasticsearch, Loki, HTTP or stdout,
//! at-least-once across rotation and restarts.
//!
//! Life of the process: flags → checkpoints loaded → the reader thread
//! (`tailer`) cuts files into events and batches them → the sink task
//! delivers batches in order → acknowledged batches move the checkpoints,
//! which a timer writes to disk → on SIGTERM the reader stops, the sink
//! drains within the grace period, and the checkpoints are written once more.

mod batch;
mod checkpoint;
mod config;
mod discovery;
mod emitter;
mod event;
mod lines;
mod metrics;
mod sink;
mod tailer;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use regex::bytes::Regex;
use sidecar_runtime::{usage, Applet, Context};
use tokio::sync::{mpsc, Semaphore};

use checkpoint::Store;
use config::{expand_env, Args, Parse};
use discovery::{Discovery, Wake};
use emitter::{Emitter, Limits, MultilineRule};
use metrics::Metrics;

/// File events queued for the reader; more are folded into one "look at
/// everything".
const WAKE_QUEUE: usize = 4096;
/// How often acknowledged offsets are written to `--data-dir`.
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, clap::Args)]
pub struct LogTailShip {
    #[command(flatten)]
    args: Args,
}

impl Applet for LogTailShip {
    const NAME: &'static str = "log-tail-ship";
    const ABOUT: &'static str =
        "Tail log files and ship them to Elasticsearch, Loki, HTTP or stdout";
    const ADMIN_ADDR: &'static str = "0.0.0.0:9542";

    /// Flags, globs, the multiline regex and the sink's URLs and secret
    /// files; nothing is created, opened for writing or connected to.
    fn check(&self) -> anyhow::Result<()> {
        validate(&self.args)?;
        multiline_rule(&self.args)?;
        discovery::Globs::compile(&self.args.paths, &self.args.excludes)?;
        sink::Sink::check(&self.args)
    }

    async fn run(self, ctx: Context) -> anyhow::Result<()> {
        run(self.args, ctx).await
    }
}

async fn run(args: Args, ctx: Context) -> anyhow::Result<()> {
    let multiline = multiline_rule(&args)?;
    let fields: Vec<(String, String)> = args
        .fields
        .iter()
        .map(|(k, v)| (k.clone(), expand_env(v)))
        .collect();
    let host = args.host_name.clone().unwrap_or_else(host_name);
    let template = event::Template::new(&host, &fields, args.parse == Parse::Json);

    let metrics = Metrics::default();
    metrics.register(&mut ctx.registry());
    let store = Arc::new(Mutex::new(Store::load(args.data_dir.as_deref())?));
    if args.data_dir.is_none() {
        tracing::warn!(
            "no --data-dir: offsets are kept in memory only; a restart reads files again"
        );
    }
    let sink = sink::Sink::from_args(&args, &metrics)?;

    let (wake_tx, wake_rx) = std::sync::mpsc::sync_channel(WAKE_QUEUE);
    let overflow = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let own = args
        .data_dir
        .iter()
        .chain(args.dead_letter.iter())
        .cloned()
        .collect();
    let discovery = Discovery::new(&args.paths, &args.excludes, own, args.follow_symlinks)?;
    let watcher = tokio::spawn(discovery::forward(
        discovery.watch(),
        wake_tx.clone(),
        overflow.clone(),
    ));
    let budget = Arc::new(Semaphore::new(
        (args.buffer_max_bytes as usize)
            .min(Semaphore::MAX_PERMITS)
            .min(u32::MAX as usize),
    ));
    let (batch_tx, batch_rx) = mpsc::unbounded_channel();
    let emitter = Emitter::new(
        template,
        multiline,
        Limits {
            max_events: args.batch_max_events,
            max_bytes: args.batch_max_bytes as usize,
            timeout: args.batch_timeout,
            max_line_bytes: args.max_line_bytes as usize,
        },
        batch_tx,
        budget,
        tokio::runtime::Handle::current(),
        ctx.shutdown_handle(),
        metrics.clone(),
    );
    let tailer = tailer::Tailer::new(
        tailer::Settings {
            max_line_bytes: args.max_line_bytes as usize,
            read_from: args.read_from,
            rotate_wait: args.rotate_wait,
            close_inactive: args.close_inactive,
            scan_interval: args.scan_interval,
        },
        discovery,
        store.clone(),
        emitter,
        metrics.clone(),
    );
    let (reader_done_tx, mut reader_done) = tokio::sync::oneshot::channel::<()>();
    let reader = std::thread::Builder::new()
        .name("tailer".into())
        .spawn(move || {
            tailer.run(wake_rx, overflow);
            let _ = reader_done_tx.send(());
        })?;
    let mut delivery = tokio::spawn(sink::run(sink, batch_rx, store.clone(), metrics.clone()));
    let saver = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(CHECKPOINT_INTERVAL);
            loop {
                tick.tick().await;
                save(&store).await;
            }
        })
    };

    tracing::info!(paths = ?args.paths, sink = ?args.sink, "log-tail-ship started");
    ctx.set_ready(true);
    tokio::select! {
        // The reader also sees the shutdown and may stop first: that is
        // the shutdown, not a failure.
        biased;
        _ = ctx.shutdown() => {}
        _ = &mut reader_done, if !ctx.shutdown_handle().is_requested() => {
            saver.abort();
            save(&store).await;
            anyhow::bail!("the reader thread stopped unexpectedly");
        }
    }

    // Drain: the reader sends its last complete lines and stops; the sink
    // delivers what it holds. Whatever is not acknowledged when the grace
    // period ends is read again after the restart.
    // If the queue is full the reader still sees the shutdown (it checks).
    let _ = wake_tx.try_send(Wake::Shutdown);
    let deadline = ctx
        .shutdown_grace()
        .saturating_sub(Duration::from_millis(500));
    let drained = tokio::time::timeout(deadline, async {
        let _ = tokio::task::spawn_blocking(move || reader.join()).await;
        let _ = (&mut delivery).await;
    })
    .await;
    if drained.is_err() {
        tracing::warn!("grace period over before the sink acknowledged everything; the rest is sent again after the restart");
    }
    saver.abort();
    watcher.abort();
    save(&store).await;
    tracing::info!("checkpoints written; bye");
    Ok(())
}

fn multiline_rule(args: &Args) -> anyhow::Result<Option<MultilineRule>> {
    let Some(re) = &args.multiline_start else {
        return Ok(None);
    };
    Ok(Some(MultilineRule {
        start: Regex::new(re)
            .map_err(|e| usage!("--multiline-start {re:?}: invalid regex: {e}"))?,
        max_lines: args.multiline_max_lines,
        timeout: args.multiline_timeout,
    }))
}

fn validate(args: &Args) -> anyhow::Result<()> {
    if args.max_line_bytes == 0 {
        return Err(usage!("--max-line-bytes: must be at least 1"));
    }
    if args.batch_max_events == 0 {
        return Err(usage!("--batch-max-events: must be at least 1"));
    }
    if args.multiline_max_lines == 0 {
        return Err(usage!("--multiline-max-lines: must be at least 1"));
    }
    if args.batch_max_bytes == 0 {
        return Err(usage!("--batch-max-bytes: must be at least 1"));
    }
    if args.batch_max_bytes > args.buffer_max_bytes {
        return Err(usage!(
            "--batch-max-bytes ({}) must not exceed --buffer-max-bytes ({})",
            args.batch_max_bytes,
            args.buffer_max_bytes
        ));
    }
    Ok(())
}

/// Writes the checkpoint file if acknowledgements moved it.
async fn save(store: &Arc<Mutex<Store>>) {
    let snap = store
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .snapshot_if_dirty();
    if let Some((dir, raw)) = snap {
        let res = tokio::task::spawn_blocking(move || checkpoint::write_atomic(&dir, &raw)).await;
        if let Ok(Err(e)) = res {
            tracing::error!(error = %e, "cannot write checkpoints");
        }
    }
}

/// The kernel's host name (a Pod's name in Kubernetes).
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into())
}
