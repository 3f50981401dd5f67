//! CORS as static-web-server answers it: a request with an `Origin` that is
//! not allowed is refused with 403 (before auth), as is a preflight asking
//! for a method or header outside the allowed sets; an allowed one gets the
//! allow/expose headers on its response.

use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Method};
use sidecar_runtime::usage;

/// Methods a preflight may ask for (the only ones served).
const METHODS: HeaderValue = HeaderValue::from_static("GET, HEAD, OPTIONS");

pub struct Cors {
    /// `*`: any origin.
    any: bool,
    /// Allowed origins, `scheme://host[:port]`, compared case-insensitively.
    origins: Vec<String>,
    allow_headers: Vec<HeaderName>,
    allow_headers_value: HeaderValue,
    expose_headers_value: HeaderValue,
}

/// How a request fares against the CORS policy.
pub enum Verdict {
    /// No `Origin`: not a CORS request, nothing to add.
    NotCors,
    /// Allowed: the value of `Access-Control-Allow-Origin`.
    Allowed(HeaderValue),
    /// 403, with the reason for the log.
    Forbidden(&'static str),
}

impl Cors {
    /// Validates the three flags; `None` when no origin is configured.
    pub fn new(
        origins: &[String],
        allow: &[String],
        expose: &[String],
    ) -> anyhow::Result<Option<Cors>> {
        let origins: Vec<String> = origins
            .iter()
            .map(|o| o.trim().trim_end_matches('/').to_string())
            .filter(|o| !o.is_empty())
            .collect();
        if origins.is_empty() {
            return Ok(None);
        }
        for o in origins.iter().filter(|o| *o != "*") {
            if !o
                .split_once("://")
                .is_some_and(|(s, h)| !s.is_empty() && !h.is_empty())
                || HeaderValue::from_str(o).is_err()
            {
                return Err(usage!(
                    "--cors-allow-origins: {o:?}: expected scheme://host[:port] or *"
                ));
            }
        }
        let allow_headers = header_names("--cors-allow-headers", allow)?;
        let expose_headers = header_names("--cors-expose-headers", expose)?;
        Ok(Some(Cors {
            any: origins.iter().any(|o| o == "*"),
            origins,
            allow_headers_value: joined(&allow_headers),
            expose_headers_value: joined(&expose_headers),
            allow_headers,
        }))
    }

    /// Whether responses differ by `Origin` (so caches must `Vary` on it).
    pub fn varies(&self) -> bool {
        !self.any
    }

    /// Checks a request: its origin, and for a preflight (OPTIONS with an
    /// `Origin`) the method and headers it asks for.
    pub fn check(&self, method: &Method, headers: &HeaderMap) -> Verdict {
        let Some(origin) = headers.get(header::ORIGIN) else {
            return Verdict::NotCors;
        };
        let allowed = origin.to_str().ok().filter(|o| {
            !o.is_empty() && (self.any || self.origins.iter().any(|a| a.eq_ignore_ascii_case(o)))
        });
        if allowed.is_none() {
            return Verdict::Forbidden("origin not allowed");
        }
        if method == Method::OPTIONS {
            let asked = headers
                .get(header::ACCESS_CONTROL_REQUEST_METHOD)
                .and_then(|m| Method::from_bytes(m.as_bytes()).ok());
            if !matches!(asked, Some(Method::GET | Method::HEAD | Method::OPTIONS)) {
                return Verdict::Forbidden("preflight method not allowed");
            }
            for v in headers.get_all(header::ACCESS_CONTROL_REQUEST_HEADERS) {
                let Ok(list) = v.to_str() else {
                    return Verdict::Forbidden("preflight headers not allowed");
                };
                let ok = list.split(',').map(str::trim).all(|h| {
                    HeaderName::from_bytes(h.as_bytes())
                        .is_ok_and(|h| self.allow_headers.contains(&h))
                });
                if !ok {
                    return Verdict::Forbidden("preflight headers not allowed");
                }
            }
        }
        Verdict::Allowed(if self.any {
            HeaderValue::from_static("*")
        } else {
            origin.clone()
        })
    }

    /// The headers of an allowed response (simple or preflight, as SWS).
    pub fn decorate(&self, allow_origin: HeaderValue, h: &mut HeaderMap) {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow_origin);
        h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, METHODS);
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            self.allow_headers_value.clone(),
        );
        h.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            self.expose_headers_value.clone(),
        );
    }
}

fn header_names(flag: &str, list: &[String]) -> anyhow::Result<Vec<HeaderName>> {
    list.iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .map(|s| {
            HeaderName::from_bytes(s.as_bytes())
                .map_err(|_| usage!("{flag}: {s:?} is not a header name"))
        })
        .collect()
}

fn joined(names: &[HeaderName]) -> HeaderValue {
    let list: Vec<&str> = names.iter().map(HeaderName::as_str).collect();
    HeaderValue::from_str(&list.join(", ")).expect("header names are valid values")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cors(origins: &str) -> Cors {
        let list = |s: &str| s.split(',').map(String::from).collect::<Vec<_>>();
        Cors::new(
            &list(origins),
            &list("origin, content-type, X-Allowed"),
            &list("etag"),
        )
        .unwrap()
        .unwrap()
    }

    fn req(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn forbidden(v: Verdict) -> bool {
        matches!(v, Verdict::Forbidden(_))
    }

    #[test]
    fn origins_methods_and_headers_as_sws() {
        let c = cors("https://example.com/");
        assert!(matches!(c.check(&Method::GET, &req(&[])), Verdict::NotCors));
        assert!(forbidden(c.check(
            &Method::GET,
            &req(&[("origin", "https://example.info")])
        )));
        let ok = c.check(&Method::GET, &req(&[("origin", "https://example.com")]));
        assert!(matches!(ok, Verdict::Allowed(v) if v == "https://example.com"));
        // A preflight must name an allowed method, and only allowed headers.
        let o = ("origin", "https://example.com");
        assert!(forbidden(c.check(&Method::OPTIONS, &req(&[o]))));
        let post = ("access-control-request-method", "POST");
        assert!(forbidden(c.check(&Method::OPTIONS, &req(&[o, post]))));
        let get = ("access-control-request-method", "GET");
        let bad = ("access-control-request-headers", "x-allowed, X-Forbidden");
        assert!(forbidden(c.check(&Method::OPTIONS, &req(&[o, get, bad]))));
        let good = ("access-control-request-headers", "X-Allowed,content-type");
        assert!(matches!(
            c.check(&Method::OPTIONS, &req(&[o, get, good])),
            Verdict::Allowed(_)
        ));
    }

    #[test]
    fn any_origin_and_bad_flags() {
        let c = cors("*");
        assert!(!c.varies());
        let v = c.check(&Method::GET, &req(&[("origin", "https://x.example")]));
        assert!(matches!(v, Verdict::Allowed(v) if v == "*"));
        assert!(forbidden(c.check(&Method::GET, &req(&[("origin", "")]))));
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(Cors::new(&s(&["example.com"]), &[], &[]).is_err());
        assert!(Cors::new(&s(&["https://a"]), &s(&["bad header"]), &[]).is_err());
        assert!(Cors::new(&s(&[" "]), &[], &[]).unwrap().is_none());
    }
}
