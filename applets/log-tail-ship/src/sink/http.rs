//! `--sink http`: NDJSON POSTs to `--http-url`, with the `--http-header`s;
//! statuses are handled by the shared delivery loop.

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use super::delivery::Protocol;
use crate::batch::Batch;
use crate::config::Args;
use sidecar_runtime::check::http_url as check_url;

pub struct HttpSink {
    url: String,
    headers: HeaderMap,
}

impl HttpSink {
    pub fn new(args: &Args) -> anyhow::Result<HttpSink> {
        let url = args
            .http_url
            .clone()
            .ok_or_else(|| sidecar_runtime::usage!("--sink http needs --http-url"))?;
        check_url("--http-url", &url)?;
        let mut headers = HeaderMap::new();
        for (k, v) in &args.http_headers {
            // parse_header validated both.
            headers.append(
                HeaderName::try_from(k.as_str())?,
                HeaderValue::try_from(v.as_str())?,
            );
        }
        Ok(HttpSink { url, headers })
    }
}

impl Protocol for HttpSink {
    const NAME: &'static str = "http";
    const CONTENT_TYPE: &'static str = "application/x-ndjson";
    const CREDENTIALS: &'static str = "--http-header";

    fn url(&self) -> &str {
        &self.url
    }

    fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    fn body(&mut self, batch: &Batch, events: &[usize]) -> Vec<u8> {
        let len = events.iter().map(|&i| batch.doc(i).len() + 1).sum();
        let mut b = Vec::with_capacity(len);
        for &i in events {
            b.extend_from_slice(batch.doc(i));
            b.push(b'\n');
        }
        b
    }
}
