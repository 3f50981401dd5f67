//! When to sync and when to give up: `--period`, `--init-period`,
//! `--sync-timeout`, `--one-time`, `--sync-on-signal`, the failure limits,
//! and their deprecated spellings (`--wait`, `--timeout`,
//! `--max-sync-failures`).

use std::time::Duration;

use anyhow::Result;
use nix::sys::signal::Signal;
use sidecar_runtime::usage;

use super::lookup::{min_duration, Lookup};
use crate::goparse::{self, SignedDuration};
use crate::GitSync;

pub struct Schedule {
    pub period: Duration,
    pub init_period: Duration,
    pub sync_timeout: Duration,
    pub one_time: bool,
    pub sync_on_signal: Option<Signal>,
    pub max_failures: i64,
    pub init_max_failures: i64,
}

pub fn resolve(f: &mut GitSync, l: &Lookup) -> Result<Schedule> {
    let period = l.duration(
        "period",
        f.period.take(),
        &["GITSYNC_PERIOD", "GIT_SYNC_PERIOD"],
        Duration::from_secs(10),
    )?;
    let period = match deprecated_wait(f, l)? {
        Some(wait) => wait,
        None => period,
    };
    let period = min_duration(period, Duration::from_millis(10), "period")?;
    let init_period = l.duration(
        "init-period",
        f.init_period.take(),
        &["GITSYNC_INIT_PERIOD"],
        Duration::ZERO,
    )?;
    let init_period = if init_period.dur.is_zero() && !init_period.neg {
        period
    } else {
        min_duration(init_period, Duration::from_millis(10), "init-period")?
    };

    let mut sync_timeout = l.duration(
        "sync-timeout",
        f.sync_timeout.take(),
        &["GITSYNC_SYNC_TIMEOUT", "GIT_SYNC_SYNC_TIMEOUT"],
        Duration::from_secs(120),
    )?;
    let timeout = l.int("timeout", f.timeout.take(), &["GIT_SYNC_TIMEOUT"], 0)?;
    if timeout != 0 {
        l.note("setting --sync-timeout from deprecated --timeout");
        sync_timeout = SignedDuration {
            neg: timeout < 0,
            dur: Duration::from_secs(timeout.unsigned_abs()),
        };
    }
    let sync_timeout = min_duration(sync_timeout, Duration::from_millis(10), "sync-timeout")?;

    let one_time = l.bool(
        "one-time",
        f.one_time.take(),
        &["GITSYNC_ONE_TIME", "GIT_SYNC_ONE_TIME"],
        false,
    )?;
    let sync_on_signal = match l.get(
        "sync-on-signal",
        f.sync_on_signal.take(),
        &["GITSYNC_SYNC_ON_SIGNAL", "GIT_SYNC_SYNC_ON_SIGNAL"],
    ) {
        Some(r) if !r.value.is_empty() => Some(parse_signal(&r.value).ok_or_else(|| {
            usage!(
                "invalid flag: --sync-on-signal must be a valid signal name or number (got {:?})",
                r.value
            )
        })?),
        _ => None,
    };

    let mut max_failures = l.int(
        "max-failures",
        f.max_failures.take(),
        &["GITSYNC_MAX_FAILURES", "GIT_SYNC_MAX_FAILURES"],
        0,
    )?;
    let max_sync_failures = l.int(
        "max-sync-failures",
        f.max_sync_failures.take(),
        &["GIT_SYNC_MAX_SYNC_FAILURES"],
        0,
    )?;
    if max_sync_failures != 0 {
        l.note("setting --max-failures from deprecated --max-sync-failures");
        max_failures = max_sync_failures;
    }
    let init_max_failures = match l.get(
        "init-max-failures",
        f.init_max_failures.take(),
        &["GITSYNC_INIT_MAX_FAILURES"],
    ) {
        Some(r) => goparse::parse_int(&r.value).map_err(|e| usage!("{}: {e}", r.source))?,
        None => max_failures,
    };
    Ok(Schedule {
        period,
        init_period,
        sync_timeout,
        one_time,
        sync_on_signal,
        max_failures,
        init_max_failures,
    })
}

/// `--wait` (float seconds), which replaces `--period` unless it is 0.
fn deprecated_wait(f: &mut GitSync, l: &Lookup) -> Result<Option<SignedDuration>> {
    let Some(r) = l.get("wait", f.wait.take(), &["GIT_SYNC_WAIT"]) else {
        return Ok(None);
    };
    let secs: f64 = r
        .value
        .parse()
        .map_err(|_| usage!("{}: invalid number {:?}", r.source, r.value))?;
    if secs == 0.0 {
        return Ok(None);
    }
    l.note("setting --period from deprecated --wait");
    Ok(Some(SignedDuration {
        neg: secs < 0.0,
        dur: Duration::from_millis((secs.abs() * 1000.0) as u64),
    }))
}

/// `SIGHUP`, `HUP` or `1`.
fn parse_signal(s: &str) -> Option<Signal> {
    if let Ok(n) = goparse::parse_int(s) {
        return Signal::try_from(i32::try_from(n).ok()?).ok();
    }
    sidecar_runtime::actions::parse_signal(s).ok()
}
