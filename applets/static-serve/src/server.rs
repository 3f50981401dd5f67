//! The accept loops and per-connection HTTP/1.1 driver.
//!
//! Slow clients cannot hold the server: a connection cap (accepting pauses
//! while it is reached), a per-address cap (`per_ip.rs`), a header timeout (a
//! request head must arrive within `--header-timeout` of its first byte, or of
//! the accept for a connection's first request; trickled bytes never extend
//! it), an idle timeout (no traffic between requests, or a client that stops
//! reading), a cap on the request head size (431) and on the request line
//! (414, `request_line.rs`).
//!
//! Both timeouts are tracked here from the bytes the socket actually moves.
//! hyper 1.x's own `header_read_timeout` does not fit: without a `timer` it is
//! silently off, and with one its clock starts when hyper begins waiting for
//! a head (`proto/h1/conn.rs`, `poll_read_head`), so it would also cut idle
//! keep-alive connections at the header timeout, making the two flags one.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::{Duration, Instant};

use hyper::server::conn::http1;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use sidecar_runtime::backoff::{is_resource_shortage, AcceptBackoff};
use sidecar_runtime::side_wake::SideWake;
use sidecar_runtime::{Context, Shutdown};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::UnixListener;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_util::task::TaskTracker;

use crate::balance::{Balance, Seat};
use crate::body::{Finish, Guard};
use crate::handler::Handler;
use crate::listen::Listener;
use crate::per_ip::{IpSlot, PerIp};
use crate::request_line::{self, LineWatch};
use crate::sendfile::{is_placeholder, SendFile, Spans};

/// Request line plus headers; larger heads get 431.
pub const MAX_HEAD: usize = 16 * 1024;

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    /// 0: off.
    pub max_connections_per_ip: usize,
}

/// Serves until shutdown, then drains in-flight requests within the grace period.
///
/// TCP: one OS thread per worker, each with a single-threaded runtime
/// accepting from its own `SO_REUSEPORT` socket of each address; a
/// connection lives and dies on the thread that accepted it, unless that
/// worker is ahead of the others (`balance.rs`). Unix sockets: on the
/// applet's runtime.
pub async fn serve(
    listeners: Vec<Listener>,
    handler: Arc<Handler>,
    limits: Limits,
    protocols: Protocols,
    ctx: Context,
) -> anyhow::Result<()> {
    let shutdown = ctx.shutdown_handle();
    let grace = ctx.shutdown_grace();
    // Each TCP address's sockets go one to a worker; Unix sockets are served
    // on this runtime.
    let mut per_worker: Vec<Vec<std::net::TcpListener>> = Vec::new();
    let mut unix = Vec::new();
    for l in listeners {
        match l {
            Listener::Tcp(_, group) => {
                per_worker.resize_with(per_worker.len().max(group.len()), Vec::new);
                for (i, sock) in group.into_iter().enumerate() {
                    per_worker[i].push(sock);
                }
            }
            Listener::Unix(l, path) => unix.push((l, path)),
        }
    }
    let (balance, inboxes) = Balance::new(per_worker.len());
    let shared = Arc::new(Shared {
        balance,
        slots: Arc::new(Semaphore::new(limits.max_connections.max(1))),
        per_ip: PerIp::new(limits.max_connections_per_ip),
        handler: handler.clone(),
        limits,
        protocols,
    });
    let tracker = TaskTracker::new();
    let mut loops = Vec::new();
    let mut sockets = Vec::new();
    for (l, path) in unix {
        sockets.push(path);
        loops.push(tokio::spawn(accept_loop(
            Acceptor::Unix(l),
            shared.clone(),
            tracker.clone(),
            shutdown.clone(),
        )));
    }
    let mut workers = Vec::new();
    for ((i, socks), inbox) in per_worker.into_iter().enumerate().zip(inboxes) {
        let (closed_tx, closed_rx) = tokio::sync::oneshot::channel::<()>();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        let (shared, shutdown) = (shared.clone(), shutdown.clone());
        std::thread::Builder::new()
            .name(format!("static-serve-{i}"))
            .spawn(move || {
                worker(i, socks, inbox, shared, shutdown, grace, closed_tx);
                let _ = done_tx.send(());
            })?;
        workers.push((closed_rx, done_rx));
    }

    ctx.shutdown().await;
    for l in loops {
        let _ = l.await;
    }
    for p in sockets {
        let _ = std::fs::remove_file(p);
    }
    let mut done = Vec::new();
    for (closed, d) in workers {
        // Every listener is closed before we say so.
        let _ = closed.await;
        done.push(d);
    }
    tracker.close();
    tracing::info!(
        connections = handler.metrics.connections_open.get(),
        "draining"
    );
    let drained = async {
        tracker.wait().await;
        for d in done {
            let _ = d.await;
        }
    };
    if tokio::time::timeout(grace, drained).await.is_err() {
        tracing::warn!(
            connections = handler.metrics.connections_open.get(),
            "connections still open after the grace period"
        );
    }
    Ok(())
}

/// One TCP worker thread: accept on its sockets and take the connections other
/// workers hand over until shutdown, then give its connections the grace
/// period to finish.
fn worker(
    me: usize,
    socks: Vec<std::net::TcpListener>,
    inbox: mpsc::UnboundedReceiver<Handoff>,
    shared: Arc<Shared>,
    shutdown: Shutdown,
    grace: Duration,
    listeners_closed: tokio::sync::oneshot::Sender<()>,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start a worker runtime");
            return;
        }
    };
    rt.block_on(async move {
        let tracker = TaskTracker::new();
        let mut loops = Vec::new();
        for sock in socks {
            match tokio::net::TcpListener::from_std(sock) {
                Ok(l) => loops.push(tokio::spawn(accept_loop(
                    Acceptor::Tcp(l, me),
                    shared.clone(),
                    tracker.clone(),
                    shutdown.clone(),
                ))),
                Err(e) => tracing::error!(error = %e, "cannot register a listener"),
            }
        }
        let adopting = tokio::spawn(adopt(
            inbox,
            shared.clone(),
            tracker.clone(),
            shutdown.clone(),
        ));
        for l in loops {
            let _ = l.await;
        }
        let _ = adopting.await;
        let _ = listeners_closed.send(());
        tracker.close();
        let _ = tokio::time::timeout(grace, tracker.wait()).await;
    });
}

enum Acceptor {
    /// With the worker whose socket it is.
    Tcp(tokio::net::TcpListener, usize),
    Unix(UnixListener),
}

/// What every accept loop shares, across worker threads.
struct Shared {
    handler: Arc<Handler>,
    balance: Arc<Balance<Handoff>>,
    limits: Limits,
    /// `--max-connections`.
    slots: Arc<Semaphore>,
    per_ip: Arc<PerIp>,
    protocols: Protocols,
}

/// A TCP connection one worker accepted and another serves, with what it holds.
struct Handoff {
    stream: std::net::TcpStream,
    peer: std::net::SocketAddr,
    held: Held,
}

/// What a TCP connection holds until it closes.
struct Held {
    _slot: OwnedSemaphorePermit,
    _ip: Option<IpSlot>,
    _seat: Seat<Handoff>,
}

/// Serves the connections other workers hand to this one.
async fn adopt(
    mut inbox: mpsc::UnboundedReceiver<Handoff>,
    shared: Arc<Shared>,
    tracker: TaskTracker,
    shutdown: Shutdown,
) {
    loop {
        let h = tokio::select! {
            h = inbox.recv() => match h { Some(h) => h, None => return },
            _ = shutdown.requested() => return,
        };
        match tokio::net::TcpStream::from_std(h.stream) {
            Ok(stream) => serve_tcp(&shared, &tracker, &shutdown, stream, h.peer, h.held),
            Err(e) => tracing::debug!(error = %e, "cannot register a handed-over connection"),
        }
    }
}

fn serve_tcp(
    shared: &Arc<Shared>,
    tracker: &TaskTracker,
    shutdown: &Shutdown,
    stream: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
    held: Held,
) {
    let (h, limits, s) = (shared.handler.clone(), shared.limits, shutdown.clone());
    let protocols = shared.protocols.clone();
    tracker.spawn(async move {
        connection(stream, peer.to_string(), h, limits, protocols, s).await;
        drop(held);
    });
}

async fn accept_loop(
    listener: Acceptor,
    shared: Arc<Shared>,
    tracker: TaskTracker,
    shutdown: Shutdown,
) {
    let metrics = &shared.handler.metrics;
    let mut backoff = AcceptBackoff::default();
    loop {
        let accepted = tokio::select! {
            a = accept(&listener) => a,
            _ = shutdown.requested() => return,
        };
        let accepted = match accepted {
            Ok(a) => a,
            Err(e) if is_resource_shortage(&e) => {
                metrics.accept_errors.inc();
                let (wait, first) = backoff.failed();
                if first {
                    tracing::warn!(error = %e, "accept failed; backing off until descriptors free up");
                }
                tokio::select! {
                    _ = tokio::time::sleep(wait) => continue,
                    _ = shutdown.requested() => return,
                }
            }
            // The client gave up before we accepted (ECONNABORTED and the
            // like): nothing to wait for.
            Err(e) => {
                metrics.accept_errors.inc();
                tracing::debug!(error = %e, "accept failed");
                continue;
            }
        };
        if backoff.accepted() {
            tracing::info!("accepting again");
        }
        let admitted = match &accepted {
            Accepted::Tcp(_, peer, _) => shared.per_ip.admit(peer.ip()),
            Accepted::Unix(_) => Some(None),
        };
        let Some(ip_slot) = admitted else {
            // The address already holds its share: a 503 on plain HTTP (TLS
            // would need a handshake first), then closed.
            metrics.per_ip_rejected.inc();
            if let Accepted::Tcp(stream, peer, _) = accepted {
                tracing::debug!(peer = %peer, "--max-connections-per-ip reached; connection refused");
                if shared.protocols.tls.is_none() {
                    if let Some(answer) = shared.per_ip.refuse(stream) {
                        tracker.spawn(answer);
                    }
                }
            }
            continue;
        };
        // At the cap, the connection just accepted waits for a slot and this
        // loop stops accepting (later clients queue in the backlog). Taking
        // the slot after accept matters with one accept loop per worker: a worker
        // holding a slot while idle in accept could starve the others.
        let permit = tokio::select! {
            p = shared.slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            _ = shutdown.requested() => return,
        };
        match accepted {
            Accepted::Tcp(stream, peer, me) => {
                let _ = stream.set_nodelay(true);
                let seat = shared.balance.seat(me);
                let to = seat.worker();
                let held = Held {
                    _slot: permit,
                    _ip: ip_slot,
                    _seat: seat,
                };
                if to == me {
                    serve_tcp(&shared, &tracker, &shutdown, stream, peer, held);
                } else if let Ok(stream) = stream.into_std() {
                    // Refused only once that worker is shutting down: the
                    // connection is then closed, as at any shutdown.
                    let _ = shared.balance.hand_over(to, Handoff { stream, peer, held });
                }
            }
            Accepted::Unix(stream) => {
                let (h, limits, s) = (shared.handler.clone(), shared.limits, shutdown.clone());
                let protocols = shared.protocols.clone();
                tracker.spawn(async move {
                    connection(stream, "unix".to_string(), h, limits, protocols, s).await;
                    drop(permit);
                });
            }
        }
    }
}

enum Accepted {
    /// With the worker that accepted it.
    Tcp(tokio::net::TcpStream, std::net::SocketAddr, usize),
    Unix(tokio::net::UnixStream),
}

async fn accept(l: &Acceptor) -> io::Result<Accepted> {
    match l {
        Acceptor::Tcp(l, me) => l.accept().await.map(|(s, a)| Accepted::Tcp(s, a, *me)),
        Acceptor::Unix(l) => l.accept().await.map(|(s, _)| Accepted::Unix(s)),
    }
}

/// How a connection speaks: decided per listener, then by ALPN under TLS.
#[derive(Clone)]
pub struct Protocols {
    /// `--tls-cert/--tls-key`: every TCP connection is TLS; ALPN picks h2 or HTTP/1.1.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// `--http2-cleartext`: plain connections that open with the h2 preface speak h2.
    pub h2c: bool,
}

/// The HTTP/2 defences, as nginx and hyper set them, on either of hyper's
/// h2 builders (its own, or hyper-util's for h2c detection).
macro_rules! http2_limits {
    ($b:expr) => {
        $b
            // nginx's http2_max_concurrent_streams.
            .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
            // The same 16 KiB as an HTTP/1.1 head.
            .max_header_list_size(MAX_HEAD as u32)
            // Rapid reset (CVE-2023-44487): streams the client opens and
            // resets before we accept them; past this many at once the
            // connection gets GOAWAY (h2's default, pinned).
            .max_pending_accept_reset_streams(20)
            // Streams we had to reset for the client's errors (RUSTSEC-2024-0003);
            // hyper's default, pinned.
            .max_local_error_reset_streams(1024)
            .timer(TokioTimer::new())
    };
}

fn http2_builder() -> hyper::server::conn::http2::Builder<TokioExecutor> {
    let mut b = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    http2_limits!(b);
    b
}

/// Streams one h2 connection may have open at once.
pub const MAX_CONCURRENT_STREAMS: u32 = 128;

async fn connection<S>(
    stream: S,
    peer: String,
    handler: Arc<Handler>,
    limits: Limits,
    protocols: Protocols,
    shutdown: Shutdown,
) where
    S: AsyncRead + AsyncWrite + SendFile + Unpin + Send + 'static,
{
    handler.metrics.connections.inc();
    handler.metrics.connections_open.inc();
    let activity = Arc::new(Activity::new());
    let spans = Arc::new(Spans::default());
    let tls = protocols.tls.clone();
    let io = Tracked {
        inner: stream,
        activity: activity.clone(),
        spans: spans.clone(),
        line: if tls.is_some() {
            LineWatch::off()
        } else {
            LineWatch::default()
        },
    };
    let peer: Arc<str> = peer.into();
    let conn = Conn {
        handler: handler.clone(),
        activity: activity.clone(),
        limits,
        shutdown,
        peer,
    };
    // Each kind of connection is boxed: the task then holds only the one it
    // serves. Inline, the largest (h2c detection, TLS) sized every task: an
    // idle keep-alive connection's task was 6,144 bytes, now 1,096.
    match tls {
        None if protocols.h2c => {
            let mut b = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            // hyper-util's HTTP/1.1 side has no max_header_size: its read
            // buffer cap gives the same 431 for heads above 16 KiB.
            b.http1().keep_alive(true).max_buf_size(MAX_HEAD);
            http2_limits!(b.http2());
            let svc = conn.service(None);
            let mut c = Box::pin(b.serve_connection(TokioIo::new(io), svc));
            conn.drive(c.as_mut(), |c| c.graceful_shutdown()).await;
        }
        None => {
            let svc = conn.service(Some(spans));
            let mut c = Box::pin(http1_builder().serve_connection(TokioIo::new(io), svc));
            conn.drive(c.as_mut(), |c| c.graceful_shutdown()).await;
        }
        // Its own function, boxed: the TLS streams and their handshake
        // would otherwise size every connection's task, TLS or not.
        Some(acceptor) => Box::pin(serve_tls(acceptor, io, &conn, &activity)).await,
    }
    handler.metrics.connections_open.dec();
}

/// A TLS connection: the handshake, then HTTP/2 or HTTP/1.1 as ALPN chose.
async fn serve_tls<S>(
    acceptor: tokio_rustls::TlsAcceptor,
    io: Tracked<S>,
    conn: &Conn,
    activity: &Activity,
) where
    S: AsyncRead + AsyncWrite + SendFile + Unpin + Send + 'static,
{
    // The handshake is part of the first request's head: it has the header
    // deadline.
    let deadline = activity.deadline(&conn.limits);
    let tls = tokio::select! {
        r = tokio::time::timeout_at(deadline.into(), acceptor.accept(io)) => r,
        _ = conn.shutdown.requested() => Ok(Err(io::Error::other("shutting down"))),
    };
    let tls = match tls {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!(peer = %conn.peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            conn.handler.metrics.timeouts.inc();
            return;
        }
    };
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    let svc = conn.service(None);
    if h2 {
        let mut c = Box::pin(http2_builder().serve_connection(TokioIo::new(tls), svc));
        conn.drive(c.as_mut(), |c| c.graceful_shutdown()).await;
    } else {
        let mut c = Box::pin(http1_builder().serve_connection(TokioIo::new(tls), svc));
        conn.drive(c.as_mut(), |c| c.graceful_shutdown()).await;
    }
}

fn http1_builder() -> http1::Builder {
    let mut b = http1::Builder::new();
    b.keep_alive(true)
        .max_header_size(MAX_HEAD)
        // Body buffers go to the socket as they are (sendfile placeholders rely on it):
        // hyper queues them only with writev on and pipeline_flush off; if it ever
        // copied one, its zeros would be sent, which the integration test
        // `sendfile_bodies_stay_exact_when_pipelined_with_head_ranges_and_a_slow_reader` catches.
        .writev(true);
    b
}

/// One connection's state shared by its service and its driver.
struct Conn {
    handler: Arc<Handler>,
    activity: Arc<Activity>,
    limits: Limits,
    shutdown: Shutdown,
    peer: Arc<str>,
}

impl Conn {
    /// The request handler. File bodies go out by sendfile only on plain
    /// HTTP/1.1 connections (`spans`): TLS must encrypt them and h2 frames
    /// them, and either would send a placeholder's zeros.
    fn service(
        &self,
        spans: Option<Arc<Spans>>,
    ) -> impl hyper::service::Service<
        http::Request<hyper::body::Incoming>,
        Response = http::Response<crate::body::Body>,
        Error = Infallible,
        Future = impl Future<Output = Result<http::Response<crate::body::Body>, Infallible>> + Send,
    > + Clone {
        let activity = self.activity.clone();
        let handler = self.handler.clone();
        let peer = self.peer.clone();
        hyper::service::service_fn(move |req| {
            let h2 = req.version() == http::Version::HTTP_2;
            let guard = activity.begin_request(req.version());
            // Answered here, before the future is first polled (see `Handler::handle`).
            let answer = handler.handle(req, &peer, spans.is_some());
            let spans = spans.clone();
            async move {
                let mut resp = answer.await;
                resp.body_mut().guard(guard, h2);
                if let Some(spans) = spans {
                    resp.body_mut().sendfile_via(spans);
                }
                Ok::<_, Infallible>(resp)
            }
        })
    }

    /// Runs the connection until it ends, times out, or shutdown drains it.
    ///
    /// The timer is armed at most the shorter timeout ahead (`Activity::next_check`)
    /// and re-armed only when it fires, never per request or per write: a
    /// deadline that moves earlier (a head starting) is still at or after the
    /// time armed, so it is caught on time without waking the connection.
    async fn drive<C, T, E>(&self, mut conn: Pin<&mut C>, graceful: impl Fn(Pin<&mut C>))
    where
        C: Future<Output = Result<T, E>>,
    {
        let (activity, limits) = (&self.activity, &self.limits);
        let sleep = tokio::time::sleep_until(activity.next_check(limits).into());
        tokio::pin!(sleep);
        let shutdown = self.shutdown.requested();
        tokio::pin!(shutdown);
        // The timer and shutdown are polled only when they woke the task.
        let side = SideWake::new();
        let side_waker = Waker::from(side.clone());
        let mut draining = false;
        std::future::poll_fn(|cx| {
            if conn.as_mut().poll(cx).is_ready() {
                return Poll::Ready(());
            }
            if !side.take(cx.waker()) {
                return Poll::Pending;
            }
            let mut side_cx = TaskContext::from_waker(&side_waker);
            if !draining && shutdown.as_mut().poll(&mut side_cx).is_ready() {
                // Idle connections close now; a response in flight finishes first.
                graceful(conn.as_mut());
                draining = true;
                // The connection is polled again after that, the timer with it.
                side.again();
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            if sleep.as_mut().poll(&mut side_cx).is_ready() {
                if activity.deadline(limits) <= Instant::now() {
                    self.handler.metrics.timeouts.inc();
                    tracing::debug!(peer = %self.peer, "connection timed out");
                    return Poll::Ready(());
                }
                sleep.as_mut().reset(activity.next_check(limits).into());
                // Registers the re-armed timer (or, should it be due already,
                // comes back to it at the next poll).
                if sleep.as_mut().poll(&mut side_cx).is_ready() {
                    side.again();
                    cx.waker().wake_by_ref();
                }
            }
            Poll::Pending
        })
        .await
    }
}

/// Milliseconds since a process-wide epoch, so timestamps fit in atomics.
/// From the coarse monotonic clock (the same clock, at the kernel tick's
/// resolution): it is read on every socket read and write, and timeouts are
/// whole seconds or more.
fn now_ms() -> u64 {
    coarse_ms().saturating_sub(epoch().1) + 1
}

/// `CLOCK_MONOTONIC_COARSE` in milliseconds.
fn coarse_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write to; the clock id is a constant
    // every Linux since 2.6.32 has (on error `ts` stays zero).
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

/// The epoch as an `Instant` and on the coarse clock, read together.
fn epoch() -> (Instant, u64) {
    static EPOCH: OnceLock<(Instant, u64)> = OnceLock::new();
    *EPOCH.get_or_init(|| (Instant::now(), coarse_ms()))
}

/// What the connection's socket has been doing, updated by [`Tracked`] and by
/// the service as requests start and their responses finish.
struct Activity {
    last_io: AtomicU64,
    /// When the first byte of a request head arrived (0: not reading a head).
    /// A new connection's first head counts from the accept, as nginx's
    /// `client_header_timeout` does: a client that connects and says nothing
    /// holds a slot no longer than one that trickles.
    head_started: AtomicU64,
    in_flight: AtomicU32,
    /// The connection speaks HTTP/2 (known from its first request). Bytes it
    /// reads are frames (PING, WINDOW_UPDATE, SETTINGS), not a head starting,
    /// and do not count as traffic, nor do the frames we write (PING
    /// acknowledgements among them): it is idle from the end of the last
    /// stream, as with nginx's `keepalive_timeout` for h2, and a client that
    /// pings is closed all the same. While streams are open, the progress is
    /// response bodies taking chunks (`Finish::progress`): hyper asks for one
    /// only when the stream's window has room, so a client that grants no
    /// window and pings to look alive is closed by the idle timeout, as
    /// nginx's `send_timeout` closes a blocked write.
    h2: AtomicBool,
}

/// A zero timeout means off: thirty days, within the timer's range.
fn timeout_ms(d: Duration) -> u64 {
    if d.is_zero() {
        30 * 86_400_000
    } else {
        d.as_millis() as u64
    }
}

impl Activity {
    fn new() -> Activity {
        let now = now_ms();
        Activity {
            last_io: AtomicU64::new(now),
            head_started: AtomicU64::new(now),
            in_flight: AtomicU32::new(0),
            h2: AtomicBool::new(false),
        }
    }

    fn read(&self, n: usize) {
        if n == 0 || self.h2.load(Ordering::Relaxed) {
            return;
        }
        let now = now_ms();
        self.last_io.store(now, Ordering::Relaxed);
        if self.in_flight.load(Ordering::Relaxed) == 0 {
            let _ =
                self.head_started
                    .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    fn wrote(&self, n: usize) {
        // h2: frames, progress or not (see `h2`).
        if n == 0 || self.h2.load(Ordering::Relaxed) {
            return;
        }
        self.last_io.store(now_ms(), Ordering::Relaxed);
    }

    /// The request ends when the returned guard is dropped (with its response).
    fn begin_request(self: &Arc<Self>, version: http::Version) -> Guard {
        if version == http::Version::HTTP_2 {
            self.h2.store(true, Ordering::Relaxed);
        }
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.head_started.store(0, Ordering::Relaxed);
        Guard::new(self.clone())
    }

    /// When the connection should be closed unless something happens first,
    /// in [`now_ms`] units.
    fn deadline_ms(&self, l: &Limits) -> u64 {
        let head = self.head_started.load(Ordering::Relaxed);
        if self.in_flight.load(Ordering::Relaxed) == 0 && head != 0 {
            head + timeout_ms(l.header_timeout)
        } else {
            self.last_io.load(Ordering::Relaxed) + timeout_ms(l.idle_timeout)
        }
    }

    fn deadline(&self, l: &Limits) -> Instant {
        instant_of(self.deadline_ms(l))
    }

    /// When the connection timer should next look: the deadline, but never
    /// more than the shorter timeout from now. Every change that moves the
    /// deadline earlier (a head starting, a request starting) anchors it at
    /// the time of the change plus one of the timeouts, so it can never fall
    /// before a check armed earlier.
    fn next_check(&self, l: &Limits) -> Instant {
        let shortest = timeout_ms(l.header_timeout).min(timeout_ms(l.idle_timeout));
        instant_of(self.deadline_ms(l).min(now_ms() + shortest))
    }
}

fn instant_of(ms: u64) -> Instant {
    epoch().0 + Duration::from_millis(ms.saturating_sub(1))
}

impl Finish for Activity {
    fn finish(&self) {
        self.last_io.store(now_ms(), Ordering::Relaxed);
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    fn progress(&self) {
        self.last_io.store(now_ms(), Ordering::Relaxed);
    }
}

/// The socket, reporting every byte moved to [`Activity`].
/// It also turns sendfile placeholders back into file bytes (`sendfile.rs`).
struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
    spans: Arc<Spans>,
    line: LineWatch,
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            self.activity.read(buf.filled().len() - before);
            if self.line.too_long(&buf.filled()[before..]) {
                // The connection's first request: nothing else is queued to
                // write. Best effort: a socket that cannot take these few
                // bytes now is closed without them.
                let _ = Pin::new(&mut self.inner).poll_write(cx, &request_line::response());
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "request line too long",
                )));
            }
        }
        r
    }
}

impl<S: AsyncWrite + SendFile + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = if is_placeholder(buf) {
            self.spans.poll_send(&self.inner, cx, buf)
        } else {
            Pin::new(&mut self.inner).poll_write(cx, buf)
        };
        if let Poll::Ready(Ok(n)) = r {
            self.activity.wrote(n);
        }
        r
    }

    /// Writes the buffers before the first placeholder in one writev, or
    /// sends the placeholder's file span if it comes first.
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = match bufs.iter().position(|b| is_placeholder(b)) {
            Some(0) => self.spans.poll_send(&self.inner, cx, &bufs[0]),
            Some(i) => self.inner.poll_write_more(cx, &bufs[..i]),
            None => Pin::new(&mut self.inner).poll_write_vectored(cx, bufs),
        };
        if let Poll::Ready(Ok(n)) = r {
            self.activity.wrote(n);
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 5 s header timeout and a 100 s idle timeout, far enough apart
    /// that each test can tell which deadline is armed.
    fn limits() -> Limits {
        Limits {
            header_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(100),
            max_connections: 1,
            max_connections_per_ip: 0,
        }
    }

    #[test]
    fn header_deadline_runs_from_accept_then_from_each_heads_first_byte() {
        let limits = limits();
        let soon = || Instant::now() + Duration::from_secs(6);
        let later = || Instant::now() + Duration::from_secs(50);
        let a = Arc::new(Activity::new());
        // The first head's clock runs from the accept, and trickled bytes keep it.
        let first = a.deadline(&limits);
        assert!(first < soon());
        a.read(1);
        a.read(1);
        assert_eq!(a.deadline(&limits), first);
        let g = a.begin_request(http::Version::HTTP_11);
        // Bytes read while a request is in flight (pipelining) do not start the header clock.
        a.read(3);
        assert!(a.deadline(&limits) > later());
        drop(g);
        // Between requests: the idle timeout.
        assert!(a.deadline(&limits) > later());
        a.read(3);
        assert!(a.deadline(&limits) < soon());
    }

    #[test]
    fn a_deadline_never_moves_before_the_check_armed() {
        let limits = limits();
        let a = Arc::new(Activity::new());
        drop(a.begin_request(http::Version::HTTP_11));
        // Idle: the deadline is 100 s out, the check at most 5 s.
        let armed = a.next_check(&limits);
        assert!(armed < a.deadline(&limits));
        // A head starting moves the deadline earlier, but not before the check.
        a.read(1);
        assert!(a.deadline(&limits) >= armed);
        let armed = a.next_check(&limits);
        assert_eq!(armed, a.deadline(&limits));
        // The request starting moves it later again; the check then re-arms.
        let _g = a.begin_request(http::Version::HTTP_11);
        assert!(a.deadline(&limits) >= armed);
    }

    #[test]
    fn h2_frames_between_streams_are_not_traffic() {
        let limits = limits();
        let a = Arc::new(Activity::new());
        drop(a.begin_request(http::Version::HTTP_2));
        let idle = a.deadline(&limits);
        // A PING: neither a head (header deadline) nor activity (later idle deadline).
        std::thread::sleep(Duration::from_millis(5));
        a.read(17);
        // Its acknowledgement.
        a.wrote(17);
        assert_eq!(a.deadline(&limits), idle);
    }

    #[test]
    fn a_stalled_h2_stream_is_idle_whatever_frames_flow() {
        let limits = limits();
        let a = Arc::new(Activity::new());
        let _stream = a.begin_request(http::Version::HTTP_2);
        let stalled = a.deadline(&limits);
        // PINGs and their acknowledgements while the stream waits for a
        // window: no progress.
        std::thread::sleep(Duration::from_millis(5));
        a.read(17);
        a.wrote(17);
        assert_eq!(a.deadline(&limits), stalled);
        // The body taking a chunk is.
        a.progress();
        assert!(a.deadline(&limits) > stalled);
    }
}
