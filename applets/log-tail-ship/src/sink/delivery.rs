//! The delivery loop every HTTP sink runs; a sink only says how to build a
//! request for some events, where to send it and (Elasticsearch) what a 2xx
//! answer means per event.
//!
//! Per request: 2xx settles it; 429, 5xx, 408, 401/403 and connection errors
//! retry it with backoff, forever (the server may accept it later); 413 is
//! not a verdict on the events but on the request's size, so the events are
//! split in halves, sent in order, down to single events, and only an event
//! refused on its own is dead-lettered; any other status dead-letters the
//! request's events with the server's reason.

use std::collections::VecDeque;

use bytes::Bytes;
use reqwest::header::HeaderMap;

use super::Common;
use crate::batch::Batch;

/// What a sink adds to the shared loop.
pub trait Protocol {
    /// Names the sink in logs.
    const NAME: &'static str;
    const CONTENT_TYPE: &'static str;
    /// The flags to check when the server refuses the credentials.
    const CREDENTIALS: &'static str;

    fn url(&self) -> &str;

    fn headers(&self) -> &HeaderMap;

    /// The request body for the batch's events `events`, in that order.
    fn body(&mut self, batch: &Batch, events: &[usize]) -> Vec<u8>;

    /// Settles `events` after a 2xx answer `resp`: returns those to send
    /// again, or None if the answer does not say what happened. By default
    /// a 2xx acknowledges every event.
    fn accepted(
        &self,
        common: &Common,
        _batch: &Batch,
        events: &[usize],
        _resp: &[u8],
    ) -> Option<Vec<usize>> {
        common.metrics.events_acked.inc_by(events.len() as u64);
        Some(Vec::new())
    }

    /// The server failed (5xx) or was unreachable: move to another one if
    /// there is one.
    fn failover(&mut self) {}
}

/// A sink: the shared parts and its protocol.
pub struct Delivery<P> {
    common: Common,
    proto: P,
}

impl<P: Protocol> Delivery<P> {
    pub fn new(common: Common, proto: P) -> Delivery<P> {
        Delivery { common, proto }
    }

    /// Returns once every event of the batch is acknowledged or dead-lettered.
    pub async fn deliver(&mut self, batch: &mut Batch) {
        // A body the reader built as the request is sent as it is.
        let mut whole = batch.share();
        let batch = &*batch;
        let mut parts = VecDeque::from([(0..batch.len()).collect::<Vec<_>>()]);
        while let Some(part) = parts.pop_front() {
            let first = whole.take();
            let Err(TooLarge { pending, reason }) = self.deliver_part(batch, part, first).await
            else {
                continue;
            };
            if pending.len() == 1 {
                tracing::error!(
                    sink = P::NAME,
                    reason,
                    "a single event is over the request size limit; it goes to the dead letter"
                );
                self.common.dead_letter.reject(
                    &self.common.metrics,
                    batch.doc(pending[0]),
                    Some(413),
                    &reason,
                );
                continue;
            }
            tracing::warn!(
                sink = P::NAME,
                events = pending.len(),
                "request too large (413); splitting it in halves"
            );
            self.common.metrics.retries.inc();
            let mut first = pending;
            let second = first.split_off(first.len() / 2);
            parts.push_front(second);
            parts.push_front(first);
        }
    }

    /// Sends the `pending` events until each is settled, or gives them back
    /// when the request as a whole is too large. `body` is their request
    /// body if it is already built.
    async fn deliver_part(
        &mut self,
        batch: &Batch,
        mut pending: Vec<usize>,
        body: Option<Bytes>,
    ) -> Result<(), TooLarge> {
        let common = &self.common;
        let mut backoff = common.backoff();
        // Encoded once per set of events; a retry of the same set resends it.
        let mut request = body.map(|b| common.encode(b));
        loop {
            let (body, encoding) = request
                .get_or_insert_with(|| common.encode(Bytes::from(self.proto.body(batch, &pending))))
                .clone();
            let url = self.proto.url();
            let redacted = sidecar_runtime::redact::redact_url(url);
            let res = post(
                common,
                url,
                body,
                encoding,
                P::CONTENT_TYPE,
                self.proto.headers(),
            )
            .await;
            match res {
                Ok((s, resp)) if (200..300).contains(&s) => {
                    match self.proto.accepted(common, batch, &pending, &resp) {
                        Some(retry) if retry.is_empty() => return Ok(()),
                        Some(retry) => {
                            tracing::warn!(sink = P::NAME, url = %redacted, events = retry.len(), "events rejected for now (429/5xx); retrying them");
                            common.metrics.retries.inc_by(retry.len() as u64);
                            pending = retry;
                            request = None;
                        }
                        None => {
                            tracing::warn!(sink = P::NAME, url = %redacted, body = %excerpt(&resp), "unreadable response; retrying the request");
                            common.metrics.retries.inc();
                        }
                    }
                }
                Ok((s @ (401 | 403), resp)) => {
                    tracing::error!(sink = P::NAME, url = %redacted, status = s, body = %excerpt(&resp), "the server refused the credentials; retrying (check {})", P::CREDENTIALS);
                    common.metrics.retries.inc();
                }
                Ok((s, resp)) if retryable(s) => {
                    tracing::warn!(sink = P::NAME, url = %redacted, status = s, body = %excerpt(&resp), "request failed; retrying");
                    common.metrics.retries.inc();
                    if s >= 500 {
                        self.proto.failover();
                    }
                }
                Ok((413, resp)) => {
                    let reason = format!("HTTP 413: {}", excerpt(&resp));
                    return Err(TooLarge { pending, reason });
                }
                Ok((s, resp)) => {
                    let reason = format!("HTTP {s}: {}", excerpt(&resp));
                    tracing::error!(sink = P::NAME, url = %redacted, status = s, reason, "request rejected; events go to the dead letter");
                    for &i in &pending {
                        common
                            .dead_letter
                            .reject(&common.metrics, batch.doc(i), Some(s), &reason);
                    }
                    return Ok(());
                }
                Err(e) => {
                    tracing::warn!(sink = P::NAME, url = %redacted, error = %e, "server unreachable; retrying");
                    common.metrics.retries.inc();
                    self.proto.failover();
                }
            }
            tokio::time::sleep(backoff.next_delay()).await;
        }
    }
}

/// The events of a request refused as too large, to be sent in smaller parts.
struct TooLarge {
    pending: Vec<usize>,
    reason: String,
}

/// A short, single-line excerpt of a response body for logs and dead letters.
fn excerpt(body: &[u8]) -> String {
    let s = String::from_utf8_lossy(&body[..body.len().min(512)]);
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Whether a status is worth retrying: the server may accept the same
/// request later (overload, outage, credentials being rotated).
fn retryable(status: u16) -> bool {
    matches!(status, 401 | 403 | 408 | 429) || status >= 500
}

/// One POST; the response body is read whole (bulk responses are needed).
async fn post(
    common: &Common,
    url: &str,
    body: Bytes,
    encoding: Option<&str>,
    content_type: &str,
    headers: &reqwest::header::HeaderMap,
) -> Result<(u16, Bytes), reqwest::Error> {
    let mut req = common
        .client
        .post(url)
        .headers(headers.clone())
        .header(reqwest::header::CONTENT_TYPE, content_type)
        .body(body);
    if let Some(enc) = encoding {
        req = req.header(reqwest::header::CONTENT_ENCODING, enc);
    }
    let mut resp = req.send().await?;
    let status = resp.status().as_u16();
    // A bulk response is about 100 bytes per item; more than this is a
    // misbehaving server, and keeping it would cost unbounded memory.
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        if body.len() + chunk.len() > MAX_RESPONSE {
            tracing::warn!(
                url,
                "response body over {MAX_RESPONSE} bytes; keeping its start"
            );
            break;
        }
        body.extend_from_slice(&chunk);
    }
    Ok((status, Bytes::from(body)))
}

const MAX_RESPONSE: usize = 64 << 20;
