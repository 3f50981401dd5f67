//! Flags, their environment variables, and the drop-in spellings of
//! configmap-reload and prometheus-config-reloader.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Args};
use sidecar_runtime::cli::{parse_duration, parse_header};

/// `--reload-method`: an HTTP method, or prometheus-config-reloader's mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadMethod {
    Http(reqwest::Method),
    /// `--reload-method=http`: POST to `--reload-url` (default Prometheus').
    HttpMode,
    /// `--reload-method=signal`: SIGHUP to `--process-executable-name`.
    SignalMode,
}

fn parse_method(s: &str) -> Result<ReloadMethod, String> {
    match s.to_ascii_lowercase().as_str() {
        "http" => return Ok(ReloadMethod::HttpMode),
        "signal" => return Ok(ReloadMethod::SignalMode),
        _ => {}
    }
    let upper = s.trim().to_ascii_uppercase();
    if upper.is_empty() || !upper.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(format!(
            "invalid method {s:?}: expected an HTTP method (POST, GET, PUT…), `http` or `signal`"
        ));
    }
    reqwest::Method::from_bytes(upper.as_bytes())
        .map(ReloadMethod::Http)
        .map_err(|_| format!("invalid HTTP method {s:?}"))
}

/// Accepted response statuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusCodes(pub Vec<u16>);

/// Accepted statuses: `200`, `200,204`, `2xx`.
fn parse_statuses(s: &str) -> Result<StatusCodes, String> {
    let mut codes = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let lower = part.to_ascii_lowercase();
        if let Some(class) = lower.strip_suffix("xx") {
            match class.parse::<u16>() {
                Ok(c @ 1..=5) => codes.extend(c * 100..c * 100 + 100),
                _ => {
                    return Err(format!(
                        "invalid status class {part:?} (examples: 2xx, 3xx)"
                    ))
                }
            }
            continue;
        }
        match part.parse::<u16>() {
            Ok(c @ 100..=599) => codes.push(c),
            _ => {
                return Err(format!(
                    "invalid status code {part:?}: expected 100-599 or 2xx"
                ))
            }
        }
    }
    if codes.is_empty() {
        return Err("no status codes given".into());
    }
    Ok(StatusCodes(codes))
}

/// `SRC:DST` for `--render`.
#[derive(Debug, Clone)]
pub struct RenderPair {
    pub src: PathBuf,
    pub dst: PathBuf,
}

fn parse_render(s: &str) -> Result<RenderPair, String> {
    match s.split_once(':') {
        Some((src, dst)) if !src.is_empty() && !dst.is_empty() => Ok(RenderPair {
            src: src.into(),
            dst: dst.into(),
        }),
        _ => Err(format!("invalid {s:?}: expected SRC:DST")),
    }
}

#[derive(Debug, Clone, Args)]
pub struct ConfigWatchReload {
    /// File or directory to watch (repeatable). Its parent directory is
    /// watched, so Kubernetes' `..data` swaps and rename-over edits keep
    /// working; it may not exist yet.
    #[arg(long = "watch", env = "CONFIG_WATCH_RELOAD_WATCH", value_name = "PATH",
          value_delimiter = ',', action = ArgAction::Append,
          alias = "volume-dir")]
    pub watch: Vec<PathBuf>,

    /// Also watch subdirectories of watched directories (contents are always
    /// hashed recursively).
    #[arg(long, env = "CONFIG_WATCH_RELOAD_RECURSIVE")]
    pub recursive: bool,

    /// Command that must succeed before each reload (`nginx -t`); split like
    /// a shell, run without one. A failure blocks the reload until the next change.
    #[arg(long, env = "CONFIG_WATCH_RELOAD_VALIDATE_CMD", value_name = "CMD")]
    pub validate_cmd: Option<String>,

    /// URL to request on change (repeatable). `user:pass@` becomes basic auth.
    #[arg(long = "reload-url", env = "CONFIG_WATCH_RELOAD_RELOAD_URL", value_name = "URL",
          action = ArgAction::Append, alias = "webhook-url")]
    pub reload_url: Vec<String>,

    /// HTTP method of the reload request [default: POST]; `http` or `signal`
    /// select prometheus-config-reloader's modes.
    #[arg(long, env = "CONFIG_WATCH_RELOAD_RELOAD_METHOD", value_name = "METHOD",
          value_parser = parse_method, aliases = ["webhook-method", "reloader.method"])]
    pub reload_method: Option<ReloadMethod>,

    /// Response statuses that count as success: `200`, `200,204`, `2xx`.
    #[arg(long, env = "CONFIG_WATCH_RELOAD_RELOAD_STATUS", value_name = "CODES",
          default_value = "200", value_parser = parse_statuses, alias = "webhook-status-code")]
    pub reload_status: StatusCodes,

    /// Extra request header `Name: value` (repeatable).
    #[arg(long = "reload-header", env = "CONFIG_WATCH_RELOAD_RELOAD_HEADER", value_name = "HEADER",
          value_parser = parse_header, action = ArgAction::Append)]
    pub reload_header: Vec<(String, String)>,

    /// File holding a bearer token for the reload request, re-read each time.
    #[arg(
        long,
        env = "CONFIG_WATCH_RELOAD_RELOAD_BEARER_TOKEN_FILE",
        value_name = "FILE"
    )]
    pub reload_bearer_token_file: Option<PathBuf>,

    /// Time limit of one reload request, command or validation.
    #[arg(long, env = "CONFIG_WATCH_RELOAD_RELOAD_TIMEOUT", value_name = "DURATION",
          default_value = "30s", value_parser = parse_duration)]
    pub reload_timeout: Duration,

    /// Do not verify the TLS certificate of https reload URLs (the app's own
    /// self-signed one). On by default with prometheus-config-reloader's
    /// flags, which always skip verification.
    #[arg(
        long,
        env = "CONFIG_WATCH_RELOAD_RELOAD_INSECURE_SKIP_VERIFY",
        value_name = "BOOL",
        num_args = 0..=1,
        default_missing_value = "true"
    )]
    pub reload_insecure_skip_verify: Option<bool>,

    /// Signal to send on change (HUP, SIGUSR1, 10) [default: HUP when a
    /// process is named].
    #[arg(long, env = "CONFIG_WATCH_RELOAD_SIGNAL", value_name = "SIG")]
    pub signal: Option<String>,

    /// Signal the process whose pid this file holds.
    #[arg(long, env = "CONFIG_WATCH_RELOAD_PID_FILE", value_name = "FILE")]
    pub pid_file: Option<PathBuf>,

    /// Signal processes with this exact name (comm or argv[0] base name).
    #[arg(
        long,
        env = "CONFIG_WATCH_RELOAD_PROCESS_NAME",
        value_name = "NAME",
        aliases = ["process-executable-name", "reloader.process-name"]
    )]
    pub process_name: Option<String>,

    /// Signal processes whose command line matches this regex.
    #[arg(
        long,
        env = "CONFIG_WATCH_RELOAD_PROCESS_CMDLINE",
        value_name = "REGEX"
    )]
    pub process_cmdline: Option<String>,

    /// Command to run on change, after the request and the signal.
    #[arg(long, env = "CONFIG_WATCH_RELOAD_EXEC", value_name = "CMD")]
    pub exec: Option<String>,

    /// Quiet time after the last event before acting.
    #[arg(long, env = "CONFIG_WATCH_RELOAD_DEBOUNCE", value_name = "DURATION",
          default_value = "200ms", value_parser = parse_duration, alias = "delay-interval")]
    pub debounce: Duration,

    /// Upper bound on coalescing: a steady stream of events cannot postpone
    /// the reload longer than this.
    #[arg(long, env = "CONFIG_WATCH_RELOAD_MAX_WAIT", value_name = "DURATION",
          default_value = "5s", value_parser = parse_duration)]
    pub max_wait: Duration,

    /// Periodic re-hash, a safety net for missed events; 0 = off.
    #[arg(long, env = "CONFIG_WATCH_RELOAD_RESYNC_INTERVAL", value_name = "DURATION",
          default_value = "3m", value_parser = parse_duration)]
    pub resync_interval: Duration,

    /// First wait between attempts of a failed reload; doubles up to
    /// --retry-max-interval, with jitter.
    #[arg(long, env = "CONFIG_WATCH_RELOAD_RETRY_INTERVAL", value_name = "DURATION",
          default_value = "1s", value_parser = parse_duration, alias = "reloader.retry-interval")]
    pub retry_interval: Duration,

    /// Longest wait between attempts of a failed reload.
    #[arg(long, env = "CONFIG_WATCH_RELOAD_RETRY_MAX_INTERVAL", value_name = "DURATION",
          default_value = "30s", value_parser = parse_duration)]
    pub retry_max_interval: Duration,

    /// Attempts per change before giving up (configmap-reload's
    /// -webhook-retries); negative or unset = until it succeeds or a newer
    /// change replaces it.
    #[arg(
        long,
        env = "CONFIG_WATCH_RELOAD_WEBHOOK_RETRIES",
        value_name = "N",
        allow_negative_numbers = true
    )]
    pub webhook_retries: Option<i64>,

    /// Reload once at start, without waiting for a change.
    #[arg(long, env = "CONFIG_WATCH_RELOAD_RELOAD_ON_START")]
    pub reload_on_start: bool,

    /// Init-container mode: render, validate, act once, exit.
    #[arg(long, env = "CONFIG_WATCH_RELOAD_ONCE")]
    pub once: bool,

    /// Expand `$(VAR)`, `${VAR}`, `${VAR:-default}` and `$$` from the
    /// environment in SRC (plain or gzip) into DST, atomically (repeatable).
    #[arg(long = "render", env = "CONFIG_WATCH_RELOAD_RENDER", value_name = "SRC:DST",
          value_parser = parse_render, value_delimiter = ',', action = ArgAction::Append)]
    pub render: Vec<RenderPair>,

    // prometheus-config-reloader drop-in flags.
    /// prometheus-config-reloader: config file to watch (and render with
    /// --config-envsubst-file); implies a reload at start.
    #[arg(
        long,
        env = "CONFIG_WATCH_RELOAD_CONFIG_FILE",
        value_name = "FILE",
        alias = "reloader.config-file",
        help_heading = "Drop-in flags"
    )]
    pub config_file: Option<PathBuf>,

    /// prometheus-config-reloader: directory to watch (repeatable), like
    /// --watch; with no action given, reloads Prometheus at its default URL.
    #[arg(long = "watched-dir", env = "CONFIG_WATCH_RELOAD_WATCHED_DIR", value_name = "DIR",
          value_delimiter = ',', action = ArgAction::Append, help_heading = "Drop-in flags",
          alias = "reloader.rule-dir")]
    pub watched_dir: Vec<PathBuf>,

    /// prometheus-config-reloader: where --config-file is rendered, expanding
    /// only `$(VAR)` and keeping unset ones literally (Prometheus' own `${1}`
    /// stays untouched).
    #[arg(
        long,
        env = "CONFIG_WATCH_RELOAD_CONFIG_ENVSUBST_FILE",
        value_name = "FILE",
        alias = "reloader.config-envsubst-file",
        help_heading = "Drop-in flags"
    )]
    pub config_envsubst_file: Option<PathBuf>,

    /// prometheus-config-reloader: resync period; 0 = render once, send no
    /// reload, and exit (its init-container mode).
    #[arg(long, env = "CONFIG_WATCH_RELOAD_WATCH_INTERVAL", value_name = "DURATION",
          value_parser = parse_duration, help_heading = "Drop-in flags",
          alias = "reloader.watch-interval")]
    pub watch_interval: Option<Duration>,

    /// prometheus-config-reloader: sets this env var's trailing digits as
    /// STATEFULSET_ORDINAL_NUMBER for rendering.
    #[arg(
        long,
        env = "CONFIG_WATCH_RELOAD_STATEFULSET_ORDINAL_FROM_ENVVAR",
        value_name = "VAR",
        default_value = "POD_NAME",
        help_heading = "Drop-in flags"
    )]
    pub statefulset_ordinal_from_envvar: String,

    /// prometheus-config-reloader: Prometheus' runtimeinfo URL, read before
    /// each signal and polled after it to confirm the reload [default with
    /// --reload-method=signal: http://127.0.0.1:9090/api/v1/status/runtimeinfo;
    /// empty = off].
    #[arg(
        long,
        env = "CONFIG_WATCH_RELOAD_RUNTIMEINFO_URL",
        value_name = "URL",
        help_heading = "Drop-in flags"
    )]
    pub runtimeinfo_url: Option<String>,

    /// configmap-reload's -web.listen-address, prometheus-config-reloader's
    /// --listen-address: the admin server's address (overrides --admin-addr).
    #[arg(
        long = "web.listen-address",
        value_name = "ADDR",
        alias = "listen-address",
        help_heading = "Drop-in flags"
    )]
    pub listen_address: Option<String>,

    /// thanos sidecar: Prometheus' base URL; the default reload URL becomes
    /// BASE/-/reload (thanos' ReloadURLFromBase).
    #[arg(
        long = "prometheus.url",
        env = "CONFIG_WATCH_RELOAD_PROMETHEUS_URL",
        value_name = "URL",
        help_heading = "Drop-in flags"
    )]
    pub prometheus_url: Option<String>,

    /// configmap-reload: metrics path (also served on /metrics).
    #[arg(
        long = "web.telemetry-path",
        value_name = "PATH",
        help_heading = "Drop-in flags"
    )]
    pub telemetry_path: Option<String>,

    /// prometheus-config-reloader: TLS and basic auth for its own listener;
    /// not supported, so refused (exit 2) rather than silently served in
    /// plain HTTP.
    #[arg(long, value_name = "FILE", hide = true)]
    pub web_config_file: Option<String>,

    /// prometheus-config-reloader: Go memory limit; accepted so manifests
    /// keep working, and ignored (there is no garbage collector to tune).
    #[arg(long, value_name = "RATIO", hide = true)]
    pub auto_gomemlimit_ratio: Option<f64>,
}

/// The long flag names this applet and the common flags accept, aliases
/// included, for the Go single-dash rewrite.
fn long_names() -> Vec<String> {
    let cmd = sidecar_runtime::cli::CommonArgs::augment_args(ConfigWatchReload::augment_args(
        clap::Command::new("x"),
    ));
    let mut names = Vec::new();
    for arg in cmd.get_arguments() {
        names.extend(arg.get_long().map(str::to_string));
        names.extend(
            arg.get_all_aliases()
                .unwrap_or_default()
                .into_iter()
                .map(str::to_string),
        );
    }
    names.push("help".into());
    names.push("version".into());
    names
}

/// Go's `flag` package (configmap-reload) takes `-name` as well as `--name`,
/// and prometheus-config-reloader spells its log options differently; clap
/// understands neither, so argv is rewritten before it parses.
pub fn rewrite_args(args: Vec<OsString>) -> Vec<OsString> {
    let names = long_names();
    let mut out = Vec::with_capacity(args.len());
    let mut iter = args.into_iter();
    out.extend(iter.next());
    let mut pending_log_value: Option<&'static str> = None;
    for arg in iter.by_ref() {
        let Some(s) = arg.to_str() else {
            out.push(arg);
            continue;
        };
        if s == "--" {
            out.push(arg);
            break;
        }
        if let Some(flag) = pending_log_value.take() {
            out.push(log_value(flag, s).into());
            continue;
        }
        let mut s = s.to_string();
        if s.len() > 2 && s.starts_with('-') && !s.starts_with("--") {
            let name = s[1..].split('=').next().unwrap_or_default();
            if names.iter().any(|n| n == name) {
                s.insert(0, '-');
            }
        }
        let (name, value) = match s.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (s.clone(), None),
        };
        match (name.as_str(), value) {
            (flag @ ("--log-format" | "--log-level"), Some(v)) => {
                out.push(format!("{flag}={}", log_value(flag, &v)).into())
            }
            ("--log-format", None) => {
                pending_log_value = Some("--log-format");
                out.push(s.into());
            }
            ("--log-level", None) => {
                pending_log_value = Some("--log-level");
                out.push(s.into());
            }
            _ => out.push(s.into()),
        }
    }
    out.extend(iter);
    out
}

/// prometheus-config-reloader's `logfmt` format and `all`/`none` levels.
fn log_value(flag: &str, v: &str) -> String {
    match (flag, v) {
        ("--log-format", "logfmt") => "text".into(),
        ("--log-level", "all") => "trace".into(),
        ("--log-level", "none") => "off".into(),
        _ => v.to_string(),
    }
}

/// For `--help` output in tests of the rewrite.
#[cfg(test)]
pub(crate) fn command() -> clap::Command {
    use clap::CommandFactory as _;
    #[derive(clap::Parser)]
    struct Wrapper {
        #[command(flatten)]
        a: ConfigWatchReload,
        #[command(flatten)]
        c: sidecar_runtime::cli::CommonArgs,
    }
    Wrapper::command()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use clap::FromArgMatches as _;

    fn rewrite(args: &[&str]) -> Vec<String> {
        rewrite_args(args.iter().map(OsString::from).collect())
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect()
    }

    pub(crate) fn parse(args: &[&str]) -> Result<ConfigWatchReload, clap::Error> {
        let m = command()
            .try_get_matches_from(rewrite_args(args.iter().map(OsString::from).collect()))?;
        ConfigWatchReload::from_arg_matches(&m)
    }

    #[test]
    fn go_single_dash_flags_become_long_flags() {
        assert_eq!(
            rewrite(&[
                "x",
                "-volume-dir=/a",
                "-webhook-url",
                "http://h/",
                "-web.listen-address=:1",
                "-webhook-retries",
                "-1"
            ]),
            [
                "x",
                "--volume-dir=/a",
                "--webhook-url",
                "http://h/",
                "--web.listen-address=:1",
                "--webhook-retries",
                "-1"
            ]
        );
        // Unknown single-dash words and values after `--` are left alone.
        assert_eq!(
            rewrite(&["x", "-zz", "--", "-watch"]),
            ["x", "-zz", "--", "-watch"]
        );
    }

    #[test]
    fn prometheus_log_options_map_to_ours() {
        assert_eq!(
            rewrite(&["x", "--log-format=logfmt", "--log-level", "none"]),
            ["x", "--log-format=text", "--log-level", "off"]
        );
    }

    #[test]
    fn drop_in_aliases_parse() {
        let a = parse(&[
            "x",
            "-volume-dir",
            "/a",
            "--watched-dir=/b",
            "-webhook-url=http://h/",
            "-webhook-method=get",
            "-webhook-status-code=204",
            "--process-executable-name=prom",
            "--delay-interval=1s",
        ])
        .unwrap();
        assert_eq!(a.watch, [PathBuf::from("/a")]);
        assert_eq!(a.watched_dir, [PathBuf::from("/b")]);
        assert_eq!(a.reload_url, ["http://h/"]);
        assert_eq!(
            a.reload_method,
            Some(ReloadMethod::Http(reqwest::Method::GET))
        );
        assert_eq!(a.reload_status.0, [204]);
        assert_eq!(a.process_name.as_deref(), Some("prom"));
        assert_eq!(a.debounce, Duration::from_secs(1));
        let a = parse(&["x", "--reload-method=signal"]).unwrap();
        assert_eq!(a.reload_method, Some(ReloadMethod::SignalMode));
    }

    #[test]
    fn statuses() {
        assert_eq!(parse_statuses("200,204").unwrap().0, [200, 204]);
        assert_eq!(parse_statuses("2xx").unwrap().0.len(), 100);
        assert!(parse_statuses("abc").is_err());
        assert!(parse_statuses("700").is_err());
    }

    #[test]
    fn render_pairs() {
        let p = parse_render("a.tmpl:/etc/a").unwrap();
        assert_eq!(p.dst, PathBuf::from("/etc/a"));
        assert!(parse_render("nocolon").is_err());
        assert!(parse_render(":x").is_err());
    }
}
