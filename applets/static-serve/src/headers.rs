//! Response header values that follow from one file and the path it was
//! opened by, built once per cached file instead of per request (formatting a
//! date, an ETag and a length each allocate).

use std::path::Path;
use std::time::{Duration, SystemTime};

use http::header::{self, HeaderMap, HeaderValue};

use crate::encoding;
use crate::settings::Settings;
use crate::tree::Meta;

pub struct FileHeaders {
    /// Worth gzipping (text and the like).
    pub compressible: bool,
    pub content_type: HeaderValue,
    pub cache_control: Option<HeaderValue>,
    pub etag: HeaderValue,
    /// Only when the mtime was over a second in the past when built: a later
    /// one must be capped at the response's `Date` per request
    /// (`handler::last_modified`).
    pub last_modified: Option<HeaderValue>,
    /// `Content-Length` of the whole file.
    pub length: HeaderValue,
    /// The whole header block of a 200 for the whole file as it is (no
    /// content coding), cloned per request instead of inserted field by
    /// field. None when `Last-Modified` must be set per request.
    pub whole: Option<HeaderMap>,
}

impl FileHeaders {
    pub fn new(rel: &Path, meta: &Meta, s: &Settings) -> FileHeaders {
        let mime = mime_of(rel);
        let past = meta.modified + Duration::from_secs(1) <= SystemTime::now();
        let mut h = FileHeaders {
            compressible: encoding::compressible(mime),
            content_type: content_type(mime),
            cache_control: s.cache_control(rel).cloned(),
            etag: value(meta.etag.clone()),
            last_modified: past.then(|| http_date(meta.modified)),
            length: HeaderValue::from(meta.size),
            whole: None,
        };
        h.whole = h
            .last_modified
            .as_ref()
            .map(|last_modified| h.block(last_modified));
        h
    }

    /// The header block of a whole-file 200, in the order `handler::file`
    /// inserts the same fields when it builds them per request.
    fn block(&self, last_modified: &HeaderValue) -> HeaderMap {
        let mut b = HeaderMap::with_capacity(7);
        b.insert(header::CONTENT_TYPE, self.content_type.clone());
        b.insert(header::LAST_MODIFIED, last_modified.clone());
        b.insert(header::ETAG, self.etag.clone());
        if let Some(cc) = &self.cache_control {
            b.insert(header::CACHE_CONTROL, cc.clone());
        }
        if self.compressible {
            b.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
        }
        b.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        b.insert(header::CONTENT_LENGTH, self.length.clone());
        b
    }
}

/// mime_guess's raw type for a file name (no parsing per request).
pub fn mime_of(rel: &Path) -> &'static str {
    mime_guess::from_path(rel)
        .first_raw()
        .unwrap_or("application/octet-stream")
}

/// The `Content-Type` header, with `charset=utf-8` for text.
pub fn content_type(mime: &'static str) -> HeaderValue {
    let texty = mime.starts_with("text/")
        || mime == "application/javascript"
        || mime == "application/json"
        || mime.ends_with("+json");
    if texty {
        value(format!("{mime}; charset=utf-8"))
    } else {
        HeaderValue::from_static(mime)
    }
}

pub fn http_date(t: SystemTime) -> HeaderValue {
    value(httpdate::fmt_http_date(t))
}

pub fn value(s: String) -> HeaderValue {
    HeaderValue::from_str(&s).unwrap_or(HeaderValue::from_static(""))
}
