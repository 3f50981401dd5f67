//! The `http://` and `https://` transports (git's smart HTTP protocol), in
//! place of libgit2's, so that TLS is rustls: libgit2's HTTPS is OpenSSL,
//! which kept the whole CA bundle parsed in memory (1.4 MiB, the largest
//! part of an idle https git-sync), and which the binary no longer links
//! for it. Certificates are checked by [`crate::trust`].
//!
//! It does what libgit2's does (`transports/http.c`), as git-sync used it:
//! `GET <url>/info/refs?service=git-upload-pack` lists the refs, each
//! negotiation round is a `POST <url>/git-upload-pack` (stateless: libgit2
//! writes the request, then reads the response); the first request goes
//! without credentials, a 401 is answered with the URL's user and password
//! and then with git-sync's (`--username`, `--password[-file]`,
//! `--credential`, `--askpass-url`, the GitHub App token), once each; the
//! listing follows redirects (to another host too, unless
//! `http.followRedirects` is false; never from https to http) and the
//! rounds go where it was sent; credentials answered to one origin are
//! never sent to another. Proxies as git's: `http.proxy`, else
//! `https_proxy` / `http_proxy` / `all_proxy` (either case), with `no_proxy`
//! exempting hosts (reqwest reads the variables). The Cookie header
//! of `--cookie-file` goes with every request. Connections stay open for a
//! fetch's requests and close with it, and `--sync-timeout` bounds them
//! from the connect, whatever the server trickles.

mod request;
mod session;

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use git2::transport::{Service, SmartSubtransport, SmartSubtransportStream, Transport};
use tokio::runtime::Handle;

pub use session::Session;

/// Makes libgit2 use this transport for `http://` and `https://` URLs.
///
/// # Safety
/// Registers with libgit2 globally: only while the process has one thread.
pub unsafe fn register(timeout: Duration) -> Result<(), git2::Error> {
    for scheme in ["http", "https"] {
        git2::transport::register(scheme, move |remote| {
            Transport::smart(remote, true, Http::new(timeout)?)
        })?;
    }
    Ok(())
}

/// One remote connection's transport: libgit2 makes one per connect.
struct Http {
    shared: Arc<request::Shared>,
}

impl Http {
    fn new(timeout: Duration) -> Result<Http, git2::Error> {
        let handle = Handle::try_current().map_err(|_| {
            git2::Error::from_str("http(s): not called from within the tokio runtime")
        })?;
        let session = Session::current();
        let mut client = sidecar_runtime::tls::http_client_with_verifier(crate::trust::verifier());
        if let Some(p) = session.as_ref().and_then(|s| s.proxy.as_deref()) {
            let proxy = reqwest::Proxy::all(p)
                .map_err(|e| git2::Error::from_str(&format!("http.proxy '{p}': {e}")))?
                .no_proxy(reqwest::NoProxy::from_env());
            client = client.proxy(proxy);
        }
        let client = client
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("git/2.0 (sidecar ", env!("CARGO_PKG_VERSION"), ")"))
            .connect_timeout(timeout)
            .read_timeout(timeout)
            .build()
            .map_err(|e| git2::Error::from_str(&format!("http(s) client: {e}")))?;
        Ok(Http {
            shared: Arc::new(request::Shared::new(client, handle, timeout, session)),
        })
    }
}

impl SmartSubtransport for Http {
    fn action(
        &self,
        url: &str,
        action: Service,
    ) -> Result<Box<dyn SmartSubtransportStream>, git2::Error> {
        let service = match action {
            Service::UploadPackLs => request::LIST,
            Service::UploadPack => request::FETCH,
            _ => return Err(git2::Error::from_str("http(s): only fetching is supported")),
        };
        self.shared
            .start(url)
            .map_err(|e| git2::Error::from_str(&e))?;
        Ok(Box::new(Stream {
            shared: self.shared.clone(),
            service,
            body: Vec::new(),
            response: None,
            chunk: Bytes::new(),
        }))
    }

    fn close(&self) -> Result<(), git2::Error> {
        self.shared.reset();
        Ok(())
    }
}

/// One request: what libgit2 writes is its body, sent at the first read.
struct Stream {
    shared: Arc<request::Shared>,
    service: request::Service,
    body: Vec<u8>,
    response: Option<reqwest::Response>,
    /// What was received and not read yet.
    chunk: Bytes,
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let shared = &self.shared;
        let response = match &mut self.response {
            Some(r) => r,
            None => {
                let body = Bytes::from(std::mem::take(&mut self.body));
                let r = shared
                    .block_on(shared.send(self.service, body))
                    .and_then(|r| r)
                    .map_err(std::io::Error::other)?;
                self.response.insert(r)
            }
        };
        while self.chunk.is_empty() {
            match shared.block_on(response.chunk()) {
                Ok(Ok(Some(chunk))) => self.chunk = chunk,
                Ok(Ok(None)) => return Ok(0),
                Ok(Err(e)) => return Err(std::io::Error::other(request::describe(e))),
                Err(timed_out) => return Err(std::io::Error::other(timed_out)),
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk.split_to(n));
        Ok(n)
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.body.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
