//! Upstream's metric names, so dashboards keep working, plus
//! `git_sync_last_success_timestamp_seconds`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use sidecar_runtime::Context;
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Status {
    pub status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Hook {
    pub name: &'static str,
    pub status: &'static str,
}

fn new_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

#[derive(Clone)]
pub struct Metrics {
    pub sync_count: Family<Status, Counter>,
    pub sync_duration: Family<Status, Histogram, fn() -> Histogram>,
    pub fetch_count: Counter,
    pub askpass: Family<Status, Counter>,
    pub github_app_token: Family<Status, Counter>,
    pub hook_runs: Family<Hook, Counter>,
    pub last_success: Gauge<f64, AtomicU64>,
}

impl Metrics {
    pub fn register(ctx: &Context) -> Metrics {
        let m = Metrics {
            sync_count: Family::default(),
            sync_duration: Family::new_with_constructor(new_histogram),
            fetch_count: Counter::default(),
            askpass: Family::default(),
            github_app_token: Family::default(),
            hook_runs: Family::default(),
            last_success: Gauge::default(),
        };
        let mut r = ctx.registry();
        r.register(
            "git_sync_count",
            "How many git syncs completed, partitioned by state (success, error, noop)",
            m.sync_count.clone(),
        );
        r.register(
            "git_sync_duration_seconds",
            "Summary of git_sync durations",
            m.sync_duration.clone(),
        );
        r.register(
            "git_fetch_count",
            "How many git fetches were run",
            m.fetch_count.clone(),
        );
        r.register(
            "git_sync_askpass_calls",
            "How many git askpass calls completed, partitioned by state (success, error)",
            m.askpass.clone(),
        );
        r.register(
            "git_sync_refresh_github_app_token_count",
            "How many times the GitHub app token was refreshed, partitioned by state (success, error)",
            m.github_app_token.clone(),
        );
        r.register(
            "git_sync_hook_run_count",
            "How many hook runs completed, partitioned by name and state (success, error)",
            m.hook_runs.clone(),
        );
        r.register(
            "git_sync_last_success_timestamp_seconds",
            "Unix time of the last successful sync",
            m.last_success.clone(),
        );
        m
    }
}
