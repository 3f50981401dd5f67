//! One change's way to the app: validation, then each action in order.
//!
//! A change that fails part-way is retried by the runtime's `Runner` (with
//! backoff, newest change only) from the action that failed: an app that
//! already accepted the request is not asked twice because the signal after
//! it failed.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context as _, Result};
use sidecar_runtime::actions::{Action, HttpAction, StatusMatch, Trigger};
use sidecar_runtime::process::{self, CommandSpec};
use sidecar_runtime::redact::redact_url;

use crate::metrics::Metrics;
use crate::runtimeinfo::RuntimeInfo;
use crate::snapshot::Snapshot;

/// The environment variable that carries the content hash to `--exec` and
/// `--validate-cmd`.
pub const HASH_ENV: &str = "CONFIG_WATCH_RELOAD_HASH";

/// A content state to bring the app to, and how far that has got.
pub struct Change {
    pub snapshot: Snapshot,
    validated: AtomicBool,
    next_action: AtomicUsize,
    attempts: AtomicU64,
    finished: AtomicBool,
}

impl Change {
    pub fn new(snapshot: Snapshot) -> Change {
        Change {
            snapshot,
            validated: AtomicBool::new(false),
            next_action: AtomicUsize::new(0),
            attempts: AtomicU64::new(0),
            finished: AtomicBool::new(false),
        }
    }

    /// Reloaded, blocked by validation, or given up.
    pub fn is_finished(&self) -> bool {
        self.finished.load(Ordering::SeqCst)
    }

    fn finish(&self) {
        self.finished.store(true, Ordering::SeqCst)
    }
}

pub struct Reloader {
    pub validate: Option<CommandSpec>,
    pub actions: Vec<Action>,
    /// `--webhook-retries`: attempts per change; `None` = until success.
    pub max_attempts: Option<u64>,
    /// Confirms signals through Prometheus' runtimeinfo (signal mode).
    pub runtimeinfo: Option<RuntimeInfo>,
    pub metrics: Arc<Metrics>,
}

/// How `Reloader::apply` ended for a change.
#[derive(Debug)]
pub enum Outcome {
    Reloaded,
    /// `--validate-cmd` failed: the reload waits for the next change.
    Blocked,
    /// `--webhook-retries` attempts failed.
    GaveUp,
}

impl Reloader {
    /// The `Runner` job: `Err` asks for a retry; every `Outcome` is final.
    pub async fn run(&self, change: &Change) -> Result<()> {
        self.apply(change).await.map(|_| ())
    }

    /// Validates (once per change) and runs the remaining actions.
    pub async fn apply(&self, change: &Change) -> Result<Outcome> {
        let trigger = Trigger {
            env: vec![(HASH_ENV.to_string(), change.snapshot.hex())],
            ..Default::default()
        };
        let hash = change.snapshot.short();
        if !change.validated.load(Ordering::SeqCst) {
            if let Some(spec) = &self.validate {
                if let Err(e) = self.validate(spec, &trigger).await {
                    self.metrics.validation_failures.inc();
                    tracing::warn!(hash, error = %format!("{e:#}"), "validation failed: reload blocked until the next change");
                    change.finish();
                    return Ok(Outcome::Blocked);
                }
                tracing::debug!(hash, "validation passed");
            }
            change.validated.store(true, Ordering::SeqCst);
        }
        let attempt = change.attempts.fetch_add(1, Ordering::SeqCst) + 1;
        let start = change.next_action.load(Ordering::SeqCst);
        for (i, action) in self.actions.iter().enumerate().skip(start) {
            let began = Instant::now();
            let result = match (action, &self.runtimeinfo) {
                (Action::Signal(_), Some(info)) => confirmed(action, info, &trigger).await,
                _ => action.run(&trigger).await,
            };
            if let Action::Http(h) = action {
                self.record_webhook(h, &result, began);
            }
            if let Err(e) = result {
                let e = with_hint(e);
                self.metrics.reload_failed();
                self.metrics.action_failed(action.kind());
                if self.max_attempts.is_some_and(|max| attempt >= max) {
                    self.metrics.retries_exhausted.inc();
                    if let Action::Http(h) = action {
                        self.metrics
                            .webhook_error(&redact_url(&h.url), "retries_exhausted");
                    }
                    tracing::error!(hash, attempts = attempt, action = %action.describe(), error = %format!("{e:#}"), "reload failed; giving up until the next change");
                    change.finish();
                    return Ok(Outcome::GaveUp);
                }
                return Err(e.context(format!("reload of {hash} ({})", action.describe())));
            }
            change.next_action.store(i + 1, Ordering::SeqCst);
        }
        self.metrics.reload_succeeded();
        change.finish();
        tracing::info!(hash, attempts = attempt, "reload succeeded");
        Ok(Outcome::Reloaded)
    }

    async fn validate(&self, spec: &CommandSpec, trigger: &Trigger) -> Result<()> {
        let mut spec = spec.clone();
        spec.env.extend(trigger.env.iter().cloned());
        let out = process::run(&spec).await?;
        if out.exit.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let detail = if stderr.trim().is_empty() {
            stdout
        } else {
            stderr
        };
        bail!(
            "{} ({}): {}",
            shell_words::join(&spec.argv),
            out.exit,
            detail.trim()
        )
    }

    /// configmap-reload's per-webhook metrics for one request.
    fn record_webhook(&self, h: &HttpAction, result: &Result<()>, began: Instant) {
        let url = redact_url(&h.url);
        let status = match result {
            Ok(()) => accepted_status(h),
            Err(e) => rejected_status(e),
        };
        if let Some(code) = &status {
            self.metrics.webhook_status(&url, code);
        }
        match result {
            Ok(()) => self.metrics.webhook_request(&url, true, began.elapsed()),
            Err(_) => {
                self.metrics.webhook_request(&url, false, began.elapsed());
                // configmap-reload tells a wrong status from a failed request.
                let reason = match status {
                    Some(_) => "client_response",
                    None => "client_request_do",
                };
                self.metrics.webhook_error(&url, reason);
            }
        }
    }
}

/// The status of an accepted response. The action reports only success, so
/// the exact code is known when one code is accepted (always, for
/// configmap-reload's single `-webhook-status-code`); for a set, the label is
/// the set as given (`200,204`), never a guess.
fn accepted_status(h: &HttpAction) -> Option<String> {
    match &h.accept {
        StatusMatch::Codes(codes) if codes.len() == 1 => Some(codes[0].to_string()),
        StatusMatch::Codes(codes) if codes.len() == 100 && codes[0] % 100 == 0 => {
            Some(format!("{}xx", codes[0] / 100))
        }
        StatusMatch::Codes(codes) => Some(
            codes
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(","),
        ),
        StatusMatch::FireAndForget => None,
    }
}

/// The status of a rejected response, from the action's error
/// (`POST url: status 503 (want 200): body`); `None` when no response came.
fn rejected_status(e: &anyhow::Error) -> Option<String> {
    let msg = format!("{e:#}");
    let (_, rest) = msg.split_once(": status ")?;
    let (code, rest) = rest.split_once(' ')?;
    (rest.starts_with("(want ") && code.len() == 3 && code.bytes().all(|b| b.is_ascii_digit()))
        .then(|| code.to_string())
}

/// Says what to do about the failures users ask about most: an endpoint that
/// wants credentials, Prometheus without `--web.enable-lifecycle`, and
/// signals across containers without a shared PID namespace or permission.
fn with_hint(e: anyhow::Error) -> anyhow::Error {
    let msg = format!("{e:#}");
    if msg.contains(": status 401 ") {
        e.context("the reload endpoint wants credentials: give --reload-bearer-token-file, --reload-header, or user:pass@ in the URL")
    } else if msg.contains(": status 403 ") && msg.contains("ifecycle") {
        e.context("Prometheus refuses reloads: start it with --web.enable-lifecycle")
    } else if msg.contains("no process matches") {
        e.context("the app's process is not visible: is `shareProcessNamespace: true` set in the Pod spec, and has the app started?")
    } else if msg.contains("EPERM") {
        e.context("not allowed to signal the app: run the sidecar as the app's user (runAsUser) or give it CAP_KILL")
    } else {
        e
    }
}

/// A signal whose effect is read back from Prometheus: the state before it,
/// then polling until a newer reload is reported.
async fn confirmed(action: &Action, info: &RuntimeInfo, trigger: &Trigger) -> Result<()> {
    let before = info.state().await.context("before signalling")?;
    action.run(trigger).await?;
    info.confirm(&before).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_labels_for_configmap_reload_requests_total() {
        let e = anyhow::anyhow!("POST http://h/: status 503 (want 200): busy")
            .context("reload of abc (POST http://h/)");
        assert_eq!(rejected_status(&e).as_deref(), Some("503"));
        let e = anyhow::anyhow!("POST http://h/: connection failed: refused");
        assert_eq!(rejected_status(&e), None);

        let mut h = HttpAction::new("http://h/").unwrap();
        assert_eq!(accepted_status(&h).as_deref(), Some("200"));
        h.accept = StatusMatch::Codes((200..300).collect());
        assert_eq!(accepted_status(&h).as_deref(), Some("2xx"));
        h.accept = StatusMatch::Codes(vec![200, 204]);
        assert_eq!(accepted_status(&h).as_deref(), Some("200,204"));
    }
}
