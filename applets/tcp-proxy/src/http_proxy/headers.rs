//! Header rules of a forwarding proxy: hop-by-hop removal (RFC 9110 §7.6.1),
//! X-Forwarded-For/-Proto, x-request-id, the client identity headers, and
//! HTTP/2 cookies joined for HTTP/1.

use bytes::BytesMut;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use rand::Rng;

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Removes the headers that describe one connection, not the message:
/// Connection and every header it names, Keep-Alive, Proxy-Connection,
/// Transfer-Encoding, Upgrade, TE except `te: trailers` (gRPC needs it to
/// reach the server), and Expect (answered here). `upgrade`: keep `Upgrade` and `Connection:
/// upgrade`, the request is becoming a tunnel.
pub fn strip_hop_by_hop(h: &mut HeaderMap, upgrade: bool) {
    // Most messages carry none of them, or only `Connection: keep-alive`
    // (nginx on every HTTP/1.1 response): one pass over the names says
    // which are there, and only those are looked up and removed.
    let (mut connection, mut te, mut upgrade_header, mut other) = (false, false, false, false);
    for n in h.keys() {
        if n == header::CONNECTION {
            connection = true;
        } else if n == header::TE {
            te = true;
        } else if n == header::UPGRADE {
            upgrade_header = true;
        } else if n == KEEP_ALIVE
            || n == PROXY_CONNECTION
            || n == header::TRANSFER_ENCODING
            || n == header::EXPECT
        {
            other = true;
        }
    }
    if connection && only_keep_alive(h) {
        // What nginx puts on every HTTP/1.1 response: nothing to look up.
        h.remove(header::CONNECTION);
    } else if connection {
        // Names handled below whatever Connection says need no lookup (and
        // the usual `keep-alive` no allocation); the message's own framing
        // and identity (Host, Content-Length, the request id) are not the
        // client's to remove this way.
        let handled = |t: &str| {
            [
                "keep-alive",
                "proxy-connection",
                "transfer-encoding",
                "connection",
                "upgrade",
                "te",
                "host",
                "content-length",
                "x-request-id",
            ]
            .iter()
            .any(|n| t.eq_ignore_ascii_case(n))
        };
        let named: Vec<HeaderName> = h
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|t| !handled(t))
            .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
            .collect();
        for n in named {
            h.remove(n);
        }
        h.remove(header::CONNECTION);
    }
    if other {
        // Expect is this hop's too: the proxy answers `100 Continue` itself
        // (hyper's HTTP/1 server when the body is first read, the HTTP/2
        // server at once), as Envoy does by default. Passed on, an app that
        // answers 417 or 403 early without reading the body would take the
        // body the client sends anyway for its next request.
        for n in [
            &KEEP_ALIVE,
            &PROXY_CONNECTION,
            &header::TRANSFER_ENCODING,
            &header::EXPECT,
        ] {
            h.remove(n);
        }
    }
    if upgrade {
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else if upgrade_header {
        h.remove(header::UPGRADE);
    }
    if te {
        let trailers = h
            .get_all(header::TE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("trailers"));
        h.remove(header::TE);
        if trailers {
            h.insert(header::TE, HeaderValue::from_static("trailers"));
        }
    }
}

/// Connection is one `keep-alive`, which names no other header.
fn only_keep_alive(h: &HeaderMap) -> bool {
    let mut values = h.get_all(header::CONNECTION).iter();
    matches!(
        (values.next(), values.next()),
        (Some(v), None) if v.as_bytes().eq_ignore_ascii_case(b"keep-alive")
    )
}

/// Appends the client (`client`: its address as a header value, made once
/// per connection) to X-Forwarded-For and says how it reached us.
pub fn add_forwarded(h: &mut HeaderMap, client: &HeaderValue, tls: bool) {
    match h.entry(&X_FORWARDED_FOR) {
        header::Entry::Vacant(v) => {
            v.insert(client.clone());
        }
        // Built in one buffer and put back into the entry found: this runs
        // on every request behind another proxy (the provider side of every
        // mesh hop).
        header::Entry::Occupied(mut prior) => {
            let len = prior.iter().map(|v| v.len() + 2).sum::<usize>() + client.len();
            let mut value = BytesMut::with_capacity(len);
            for v in prior.iter().filter(|v| !v.is_empty()) {
                value.extend_from_slice(v.as_bytes());
                value.extend_from_slice(b", ");
            }
            value.extend_from_slice(client.as_bytes());
            // Parts of valid header values joined by ", " are one.
            if let Ok(v) = HeaderValue::from_maybe_shared(value.freeze()) {
                prior.insert(v);
            }
        }
    }
    h.insert(
        &X_FORWARDED_PROTO,
        HeaderValue::from_static(if tls { "https" } else { "http" }),
    );
}

static L5D_CLIENT_ID: HeaderName = HeaderName::from_static("l5d-client-id");
static XFCC: HeaderName = HeaderName::from_static("x-forwarded-client-cert");

/// A verified client identity, as Linkerd (`l5d-client-id`) and Envoy/Istio
/// (`x-forwarded-client-cert`, its `URI=` or `DNS=` element) hand it to the app.
pub struct Identity {
    l5d_client_id: HeaderValue,
    xfcc: HeaderValue,
}

impl Identity {
    pub fn of(id: &str) -> Option<Identity> {
        let kind = if id.contains("://") { "URI" } else { "DNS" };
        Some(Identity {
            l5d_client_id: HeaderValue::from_str(id).ok()?,
            xfcc: HeaderValue::from_str(&format!("{kind}={id}")).ok()?,
        })
    }
}

/// The identity headers say what this proxy verified, never what a client
/// claims: any sent by the client are dropped (Envoy's SANITIZE_SET, what
/// Linkerd's inbound proxy does), and set from the mTLS peer when there is one.
pub fn set_identity(h: &mut HeaderMap, verified: Option<&Identity>) {
    h.remove(&L5D_CLIENT_ID);
    h.remove(&XFCC);
    if let Some(id) = verified {
        h.insert(&L5D_CLIENT_ID, id.l5d_client_id.clone());
        h.insert(&XFCC, id.xfcc.clone());
    }
}

/// HTTP/2 carries each cookie in a field of its own; HTTP/1.1 servers read
/// one Cookie line, so they are joined with "; " (RFC 9113 §8.2.3).
pub fn join_cookies(h: &mut HeaderMap) {
    let mut values = h.get_all(header::COOKIE).iter();
    if values.nth(1).is_none() {
        return;
    }
    let joined: Vec<u8> = h
        .get_all(header::COOKIE)
        .iter()
        .map(HeaderValue::as_bytes)
        .collect::<Vec<_>>()
        .join(&b"; "[..]);
    if let Ok(v) = HeaderValue::from_bytes(&joined) {
        h.insert(header::COOKIE, v);
    }
}

/// The request's id: kept when the client sent one, else a new random one
/// (32 hex digits).
pub fn request_id(h: &mut HeaderMap) -> HeaderValue {
    if let Some(id) = h.get_mut(&X_REQUEST_ID) {
        // Never indexed on the way on either (see below): HPACK does not
        // say which fields were sent never-indexed, so a sidecar behind
        // another would insert every id into its table towards the app.
        id.set_sensitive(true);
        return id.clone();
    }
    // A request from the edge: this id, X-Forwarded-For and -Proto are
    // about to be added to the map hyper parsed, which is full; room for
    // them is made once instead of each insert growing it. A request that
    // brings an id came through another proxy and has the other two
    // already: growing its map for nothing cost 1,200 instructions.
    h.reserve(3);
    let n: u128 = rand::thread_rng().gen();
    let mut hex = [0u8; 32];
    for (i, d) in hex.iter_mut().enumerate() {
        *d = b"0123456789abcdef"[(n >> (124 - 4 * i)) as usize & 0xf];
    }
    let mut id = HeaderValue::from_bytes(&hex).expect("hex is a valid header value");
    // Never indexed by HPACK: a value seen once would only push reusable
    // entries out of the HTTP/2 header tables.
    id.set_sensitive(true);
    h.insert(&X_REQUEST_ID, id.clone());
    id
}

/// What makes an upstream's response one no proxy may pass on, if
/// anything: framing given two ways, Content-Length and Transfer-Encoding
/// (response splitting: refused rather than passed on under one reading,
/// RFC 9112 §6.1, as Envoy answers 502), or a 101 to a request that asked
/// for no upgrade (upgrades take another path, `tunnel::upgrade`).
pub fn response_problem<B>(resp: &http::Response<B>) -> Option<&'static str> {
    let h = resp.headers();
    if resp.status() == http::StatusCode::SWITCHING_PROTOCOLS {
        Some("101 Switching Protocols to a request that asked for no upgrade")
    } else if h.contains_key(header::TRANSFER_ENCODING) && h.contains_key(header::CONTENT_LENGTH) {
        Some("both Content-Length and Transfer-Encoding")
    } else {
        None
    }
}

/// What is wrong with a request's authority, if anything: an HTTP/1.1
/// request without Host, a Host that is no `host[:port]` (RFC 9112 §3.2:
/// a server must answer 400), or userinfo in the target (RFC 9110 §4.2.4).
/// Each would let the route and the app read different hosts.
pub fn authority_problem(req: &http::Request<impl Sized>) -> Option<&'static str> {
    let uri_authority = req.uri().authority();
    if uri_authority.is_some_and(|a| a.as_str().contains('@')) {
        return Some("userinfo in the request target");
    }
    match req.headers().get(header::HOST) {
        None if req.version() == http::Version::HTTP_11 && uri_authority.is_none() => {
            Some("missing Host")
        }
        Some(host) if !is_authority(host.as_bytes()) => Some("invalid Host"),
        _ => None,
    }
}

/// `host[:port]` as RFC 3986 spells it: an IP literal in brackets, or a
/// reg-name (an IPv4 address among them) without `:`, then at most one
/// port of digits. Empty is allowed (a target without an authority).
fn is_authority(value: &[u8]) -> bool {
    if value.is_empty() {
        return true;
    }
    let (host_ok, rest) = match value.strip_prefix(b"[") {
        Some(literal) => match literal.iter().position(|&c| c == b']') {
            Some(end) => (
                end > 0
                    && literal[..end]
                        .iter()
                        .all(|&c| c.is_ascii_hexdigit() || c == b':' || c == b'.'),
                &literal[end + 1..],
            ),
            None => return false,
        },
        None => {
            let end = value.iter().position(|&c| c == b':').unwrap_or(value.len());
            let host = &value[..end];
            (
                !host.is_empty()
                    && host
                        .iter()
                        .all(|&c| c.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=%".contains(&c)),
                &value[end..],
            )
        }
    };
    let port_ok = match rest.strip_prefix(b":") {
        Some(port) => port.len() <= 5 && port.iter().all(u8::is_ascii_digit),
        None => rest.is_empty(),
    };
    host_ok && port_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorities_that_routes_and_apps_could_read_apart_are_named() {
        let req = |version, target: &str, host: Option<&str>| {
            let mut b = http::Request::builder().version(version).uri(target);
            if let Some(h) = host {
                b = b.header("host", h);
            }
            b.body(()).unwrap()
        };
        let v11 = http::Version::HTTP_11;
        assert_eq!(authority_problem(&req(v11, "/", Some("api.shop:80"))), None);
        assert_eq!(authority_problem(&req(v11, "/", Some("[::1]:80"))), None);
        assert_eq!(authority_problem(&req(v11, "/", Some(""))), None);
        assert_eq!(
            authority_problem(&req(http::Version::HTTP_10, "/", None)),
            None
        );
        assert_eq!(authority_problem(&req(v11, "http://a/", None)), None);
        assert_eq!(
            authority_problem(&req(v11, "/", None)),
            Some("missing Host")
        );
        assert_eq!(
            authority_problem(&req(v11, "/", Some("10.0.0.1:8080"))),
            None
        );
        for bad in [
            "a b",
            "secret.local/foo",
            "a@b",
            "a\\b",
            "api.shop:80:90",
            "[api.shop]",
            "api.shop:abc",
            "api.shop:999999",
            "::1",
            "[::1",
            ":80",
        ] {
            assert_eq!(
                authority_problem(&req(v11, "/", Some(bad))),
                Some("invalid Host"),
                "{bad}"
            );
        }
        assert_eq!(
            authority_problem(&req(
                v11,
                "http://other@secret.local/x",
                Some("secret.local")
            )),
            Some("userinfo in the request target")
        );
    }

    #[test]
    fn hop_by_hop_goes_te_trailers_stays() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "keep-alive, x-secret".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert(header::TE, "trailers, deflate".parse().unwrap());
        h.insert(header::UPGRADE, "websocket".parse().unwrap());
        h.insert("x-app", "kept".parse().unwrap());
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 2, "{h:?}");
        assert_eq!(h[header::TE], "trailers");
        assert_eq!(h["x-app"], "kept");

        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "Keep-Alive".parse().unwrap());
        h.insert(header::CONTENT_LENGTH, "2".parse().unwrap());
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1, "{h:?}");

        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "Upgrade, x-secret".parse().unwrap());
        h.insert(header::UPGRADE, "websocket".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h.len(), 2, "{h:?}");
        assert_eq!(h[header::CONNECTION], "upgrade");
        assert_eq!(h[header::UPGRADE], "websocket");
    }

    #[test]
    fn forwarded_appends() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "1.2.3.4".parse().unwrap());
        let client = HeaderValue::from_static("10.0.0.1");
        add_forwarded(&mut h, &client, false);
        assert_eq!(h["x-forwarded-for"], "1.2.3.4, 10.0.0.1");
        h.append("x-forwarded-for", "10.0.0.2".parse().unwrap());
        add_forwarded(&mut h, &client, false);
        assert_eq!(
            h["x-forwarded-for"],
            "1.2.3.4, 10.0.0.1, 10.0.0.2, 10.0.0.1"
        );
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(h["x-forwarded-proto"], "http");
        let mut h = HeaderMap::new();
        add_forwarded(&mut h, &client, true);
        assert_eq!(h["x-forwarded-for"], "10.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "https");
    }

    #[test]
    fn request_id_kept_or_made() {
        let mut h = HeaderMap::new();
        let id = request_id(&mut h);
        assert_eq!(id.len(), 32);
        assert!(id.to_str().unwrap().bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(request_id(&mut h), id);
        assert_ne!(request_id(&mut HeaderMap::new()), id);
        let mut h = HeaderMap::new();
        h.insert(&X_REQUEST_ID, "from-the-client".parse().unwrap());
        assert_eq!(request_id(&mut h), "from-the-client");
        assert!(h[&X_REQUEST_ID].is_sensitive(), "never indexed onwards");
    }

    #[test]
    fn identity_headers_are_what_was_verified() {
        let mut h = HeaderMap::new();
        h.insert("l5d-client-id", HeaderValue::from_static("admin"));
        h.insert(
            "x-forwarded-client-cert",
            HeaderValue::from_static("URI=spiffe://x/evil"),
        );
        set_identity(&mut h, None);
        assert!(h.get("l5d-client-id").is_none() && h.get("x-forwarded-client-cert").is_none());
        let id = Identity::of("spiffe://cluster.local/ns/shop/sa/web").unwrap();
        set_identity(&mut h, Some(&id));
        assert_eq!(h["l5d-client-id"], "spiffe://cluster.local/ns/shop/sa/web");
        assert_eq!(
            h["x-forwarded-client-cert"],
            "URI=spiffe://cluster.local/ns/shop/sa/web"
        );
    }

    #[test]
    fn cookies_of_an_http2_request_are_joined_for_http1() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1"));
        h.append(header::COOKIE, HeaderValue::from_static("b=2"));
        join_cookies(&mut h);
        let all: Vec<_> = h.get_all(header::COOKIE).iter().collect();
        assert_eq!(all, ["a=1; b=2"]);
    }
}
