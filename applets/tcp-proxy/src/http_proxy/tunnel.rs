//! Requests that become tunnels: `CONNECT` (we open the TCP connection to
//! the chosen endpoint and answer 200) and HTTP/1 `Upgrade` such as
//! WebSocket (the upstream answers 101). Afterwards bytes flow both ways
//! untouched. Over HTTP/1 the client's connection becomes the tunnel (a
//! hyper upgrade); over HTTP/2 the CONNECT stream does.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use h2::{RecvStream, SendStream};
use http::{header, Request, Response, StatusCode, Version};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::upstream::{Connector, UpstreamIo};
use super::{downstream_response, Activity, Body, Target};

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

/// An HTTP/1 tunnel to be: the client's connection once hyper has handed
/// it over, and the endpoint's. The connection's task runs it (see
/// `HttpProxy::serve`), so a tunnel stays a connection: counted, limited,
/// drained at shutdown, timed out when idle or too old.
pub type Pending = Pin<Box<dyn Future<Output = Option<(Io, Io)>> + Send>>;
/// Either end of a tunnel (a byte stream, as an upstream's is).
pub type Io = UpstreamIo;

/// Where an HTTP/1 request leaves the tunnel it became, for its connection.
pub type Slot = std::sync::Mutex<Option<Pending>>;

pub async fn connect(
    connector: &Connector,
    addr: SocketAddr,
    route: &str,
    mut req: Request<Body>,
    slot: &Slot,
) -> io::Result<Response<Body>> {
    let upstream = connector
        .connect_stream(addr, crate::tls::Alpn::Opaque, route)
        .await?;
    if req.version() == Version::HTTP_2 {
        // The HTTP/2 server answers 200 and splices the stream with it.
        return Ok(Response::new(Body::Tunnel(upstream)));
    }
    let on_upgrade = hyper::upgrade::on(&mut req);
    leave(
        slot,
        Box::pin(async move {
            match on_upgrade.await {
                Ok(client) => Some((Box::new(TokioIo::new(client)) as Io, upstream)),
                Err(e) => {
                    tracing::debug!(error = %e, "CONNECT tunnel not established");
                    None
                }
            }
        }),
    );
    Ok(Response::new(Body::full("")))
}

pub async fn upgrade(
    connector: &Connector,
    addr: SocketAddr,
    route: &str,
    mut req: Request<Body>,
    slot: &Slot,
) -> io::Result<Response<Body>> {
    let mut sender = connector.handshake_h1(addr, route).await?;
    let client_upgrade = hyper::upgrade::on(&mut req);
    let target = Target::of(&req);
    let mut up_req = req;
    target.prepare(&mut up_req, false, addr);
    let mut resp = sender
        .send_request(up_req)
        .await
        .map_err(io::Error::other)?;
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        return Ok(downstream_response(resp.map(Body::Incoming)));
    }
    let upstream_upgrade = hyper::upgrade::on(&mut resp);
    leave(
        slot,
        Box::pin(async move {
            match tokio::try_join!(client_upgrade, upstream_upgrade) {
                Ok((client, upstream)) => Some((
                    Box::new(TokioIo::new(client)) as Io,
                    Box::new(TokioIo::new(upstream)) as Io,
                )),
                Err(e) => {
                    tracing::debug!(error = %e, "upgrade not completed");
                    None
                }
            }
        }),
    );
    let (parts, _) = resp.into_parts();
    Ok(Response::from_parts(parts, Body::full("")))
}

fn leave(slot: &Slot, pending: Pending) {
    *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(pending);
}

/// Relays both ways until both directions end; each read touches the
/// connection's activity, so an idle timeout sees a tunnel in use.
pub async fn relay(client: Io, upstream: Io, activity: Arc<Activity>) {
    let client = Touching {
        io: client,
        activity,
    };
    splice(client, upstream).await;
}

/// A tunnel end whose reads count as activity.
struct Touching {
    io: Io,
    activity: Arc<Activity>,
}

impl AsyncRead for Touching {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.touch();
        }
        polled
    }
}

impl AsyncWrite for Touching {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

async fn splice<C, U>(mut client: C, mut upstream: U)
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        tracing::debug!(error = %e, "tunnel closed with an error");
    }
}

/// Relays between an HTTP/2 client's CONNECT stream, answered already, and
/// the endpoint, until both directions end.
pub async fn splice_stream(
    upstream: UpstreamIo,
    send: SendStream<Bytes>,
    recv: RecvStream,
    activity: Arc<Activity>,
) {
    let client = StreamIo {
        send,
        recv,
        unread: Bytes::new(),
    };
    relay(Box::new(client), upstream, activity).await;
}

/// An HTTP/2 stream as a byte stream: its DATA frames each way, END_STREAM
/// as the end of a direction.
struct StreamIo {
    send: SendStream<Bytes>,
    recv: RecvStream,
    /// The part of the last DATA frame not read yet.
    unread: Bytes,
}

impl StreamIo {
    /// The error that ends the stream: the peer's reset, else a closed one.
    fn poll_ended(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        Poll::Ready(match ready!(self.send.poll_reset(cx)) {
            Ok(reason) => io::Error::new(io::ErrorKind::ConnectionReset, h2::Error::from(reason)),
            Err(e) => io::Error::other(e),
        })
    }
}

impl AsyncRead for StreamIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.unread.is_empty() {
            match ready!(this.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    let _ = this.recv.flow_control().release_capacity(data.len());
                    this.unread = data;
                }
                // RST_STREAM NO_ERROR: the client is done sending.
                Some(Err(e)) if e.reason() == Some(h2::Reason::NO_ERROR) => {}
                Some(Err(e)) => return Poll::Ready(Err(io::Error::other(e))),
                None => {}
            }
        }
        let n = buf.remaining().min(this.unread.len());
        buf.put_slice(&this.unread.split_to(n));
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for StreamIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let this = &mut *self;
        this.send.reserve_capacity(buf.len());
        let sent = match ready!(this.send.poll_capacity(cx)) {
            Some(Ok(n)) => {
                let n = n.min(buf.len());
                this.send
                    .send_data(Bytes::copy_from_slice(&buf[..n]), false)
                    .ok()
                    .map(|()| n)
            }
            Some(Err(_)) | None => None,
        };
        match sent {
            Some(n) => Poll::Ready(Ok(n)),
            None => this.poll_ended(cx).map(Err),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.send.send_data(Bytes::new(), true).is_ok() {
            return Poll::Ready(Ok(()));
        }
        this.poll_ended(cx).map(Err)
    }
}
