//! One smart HTTP request as libgit2 makes it: redirects, 401s answered
//! with credentials, and the checks on the response, with libgit2's
//! messages (`transports/http.c`).

use std::future::Future;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{HeaderMap, ACCEPT, CONTENT_TYPE, COOKIE, LOCATION, WWW_AUTHENTICATE};
use reqwest::{Method, StatusCode};
use sidecar_runtime::error::causes;
use tokio::runtime::Handle;
use tokio::time::Instant;
use url::Url;

use super::session::Current;

/// libgit2's `GIT_HTTP_REPLAY_MAX`: requests one read may make.
const REPLAY_MAX: usize = 15;

/// What a request of one service looks like.
#[derive(Clone, Copy)]
pub struct Service {
    /// Appended to the repository URL.
    path: &'static str,
    query: Option<&'static str>,
    /// The body's type: a POST has one, a GET none.
    request_type: Option<&'static str>,
    response_type: &'static str,
    /// The first request of a connection: it may be redirected and asked
    /// for credentials.
    initial: bool,
}

pub const LIST: Service = Service {
    path: "/info/refs",
    query: Some("service=git-upload-pack"),
    request_type: None,
    response_type: "application/x-git-upload-pack-advertisement",
    initial: true,
};

pub const FETCH: Service = Service {
    path: "/git-upload-pack",
    query: None,
    request_type: Some("application/x-git-upload-pack-request"),
    response_type: "application/x-git-upload-pack-result",
    initial: false,
};

/// What a transport's requests share.
pub struct Shared {
    client: reqwest::Client,
    handle: Handle,
    /// `--sync-timeout` from the connect: a hard limit for the whole
    /// exchange, as upstream's context deadline is for its git process. The
    /// client's read timeout alone restarts at every byte, so a server
    /// trickling bytes could hold the sync forever.
    deadline: Instant,
    timeout: Duration,
    /// The sync's credentials and cookies (none outside a sync).
    sync: Option<Current>,
    server: Mutex<Server>,
}

/// Where requests go (moved by a redirect), and which credentials were
/// offered: kept until libgit2 closes the connection.
#[derive(Default)]
struct Server {
    url: Option<Url>,
    userpass: Option<(String, String)>,
    url_credentials_offered: bool,
    own_credentials_offered: bool,
}

impl Shared {
    pub fn new(
        client: reqwest::Client,
        handle: Handle,
        timeout: Duration,
        sync: Option<Current>,
    ) -> Shared {
        Shared {
            client,
            handle,
            deadline: Instant::now() + timeout,
            timeout,
            sync,
            server: Mutex::default(),
        }
    }

    /// Runs a request's future to its end on the runtime, or to the
    /// deadline; libgit2 calls from a blocking thread.
    pub fn block_on<F: Future>(&self, f: F) -> Result<F::Output, String> {
        let _entered = self.handle.enter();
        self.handle
            .block_on(tokio::time::timeout_at(self.deadline, f))
            .map_err(|_| {
                format!(
                    "timed out after {}",
                    humantime::format_duration(self.timeout)
                )
            })
    }

    fn auth(&self) -> Option<&crate::auth::Auth> {
        self.sync.as_ref().map(|s| &s.auth)
    }

    fn server(&self) -> MutexGuard<'_, Server> {
        self.server.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A request to `url` begins; after a redirect the connection's
    /// requests keep going where it pointed.
    pub fn start(&self, url: &str) -> Result<(), String> {
        let mut server = self.server();
        if server.url.is_none() {
            server.url = Some(Url::parse(url).map_err(|e| format!("malformed URL: {e}"))?);
        }
        Ok(())
    }

    /// libgit2 closed the connection: the next one starts afresh.
    pub fn reset(&self) {
        *self.server() = Server::default();
    }

    /// Sends one request of `service`, following redirects and answering
    /// 401s as libgit2 does, and returns the response once it is the
    /// expected one.
    pub async fn send(&self, service: Service, body: Bytes) -> Result<reqwest::Response, String> {
        let mut stale_retried = false;
        for _ in 0..REPLAY_MAX {
            let (url, userpass) = {
                let server = self.server();
                let base = server.url.clone().ok_or("http(s): no URL")?;
                (service.url(&base), server.userpass.clone())
            };
            let mut req = self
                .client
                .request(service.method(), url.clone())
                .header(ACCEPT, service.accept());
            if let Some(t) = service.request_type {
                req = req.header(CONTENT_TYPE, t).body(body.clone());
            }
            if let Some((user, pass)) = userpass {
                req = req.basic_auth(user, Some(pass));
            }
            if let Some(cookie) = self.auth().and_then(|a| a.cookie_header(url.as_str())) {
                req = req.header(COOKIE, cookie);
            }
            let resp = match req.send().await {
                Ok(resp) => resp,
                // A kept-alive connection the server or proxy had closed
                // (tinyproxy closes after each response without saying
                // so): sent again once on a new one, as curl does. Both
                // services are safe to repeat.
                Err(e) if !stale_retried && closed_before_answer(&e) => {
                    stale_retried = true;
                    continue;
                }
                Err(e) => return Err(describe(e)),
            };
            let status = resp.status();
            if is_redirect(status) {
                if !service.initial {
                    return Err("unexpected redirect".into());
                }
                self.redirect(resp.headers(), service)?;
                continue;
            }
            if status == StatusCode::UNAUTHORIZED {
                if !service.initial {
                    return Err("unexpected authentication failure".into());
                }
                self.credentials(resp.headers())?;
                continue;
            }
            if status != StatusCode::OK {
                return Err(status_error(status));
            }
            let Some(ct) = resp.headers().get(CONTENT_TYPE) else {
                return Err("no content-type header in response".into());
            };
            if ct.as_bytes() != service.response_type.as_bytes() {
                return Err(format!(
                    "invalid content-type: '{}'",
                    String::from_utf8_lossy(ct.as_bytes())
                ));
            }
            return Ok(resp);
        }
        Err("too many redirects or authentication replays".into())
    }

    /// Points the connection where a redirect says.
    fn redirect(&self, headers: &HeaderMap, service: Service) -> Result<(), String> {
        let location = headers
            .get(LOCATION)
            .and_then(|l| l.to_str().ok())
            .ok_or("redirect without location")?;
        let mut server = self.server();
        let base = server.url.as_ref().ok_or("http(s): no URL")?;
        let offsite = self.sync.as_ref().is_none_or(|s| s.offsite_redirects);
        let to = redirected(base, location, service, offsite)?;
        server.move_to(to);
        Ok(())
    }

    /// `handle_auth`: the URL's user and password first, then git-sync's
    /// credentials for the URL, each once.
    fn credentials(&self, headers: &HeaderMap) -> Result<(), String> {
        let basic = headers.get_all(WWW_AUTHENTICATE).iter().any(|v| {
            v.to_str().is_ok_and(|v| {
                v.split_whitespace()
                    .next()
                    .is_some_and(|s| s.eq_ignore_ascii_case("basic"))
            })
        });
        if !basic {
            return Err("server requires authentication that we do not support".into());
        }
        let mut server = self.server();
        let url = server.url.clone().ok_or("http(s): no URL")?;
        if !server.url_credentials_offered && !url.username().is_empty() {
            server.url_credentials_offered = true;
            server.userpass = Some((decode(url.username()), decode(url.password().unwrap_or(""))));
            return Ok(());
        }
        // One try: the same answer again would be refused again.
        if server.own_credentials_offered {
            return Err("authentication failed".into());
        }
        server.own_credentials_offered = true;
        let found = self.auth().and_then(|a| a.userpass_for(url.as_str()));
        let c = found.ok_or("authentication required but no credentials configured")?;
        server.userpass = Some((c.username.clone(), c.password.clone()));
        Ok(())
    }
}

impl Server {
    /// Requests go to `to` from now on. Credentials offered to one origin
    /// are never sent to another (curl and git do not either): at a new
    /// scheme, host or port the next 401 picks them afresh for that URL.
    fn move_to(&mut self, to: Url) {
        let same_origin = self
            .url
            .as_ref()
            .is_some_and(|from| from.origin() == to.origin());
        if !same_origin {
            self.userpass = None;
            self.url_credentials_offered = false;
            self.own_credentials_offered = false;
        }
        self.url = Some(to);
    }
}

/// The message for a status other than 200, 401 and redirects, in git's
/// words where git has them.
fn status_error(status: StatusCode) -> String {
    match status {
        StatusCode::NOT_FOUND => "repository not found (HTTP 404)".into(),
        StatusCode::FORBIDDEN => "access denied (HTTP 403)".into(),
        s => format!("unexpected HTTP status code {}", s.as_u16()),
    }
}

impl Service {
    fn method(&self) -> Method {
        match self.request_type {
            Some(_) => Method::POST,
            None => Method::GET,
        }
    }

    /// libgit2 names the type it wants for a POST only.
    fn accept(&self) -> &'static str {
        match self.request_type {
            Some(_) => self.response_type,
            None => "*/*",
        }
    }

    /// The request's URL under the repository's, without the user and
    /// password (they are sent only when asked for).
    fn url(&self, base: &Url) -> Url {
        let mut u = base.clone();
        let path = format!("{}{}", base.path().trim_end_matches('/'), self.path);
        u.set_path(&path);
        u.set_query(self.query);
        let _ = u.set_username("");
        let _ = u.set_password(None);
        u
    }
}

/// `git_net_url_apply_redirect`: an absolute path replaces the URL's path;
/// a URL may change host when `offsite` allows, and never go from https to
/// http. The service's own
/// path is taken off, leaving the repository's URL.
fn redirected(base: &Url, location: &str, service: Service, offsite: bool) -> Result<Url, String> {
    let mut to = if location.starts_with('/') {
        let (path, query) = location
            .split_once('?')
            .map_or((location, None), |(p, q)| (p, Some(q)));
        let mut u = base.clone();
        u.set_path(path);
        u.set_query(query);
        u
    } else {
        Url::parse(location).map_err(|_| format!("invalid redirect location '{location}'"))?
    };
    if to.scheme() != base.scheme() && to.scheme() != "https" {
        return Err(format!(
            "cannot redirect from '{}' to '{}'",
            base.scheme(),
            to.scheme()
        ));
    }
    let host = |u: &Url| u.host_str().map(str::to_ascii_lowercase);
    if !offsite && host(&to) != host(base) {
        return Err(format!(
            "cannot redirect from '{}' to '{}'",
            base.host_str().unwrap_or_default(),
            to.host_str().unwrap_or_default()
        ));
    }
    if to.query() == service.query {
        if let Some(repo) = to.path().strip_suffix(service.path).map(str::to_string) {
            to.set_path(&repo);
            to.set_query(None);
        }
    }
    Ok(to)
}

/// The connection closed after the request was sent and before any answer.
fn closed_before_answer(e: &reqwest::Error) -> bool {
    causes(e).any(|c| {
        c.downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_incomplete_message)
    })
}

fn is_redirect(s: StatusCode) -> bool {
    matches!(s.as_u16(), 301 | 302 | 303 | 307 | 308)
}

fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// A request's error with its causes (the certificate problem, the refused
/// connection), without the URL: the caller names the repository.
pub fn describe(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut msg = e.to_string();
    for cause in causes(&e) {
        let text = cause.to_string();
        if !msg.contains(&text) {
            msg = format!("{msg}: {text}");
        }
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn requests_go_under_the_repository_without_its_credentials() {
        let base = url("https://u:p@example.com/org/repo.git/");
        assert_eq!(
            LIST.url(&base).as_str(),
            "https://example.com/org/repo.git/info/refs?service=git-upload-pack"
        );
        assert_eq!(
            FETCH.url(&base).as_str(),
            "https://example.com/org/repo.git/git-upload-pack"
        );
        assert_eq!((LIST.method(), LIST.accept()), (Method::GET, "*/*"));
        assert_eq!(
            (FETCH.method(), FETCH.accept()),
            (Method::POST, "application/x-git-upload-pack-result")
        );
    }

    #[test]
    fn credentials_stay_with_their_origin_across_redirects() {
        let mut server = Server {
            url: Some(url("https://git.example/org/repo.git")),
            userpass: Some(("u".into(), "secret".into())),
            url_credentials_offered: true,
            own_credentials_offered: true,
        };
        // Same scheme, host and port: the answered 401 still holds.
        server.move_to(url("https://git.example/moved/repo.git"));
        assert_eq!(
            server.userpass.as_ref().map(|u| u.1.as_str()),
            Some("secret")
        );
        // Another host: nothing is sent until that host asks.
        server.move_to(url("https://mirror.example/org/repo.git"));
        assert!(server.userpass.is_none());
        assert!(!server.url_credentials_offered && !server.own_credentials_offered);
        // Another port of the same host is another origin too.
        server.userpass = Some(("u".into(), "secret".into()));
        server.move_to(url("https://mirror.example:8443/org/repo.git"));
        assert!(server.userpass.is_none());
    }

    #[test]
    fn statuses_are_named_as_git_names_them() {
        assert_eq!(
            status_error(StatusCode::NOT_FOUND),
            "repository not found (HTTP 404)"
        );
        assert_eq!(
            status_error(StatusCode::FORBIDDEN),
            "access denied (HTTP 403)"
        );
        assert_eq!(
            status_error(StatusCode::BAD_GATEWAY),
            "unexpected HTTP status code 502"
        );
    }

    #[test]
    fn redirects_as_libgit2_applies_them() {
        let base = url("http://example.com/repo");
        // The listing's own path comes off: the rounds go to the new place.
        let to = redirected(
            &base,
            "https://mirror.example/new/repo.git/info/refs?service=git-upload-pack",
            LIST,
            true,
        )
        .unwrap();
        assert_eq!(to.as_str(), "https://mirror.example/new/repo.git");
        let to = redirected(
            &base,
            "/other/info/refs?service=git-upload-pack",
            LIST,
            false,
        )
        .unwrap();
        assert_eq!(to.as_str(), "http://example.com/other");
        // A location that is not the listing is the repository itself.
        let to = redirected(&base, "/elsewhere/", LIST, false).unwrap();
        assert_eq!(to.as_str(), "http://example.com/elsewhere/");

        let e = redirected(
            &url("https://example.com/r"),
            "http://example.com/r",
            LIST,
            true,
        );
        assert_eq!(e.unwrap_err(), "cannot redirect from 'https' to 'http'");
        let e = redirected(&base, "ftp://example.com/r", LIST, true);
        assert_eq!(e.unwrap_err(), "cannot redirect from 'http' to 'ftp'");
        assert!(redirected(&base, "relative/path", LIST, true).is_err());
        // `http.followRedirects=false` keeps the host.
        let e = redirected(&base, "https://mirror.example/r", LIST, false);
        assert_eq!(
            e.unwrap_err(),
            "cannot redirect from 'example.com' to 'mirror.example'"
        );
        let to = redirected(&base, "https://EXAMPLE.com/r", LIST, false).unwrap();
        assert_eq!(to.as_str(), "https://example.com/r");
    }
}
