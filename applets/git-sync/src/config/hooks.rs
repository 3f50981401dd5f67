//! `--exechook-*` (and the deprecated `--sync-hook-command`) and
//! `--webhook-*`.

use std::time::Duration;

use anyhow::Result;
use sidecar_runtime::usage;

use super::lookup::{min_duration, Lookup};
use super::{ExecHook, WebHook};
use crate::GitSync;

pub fn exechook(f: &mut GitSync, l: &Lookup) -> Result<Option<ExecHook>> {
    let mut command = l.string(
        "exechook-command",
        f.exechook_command.take(),
        &["GITSYNC_EXECHOOK_COMMAND", "GIT_SYNC_EXECHOOK_COMMAND"],
        "",
    );
    let sync_hook = l.string(
        "sync-hook-command",
        f.sync_hook_command.take(),
        &["GIT_SYNC_HOOK_COMMAND"],
        "",
    );
    if !sync_hook.is_empty() {
        l.note("setting --exechook-command from deprecated --sync-hook-command");
        command = sync_hook;
    }
    if command.is_empty() {
        return Ok(None);
    }
    let timeout = l.duration(
        "exechook-timeout",
        f.exechook_timeout.take(),
        &["GITSYNC_EXECHOOK_TIMEOUT", "GIT_SYNC_EXECHOOK_TIMEOUT"],
        Duration::from_secs(30),
    )?;
    let backoff = l.duration(
        "exechook-backoff",
        f.exechook_backoff.take(),
        &["GITSYNC_EXECHOOK_BACKOFF", "GIT_SYNC_EXECHOOK_BACKOFF"],
        Duration::from_secs(3),
    )?;
    Ok(Some(ExecHook {
        command,
        timeout: min_duration(timeout, Duration::from_secs(1), "exechook-timeout")?,
        backoff: min_duration(backoff, Duration::from_secs(1), "exechook-backoff")?,
    }))
}

pub fn webhook(f: &mut GitSync, l: &Lookup) -> Result<Option<WebHook>> {
    let url = l.string(
        "webhook-url",
        f.webhook_url.take(),
        &["GITSYNC_WEBHOOK_URL", "GIT_SYNC_WEBHOOK_URL"],
        "",
    );
    if url.is_empty() {
        return Ok(None);
    }
    url::Url::parse(&url).map_err(|e| usage!("invalid flag: --webhook-url: {e}"))?;
    let method = l.string(
        "webhook-method",
        f.webhook_method.take(),
        &["GITSYNC_WEBHOOK_METHOD", "GIT_SYNC_WEBHOOK_METHOD"],
        "POST",
    );
    http::Method::from_bytes(method.as_bytes())
        .map_err(|_| usage!("invalid flag: --webhook-method {method:?} is not an HTTP method"))?;
    let mut status = l.int(
        "webhook-success-status",
        f.webhook_success_status.take(),
        &[
            "GITSYNC_WEBHOOK_SUCCESS_STATUS",
            "GIT_SYNC_WEBHOOK_SUCCESS_STATUS",
        ],
        200,
    )?;
    if status == -1 {
        status = 0;
    }
    if !(0..=999).contains(&status) || (1..100).contains(&status) {
        return Err(usage!(
            "invalid flag: --webhook-success-status must be a valid HTTP code or 0"
        ));
    }
    let timeout = l.duration(
        "webhook-timeout",
        f.webhook_timeout.take(),
        &["GITSYNC_WEBHOOK_TIMEOUT", "GIT_SYNC_WEBHOOK_TIMEOUT"],
        Duration::from_secs(1),
    )?;
    let backoff = l.duration(
        "webhook-backoff",
        f.webhook_backoff.take(),
        &["GITSYNC_WEBHOOK_BACKOFF", "GIT_SYNC_WEBHOOK_BACKOFF"],
        Duration::from_secs(3),
    )?;
    Ok(Some(WebHook {
        url,
        method,
        success_status: status as u16,
        timeout: min_duration(timeout, Duration::from_secs(1), "webhook-timeout")?,
        backoff: min_duration(backoff, Duration::from_secs(1), "webhook-backoff")?,
    }))
}
