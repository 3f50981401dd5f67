//! Moving bytes both ways between client and upstream.
//!
//! Each direction reads only after its previous chunk was fully written, so
//! a peer that stops reading stops the other side too (backpressure through
//! the kernel's socket buffers) and at most one buffer per direction is held.
//! The buffer exists only while data flows, so idle connections cost no user
//! memory. EOF on one side becomes a shutdown(SHUT_WR) on the other while the
//! reverse direction keeps flowing; an error (a reset) on either side resets
//! both. A direction that has moved `splice_after` bytes switches to
//! splice(2) through a pipe, so bulk data never enters user space.

use std::io;
use std::net::Shutdown;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::fcntl::{splice, OFlag, SpliceFFlags};
use prometheus_client::metrics::counter::Counter;
use sidecar_runtime::prometheus_client;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, Interest};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// Big enough for few syscalls per byte on bulk transfers; allocated without
/// zeroing, and only while data flows.
const BUF_SIZE: usize = 64 * 1024;
/// Pipe capacity and bytes asked of one splice call: bulk flows move in
/// fewer, larger steps than with the 64 KiB default pipe.
const SPLICE_CHUNK: usize = 256 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Close {
    /// Both sides sent FIN.
    Done,
    /// A side reset or failed; the other side was reset too.
    Reset,
    IdleTimeout,
    /// --max-connection-duration ran out.
    MaxDuration,
    /// The shutdown grace period ran out.
    Shutdown,
}

impl Close {
    pub fn as_str(self) -> &'static str {
        match self {
            Close::Done => "done",
            Close::Reset => "reset",
            Close::IdleTimeout => "idle_timeout",
            Close::MaxDuration => "max_duration",
            Close::Shutdown => "shutdown",
        }
    }
}

/// Per-direction counters: Prometheus (live) and this connection's total.
pub struct Direction {
    pub counter: Counter,
    pub total: AtomicU64,
}

impl Direction {
    pub fn new(counter: Counter) -> Self {
        Direction {
            counter,
            total: AtomicU64::new(0),
        }
    }

    pub fn add(&self, n: usize) {
        self.counter.inc_by(n as u64);
        self.total.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub fn bytes(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }
}

pub struct Options<'a> {
    pub idle_timeout: Duration,
    /// Zero: no cap.
    pub max_duration: Duration,
    pub splice_after: u64,
    pub spliced: &'a Counter,
    /// Fires when the shutdown grace period is over.
    pub hard_stop: &'a CancellationToken,
}

/// Time of the last byte either way, for the idle timeout.
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn touch(&self) {
        self.last_ms
            .store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// Relays until both directions are done, one fails, the idle timeout or
/// the lifetime cap.
pub async fn relay(
    client: &TcpStream,
    upstream: &TcpStream,
    up: &Direction,
    down: &Direction,
    opts: &Options<'_>,
) -> Close {
    let activity = Activity {
        start: Instant::now(),
        last_ms: AtomicU64::new(0),
    };
    let to_upstream = pump(client, upstream, up, &activity, opts);
    let to_client = pump(upstream, client, down, &activity, opts);
    let idle = idle(&activity, opts.idle_timeout);
    let lifetime = tokio::time::sleep(opts.max_duration);
    tokio::pin!(to_upstream, to_client, idle, lifetime);
    let (mut up_done, mut down_done) = (false, false);
    let close = loop {
        tokio::select! {
            r = &mut to_upstream, if !up_done => match r {
                Ok(()) => up_done = true,
                Err(e) => {
                    tracing::debug!(error = %e, "client to upstream failed");
                    break Close::Reset;
                }
            },
            r = &mut to_client, if !down_done => match r {
                Ok(()) => down_done = true,
                Err(e) => {
                    tracing::debug!(error = %e, "upstream to client failed");
                    break Close::Reset;
                }
            },
            // A side whose direction is done (it sent FIN) is no longer read,
            // so its reset would go unseen while the other side stays quiet:
            // watch it for errors until the relay ends.
            _ = client.ready(Interest::ERROR), if up_done => {
                tracing::debug!("client reset after its FIN");
                break Close::Reset;
            },
            _ = upstream.ready(Interest::ERROR), if down_done => {
                tracing::debug!("upstream reset after its FIN");
                break Close::Reset;
            },
            _ = &mut idle, if !opts.idle_timeout.is_zero() => break Close::IdleTimeout,
            _ = &mut lifetime, if !opts.max_duration.is_zero() => break Close::MaxDuration,
            // Reset, not FIN: an upstream must not take a cut-off upload for
            // a complete one.
            _ = opts.hard_stop.cancelled() => break Close::Shutdown,
        }
        if up_done && down_done {
            break Close::Done;
        }
    };
    if close != Close::Done {
        reset(client);
        reset(upstream);
    }
    close
}

/// [`relay`] for streams that are not plain sockets (TLS on either side):
/// no splice, and EOF becomes the stream's shutdown (close_notify, then
/// FIN). `sockets` are the TCP connections underneath, reset when the relay
/// does not end cleanly.
pub async fn relay_streams<C, U>(
    client: C,
    upstream: U,
    sockets: (&TcpStream, &TcpStream),
    up: &Direction,
    down: &Direction,
    opts: &Options<'_>,
) -> Close
where
    C: AsyncRead + AsyncWrite,
    U: AsyncRead + AsyncWrite,
{
    let activity = Activity {
        start: Instant::now(),
        last_ms: AtomicU64::new(0),
    };
    let (mut client_r, mut client_w) = tokio::io::split(client);
    let (mut upstream_r, mut upstream_w) = tokio::io::split(upstream);
    let to_upstream = pump_stream(&mut client_r, &mut upstream_w, up, &activity);
    let to_client = pump_stream(&mut upstream_r, &mut client_w, down, &activity);
    let idle = idle(&activity, opts.idle_timeout);
    let lifetime = tokio::time::sleep(opts.max_duration);
    tokio::pin!(to_upstream, to_client, idle, lifetime);
    let (mut up_done, mut down_done) = (false, false);
    let close = loop {
        tokio::select! {
            r = &mut to_upstream, if !up_done => match r {
                Ok(()) => up_done = true,
                Err(e) => {
                    tracing::debug!(error = %e, "client to upstream failed");
                    break Close::Reset;
                }
            },
            r = &mut to_client, if !down_done => match r {
                Ok(()) => down_done = true,
                Err(e) => {
                    tracing::debug!(error = %e, "upstream to client failed");
                    break Close::Reset;
                }
            },
            _ = &mut idle, if !opts.idle_timeout.is_zero() => break Close::IdleTimeout,
            _ = &mut lifetime, if !opts.max_duration.is_zero() => break Close::MaxDuration,
            _ = opts.hard_stop.cancelled() => break Close::Shutdown,
        }
        if up_done && down_done {
            break Close::Done;
        }
    };
    if close != Close::Done {
        reset(sockets.0);
        reset(sockets.1);
    }
    close
}

/// One direction between streams, with one TLS record's worth of buffer.
async fn pump_stream<R, W>(
    src: &mut R,
    dst: &mut W,
    dir: &Direction,
    activity: &Activity,
) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match src.read(&mut buf).await {
            // A TLS peer that closed without close_notify has still ended its
            // direction (rustls reports it as UnexpectedEof).
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => 0,
            r => r?,
        };
        if n == 0 {
            let _ = dst.shutdown().await;
            return Ok(());
        }
        dst.write_all(&buf[..n]).await?;
        dst.flush().await?;
        dir.add(n);
        activity.touch();
    }
}

/// Resolves once nothing moved either way for `timeout`.
async fn idle(activity: &Activity, timeout: Duration) {
    loop {
        let deadline = activity.last() + timeout;
        if Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep_until(deadline.into()).await;
    }
}

/// Makes the coming close send RST instead of FIN.
pub fn reset(s: &TcpStream) {
    let _ = socket2::SockRef::from(s).set_linger(Some(Duration::ZERO));
}

fn shutdown_write(s: &TcpStream) {
    // ENOTCONN: the peer is already gone; the other direction will see it.
    let _ = socket2::SockRef::from(s).shutdown(Shutdown::Write);
}

/// One direction: `src` to `dst` until EOF, then SHUT_WR on `dst`.
async fn pump(
    src: &TcpStream,
    dst: &TcpStream,
    dir: &Direction,
    activity: &Activity,
    opts: &Options<'_>,
) -> io::Result<()> {
    let mut moved: u64 = 0;
    loop {
        if opts.splice_after > 0 && moved >= opts.splice_after {
            if let Ok(pipe) = Pipe::new() {
                return pump_splice(src, dst, dir, activity, opts, pipe).await;
            }
        }
        src.readable().await?;
        let mut buf = Vec::with_capacity(BUF_SIZE);
        loop {
            buf.clear();
            match read_draining(src, BUF_SIZE, || src.try_read_buf(&mut buf)) {
                Ok(0) => {
                    shutdown_write(dst);
                    return Ok(());
                }
                Ok(n) => {
                    write_all(dst, &buf).await?;
                    dir.add(n);
                    activity.touch();
                    moved += n as u64;
                    if opts.splice_after > 0 && moved >= opts.splice_after {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

/// Runs `read`, a non-blocking read of `s` into `room` bytes, and when it
/// comes back short clears the socket's read readiness, as tokio's own
/// `TcpStream::poll_read` does (`try_read` does not). epoll reports edges,
/// so a read that did not fill the buffer took all the socket had: without
/// this, the next read is a system call that finds it empty (one per
/// message on a request/response connection). Readiness that arrived in
/// between is kept: tokio clears only the event the read started from.
pub fn read_draining(
    s: &TcpStream,
    room: usize,
    read: impl FnOnce() -> io::Result<usize>,
) -> io::Result<usize> {
    let mut short = None;
    let r = s.try_io(Interest::READABLE, || match read() {
        Ok(n) if n > 0 && n < room => {
            short = Some(n);
            // Makes try_io clear the readiness; the bytes are kept.
            Err(io::ErrorKind::WouldBlock.into())
        }
        r => r,
    });
    match r {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => short.ok_or(e),
        r => r,
    }
}

pub async fn write_all(dst: &TcpStream, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        dst.writable().await?;
        match dst.try_write(buf) {
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
}

impl Pipe {
    fn new() -> io::Result<Pipe> {
        let (read, write) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
        // Best effort: an unprivileged process may be held below this by
        // fs.pipe-max-size or its pipe quota, and the default still works.
        let _ = nix::fcntl::fcntl(
            write.as_raw_fd(),
            nix::fcntl::FcntlArg::F_SETPIPE_SZ(SPLICE_CHUNK as libc::c_int),
        );
        Ok(Pipe { read, write })
    }
}

/// Like `pump`, with the bytes going socket → pipe → socket inside the kernel.
/// The pipe is emptied before the next read, so it bounds what is in flight.
async fn pump_splice(
    src: &TcpStream,
    dst: &TcpStream,
    dir: &Direction,
    activity: &Activity,
    opts: &Options<'_>,
    pipe: Pipe,
) -> io::Result<()> {
    let flags = SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK;
    loop {
        src.readable().await?;
        let n = match src.try_io(Interest::READABLE, || {
            splice(
                src.as_fd(),
                None,
                pipe.write.as_fd(),
                None,
                SPLICE_CHUNK,
                flags,
            )
            .map_err(io::Error::from)
        }) {
            Ok(0) => {
                shutdown_write(dst);
                return Ok(());
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let mut left = n;
        while left > 0 {
            dst.writable().await?;
            match dst.try_io(Interest::WRITABLE, || {
                splice(pipe.read.as_fd(), None, dst.as_fd(), None, left, flags)
                    .map_err(io::Error::from)
            }) {
                Ok(m) => left -= m,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        dir.add(n);
        opts.spliced.inc_by(n as u64);
        activity.touch();
    }
}
