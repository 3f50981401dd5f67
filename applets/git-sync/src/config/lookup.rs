//! Where a setting comes from: its flag, else its env vars (upstream's
//! precedence), parsed with Go's syntax, every error naming the source.

use std::cell::RefCell;
use std::time::Duration;

use anyhow::Result;
use sidecar_runtime::usage;

use crate::goparse::{self, SignedDuration};

/// Where env vars come from (the process, or a map in unit tests).
pub trait Env {
    fn get(&self, name: &str) -> Option<String>;
}

pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

/// A raw value and where it came from, for error messages.
pub struct Raw {
    pub value: String,
    pub source: String,
}

/// Looks settings up. Resolution is pure: what upstream would log while
/// parsing (deprecated flags, env overrides) is collected in `notes` and
/// logged by the caller that runs the configuration.
pub struct Lookup<'a> {
    env: &'a dyn Env,
    notes: RefCell<Vec<String>>,
}

impl<'a> Lookup<'a> {
    pub fn new(env: &'a dyn Env) -> Lookup<'a> {
        Lookup {
            env,
            notes: RefCell::default(),
        }
    }

    pub fn note(&self, what: impl Into<String>) {
        self.notes.borrow_mut().push(what.into());
    }

    pub fn into_notes(self) -> Vec<String> {
        self.notes.into_inner()
    }

    /// The flag, else its env vars. Later names in `envs` are the legacy
    /// ones and win over earlier ones (upstream v4.4+), with a note.
    pub fn get(&self, flag: &str, value: Option<String>, envs: &[&str]) -> Option<Raw> {
        if let Some(v) = value {
            return Some(Raw {
                value: v,
                source: format!("--{flag}"),
            });
        }
        let mut found: Option<Raw> = None;
        for name in envs {
            if let Some(v) = self.env.get(name) {
                if let Some(prev) = &found {
                    self.note(format!("env {} was overridden by ${name}", prev.source));
                }
                found = Some(Raw {
                    value: v,
                    source: format!("${name}"),
                });
            }
        }
        found
    }

    pub fn string(
        &self,
        flag: &str,
        value: Option<String>,
        envs: &[&str],
        default: &str,
    ) -> String {
        self.get(flag, value, envs)
            .map(|r| r.value)
            .unwrap_or_else(|| default.to_string())
    }

    pub fn bool(
        &self,
        flag: &str,
        value: Option<String>,
        envs: &[&str],
        default: bool,
    ) -> Result<bool> {
        match self.get(flag, value, envs) {
            None => Ok(default),
            Some(r) => goparse::parse_bool(&r.value).map_err(|e| usage!("{}: {e}", r.source)),
        }
    }

    pub fn int(
        &self,
        flag: &str,
        value: Option<String>,
        envs: &[&str],
        default: i64,
    ) -> Result<i64> {
        match self.get(flag, value, envs) {
            None => Ok(default),
            Some(r) => goparse::parse_int(&r.value).map_err(|e| usage!("{}: {e}", r.source)),
        }
    }

    pub fn duration(
        &self,
        flag: &str,
        value: Option<String>,
        envs: &[&str],
        default: Duration,
    ) -> Result<SignedDuration> {
        match self.get(flag, value, envs) {
            None => Ok(SignedDuration {
                neg: false,
                dur: default,
            }),
            Some(r) => goparse::parse_duration(&r.value).map_err(|e| usage!("{}: {e}", r.source)),
        }
    }
}

pub fn min_duration(d: SignedDuration, min: Duration, flag: &str) -> Result<Duration> {
    if !d.at_least(min) {
        return Err(usage!("invalid flag: --{flag} must be at least {min:?}"));
    }
    Ok(d.dur)
}

pub fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}
