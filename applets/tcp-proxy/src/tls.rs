//! Mutual TLS between sidecars: termination on the listeners (before
//! anything else reads the client's bytes; the upstream, the local app, then
//! gets plaintext) and origination towards upstreams. The material and its
//! reloads come from `sidecar_runtime::tls`; this module only decides when
//! TLS applies and counts handshakes by outcome.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use ipnet::IpNet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use sidecar_runtime::prometheus_client;
use sidecar_runtime::tls::rustls::pki_types::ServerName;
use sidecar_runtime::tls::rustls::{ClientConfig, ServerConfig};
use sidecar_runtime::tls::{
    self as rt, ClientAuth, Identities, Material, PemFile, TlsFiles, TlsMetrics,
};
use sidecar_runtime::usage;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::{client, server, TlsAcceptor, TlsConnector};

use crate::config::{Args, TlsServerMode};
use crate::prefixed::Prefixed;

/// The first byte of a TLS handshake record (a ClientHello).
const TLS_HANDSHAKE: u8 = 0x16;

/// A destination that gets mutual TLS in transparent mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dest {
    net: IpNet,
    port: Option<u16>,
}

impl Dest {
    fn contains(&self, addr: SocketAddr) -> bool {
        self.net.contains(&addr.ip()) && self.port.is_none_or(|p| p == addr.port())
    }
}

/// `CIDR`, `CIDR:PORT`, or for IPv6 with a port `[CIDR]:PORT`.
pub fn parse_dest(s: &str) -> Result<Dest, String> {
    let bad = |e: String| {
        format!("invalid destination {s:?}: {e} (expected CIDR[:PORT], e.g. 10.0.0.0/8:8080 or [fd00::/8]:443)")
    };
    let (net, port) = if let Some(rest) = s.strip_prefix('[') {
        let (net, port) = rest
            .split_once("]:")
            .ok_or_else(|| bad("missing ]:PORT".into()))?;
        (net, Some(port))
    } else if s.matches(':').count() == 1 {
        let (net, port) = s.split_once(':').expect("one colon");
        (net, Some(port))
    } else {
        (s, None)
    };
    let net: IpNet = net.parse().map_err(|e| bad(format!("{e}")))?;
    let port = port
        .map(|p| p.parse::<u16>().map_err(|e| bad(format!("port: {e}"))))
        .transpose()?;
    Ok(Dest {
        net: net.trunc(),
        port,
    })
}

/// What the TLS flags ask for, checked: the files and identity patterns.
struct Wanted {
    files: TlsFiles,
    allow: Identities,
    expect: Identities,
}

/// Validates the TLS flags; None when no TLS is asked for.
fn wanted(args: &Args) -> anyhow::Result<Option<Wanted>> {
    let server_on = args.tls_server != TlsServerMode::Off;
    let wanted = server_on || args.tls_client;
    let named = |flag: &str, set: bool| {
        if set && !wanted {
            Err(usage!(
                "{flag} needs --tls-server strict|permissive or --tls-client"
            ))
        } else {
            Ok(())
        }
    };
    named("--tls-cert", args.tls_cert.is_some())?;
    named("--tls-key", args.tls_key.is_some())?;
    named("--tls-ca", args.tls_ca.is_some())?;
    named("--tls-allow-id", !args.tls_allow_id.is_empty())?;
    if !args.tls_upstream_id.is_empty() && !args.tls_client {
        return Err(usage!("--tls-upstream-id needs --tls-client"));
    }
    if !args.tls_client_dest.is_empty() && !args.tls_client {
        return Err(usage!("--tls-client-dest needs --tls-client"));
    }
    if !wanted {
        return Ok(None);
    }
    let need = |flag: &'static str, v: &Option<std::path::PathBuf>| {
        v.clone()
            .map(|p| PemFile::new(p, flag))
            .ok_or_else(|| usage!("{flag} is required with --tls-server or --tls-client"))
    };
    Ok(Some(Wanted {
        files: TlsFiles {
            cert: need("--tls-cert", &args.tls_cert)?,
            key: need("--tls-key", &args.tls_key)?,
            ca: Some(need("--tls-ca", &args.tls_ca)?),
        },
        allow: Identities::parse(&args.tls_allow_id, "--tls-allow-id")?,
        expect: Identities::parse(&args.tls_upstream_id, "--tls-upstream-id")?,
    }))
}

/// `--check`: the flags, and that the files load and the key matches.
pub fn check(args: &Args) -> anyhow::Result<()> {
    if let Some(w) = wanted(args)? {
        Material::check(&w.files)?;
    }
    Ok(())
}

/// `--check` only: our certificate is valid now.
pub fn check_validity(args: &Args) -> anyhow::Result<()> {
    match wanted(args)? {
        Some(w) => Material::check_validity(&w.files),
        None => Ok(()),
    }
}

/// TLS as the flags set it up: what listeners accept and what upstream
/// connections present.
pub struct Tls {
    server: Option<(TlsAcceptor, TlsServerMode)>,
    client: Option<Connectors>,
    client_dests: Vec<Dest>,
    handshake_timeout: Duration,
    /// Permissive mode: how long a silent client may take before it is
    /// taken for plaintext (--detect-timeout).
    detect_timeout: Duration,
    /// --tls-allow-id, to name the identity a client was admitted by.
    allow: Identities,
    handshakes: Family<Vec<(&'static str, String)>, Counter>,
}

/// The ALPN protocol of a sidecar's TCP relay to its peer.
const ALPN_OPAQUE: &[u8] = b"sidecar-tcp";
/// What listeners accept by ALPN: HTTP/2, HTTP/1.1, a peer's TCP relay.
const SERVER_ALPN: &[&[u8]] = &[b"h2", b"http/1.1", ALPN_OPAQUE];

/// What an upstream connection carries, which ALPN announces: a relay of
/// opaque bytes offers `sidecar-tcp` (the peer sidecar relays it as it is,
/// as Linkerd's `transport.l5d.io/v1` tells its peer; other TLS servers
/// ignore a protocol they do not know), HTTP requests offer the version
/// they are sent in (HTTP/2 with HTTP/1.1 as the fallback).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alpn {
    Opaque,
    H2,
    Http1,
}

struct Connectors {
    opaque: TlsConnector,
    h2: TlsConnector,
    http1: TlsConnector,
}

/// TLS over an accepted socket (behind bytes read before the handshake).
pub type ServerStream = server::TlsStream<Prefixed<SharedTcp>>;
/// TLS over a socket to an upstream.
pub type ClientStream = client::TlsStream<SharedTcp>;

/// What a terminated connection tells: the stream, the client
/// certificate's identities and the protocol agreed by ALPN.
pub struct Terminated {
    pub stream: ServerStream,
    /// The client certificate's identity that --tls-allow-id admitted.
    pub peer_id: Option<String>,
    pub alpn: Option<Vec<u8>>,
}

impl Terminated {
    /// ALPN chose HTTP/1.1 or HTTP/2 (not a peer's TCP relay, `sidecar-tcp`).
    pub fn is_http(&self) -> bool {
        matches!(self.alpn.as_deref(), Some(b"h2" | b"http/1.1"))
    }
}

impl Tls {
    /// Loads the material (watched for changes) when a flag asks for TLS.
    /// Errors are usage errors naming the flag.
    pub fn from_args(args: &Args, registry: &mut Registry) -> anyhow::Result<Option<Arc<Tls>>> {
        let Some(Wanted {
            files,
            allow,
            expect,
        }) = wanted(args)?
        else {
            return Ok(None);
        };
        let prefixed = registry.sub_registry_with_prefix("tcp_proxy");
        let material = Material::load_watched(files, TlsMetrics::register(prefixed))?;
        let handshakes = Family::default();
        prefixed.register(
            "tls_handshakes",
            "TLS handshakes by route, side (server: with clients; client: with upstreams) and result (ok, plaintext in permissive mode, or why it failed)",
            handshakes.clone(),
        );

        let server = match args.tls_server {
            TlsServerMode::Off => None,
            // Permissive asks for a certificate but lets a client without one
            // in: plaintext clients are let in too, so TLS without a
            // certificate is no weaker.
            mode => {
                let auth = if mode == TlsServerMode::Strict {
                    ClientAuth::Required
                } else {
                    ClientAuth::Optional
                };
                let config: Arc<ServerConfig> =
                    material.server_config(auth, allow.clone(), SERVER_ALPN)?;
                Some((TlsAcceptor::from(config), mode))
            }
        };
        let client = if args.tls_client {
            let connector = |alpn: &[&[u8]]| -> anyhow::Result<TlsConnector> {
                let config: Arc<ClientConfig> = material.client_config(expect.clone(), alpn)?;
                Ok(TlsConnector::from(config))
            };
            Some(Connectors {
                opaque: connector(&[ALPN_OPAQUE])?,
                // An upstream that speaks HTTP/1.1 only picks it, and gets
                // the HTTP/2 requests translated.
                h2: connector(&[b"h2", b"http/1.1"])?,
                http1: connector(&[b"http/1.1"])?,
            })
        } else {
            None
        };
        Ok(Some(Arc::new(Tls {
            server,
            client,
            client_dests: args.tls_client_dest.clone(),
            handshake_timeout: args.tls_handshake_timeout,
            detect_timeout: args.detect_timeout,
            allow,
            handshakes,
        })))
    }

    fn count(&self, route: &str, side: &'static str, result: &str) {
        self.handshakes
            .get_or_create(&vec![
                ("route", route.to_string()),
                ("side", side.to_string()),
                ("result", result.to_string()),
            ])
            .inc();
    }

    /// Terminates TLS on an accepted connection whose first bytes (after a
    /// PROXY header) are `early` (taken when TLS is spoken). Ok(None): the connection is plaintext
    /// (permissive mode, not a ClientHello) and goes on as is. Err: the
    /// reason it is refused, prefixed `tls_`.
    pub async fn accept(
        &self,
        client: &Arc<TcpStream>,
        early: &mut Vec<u8>,
        route: &str,
    ) -> Result<Option<Terminated>, &'static str> {
        let Some((acceptor, mode)) = &self.server else {
            return Ok(None);
        };
        if *mode == TlsServerMode::Permissive
            && !self.starts_with_client_hello(client, early).await?
        {
            self.count(route, "server", "plaintext");
            return Ok(None);
        }
        let io = Prefixed::new(std::mem::take(early), SharedTcp(client.clone()));
        match tokio::time::timeout(self.handshake_timeout, acceptor.accept(io)).await {
            Ok(Ok(stream)) => {
                let conn = stream.get_ref().1;
                let peer_id = self
                    .allow
                    .admitted(&rt::peer_certificate_identities(conn.peer_certificates()));
                let alpn = conn.alpn_protocol().map(<[u8]>::to_vec);
                self.count(route, "server", "ok");
                Ok(Some(Terminated {
                    stream,
                    peer_id,
                    alpn,
                }))
            }
            Ok(Err(e)) => {
                let reason = rt::failure_reason(&e);
                tracing::debug!(route, reason, error = %e, "TLS handshake with a client failed");
                self.count(route, "server", reason);
                Err(server_refusal(reason))
            }
            Err(_) => {
                self.count(route, "server", "timeout");
                Err("tls_timeout")
            }
        }
    }

    /// Permissive mode: whether the client's first byte opens a TLS
    /// handshake. Peeked, so a plaintext client's bytes stay in the socket.
    async fn starts_with_client_hello(
        &self,
        client: &TcpStream,
        early: &[u8],
    ) -> Result<bool, &'static str> {
        if let Some(&b) = early.first() {
            return Ok(b == TLS_HANDSHAKE);
        }
        let mut first = [0u8; 1];
        // A client that says nothing within the timeout is plaintext: a
        // server-speaks-first protocol must still work.
        match tokio::time::timeout(self.detect_timeout, client.peek(&mut first)).await {
            Err(_) => Ok(false),
            Ok(Ok(0)) => Err("tls_closed"),
            Ok(Ok(_)) => Ok(first[0] == TLS_HANDSHAKE),
            Ok(Err(_)) => Err("tls_closed"),
        }
    }

    /// Whether connections to `dst` are made with TLS: always with
    /// --tls-client, unless --tls-client-dest narrows it (transparent
    /// capture, where most destinations are outside the mesh).
    pub fn originates_to(&self, dst: SocketAddr) -> bool {
        self.client.is_some()
            && (self.client_dests.is_empty() || self.client_dests.iter().any(|d| d.contains(dst)))
    }

    /// TLS towards an upstream reached at `addr`, named `host` (a DNS name
    /// or an address: what its certificate must name when no
    /// --tls-upstream-id is given).
    pub async fn connect(
        &self,
        upstream: &Arc<TcpStream>,
        host: &str,
        addr: SocketAddr,
        route: &str,
        alpn: Alpn,
    ) -> Result<ClientStream, &'static str> {
        let connectors = self.client.as_ref().expect("originates_to said yes");
        let connector = match alpn {
            Alpn::Opaque => &connectors.opaque,
            Alpn::H2 => &connectors.h2,
            Alpn::Http1 => &connectors.http1,
        };
        let name = match host.parse::<IpAddr>() {
            Ok(ip) => ServerName::IpAddress(ip.into()),
            Err(_) => ServerName::try_from(host.to_string())
                .unwrap_or(ServerName::IpAddress(addr.ip().into())),
        };
        match tokio::time::timeout(
            self.handshake_timeout,
            connector.connect(name, SharedTcp(upstream.clone())),
        )
        .await
        {
            Ok(Ok(s)) => {
                self.count(route, "client", "ok");
                Ok(s)
            }
            Ok(Err(e)) => {
                let reason = rt::failure_reason(&e);
                tracing::warn!(route, upstream = %addr, reason, error = %e, "TLS handshake with an upstream failed");
                self.count(route, "client", reason);
                Err("upstream_tls")
            }
            Err(_) => {
                self.count(route, "client", "timeout");
                Err("upstream_tls")
            }
        }
    }
}

/// The reason label a refused client is counted under.
fn server_refusal(reason: &str) -> &'static str {
    match reason {
        "no_client_cert" => "tls_no_client_cert",
        "identity" => "tls_identity",
        "untrusted_cert" => "tls_untrusted_cert",
        "expired_cert" => "tls_expired_cert",
        "bad_cert" => "tls_bad_cert",
        "no_common_alpn" => "tls_no_common_alpn",
        "io" => "tls_io",
        _ => "tls_handshake",
    }
}

/// The host part of an endpoint's `HOST:PORT` target (brackets removed).
pub fn target_host(target: &str) -> &str {
    let host = target.rsplit_once(':').map_or(target, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// A shared socket as an async stream: TLS reads and writes through this
/// while the connection's task keeps a handle to reset the socket (RST on
/// shutdown or failure, as the plain relay does).
pub struct SharedTcp(pub Arc<TcpStream>);

impl AsyncRead for SharedTcp {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            ready!(self.0.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            let room = unfilled.len();
            match crate::relay::read_draining(&self.0, room, || self.0.try_read(unfilled)) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for SharedTcp {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.0.poll_write_ready(cx))?;
            match self.0.try_write(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                r => return Poll::Ready(r),
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // ENOTCONN: the peer is gone already; the relay sees that elsewhere.
        let _ = socket2::SockRef::from(&*self.0).shutdown(std::net::Shutdown::Write);
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations() {
        let d = parse_dest("10.0.0.0/8:8080").unwrap();
        assert!(d.contains("10.1.2.3:8080".parse().unwrap()));
        assert!(!d.contains("10.1.2.3:8081".parse().unwrap()));
        assert!(!d.contains("11.1.2.3:8080".parse().unwrap()));
        let any_port = parse_dest("127.0.0.1/32").unwrap();
        assert!(any_port.contains("127.0.0.1:1".parse().unwrap()));
        let v6 = parse_dest("[fd00::/8]:443").unwrap();
        assert!(v6.contains("[fd00::1]:443".parse().unwrap()));
        assert!(parse_dest("fd00::/8")
            .unwrap()
            .contains("[fd00::1]:1".parse().unwrap()));
        assert!(parse_dest("10.0.0.0/33")
            .unwrap_err()
            .contains("CIDR[:PORT]"));
        assert!(parse_dest("10.0.0.0/8:http").is_err());
    }

    #[test]
    fn target_hosts() {
        assert_eq!(target_host("api.shop:8443"), "api.shop");
        assert_eq!(target_host("[::1]:8443"), "::1");
        assert_eq!(target_host("127.0.0.1:1"), "127.0.0.1");
    }
}
