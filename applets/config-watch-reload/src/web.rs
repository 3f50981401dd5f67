//! configmap-reload's web pages on the admin server: `/`, a page linking to
//! the metrics, and the metrics also under `-web.telemetry-path`, so probes
//! and scrape configs written for it keep working.

use std::sync::Arc;

use bytes::Bytes;
use http::{header, Method, Response};
use sidecar_runtime::admin::{Body, Handler};
use sidecar_runtime::Context;

/// Adds `/` and, when it is not `/metrics`, the telemetry path.
pub fn add_routes(ctx: &Context, telemetry_path: &str) {
    let page = Bytes::from(index_page(telemetry_path));
    let index: Handler = Arc::new(move |_req| {
        let page = page.clone();
        Box::pin(async move { respond("text/html; charset=utf-8", page) })
    });
    ctx.admin_route(Method::GET, "/", index);
    if telemetry_path != "/metrics" {
        let state = ctx.admin_state();
        let metrics: Handler = Arc::new(move |_req| {
            let body = Bytes::from(state.encode_metrics());
            Box::pin(async move {
                respond(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    body,
                )
            })
        });
        ctx.admin_route(Method::GET, telemetry_path, metrics);
    }
}

fn respond(content_type: &'static str, body: Bytes) -> Response<Body> {
    Response::builder()
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::new(body))
        .expect("static response")
}

/// configmap-reload's page, with the path escaped for HTML.
fn index_page(telemetry_path: &str) -> String {
    let href: String = telemetry_path
        .chars()
        .map(|c| match c {
            '&' => "&amp;".to_string(),
            '<' => "&lt;".to_string(),
            '>' => "&gt;".to_string(),
            '\'' => "&#39;".to_string(),
            '"' => "&quot;".to_string(),
            c => c.to_string(),
        })
        .collect();
    format!(
        "<html>\n<head><title>ConfigMap Reload Metrics</title></head>\n<body>\n\
         <h1>ConfigMap Reload</h1>\n<p><a href='{href}'>Metrics</a></p>\n</body>\n</html>\n"
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn index_links_to_the_escaped_metrics_path() {
        let page = super::index_page("/m'<x>");
        assert!(
            page.contains("<a href='/m&#39;&lt;x&gt;'>Metrics</a>"),
            "{page}"
        );
    }
}
