//! Metrics: our own `config_watch_reload_*` names, plus the names of the
//! tools this applet replaces (thanos' `reloader_*` as exported by
//! prometheus-config-reloader, and `configmap_reload_*`), so existing
//! dashboards and alerts keep working.

use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sidecar_runtime::prometheus_client::metrics::counter::Counter;
use sidecar_runtime::prometheus_client::metrics::family::Family;
use sidecar_runtime::prometheus_client::metrics::gauge::Gauge;
use sidecar_runtime::prometheus_client::registry::Registry;

type Labels = Vec<(String, String)>;

#[derive(Default)]
pub struct Metrics {
    reloads: Family<Labels, Counter>,
    last_success_time: Gauge<f64, AtomicU64>,
    last_successful: Gauge,
    pub validation_failures: Counter,
    pub watch_events: Counter,
    pub watch_errors: Counter,
    pub watches: Gauge,
    pub changes: Counter,
    pub superseded: Counter,
    pub retries_exhausted: Counter,
    pub render_errors: Counter,
    pub unset_variables: Gauge,
    pub action_failures: Family<Labels, Counter>,
    // thanos `reloader_*` (prometheus-config-reloader).
    reloader_reloads: Counter,
    reloader_reloads_failed: Counter,
    pub apply_operations: Counter,
    reloader_info: Family<Labels, Gauge>,
    // configmap-reload, per webhook URL (password redacted).
    cm_success: Family<Labels, Counter>,
    cm_errors: Family<Labels, Counter>,
    cm_last_error: Family<Labels, Gauge>,
    cm_duration: Family<Labels, Gauge<f64, AtomicU64>>,
    cm_requests: Family<Labels, Counter>,
}

impl Metrics {
    pub fn register(reg: &mut Registry, method: &str) -> Metrics {
        let m = Metrics::default();
        m.reloader_info
            .get_or_create(&vec![("method".into(), method.into())])
            .set(1);
        let p = "config_watch_reload_";
        reg.register(
            format!("{p}reloads"),
            "Reload attempts by result (success, failure)",
            m.reloads.clone(),
        );
        reg.register(
            format!("{p}last_reload_success_timestamp_seconds"),
            "Unix time of the last successful reload",
            m.last_success_time.clone(),
        );
        reg.register(
            format!("{p}last_reload_successful"),
            "1 if the last reload attempt succeeded",
            m.last_successful.clone(),
        );
        reg.register(
            format!("{p}validation_failures"),
            "Changes whose --validate-cmd failed (reload blocked)",
            m.validation_failures.clone(),
        );
        reg.register(
            format!("{p}watch_events"),
            "File system events on watched directories",
            m.watch_events.clone(),
        );
        reg.register(
            format!("{p}watch_errors"),
            "Errors from the file system watcher",
            m.watch_errors.clone(),
        );
        reg.register(
            format!("{p}watches"),
            "Directories watched",
            m.watches.clone(),
        );
        reg.register(
            format!("{p}changes"),
            "Content changes of the watched set",
            m.changes.clone(),
        );
        reg.register(
            format!("{p}superseded"),
            "Pending reloads replaced by a newer change before they succeeded",
            m.superseded.clone(),
        );
        reg.register(
            format!("{p}retries_exhausted"),
            "Changes given up after --webhook-retries attempts",
            m.retries_exhausted.clone(),
        );
        reg.register(
            format!("{p}render_errors"),
            "Failed --render runs (reload blocked)",
            m.render_errors.clone(),
        );
        reg.register(
            format!("{p}unset_variables"),
            "Unset $(VAR) references kept literally at the last render",
            m.unset_variables.clone(),
        );
        reg.register(
            format!("{p}action_failures"),
            "Failed reload actions by kind (http, signal, command)",
            m.action_failures.clone(),
        );

        reg.register(
            "reloader_reloads",
            "Reload attempts (thanos reloader name)",
            m.reloader_reloads.clone(),
        );
        reg.register(
            "reloader_reloads_failed",
            "Failed reload attempts (thanos reloader name)",
            m.reloader_reloads_failed.clone(),
        );
        reg.register(
            "reloader_last_reload_successful",
            "1 if the last reload succeeded (thanos reloader name)",
            m.last_successful.clone(),
        );
        reg.register(
            "reloader_last_reload_success_timestamp_seconds",
            "Unix time of the last successful reload (thanos reloader name)",
            m.last_success_time.clone(),
        );
        reg.register(
            "reloader_config_apply_operations",
            "Evaluations of the watched set (thanos reloader name)",
            m.apply_operations.clone(),
        );
        reg.register(
            "reloader_config_apply_operations_failed",
            "Failed renders (thanos reloader name)",
            m.render_errors.clone(),
        );
        reg.register(
            "reloader_config_environment_variable_expansion_errors",
            "Unset variables at the last render (thanos reloader name)",
            m.unset_variables.clone(),
        );
        reg.register(
            "reloader_watch_events",
            "File system events (thanos reloader name)",
            m.watch_events.clone(),
        );
        reg.register(
            "reloader_watch_errors",
            "Watcher errors (thanos reloader name)",
            m.watch_errors.clone(),
        );
        reg.register(
            "reloader_watches",
            "Directories watched (thanos reloader name)",
            m.watches.clone(),
        );
        reg.register(
            "reloader_info",
            "Reload method (thanos reloader name)",
            m.reloader_info.clone(),
        );

        reg.register(
            "configmap_reload_success_reloads",
            "Successful reload requests per webhook (configmap-reload name)",
            m.cm_success.clone(),
        );
        reg.register(
            "configmap_reload_request_errors",
            "Reload request errors per webhook and reason (configmap-reload name)",
            m.cm_errors.clone(),
        );
        reg.register(
            "configmap_reload_last_reload_error",
            "1 if the last reload request of a webhook failed (configmap-reload name)",
            m.cm_last_error.clone(),
        );
        reg.register(
            "configmap_reload_last_request_duration_seconds",
            "Duration of the last reload request per webhook (configmap-reload name)",
            m.cm_duration.clone(),
        );
        reg.register(
            "configmap_reload_requests",
            "Reload requests per webhook and response status code (configmap-reload name)",
            m.cm_requests.clone(),
        );
        reg.register(
            "configmap_reload_watcher_errors",
            "Watcher errors (configmap-reload name)",
            m.watch_errors.clone(),
        );
        m
    }

    pub fn reload_succeeded(&self) {
        self.reloads
            .get_or_create(&vec![("result".into(), "success".into())])
            .inc();
        self.reloader_reloads.inc();
        self.last_successful.set(1);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        self.last_success_time.set(now.as_secs_f64());
    }

    pub fn reload_failed(&self) {
        self.reloads
            .get_or_create(&vec![("result".into(), "failure".into())])
            .inc();
        self.reloader_reloads.inc();
        self.reloader_reloads_failed.inc();
        self.last_successful.set(0);
    }

    pub fn action_failed(&self, kind: &str) {
        self.action_failures
            .get_or_create(&vec![("action".into(), kind.into())])
            .inc();
    }

    /// One reload request to a webhook; `webhook` is already redacted.
    pub fn webhook_request(&self, webhook: &str, ok: bool, took: Duration) {
        let l = vec![("webhook".to_string(), webhook.to_string())];
        self.cm_duration.get_or_create(&l).set(took.as_secs_f64());
        self.cm_last_error.get_or_create(&l).set(i64::from(!ok));
        if ok {
            self.cm_success.get_or_create(&l).inc();
        }
    }

    /// A response from a webhook; `webhook` is already redacted.
    pub fn webhook_status(&self, webhook: &str, status_code: &str) {
        self.cm_requests
            .get_or_create(&vec![
                ("webhook".into(), webhook.into()),
                ("status_code".into(), status_code.into()),
            ])
            .inc();
    }

    pub fn webhook_error(&self, webhook: &str, reason: &str) {
        self.cm_errors
            .get_or_create(&vec![
                ("webhook".into(), webhook.into()),
                ("reason".into(), reason.into()),
            ])
            .inc();
    }
}
