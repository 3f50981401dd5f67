//! Whether a plaintext upstream speaks HTTP/2 by prior knowledge. An HTTP/2
//! request is sent upstream as HTTP/2, but an app that only speaks HTTP/1.1
//! cannot take it; the proxy then translates (hyper speaks HTTP/1.1
//! upstream while the client keeps HTTP/2).
//!
//! The probe is the connection preface itself: an HTTP/2 server answers it
//! with a SETTINGS frame, an HTTP/1 server with `HTTP/1.1 400` or by
//! closing. Over TLS, ALPN tells the same (see `Connector`).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use crate::detect::H2_PREFACE as PREFACE;
use crate::prefixed::Prefixed;

const SETTINGS: u8 = 0x4;

/// What the upstream answered to the preface.
pub enum Probe {
    /// An HTTP/2 server: the stream to hand to the HTTP/2 client, with the
    /// preface already sent.
    H2(PrefaceSent<Prefixed<TcpStream>>),
    Http1,
}

/// Sends the preface and reads the answer. A server that says nothing
/// within `wait` is taken for an HTTP/2 one waiting for our SETTINGS (an
/// HTTP/1 server answers the preface, a complete request, at once).
pub async fn probe(mut s: TcpStream, wait: Duration) -> io::Result<Probe> {
    s.write_all(PREFACE).await?;
    let mut read = Vec::with_capacity(64);
    let answer = tokio::time::timeout(wait, async {
        // A frame header's fourth byte is its type.
        while read.len() < 4 {
            if s.read_buf(&mut read).await? == 0 {
                break;
            }
        }
        io::Result::Ok(())
    })
    .await;
    match answer {
        Ok(Err(e)) => return Err(e),
        Ok(Ok(())) if read.get(3) != Some(&SETTINGS) => return Ok(Probe::Http1),
        _ => {}
    }
    Ok(Probe::H2(PrefaceSent {
        inner: Prefixed::new(read, s),
        skip: PREFACE.len(),
    }))
}

/// A stream on which the preface was sent already: the HTTP/2 client's own
/// preface, its first write, is dropped.
pub struct PrefaceSent<T> {
    inner: T,
    skip: usize,
}

impl<T: AsyncRead + Unpin> AsyncRead for PrefaceSent<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for PrefaceSent<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.skip > 0 {
            let sent = PREFACE.len() - self.skip;
            let n = self.skip.min(buf.len());
            if buf[..n] != PREFACE[sent..sent + n] {
                return Poll::Ready(Err(io::Error::other(
                    "HTTP/2 client did not start with the preface",
                )));
            }
            self.skip -= n;
            return Poll::Ready(Ok(n));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.skip > 0 {
            let first = bufs.iter().find(|b| !b.is_empty()).map_or(&[][..], |b| b);
            return self.poll_write(cx, first);
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
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
