//! Fewer, larger writes on HTTP/2 connections. Each HTTP/2 stream is a task
//! of its own that wakes the connection task when its response is ready,
//! and tokio runs a woken task next: responses that arrive from an upstream
//! together went out one write (and one TLS record) each. Here the first
//! write of a burst yields once instead: the streams already woken queue
//! their frames meanwhile, and the write that follows carries them all. A
//! yield costs one more poll of the connection task, no system call.
//!
//! HTTP/1.1 answers one request at a time per connection, so nothing would
//! join a write there: a server connection turns this on only when its
//! first bytes are the HTTP/2 preface.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::detect::H2_PREFACE;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// A server connection that has not sent its first bytes yet.
    Unknown,
    Coalesce,
    Off,
}

pub struct Coalesced<T> {
    inner: T,
    mode: Mode,
    /// The current burst has yielded once; its write goes out now.
    yielded: bool,
}

impl<T> Coalesced<T> {
    /// A client connection opened for HTTP/2.
    pub fn h2(inner: T) -> Self {
        Coalesced {
            inner,
            mode: Mode::Coalesce,
            yielded: false,
        }
    }

    /// A server connection: HTTP/2 when the client's first bytes say so.
    pub fn server(inner: T) -> Self {
        Coalesced {
            inner,
            mode: Mode::Unknown,
            yielded: false,
        }
    }

    /// Ready(()) when the write may go out now; else the task was woken to
    /// come back once the other ready tasks have run.
    fn hold(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.mode != Mode::Coalesce || self.yielded {
            return Poll::Ready(());
        }
        self.yielded = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    fn wrote<R>(&mut self, r: &Poll<io::Result<R>>) {
        // A write the socket could not take yet keeps its yield: the retry
        // comes when the socket is writable.
        if r.is_ready() {
            self.yielded = false;
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Coalesced<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if this.mode == Mode::Unknown {
            let got = &buf.filled()[before..];
            if !got.is_empty() {
                let n = got.len().min(H2_PREFACE.len());
                this.mode = if got[..n] == H2_PREFACE[..n] {
                    Mode::Coalesce
                } else {
                    Mode::Off
                };
            }
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Coalesced<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        std::task::ready!(self.hold(cx));
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.wrote(&r);
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        std::task::ready!(self.hold(cx));
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.wrote(&r);
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
