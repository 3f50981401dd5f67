//! Flags + env vars → a validated `Config`, with upstream's names, defaults,
//! precedence and checks. Every error names the flag or variable (exit 2).

use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use anyhow::Result;
use nix::sys::signal::Signal;
use serde::Deserialize;
use sidecar_runtime::usage;

use crate::goparse::{self, SignedDuration};
use crate::GitSync;

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Submodules {
    Recursive,
    Shallow,
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GcMode {
    Auto,
    Always,
    Aggressive,
    Off,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credential {
    pub url: String,
    pub username: String,
    #[serde(default)]
    pub password: String,
    #[serde(default, rename = "password-file")]
    pub password_file: String,
}

#[derive(Debug, Clone)]
pub struct ExecHook {
    pub command: String,
    pub timeout: Duration,
    pub backoff: Duration,
}

#[derive(Debug, Clone)]
pub struct WebHook {
    pub url: String,
    pub method: String,
    /// 0 means fire and forget.
    pub success_status: u16,
    pub timeout: Duration,
    pub backoff: Duration,
}

#[derive(Debug, Clone)]
pub struct Ssh {
    pub key_files: Vec<PathBuf>,
    pub known_hosts: bool,
    pub known_hosts_file: PathBuf,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub repo: String,
    pub ref_: String,
    pub depth: u32,
    pub submodules: Submodules,
    pub sparse_checkout_file: Option<PathBuf>,
    /// Absolute and lexically clean; created and symlink-resolved at startup.
    pub root: PathBuf,
    /// As given: absolute, or relative to the resolved root.
    pub link: String,
    pub error_file: Option<String>,
    pub touch_file: Option<String>,
    pub period: Duration,
    pub init_period: Duration,
    pub sync_timeout: Duration,
    pub one_time: bool,
    pub sync_on_signal: Option<Signal>,
    pub max_failures: i64,
    pub init_max_failures: i64,
    pub group_write: bool,
    pub add_user: bool,
    pub stale_worktree_timeout: Duration,
    pub exechook: Option<ExecHook>,
    pub webhook: Option<WebHook>,
    pub credentials: Vec<Credential>,
    pub ssh: Ssh,
    pub askpass_url: Option<String>,
    pub git_configs: Vec<(String, String)>,
    pub gc: GcMode,
    pub http_bind: Option<SocketAddr>,
    pub http_metrics: bool,
    pub http_pprof: bool,
    pub verbose: i64,
    pub ready_max_staleness: Option<Duration>,
    pub sync_token_file: Option<PathBuf>,
}

/// A raw value and where it came from, for error messages.
struct Raw {
    value: String,
    source: String,
}

/// Looks a setting up: the flag, else its env vars. Later names in `envs` are
/// the legacy ones and win over earlier ones (upstream v4.4+), with a warning.
struct Lookup<'a> {
    env: &'a dyn Env,
}

impl Lookup<'_> {
    fn get(&self, flag: &str, value: Option<String>, envs: &[&str]) -> Option<Raw> {
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
                    tracing::warn!(
                        "env {} was overridden by {}",
                        prev.source,
                        format!("${name}")
                    );
                }
                found = Some(Raw {
                    value: v,
                    source: format!("${name}"),
                });
            }
        }
        found
    }

    fn string(&self, flag: &str, value: Option<String>, envs: &[&str], default: &str) -> String {
        self.get(flag, value, envs)
            .map(|r| r.value)
            .unwrap_or_else(|| default.to_string())
    }

    fn bool(
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

    fn int(&self, flag: &str, value: Option<String>, envs: &[&str], default: i64) -> Result<i64> {
        match self.get(flag, value, envs) {
            None => Ok(default),
            Some(r) => goparse::parse_int(&r.value).map_err(|e| usage!("{}: {e}", r.source)),
        }
    }

    fn duration(
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

fn min_duration(d: SignedDuration, min: Duration, flag: &str) -> Result<Duration> {
    if !d.at_least(min) {
        return Err(usage!("invalid flag: --{flag} must be at least {min:?}"));
    }
    Ok(d.dur)
}

impl Config {
    pub fn resolve(f: GitSync, env: &dyn Env) -> Result<Config> {
        let l = Lookup { env };
        if l.bool("man", f.man.clone(), &[], false)? {
            use clap::Args;
            let mut cmd = GitSync::augment_args(clap::Command::new("git-sync"));
            println!("{}", cmd.render_long_help());
            std::process::exit(0);
        }
        reject_unsupported(&f, &l)?;

        let root = l.string("root", f.root, &["GITSYNC_ROOT", "GIT_SYNC_ROOT"], "");
        if root.is_empty() {
            return Err(usage!("required flag: --root must be specified"));
        }
        let root = absolute_clean(Path::new(&root));
        let mut repo = l.string("repo", f.repo, &["GITSYNC_REPO", "GIT_SYNC_REPO"], "");
        if repo.is_empty() {
            return Err(usage!("required flag: --repo must be specified"));
        }

        let mut ref_ = l.string("ref", f.ref_, &["GITSYNC_REF"], "HEAD");
        let branch = l.string("branch", f.branch, &["GIT_SYNC_BRANCH"], "");
        let rev = l.string("rev", f.rev, &["GIT_SYNC_REV"], "");
        match (branch.is_empty(), rev.is_empty()) {
            (false, _) if rev.is_empty() || rev == "HEAD" => {
                tracing::info!("setting --ref from deprecated --branch");
                ref_ = branch;
            }
            (true, false) => {
                tracing::info!("setting --ref from deprecated --rev");
                ref_ = rev;
            }
            (false, false) => {
                return Err(usage!(
                    "deprecated flag combo: can't set --ref from deprecated --branch and --rev (one or the other is OK)"
                ))
            }
            _ => {}
        }
        if ref_.is_empty() {
            return Err(usage!("required flag: --ref must be specified"));
        }

        let depth = l.int("depth", f.depth, &["GITSYNC_DEPTH", "GIT_SYNC_DEPTH"], 1)?;
        if depth < 0 {
            return Err(usage!(
                "invalid flag: --depth must be greater than or equal to 0"
            ));
        }
        let depth =
            u32::try_from(depth).map_err(|_| usage!("invalid flag: --depth is too large"))?;

        let submodules = match l
            .string(
                "submodules",
                f.submodules,
                &["GITSYNC_SUBMODULES", "GIT_SYNC_SUBMODULES"],
                "recursive",
            )
            .as_str()
        {
            "recursive" => Submodules::Recursive,
            "shallow" => Submodules::Shallow,
            "off" => Submodules::Off,
            _ => {
                return Err(usage!(
                "invalid flag: --submodules must be one of \"recursive\", \"shallow\", or \"off\""
            ))
            }
        };

        let sparse_checkout_file = non_empty(l.string(
            "sparse-checkout-file",
            f.sparse_checkout_file,
            &[
                "GITSYNC_SPARSE_CHECKOUT_FILE",
                "GIT_SYNC_SPARSE_CHECKOUT_FILE",
            ],
            "",
        ))
        .map(|p| absolute_clean(Path::new(&p)));

        let gc = match l
            .string("git-gc", f.git_gc, &["GITSYNC_GIT_GC", "GIT_SYNC_GIT_GC"], "always")
            .as_str()
        {
            "auto" => GcMode::Auto,
            "always" => GcMode::Always,
            "aggressive" => GcMode::Aggressive,
            "off" => GcMode::Off,
            _ => {
                return Err(usage!(
                    "invalid flag: --git-gc must be one of \"auto\", \"always\", \"aggressive\", or \"off\""
                ))
            }
        };

        let mut link = l.string("link", f.link, &["GITSYNC_LINK", "GIT_SYNC_LINK"], "");
        let dest = l.string("dest", f.dest, &["GIT_SYNC_DEST"], "");
        if !dest.is_empty() {
            tracing::info!("setting --link from deprecated --dest");
            link = dest;
        }
        if link.is_empty() {
            link = repo
                .trim_matches('/')
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .to_string();
        }

        let mut period = l.duration(
            "period",
            f.period,
            &["GITSYNC_PERIOD", "GIT_SYNC_PERIOD"],
            Duration::from_secs(10),
        )?;
        if let Some(r) = l.get("wait", f.wait, &["GIT_SYNC_WAIT"]) {
            let secs: f64 = r
                .value
                .parse()
                .map_err(|_| usage!("{}: invalid number {:?}", r.source, r.value))?;
            if secs != 0.0 {
                tracing::info!("setting --period from deprecated --wait");
                period = SignedDuration {
                    neg: secs < 0.0,
                    dur: Duration::from_millis((secs.abs() * 1000.0) as u64),
                };
            }
        }
        let period = min_duration(period, Duration::from_millis(10), "period")?;
        let init_period = l.duration(
            "init-period",
            f.init_period,
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
            f.sync_timeout,
            &["GITSYNC_SYNC_TIMEOUT", "GIT_SYNC_SYNC_TIMEOUT"],
            Duration::from_secs(120),
        )?;
        let timeout = l.int("timeout", f.timeout, &["GIT_SYNC_TIMEOUT"], 0)?;
        if timeout != 0 {
            tracing::info!("setting --sync-timeout from deprecated --timeout");
            sync_timeout = SignedDuration {
                neg: timeout < 0,
                dur: Duration::from_secs(timeout.unsigned_abs()),
            };
        }
        let sync_timeout = min_duration(sync_timeout, Duration::from_millis(10), "sync-timeout")?;

        let one_time = l.bool(
            "one-time",
            f.one_time,
            &["GITSYNC_ONE_TIME", "GIT_SYNC_ONE_TIME"],
            false,
        )?;
        let sync_on_signal = match l.get("sync-on-signal", f.sync_on_signal, &["GITSYNC_SYNC_ON_SIGNAL", "GIT_SYNC_SYNC_ON_SIGNAL"]) {
            Some(r) if !r.value.is_empty() => Some(parse_signal(&r.value).ok_or_else(|| {
                usage!("invalid flag: --sync-on-signal must be a valid signal name or number (got {:?})", r.value)
            })?),
            _ => None,
        };

        let mut max_failures = l.int(
            "max-failures",
            f.max_failures,
            &["GITSYNC_MAX_FAILURES", "GIT_SYNC_MAX_FAILURES"],
            0,
        )?;
        let max_sync_failures = l.int(
            "max-sync-failures",
            f.max_sync_failures,
            &["GIT_SYNC_MAX_SYNC_FAILURES"],
            0,
        )?;
        if max_sync_failures != 0 {
            tracing::info!("setting --max-failures from deprecated --max-sync-failures");
            max_failures = max_sync_failures;
        }
        let init_max_failures = match l.get(
            "init-max-failures",
            f.init_max_failures,
            &["GITSYNC_INIT_MAX_FAILURES"],
        ) {
            Some(r) => goparse::parse_int(&r.value).map_err(|e| usage!("{}: {e}", r.source))?,
            None => max_failures,
        };

        let touch_file = non_empty(l.string(
            "touch-file",
            f.touch_file,
            &["GITSYNC_TOUCH_FILE", "GIT_SYNC_TOUCH_FILE"],
            "",
        ));
        let error_file = non_empty(l.string(
            "error-file",
            f.error_file,
            &["GITSYNC_ERROR_FILE", "GIT_SYNC_ERROR_FILE"],
            "",
        ));
        let add_user = l.bool(
            "add-user",
            f.add_user,
            &["GITSYNC_ADD_USER", "GIT_SYNC_ADD_USER"],
            false,
        )?;
        let group_write = l.bool(
            "group-write",
            f.group_write,
            &["GITSYNC_GROUP_WRITE", "GIT_SYNC_GROUP_WRITE"],
            false,
        )?;
        if l.int(
            "change-permissions",
            f.change_permissions,
            &["GIT_SYNC_PERMISSIONS"],
            0,
        )? != 0
        {
            return Err(usage!(
                "deprecated flag: --change-permissions is no longer supported"
            ));
        }
        let stale = l.duration(
            "stale-worktree-timeout",
            f.stale_worktree_timeout,
            &["GITSYNC_STALE_WORKTREE_TIMEOUT"],
            Duration::ZERO,
        )?;
        let stale_worktree_timeout = min_duration(stale, Duration::ZERO, "stale-worktree-timeout")?;

        let mut exechook_command = l.string(
            "exechook-command",
            f.exechook_command,
            &["GITSYNC_EXECHOOK_COMMAND", "GIT_SYNC_EXECHOOK_COMMAND"],
            "",
        );
        let sync_hook = l.string(
            "sync-hook-command",
            f.sync_hook_command,
            &["GIT_SYNC_HOOK_COMMAND"],
            "",
        );
        if !sync_hook.is_empty() {
            tracing::info!("setting --exechook-command from deprecated --sync-hook-command");
            exechook_command = sync_hook;
        }
        let exechook = if exechook_command.is_empty() {
            None
        } else {
            let timeout = l.duration(
                "exechook-timeout",
                f.exechook_timeout,
                &["GITSYNC_EXECHOOK_TIMEOUT", "GIT_SYNC_EXECHOOK_TIMEOUT"],
                Duration::from_secs(30),
            )?;
            let backoff = l.duration(
                "exechook-backoff",
                f.exechook_backoff,
                &["GITSYNC_EXECHOOK_BACKOFF", "GIT_SYNC_EXECHOOK_BACKOFF"],
                Duration::from_secs(3),
            )?;
            Some(ExecHook {
                command: exechook_command,
                timeout: min_duration(timeout, Duration::from_secs(1), "exechook-timeout")?,
                backoff: min_duration(backoff, Duration::from_secs(1), "exechook-backoff")?,
            })
        };

        let webhook_url = l.string(
            "webhook-url",
            f.webhook_url,
            &["GITSYNC_WEBHOOK_URL", "GIT_SYNC_WEBHOOK_URL"],
            "",
        );
        let webhook = if webhook_url.is_empty() {
            None
        } else {
            url::Url::parse(&webhook_url)
                .map_err(|e| usage!("invalid flag: --webhook-url: {e}"))?;
            let method = l.string(
                "webhook-method",
                f.webhook_method,
                &["GITSYNC_WEBHOOK_METHOD", "GIT_SYNC_WEBHOOK_METHOD"],
                "POST",
            );
            http::Method::from_bytes(method.as_bytes()).map_err(|_| {
                usage!("invalid flag: --webhook-method {method:?} is not an HTTP method")
            })?;
            let mut status = l.int(
                "webhook-success-status",
                f.webhook_success_status,
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
                f.webhook_timeout,
                &["GITSYNC_WEBHOOK_TIMEOUT", "GIT_SYNC_WEBHOOK_TIMEOUT"],
                Duration::from_secs(1),
            )?;
            let backoff = l.duration(
                "webhook-backoff",
                f.webhook_backoff,
                &["GITSYNC_WEBHOOK_BACKOFF", "GIT_SYNC_WEBHOOK_BACKOFF"],
                Duration::from_secs(3),
            )?;
            Some(WebHook {
                url: webhook_url,
                method,
                success_status: status as u16,
                timeout: min_duration(timeout, Duration::from_secs(1), "webhook-timeout")?,
                backoff: min_duration(backoff, Duration::from_secs(1), "webhook-backoff")?,
            })
        };

        // Credentials.
        let mut username = l.string(
            "username",
            f.username,
            &["GITSYNC_USERNAME", "GIT_SYNC_USERNAME"],
            "",
        );
        let mut password = l.string(
            "__env__GITSYNC_PASSWORD",
            f.env_password,
            &["GITSYNC_PASSWORD", "GIT_SYNC_PASSWORD"],
            "",
        );
        if let Some(p) = f.password.filter(|p| !p.is_empty()) {
            tracing::info!("setting $GITSYNC_PASSWORD from deprecated --password");
            password = p;
        }
        let password_file = l.string(
            "password-file",
            f.password_file,
            &["GITSYNC_PASSWORD_FILE", "GIT_SYNC_PASSWORD_FILE"],
            "",
        );
        let repo_url = url::Url::parse(&repo).ok();
        if !username.is_empty() {
            if password.is_empty() && password_file.is_empty() {
                return Err(usage!("required flag: $GITSYNC_PASSWORD or --password-file must be specified when --username is specified"));
            }
            if !password.is_empty() && !password_file.is_empty() {
                return Err(usage!("invalid flag: only one of $GITSYNC_PASSWORD and --password-file may be specified"));
            }
            if repo_url
                .as_ref()
                .is_some_and(|u| !u.username().is_empty() || u.password().is_some())
            {
                return Err(usage!("invalid flag: credentials may not be specified in --repo when --username is specified"));
            }
        } else {
            if !password.is_empty() {
                return Err(usage!("invalid flag: $GITSYNC_PASSWORD may only be specified when --username is specified"));
            }
            if !password_file.is_empty() {
                return Err(usage!("invalid flag: --password-file may only be specified when --username is specified"));
            }
            // user:pass@ in an http(s) URL becomes a credential (ssh keeps its user).
            if let Some(mut u) = repo_url.filter(|u| matches!(u.scheme(), "http" | "https")) {
                if !u.username().is_empty() || u.password().is_some() {
                    username = percent_decode(u.username());
                    password = u.password().map(percent_decode).unwrap_or_default();
                    let _ = u.set_username("");
                    let _ = u.set_password(None);
                    repo = u.to_string();
                }
            }
        }
        let mut credentials = Vec::new();
        if !username.is_empty() {
            credentials.push(Credential {
                url: repo.clone(),
                username,
                password,
                password_file,
            });
        }
        let mut raw_creds = f.credential;
        if raw_creds.is_empty() {
            if let Some(r) = l.get("credential", None, &["GITSYNC_CREDENTIAL"]) {
                raw_creds.push(r.value);
            }
        }
        for raw in raw_creds.iter().filter(|r| !r.trim().is_empty()) {
            credentials.extend(parse_credentials(raw)?);
        }

        let mut key_files = f.ssh_key_file;
        if key_files.is_empty() {
            if let Some(r) = l.get(
                "ssh-key-file",
                None,
                &[
                    "GITSYNC_SSH_KEY_FILE",
                    "GIT_SYNC_SSH_KEY_FILE",
                    "GIT_SSH_KEY_FILE",
                ],
            ) {
                key_files = r
                    .value
                    .split(':')
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect();
            }
        }
        if key_files.is_empty() {
            key_files.push("/etc/git-secret/ssh".into());
        }
        let ssh = Ssh {
            key_files: key_files.into_iter().map(PathBuf::from).collect(),
            known_hosts: l.bool(
                "ssh-known-hosts",
                f.ssh_known_hosts,
                &[
                    "GITSYNC_SSH_KNOWN_HOSTS",
                    "GIT_SYNC_KNOWN_HOSTS",
                    "GIT_KNOWN_HOSTS",
                ],
                true,
            )?,
            known_hosts_file: PathBuf::from(l.string(
                "ssh-known-hosts-file",
                f.ssh_known_hosts_file,
                &[
                    "GITSYNC_SSH_KNOWN_HOSTS_FILE",
                    "GIT_SYNC_SSH_KNOWN_HOSTS_FILE",
                    "GIT_SSH_KNOWN_HOSTS_FILE",
                ],
                "/etc/git-secret/known_hosts",
            )),
        };
        let askpass_url = non_empty(l.string(
            "askpass-url",
            f.askpass_url,
            &[
                "GITSYNC_ASKPASS_URL",
                "GIT_SYNC_ASKPASS_URL",
                "GIT_ASKPASS_URL",
            ],
            "",
        ));

        let mut git_configs = Vec::new();
        if let Some(r) = l.get(
            "git-config",
            f.git_config,
            &["GITSYNC_GIT_CONFIG", "GIT_SYNC_GIT_CONFIG"],
        ) {
            git_configs = parse_git_configs(&r.value).map_err(|e| usage!("{}: {e}", r.source))?;
        }
        for add in &f.git_config_add {
            let mut one = parse_git_configs(add).map_err(|e| usage!("--git-config-add: {e}"))?;
            if one.len() != 1 {
                return Err(usage!(
                    "--git-config-add: expected exactly one key:value, got {add:?}"
                ));
            }
            git_configs.append(&mut one);
        }

        let http_bind = match l.get(
            "http-bind",
            f.http_bind,
            &["GITSYNC_HTTP_BIND", "GIT_SYNC_HTTP_BIND"],
        ) {
            Some(r) if !r.value.is_empty() => Some(
                sidecar_runtime::admin::parse_listen_addr(&r.value)
                    .map_err(|e| usage!("{}: {e}", r.source))?,
            ),
            _ => None,
        };
        let http_metrics = l.bool(
            "http-metrics",
            f.http_metrics,
            &["GITSYNC_HTTP_METRICS", "GIT_SYNC_HTTP_METRICS"],
            false,
        )?;
        let http_pprof = l.bool(
            "http-pprof",
            f.http_pprof,
            &["GITSYNC_HTTP_PPROF", "GIT_SYNC_HTTP_PPROF"],
            false,
        )?;
        if http_bind.is_none() && http_metrics {
            return Err(usage!(
                "required flag: --http-bind must be specified when --http-metrics is set"
            ));
        }
        if http_bind.is_none() && http_pprof {
            return Err(usage!(
                "required flag: --http-bind must be specified when --http-pprof is set"
            ));
        }
        let mut verbose = l.int("verbose", f.verbose, &["GITSYNC_VERBOSE"], 0)?;
        if let Some(v) = f.v_deprecated {
            verbose = goparse::parse_int(&v).map_err(|e| usage!("--v: {e}"))?;
        }
        let staleness = l.duration(
            "ready-max-staleness",
            f.ready_max_staleness,
            &["GITSYNC_READY_MAX_STALENESS"],
            Duration::ZERO,
        )?;
        let staleness = min_duration(staleness, Duration::ZERO, "ready-max-staleness")?;
        let sync_token_file = non_empty(l.string(
            "sync-token-file",
            f.sync_token_file,
            &["GITSYNC_SYNC_TOKEN_FILE"],
            "",
        ))
        .map(PathBuf::from);

        Ok(Config {
            repo,
            ref_,
            depth,
            submodules,
            sparse_checkout_file,
            root,
            link,
            error_file,
            touch_file,
            period,
            init_period,
            sync_timeout,
            one_time,
            sync_on_signal,
            max_failures,
            init_max_failures,
            group_write,
            add_user,
            stale_worktree_timeout,
            exechook,
            webhook,
            credentials,
            ssh,
            askpass_url,
            git_configs,
            gc,
            http_bind,
            http_metrics,
            http_pprof,
            verbose,
            ready_max_staleness: (!staleness.is_zero()).then_some(staleness),
            sync_token_file,
        })
    }
}

/// Where `--error-file` points, from the raw flags (before validation, so a
/// config error can be written there). Relative to `--root`.
pub fn raw_error_file(f: &GitSync, env: &dyn Env) -> Option<PathBuf> {
    let l = Lookup { env };
    let root = l.string(
        "root",
        f.root.clone(),
        &["GITSYNC_ROOT", "GIT_SYNC_ROOT"],
        "",
    );
    let file = l.string(
        "error-file",
        f.error_file.clone(),
        &["GITSYNC_ERROR_FILE", "GIT_SYNC_ERROR_FILE"],
        "",
    );
    if root.is_empty() || file.is_empty() {
        return None;
    }
    Some(absolute_clean(&Path::new(&root).join(file)))
}

/// Upstream flags this implementation does not have. They are recognised by
/// name and refused, never silently ignored (README lists why).
fn reject_unsupported(f: &GitSync, l: &Lookup) -> Result<()> {
    let set = |flag: &str, v: &Option<String>, envs: &[&str]| {
        l.get(flag, v.clone(), envs).filter(|r| !r.value.is_empty())
    };
    let unsupported: [(&str, Option<Raw>, &str); 8] = [
        (
            "filter",
            set("filter", &f.filter, &["GITSYNC_FILTER"]),
            "libgit2 has no partial clone",
        ),
        (
            "pre-publish-exechook-command",
            set(
                "pre-publish-exechook-command",
                &f.pre_publish_exechook_command,
                &["GITSYNC_PRE_PUBLISH_EXECHOOK_COMMAND"],
            ),
            "unreleased upstream feature, not implemented",
        ),
        (
            "github-app-private-key-file",
            set(
                "github-app-private-key-file",
                &f.github_app_private_key_file,
                &["GITSYNC_GITHUB_APP_PRIVATE_KEY_FILE"],
            ),
            "GitHub App auth is not implemented",
        ),
        (
            "__env__GITSYNC_GITHUB_APP_PRIVATE_KEY",
            set(
                "__env__GITSYNC_GITHUB_APP_PRIVATE_KEY",
                &f.env_github_app_private_key,
                &["GITSYNC_GITHUB_APP_PRIVATE_KEY"],
            ),
            "GitHub App auth is not implemented",
        ),
        (
            "github-app-client-id",
            set(
                "github-app-client-id",
                &f.github_app_client_id,
                &["GITSYNC_GITHUB_APP_CLIENT_ID"],
            ),
            "GitHub App auth is not implemented",
        ),
        (
            "github-app-application-id",
            set(
                "github-app-application-id",
                &f.github_app_application_id,
                &["GITSYNC_GITHUB_APP_APPLICATION_ID"],
            )
            .filter(|r| r.value != "0"),
            "GitHub App auth is not implemented",
        ),
        (
            "github-app-installation-id",
            set(
                "github-app-installation-id",
                &f.github_app_installation_id,
                &["GITSYNC_GITHUB_APP_INSTALLATION_ID"],
            )
            .filter(|r| r.value != "0"),
            "GitHub App auth is not implemented",
        ),
        (
            "git",
            set("git", &f.git, &["GITSYNC_GIT", "GIT_SYNC_GIT"]).filter(|r| r.value != "git"),
            "git runs in-process (libgit2); there is no git binary to replace",
        ),
    ];
    for (flag, raw, why) in unsupported {
        if let Some(r) = raw {
            return Err(usage!(
                "unsupported flag: --{flag} (set by {}): {why}",
                r.source
            ));
        }
    }
    if l.bool(
        "cookie-file",
        f.cookie_file.clone(),
        &[
            "GITSYNC_COOKIE_FILE",
            "GIT_SYNC_COOKIE_FILE",
            "GIT_COOKIE_FILE",
        ],
        false,
    )? {
        return Err(usage!(
            "unsupported flag: --cookie-file: libgit2 has no http.cookiefile"
        ));
    }
    Ok(())
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// `SIGHUP`, `HUP` or `1`.
fn parse_signal(s: &str) -> Option<Signal> {
    if let Ok(n) = goparse::parse_int(s) {
        return Signal::try_from(i32::try_from(n).ok()?).ok();
    }
    sidecar_runtime::actions::parse_signal(s).ok()
}

/// One `--credential` value: a JSON object or a list of them.
fn parse_credentials(raw: &str) -> Result<Vec<Credential>> {
    let creds: Vec<Credential> = if raw.trim_start().starts_with('[') {
        serde_json::from_str(raw).map_err(|e| usage!("invalid flag: --credential {raw:?}: {e}"))?
    } else {
        vec![serde_json::from_str(raw)
            .map_err(|e| usage!("invalid flag: --credential {raw:?}: {e}"))?]
    };
    for c in &creds {
        if c.url.is_empty() {
            return Err(usage!("invalid flag: --credential URL must be specified"));
        }
        if c.username.is_empty() {
            return Err(usage!(
                "invalid flag: --credential username must be specified"
            ));
        }
        if c.password.is_empty() && c.password_file.is_empty() {
            return Err(usage!(
                "invalid flag: --credential password or password-file must be specified"
            ));
        }
        if !c.password.is_empty() && !c.password_file.is_empty() {
            return Err(usage!("invalid flag: only one of --credential password and password-file may be specified"));
        }
    }
    Ok(creds)
}

/// Upstream's `--git-config` syntax: `k:v,k2:"v 2"`; keys and values may be
/// quoted; escapes `\n \t \" \, \\` only.
pub fn parse_git_configs(s: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        if chars.peek().is_none() {
            return Ok(out);
        }
        let key = parse_config_token(&mut chars, ':', "key")?;
        if chars.next() != Some(':') {
            return Err(format!("key {key:?} has no value (want key:value)"));
        }
        let value = parse_config_token(&mut chars, ',', "value")?;
        if key.is_empty() {
            return Err("empty key".into());
        }
        out.push((key, value));
        match chars.next() {
            None => return Ok(out),
            Some(',') => {}
            Some(c) => return Err(format!("unexpected {c:?} after value")),
        }
    }
}

fn parse_config_token(
    chars: &mut std::iter::Peekable<std::str::Chars>,
    stop: char,
    what: &str,
) -> Result<String, String> {
    let mut out = String::new();
    let quoted = chars.peek() == Some(&'"');
    if quoted {
        chars.next();
    }
    loop {
        match chars.peek().copied() {
            None if quoted => return Err(format!("unterminated quoted {what}")),
            None => return Ok(out),
            Some('"') if quoted => {
                chars.next();
                return Ok(out);
            }
            Some(c) if c == stop && !quoted => return Ok(out),
            Some('\\') => {
                chars.next();
                match chars.next() {
                    Some('n') => out.push('\n'),
                    Some('t') => out.push('\t'),
                    Some(c @ ('"' | ',' | '\\')) => out.push(c),
                    Some(c) => return Err(format!("unsupported escape \\{c} in {what}")),
                    None => return Err(format!("dangling backslash in {what}")),
                }
            }
            Some(c) => {
                chars.next();
                out.push(c);
            }
        }
    }
}

/// Go's `filepath.Abs`: joined to the cwd and cleaned lexically, so
/// `../../x/../y` works before the directory exists.
pub fn absolute_clean(p: &Path) -> PathBuf {
    let joined = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .unwrap_or_else(|_| PathBuf::from("/"))
            .join(p)
    };
    let mut out = PathBuf::from("/");
    for c in joined.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct MapEnv(HashMap<&'static str, &'static str>);
    impl Env for MapEnv {
        fn get(&self, name: &str) -> Option<String> {
            self.0.get(name).map(|s| s.to_string())
        }
    }

    fn resolve(f: GitSync, env: &[(&'static str, &'static str)]) -> Result<Config> {
        Config::resolve(f, &MapEnv(env.iter().copied().collect()))
    }

    fn base() -> GitSync {
        GitSync {
            repo: Some("https://example.com/org/repo.git".into()),
            root: Some("/tmp/x".into()),
            ..Default::default()
        }
    }

    #[test]
    fn defaults_match_upstream() {
        let c = resolve(base(), &[]).unwrap();
        assert_eq!(c.ref_, "HEAD");
        assert_eq!(c.depth, 1);
        assert_eq!(c.link, "repo.git");
        assert_eq!(c.period, Duration::from_secs(10));
        assert_eq!(c.init_period, c.period);
        assert_eq!(c.sync_timeout, Duration::from_secs(120));
        assert_eq!(c.gc, GcMode::Always);
        assert_eq!(c.submodules, Submodules::Recursive);
        assert_eq!(c.max_failures, 0);
        assert!(c.ssh.known_hosts);
    }

    #[test]
    fn flag_beats_env_and_legacy_env_beats_new() {
        let mut f = base();
        f.period = Some("2s".into());
        let c = resolve(f, &[("GITSYNC_PERIOD", "5s")]).unwrap();
        assert_eq!(c.period, Duration::from_secs(2));
        let c = resolve(base(), &[("GITSYNC_DEPTH", "3"), ("GIT_SYNC_DEPTH", "0x4")]).unwrap();
        assert_eq!(c.depth, 4);
        let c = resolve(base(), &[("GIT_SYNC_WAIT", "0.5")]).unwrap();
        assert_eq!(c.period, Duration::from_millis(500));
    }

    #[test]
    fn bad_values_name_the_source() {
        let e = resolve(base(), &[("GITSYNC_ONE_TIME", "yes")]).unwrap_err();
        assert!(e.to_string().contains("$GITSYNC_ONE_TIME"), "{e}");
        let mut f = base();
        f.period = Some("5ms".into());
        assert!(resolve(f, &[])
            .unwrap_err()
            .to_string()
            .contains("--period"));
        let mut f = base();
        f.filter = Some("blob:none".into());
        assert!(resolve(f, &[])
            .unwrap_err()
            .to_string()
            .contains("--filter"));
        let mut f = base();
        f.http_metrics = Some("true".into());
        assert!(resolve(f, &[])
            .unwrap_err()
            .to_string()
            .contains("--http-bind"));
    }

    #[test]
    fn password_in_url_becomes_a_credential() {
        let mut f = base();
        f.repo = Some("http://me:p%40ss@h:8/r".into());
        let c = resolve(f, &[]).unwrap();
        assert_eq!(c.repo, "http://h:8/r");
        assert_eq!(c.credentials[0].username, "me");
        assert_eq!(c.credentials[0].password, "p@ss");
    }

    #[test]
    fn credentials_json() {
        let mut f = base();
        f.credential = vec![r#"[{"url":"https://a","username":"u","password-file":"/p"}]"#.into()];
        let c = resolve(f, &[]).unwrap();
        assert_eq!(c.credentials[0].password_file, "/p");
        let mut f = base();
        f.credential = vec![r#"{"url":"https://a","username":"u","password":"x","nope":1}"#.into()];
        assert!(resolve(f, &[]).is_err());
    }

    #[test]
    fn git_configs() {
        assert_eq!(
            parse_git_configs(r#"a.b:c,"d.e":"f, \"g\"""#).unwrap(),
            vec![
                ("a.b".into(), "c".into()),
                ("d.e".into(), "f, \"g\"".into())
            ]
        );
        assert!(parse_git_configs(r"a:\q").is_err());
        assert!(parse_git_configs("novalue").is_err());
    }

    #[test]
    fn roots_are_cleaned() {
        assert_eq!(
            absolute_clean(Path::new("/a/../../b/./c")),
            PathBuf::from("/b/c")
        );
    }
}
