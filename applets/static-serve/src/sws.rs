//! static-web-server's flag names and `SERVER_*` variables, for a drop-in
//! swap: each is translated into our own flag with SWS's meaning (v2.44 /
//! v3 `src/settings/cli.rs`), before anything is validated. Our own flag or
//! variable, when given, wins over a `SERVER_*` variable. A SWS flag we do not
//! implement exits 2 naming it as unsupported: it is never silently ignored.

use std::path::PathBuf;

use clap::builder::BoolishValueParser;
use sidecar_runtime::usage;

use crate::StaticServe;

/// Hidden from `--help`, which keeps to our own names (and their
/// STATIC_SERVE_* variables); the README's table lists these.
#[derive(Debug, Clone, Default, clap::Args)]
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

    /// static-web-server's SPA fallback page, a path from the working directory (= --spa-fallback).
    #[arg(long, hide = true, env = "SERVER_FALLBACK_PAGE", value_name = "FILE")]
    page_fallback: Option<PathBuf>,

    /// static-web-server's 404 page, a path from the working directory (= --not-found-page).
    #[arg(long, hide = true, env = "SERVER_ERROR_PAGE_404", value_name = "FILE")]
    page404: Option<PathBuf>,

    /// static-web-server's directory listing switch (= --listing).
    #[arg(long, short = 'z', hide = true, env = "SERVER_DIRECTORY_LISTING", num_args = 0..=1,
          default_missing_value = "true", value_parser = BoolishValueParser::new(), value_name = "BOOL")]
    directory_listing: Option<bool>,

    /// static-web-server's listing format: `html` or `auto` (both negotiate JSON by `Accept`).
    #[arg(
        long,
        hide = true,
        env = "SERVER_DIRECTORY_LISTING_FORMAT",
        value_name = "FORMAT"
    )]
    directory_listing_format: Option<String>,

    /// static-web-server's on-the-fly compression switch (= --gzip).
    #[arg(long, short = 'x', hide = true, env = "SERVER_COMPRESSION", num_args = 0..=1,
          default_missing_value = "true", value_parser = BoolishValueParser::new(), value_name = "BOOL")]
    compression: Option<bool>,

    /// static-web-server's precompressed-variant switch: only `true` (always on here).
    #[arg(long, hide = true, env = "SERVER_COMPRESSION_STATIC", num_args = 0..=1,
          default_missing_value = "true", value_parser = BoolishValueParser::new(), value_name = "BOOL")]
    compression_static: Option<bool>,

    /// static-web-server's automatic Cache-Control: only `false` (use --cache-control).
    #[arg(long, short = 'e', hide = true, env = "SERVER_CACHE_CONTROL_HEADERS", num_args = 0..=1,
          default_missing_value = "true", value_parser = BoolishValueParser::new(), value_name = "BOOL")]
    cache_control_headers: Option<bool>,

    /// static-web-server's security headers (HSTS, X-Frame-Options, X-Content-Type-Options, CSP).
    #[arg(long, hide = true, env = "SERVER_SECURITY_HEADERS", num_args = 0..=1,
          default_missing_value = "true", value_parser = BoolishValueParser::new(), value_name = "BOOL")]
    security_headers: Option<bool>,

    /// static-web-server's single basic-auth user, `user:bcrypt-hash`.
    #[arg(long, hide = true, env = "SERVER_BASIC_AUTH", value_name = "USER:HASH")]
    basic_auth: Option<String>,

    /// static-web-server's TLS switch: needs --tls-cert and --tls-key.
    #[arg(long, short = 't', hide = true, env = "SERVER_TLS", num_args = 0..=1,
          default_missing_value = "true", value_parser = BoolishValueParser::new(), value_name = "BOOL")]
    tls: Option<bool>,

    /// static-web-server's HTTP/2 switch: needs TLS; h2 is offered by ALPN.
    #[arg(long, hide = true, env = "SERVER_HTTP2_TLS", num_args = 0..=1,
          default_missing_value = "true", value_parser = BoolishValueParser::new(), value_name = "BOOL")]
    http2: Option<bool>,

    /// static-web-server's health endpoint: `GET /health` on the data port, not logged.
    #[arg(long, hide = true, env = "SERVER_HEALTH", num_args = 0..=1,
          default_missing_value = "true", value_parser = BoolishValueParser::new(), value_name = "BOOL")]
    pub health: Option<bool>,

    /// static-web-server v2's dotfile switch (= not --hidden-files).
    #[arg(long, hide = true, env = "SERVER_IGNORE_HIDDEN_FILES", num_args = 0..=1,
          default_missing_value = "true", value_parser = BoolishValueParser::new(), value_name = "BOOL")]
    ignore_hidden_files: Option<bool>,

    /// static-web-server v2's symlink switch (= --no-symlinks).
    #[arg(long, hide = true, env = "SERVER_DISABLE_SYMLINKS", num_args = 0..=1,
          default_missing_value = "true", value_parser = BoolishValueParser::new(), value_name = "BOOL")]
    disable_symlinks: Option<bool>,

    // SERVER_* variables for flags that share our name.
    #[arg(long = "sws-root", hide = true, env = "SERVER_ROOT")]
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

/// SWS flags with no counterpart here: accepted by the parser only so that
/// they can be refused by name.
macro_rules! unsupported {
    ($( $field:ident : $long:literal $(, $short:literal)? ; )*) => {
        #[derive(Debug, Clone, Default, clap::Args)]
        struct Unsupported {
            $(
                #[arg(long = $long, $(short = $short,)? hide = true, num_args = 0..=1,
                      default_missing_value = "", allow_hyphen_values = true)]
                $field: Option<String>,
            )*
        }

        impl Unsupported {
            fn first_given(&self) -> Option<&'static str> {
                $( if self.$field.is_some() { return Some($long); } )*
                None
            }
        }
    };
}

unsupported! {
    fd: "fd", 'f';
    unix_socket: "unix-socket";
    unix_socket_mode: "unix-socket-mode";
    unix_socket_force: "unix-socket-force";
    threads_multiplier: "threads-multiplier", 'n';
    max_blocking_threads: "max-blocking-threads", 'b';
    page50x: "page50x";
    log_with_ansi: "log-with-ansi";
    log_file: "log-file";
    https_redirect: "https-redirect";
    https_redirect_host: "https-redirect-host";
    https_redirect_from_port: "https-redirect-from-port";
    https_redirect_from_hosts: "https-redirect-from-hosts";
    compression_level: "compression-level";
    directory_listing_order: "directory-listing-order";
    directory_listing_download: "directory-listing-download";
    etag: "etag";
    grace_period: "grace-period", 'q';
    config_file: "config-file", 'w';
    log_remote_address: "log-remote-address";
    log_x_real_ip: "log-x-real-ip";
    log_forwarded_for: "log-forwarded-for";
    trusted_proxies: "trusted-proxies";
    redirect_trailing_slash: "redirect-trailing-slash";
    accept_markdown: "accept-markdown";
    text_charset: "text-charset";
    metrics: "metrics";
    maintenance_mode: "maintenance-mode";
    maintenance_mode_status: "maintenance-mode-status";
    maintenance_mode_file: "maintenance-mode-file";
}

fn unsupported_value(flag: &str, value: impl std::fmt::Display, why: &str) -> anyhow::Error {
    usage!("--{flag} {value}: unsupported by static-serve ({why})")
}

impl Sws {
    /// Rewrites `a`'s own fields from the SWS names given.
    pub fn apply(&self, a: &mut StaticServe) -> anyhow::Result<()> {
        if let Some(flag) = self.unsupported.first_given() {
            return Err(usage!(
                "--{flag}: a static-web-server flag that static-serve does not support (see the README's table)"
            ));
        }
        if self.host.is_some() || self.port.is_some() {
            let host = self.host.as_deref().unwrap_or("::");
            let port = self.port.unwrap_or(8080);
            let host = if host.contains(':') && !host.starts_with('[') {
                format!("[{host}]")
            } else {
                host.to_string()
            };
            a.listen = vec![format!("{host}:{port}")];
        }
        // SWS resolves these pages from the working directory; ours are
        // relative to the root unless absolute.
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
        if let Some(p) = &self.page404 {
            a.not_found_page = Some(from_cwd(p)?);
        }
        if let Some(on) = self.directory_listing {
            a.listing = on;
        }
        match self.directory_listing_format.as_deref() {
            None | Some("html") | Some("auto") => {}
            Some(other) => {
                return Err(unsupported_value(
                    "directory-listing-format",
                    other,
                    "listings are HTML, or JSON for `Accept: application/json`",
                ))
            }
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
        if self.cache_control_headers == Some(true) {
            return Err(unsupported_value(
                "cache-control-headers",
                true,
                "set Cache-Control with --cache-control GLOB=VALUE",
            ));
        }
        if self.security_headers == Some(true) {
            // SWS's set (src/security_headers.rs).
            for (k, v) in [
                (
                    "Strict-Transport-Security",
                    "max-age=63072000; includeSubDomains; preload",
                ),
                ("X-Frame-Options", "DENY"),
                ("X-Content-Type-Options", "nosniff"),
                ("Content-Security-Policy", "frame-ancestors 'self'"),
            ] {
                a.header.push((k.to_string(), v.to_string()));
            }
        }
        if let Some(entry) = &self.basic_auth {
            a.basic_auth_entry = Some(entry.clone());
        }
        if let Some(p) = &self.env_tls_cert {
            a.tls_cert.get_or_insert_with(|| p.clone());
        }
        if let Some(p) = &self.env_tls_key {
            a.tls_key.get_or_insert_with(|| p.clone());
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
        if let Some(ignore) = self.ignore_hidden_files {
            a.hidden_files = !ignore;
        }
        if let Some(off) = self.disable_symlinks {
            a.no_symlinks = off;
        }
        if let Some(p) = &self.env_root {
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
}
