//! Client connections speaking HTTP/2 go through the h2 crate directly
//! rather than hyper's server. hyper spawns a task per stream that runs the
//! service, sends the response and pipes its body, each step waking the
//! connection's task in turn; here each stream is a future that the
//! connection's own task polls, so a request costs no spawn, and what its
//! stream queues is written by the same task's next turn.
//!
//! What hyper's server did is kept: its settings (windows, 200 concurrent
//! streams, h2's limits on resets, which stop a rapid-reset flood), `date`
//! on a response without one, content-length from a body of known size, no
//! connection-specific headers on responses, a stream the client resets
//! dropping its request, CONNECT answered by a tunnel over the stream, and
//! graceful shutdown by GOAWAY.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::SystemTime;

use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};
use h2::server::{Handshake, SendResponse};
use h2::{Reason, RecvStream};
use http::{header, HeaderValue, Method, Request, Response};
use hyper::body::Body as _;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};

use super::coalesce::Coalesced;
use super::h2_body::{content_length, H2Body, Pipe};
use super::upstream::BoxError;
use super::{tunnel, Activity, Body, ConnInfo, HttpProxy};
use crate::detect::H2_PREFACE;
use crate::prefixed::Prefixed;

/// hyper's HTTP/2 server settings, kept, but for what one connection may
/// make us hold: a client that opens every stream it may and reads none of
/// the responses pins the streams' send buffers (and their upstream
/// connections' read buffers, see `upstream::MAX_BUF`). hyper's 400 KiB ×
/// 200 streams came to 150 MB per connection; 64 KiB × 100 (nginx allows
/// 128, Envoy's edge guide 100) to about 19 MB (measured).
const STREAM_WINDOW: u32 = 1024 * 1024;
const CONN_WINDOW: u32 = 1024 * 1024;
const MAX_FRAME_SIZE: u32 = 16 * 1024;
const MAX_HEADER_LIST_SIZE: u32 = 16 * 1024;
const MAX_SEND_BUFFER: usize = 64 * 1024;
const MAX_CONCURRENT_STREAMS: u32 = 100;
const MAX_LOCAL_ERROR_RESETS: usize = 1024;
const MAX_PENDING_ACCEPT_RESETS: usize = 20;
/// Rounds of new streams one turn of the connection's task takes before it
/// lets other tasks run.
const ACCEPT_ROUNDS: usize = 16;

/// Whether the client speaks HTTP/2 (its first bytes are the preface), and
/// the stream with those bytes put back. As hyper's `auto` server decided:
/// anything else, or a close before the whole preface, is HTTP/1.
pub async fn sniff<I: AsyncRead + Unpin>(mut io: I) -> io::Result<(bool, Prefixed<I>)> {
    let mut first = Vec::with_capacity(H2_PREFACE.len());
    // Bounded: each round reads more bytes, or ends.
    while first.len() < H2_PREFACE.len() && H2_PREFACE.starts_with(&first) {
        if io.read_buf(&mut first).await? == 0 {
            break;
        }
    }
    Ok((first.starts_with(H2_PREFACE), Prefixed::new(first, io)))
}

type StreamFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// One client connection, served until it closes.
pub struct Connection<I> {
    state: State<I>,
    streams: FuturesUnordered<StreamFuture>,
    /// Graceful shutdown was asked for during the handshake.
    closing: bool,
    proxy: Arc<HttpProxy>,
    conn: Arc<ConnInfo>,
    activity: Arc<Activity>,
}

enum State<I> {
    Handshaking(Handshake<Coalesced<I>, Bytes>),
    Serving(h2::server::Connection<Coalesced<I>, Bytes>),
}

impl<I: AsyncRead + AsyncWrite + Unpin + Send + 'static> Connection<I> {
    pub fn new(io: I, proxy: Arc<HttpProxy>, conn: Arc<ConnInfo>, activity: Arc<Activity>) -> Self {
        let mut builder = h2::server::Builder::new();
        builder
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONN_WINDOW)
            .max_frame_size(MAX_FRAME_SIZE)
            .max_header_list_size(MAX_HEADER_LIST_SIZE)
            .max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESETS))
            .max_send_buffer_size(MAX_SEND_BUFFER)
            .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
            // Rapid reset (CVE-2023-44487): past this many streams opened and
            // reset before we accepted them, the connection gets GOAWAY
            // ENHANCE_YOUR_CALM (h2's default, pinned).
            .max_pending_accept_reset_streams(MAX_PENDING_ACCEPT_RESETS);
        Connection {
            state: State::Handshaking(builder.handshake(Coalesced::h2(io))),
            streams: FuturesUnordered::new(),
            closing: false,
            proxy,
            conn,
            activity,
        }
    }

    /// GOAWAY: the streams open finish, new ones are refused, then the
    /// connection closes.
    pub fn graceful_shutdown(&mut self) {
        match &mut self.state {
            State::Handshaking(_) => self.closing = true,
            State::Serving(c) => c.graceful_shutdown(),
        }
    }

    fn poll_serving(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), h2::Error>> {
        let State::Serving(conn) = &mut self.state else {
            unreachable!("called once the handshake is done")
        };
        for _ in 0..ACCEPT_ROUNDS {
            // The streams first: what they queue is written by the
            // connection's poll below, in the same turn.
            while let Poll::Ready(Some(())) = self.streams.poll_next_unpin(cx) {}
            let mut accepted = false;
            // Bounded by the concurrent streams h2 admits.
            loop {
                match conn.poll_accept(cx) {
                    Poll::Ready(Some(Ok((req, respond)))) => {
                        let (proxy, info) = (self.proxy.clone(), self.conn.clone());
                        let activity = self.activity.clone();
                        self.streams
                            .push(Box::pin(stream(proxy, info, activity, req, respond)));
                        accepted = true;
                    }
                    Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e)),
                    Poll::Ready(None) => return Poll::Ready(Ok(())),
                    Poll::Pending => break,
                }
            }
            if !accepted {
                return Poll::Pending;
            }
        }
        // New streams kept coming: come back after the other ready tasks.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl<I: AsyncRead + AsyncWrite + Unpin + Send + 'static> Future for Connection<I> {
    type Output = Result<(), h2::Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        if let State::Handshaking(hs) = &mut this.state {
            let mut conn = ready!(Pin::new(hs).poll(cx))?;
            if this.closing {
                conn.graceful_shutdown();
            }
            this.state = State::Serving(conn);
        }
        this.poll_serving(cx)
    }
}

/// One stream: the request handled, the response sent and its body piped.
async fn stream(
    proxy: Arc<HttpProxy>,
    conn: Arc<ConnInfo>,
    activity: Arc<Activity>,
    req: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
) {
    let in_flight = activity.started();
    let (head, recv) = req.into_parts();
    // `Expect: 100-continue` is answered here (the header is not passed
    // on, see `headers::strip_hop_by_hop`): at once, as Envoy does, rather
    // than leave the client to its expect timeout.
    if head
        .headers
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
    {
        let mut continue_ = Response::new(());
        *continue_.status_mut() = http::StatusCode::CONTINUE;
        let _ = respond.send_informational(continue_);
    }
    // CONNECT: the stream becomes the tunnel, the request has no body.
    let (body, tunnel_recv) = if head.method == Method::CONNECT {
        // RFC 9113 8.5: a CONNECT request has no content; one that says
        // otherwise is malformed, a stream error of type PROTOCOL_ERROR.
        if content_length(&head.headers).is_some_and(|n| n != 0) {
            respond.send_reset(Reason::PROTOCOL_ERROR);
            return;
        }
        (Body::full(Bytes::new()), Some(recv))
    } else {
        (Body::H2(H2Body::request(recv, &head.headers)), None)
    };
    let handled = proxy.handle(Request::from_parts(head, body), &conn);
    tokio::pin!(handled);
    // A client's RST_STREAM drops the request (and with it its upstream
    // stream) while the response is awaited.
    let answered = std::future::poll_fn(|cx| {
        if let Poll::Ready(resp) = handled.as_mut().poll(cx) {
            return Poll::Ready(Some(resp));
        }
        respond.poll_reset(cx).map(|_| None)
    })
    .await;
    // Answered: the request no longer keeps the connection busy, as when
    // hyper's service returned.
    drop(in_flight);
    let Some(resp) = answered else {
        tracing::debug!("client reset an HTTP/2 stream before its response");
        return;
    };
    let (mut head, body) = resp.into_parts();
    // TE is the one hop-by-hop header `headers::strip_hop_by_hop` keeps (a
    // request's `te: trailers`); HTTP/2 forbids it in responses.
    head.headers.remove(header::TE);
    if !head.headers.contains_key(header::DATE) {
        head.headers.insert(header::DATE, date());
    }
    let body = match (body, tunnel_recv) {
        (Body::Tunnel(upstream), Some(recv)) => {
            match respond.send_response(Response::from_parts(head, ()), false) {
                Ok(send) => tunnel::splice_stream(upstream, send, recv, activity).await,
                Err(e) => refused(&mut respond, e),
            }
            return;
        }
        (body, _) => body,
    };
    let eos = body.is_end_stream();
    if !eos {
        if let Some(n) = body.size_hint().exact() {
            head.headers
                .entry(header::CONTENT_LENGTH)
                .or_insert_with(|| HeaderValue::from(n));
        }
    }
    match respond.send_response(Response::from_parts(head, ()), eos) {
        Ok(send) if !eos => Pipe::new(body, send, reset_reason, Some(activity)).await,
        Ok(_) => {}
        Err(e) => refused(&mut respond, e),
    }
}

fn refused(respond: &mut SendResponse<Bytes>, e: h2::Error) {
    tracing::debug!(error = %e, "HTTP/2 response not sent");
    respond.send_reset(Reason::INTERNAL_ERROR);
}

/// The RST_STREAM code for a response body that failed, as hyper's server
/// chose it: an HTTP/2 error's own (an upstream's reset passed on), else
/// INTERNAL_ERROR.
fn reset_reason(e: &BoxError) -> Reason {
    let e: &(dyn std::error::Error + 'static) = e.as_ref();
    std::iter::once(e)
        .chain(sidecar_runtime::error::causes(e))
        .find_map(|c| c.downcast_ref::<h2::Error>())
        .and_then(h2::Error::reason)
        .unwrap_or(Reason::INTERNAL_ERROR)
}

/// `date` for a response without one (a local answer, mostly).
fn date() -> HeaderValue {
    HeaderValue::from_str(&httpdate::fmt_http_date(SystemTime::now()))
        .expect("an HTTP date is a valid header value")
}
