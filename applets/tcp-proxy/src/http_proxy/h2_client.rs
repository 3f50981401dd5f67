//! Requests to HTTP/2 upstreams go through the h2 crate directly rather
//! than hyper's HTTP/2 client. hyper hands each request over a channel to a
//! dispatch task, spawns a task per request to wait for its response and
//! sends that back through a oneshot: three wake-ups and a spawn per request
//! that a proxy, which awaits the response in the request's own task anyway,
//! does not need. Here the request's task opens the stream and awaits the
//! response itself; a request body that is not complete at once is piped by
//! a task of its own (gRPC streams both ways).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use h2::client::SendRequest;
use h2::{Ping, PingPong, Reason};
use http::{Request, Response};
use hyper::body::Body as _;
use tokio::time::{Instant, Sleep};

use super::coalesce::Coalesced;
use super::h2_body::{H2Body, Pipe};
use super::upstream::{Body, BoxError, UpstreamIo};

/// hyper's HTTP/2 client defaults, kept: larger windows than the spec's
/// 64 KiB, which would stall a large body on a fast local hop.
const STREAM_WINDOW: u32 = 2 * 1024 * 1024;
const CONN_WINDOW: u32 = 5 * 1024 * 1024;
const MAX_FRAME_SIZE: u32 = 16 * 1024;
const MAX_HEADER_LIST_SIZE: u32 = 16 * 1024;
const MAX_SEND_BUFFER: usize = 1024 * 1024;
/// Streams opened before the server's SETTINGS say how many it takes.
const INITIAL_MAX_SEND_STREAMS: usize = 100;
const MAX_LOCAL_ERROR_RESETS: usize = 1024;
/// A PING after this long without a response byte, while a stream is open,
/// finds a connection the peer (or the path to it) lost without closing it;
/// no answer within the timeout closes it. As hyper's client: no PING on an
/// idle connection, and none while responses flow. gRPC servers (grpc-go,
/// grpc-java) answer PINGs more often than every 5 minutes, or without a
/// stream, with GOAWAY ENHANCE_YOUR_CALM "too_many_pings".
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// One multiplexed connection to an upstream; clones share it.
#[derive(Clone)]
pub struct H2Sender {
    send: SendRequest<Bytes>,
    shared: Arc<Shared>,
}

/// The connection's state, shared by its senders, its streams and its task.
#[derive(Default)]
struct Shared {
    /// Set when the connection's task has ended.
    closed: AtomicBool,
    /// Streams whose response has not ended (or been dropped).
    open: AtomicUsize,
    /// Set by each response DATA frame; the keep-alive clears it.
    read: AtomicBool,
}

/// Counts an open stream for as long as it lives.
pub struct OpenStream(Arc<Shared>);

impl OpenStream {
    fn new(shared: &Arc<Shared>) -> Self {
        shared.open.fetch_add(1, Ordering::Relaxed);
        OpenStream(shared.clone())
    }

    /// A response DATA frame came: the connection is alive.
    pub fn saw_data(&self) {
        self.0.read.store(true, Ordering::Relaxed);
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl H2Sender {
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Relaxed)
    }

    /// Sends `req` and returns the response head, its body streaming on.
    /// On failure the request comes back when none of it was sent (the
    /// connection had closed meanwhile).
    pub async fn send(
        mut self,
        req: Request<Body>,
    ) -> Result<Response<Body>, (BoxError, Option<Request<Body>>)> {
        if let Err(e) = std::future::poll_fn(|cx| self.send.poll_ready(cx)).await {
            self.shared.closed.store(true, Ordering::Relaxed);
            return Err((e.into(), Some(req)));
        }
        let (head, body) = req.into_parts();
        let eos = body.is_end_stream();
        let (response, tx) = self
            .send
            .send_request(Request::from_parts(head, ()), eos)
            .map_err(|e| (BoxError::from(e), None))?;
        let open = OpenStream::new(&self.shared);
        if !eos {
            let mut pipe = Pipe::new(body, tx, |_| Reason::CANCEL, None);
            // Most bodies are complete already: no task for those.
            if Pin::new(&mut pipe)
                .poll(&mut Context::from_waker(std::task::Waker::noop()))
                .is_pending()
            {
                tokio::spawn(pipe);
            }
        }
        let resp = response.await.map_err(|e| (BoxError::from(e), None))?;
        let (head, recv) = resp.into_parts();
        let body = H2Body::response(recv, &head.headers, open);
        Ok(Response::from_parts(head, Body::H2(body)))
    }
}

/// Opens HTTP/2 on `io` and drives the connection in a task of its own.
pub async fn handshake(io: UpstreamIo, addr: SocketAddr) -> io::Result<H2Sender> {
    let (send, mut conn) = h2::client::Builder::new()
        .initial_max_send_streams(INITIAL_MAX_SEND_STREAMS)
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONN_WINDOW)
        .max_frame_size(MAX_FRAME_SIZE)
        .max_header_list_size(MAX_HEADER_LIST_SIZE)
        .max_send_buffer_size(MAX_SEND_BUFFER)
        .max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESETS))
        .enable_push(false)
        .handshake::<_, Bytes>(Coalesced::h2(io))
        .await
        .map_err(io::Error::other)?;
    let shared = Arc::new(Shared::default());
    let ping = conn.ping_pong().expect("the first call gives the handle");
    let driven = KeptAlive {
        conn,
        ping,
        shared: shared.clone(),
        timer: Box::pin(tokio::time::sleep(KEEP_ALIVE_INTERVAL)),
        awaiting_pong: false,
    };
    let done = shared.clone();
    tokio::spawn(async move {
        if let Err(e) = driven.await {
            tracing::debug!(upstream = %addr, error = %e, "upstream HTTP/2 connection failed");
        }
        done.closed.store(true, Ordering::Relaxed);
    });
    Ok(H2Sender { send, shared })
}

/// The connection, with a PING after [`KEEP_ALIVE_INTERVAL`] of silence
/// while a stream is open.
struct KeptAlive {
    conn: h2::client::Connection<Coalesced<UpstreamIo>, Bytes>,
    ping: PingPong,
    shared: Arc<Shared>,
    timer: Pin<Box<Sleep>>,
    awaiting_pong: bool,
}

impl Future for KeptAlive {
    type Output = Result<(), BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        if this.awaiting_pong {
            if let Poll::Ready(r) = this.ping.poll_pong(cx) {
                r?;
                this.awaiting_pong = false;
                this.timer
                    .as_mut()
                    .reset(Instant::now() + KEEP_ALIVE_INTERVAL);
            }
        }
        // At most two rounds: a round whose timer fired re-arms it.
        for _ in 0..2 {
            if this.timer.as_mut().poll(cx).is_pending() {
                break;
            }
            if this.awaiting_pong {
                return Poll::Ready(Err("no answer to a keep-alive PING".into()));
            }
            let read = this.shared.read.swap(false, Ordering::Relaxed);
            if read || this.shared.open.load(Ordering::Relaxed) == 0 {
                this.timer
                    .as_mut()
                    .reset(Instant::now() + KEEP_ALIVE_INTERVAL);
                continue;
            }
            this.ping.send_ping(Ping::opaque())?;
            this.awaiting_pong = true;
            let _ = this.ping.poll_pong(cx);
            this.timer
                .as_mut()
                .reset(Instant::now() + KEEP_ALIVE_TIMEOUT);
        }
        Pin::new(&mut this.conn).poll(cx).map_err(Into::into)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
    use tokio::sync::mpsc;

    const PING: u8 = 6;

    /// A bare HTTP/2 server on `io` that answers nothing but SETTINGS and
    /// reports the type of every frame the client sends.
    async fn frames_seen(mut io: DuplexStream, seen: mpsc::UnboundedSender<u8>) {
        let mut preface = [0u8; 24];
        io.read_exact(&mut preface).await.unwrap();
        // Our SETTINGS (empty), and the ACK of the client's.
        io.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 4, 1, 0, 0, 0, 0])
            .await
            .unwrap();
        let mut head = [0u8; 9];
        while io.read_exact(&mut head).await.is_ok() {
            let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
            let mut payload = vec![0; len];
            io.read_exact(&mut payload).await.unwrap();
            let ack = head[4] & 1 == 1;
            if !(head[3] == PING && ack) && seen.send(head[3]).is_err() {
                return;
            }
        }
    }

    async fn connect() -> (H2Sender, mpsc::UnboundedReceiver<u8>) {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(frames_seen(server, tx));
        let addr = "127.0.0.1:1".parse().unwrap();
        (handshake(Box::new(client), addr).await.unwrap(), rx)
    }

    fn pings(rx: &mut mpsc::UnboundedReceiver<u8>) -> usize {
        std::iter::from_fn(|| rx.try_recv().ok())
            .filter(|&t| t == PING)
            .count()
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_is_not_pinged() {
        let (_sender, mut seen) = connect().await;
        tokio::time::sleep(KEEP_ALIVE_INTERVAL * 5).await;
        assert_eq!(pings(&mut seen), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_open_stream_is_pinged() {
        let (sender, mut seen) = connect().await;
        let req = Request::get("http://upstream/slow")
            .body(Body::full(Bytes::new()))
            .unwrap();
        let waiting = tokio::spawn(async move { sender.send(req).await.is_ok() });
        tokio::time::sleep(KEEP_ALIVE_INTERVAL + Duration::from_secs(1)).await;
        assert_eq!(pings(&mut seen), 1);
        waiting.abort();
    }
}
