//! Bodies in and out of h2 streams, shared by the HTTP/2 client (requests
//! out, responses in) and server (requests in, responses out): a
//! [`RecvStream`] read as a body, and a body piped into a [`SendStream`]
//! within its flow-control window.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use h2::{Reason, RecvStream, SendStream};
use http::{header, HeaderMap};
use hyper::body::{Body as _, Frame, SizeHint};

use super::h2_client::OpenStream;
use super::upstream::{Body, BoxError};
use super::Activity;

/// A body read from an HTTP/2 stream: its DATA, then its trailers.
pub struct H2Body {
    recv: RecvStream,
    data_done: bool,
    /// content-length, when the peer sent one.
    length: Option<u64>,
    /// A response from an upstream: counted as open on its connection.
    open: Option<OpenStream>,
}

impl H2Body {
    /// A response body from an upstream connection.
    pub fn response(recv: RecvStream, headers: &HeaderMap, open: OpenStream) -> Self {
        H2Body {
            length: content_length(headers),
            recv,
            data_done: false,
            open: Some(open),
        }
    }

    /// A request body from a client. Without a content-length, a stream
    /// that ended with its headers has an empty body of known size, as
    /// hyper's server said (small bodies of known size may be retried).
    pub fn request(recv: RecvStream, headers: &HeaderMap) -> Self {
        let length = content_length(headers).or(recv.is_end_stream().then_some(0));
        H2Body {
            recv,
            data_done: false,
            length,
            open: None,
        }
    }

    pub fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if !self.data_done {
            match ready!(self.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    if let Some(open) = &self.open {
                        open.saw_data();
                    }
                    // Read: the peer may send as much again.
                    let _ = self.recv.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(e)) => return Poll::Ready(early_end(e)),
                None => self.data_done = true,
            }
        }
        match ready!(self.recv.poll_trailers(cx)) {
            Ok(t) => Poll::Ready(t.map(|t| Ok(Frame::trailers(t)))),
            Err(e) => Poll::Ready(early_end(e)),
        }
    }

    pub fn is_end_stream(&self) -> bool {
        self.recv.is_end_stream()
    }

    pub fn size_hint(&self) -> SizeHint {
        match self.length {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

/// RST_STREAM with NO_ERROR after a complete message ends the body, as
/// RFC 9113 section 8.1 says; any other error fails it.
fn early_end(e: h2::Error) -> Option<Result<Frame<Bytes>, BoxError>> {
    if e.reason() == Some(Reason::NO_ERROR) {
        None
    } else {
        Some(Err(e.into()))
    }
}

pub fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// A body on its way into an HTTP/2 stream, within the stream's
/// flow-control window; a body that fails resets the stream.
pub struct Pipe {
    body: Body,
    tx: SendStream<Bytes>,
    /// A chunk taken from the body that waits for send capacity, and
    /// whether it ends the body.
    held: Option<(Bytes, bool)>,
    /// The RST_STREAM code for a body that failed.
    reset: fn(&BoxError) -> Reason,
    /// A client connection's activity, touched as the body moves on (a
    /// response to a client; None for a request to an upstream).
    activity: Option<Arc<Activity>>,
}

impl Pipe {
    pub fn new(
        body: Body,
        tx: SendStream<Bytes>,
        reset: fn(&BoxError) -> Reason,
        activity: Option<Arc<Activity>>,
    ) -> Self {
        Pipe {
            body,
            tx,
            held: None,
            reset,
            activity,
        }
    }

    fn step(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Bounded by the body: each round sends a chunk or waits.
        loop {
            if let Poll::Ready(reason) = self.tx.poll_reset(cx) {
                return Poll::Ready(Err(h2::Error::from(reason?).into()));
            }
            if let Some((_, eos)) = &self.held {
                let eos = *eos;
                while self.tx.capacity() == 0 {
                    match ready!(self.tx.poll_capacity(cx)) {
                        Some(Ok(_)) => {}
                        Some(Err(e)) => return Poll::Ready(Err(e.into())),
                        None => return Poll::Ready(Err("the HTTP/2 stream closed".into())),
                    }
                }
                let (mut chunk, _) = self.held.take().expect("held above");
                // Send what the window allows; the rest waits for more.
                let n = self.tx.capacity().min(chunk.len());
                let rest = chunk.split_off(n);
                let last = rest.is_empty();
                self.tx.send_data(chunk, eos && last)?;
                if let Some(a) = &self.activity {
                    a.touch();
                }
                if !last {
                    self.tx.reserve_capacity(rest.len());
                    self.held = Some((rest, eos));
                    continue;
                }
                if eos {
                    return Poll::Ready(Ok(()));
                }
                continue;
            }
            match ready!(Pin::new(&mut self.body).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(chunk) => {
                        let eos = self.body.is_end_stream();
                        if chunk.is_empty() {
                            self.tx.send_data(chunk, eos)?;
                            if eos {
                                return Poll::Ready(Ok(()));
                            }
                        } else {
                            self.tx.reserve_capacity(chunk.len());
                            self.held = Some((chunk, eos));
                        }
                    }
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            self.tx.send_trailers(trailers)?;
                            return Poll::Ready(Ok(()));
                        }
                    }
                },
                Some(Err(e)) => return Poll::Ready(Err(e)),
                None => {
                    self.tx.send_data(Bytes::new(), true)?;
                    return Poll::Ready(Ok(()));
                }
            }
        }
    }
}

impl Future for Pipe {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match ready!(self.step(cx)) {
            Ok(()) => {}
            Err(e) => {
                tracing::debug!(error = %e, "body into an HTTP/2 stream failed");
                let reason = (self.reset)(&e);
                self.tx.send_reset(reason);
            }
        }
        Poll::Ready(())
    }
}
