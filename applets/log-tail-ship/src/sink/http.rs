//! `--sink http`: NDJSON POSTs to `--http-url`. 2xx acknowledges the batch;
//! 429, 5xx, 401/403 and connection errors retry it; any other status is a
//! rejection for good, so its events go to the dead letter.

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use super::{check_url, excerpt, post, retryable, Common};
use crate::batch::Batch;
use crate::config::Args;

pub struct HttpSink {
    common: Common,
    url: String,
    headers: HeaderMap,
}

impl HttpSink {
    pub fn new(args: &Args, common: Common) -> anyhow::Result<HttpSink> {
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
        Ok(HttpSink {
            common,
            url,
            headers,
        })
    }

    pub async fn deliver(&mut self, batch: &mut Batch) {
        let (body, encoding) = self.common.encode(batch.body.clone());
        let mut backoff = self.common.backoff();
        let redacted = sidecar_runtime::redact::redact_url(&self.url);
        loop {
            let res = post(
                &self.common,
                &self.url,
                body.clone(),
                encoding,
                "application/x-ndjson",
                &self.headers,
            )
            .await;
            match res {
                Ok((s, _)) if (200..300).contains(&s) => break,
                Ok((s, resp)) if !retryable(s) => {
                    let reason = format!("HTTP {s}: {}", excerpt(&resp));
                    tracing::error!(url = %redacted, status = s, reason, "request rejected; events go to the dead letter");
                    for i in 0..batch.len() {
                        self.common.dead_letter.reject(
                            &self.common.metrics,
                            batch.doc(i),
                            Some(s),
                            &reason,
                        );
                    }
                    return;
                }
                Ok((s, resp)) => {
                    tracing::warn!(url = %redacted, status = s, body = %excerpt(&resp), "request failed; retrying");
                }
                Err(e) => tracing::warn!(url = %redacted, error = %e, "request failed; retrying"),
            }
            self.common.metrics.retries.inc();
            tokio::time::sleep(backoff.next_delay()).await;
        }
        self.common.metrics.events_acked.inc_by(batch.len() as u64);
    }
}
