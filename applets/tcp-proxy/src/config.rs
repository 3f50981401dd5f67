//! Flags, and the checks that turn them into routes. Bad input is a
//! `UsageError` (exit 2) naming the flag.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::ValueEnum;
use sidecar_runtime::cli::{parse_bytes, parse_duration};
use sidecar_runtime::usage;

use crate::proxy_protocol::Version;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Lb {
    RoundRobin,
    LeastConn,
    RandomTwo,
    HashSource,
    /// Peak-EWMA latency times outstanding requests, best of two random
    /// endpoints (Linkerd's balancer).
    Ewma,
}

/// How a listener treats what it accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Protocol {
    /// Look at the first bytes: HTTP/1.x or HTTP/2 → HTTP, else TCP.
    Auto,
    Http,
    Tcp,
}

/// Linkerd's default opaque ports: SMTP, MySQL (and its X protocol),
/// PostgreSQL, Redis, Elasticsearch transport, memcached. Server-speaks-first
/// or binary protocols that sniffing would only delay.
pub const DEFAULT_OPAQUE_PORTS: &str = "25,587,3306,4444,5432,6379,9300,11211";

/// `--http-path-normalization`: how request paths are made canonical
/// before routing (see `http_proxy::path`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PathNormalization {
    /// The path is routed and forwarded as it came.
    None,
    /// RFC 3986: dot segments removed, percent-encoded unreserved characters
    /// decoded, other escapes in upper case, `\` taken as `/` (Envoy's
    /// `normalize_path`, Istio's BASE).
    Base,
    /// BASE, and runs of `/` made one (Istio's MERGE_SLASHES).
    #[value(alias = "merge_slashes")]
    MergeSlashes,
    /// MERGE_SLASHES after decoding `%2F` and `%5C` as `/` (Istio's
    /// DECODE_AND_MERGE_SLASHES).
    #[value(alias = "decode_and_merge_slashes")]
    DecodeAndMergeSlashes,
}

/// TLS on the listeners.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TlsServerMode {
    Off,
    Strict,
    Permissive,
}

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Listen address of the single route (with --upstream).
    #[arg(long, env = "TCP_PROXY_LISTEN", value_name = "ADDR", value_parser = parse_listen)]
    pub listen: Option<SocketAddr>,

    /// Upstream HOST:PORT of the --listen route; repeatable, or comma separated.
    #[arg(
        long,
        env = "TCP_PROXY_UPSTREAM",
        value_name = "HOST:PORT",
        value_delimiter = ',',
        value_parser = parse_target
    )]
    pub upstream: Vec<Target>,

    /// A route `LISTEN=UP1,UP2`; repeatable (env: separate routes with `;`).
    #[arg(
        long,
        env = "TCP_PROXY_ROUTE",
        value_name = "LISTEN=UP1,UP2",
        value_delimiter = ';',
        value_parser = parse_route
    )]
    pub route: Vec<RouteSpec>,

    /// Listener for iptables-redirected traffic, proxied to each connection's
    /// original destination (SO_ORIGINAL_DST); repeatable (outbound 15001 and
    /// inbound 15006 in one process), or comma separated.
    #[arg(long, env = "TCP_PROXY_TRANSPARENT_LISTEN", value_name = "ADDR", value_delimiter = ',', value_parser = parse_listen)]
    pub transparent_listen: Vec<SocketAddr>,

    /// File of upstreams (file-based discovery), watched and reloaded: lines
    /// `HOST:PORT` for the --listen route or `LISTEN=UP1,UP2` per route.
    #[arg(long, env = "TCP_PROXY_UPSTREAMS_FILE", value_name = "FILE")]
    pub upstreams_file: Option<PathBuf>,

    /// How often upstream names are resolved again (0 = only at start-up).
    #[arg(long, env = "TCP_PROXY_DNS_REFRESH", default_value = "5s", value_parser = parse_duration, value_name = "DURATION")]
    pub dns_refresh: Duration,

    /// Load-balancing algorithm [default: round-robin for TCP connections,
    /// ewma for HTTP requests].
    #[arg(long, env = "TCP_PROXY_LB", value_enum)]
    pub lb: Option<Lb>,

    /// What listeners carry: `auto` sniffs each connection's first bytes.
    #[arg(long, env = "TCP_PROXY_PROTOCOL", value_enum, default_value = "auto")]
    pub protocol: Protocol,

    /// In `--protocol auto`, a client silent this long is relayed as TCP (a
    /// server-speaks-first protocol).
    #[arg(long, env = "TCP_PROXY_DETECT_TIMEOUT", default_value = "1s", value_parser = parse_duration, value_name = "DURATION")]
    pub detect_timeout: Duration,

    /// Destination ports never sniffed in `--protocol auto` (listener port, or
    /// original destination port in transparent mode): `PORT` or `LO-HI`, comma separated.
    #[arg(long, env = "TCP_PROXY_OPAQUE_PORTS", value_name = "LIST", default_value = DEFAULT_OPAQUE_PORTS, value_parser = parse_port_ranges)]
    pub opaque_ports: PortRanges,

    /// An HTTP route `[HOST]/PATH_PREFIX=UP1,UP2`; repeatable (env: separate
    /// routes with `;`). Routes naming the request's host come first, then the
    /// longest matching prefix wins; requests matching
    /// none go to the listener's upstreams (transparent: the original destination).
    #[arg(
        long,
        env = "TCP_PROXY_HTTP_ROUTE",
        value_name = "MATCH=UP1,UP2",
        value_delimiter = ';',
        value_parser = parse_http_route
    )]
    pub http_route: Vec<HttpRouteSpec>,

    /// How request paths are made canonical before routing and forwarding,
    /// so a route cannot be bypassed by another spelling of its path
    /// (Istio's levels): `none`, `base` (RFC 3986: dot segments, escaped
    /// unreserved characters, `\`), `merge-slashes` (also `//` made `/`),
    /// `decode-and-merge-slashes` (`%2F` and `%5C` decoded too: for an app
    /// that decodes them, as nginx does, behind routes that guard access).
    #[arg(
        long,
        env = "TCP_PROXY_HTTP_PATH_NORMALIZATION",
        value_enum,
        ignore_case = true,
        default_value = "merge-slashes",
        value_name = "LEVEL"
    )]
    pub http_path_normalization: PathNormalization,

    /// Further attempts of a failed HTTP request, each to another endpoint when there is one.
    #[arg(
        long,
        env = "TCP_PROXY_HTTP_RETRIES",
        default_value_t = 0,
        value_name = "N"
    )]
    pub http_retries: u32,

    /// What an HTTP request is retried on: `connect-failure`, `reset`, status
    /// codes, and Envoy's `5xx`, `gateway-error` and `retriable-4xx`.
    #[arg(
        long,
        env = "TCP_PROXY_HTTP_RETRY_ON",
        value_name = "LIST",
        value_delimiter = ',',
        default_value = "connect-failure",
        value_parser = parse_retry_on
    )]
    pub http_retry_on: Vec<RetryOn>,

    /// Retries may add at most this percentage to the original requests
    /// (plus a reserve of 10), so retries cannot amplify an outage.
    #[arg(
        long,
        env = "TCP_PROXY_HTTP_RETRY_BUDGET",
        default_value_t = 20.0,
        value_name = "PERCENT"
    )]
    pub http_retry_budget: f64,

    /// Answer 504 when an HTTP response has not started within this (0 = off).
    #[arg(long, env = "TCP_PROXY_HTTP_REQUEST_TIMEOUT", default_value = "0", value_parser = parse_duration, value_name = "DURATION")]
    pub http_request_timeout: Duration,

    /// Outstanding HTTP requests per upstream endpoint (0 = unlimited); when
    /// every endpoint is full, answer 503 at once.
    #[arg(
        long,
        env = "TCP_PROXY_MAX_PENDING_REQUESTS",
        default_value_t = 0,
        value_name = "N"
    )]
    pub max_pending_requests: usize,

    /// HTTP requests per HTTP route (and per listener for the rest), as a
    /// token bucket: `100/s`; over it, 429 with Retry-After.
    #[arg(long, env = "TCP_PROXY_HTTP_RATE_LIMIT", value_name = "N/s", value_parser = parse_rate)]
    pub http_rate_limit: Option<Rate>,

    /// Time allowed for one upstream connect.
    #[arg(long, env = "TCP_PROXY_CONNECT_TIMEOUT", default_value = "5s", value_parser = parse_duration, value_name = "DURATION")]
    pub connect_timeout: Duration,

    /// Further connect attempts, each to another endpoint when there is one.
    #[arg(
        long,
        env = "TCP_PROXY_CONNECT_RETRIES",
        default_value_t = 2,
        value_name = "N"
    )]
    pub connect_retries: u32,

    /// Close a relayed connection with no bytes either way, or an HTTP client connection with no
    /// request and no response body moving on, for this long (0 = never).
    #[arg(long, env = "TCP_PROXY_IDLE_TIMEOUT", default_value = "1h", value_parser = parse_duration, value_name = "DURATION")]
    pub idle_timeout: Duration,

    /// Close a connection this long after it was accepted, busy or not (0 = never). An HTTP one
    /// is asked to finish (HTTP/1: after the request in flight; HTTP/2: GOAWAY) and closed
    /// after --idle-timeout more, as Envoy's max_connection_duration drains.
    #[arg(long, env = "TCP_PROXY_MAX_CONNECTION_DURATION", default_value = "0", value_parser = parse_duration, value_name = "DURATION")]
    pub max_connection_duration: Duration,

    /// Threads that carry traffic: 1 (the default, as Linkerd's proxy) runs everything on one
    /// thread, the cheapest per request; 0 takes one per CPU the container may use (its CPU
    /// limit). Without the flag, TOKIO_WORKER_THREADS is honoured.
    #[arg(long, env = "TCP_PROXY_CONCURRENCY", value_name = "N")]
    pub concurrency: Option<usize>,

    /// Open client connections over all routes (0 = unlimited); more are closed at once.
    #[arg(
        long,
        env = "TCP_PROXY_MAX_CONNECTIONS",
        default_value_t = 0,
        value_name = "N"
    )]
    pub max_connections: usize,

    /// Open connections to one upstream endpoint (0 = unlimited).
    #[arg(
        long,
        env = "TCP_PROXY_MAX_CONNECTIONS_PER_UPSTREAM",
        default_value_t = 0,
        value_name = "N"
    )]
    pub max_connections_per_upstream: usize,

    /// New connections per route, as a token bucket: `100/s`, `600/m` (burst = the rate).
    #[arg(long, env = "TCP_PROXY_RATE_LIMIT", value_name = "N/s", value_parser = parse_rate)]
    pub rate_limit: Option<Rate>,

    /// Active TCP health checks of every endpoint at this interval (0 = off).
    #[arg(long, env = "TCP_PROXY_HEALTH_CHECK_INTERVAL", default_value = "0", value_parser = parse_duration, value_name = "DURATION")]
    pub health_check_interval: Duration,

    /// Bytes a health check sends after connecting (escapes: \r \n \t \\ \xHH).
    #[arg(long, env = "TCP_PROXY_HEALTH_CHECK_SEND", value_name = "BYTES", default_value = "", value_parser = parse_payload, hide_default_value = true)]
    pub health_check_send: Payload,

    /// Bytes the answer to a health check must start with (same escapes).
    #[arg(long, env = "TCP_PROXY_HEALTH_CHECK_EXPECT", value_name = "BYTES", default_value = "", value_parser = parse_payload, hide_default_value = true)]
    pub health_check_expect: Payload,

    /// Consecutive failed checks that mark an endpoint unhealthy.
    #[arg(
        long,
        env = "TCP_PROXY_HEALTH_CHECK_UNHEALTHY_THRESHOLD",
        default_value_t = 3,
        value_name = "N"
    )]
    pub health_check_unhealthy_threshold: u32,

    /// Consecutive passed checks that mark it healthy again.
    #[arg(
        long,
        env = "TCP_PROXY_HEALTH_CHECK_HEALTHY_THRESHOLD",
        default_value_t = 2,
        value_name = "N"
    )]
    pub health_check_healthy_threshold: u32,

    /// Consecutive connect failures that eject an endpoint (0 = no ejection).
    #[arg(
        long,
        env = "TCP_PROXY_OUTLIER_FAILURES",
        default_value_t = 5,
        value_name = "N"
    )]
    pub outlier_failures: u32,

    /// Base ejection time, multiplied by the number of recent ejections.
    #[arg(long, env = "TCP_PROXY_OUTLIER_EJECTION_TIME", default_value = "30s", value_parser = parse_duration, value_name = "DURATION")]
    pub outlier_ejection_time: Duration,

    /// Upper bound of the growing ejection time.
    #[arg(long, env = "TCP_PROXY_OUTLIER_MAX_EJECTION_TIME", default_value = "300s", value_parser = parse_duration, value_name = "DURATION")]
    pub outlier_max_ejection_time: Duration,

    /// Send a PROXY protocol header of this version to upstreams.
    #[arg(
        long,
        env = "TCP_PROXY_SEND_PROXY_PROTOCOL",
        value_enum,
        value_name = "v1|v2"
    )]
    pub send_proxy_protocol: Option<Version>,

    /// Expect a PROXY protocol v1 or v2 header on every accepted connection.
    #[arg(long, env = "TCP_PROXY_ACCEPT_PROXY_PROTOCOL")]
    pub accept_proxy_protocol: bool,

    /// Time a client has to send its PROXY protocol header.
    #[arg(long, env = "TCP_PROXY_PROXY_PROTOCOL_TIMEOUT", default_value = "5s", value_parser = parse_duration, value_name = "DURATION")]
    pub proxy_protocol_timeout: Duration,

    /// Our certificate chain (PEM), presented as TLS server and client; read
    /// again when it changes.
    #[arg(long, env = "TCP_PROXY_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert (PEM).
    #[arg(long, env = "TCP_PROXY_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,

    /// CA bundle (PEM) that peers' certificates must chain to.
    #[arg(long, env = "TCP_PROXY_TLS_CA", value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,

    /// TLS on the listeners: `strict` requires a client certificate chained
    /// to --tls-ca; `permissive` also accepts plaintext on the same port (told
    /// apart by the ClientHello); traffic goes on to upstreams in plaintext.
    #[arg(long, env = "TCP_PROXY_TLS_SERVER", value_enum, default_value = "off")]
    pub tls_server: TlsServerMode,

    /// Glob on a client's URI SAN (`spiffe://cluster.local/ns/shop/sa/*`) or
    /// DNS SAN; repeatable; a client matching none is refused (default: any
    /// certificate chained to --tls-ca).
    #[arg(
        long,
        env = "TCP_PROXY_TLS_ALLOW_ID",
        value_name = "PATTERN",
        value_delimiter = ','
    )]
    pub tls_allow_id: Vec<String>,

    /// Connect to upstreams with mutual TLS: present --tls-cert, verify the
    /// server against --tls-ca and its identity (--tls-upstream-id, else the
    /// upstream's host name as DNS SAN).
    #[arg(long, env = "TCP_PROXY_TLS_CLIENT")]
    pub tls_client: bool,

    /// Glob the upstream's URI or DNS SAN must match; repeatable.
    #[arg(
        long,
        env = "TCP_PROXY_TLS_UPSTREAM_ID",
        value_name = "PATTERN",
        value_delimiter = ','
    )]
    pub tls_upstream_id: Vec<String>,

    /// Transparent mode: only original destinations in this CIDR (and port)
    /// get mutual TLS, others stay plaintext; repeatable (default: all).
    #[arg(long, env = "TCP_PROXY_TLS_CLIENT_DEST", value_name = "CIDR[:PORT]", value_delimiter = ',', value_parser = crate::tls::parse_dest)]
    pub tls_client_dest: Vec<crate::tls::Dest>,

    /// Time a TLS handshake may take, either side.
    #[arg(long, env = "TCP_PROXY_TLS_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    pub tls_handshake_timeout: Duration,

    /// JSON access log, one line per closed connection: `off`, `stdout` or a file path.
    #[arg(
        long,
        env = "TCP_PROXY_ACCESS_LOG",
        default_value = "off",
        value_name = "off|stdout|FILE"
    )]
    pub access_log: String,

    /// Relay bulk transfers with splice(2) once a direction has moved this many
    /// bytes (0 = never; small exchanges stay on plain copies).
    #[arg(long, env = "TCP_PROXY_SPLICE_AFTER", default_value = "1MiB", value_parser = parse_bytes, value_name = "BYTES")]
    pub splice_after: u64,
}

/// Bytes given in a flag (a newtype, so clap takes one value, not a list).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Payload(pub Vec<u8>);

/// `PING\r\n` → bytes, with `\r`, `\n`, `\t`, `\\` and `\xHH` escapes, so
/// binary and line-based protocols can be written in a flag.
pub fn parse_payload(s: &str) -> Result<Payload, String> {
    let mut out = Vec::new();
    let mut it = s.bytes();
    while let Some(b) = it.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        match it.next() {
            Some(b'r') => out.push(b'\r'),
            Some(b'n') => out.push(b'\n'),
            Some(b't') => out.push(b'\t'),
            Some(b'\\') => out.push(b'\\'),
            Some(b'x') => {
                let hex: Vec<u8> = it.by_ref().take(2).collect();
                let hex = std::str::from_utf8(&hex).unwrap_or("");
                let v = u8::from_str_radix(hex, 16)
                    .map_err(|_| format!("invalid \\x escape in {s:?}"))?;
                out.push(v);
            }
            _ => {
                return Err(format!(
                    "invalid escape in {s:?}: use \\r \\n \\t \\\\ or \\xHH"
                ))
            }
        }
    }
    Ok(Payload(out))
}

/// Port ranges, inclusive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortRanges(pub Vec<(u16, u16)>);

impl PortRanges {
    pub fn contains(&self, port: u16) -> bool {
        self.0.iter().any(|&(lo, hi)| lo <= port && port <= hi)
    }
}

fn parse_port_ranges(s: &str) -> Result<PortRanges, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || format!("invalid port or range {part:?}: expected PORT or LO-HI");
        let (lo, hi) = part.split_once('-').unwrap_or((part, part));
        let lo: u16 = lo.trim().parse().map_err(|_| bad())?;
        let hi: u16 = hi.trim().parse().map_err(|_| bad())?;
        if lo > hi {
            return Err(bad());
        }
        out.push((lo, hi));
    }
    Ok(PortRanges(out))
}

/// A condition under which an HTTP request is tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryOn {
    /// No connection to the endpoint: nothing was sent, always safe.
    ConnectFailure,
    /// The connection failed after the request was (partly) sent.
    Reset,
    Status(u16),
    /// Envoy's `5xx`: any 5xx answer, a reset or a connect failure.
    Any5xx,
    /// Envoy's `gateway-error`: 502, 503 or 504, a reset or a connect failure.
    GatewayError,
}

impl RetryOn {
    /// Whether this configured condition covers what happened (`event`: a
    /// connect failure, a reset or a status).
    pub fn covers(self, event: RetryOn) -> bool {
        match (self, event) {
            (RetryOn::Any5xx | RetryOn::GatewayError, RetryOn::ConnectFailure | RetryOn::Reset) => {
                true
            }
            (RetryOn::Any5xx, RetryOn::Status(c)) => (500..600).contains(&c),
            (RetryOn::GatewayError, RetryOn::Status(c)) => matches!(c, 502..=504),
            (condition, event) => condition == event,
        }
    }
}

fn parse_retry_on(s: &str) -> Result<RetryOn, String> {
    match s.trim() {
        "connect-failure" => Ok(RetryOn::ConnectFailure),
        "reset" => Ok(RetryOn::Reset),
        "5xx" => Ok(RetryOn::Any5xx),
        "gateway-error" => Ok(RetryOn::GatewayError),
        // Envoy's name for 409 Conflict.
        "retriable-4xx" => Ok(RetryOn::Status(409)),
        code => match code.parse::<u16>() {
            Ok(c) if (100..600).contains(&c) => Ok(RetryOn::Status(c)),
            _ => Err(format!(
                "invalid retry condition {code:?}: expected connect-failure, reset, 5xx, \
                 gateway-error, retriable-4xx or a status code"
            )),
        },
    }
}

/// `[HOST]/PATH_PREFIX=UP1,UP2`.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpRouteSpec {
    /// Lower case, without a port; None matches every host.
    pub host: Option<String>,
    pub prefix: String,
    pub upstreams: Vec<Target>,
}

impl std::fmt::Display for HttpRouteSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}", self.host.as_deref().unwrap_or(""), self.prefix)
    }
}

pub fn parse_http_route(s: &str) -> Result<HttpRouteSpec, String> {
    let bad =
        |why: &str| format!("invalid HTTP route {s:?}: {why}; expected [HOST]/PATH_PREFIX=UP1,UP2");
    let (m, ups) = s.trim().split_once('=').ok_or_else(|| bad("no '='"))?;
    let slash = m
        .find('/')
        .ok_or_else(|| bad("the match needs a path starting with '/'"))?;
    let (host, prefix) = m.split_at(slash);
    let host = match host.trim() {
        "" => None,
        h if h.contains(':') => return Err(bad("HOST is matched without a port")),
        h => Some(h.to_ascii_lowercase()),
    };
    let upstreams = ups
        .split(',')
        .filter(|u| !u.trim().is_empty())
        .map(parse_target)
        .collect::<Result<Vec<_>, _>>()?;
    if upstreams.is_empty() {
        return Err(bad("no upstream"));
    }
    Ok(HttpRouteSpec {
        host,
        prefix: prefix.to_string(),
        upstreams,
    })
}

/// A token-bucket rate: `per_sec` tokens a second, bucket size `burst`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub per_sec: f64,
    pub burst: f64,
}

fn parse_rate(s: &str) -> Result<Rate, String> {
    let bad = || format!("invalid rate {s:?}: expected N/s or N/m, e.g. 100/s");
    let (n, unit) = s.split_once('/').unwrap_or((s, "s"));
    let n: f64 = n.trim().parse().map_err(|_| bad())?;
    let secs = match unit.trim() {
        "s" | "sec" | "second" => 1.0,
        "m" | "min" | "minute" => 60.0,
        "h" | "hour" => 3600.0,
        _ => return Err(bad()),
    };
    if !(n > 0.0 && n.is_finite()) {
        return Err(bad());
    }
    Ok(Rate {
        per_sec: n / secs,
        burst: n.max(1.0),
    })
}

/// One explicit route: a listen address and the upstream targets it balances over.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteSpec {
    pub listen: SocketAddr,
    pub upstreams: Vec<Target>,
}

/// An upstream as written: a host name or IP literal, and a port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    pub host: String,
    pub port: u16,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    if let Some(port) = s.strip_prefix(':') {
        let port: u16 = port
            .parse()
            .map_err(|_| format!("invalid listen address {s:?}"))?;
        return Ok(SocketAddr::from(([0, 0, 0, 0], port)));
    }
    s.parse().map_err(|_| {
        format!("invalid listen address {s:?}: expected IP:PORT, [IPv6]:PORT or :PORT")
    })
}

pub fn parse_target(s: &str) -> Result<Target, String> {
    let s = s.trim();
    let bad = || format!("invalid upstream {s:?}: expected HOST:PORT");
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, p) = rest.split_once("]:").ok_or_else(bad)?;
        (h, p)
    } else {
        s.rsplit_once(':').ok_or_else(bad)?
    };
    let port: u16 = port.parse().map_err(|_| bad())?;
    let valid_host = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'));
    if !valid_host || port == 0 {
        return Err(bad());
    }
    Ok(Target {
        host: host.to_string(),
        port,
    })
}

/// Parses `LISTEN=UP1,UP2`.
pub fn parse_route(s: &str) -> Result<RouteSpec, String> {
    let (listen, ups) = s
        .split_once('=')
        .ok_or_else(|| format!("invalid route {s:?}: expected LISTEN=UP1,UP2"))?;
    let listen = parse_listen(listen)?;
    let upstreams = ups
        .split(',')
        .filter(|u| !u.trim().is_empty())
        .map(parse_target)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RouteSpec { listen, upstreams })
}

/// The content of --upstreams-file: per listen address (None = the --listen route).
pub type FileRoutes = Vec<(Option<SocketAddr>, Vec<Target>)>;

pub fn parse_upstreams_file(text: &str) -> Result<FileRoutes, String> {
    let mut out: FileRoutes = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let entry = if line.contains('=') {
            parse_route(line).map(|r| (Some(r.listen), r.upstreams))
        } else {
            line.split(',')
                .filter(|u| !u.trim().is_empty())
                .map(parse_target)
                .collect::<Result<Vec<_>, _>>()
                .map(|t| (None, t))
        }
        .map_err(|e| format!("line {}: {e}", i + 1))?;
        match out.iter_mut().find(|(l, _)| *l == entry.0) {
            Some((_, ups)) => ups.extend(entry.1),
            None => out.push(entry),
        }
    }
    // A half-written file reads as empty; dropping every upstream is never
    // what a reload means.
    if out.iter().all(|(_, ups)| ups.is_empty()) {
        return Err("lists no upstreams".into());
    }
    Ok(out)
}

/// What the flags ask for, checked.
pub struct Plan {
    pub routes: Vec<RouteSpec>,
    pub transparent: Vec<SocketAddr>,
}

impl Args {
    pub fn plan(&self) -> anyhow::Result<Plan> {
        let mut routes = Vec::new();
        if let Some(listen) = self.listen {
            if self.upstream.is_empty() && self.upstreams_file.is_none() {
                return Err(usage!("--listen needs --upstream or --upstreams-file"));
            }
            routes.push(RouteSpec {
                listen,
                upstreams: self.upstream.clone(),
            });
        } else if !self.upstream.is_empty() {
            return Err(usage!("--upstream needs --listen"));
        }
        routes.extend(self.route.iter().cloned());
        let transparent = self.transparent_listen.clone();
        if routes.is_empty() && transparent.is_empty() {
            return Err(usage!(
                "nothing to proxy: give --listen with --upstream, --route or --transparent-listen"
            ));
        }
        let mut seen: Vec<SocketAddr> = Vec::new();
        for l in routes
            .iter()
            .map(|r| r.listen)
            .chain(transparent.iter().copied())
        {
            if l.port() != 0 && seen.contains(&l) {
                return Err(usage!("listen address {l} is used twice"));
            }
            seen.push(l);
        }
        if self.connect_timeout.is_zero() {
            return Err(usage!("--connect-timeout: must be more than 0"));
        }
        if self.outlier_ejection_time.is_zero() && self.outlier_failures > 0 {
            return Err(usage!("--outlier-ejection-time: must be more than 0"));
        }
        if !(self.http_retry_budget >= 0.0 && self.http_retry_budget.is_finite()) {
            return Err(usage!(
                "--http-retry-budget: must be a percentage of 0 or more"
            ));
        }
        if self.protocol == Protocol::Tcp && !self.http_route.is_empty() {
            return Err(usage!("--http-route needs --protocol auto or http"));
        }
        if self.protocol == Protocol::Http && self.send_proxy_protocol.is_some() {
            return Err(usage!(
                "--send-proxy-protocol needs --protocol auto or tcp: pooled HTTP connections carry \
                 many clients' requests, and a PROXY header names one client"
            ));
        }
        if self.detect_timeout.is_zero() {
            return Err(usage!("--detect-timeout: must be more than 0"));
        }
        if self.health_check_unhealthy_threshold == 0 || self.health_check_healthy_threshold == 0 {
            return Err(usage!("--health-check-*-threshold: must be at least 1"));
        }
        Ok(Plan {
            routes,
            transparent,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(
            parse_target("db.svc:5432").unwrap(),
            Target {
                host: "db.svc".into(),
                port: 5432
            }
        );
        assert_eq!(parse_target("[::1]:80").unwrap().host, "::1");
        assert_eq!(parse_target("[::1]:80").unwrap().to_string(), "[::1]:80");
        assert!(parse_target("nohost").is_err());
        assert!(parse_target("a b:1").is_err());
        assert!(parse_target("x:0").is_err());
    }

    #[test]
    fn routes_and_files() {
        let r = parse_route("127.0.0.1:9000=a:1,b:2").unwrap();
        assert_eq!(r.listen.port(), 9000);
        assert_eq!(r.upstreams.len(), 2);
        assert_eq!(parse_listen(":80").unwrap().port(), 80);
        let f = parse_upstreams_file("# c\na:1\nb:2, c:3\n127.0.0.1:9=d:4\n").unwrap();
        assert_eq!(f.len(), 2);
        assert_eq!(f[0].1.len(), 3);
        assert!(parse_upstreams_file("a:1\nbad\n")
            .unwrap_err()
            .contains("line 2"));
        assert!(parse_upstreams_file("# nothing\n").is_err());
    }

    #[test]
    fn http_routes() {
        let r = parse_http_route("API.shop/v1/=10.0.0.1:8080,b:80").unwrap();
        assert_eq!(r.host.as_deref(), Some("api.shop"));
        assert_eq!(r.prefix, "/v1/");
        assert_eq!(r.upstreams.len(), 2);
        let r = parse_http_route("/static/=static:80").unwrap();
        assert_eq!(r.host, None);
        assert!(parse_http_route("api.shop=a:1").is_err());
        assert!(parse_http_route("api.shop:80/=a:1").is_err());
        assert!(parse_http_route("/=").is_err());
    }

    #[test]
    fn ports_and_retry_conditions() {
        let p = parse_port_ranges(DEFAULT_OPAQUE_PORTS).unwrap();
        assert!(p.contains(6379) && !p.contains(80));
        assert!(parse_port_ranges("1000-1002").unwrap().contains(1001));
        assert!(parse_port_ranges("9-1").is_err());
        assert_eq!(parse_retry_on("503").unwrap(), RetryOn::Status(503));
        assert!(parse_retry_on("sometimes").is_err());
        let any = parse_retry_on("5xx").unwrap();
        assert!(any.covers(RetryOn::Status(500)) && any.covers(RetryOn::Reset));
        assert!(!any.covers(RetryOn::Status(404)));
        let gateway = parse_retry_on("gateway-error").unwrap();
        assert!(gateway.covers(RetryOn::Status(503)) && !gateway.covers(RetryOn::Status(500)));
        assert!(gateway.covers(RetryOn::ConnectFailure));
    }

    #[test]
    fn payload_escapes() {
        assert_eq!(parse_payload("PING\\r\\n").unwrap().0, b"PING\r\n");
        assert_eq!(parse_payload("\\x00\\xff\\\\").unwrap().0, [0, 255, b'\\']);
        assert!(parse_payload("\\q").is_err());
        assert!(parse_payload("\\xZ").is_err());
    }

    #[test]
    fn rates() {
        assert_eq!(parse_rate("100/s").unwrap().per_sec, 100.0);
        assert_eq!(parse_rate("60/m").unwrap().per_sec, 1.0);
        assert!(parse_rate("0/s").is_err());
        assert!(parse_rate("fast").is_err());
    }
}
