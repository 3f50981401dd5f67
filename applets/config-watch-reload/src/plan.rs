//! Flags → a checked plan. Every mistake here exits 2 with the flag named.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Result;
use sidecar_runtime::actions::{
    parse_signal, Action, CommandAction, HttpAction, ProcessTarget, SignalAction, StatusMatch,
};
use sidecar_runtime::backoff::Backoff;
use sidecar_runtime::process::CommandSpec;
use sidecar_runtime::redact::redact_url;
use sidecar_runtime::usage;

use crate::args::{ConfigWatchReload, ReloadMethod};
use crate::render::{self, Syntax, Template};
use crate::runtimeinfo::{self, RuntimeInfo};

/// prometheus-config-reloader's defaults for its modes.
const PROMETHEUS_RELOAD_URL: &str = "http://127.0.0.1:9090/-/reload";

/// thanos' `ReloadURLFromBase`: Prometheus' reload endpoint under a base
/// URL that may carry a path prefix (`http://h/prom` → `http://h/prom/-/reload`).
fn reload_url_from_base(base: &str) -> Result<String> {
    let mut url = reqwest::Url::parse(base)
        .map_err(|e| usage!("--prometheus.url: {:?}: {e}", redact_url(base)))?;
    let path = format!("{}/-/reload", url.path().trim_end_matches('/'));
    url.set_path(&path);
    Ok(url.to_string())
}
const PROMETHEUS_PROCESS: &str = "prometheus";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Watch,
    /// `--once`: render, validate, act once, exit.
    Once,
    /// `--watch-interval=0`: render once, no reload, exit.
    RenderOnly,
}

pub struct Plan {
    pub mode: Mode,
    /// `--config-file`: unlike `--watch` paths it must exist at start, as
    /// prometheus-config-reloader requires.
    pub config_file: Option<PathBuf>,
    /// configmap-reload's `-web.telemetry-path`: metrics here too.
    pub telemetry_path: String,
    /// What is hashed, in order: watched paths, then template sources.
    pub roots: Vec<PathBuf>,
    pub templates: Vec<Template>,
    /// Template outputs, left out of the hash.
    pub exclude: HashSet<PathBuf>,
    pub recursive: bool,
    pub validate: Option<CommandSpec>,
    pub actions: Vec<Action>,
    pub debounce: Duration,
    /// `None`: no bound.
    pub max_wait: Option<Duration>,
    pub resync: Option<Duration>,
    pub backoff: Backoff,
    pub max_attempts: Option<u64>,
    pub reload_on_start: bool,
    /// Variables that win over the process environment when rendering.
    pub env: HashMap<String, String>,
    /// Signal-mode confirmation through Prometheus' runtimeinfo.
    pub runtimeinfo: Option<RuntimeInfo>,
    /// `http`, `signal` or `command`, for `reloader_info{method}`.
    pub method: &'static str,
}

impl Plan {
    pub fn lookup(&self, name: &str) -> Option<String> {
        self.env
            .get(name)
            .cloned()
            .or_else(|| std::env::var(name).ok())
    }
}

fn command(flag: &str, raw: &str, timeout: Duration) -> Result<CommandSpec> {
    let mut spec = CommandSpec::parse(raw).map_err(|e| usage!("--{flag}: {e}"))?;
    spec.timeout = Some(timeout);
    Ok(spec)
}

/// The absolute form of a path whose file may not exist yet, so it can be
/// compared with paths found while hashing.
fn comparable(path: &Path) -> PathBuf {
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    match (std::fs::canonicalize(parent), path.file_name()) {
        (Ok(dir), Some(name)) => dir.join(name),
        _ => path.to_path_buf(),
    }
}

/// The actions' client, accepting any certificate.
fn insecure_client() -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .user_agent(concat!("sidecar/", env!("CARGO_PKG_VERSION")))
        .danger_accept_invalid_certs(true)
        // Nothing is verified: parsing the system's CA bundle would only cost memory.
        .tls_built_in_root_certs(false)
        .build()?)
}

impl ConfigWatchReload {
    pub fn plan(&self) -> Result<Plan> {
        let a = self;
        let mode = match (a.once, a.watch_interval) {
            (_, Some(Duration::ZERO)) => Mode::RenderOnly,
            (true, _) => Mode::Once,
            _ => Mode::Watch,
        };
        let prometheus_style = a.config_file.is_some()
            || !a.watched_dir.is_empty()
            || a.config_envsubst_file.is_some()
            || matches!(
                a.reload_method,
                Some(ReloadMethod::HttpMode | ReloadMethod::SignalMode)
            );

        let mut roots = a.watch.clone();
        roots.extend(a.watched_dir.iter().cloned());
        let mut templates: Vec<Template> = a
            .render
            .iter()
            .map(|r| Template {
                src: r.src.clone(),
                dst: r.dst.clone(),
                syntax: Syntax::Full,
            })
            .collect();
        match (&a.config_file, &a.config_envsubst_file) {
            (Some(src), Some(dst)) => templates.push(Template {
                src: src.clone(),
                dst: dst.clone(),
                syntax: Syntax::Kubernetes,
            }),
            (Some(src), None) => roots.push(src.clone()),
            (None, Some(_)) => return Err(usage!("--config-envsubst-file needs --config-file")),
            (None, None) => {}
        }
        roots.extend(templates.iter().map(|t| t.src.clone()));
        if roots.is_empty() {
            // configmap-reload users know the flag as -volume-dir.
            return Err(usage!(
                "--watch: nothing to watch (missing --watch/--volume-dir PATH, --render SRC:DST or --config-file)"
            ));
        }
        let exclude = templates.iter().map(|t| comparable(&t.dst)).collect();

        let mut actions = Vec::new();
        let (http_method, method_is_mode) = match &a.reload_method {
            Some(ReloadMethod::Http(m)) => (m.clone(), None),
            Some(ReloadMethod::HttpMode) => (reqwest::Method::POST, Some("http")),
            Some(ReloadMethod::SignalMode) => (reqwest::Method::POST, Some("signal")),
            None => (reqwest::Method::POST, None),
        };
        let prometheus_reload_url = match &a.prometheus_url {
            Some(base) => reload_url_from_base(base)?,
            None => PROMETHEUS_RELOAD_URL.to_string(),
        };
        let mut urls = a.reload_url.clone();
        // The thanos sidecar reloads through its Prometheus URL unless it
        // was told to signal.
        let base_given = a.prometheus_url.is_some() && method_is_mode != Some("signal");
        if urls.is_empty() && (method_is_mode == Some("http") || base_given) {
            urls.push(prometheus_reload_url.clone());
        }
        // prometheus-config-reloader's client skips verification (Prometheus
        // on localhost with its own certificate); elsewhere only when asked.
        let insecure = a.reload_insecure_skip_verify.unwrap_or(prometheus_style);
        for url in &urls {
            sidecar_runtime::check::http_url("--reload-url", url)?;
            let mut h = HttpAction::new(url).map_err(|e| usage!("--reload-url: {e:#}"))?;
            if insecure && url.starts_with("https:") {
                tracing::warn!(url = %redact_url(url), "the reload URL's TLS certificate is not verified");
                h.client = insecure_client()?;
            }
            h.method = http_method.clone();
            h.headers = a.reload_header.clone();
            h.bearer_token_file = a.reload_bearer_token_file.clone();
            h.accept = StatusMatch::Codes(a.reload_status.0.clone());
            h.timeout = a.reload_timeout;
            actions.push(Action::Http(h));
        }
        if let Some(f) = &a.reload_bearer_token_file {
            if !f.is_file() {
                tracing::warn!(file = %f.display(), "--reload-bearer-token-file does not exist yet; it is read at each request");
            }
        }

        let targets = [
            a.pid_file.is_some(),
            a.process_name.is_some(),
            a.process_cmdline.is_some(),
        ]
        .iter()
        .filter(|t| **t)
        .count();
        if targets > 1 {
            return Err(usage!(
                "--pid-file, --process-name and --process-cmdline exclude each other"
            ));
        }
        let target = if let Some(p) = &a.pid_file {
            Some(ProcessTarget::PidFile(p.clone()))
        } else if let Some(n) = &a.process_name {
            Some(ProcessTarget::Name(n.clone()))
        } else if let Some(r) = &a.process_cmdline {
            let re = regex::Regex::new(r)
                .map_err(|e| usage!("--process-cmdline: invalid regex: {e}"))?;
            Some(ProcessTarget::Cmdline(re))
        } else if method_is_mode == Some("signal") {
            Some(ProcessTarget::Name(PROMETHEUS_PROCESS.into()))
        } else {
            None
        };
        match (&a.signal, target) {
            (Some(_), None) => {
                return Err(usage!(
                    "--signal needs a target: --pid-file, --process-name or --process-cmdline"
                ))
            }
            (sig, Some(target)) => {
                let signal = match sig {
                    Some(s) => parse_signal(s).map_err(|e| usage!("--signal: {e}"))?,
                    None => nix::sys::signal::Signal::SIGHUP,
                };
                actions.push(Action::Signal(SignalAction { signal, target }));
            }
            (None, None) => {}
        }
        if let Some(cmd) = &a.exec {
            actions.push(Action::Command(CommandAction {
                spec: command("exec", cmd, a.reload_timeout)?,
            }));
        }
        if actions.is_empty() && prometheus_style {
            actions.push(Action::Http(HttpAction::new(&prometheus_reload_url)?));
        }
        if actions.is_empty() && templates.is_empty() && mode == Mode::Watch {
            return Err(usage!(
                "nothing to do on change: missing --reload-url/--webhook-url, --signal with a process, --exec, or --render"
            ));
        }
        let validate = a
            .validate_cmd
            .as_deref()
            .map(|c| command("validate-cmd", c, a.reload_timeout))
            .transpose()?;

        let max_attempts = match a.webhook_retries {
            Some(0) => {
                // configmap-reload makes no request at all for 0, which
                // silently skips every reload; one attempt is what was meant.
                tracing::warn!("--webhook-retries=0 makes one attempt per change");
                Some(1)
            }
            Some(n) if n > 0 => Some(n as u64),
            _ => None,
        };
        let resync = match a.watch_interval {
            Some(d) if !d.is_zero() => Some(d),
            _ => Some(a.resync_interval).filter(|d| !d.is_zero()),
        };
        // Serving the admin port in plain HTTP when TLS or basic auth was
        // asked for would be a silent security downgrade. (An empty value is
        // what an unset variable in a manifest gives: nothing was asked for.)
        if let Some(f) = a.web_config_file.as_ref().filter(|f| !f.is_empty()) {
            return Err(usage!(
                "--web-config-file {}: TLS and basic auth for the admin server are not supported; \
                 remove the flag, or use --admin-addr=127.0.0.1:PORT (or off) to keep the port private",
                f
            ));
        }
        let telemetry_path = a.telemetry_path.as_deref().unwrap_or("/metrics");
        if !telemetry_path.starts_with('/') {
            return Err(usage!(
                "--web.telemetry-path {telemetry_path:?}: must start with /"
            ));
        }
        // prometheus-config-reloader confirms signals at its default URL;
        // elsewhere only when asked. An empty URL turns it off.
        let info_url = match (&a.runtimeinfo_url, method_is_mode) {
            (Some(u), _) => Some(u.as_str()).filter(|u| !u.is_empty()),
            (None, Some("signal")) => Some(runtimeinfo::DEFAULT_URL),
            (None, _) => None,
        };
        let has_signal = actions.iter().any(|a| matches!(a, Action::Signal(_)));
        let runtimeinfo = match info_url {
            Some(url) if has_signal => Some(
                RuntimeInfo::new(url, a.reload_timeout)
                    .map_err(|e| usage!("--runtimeinfo-url: {e:#}"))?,
            ),
            Some(_) => {
                tracing::warn!(
                    "--runtimeinfo-url only confirms signals; there is no signal to confirm"
                );
                None
            }
            None => None,
        };
        let mut env = HashMap::new();
        if let Some(n) = std::env::var(&a.statefulset_ordinal_from_envvar)
            .ok()
            .as_deref()
            .and_then(render::ordinal)
        {
            env.insert("STATEFULSET_ORDINAL_NUMBER".to_string(), n);
        }
        let method = match actions.first() {
            Some(a) => a.kind(),
            None => "none",
        };
        Ok(Plan {
            mode,
            config_file: a.config_file.clone(),
            telemetry_path: telemetry_path.to_string(),
            roots,
            templates,
            exclude,
            recursive: a.recursive,
            validate,
            actions,
            debounce: a.debounce,
            max_wait: Some(a.max_wait).filter(|d| !d.is_zero()),
            resync,
            backoff: Backoff::new(a.retry_interval, a.retry_max_interval),
            max_attempts,
            reload_on_start: a.reload_on_start || (a.config_file.is_some() && mode == Mode::Watch),
            env,
            method,
            runtimeinfo,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::tests::parse;

    fn plan(args: &[&str]) -> Result<Plan> {
        let mut full = vec!["x"];
        full.extend_from_slice(args);
        parse(&full).unwrap().plan()
    }

    fn describe(p: &Plan) -> Vec<String> {
        p.actions.iter().map(|a| a.describe()).collect()
    }

    #[test]
    fn prometheus_config_reloader_defaults() {
        let p = plan(&[
            "--config-file=/c/p.yaml",
            "--config-envsubst-file=/o/p.yaml",
        ])
        .unwrap();
        assert_eq!(describe(&p), ["POST http://127.0.0.1:9090/-/reload"]);
        assert!(p.reload_on_start);
        assert_eq!(p.templates[0].syntax, Syntax::Kubernetes);
        assert_eq!(p.roots, [PathBuf::from("/c/p.yaml")]);
        let p = plan(&["--watched-dir=/r", "--reload-method=signal"]).unwrap();
        assert_eq!(describe(&p), ["SIGHUP to process \"prometheus\""]);
        assert_eq!(p.runtimeinfo.unwrap().url, runtimeinfo::DEFAULT_URL);
        assert_eq!(
            plan(&["--watched-dir=/r", "--watch-interval=0"])
                .unwrap()
                .mode,
            Mode::RenderOnly
        );
        assert_eq!(
            plan(&["--watched-dir=/r", "--watch-interval=10s"])
                .unwrap()
                .resync,
            Some(Duration::from_secs(10))
        );
    }

    /// thanos' `ExampleReloadURLFromBase`, and its sidecar's flag names.
    #[test]
    fn reload_url_from_prometheus_base_url() {
        assert_eq!(
            reload_url_from_base("http://localhost:9090").unwrap(),
            "http://localhost:9090/-/reload"
        );
        assert_eq!(
            reload_url_from_base("http://h:9090/prom/").unwrap(),
            "http://h:9090/prom/-/reload"
        );
        let p = plan(&[
            "--prometheus.url=http://localhost:9090",
            "--reloader.config-file=/c/p.yaml",
            "--reloader.config-envsubst-file=/o/p.yaml",
            "--reloader.rule-dir=/r",
            "--reloader.watch-interval=1m",
            "--reloader.retry-interval=5s",
        ])
        .unwrap();
        assert_eq!(describe(&p), ["POST http://localhost:9090/-/reload"]);
        assert_eq!(p.roots.len(), 2);
        assert_eq!(p.resync, Some(Duration::from_secs(60)));
        let p = plan(&[
            "--reloader.rule-dir=/r",
            "--reloader.method=signal",
            "--reloader.process-name=prom",
        ])
        .unwrap();
        assert_eq!(describe(&p), ["SIGHUP to process \"prom\""]);
        assert!(plan(&["--watch=/w", "--prometheus.url=::"]).is_err());
    }

    #[test]
    fn actions_run_in_documented_order() {
        let p = plan(&[
            "--watch=/w",
            "--exec=true",
            "--pid-file=/p",
            "--reload-url=http://a/",
            "--reload-url=http://b/",
        ])
        .unwrap();
        assert_eq!(
            describe(&p),
            [
                "POST http://a/",
                "POST http://b/",
                "SIGHUP to pid file /p",
                "true"
            ]
        );
        assert!(p.runtimeinfo.is_none());
        assert!(!p.reload_on_start);
    }

    #[test]
    fn webhook_retries_never_skip() {
        assert_eq!(
            plan(&["--watch=/w", "--exec=true", "--webhook-retries=0"])
                .unwrap()
                .max_attempts,
            Some(1)
        );
        assert_eq!(
            plan(&["--watch=/w", "--exec=true", "--webhook-retries=3"])
                .unwrap()
                .max_attempts,
            Some(3)
        );
        assert_eq!(
            plan(&["--watch=/w", "--exec=true", "--webhook-retries=-1"])
                .unwrap()
                .max_attempts,
            None
        );
    }

    #[test]
    fn mistakes_are_usage_errors() {
        for args in [
            &["--exec=true"][..],
            &["--watch=/w"],
            &["--watch=/w", "--signal=HUP"],
            &["--watch=/w", "--reload-url=ftp://x/"],
        ] {
            let e = plan(args)
                .err()
                .unwrap_or_else(|| panic!("{args:?} accepted"));
            assert!(
                e.downcast_ref::<sidecar_runtime::UsageError>().is_some(),
                "{args:?}: {e}"
            );
        }
    }
}
