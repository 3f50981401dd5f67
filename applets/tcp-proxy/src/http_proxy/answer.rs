//! Answers the proxy makes itself. Each has a one-line body naming the
//! cause, so a user reading `curl` output knows it was the proxy and why.

use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};

use super::Body;

#[derive(Debug, Clone, Copy)]
pub enum Local {
    /// --http-rate-limit; how long until a request would be admitted.
    RateLimited(Duration),
    /// The route has no endpoint (discovery found none).
    NoEndpoints,
    /// Every endpoint fails its health check or is ejected.
    NoHealthyEndpoints,
    /// Every endpoint is at --max-pending-requests.
    UpstreamFull,
    /// No connection to any endpoint tried.
    ConnectFailed,
    /// The upstream connection failed after the request was sent.
    Reset,
    /// The upstream's response is one no proxy may pass on: what is wrong
    /// with it (a head that does not parse, framing given two ways, a 101
    /// nobody asked for).
    BadResponse(&'static str),
    /// --http-request-timeout passed before the response started.
    Timeout,
    BadRequest(&'static str),
    /// The client went away while sending its request body (closed its
    /// connection, or reset its HTTP/2 stream): nobody gets this answer,
    /// it is counted and logged as nginx's 499.
    ClientClosed,
}

impl Local {
    pub fn status(self) -> StatusCode {
        match self {
            Local::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            Local::NoEndpoints | Local::NoHealthyEndpoints | Local::UpstreamFull => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Local::ConnectFailed | Local::Reset | Local::BadResponse(_) => StatusCode::BAD_GATEWAY,
            Local::Timeout => StatusCode::GATEWAY_TIMEOUT,
            Local::BadRequest(_) => StatusCode::BAD_REQUEST,
            Local::ClientClosed => StatusCode::from_u16(499).expect("499 is a valid status code"),
        }
    }

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Local::RateLimited(_) => "rate_limited",
            Local::NoEndpoints => "no_endpoints",
            Local::NoHealthyEndpoints => "no_healthy_endpoints",
            Local::UpstreamFull => "upstream_full",
            Local::ConnectFailed => "connect_failed",
            Local::Reset => "upstream_reset",
            Local::BadResponse(_) => "bad_response",
            Local::Timeout => "timeout",
            Local::BadRequest(_) => "bad_request",
            Local::ClientClosed => "client_closed",
        }
    }

    fn message(self) -> String {
        match self {
            Local::RateLimited(_) => "rate limit of this route exceeded (--http-rate-limit)".into(),
            Local::NoEndpoints => "no endpoint available for this route".into(),
            Local::NoHealthyEndpoints => {
                "no healthy endpoint for this route (health checks, outlier ejection)".into()
            }
            Local::UpstreamFull => "every endpoint has its maximum of pending requests or \
                                     connections (--max-pending-requests, \
                                     --max-connections-per-upstream)"
                .into(),
            Local::ConnectFailed => "cannot connect to an upstream endpoint".into(),
            Local::Reset => "upstream connection failed before the response".into(),
            Local::BadResponse(what) => format!("bad upstream response: {what}"),
            Local::Timeout => "no response within --http-request-timeout".into(),
            Local::BadRequest(what) => format!("bad request: {what}"),
            Local::ClientClosed => "the client closed the request".into(),
        }
    }

    /// The gRPC status for this cause (gRPC's HTTP mapping, with the
    /// meaningful codes for a rate limit and a deadline, as Linkerd and
    /// Envoy answer).
    fn grpc_status(self) -> u16 {
        match self {
            Local::RateLimited(_) => 8, // RESOURCE_EXHAUSTED
            Local::Timeout => 4,        // DEADLINE_EXCEEDED
            Local::BadRequest(_) => 13, // INTERNAL
            Local::ClientClosed => 1,   // CANCELLED
            _ => 14,                    // UNAVAILABLE
        }
    }

    /// The answer: to a gRPC client a trailers-only response (HTTP 200,
    /// `grpc-status` and `grpc-message`), which gRPC libraries turn into a
    /// status naming the cause; to others a one-line text body.
    pub fn response(self, grpc: bool) -> Response<Body> {
        if grpc {
            let mut resp = Response::new(Body::full(Bytes::new()));
            let h = resp.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/grpc"),
            );
            h.insert("grpc-status", HeaderValue::from(self.grpc_status()));
            if let Ok(m) = HeaderValue::try_from(format!("tcp-proxy: {}", self.message())) {
                h.insert("grpc-message", m);
            }
            return resp;
        }
        let mut resp = Response::new(Body::full(format!("tcp-proxy: {}\n", self.message())));
        *resp.status_mut() = self.status();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if let Local::RateLimited(wait) = self {
            let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

/// A gRPC request: its content type is `application/grpc` or a subtype.
pub fn is_grpc(headers: &http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// The raw 400 for a request-smuggling spelling, which hyper never reads
/// (it would accept some of them; see `head_guard`).
pub fn refuse_smuggling(cause: &str) -> Vec<u8> {
    let body = format!("tcp-proxy: request smuggling refused: {cause}\n");
    format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain; charset=utf-8\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}
