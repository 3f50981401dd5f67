//! One request: method → auth → path checks → pinned tree → file, index,
//! listing or fallback → conditional and range handling → common headers.

use std::borrow::Cow;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode};

use crate::body::Body;
use crate::cache::BytesCache;
use crate::conditional::{Outcome, Validators};
use crate::cors::Verdict;
use crate::encoding::{self, Accepted, Coding};
use crate::headers::{self, content_type, http_date, mime_of, FileHeaders};
use crate::listing;
use crate::metrics::Metrics;
use crate::path::{Rejected, RequestPath};
use crate::present::Present;
use crate::range::{self, Ranges};
use crate::settings::{PageFile, Settings};
use crate::tree::{Entry, FileId, OpenError, OpenFile, Root, Tree};
use crate::ListingFormat;

const ALLOW: HeaderValue = HeaderValue::from_static("GET, HEAD, OPTIONS");
/// A request that misses on a tree that was swapped out meanwhile is retried on
/// the new one, at most this many times.
const SWAP_RETRIES: usize = 3;

pub struct Handler {
    s: Settings,
    root: Root,
    pub metrics: Metrics,
    gzip_cache: Arc<BytesCache<String>>,
    /// Contents of small files, so a hit costs no read.
    content_cache: BytesCache<FileId>,
    /// The plain 404's headers, built once (every value static: a clone
    /// allocates the map, nothing else).
    not_found_headers: HeaderMap,
    /// Told when a request finds no root (`lib.rs`'s readiness watch).
    pub root_lost: Arc<tokio::sync::Notify>,
}

/// [`Handler::handle`]'s answer: at once, or after the password check.
// Boxing the common variant would cost the allocation per request it avoids.
#[allow(clippy::large_enum_variant)]
pub enum Answer {
    /// Taken by the first poll.
    Now(Option<Response<Body>>),
    Later(Pin<Box<dyn Future<Output = Response<Body>> + Send>>),
}

impl Future for Answer {
    type Output = Response<Body>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Response<Body>> {
        match self.get_mut() {
            Answer::Now(r) => Poll::Ready(r.take().expect("an answer is taken once")),
            Answer::Later(f) => f.as_mut().poll(cx),
        }
    }
}

/// What the request asked for, borrowed from it.
struct Ask<'a> {
    headers: &'a HeaderMap,
    /// Which of the headers read here are there.
    present: Present,
    query: Option<&'a str>,
    /// The connection sends file bodies by sendfile (plain HTTP/1.1).
    zero_copy: bool,
}

/// The result of looking a path up in one tree.
enum Found {
    Response(Response<Body>),
    /// A listing: only valid if the tree was not swapped (and perhaps deleted)
    /// while its entries were read.
    Listing(Response<Body>),
    /// Nothing there (or refused by policy): fallback page or 404.
    Missing,
    /// Known absent from an unchanged directory of this tree (`OpenError::Absent`):
    /// the same, with no need to check that the tree was not swapped meanwhile.
    Absent,
}

impl Handler {
    pub fn new(s: Settings, metrics: Metrics) -> Handler {
        Handler {
            root: Root::new(s.root.clone()),
            s,
            metrics,
            gzip_cache: Arc::new(BytesCache::new(GZIP_CACHE_BYTES, GZIP_CACHE_BYTES / 4)),
            content_cache: BytesCache::new(CONTENT_CACHE_BYTES, CONTENT_CACHE_MAX_FILE as usize),
            not_found_headers: HeaderMap::from_iter([
                (header::CONTENT_TYPE, TEXT_PLAIN),
                (
                    header::CONTENT_LENGTH,
                    HeaderValue::from_static(NOT_FOUND_LENGTH),
                ),
            ]),
            root_lost: Arc::new(tokio::sync::Notify::new()),
        }
    }

    /// Answers one request and records it.
    /// `zero_copy`: the connection can send file bodies by sendfile.
    ///
    /// Without `--basic-auth` the answer is computed here and now, and the
    /// request is dropped before hyper reads on: its head borrows hyper's read
    /// buffer, which hyper can then reuse instead of allocating a new one for
    /// every request (it reads ahead before it polls the service's future).
    pub fn handle<B: Send + 'static>(
        self: &Arc<Self>,
        req: Request<B>,
        peer: &Arc<str>,
        zero_copy: bool,
    ) -> Answer {
        let start = Instant::now();
        if let Some(r) = self.answer(&req, peer, zero_copy, None, start) {
            return Answer::Now(Some(r));
        }
        // The password check runs bcrypt on the blocking pool.
        let (this, peer) = (self.clone(), peer.clone());
        Answer::Later(Box::pin(async move {
            let credentials = req.headers().get(header::AUTHORIZATION).cloned();
            let verdict = match &this.s.auth {
                Some(auth) => auth.check(credentials.as_ref()).await,
                None => false,
            };
            this.answer(&req, &peer, zero_copy, Some(verdict), start)
                .unwrap_or_else(|| text(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n"))
        }))
    }

    /// The answer to `req`, or None when it needs the `--basic-auth` verdict
    /// and `authorized` does not give it yet.
    fn answer<B>(
        &self,
        req: &Request<B>,
        peer: &str,
        zero_copy: bool,
        authorized: Option<bool>,
        start: Instant,
    ) -> Option<Response<Body>> {
        // Before auth, CORS, metrics and the access log, as in static-web-server.
        if self.s.health
            && req.uri().path() == "/health"
            && matches!(*req.method(), Method::GET | Method::HEAD)
        {
            // static-web-server's answer, byte for byte.
            let mut r = Response::new(Body::bytes(Bytes::from_static(b"OK")));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            set_length(&mut r);
            if req.method() == Method::HEAD {
                r.body_mut().discard();
            }
            return Some(r);
        }
        let cors = self
            .s
            .cors
            .as_ref()
            .map(|c| c.check(req.method(), req.headers()));
        let mut resp = match cors {
            Some(Verdict::Forbidden(why)) => {
                tracing::debug!(why, "cors: 403");
                let mut r = text(StatusCode::FORBIDDEN, "403 Forbidden\n");
                if req.method() == Method::HEAD {
                    r.body_mut().discard();
                }
                r
            }
            _ => self.respond(req, zero_copy, authorized)?,
        };
        self.finish_headers(cors, &mut resp);
        let status = resp.status().as_u16();
        self.metrics.observe(status, start.elapsed().as_secs_f64());
        if self.s.access_log {
            tracing::info!(
                target: "static_serve::access",
                method = %req.method(),
                path = %req.uri().path(),
                status,
                bytes = resp.body().len(),
                micros = start.elapsed().as_micros() as u64,
                peer,
                "request"
            );
        }
        resp.body_mut().count_into(self.metrics.bytes_sent.clone());
        Some(resp)
    }

    /// None: the request needs the `--basic-auth` verdict, which `authorized` lacks.
    fn respond<B>(
        &self,
        req: &Request<B>,
        zero_copy: bool,
        authorized: Option<bool>,
    ) -> Option<Response<Body>> {
        // RFC 9112 §3.2: two Host fields make the target ambiguous (a proxy in
        // front may have routed on the other one), so the request is refused.
        // A missing Host is tolerated, as SWS and darkhttpd do.
        let present = Present::scan(req.headers());
        if present.hosts > 1 {
            return Some(text(
                StatusCode::BAD_REQUEST,
                "bad request: more than one Host\n",
            ));
        }
        // The socket wrapper answers 414 for a connection's first request
        // line (`request_line.rs`); later ones are checked here.
        let target = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
        if target > crate::request_line::MAX_REQUEST_LINE {
            return Some(text(StatusCode::URI_TOO_LONG, "414 URI Too Long\n"));
        }
        let head = match *req.method() {
            Method::GET => false,
            Method::HEAD => true,
            Method::OPTIONS => return Some(self.options()),
            _ => {
                let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
                r.headers_mut().insert(header::ALLOW, ALLOW);
                return Some(r);
            }
        };
        if self.s.auth.is_some() && !authorized? {
            let mut r = text(StatusCode::UNAUTHORIZED, "authentication required\n");
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"static-serve\", charset=\"UTF-8\""),
            );
            return Some(r);
        }
        let ask = Ask {
            headers: req.headers(),
            present,
            query: req.uri().query(),
            zero_copy,
        };
        let path = RequestPath::parse(req.uri().path(), self.s.policy.hidden_files);
        let mut resp = self.respond_path(&ask, path);
        if head {
            resp.body_mut().discard();
        }
        Some(resp)
    }

    fn respond_path(&self, ask: &Ask, path: Result<RequestPath, Rejected>) -> Response<Body> {
        let path = match path {
            Ok(p) => Some(p),
            Err(Rejected::BadRequest(why)) => {
                return text(StatusCode::BAD_REQUEST, format!("bad request: {why}\n"))
            }
            Err(Rejected::Hidden) => None,
        };
        for attempt in 0..=SWAP_RETRIES {
            let (tree, root_now) = match self.root.pin() {
                Ok(t) => t,
                Err(e) => {
                    tracing::debug!(root = %self.s.root.display(), error = %e, "root unavailable");
                    self.metrics.root_missing.inc();
                    self.root_lost.notify_one();
                    return text(StatusCode::SERVICE_UNAVAILABLE, "root not available\n");
                }
            };
            let found = match &path {
                Some(p) => self.lookup(&tree, root_now.as_ref(), ask, p),
                None => Found::Missing,
            };
            match found {
                Found::Response(r) => return r,
                Found::Listing(r) if attempt == SWAP_RETRIES || self.root.is_current(&tree) => {
                    return r
                }
                Found::Listing(_) => continue,
                Found::Missing if attempt < SWAP_RETRIES && !self.root.is_current(&tree) => {
                    continue
                }
                Found::Missing | Found::Absent => {
                    return self.not_found(&tree, ask, path.is_some())
                }
            }
        }
        unreachable!("the last attempt always returns")
    }

    /// Looks `path` up in `tree`: a file, a directory's index or listing, or a redirect.
    /// `root_now`: the tree's directory as the pin saw it.
    fn lookup(
        &self,
        tree: &Tree,
        root_now: Option<&FileId>,
        ask: &Ask,
        path: &RequestPath,
    ) -> Found {
        let rel = path.relative();
        let dir = match tree.open_seen(rel, self.s.policy, root_now) {
            Ok(Entry::File(_)) if path.trailing_slash => return Found::Missing,
            Ok(Entry::File(f)) => return Found::Response(self.file(tree, ask, rel, f)),
            Ok(Entry::Dir(d)) => d,
            Err(OpenError::NotFound) => return Found::Missing,
            Err(OpenError::Absent) => return Found::Absent,
            Err(e) => return Found::Response(open_error(e)),
        };
        if !path.trailing_slash && !path.is_root() {
            let mut location = path.url(true);
            if let Some(q) = ask.query {
                location.push('?');
                location.push_str(q);
            }
            let mut r = text(StatusCode::PERMANENT_REDIRECT, "");
            if let Ok(v) = HeaderValue::from_str(&location) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            return Found::Response(r);
        }
        for index in &self.s.index_files {
            let irel = rel.join(index);
            match tree.open_file(&irel, self.s.policy) {
                Ok(f) => return Found::Response(self.file(tree, ask, &irel, f)),
                Err(OpenError::NotFound | OpenError::Absent) => continue,
                Err(e) => return Found::Response(open_error(e)),
            }
        }
        if !self.s.listing {
            return Found::Missing;
        }
        match tree.list(dir, rel, self.s.policy) {
            Ok(entries) => {
                let json = match self.s.listing_format {
                    ListingFormat::Auto => listing::wants_json(ask.headers),
                    ListingFormat::Html => false,
                    ListingFormat::Json => true,
                };
                let (body, ctype) = if json {
                    (listing::json(&entries), "application/json")
                } else {
                    (
                        listing::html(&path.url(true), &entries),
                        "text/html; charset=utf-8",
                    )
                };
                let mut r = Response::new(Body::bytes(body));
                set_length(&mut r);
                let h = r.headers_mut();
                h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
                h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
                if self.s.listing_format == ListingFormat::Auto {
                    h.insert(header::VARY, HeaderValue::from_static("Accept"));
                }
                Found::Listing(r)
            }
            Err(e) => Found::Response(open_error(OpenError::Io(e))),
        }
    }

    /// 404: the SPA fallback (200) if set and the path was not a refused one,
    /// else the custom 404 page, else plain text. All from the same tree.
    fn not_found(&self, tree: &Tree, ask: &Ask, fallback_allowed: bool) -> Response<Body> {
        if fallback_allowed {
            if let Some(page) = &self.s.spa_fallback {
                if let Some((rel, f)) = self.open_page(tree, page) {
                    return self.file(tree, ask, &rel, f);
                }
            }
        }
        if let Some(page) = &self.s.not_found_page {
            if let Some((rel, f)) = self.open_page(tree, page) {
                let mut r = Response::new(Body::file(f.file.clone()));
                r.body_mut().push_file(0, f.meta.size);
                *r.status_mut() = StatusCode::NOT_FOUND;
                set_length(&mut r);
                r.headers_mut()
                    .insert(header::CONTENT_TYPE, content_type(mime_of(&rel)));
                return r;
            }
        }
        let mut r = Response::new(Body::bytes(Bytes::from_static(NOT_FOUND.as_bytes())));
        *r.status_mut() = StatusCode::NOT_FOUND;
        *r.headers_mut() = self.not_found_headers.clone();
        r
    }

    fn open_page(&self, tree: &Tree, page: &PageFile) -> Option<(PathBuf, Arc<OpenFile>)> {
        match page {
            PageFile::InTree(rel) => tree
                .open_file(rel, self.s.policy)
                .ok()
                .map(|f| (rel.clone(), f)),
            PageFile::Absolute(p) => {
                let file = std::fs::File::open(p).ok()?;
                let md = file.metadata().ok()?;
                md.is_file().then(|| {
                    let meta = crate::tree::Meta::from_metadata(&md);
                    (p.clone(), OpenFile::new(file, meta))
                })
            }
        }
    }

    /// Serves a regular file: precompressed variant or on-the-fly gzip,
    /// preconditions, ranges.
    fn file(&self, tree: &Tree, ask: &Ask, rel: &Path, f: Arc<OpenFile>) -> Response<Body> {
        // Type and Cache-Control follow the requested path, whatever variant is sent.
        let path_headers = self.headers_of(rel, &f);
        let (content_type, cache_control) = (
            path_headers.content_type.clone(),
            path_headers.cache_control.clone(),
        );
        let compressible = path_headers.compressible;
        let accepted = if ask.present.accept_encoding {
            Accepted::from_headers(ask.headers)
        } else {
            Accepted::default()
        };
        let mut vary = compressible;
        let mut coding = None;
        let mut variant_rel = None;
        let mut f = f;
        if accepted.any() {
            for c in accepted.in_order() {
                let mut vrel = rel.as_os_str().to_owned();
                vrel.push(c.suffix());
                if let Ok(v) = tree.open_file(Path::new(&vrel), self.s.policy) {
                    // A variant older than its original is left over from
                    // before the original changed (an in-place checkout that
                    // only rewrote the original): serving it would send old
                    // content, so the original (or on-the-fly gzip) is used.
                    // Within a deploy a variant may be written just before
                    // its original (`cp -r` in directory order, a build
                    // that compresses first): only an older one counts.
                    if v.meta.modified + STALE_VARIANT < f.meta.modified {
                        self.metrics.stale_variants.inc();
                        continue;
                    }
                    f = v;
                    coding = Some(c);
                    variant_rel = Some(PathBuf::from(vrel));
                    vary = true;
                    break;
                }
            }
        }
        // ETag, Last-Modified and length follow the file sent.
        let own = self.headers_of(variant_rel.as_deref().unwrap_or(rel), &f);
        // `Range` is a single-valued field: two of them is ambiguous, so both
        // are ignored and the whole representation is sent (as SWS does).
        let range_header = if ask.present.range {
            let mut values = ask.headers.get_all(header::RANGE).iter();
            match (values.next(), values.next()) {
                (Some(v), None) => v.to_str().ok(),
                _ => None,
            }
        } else {
            None
        };
        let mut etag = Cow::Borrowed(f.meta.etag.as_str());
        // Only when it differs from the file's own (on-the-fly gzip).
        let mut etag_value = None;
        let mut gzipped = None;
        if coding.is_none()
            && self.s.gzip
            && compressible
            && accepted.accepts(Coding::Gzip)
            && range_header.is_none()
            && (encoding::GZIP_MIN_SIZE..=encoding::GZIP_MAX_SIZE).contains(&f.meta.size)
        {
            let gz_etag = format!("{}-gz\"", etag.trim_end_matches('"'));
            if let Some(gz) = self.gzip_on_the_fly(&f, &gz_etag) {
                gzipped = Some(gz);
                coding = Some(Coding::Gzip);
                etag_value = Some(headers::value(gz_etag.clone()));
                etag = Cow::Owned(gz_etag);
            }
        }

        let (modified, date) = match &own.last_modified {
            Some(_) => (f.meta.modified, None),
            None => last_modified(f.meta.modified),
        };
        let validators = Validators {
            etag: &etag,
            modified,
        };
        let outcome = if ask.present.preconditions {
            validators.evaluate(ask.headers)
        } else {
            Outcome::Proceed
        };
        let mut r = Response::new(Body::empty());
        // The common case, the whole file as it is: its header block was built once.
        let prebuilt = match (&own.whole, coding, &outcome) {
            (Some(whole), None, Outcome::Proceed) => {
                *r.headers_mut() = whole.clone();
                true
            }
            _ => false,
        };
        if !prebuilt {
            let h = r.headers_mut();
            // RFC 9110 §15.4.5: a 304 carries the validators and cache
            // fields, not representation metadata (nginx sends no type).
            if !matches!(outcome, Outcome::NotModified) {
                h.insert(header::CONTENT_TYPE, content_type);
            }
            h.insert(
                header::LAST_MODIFIED,
                match &own.last_modified {
                    Some(v) => v.clone(),
                    None => http_date(modified),
                },
            );
            if let Some(date) = date {
                h.insert(header::DATE, date);
            }
            h.insert(header::ETAG, etag_value.unwrap_or_else(|| own.etag.clone()));
            if let Some(cc) = cache_control {
                h.insert(header::CACHE_CONTROL, cc);
            }
            if vary {
                h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
            }
            match outcome {
                Outcome::Proceed => {}
                Outcome::NotModified => {
                    *r.status_mut() = StatusCode::NOT_MODIFIED;
                    return r;
                }
                Outcome::PreconditionFailed => {
                    let mut p = text(StatusCode::PRECONDITION_FAILED, "precondition failed\n");
                    p.headers_mut()
                        .insert(header::ETAG, r.headers()[header::ETAG].clone());
                    return p;
                }
            }
            if let Some(c) = coding {
                r.headers_mut().insert(
                    header::CONTENT_ENCODING,
                    HeaderValue::from_static(c.token()),
                );
            }
            if let Some(gz) = gzipped {
                *r.body_mut() = Body::bytes(gz);
                set_length(&mut r);
                return r;
            }
            r.headers_mut()
                .insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        }
        let len = f.meta.size;
        let ranges = match range_header {
            Some(h) if validators.range_allowed(ask.headers) => range::parse(h, len),
            _ => Ranges::Full,
        };
        if ranges == Ranges::Unsatisfiable {
            let mut u = text(StatusCode::RANGE_NOT_SATISFIABLE, "");
            u.headers_mut().insert(
                header::CONTENT_RANGE,
                headers::value(format!("bytes */{len}")),
            );
            return u;
        }
        // Plain HTTP/1.1 sends larger files by sendfile (page-cache pages go
        // to the socket, no copy); smaller ones, and TLS or h2 (which copy
        // anyway), from memory when the file is small enough to keep.
        let mut body = Body::file(f.file.clone());
        if !ask.zero_copy || len < crate::body::SENDFILE_MIN {
            if let Some(content) = self.content(&f) {
                body.keep_in_memory(content);
            }
        }
        let whole = matches!(ranges, Ranges::Full);
        match ranges {
            // (Unsatisfiable was answered with 416 above.)
            Ranges::Full | Ranges::Unsatisfiable => body.push_file(0, len),
            Ranges::Partial(parts) if parts.len() == 1 => {
                let p = &parts[0];
                *r.status_mut() = StatusCode::PARTIAL_CONTENT;
                r.headers_mut().insert(
                    header::CONTENT_RANGE,
                    headers::value(format!("bytes {}-{}/{len}", p.start, p.end - 1)),
                );
                body.push_file(p.start, p.end - p.start);
            }
            Ranges::Partial(parts) => {
                *r.status_mut() = StatusCode::PARTIAL_CONTENT;
                let boundary = boundary(&etag);
                let ctype = r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    headers::value(format!("multipart/byteranges; boundary={boundary}")),
                );
                let part_type = ctype
                    .as_ref()
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("application/octet-stream");
                for p in &parts {
                    body.push_bytes(Bytes::from(format!(
                        "\r\n--{boundary}\r\nContent-Type: {part_type}\r\nContent-Range: bytes {}-{}/{len}\r\n\r\n",
                        p.start,
                        p.end - 1
                    )));
                    body.push_file(p.start, p.end - p.start);
                }
                body.push_bytes(Bytes::from(format!("\r\n--{boundary}--\r\n")));
            }
        }
        *r.body_mut() = body;
        if whole {
            if !prebuilt {
                r.headers_mut()
                    .insert(header::CONTENT_LENGTH, own.length.clone());
            }
        } else {
            set_length(&mut r);
        }
        r
    }

    /// The headers `f` gets when served as `rel`, built on its first use.
    fn headers_of<'f>(&self, rel: &Path, f: &'f OpenFile) -> &'f FileHeaders {
        f.headers
            .get_or_init(|| FileHeaders::new(rel, &f.meta, &self.s))
    }

    /// The gzip of `f`, from the cache or compressed now. None when gzip would
    /// not make it smaller, or the file could not be read whole.
    fn gzip_on_the_fly(&self, f: &OpenFile, key: &str) -> Option<Bytes> {
        if let Some(gz) = self.gzip_cache.get(key) {
            return (!gz.is_empty()).then_some(gz);
        }
        // Like the content cache, only remember files whose ctime is over a
        // second old: a rewrite within the timestamp granularity could
        // otherwise reuse the key.
        let settled = f.meta.settled();
        if f.meta.size > GZIP_INLINE_MAX {
            if !settled {
                return None;
            }
            // Milliseconds of CPU: compress on the blocking pool for the next
            // requests, and send this one as it is rather than stall the worker.
            if !self.gzip_cache.claim(key.to_string()) {
                return None;
            }
            let Ok(file) = f.file.try_clone() else {
                return None;
            };
            let (size, key) = (f.meta.size, key.to_string());
            let cache = self.gzip_cache.clone();
            tokio::task::spawn_blocking(move || {
                let gz = compress(&file, size).unwrap_or_default();
                cache.insert(key, gz);
            });
            return None;
        }
        let gz = compress(&f.file, f.meta.size)?;
        if settled {
            self.gzip_cache.insert(key.to_string(), gz.clone());
        }
        (!gz.is_empty()).then_some(gz)
    }

    /// The whole content of a small file, from the cache or read now (and
    /// cached once the file has not changed for a second: see `cache.rs`).
    fn content(&self, f: &OpenFile) -> Option<Bytes> {
        if f.meta.size > CONTENT_CACHE_MAX_FILE {
            return None;
        }
        if let Some(b) = self.content_cache.get(&f.meta.id) {
            return Some(b);
        }
        let mut data = vec![0; f.meta.size as usize];
        std::os::unix::fs::FileExt::read_exact_at(&*f.file, &mut data, 0).ok()?;
        let data = Bytes::from(data);
        if f.meta.settled() {
            self.content_cache.insert(f.meta.id, data.clone());
        }
        Some(data)
    }

    /// OPTIONS: the allowed methods (a CORS preflight also gets the CORS
    /// headers, see `finish_headers`).
    fn options(&self) -> Response<Body> {
        let mut r = text(StatusCode::NO_CONTENT, "");
        r.headers_mut().remove(header::CONTENT_TYPE);
        r.headers_mut().insert(header::ALLOW, ALLOW);
        r
    }

    /// Headers every response gets: `--header`, CORS.
    fn finish_headers(&self, cors_verdict: Option<Verdict>, r: &mut Response<Body>) {
        let preflight = r.status() == StatusCode::NO_CONTENT;
        let h = r.headers_mut();
        for (k, v) in &self.s.headers {
            h.insert(k.clone(), v.clone());
        }
        if let Some(cors) = &self.s.cors {
            if let Some(Verdict::Allowed(origin)) = cors_verdict {
                cors.decorate(origin, h);
                // SWS: on a preflight the CORS allow-methods stand in for
                // `Allow` (a 405 keeps its `Allow`, which RFC 9110 requires).
                if preflight {
                    h.remove(header::ALLOW);
                }
            }
            if cors.varies() {
                h.append(header::VARY, HeaderValue::from_static("Origin"));
            }
        }
    }
}

/// Compressed bytes kept (see `gzip_on_the_fly`).
const GZIP_CACHE_BYTES: usize = 32 * 1024 * 1024;
/// Small files kept in memory, and the largest such file.
const CONTENT_CACHE_BYTES: usize = 32 * 1024 * 1024;
const CONTENT_CACHE_MAX_FILE: u64 = 256 * 1024;
/// Files above this are compressed off the request path (see `gzip_on_the_fly`).
const GZIP_INLINE_MAX: u64 = 1024 * 1024;

/// gzip of a whole file; empty means "not worth it" (no smaller), so the cache
/// remembers that too and the file is not retried per request.
fn compress(file: &std::fs::File, size: u64) -> Option<Bytes> {
    let mut data = vec![0; size as usize];
    std::os::unix::fs::FileExt::read_exact_at(file, &mut data, 0).ok()?;
    let gz = encoding::gzip(&data).ok()?;
    Some(if gz.len() as u64 >= size {
        Bytes::new()
    } else {
        Bytes::from(gz)
    })
}

fn open_error(e: OpenError) -> Response<Body> {
    match e {
        OpenError::NotFound | OpenError::Absent => text(StatusCode::NOT_FOUND, NOT_FOUND),
        OpenError::Forbidden => text(StatusCode::FORBIDDEN, "403 Forbidden\n"),
        OpenError::Io(e) => {
            tracing::warn!(error = %e, "cannot read from the root");
            text(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n")
        }
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Body::bytes(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, TEXT_PLAIN);
    set_length(&mut r);
    r
}

const TEXT_PLAIN: HeaderValue = HeaderValue::from_static("text/plain; charset=utf-8");
const NOT_FOUND: &str = "404 Not Found\n";
/// How much older than its original a precompressed variant may be and
/// still be taken as written in the same deploy.
const STALE_VARIANT: std::time::Duration = std::time::Duration::from_secs(2);
/// `NOT_FOUND.len()`, spelled out for a static header value.
const NOT_FOUND_LENGTH: &str = "14";

/// An explicit length, so HEAD answers carry the same `Content-Length` as GET.
fn set_length(r: &mut Response<Body>) {
    let len = r.body().len();
    r.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
}

/// RFC 9110 §8.8.2.1: a `Last-Modified` later than the response's `Date`
/// (a future mtime: clock skew, or a build that stamps files ahead) is replaced
/// by the `Date`. hyper's own `Date` is cached for up to a second, so when the
/// mtime is that recent the `Date` is set here from the same clock reading.
fn last_modified(mtime: SystemTime) -> (SystemTime, Option<HeaderValue>) {
    let now = SystemTime::now();
    if mtime + Duration::from_secs(1) <= now {
        return (mtime, None);
    }
    (mtime.min(now), Some(http_date(now)))
}

/// A multipart boundary that cannot occur by chance in the file: derived from
/// the representation and a process-wide counter.
fn boundary(etag: &str) -> String {
    use std::hash::{Hash, Hasher};
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let mut h = std::hash::DefaultHasher::new();
    (etag, n, std::process::id()).hash(&mut h);
    format!("{:016x}{:08x}", h.finish(), n as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prebuilt_404_length_is_its_bodys() {
        assert_eq!(NOT_FOUND_LENGTH, NOT_FOUND.len().to_string());
    }
}
