//! Serve static files, following atomic root swaps.
//!
//! The life of the process: flags → settings (bad ones exit 2) → bind every
//! `--listen` address → serve until SIGTERM → stop accepting, let in-flight
//! responses finish within `--shutdown-grace` → exit 0.

mod auth;
mod balance;
mod body;
mod cache;
mod conditional;
mod cors;
mod encoding;
mod handler;
mod headers;
mod listen;
mod listing;
mod metrics;
mod path;
mod per_ip;
mod present;
mod range;
mod request_line;
mod sendfile;
mod server;
mod settings;
mod sws;
mod tree;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::ArgAction;
use sidecar_runtime::cli::parse_duration;
use sidecar_runtime::tls;
use sidecar_runtime::{Applet, Context};

const CORS_ALLOW_HEADERS: &str = "origin, content-type, authorization";
const CORS_EXPOSE_HEADERS: &str = "origin, content-type";
const DEFAULT_LISTEN: &str = "0.0.0.0:8080";
const ALPN_HTTP1: &[&[u8]] = &[b"http/1.1"];

/// How a directory listing is written (static-web-server's
/// `--directory-listing-format`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ListingFormat {
    /// HTML, or JSON for `Accept: application/json`.
    #[default]
    Auto,
    Html,
    Json,
}

#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "static-serve options")]
pub struct StaticServe {
    /// Directory to serve. May be a symlink that is swapped atomically (git-sync):
    /// it is resolved afresh for every request.
    #[arg(
        long,
        short = 'd',
        env = "STATIC_SERVE_ROOT",
        default_value = ".",
        value_name = "DIR"
    )]
    root: PathBuf,

    /// Address to listen on: HOST:PORT, :PORT, or unix:/path/to.sock. Repeatable.
    #[arg(
        long,
        env = "STATIC_SERVE_LISTEN",
        default_value = DEFAULT_LISTEN,
        value_delimiter = ',',
        value_name = "ADDR"
    )]
    listen: Vec<String>,

    /// Files tried, in order, when a directory is requested.
    #[arg(
        long,
        env = "STATIC_SERVE_INDEX_FILES",
        default_value = "index.html",
        value_delimiter = ',',
        value_name = "NAMES"
    )]
    index_files: Vec<String>,

    /// List directories that have no index file (HTML, or JSON for `Accept: application/json`).
    #[arg(long, env = "STATIC_SERVE_LISTING")]
    listing: bool,

    /// File (relative to the root) served with 200 for paths that do not exist: single-page apps.
    #[arg(long, env = "STATIC_SERVE_SPA_FALLBACK", value_name = "FILE")]
    spa_fallback: Option<PathBuf>,

    /// File (relative to the root, or absolute) served as the body of 404 responses.
    #[arg(long, env = "STATIC_SERVE_NOT_FOUND_PAGE", value_name = "FILE")]
    not_found_page: Option<PathBuf>,

    /// Serve dotfiles (`.well-known/`, `.env`). `.git` is never served.
    #[arg(long, env = "STATIC_SERVE_HIDDEN_FILES")]
    hidden_files: bool,

    /// Refuse every symlink below the root (by default symlinks are followed
    /// when they resolve inside the root).
    #[arg(long, env = "STATIC_SERVE_NO_SYMLINKS")]
    no_symlinks: bool,

    /// `Cache-Control` for paths matching GLOB (first match wins), e.g.
    /// `*.html=no-cache` or `assets/**=public, max-age=31536000, immutable`. Repeatable.
    #[arg(
        long,
        env = "STATIC_SERVE_CACHE_CONTROL",
        value_delimiter = '\n',
        value_name = "GLOB=VALUE"
    )]
    cache_control: Vec<String>,

    /// Extra response header, `Name: value`. Repeatable.
    #[arg(long, env = "STATIC_SERVE_HEADER", value_delimiter = '\n', value_name = "HEADER",
          value_parser = sidecar_runtime::cli::parse_header)]
    header: Vec<(String, String)>,

    /// Origins allowed by CORS, comma-separated, or `*`.
    #[arg(
        long,
        short = 'c',
        env = "STATIC_SERVE_CORS_ALLOW_ORIGINS",
        value_delimiter = ',',
        value_name = "ORIGINS"
    )]
    cors_allow_origins: Vec<String>,

    /// Request headers a CORS preflight may ask for, comma-separated.
    #[arg(
        long,
        short = 'j',
        env = "STATIC_SERVE_CORS_ALLOW_HEADERS",
        value_delimiter = ',',
        default_value = CORS_ALLOW_HEADERS,
        value_name = "HEADERS"
    )]
    cors_allow_headers: Vec<String>,

    /// Response headers exposed to CORS callers, comma-separated.
    #[arg(
        long,
        env = "STATIC_SERVE_CORS_EXPOSE_HEADERS",
        value_delimiter = ',',
        default_value = CORS_EXPOSE_HEADERS,
        value_name = "HEADERS"
    )]
    cors_expose_headers: Vec<String>,

    /// htpasswd file of `user:bcrypt-hash` lines (`htpasswd -B`); every request must authenticate.
    #[arg(long, env = "STATIC_SERVE_BASIC_AUTH_FILE", value_name = "FILE")]
    basic_auth_file: Option<PathBuf>,

    /// Compress text responses with gzip on the fly when the client accepts it
    /// and no precompressed variant exists (`--gzip=false` turns it off).
    #[arg(long, env = "STATIC_SERVE_GZIP", default_value_t = true, action = ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true", value_parser = BoolishValueParser::new(),
          value_name = "BOOL")]
    gzip: bool,

    /// Log one line per request (method, path, status, bytes, duration, peer).
    #[arg(long, env = "STATIC_SERVE_ACCESS_LOG")]
    access_log: bool,

    /// Close a connection whose request head takes longer than this to arrive (0: never).
    #[arg(long, env = "STATIC_SERVE_HEADER_TIMEOUT", default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    header_timeout: Duration,

    /// Close a connection with no traffic for this long (between requests, or a
    /// client that stops reading; 0: never).
    #[arg(long, env = "STATIC_SERVE_IDLE_TIMEOUT", default_value = "60s", value_parser = parse_duration, value_name = "DURATION")]
    idle_timeout: Duration,

    /// Most client connections open at once; further clients wait in the listen backlog.
    #[arg(
        long,
        env = "STATIC_SERVE_MAX_CONNECTIONS",
        default_value_t = 4096,
        value_name = "N"
    )]
    max_connections: usize,

    /// Most connections one client address may hold at once; more are closed
    /// right after accept and counted (0: no cap).
    #[arg(
        long,
        env = "STATIC_SERVE_MAX_CONNECTIONS_PER_IP",
        default_value_t = 0,
        value_name = "N"
    )]
    max_connections_per_ip: usize,

    /// PEM certificate chain: serve HTTPS (TLS 1.2 and 1.3, HTTP/2 by ALPN) on
    /// every listener. Re-read when the file changes; a bad new file keeps the old.
    #[arg(
        long,
        env = "STATIC_SERVE_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    tls_cert: Option<PathBuf>,

    /// PEM private key for `--tls-cert`.
    #[arg(
        long,
        env = "STATIC_SERVE_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    tls_key: Option<PathBuf>,

    /// Speak HTTP/2 without TLS to clients that start with its preface (h2c
    /// prior knowledge); HTTP/1.1 clients are served as before.
    #[arg(long, env = "STATIC_SERVE_HTTP2_CLEARTEXT")]
    http2_cleartext: bool,

    #[command(flatten)]
    sws: sws::Sws,

    /// static-web-server's `--basic-auth user:hash` (set from `sws`).
    #[arg(skip)]
    basic_auth_entry: Option<String>,

    /// static-web-server's `--health` (set from `sws`).
    #[arg(skip)]
    health: bool,

    /// static-web-server's `--directory-listing-format` (set from `sws`).
    #[arg(skip)]
    listing_format: ListingFormat,

    /// static-web-server's `--http2 false`: TLS offers HTTP/1.1 only (set from `sws`).
    #[arg(skip)]
    tls_http1_only: bool,
}

impl StaticServe {
    /// Our flags with the static-web-server names folded in.
    fn resolve(mut self) -> anyhow::Result<StaticServe> {
        let sws = std::mem::take(&mut self.sws);
        sws.apply(&mut self)?;
        Ok(self)
    }

    fn tls_files(&self) -> Option<tls::TlsFiles> {
        Some(tls::TlsFiles {
            cert: tls::PemFile::new(self.tls_cert.clone()?, "--tls-cert"),
            key: tls::PemFile::new(self.tls_key.clone()?, "--tls-key"),
            ca: None,
        })
    }
}

impl Applet for StaticServe {
    const NAME: &'static str = "static-serve";
    const ABOUT: &'static str = "Serve static files, following atomic root swaps";
    const ADMIN_ADDR: &'static str = "0.0.0.0:9541";

    fn rewrite_args(args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
        sws::rewrite_args(args)
    }

    /// Flags, listen addresses, pages, globs, the htpasswd file and the TLS
    /// files, read and checked; nothing binds.
    fn check(&self) -> anyhow::Result<()> {
        let a = self.clone().resolve()?;
        settings::Settings::from_args(&a)?;
        listen::check(&a.listen)?;
        if let Some(files) = a.tls_files() {
            tls::Material::check(&files)?;
        }
        Ok(())
    }

    /// A start waits for a root that does not exist yet (git-sync may still
    /// be cloning): a check says so, and refuses one this process cannot read.
    /// A start takes an expired certificate with a warning; a check refuses it.
    fn check_strict(&self) -> anyhow::Result<()> {
        let a = self.clone().resolve()?;
        if let Some(files) = a.tls_files() {
            tls::Material::check_validity(&files)?;
        }
        let root = &a.root;
        if sidecar_runtime::check::readable("--root", root)?
            == sidecar_runtime::check::Found::Missing
        {
            tracing::warn!(root = %root.display(), "--root: does not exist yet; answering 503 until it does");
        }
        Ok(())
    }

    async fn run(self, ctx: Context) -> anyhow::Result<()> {
        let a = self.resolve()?;
        let settings = settings::Settings::from_args(&a)?;
        let protocols = server::Protocols {
            tls: match a.tls_files() {
                None => None,
                Some(files) => {
                    let metrics = tls::TlsMetrics::register(
                        ctx.registry().sub_registry_with_prefix("static_serve"),
                    );
                    let material = tls::Material::load_watched(files, metrics)?;
                    let config = material.server_config(
                        tls::ClientAuth::Off,
                        tls::Identities::parse(&[], "--tls-cert")?,
                        if a.tls_http1_only {
                            ALPN_HTTP1
                        } else {
                            tls::ALPN_H2_HTTP1
                        },
                    )?;
                    Some(tokio_rustls::TlsAcceptor::from(config))
                }
            },
            h2c: a.http2_cleartext,
        };
        let limits = server::Limits {
            header_timeout: a.header_timeout,
            idle_timeout: a.idle_timeout,
            max_connections: a.max_connections,
            max_connections_per_ip: a.max_connections_per_ip,
        };
        warn_if_fd_limit_is_low(sidecar_runtime::raise_fd_limit(), a.max_connections);
        // Metrics exist before the listening line is logged: whoever reads
        // that line may scrape at once.
        let metrics = metrics::Metrics::register(&mut ctx.registry());
        let listeners = listen::bind_all(&a.listen, sidecar_runtime::worker_threads()).await?;
        if let Some(auth) = &settings.auth {
            auth.watch();
        }
        let handler = Arc::new(handler::Handler::new(settings, metrics));
        watch_root(&ctx, a.root.clone(), handler.root_lost.clone());
        server::serve(listeners, handler, limits, protocols, ctx).await
    }
}

/// Each connection costs a socket plus two descriptors per request in flight,
/// and the open-file cache holds some more.
fn warn_if_fd_limit_is_low(limit: u64, max_connections: usize) {
    let needed = (max_connections as u64)
        .saturating_mul(2)
        .saturating_add(tree::OPEN_FILES as u64);
    if needed > limit {
        tracing::warn!(
            limit,
            max_connections,
            "--max-connections is above what the open-file limit allows; accepts will fail at the limit"
        );
    }
}

/// Ready while the root resolves to a directory: git-sync may still be
/// cloning when both containers start, and a root that goes away later (a
/// volume emptied) is found by the first request that gets a 503, which
/// turns readiness off until it is back: the Service stops sending traffic
/// the Pod can only refuse. Nothing is polled while the root is there.
fn watch_root(ctx: &Context, root: PathBuf, lost: Arc<tokio::sync::Notify>) {
    let ctx = ctx.clone();
    tokio::spawn(async move {
        loop {
            let mut warned = false;
            while !root.is_dir() {
                if !warned {
                    tracing::warn!(root = %root.display(), "root does not exist; answering 503 until it does");
                    ctx.set_ready(false);
                    warned = true;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            tracing::info!(root = %root.display(), "root is available");
            ctx.set_ready(true);
            lost.notified().await;
        }
    });
}
