//! `--exechook-command` and `--webhook-url` on the runtime's actions: run
//! after the swap, on the first sync and on every change, retried with
//! backoff for the newest hash only; once and without retry with `--one-time`.

use std::sync::Arc;

use anyhow::Result;
use sidecar_runtime::actions::{Action, CommandAction, HttpAction, Runner, StatusMatch, Trigger};
use sidecar_runtime::backoff::Backoff;
use sidecar_runtime::process::CommandSpec;
use sidecar_runtime::Shutdown;

use crate::config::Config;
use crate::layout::Layout;
use crate::metrics::{self, Metrics};

struct Hook {
    name: &'static str,
    action: Action,
    backoff: std::time::Duration,
}

/// The configured hooks.
pub struct Hooks {
    hooks: Vec<Arc<Hook>>,
    layout: Layout,
    metrics: Metrics,
    runners: Vec<Runner<String>>,
}

impl Hooks {
    pub fn new(cfg: &Config, layout: &Layout, metrics: &Metrics) -> Result<Hooks> {
        let mut hooks = Vec::new();
        if let Some(e) = &cfg.exechook {
            // Upstream runs the command as a program path with no arguments.
            let spec = CommandSpec {
                argv: vec![e.command.clone()],
                timeout: Some(e.timeout),
                ..Default::default()
            };
            hooks.push(Arc::new(Hook {
                name: "exechook",
                action: Action::Command(CommandAction { spec }),
                backoff: e.backoff,
            }));
        }
        if let Some(w) = &cfg.webhook {
            let mut a = HttpAction::new(&w.url)?;
            a.method = reqwest::Method::from_bytes(w.method.as_bytes())?;
            a.timeout = w.timeout;
            // Upstream's 0 still sends the request and waits for an answer,
            // it only ignores the status (so --one-time does not exit first).
            a.accept = match w.success_status {
                0 => StatusMatch::Codes((100..=999).collect()),
                s => StatusMatch::Codes(vec![s]),
            };
            hooks.push(Arc::new(Hook {
                name: "webhook",
                action: Action::Http(a),
                backoff: w.backoff,
            }));
        }
        Ok(Hooks {
            hooks,
            layout: layout.clone(),
            metrics: metrics.clone(),
            runners: Vec::new(),
        })
    }

    fn trigger(layout: &Layout, hash: &str) -> Trigger {
        Trigger {
            env: vec![("GITSYNC_HASH".into(), hash.into())],
            headers: vec![("Gitsync-Hash".into(), hash.into())],
            cwd: Some(layout.worktree(hash)),
        }
    }

    async fn run_once(hook: &Hook, layout: &Layout, m: &Metrics, hash: &str) -> Result<()> {
        let r = hook.action.run(&Self::trigger(layout, hash)).await;
        let status = if r.is_ok() { "success" } else { "error" };
        m.hook_runs
            .get_or_create(&metrics::Hook {
                name: hook.name,
                status,
            })
            .inc();
        match &r {
            Ok(()) => tracing::info!(hook = hook.name, hash, "hook succeeded"),
            Err(e) => {
                tracing::error!(hook = hook.name, hash, error = %format!("{e:#}"), "hook failed")
            }
        }
        r
    }

    /// Starts the background runners (periodic mode).
    pub fn start(&mut self, stop: Shutdown) {
        for hook in &self.hooks {
            let h = hook.clone();
            let layout = self.layout.clone();
            let m = self.metrics.clone();
            let backoff = Backoff::new(h.backoff, h.backoff);
            self.runners.push(Runner::spawn(
                h.name,
                backoff,
                stop.clone(),
                move |hash: Arc<String>| {
                    let h = h.clone();
                    let layout = layout.clone();
                    let m = m.clone();
                    async move { Self::run_once(&h, &layout, &m, &hash).await }
                },
            ));
        }
    }

    /// Queues `hash` for every hook, replacing an older pending one.
    pub fn submit(&self, hash: &str) {
        for r in &self.runners {
            r.submit(hash.to_string());
        }
    }

    /// `--one-time`: every hook runs once, concurrently; an error if any failed.
    pub async fn run_all_once(&self, hash: &str) -> Result<()> {
        let runs = self
            .hooks
            .iter()
            .map(|h| Self::run_once(h, &self.layout, &self.metrics, hash));
        let results = futures_util::future::join_all(runs).await;
        let failed: Vec<_> = self
            .hooks
            .iter()
            .zip(&results)
            .filter(|(_, r)| r.is_err())
            .map(|(h, _)| h.name)
            .collect();
        anyhow::ensure!(failed.is_empty(), "hook(s) failed: {}", failed.join(", "));
        Ok(())
    }
}
