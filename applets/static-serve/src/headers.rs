//! Response header values that follow from one file and the path it was
//! opened by, built once per cached file instead of per request (formatting a
//! date, an ETag and a length each allocate).

use std::path::Path;
use std::time::{Duration, SystemTime};

use http::header::HeaderValue;

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
}

impl FileHeaders {
    pub fn new(rel: &Path, meta: &Meta, s: &Settings) -> FileHeaders {
        let mime = mime_of(rel);
        let past = meta.modified + Duration::from_secs(1) <= SystemTime::now();
        FileHeaders {
            compressible: encoding::compressible(mime),
            content_type: content_type(mime),
            cache_control: s.cache_control(rel).cloned(),
            etag: value(meta.etag.clone()),
            last_modified: past.then(|| http_date(meta.modified)),
            length: HeaderValue::from(meta.size),
        }
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
