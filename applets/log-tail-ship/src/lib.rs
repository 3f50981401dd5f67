//! Tail log files and ship them to Elasticsearch, Loki, HTTP or stdout,
//! at-least-once across rotation and restarts.
//!
//! Life of the process: flags → checkpoints loaded → the reader thread
//! (`tailer`) cuts files into events and batches them → the sink task
//! delivers batches in order → acknowledged batches move the checkpoints,
//! which a timer writes to disk → on SIGTERM the reader stops, the sink
//! drains within the grace period, and the checkpoints are written once more.

mod batch;
mod buffer;
mod checkpoint;
mod config;
mod container;
mod discovery;
mod emitter;
mod event;
mod json;
mod k8s;
mod lines;
mod metrics;
mod outlet;
mod sink;
mod tailer;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use regex::bytes::Regex;
use sidecar_runtime::{usage, Applet, Context};
use tokio::sync::{mpsc, Semaphore};

use buffer::Buffer;
use checkpoint::Store;
use config::{expand_env, Args, Parse};
use discovery::{Discovery, Wake};
use emitter::{Emitter, Limits, MultilineRule};
use k8s::Metadata;
use metrics::Metrics;
use outlet::Outlet;
use sink::Queue;

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

    /// Flags, globs, the multiline regex, the sink's URLs and secret files,
    /// and the places it writes; nothing is created, opened for writing or
    /// connected to.
    fn check(&self) -> anyhow::Result<()> {
        validate(&self.args)?;
        multiline_rule(&self.args)?;
        if let Some(dir) = &self.args.k8s_podinfo_dir {
            if !dir.is_dir() {
                return Err(usage!(
                    "--k8s-podinfo-dir {}: not a directory",
                    dir.display()
                ));
            }
        }
        discovery::Globs::compile(&self.args.paths, &self.args.excludes)?;
        // Where it writes: the checkpoint and buffer directories (made at
        // start) and the dead letter file.
        if let Some(dir) = &self.args.data_dir {
            sidecar_runtime::check::writable_dir("--data-dir", dir)?;
        }
        if let Some(dir) = &self.args.buffer_dir {
            sidecar_runtime::check::writable_dir("--buffer-dir", dir)?;
        }
        if let Some(f) = &self.args.dead_letter {
            sidecar_runtime::check::writable_file("--dead-letter", f)?;
        }
        sink::Sink::check(&self.args)
    }

    async fn run(self, ctx: Context) -> anyhow::Result<()> {
        run(self.args, ctx).await
    }
}

async fn run(args: Args, ctx: Context) -> anyhow::Result<()> {
    let metrics = Metrics::default();
    metrics.register(&mut ctx.registry());
    let store = Arc::new(Mutex::new(Store::load(args.data_dir.as_deref())?));
    if args.data_dir.is_none() {
        tracing::warn!(
            "no --data-dir: offsets are kept in memory only; a restart reads files again"
        );
    }
    let sink = sink::Sink::from_args(&args, &metrics)?;
    let metadata = kubernetes_metadata(&args, &metrics);
    let buffer = match &args.buffer_dir {
        Some(dir) => Some(Buffer::open(dir, args.buffer_max_bytes_disk, &metrics)?),
        None => None,
    };
    let (outlet, queue) = outlet(&args, &ctx, &metrics, buffer.clone())?;
    let mut reader = Reader::start(&args, &ctx, &metrics, store.clone(), metadata, outlet)?;
    let mut delivery = tokio::spawn(sink::run(sink, queue, store.clone(), metrics.clone()));
    let persist = Persist { store, buffer };
    let saver = tokio::spawn(persist.clone().every(CHECKPOINT_INTERVAL));
    tracing::info!(paths = ?args.paths, sink = ?args.sink, format = ?args.format, buffer_dir = ?args.buffer_dir, "log-tail-ship started");
    ctx.set_ready(true);

    let stopped = reader.stopped_or_shutdown(&ctx).await;
    if stopped.is_err() {
        saver.abort();
        persist.save().await;
        return stopped;
    }
    // Drain: the reader sends its last complete lines and stops; the sink
    // delivers what it holds. Whatever is not acknowledged when the grace
    // period ends is read again after the restart.
    let deadline = ctx
        .shutdown_grace()
        .saturating_sub(Duration::from_millis(500));
    let drained = tokio::time::timeout(deadline, async {
        reader.stop().await;
        let _ = (&mut delivery).await;
    })
    .await;
    if drained.is_err() {
        tracing::warn!("grace period over before the sink acknowledged everything; the rest is sent again after the restart");
    }
    saver.abort();
    persist.save().await;
    tracing::info!("checkpoints written; bye");
    Ok(())
}

/// The reader thread (discovery, tailing, batching) and the task that
/// feeds it file events.
struct Reader {
    thread: std::thread::JoinHandle<()>,
    done: tokio::sync::oneshot::Receiver<()>,
    wake: std::sync::mpsc::SyncSender<Wake>,
    watcher: tokio::task::JoinHandle<()>,
}

impl Reader {
    fn start(
        args: &Args,
        ctx: &Context,
        metrics: &Metrics,
        store: Arc<Mutex<Store>>,
        metadata: Arc<Metadata>,
        outlet: Outlet,
    ) -> anyhow::Result<Reader> {
        let fields: Vec<(String, String)> = args
            .fields
            .iter()
            .map(|(k, v)| (k.clone(), expand_env(v)))
            .collect();
        let host = args.host_name.clone().unwrap_or_else(host_name);
        let template = event::Template::new(&host, &fields, args.parse == Parse::Json);
        let emitter = Emitter::new(
            template,
            args.format,
            multiline_rule(args)?,
            Limits {
                max_events: args.batch_max_events,
                max_bytes: args.batch_max_bytes as usize,
                timeout: args.batch_timeout,
                max_line_bytes: args.max_line_bytes as usize,
            },
            outlet,
            ctx.shutdown_handle(),
        );
        // Our own files (checkpoints, buffer, dead letter) are never tailed.
        let own = args
            .data_dir
            .iter()
            .chain(args.buffer_dir.iter())
            .chain(args.dead_letter.iter())
            .cloned()
            .collect();
        let discovery = Discovery::new(&args.paths, &args.excludes, own, args.follow_symlinks)?;
        let (wake, wake_rx) = std::sync::mpsc::sync_channel(WAKE_QUEUE);
        let overflow = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let watcher = tokio::spawn(discovery::forward(
            discovery.watch(),
            wake.clone(),
            overflow.clone(),
        ));
        let tailer = tailer::Tailer::new(
            tailer::Settings {
                max_line_bytes: args.max_line_bytes as usize,
                read_from: args.read_from,
                rotate_wait: args.rotate_wait,
                close_inactive: args.close_inactive,
                scan_interval: args.scan_interval,
            },
            metadata,
            discovery,
            store,
            emitter,
            metrics.clone(),
        );
        let (done_tx, done) = tokio::sync::oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("tailer".into())
            .spawn(move || {
                tailer.run(wake_rx, overflow);
                let _ = done_tx.send(());
            })?;
        Ok(Reader {
            thread,
            done,
            wake,
            watcher,
        })
    }

    /// Waits for the shutdown; an error if the reader stopped before it.
    async fn stopped_or_shutdown(&mut self, ctx: &Context) -> anyhow::Result<()> {
        tokio::select! {
            // The reader also sees the shutdown and may stop first: that is
            // the shutdown, not a failure.
            biased;
            _ = ctx.shutdown() => Ok(()),
            _ = &mut self.done, if !ctx.shutdown_handle().is_requested() => {
                anyhow::bail!("the reader thread stopped unexpectedly")
            }
        }
    }

    /// Tells the reader to stop (it sends its complete lines first) and
    /// waits for it.
    async fn stop(self) {
        // If the queue is full the reader still sees the shutdown (it checks).
        let _ = self.wake.try_send(Wake::Shutdown);
        let thread = self.thread;
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        self.watcher.abort();
    }
}

/// `--k8s-metadata` and `--format`'s pod paths: the fields files' events
/// get. The podinfo files are followed by a task for the life of the process.
fn kubernetes_metadata(args: &Args, metrics: &Metrics) -> Arc<Metadata> {
    let metadata = Arc::new(Metadata::new(args.format, args.k8s_metadata));
    if args.k8s_metadata {
        let mut info = k8s::PodInfo::new(
            args.k8s_podinfo_dir.as_deref(),
            metadata.clone(),
            metrics.clone(),
        );
        let watch = info.watch();
        info.load();
        if let Some(watch) = watch {
            tokio::spawn(info.follow(watch));
        }
    }
    metadata
}

/// Where full batches go, and where the sink takes them from: memory, or
/// the disk buffer.
fn outlet(
    args: &Args,
    ctx: &Context,
    metrics: &Metrics,
    buffer: Option<Arc<Buffer>>,
) -> anyhow::Result<(Outlet, Queue)> {
    let rt = tokio::runtime::Handle::current();
    Ok(match buffer {
        Some(b) => (
            Outlet::disk(b.clone(), rt, ctx.shutdown_handle(), metrics.clone()),
            Queue::Disk(b),
        ),
        None => {
            let (tx, rx) = mpsc::unbounded_channel();
            let budget = Arc::new(Semaphore::new(
                (args.buffer_max_bytes as usize)
                    .min(Semaphore::MAX_PERMITS)
                    .min(u32::MAX as usize),
            ));
            let framing = match args.sink {
                config::SinkKind::Elasticsearch => Some(sink::ActionLines::new(args)?),
                _ => None,
            };
            let outlet = Outlet::memory(
                tx,
                budget,
                framing,
                rt,
                ctx.shutdown_handle(),
                metrics.clone(),
            );
            (outlet, Queue::Memory(rx))
        }
    })
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
    if args.buffer_dir.is_some() && args.buffer_max_bytes_disk < args.batch_max_bytes {
        return Err(usage!(
            "--buffer-max-bytes-disk ({}) must be at least --batch-max-bytes ({})",
            args.buffer_max_bytes_disk,
            args.batch_max_bytes
        ));
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

/// The checkpoints and, with `--buffer-dir`, the disk buffer: written
/// together, the buffer first, since the checkpoints may only pass lines
/// the buffer holds durably.
#[derive(Clone)]
struct Persist {
    store: Arc<Mutex<Store>>,
    buffer: Option<Arc<Buffer>>,
}

impl Persist {
    async fn every(self, period: Duration) {
        let mut tick = tokio::time::interval(period);
        loop {
            tick.tick().await;
            self.save().await;
        }
    }

    /// fsyncs the buffer (the checkpoints move past what it now holds),
    /// writes its acknowledgement ledger, and the checkpoint file if it moved.
    async fn save(&self) {
        if let Some(b) = &self.buffer {
            let (b, store) = (b.clone(), self.store.clone());
            let res = tokio::task::spawn_blocking(move || {
                // A failed fsync is logged by sync and tried again next time.
                let _ = b.sync(&store);
                b.write_ledger()
            })
            .await;
            if let Ok(Err(e)) = res {
                tracing::error!(error = %e, "cannot write the disk buffer's ledger; acknowledged events may be sent again after a restart");
            }
        }
        let snap = self
            .store
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .snapshot_if_dirty();
        if let Some((dir, raw)) = snap {
            let res =
                tokio::task::spawn_blocking(move || checkpoint::write_atomic(&dir, &raw)).await;
            if let Ok(Err(e)) = res {
                tracing::error!(error = %e, "cannot write checkpoints");
            }
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
