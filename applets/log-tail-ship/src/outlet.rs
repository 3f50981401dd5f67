//! Where full batches go: to the sink task through memory, holding
//! `--buffer-max-bytes` of budget until acknowledged, or into the disk
//! buffer (`--buffer-dir`). Either way the reader waits while there is no
//! room, until shutdown.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sidecar_runtime::Shutdown;
use tokio::sync::{mpsc, Semaphore};

use crate::batch::Batch;
use crate::buffer::{Buffer, Full, Writer};
use crate::checkpoint::Store;
use crate::metrics::Metrics;
use crate::sink::ActionLines;

/// How long a failed disk buffer write waits before it is tried again.
const WRITE_RETRY: Duration = Duration::from_secs(1);

enum Kind {
    Memory {
        tx: mpsc::UnboundedSender<Batch>,
        budget: Arc<Semaphore>,
        /// Permits in `budget` when none is taken: --buffer-max-bytes.
        capacity: usize,
        /// With Elasticsearch: the `_bulk` action line written before each
        /// event, so that a batch is its request and the sink sends it
        /// without a copy. (Disk buffer records hold the events alone.)
        framing: Option<ActionLines>,
    },
    Disk(Writer),
}

pub struct Outlet {
    kind: Kind,
    rt: tokio::runtime::Handle,
    shutdown: Shutdown,
    metrics: Metrics,
}

impl Outlet {
    pub fn memory(
        tx: mpsc::UnboundedSender<Batch>,
        budget: Arc<Semaphore>,
        framing: Option<ActionLines>,
        rt: tokio::runtime::Handle,
        shutdown: Shutdown,
        metrics: Metrics,
    ) -> Outlet {
        let capacity = budget.available_permits().min(u32::MAX as usize);
        Outlet {
            kind: Kind::Memory {
                tx,
                budget,
                capacity,
                framing,
            },
            rt,
            shutdown,
            metrics,
        }
    }

    pub fn disk(
        buffer: Arc<Buffer>,
        rt: tokio::runtime::Handle,
        shutdown: Shutdown,
        metrics: Metrics,
    ) -> Outlet {
        Outlet {
            kind: Kind::Disk(Writer(buffer)),
            rt,
            shutdown,
            metrics,
        }
    }

    /// The action line writer batches for this outlet need, if any.
    pub fn framing(&mut self) -> Option<&mut ActionLines> {
        match &mut self.kind {
            Kind::Memory { framing, .. } => framing.as_mut(),
            Kind::Disk(_) => None,
        }
    }

    pub fn is_disk(&self) -> bool {
        matches!(self.kind, Kind::Disk(_))
    }

    /// Hands `batch` on, first waiting for room, and counts its events as
    /// sent. False when shutdown came first: the batch is not sent, so its
    /// lines are read again after the restart. `force` (disk only) appends
    /// over the cap rather than wait.
    pub fn send(&self, mut batch: Batch, force: bool) -> bool {
        let events = batch.len() as u64;
        match &self.kind {
            Kind::Memory {
                tx,
                budget,
                capacity,
                ..
            } => {
                // A batch can outgrow the whole budget by its last event (a
                // long line); it then takes all of it rather than wait forever.
                let want = batch.body.len().clamp(1, *capacity) as u32;
                let permit = if self.shutdown.is_requested() {
                    // Draining: take what is free, never wait.
                    budget.clone().try_acquire_many_owned(want).ok()
                } else {
                    self.wait(budget.clone().acquire_many_owned(want))
                        .and_then(Result::ok)
                };
                let Some(permit) = permit else { return false };
                self.metrics.buffer_bytes.inc_by(i64::from(want));
                batch.permit = Some(permit);
                // Counted before the shipper can see the batch: counted
                // after, a scrape could find it acknowledged and not sent.
                // The channel only fails once the shipper is gone, at
                // shutdown, when nothing is acknowledged any more.
                self.metrics.events_sent.inc_by(events);
                tx.send(batch).is_ok()
            }
            Kind::Disk(Writer(buffer)) => {
                let appended = self.append(buffer, &batch, force);
                if appended {
                    // Counted once appended (counted before, a batch that
                    // shutdown kept out would count too). The shipper has
                    // to read it back from the segment first, so only a
                    // scrape in the instant between could see it
                    // acknowledged and not yet sent.
                    self.metrics.events_sent.inc_by(events);
                }
                appended
            }
        }
    }

    fn append(&self, buffer: &Buffer, batch: &Batch, force: bool) -> bool {
        let mut paused = false;
        loop {
            match buffer.append(batch, force) {
                Ok(()) => return true,
                Err(_) if self.shutdown.is_requested() => return false,
                Err(Full::Cap) => {
                    if !paused {
                        paused = true;
                        self.metrics.disk_buffer_full.inc();
                        tracing::debug!(
                            "disk buffer full; reading paused until the sink catches up"
                        );
                    }
                    if self.wait(buffer.space()).is_none() {
                        return false;
                    }
                }
                Err(Full::Io(e)) => {
                    tracing::error!(error = %e, "cannot write to --buffer-dir; reading paused, retrying");
                    if self.wait(tokio::time::sleep(WRITE_RETRY)).is_none() {
                        return false;
                    }
                }
            }
        }
    }

    /// With a disk buffer: makes what was appended durable and moves the
    /// checkpoints past it.
    pub fn sync(&self, store: &Mutex<Store>) {
        if let Kind::Disk(Writer(buffer)) = &self.kind {
            // A failed fsync is logged by sync and tried again next time.
            let _ = buffer.sync(store);
        }
    }

    /// Runs `f` to completion on the runtime, unless shutdown comes first.
    fn wait<F: Future>(&self, f: F) -> Option<F::Output> {
        let stop = self.shutdown.clone();
        self.rt.block_on(async move {
            tokio::select! {
                v = f => Some(v),
                _ = stop.requested() => None,
            }
        })
    }
}
