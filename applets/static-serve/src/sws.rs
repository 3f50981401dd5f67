//! static-web-server's flag names and `SERVER_*` variables, for a drop-in
//! swap: each is translated into our own flag with SWS's meaning (v2.44 /
//! v3 `src/settings/cli.rs`), before anything is validated. Our own flag or
//! variable, when given, wins over a `SERVER_*` variable. A SWS flag we do not
//! implement exits 2 naming it as unsupported: it is never silently ignored.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::builder::BoolishValueParser;
use sidecar_runtime::usage;

use crate::{ListingFormat, StaticServe};

/// Hidden from `--help`, which keeps to our own names (and their
/// STATIC_SERVE_* variables); the README's table lists these.
#[derive(Debug, Clone, Default, PartialEq, clap::Args)]
pub struct Sws {
    /// static-web-server's host to listen on; with --port, replaces --listen (default `::`).
    #[arg(
        long,
        short = 'a',
        hide = true,
        env = "SERVER_HOST",
        value_name = "HOST"
    )]
    host: Option<String>,

    /// static-web-server's port; with --host, replaces --listen (default 8080).
    #[arg(
        long,
        short = 'p',
        hide = true,
        env = "SERVER_PORT",
        value_name = "PORT"
    )]
    port: Option<u16>,

    /// static-web-server's SPA fallback page, a path from the working directory
    /// (= --spa-fallback); empty: off.
    #[arg(long, hide = true, env = "SERVER_FALLBACK_PAGE", value_name = "FILE", value_parser = any_path)]
    page_fallback: Option<PathBuf>,

    /// static-web-server's 404 page: relative paths are under the root (= --not-found-page).
    #[arg(long, hide = true, env = "SERVER_ERROR_PAGE_404", value_name = "FILE", value_parser = any_path)]
    page404: Option<PathBuf>,

    /// static-web-server's directory listing switch (= --listing).
    #[arg(long, short = 'z', hide = true, env = "SERVER_DIRECTORY_LISTING", num_args = 0..=1,
          default_missing_value = "true", value_parser = sws_bool, value_name = "BOOL")]
    directory_listing: Option<bool>,

    /// static-web-server's listing format: `html`, `json`, or `auto` (JSON for
    /// `Accept: application/json`); any case.
    #[arg(long, hide = true, env = "SERVER_DIRECTORY_LISTING_FORMAT", value_name = "FORMAT",
          value_parser = ["html", "json", "auto"],
          ignore_case = true)]
    directory_listing_format: Option<String>,

    /// static-web-server's on-the-fly compression switch (= --gzip).
    #[arg(long, short = 'x', hide = true, env = "SERVER_COMPRESSION", num_args = 0..=1,
          default_missing_value = "true", value_parser = sws_bool, value_name = "BOOL")]
    compression: Option<bool>,

    /// static-web-server's precompressed-variant switch: only `true` (always on here).
    #[arg(long, hide = true, env = "SERVER_COMPRESSION_STATIC", num_args = 0..=1,
          default_missing_value = "true", value_parser = sws_bool, value_name = "BOOL")]
    compression_static: Option<bool>,

    /// static-web-server's automatic Cache-Control by file type (`src/control_headers.rs`).
    #[arg(long, short = 'e', hide = true, env = "SERVER_CACHE_CONTROL_HEADERS", num_args = 0..=1,
          default_missing_value = "true", value_parser = sws_bool, value_name = "BOOL")]
    cache_control_headers: Option<bool>,

    /// static-web-server's security headers (HSTS, X-Frame-Options, X-Content-Type-Options, CSP).
    #[arg(long, hide = true, env = "SERVER_SECURITY_HEADERS", num_args = 0..=1,
          default_missing_value = "true", value_parser = sws_bool, value_name = "BOOL")]
    security_headers: Option<bool>,

    /// static-web-server's single basic-auth user, `user:bcrypt-hash`.
    #[arg(long, hide = true, env = "SERVER_BASIC_AUTH", value_name = "USER:HASH")]
    basic_auth: Option<String>,

    /// static-web-server's TLS switch: needs --tls-cert and --tls-key; `false` serves plain HTTP.
    #[arg(long, short = 't', hide = true, env = "SERVER_TLS", num_args = 0..=1,
          default_missing_value = "true", value_parser = sws_bool, value_name = "BOOL")]
    tls: Option<bool>,

    /// static-web-server's HTTP/2 switch: needs TLS; h2 is offered by ALPN (`false`: HTTP/1.1 only).
    #[arg(long, hide = true, env = "SERVER_HTTP2_TLS", num_args = 0..=1,
          default_missing_value = "true", value_parser = sws_bool, value_name = "BOOL")]
    http2: Option<bool>,

    /// static-web-server's health endpoint: `GET /health` on the data port, not logged.
    #[arg(long, hide = true, env = "SERVER_HEALTH", num_args = 0..=1,
          default_missing_value = "true", value_parser = sws_bool, value_name = "BOOL")]
    pub health: Option<bool>,

    /// static-web-server v2's dotfile switch (= not --hidden-files).
    #[arg(long, hide = true, env = "SERVER_IGNORE_HIDDEN_FILES", num_args = 0..=1,
          default_missing_value = "true", value_parser = sws_bool, value_name = "BOOL")]
    ignore_hidden_files: Option<bool>,

    /// static-web-server v2's symlink switch (= --no-symlinks).
    #[arg(long, hide = true, env = "SERVER_DISABLE_SYMLINKS", num_args = 0..=1,
          default_missing_value = "true", value_parser = sws_bool, value_name = "BOOL")]
    disable_symlinks: Option<bool>,

    /// static-web-server v3's dotfile switch (= --hidden-files).
    #[arg(long, hide = true, env = "SERVER_INCLUDE_HIDDEN", num_args = 0..=1,
          default_missing_value = "true", value_parser = sws_bool, value_name = "BOOL")]
    include_hidden: Option<bool>,

    /// static-web-server v3's symlink switch (`false` = --no-symlinks).
    #[arg(long, hide = true, env = "SERVER_FOLLOW_SYMLINKS", num_args = 0..=1,
          default_missing_value = "true", value_parser = sws_bool, value_name = "BOOL")]
    follow_symlinks: Option<bool>,

    /// static-web-server v2.44's names for --tls-cert and --tls-key.
    #[arg(long, hide = true, env = "SERVER_HTTP2_TLS_CERT", value_name = "FILE")]
    http2_tls_cert: Option<PathBuf>,
    #[arg(long, hide = true, env = "SERVER_HTTP2_TLS_KEY", value_name = "FILE")]
    http2_tls_key: Option<PathBuf>,

    // SERVER_* variables for flags that share our name.
    #[arg(long = "sws-root", hide = true, env = "SERVER_ROOT", value_parser = any_path)]
    env_root: Option<PathBuf>,
    #[arg(long = "sws-index-files", hide = true, env = "SERVER_INDEX_FILES")]
    env_index_files: Option<String>,
    #[arg(
        long = "sws-cors-allow-origins",
        hide = true,
        env = "SERVER_CORS_ALLOW_ORIGINS"
    )]
    env_cors_allow_origins: Option<String>,
    #[arg(
        long = "sws-cors-allow-headers",
        hide = true,
        env = "SERVER_CORS_ALLOW_HEADERS"
    )]
    env_cors_allow_headers: Option<String>,
    #[arg(
        long = "sws-cors-expose-headers",
        hide = true,
        env = "SERVER_CORS_EXPOSE_HEADERS"
    )]
    env_cors_expose_headers: Option<String>,
    #[arg(long = "sws-tls-cert", hide = true, env = "SERVER_TLS_CERT")]
    env_tls_cert: Option<PathBuf>,
    #[arg(long = "sws-tls-key", hide = true, env = "SERVER_TLS_KEY")]
    env_tls_key: Option<PathBuf>,

    #[command(flatten)]
    unsupported: Unsupported,
}

/// SWS options with no counterpart here: accepted by the parser (flag and
/// `SERVER_*` variable) only so that they can be refused by name. The values
/// listed after each are what static-serve does anyway (SWS's defaults, as
/// manifests often spell them out), and pass; a bare flag means `true`.
macro_rules! unsupported {
    ($( $field:ident : $long:literal $(/ $short:literal)?, $env:literal, [$($ok:literal),*]; )*) => {
        #[derive(Debug, Clone, Default, PartialEq, clap::Args)]
        struct Unsupported {
            $(
                #[arg(long = $long, $(short = $short,)? env = $env, hide = true, num_args = 0..=1,
                      default_missing_value = "true")]
                $field: Option<String>,
            )*
        }

        impl Unsupported {
            /// The first option given with a value static-serve cannot honour:
            /// its flag, variable and the values it could have.
            fn first_refused(&self) -> Option<(&'static str, &'static str, &'static [&'static str])> {
                $(
                    if let Some(v) = &self.$field {
                        const OK: &[&str] = &[$($ok),*];
                        if !OK.iter().any(|ok| ok.eq_ignore_ascii_case(v.trim())) {
                            return Some(($long, $env, OK));
                        }
                    }
                )*
                None
            }
        }
    };
}

unsupported! {
    fd: "fd" / 'f', "SERVER_LISTEN_FD", [];
    unix_socket: "unix-socket", "SERVER_UNIX_SOCKET", [];
    unix_socket_mode: "unix-socket-mode", "SERVER_UNIX_SOCKET_MODE", [];
    unix_socket_force: "unix-socket-force", "SERVER_UNIX_SOCKET_FORCE", ["false"];
    threads_multiplier: "threads-multiplier" / 'n', "SERVER_THREADS_MULTIPLIER", ["0", "1"];
    max_blocking_threads: "max-blocking-threads" / 'b', "SERVER_MAX_BLOCKING_THREADS", ["512"];
    // `true` is what static-serve always does (the root is resolved per
    // request); `false` (pinned at start) served stale trees under git-sync
    // (SWS #699), which no manifest relies on.
    use_relative_root: "use-relative-root", "SERVER_USE_RELATIVE_ROOT", ["true", "false"];
    page50x: "page50x", "SERVER_ERROR_PAGE_50X", [];
    log_with_ansi: "log-with-ansi", "SERVER_LOG_WITH_ANSI", ["false"];
    log_file: "log-file", "SERVER_LOG_FILE", [];
    https_redirect: "https-redirect", "SERVER_HTTPS_REDIRECT", ["false"];
    https_redirect_host: "https-redirect-host", "SERVER_HTTPS_REDIRECT_HOST", ["localhost"];
    https_redirect_from_port: "https-redirect-from-port", "SERVER_HTTPS_REDIRECT_FROM_PORT", ["80"];
    https_redirect_from_hosts: "https-redirect-from-hosts", "SERVER_HTTPS_REDIRECT_FROM_HOSTS", ["localhost"];
    compression_level: "compression-level", "SERVER_COMPRESSION_LEVEL", ["default"];
    directory_listing_order: "directory-listing-order", "SERVER_DIRECTORY_LISTING_ORDER", ["6"];
    directory_listing_download: "directory-listing-download", "SERVER_DIRECTORY_LISTING_DOWNLOAD", [""];
    etag: "etag", "SERVER_ETAG", ["true"];
    grace_period: "grace-period" / 'q', "SERVER_GRACE_PERIOD", ["0"];
    config_file: "config-file" / 'w', "SERVER_CONFIG_FILE", [];
    log_remote_address: "log-remote-address", "SERVER_LOG_REMOTE_ADDRESS", ["false"];
    log_x_real_ip: "log-x-real-ip", "SERVER_LOG_X_REAL_IP", ["false"];
    log_forwarded_for: "log-forwarded-for", "SERVER_LOG_FORWARDED_FOR", ["false"];
    trusted_proxies: "trusted-proxies", "SERVER_TRUSTED_PROXIES", [];
    redirect_trailing_slash: "redirect-trailing-slash", "SERVER_REDIRECT_TRAILING_SLASH", ["true"];
    accept_markdown: "accept-markdown", "SERVER_ACCEPT_MARKDOWN", ["false"];
    text_charset: "text-charset", "SERVER_TEXT_CHARSET", ["true"];
    metrics: "metrics", "SERVER_METRICS", ["false"];
    experimental_metrics: "experimental-metrics", "SERVER_EXPERIMENTAL_METRICS", ["false"];
    maintenance_mode: "maintenance-mode", "SERVER_MAINTENANCE_MODE", ["false"];
    maintenance_mode_status: "maintenance-mode-status", "SERVER_MAINTENANCE_MODE_STATUS", ["503"];
    maintenance_mode_file: "maintenance-mode-file", "SERVER_MAINTENANCE_MODE_FILE", [""];
}

/// SWS's booleans, with the empty value (`SERVER_DIRECTORY_LISTING=`, as
/// manifests leave a variable) meaning off, as for SWS's other options.
fn sws_bool(s: &str) -> Result<bool, String> {
    if s.trim().is_empty() {
        return Ok(false);
    }
    use clap::builder::TypedValueParser;
    BoolishValueParser::new()
        .parse_ref(
            &clap::Command::new("static-serve"),
            None,
            std::ffi::OsStr::new(s),
        )
        .map_err(|_| format!("{s:?} is not a boolean (true, false, yes, no, on, off, 1, 0)"))
}

/// Any string, the empty one included (clap's own path parser refuses it):
/// SWS's empty value means "off".
fn any_path(s: &str) -> Result<PathBuf, String> {
    Ok(PathBuf::from(s))
}

fn unsupported_value(flag: &str, value: impl std::fmt::Display, why: &str) -> anyhow::Error {
    usage!("--{flag} {value}: unsupported by static-serve ({why})")
}

impl Sws {
    /// Rewrites `a`'s own fields from the SWS names given.
    pub fn apply(&self, a: &mut StaticServe) -> anyhow::Result<()> {
        if let Some((flag, env, ok)) = self.unsupported.first_refused() {
            let could = match ok {
                [] => String::new(),
                [v] => format!(" (only `{v}`, what static-serve does, is accepted)"),
                _ => format!(
                    " (only {}, what static-serve does, are accepted)",
                    ok.join(", ")
                ),
            };
            return Err(usage!(
                "--{flag} ({env}): a static-web-server option that static-serve does not support{could}; see the README's table"
            ));
        }
        // A command written for SWS gets SWS's defaults for what it leaves
        // out, where ours differ: its Cache-Control table, symlinks refused
        // and `404.html` as the 404 page (under the root; a plain 404 when
        // the tree has none). Ours stay for commands in our own names.
        let sws_defaults = *self != Sws::default();
        self.apply_listener(a)?;
        self.apply_pages(a, sws_defaults)?;
        if let Some(on) = self.directory_listing {
            a.listing = on;
        }
        if let Some(f) = &self.directory_listing_format {
            a.listing_format = match f.to_ascii_lowercase().as_str() {
                "html" => ListingFormat::Html,
                "json" => ListingFormat::Json,
                _ => ListingFormat::Auto,
            };
        }
        if let Some(on) = self.compression {
            a.gzip = on;
        }
        if self.compression_static == Some(false) {
            return Err(unsupported_value(
                "compression-static",
                false,
                "precompressed variants are always served",
            ));
        }
        if self.cache_control_headers.unwrap_or(sws_defaults) {
            a.cache_control.extend(cache_control_rules());
        }
        if let Some(entry) = self.basic_auth.as_ref().filter(|e| !e.is_empty()) {
            a.basic_auth_entry = Some(entry.clone());
        }
        self.apply_tls(a)?;
        if let Some(ignore) = self.ignore_hidden_files {
            a.hidden_files = !ignore;
        }
        if let Some(include) = self.include_hidden {
            a.hidden_files = include;
        }
        // v3's switch over v2's; without either, SWS refuses symlinks.
        let refuse = (self.follow_symlinks.map(|follow| !follow))
            .or(self.disable_symlinks)
            .or(sws_defaults.then_some(true));
        if let Some(refuse) = refuse {
            a.no_symlinks = refuse;
        }
        if let Some(p) = self.env_root.as_ref().filter(|p| !p.as_os_str().is_empty()) {
            if a.root == std::path::Path::new(".") {
                a.root = p.clone();
            }
        }
        let list = |v: &str| v.split(',').map(|s| s.trim().to_string()).collect();
        if let Some(v) = &self.env_index_files {
            if a.index_files == ["index.html"] {
                a.index_files = list(v);
            }
        }
        if let Some(v) = &self.env_cors_allow_origins {
            if a.cors_allow_origins.is_empty() {
                a.cors_allow_origins = list(v);
            }
        }
        // Our defaults are SWS's: a SERVER_* value replaces them when ours are untouched.
        let untouched = |v: &[String], default: &str| {
            v.iter()
                .map(|s| s.trim())
                .eq(default.split(',').map(str::trim))
        };
        if let Some(v) = &self.env_cors_allow_headers {
            if untouched(&a.cors_allow_headers, crate::CORS_ALLOW_HEADERS) {
                a.cors_allow_headers = list(v);
            }
        }
        if let Some(v) = &self.env_cors_expose_headers {
            if untouched(&a.cors_expose_headers, crate::CORS_EXPOSE_HEADERS) {
                a.cors_expose_headers = list(v);
            }
        }
        if self.health == Some(true) {
            a.health = true;
        }
        Ok(())
    }

    /// `--host`/`--port` (or SERVER_HOST/SERVER_PORT) make one listener. Given
    /// with our own `--listen` (or STATIC_SERVE_LISTEN), neither would be
    /// honoured in full, so that is refused rather than one silently dropped.
    fn apply_listener(&self, a: &mut StaticServe) -> anyhow::Result<()> {
        if self.host.is_none() && self.port.is_none() {
            return Ok(());
        }
        if a.listen != [crate::DEFAULT_LISTEN] {
            return Err(usage!(
                "--listen ({}) and static-web-server's --host/--port (or SERVER_HOST/SERVER_PORT) both set the listening address: give one",
                a.listen.join(",")
            ));
        }
        let host = self.host.as_deref().unwrap_or("::");
        let port = self.port.unwrap_or(8080);
        let host = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]")
        } else {
            host.to_string()
        };
        a.listen = vec![format!("{host}:{port}")];
        Ok(())
    }

    /// SWS's fallback page is a path from the working directory; its 404
    /// page is under the root when relative, unless it already names the
    /// root (`--page404 public/404.html` with `--root public`). Ours are both
    /// relative to the root (and looked up afresh as the root swaps).
    fn apply_pages(&self, a: &mut StaticServe, sws_defaults: bool) -> anyhow::Result<()> {
        let from_cwd = |p: &PathBuf| -> anyhow::Result<PathBuf> {
            Ok(if p.is_absolute() {
                p.clone()
            } else {
                std::env::current_dir()?.join(p)
            })
        };
        if let Some(p) = self
            .page_fallback
            .as_ref()
            .filter(|p| !p.as_os_str().is_empty())
        {
            a.spa_fallback = Some(from_cwd(p)?);
        }
        if let Some(p) = self.page404.as_ref().filter(|p| !p.as_os_str().is_empty()) {
            let names_root = p.is_relative() && p.starts_with(&a.root) && a.root != Path::new(".");
            a.not_found_page = Some(if names_root { from_cwd(p)? } else { p.clone() });
        }
        if sws_defaults && self.page404.is_none() && a.not_found_page.is_none() {
            a.not_found_page = Some(PathBuf::from("404.html"));
        }
        Ok(())
    }

    /// `--tls`, `--http2` and the certificate flags of either SWS version.
    /// SWS's security headers are on by default with `--http2`, and HSTS is
    /// sent only over TLS.
    fn apply_tls(&self, a: &mut StaticServe) -> anyhow::Result<()> {
        for (ours, sws) in [
            (&mut a.tls_cert, [&self.http2_tls_cert, &self.env_tls_cert]),
            (&mut a.tls_key, [&self.http2_tls_key, &self.env_tls_key]),
        ] {
            if let Some(p) = sws.into_iter().flatten().next() {
                ours.get_or_insert_with(|| p.clone());
            }
        }
        if self.tls == Some(false) {
            // SWS serves plain HTTP then, whatever certificate is named.
            a.tls_cert = None;
            a.tls_key = None;
        }
        let tls_files = a.tls_cert.is_some() && a.tls_key.is_some();
        if self.tls == Some(true) && !tls_files {
            return Err(usage!("--tls: needs --tls-cert and --tls-key"));
        }
        if self.http2 == Some(true) && !tls_files {
            return Err(usage!(
                "--http2: needs TLS (--tls-cert and --tls-key), as in static-web-server; for h2c use --http2-cleartext"
            ));
        }
        if self.http2 == Some(false) {
            a.tls_http1_only = true;
        }
        if self.security_headers.or(self.http2.filter(|&on| on)) == Some(true) {
            // SWS's set (src/security_headers.rs).
            let hsts = tls_files.then_some((
                "Strict-Transport-Security",
                "max-age=63072000; includeSubDomains; preload",
            ));
            for (k, v) in hsts.into_iter().chain([
                ("X-Frame-Options", "DENY"),
                ("X-Content-Type-Options", "nosniff"),
                ("Content-Security-Policy", "frame-ancestors 'self'"),
            ]) {
                a.header.push((k.to_string(), v.to_string()));
            }
        }
        Ok(())
    }
}

/// static-web-server's automatic `Cache-Control` (`src/control_headers.rs`):
/// an hour for feeds and data, a year for assets and archives, a day for
/// the rest, as `--cache-control GLOB=VALUE` rules after any of ours (the
/// first match wins).
fn cache_control_rules() -> [String; 3] {
    const HOUR: &str = "atom,json,rss,xml";
    const YEAR: &str = "avif,bmp,bz2,css,doc,gif,gz,htc,ico,jpeg,jpg,js,jxl,map,mjs,mp3,mp4,ogg,\
                        ogv,pdf,png,rar,rtf,tar,tgz,wav,weba,webm,webp,woff,woff2,zip";
    [
        format!("*.{{{HOUR}}}=public, max-age=3600"),
        format!("*.{{{YEAR}}}=public, max-age=31536000"),
        "*=public, max-age=86400".to_string(),
    ]
}

/// static-web-server's logging options are the runtime's common flags under
/// other names, read before the applet's own: `-g LEVEL` becomes
/// `--log-level LEVEL` (the level names are the same), `--log-format pretty`
/// becomes `text`, and SERVER_LOG_LEVEL / SERVER_LOG_FORMAT stand in when
/// neither the flag nor SIDECAR_LOG_LEVEL / SIDECAR_LOG_FORMAT is given.
pub fn rewrite_args(args: Vec<OsString>) -> Vec<OsString> {
    let mut out = Vec::with_capacity(args.len() + 4);
    let mut iter = args.into_iter();
    out.extend(iter.next());
    let (mut level_given, mut format_given, mut format_value_next) = (false, false, false);
    while let Some(arg) = iter.next() {
        let Some(s) = arg.to_str() else {
            out.push(arg);
            continue;
        };
        if format_value_next {
            format_value_next = false;
            out.push(log_format(s).into());
            continue;
        }
        match s {
            "--" => {
                out.push(arg);
                out.extend(iter);
                break;
            }
            "-g" | "--log-level" => {
                level_given = true;
                out.push("--log-level".into());
            }
            "--log-format" => {
                format_given = true;
                format_value_next = true;
                out.push(arg);
            }
            _ => {
                if let Some(v) = s.strip_prefix("--log-format=") {
                    format_given = true;
                    out.push(format!("--log-format={}", log_format(v)).into());
                    continue;
                }
                level_given |= s.starts_with("--log-level=") || s.starts_with("-g=");
                out.push(match s.strip_prefix("-g=") {
                    Some(v) => format!("--log-level={v}").into(),
                    None => arg,
                });
            }
        }
    }
    let env = |ours: &str, sws: &str| {
        std::env::var_os(ours)
            .is_none()
            .then(|| std::env::var(sws).ok())
            .flatten()
            .filter(|v| !v.is_empty())
    };
    if !level_given {
        if let Some(v) = env("SIDECAR_LOG_LEVEL", "SERVER_LOG_LEVEL") {
            out.extend(["--log-level".into(), v.into()]);
        }
    }
    if !format_given {
        if let Some(v) = env("SIDECAR_LOG_FORMAT", "SERVER_LOG_FORMAT") {
            out.extend(["--log-format".into(), log_format(&v).into()]);
        }
    }
    out
}

/// SWS's `pretty` is our `text`; other values go to our parser as given.
fn log_format(v: &str) -> &str {
    if v.eq_ignore_ascii_case("pretty") {
        "text"
    } else {
        v
    }
}
