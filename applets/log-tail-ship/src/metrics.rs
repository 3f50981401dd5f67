//! Counters behind `/metrics`: nothing is lost without being counted.

use sidecar_runtime::prometheus_client::metrics::counter::Counter;
use sidecar_runtime::prometheus_client::metrics::gauge::Gauge;
use sidecar_runtime::prometheus_client::registry::Registry;

#[derive(Clone, Default)]
pub struct Metrics {
    pub lines_read: Counter,
    pub bytes_read: Counter,
    pub lines_truncated: Counter,
    pub events_sent: Counter,
    pub events_acked: Counter,
    pub events_duplicate: Counter,
    pub events_dead_lettered: Counter,
    pub retries: Counter,
    pub files_opened: Counter,
    pub files_closed: Counter,
    pub files_truncated: Counter,
    pub podinfo_reloads: Counter,
    pub podinfo_errors: Counter,
    pub open_files: Gauge,
    pub lag_bytes: Gauge,
    pub buffer_bytes: Gauge,
    pub disk_buffer_bytes: Gauge,
    pub disk_buffer_segments: Gauge,
    pub disk_buffer_events: Gauge,
    pub disk_buffer_full: Counter,
    pub disk_buffer_corrupt: Counter,
    pub disk_buffer_corrupt_bytes: Counter,
}

impl Metrics {
    pub fn register(&self, r: &mut Registry) {
        let r = r.sub_registry_with_prefix("log_tail_ship");
        r.register(
            "lines_read",
            "Lines read from files",
            self.lines_read.clone(),
        );
        r.register(
            "bytes_read",
            "Bytes read from files",
            self.bytes_read.clone(),
        );
        r.register(
            "lines_truncated",
            "Lines longer than --max-line-bytes, shipped truncated",
            self.lines_truncated.clone(),
        );
        r.register(
            "events_sent",
            "Events handed to the sink (retries not counted)",
            self.events_sent.clone(),
        );
        r.register(
            "events_acked",
            "Events the sink acknowledged",
            self.events_acked.clone(),
        );
        r.register(
            "events_duplicate",
            "Events Elasticsearch already had (409 on create), counted as acknowledged",
            self.events_duplicate.clone(),
        );
        r.register(
            "events_dead_lettered",
            "Events the sink rejected for good (written to --dead-letter if set)",
            self.events_dead_lettered.clone(),
        );
        r.register(
            "retries",
            "Requests or items sent again after a failure",
            self.retries.clone(),
        );
        r.register(
            "files_opened",
            "Files opened for tailing",
            self.files_opened.clone(),
        );
        r.register(
            "files_closed",
            "Files closed (deleted, rotated away, or done)",
            self.files_closed.clone(),
        );
        r.register(
            "files_truncated",
            "Truncations detected (copytruncate)",
            self.files_truncated.clone(),
        );
        r.register(
            "podinfo_reloads",
            "Times the --k8s-podinfo-dir files were read again after a change",
            self.podinfo_reloads.clone(),
        );
        r.register(
            "podinfo_errors",
            "Unreadable or malformed --k8s-podinfo-dir files (the last good values stay)",
            self.podinfo_errors.clone(),
        );
        r.register("open_files", "Files open now", self.open_files.clone());
        r.register(
            "lag_bytes",
            "Bytes in open files not yet acknowledged by the sink",
            self.lag_bytes.clone(),
        );
        r.register(
            "buffer_bytes",
            "Bytes of events read and not yet acknowledged (capped by --buffer-max-bytes)",
            self.buffer_bytes.clone(),
        );
        r.register(
            "disk_buffer_bytes",
            "Bytes of --buffer-dir segment files (capped by --buffer-max-bytes-disk)",
            self.disk_buffer_bytes.clone(),
        );
        r.register(
            "disk_buffer_segments",
            "Segment files in --buffer-dir",
            self.disk_buffer_segments.clone(),
        );
        r.register(
            "disk_buffer_events",
            "Events in --buffer-dir not yet acknowledged by the sink",
            self.disk_buffer_events.clone(),
        );
        r.register(
            "disk_buffer_full",
            "Times reading paused because --buffer-max-bytes-disk was reached",
            self.disk_buffer_full.clone(),
        );
        r.register(
            "disk_buffer_corrupt",
            "Torn or corrupt records found in --buffer-dir; each cut its segment there",
            self.disk_buffer_corrupt.clone(),
        );
        r.register(
            "disk_buffer_corrupt_bytes",
            "Bytes of --buffer-dir segments cut away after a torn or corrupt record",
            self.disk_buffer_corrupt_bytes.clone(),
        );
    }
}
