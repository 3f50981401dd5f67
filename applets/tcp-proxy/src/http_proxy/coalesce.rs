//! Fewer, larger writes on HTTP/2 connections. Streams become ready one by
//! one (a response arriving from an upstream wakes its stream, a request's
//! task opens an upstream stream), each waking the connection task, and
//! tokio runs a woken task next: responses that arrive from an upstream
//! together went out one write (and one TLS record) each. Here the first
//! write of a burst yields once instead: the streams already woken queue
//! their frames meanwhile, and the write that follows carries them all. A
//! yield costs one more poll of the connection task, no system call.
//!
//! HTTP/1.1 answers one request at a time per connection, so nothing would
//! join a write there: only HTTP/2 connections are wrapped.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

pub struct Coalesced<T> {
    inner: T,
    /// The current burst has yielded once; its write goes out now.
    yielded: bool,
}

impl<T> Coalesced<T> {
    /// A connection speaking HTTP/2, client or server side.
    pub fn h2(inner: T) -> Self {
        Coalesced {
            inner,
            yielded: false,
        }
    }

    /// Ready(()) when the write may go out now; else the task was woken to
    /// come back once the other ready tasks have run.
    fn hold(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.yielded {
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
        Pin::new(&mut self.inner).poll_read(cx, buf)
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
