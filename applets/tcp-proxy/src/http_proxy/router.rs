//! Where an HTTP request goes: the `--http-route` with the longest matching
//! path prefix (and a matching host, compared without the port), else the
//! listener's own destination.

use std::sync::Arc;

use crate::limits::TokenBucket;
use crate::pool::Pool;

use super::retry::RetryBudget;

/// A place requests are sent, with its own rate limit and retry budget.
pub struct Destination {
    /// Metrics label and access-log field: the route as written, or the
    /// listener address.
    pub name: String,
    pub endpoints: Endpoints,
    pub rate: Option<TokenBucket>,
    pub budget: RetryBudget,
}

pub enum Endpoints {
    Balanced(Arc<Pool>),
    /// Transparent mode: the connection's original destination.
    OriginalDst,
}

pub struct Route {
    host: Option<String>,
    prefix: String,
    pub dest: Arc<Destination>,
}

#[derive(Default)]
pub struct Router {
    routes: Vec<Route>,
}

impl Router {
    pub fn add(&mut self, host: Option<String>, prefix: String, dest: Arc<Destination>) {
        self.routes.push(Route { host, prefix, dest });
    }

    /// `host` is lower case without its port.
    pub fn find(&self, host: Option<&str>, path: &str) -> Option<&Arc<Destination>> {
        self.routes
            .iter()
            .filter(|r| r.host.is_none() || r.host.as_deref() == host)
            .filter(|r| path.starts_with(&r.prefix))
            // Longest prefix; on a tie, a route naming the host beats one that does not.
            .max_by_key(|r| (r.prefix.len(), r.host.is_some()))
            .map(|r| &r.dest)
    }
}

/// The host of an authority or Host header, lower case, without the port.
pub fn host_of(authority: &str) -> String {
    let host = if let Some(rest) = authority.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    host.to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dest(name: &str) -> Arc<Destination> {
        Arc::new(Destination {
            name: name.into(),
            endpoints: Endpoints::OriginalDst,
            rate: None,
            budget: RetryBudget::new(20.0),
        })
    }

    #[test]
    fn longest_prefix_and_host() {
        let mut r = Router::default();
        r.add(None, "/".into(), dest("root"));
        r.add(None, "/v1/".into(), dest("v1"));
        r.add(Some("api.shop".into()), "/v1/".into(), dest("api-v1"));
        r.add(Some("api.shop".into()), "/v1/orders".into(), dest("orders"));
        let name = |h: Option<&str>, p: &str| r.find(h, p).map(|d| d.name.clone());
        assert_eq!(name(Some("api.shop"), "/v1/orders/7").unwrap(), "orders");
        assert_eq!(name(Some("api.shop"), "/v1/users").unwrap(), "api-v1");
        assert_eq!(name(Some("other"), "/v1/orders").unwrap(), "v1");
        assert_eq!(name(None, "/x").unwrap(), "root");
        assert!(Router::default().find(None, "/").is_none());
    }

    #[test]
    fn hosts_lose_their_port() {
        assert_eq!(host_of("API.shop:8080"), "api.shop");
        assert_eq!(host_of("api.shop"), "api.shop");
        assert_eq!(host_of("[::1]:80"), "::1");
    }
}
