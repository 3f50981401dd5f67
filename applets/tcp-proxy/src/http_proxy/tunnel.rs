//! Requests that become tunnels: `CONNECT` (we open the TCP connection to
//! the chosen endpoint and answer 200) and HTTP/1 `Upgrade` such as
//! WebSocket (the upstream answers 101). Afterwards bytes flow both ways
//! untouched.

use std::io;
use std::net::SocketAddr;

use http::{header, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use super::upstream::Connector;
use super::{downstream_response, Body, Target};

/// An HTTP/1 Upgrade other than `h2c` (curl --http2 asks for that on
/// plain connections; the request is served as HTTP/1.1 instead, which the
/// RFC allows, so it stays balanced per request).
pub fn is_upgrade<B>(req: &Request<B>) -> bool {
    let to = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    req.version() <= http::Version::HTTP_11
        && !to.is_empty()
        && !to.trim().eq_ignore_ascii_case("h2c")
        && req
            .headers()
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

pub async fn connect(
    connector: &Connector,
    addr: SocketAddr,
    mut req: Request<Incoming>,
) -> io::Result<Response<Body>> {
    let upstream = connector
        .connect_stream(addr, crate::tls::Alpn::Opaque)
        .await?;
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(client) => splice(client, upstream).await,
            Err(e) => tracing::debug!(error = %e, "CONNECT tunnel not established"),
        }
    });
    Ok(Response::new(Body::full("")))
}

pub async fn upgrade(
    connector: &Connector,
    addr: SocketAddr,
    mut req: Request<Incoming>,
) -> io::Result<Response<Body>> {
    let mut sender = connector.handshake_h1(addr).await?;
    let client_upgrade = hyper::upgrade::on(&mut req);
    let target = Target::of(&req);
    let mut up_req = req.map(Body::Incoming);
    target.prepare(&mut up_req, false, addr);
    let mut resp = sender
        .send_request(up_req)
        .await
        .map_err(io::Error::other)?;
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        return Ok(downstream_response(resp.map(Body::Incoming)));
    }
    let upstream_upgrade = hyper::upgrade::on(&mut resp);
    tokio::spawn(async move {
        match tokio::try_join!(client_upgrade, upstream_upgrade) {
            Ok((client, upstream)) => splice(client, TokioIo::new(upstream)).await,
            Err(e) => tracing::debug!(error = %e, "upgrade not completed"),
        }
    });
    let (parts, _) = resp.into_parts();
    Ok(Response::from_parts(parts, Body::full("")))
}

async fn splice<U>(client: hyper::upgrade::Upgraded, upstream: U)
where
    U: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut client = TokioIo::new(client);
    let mut upstream = upstream;
    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        tracing::debug!(error = %e, "tunnel closed with an error");
    }
}
