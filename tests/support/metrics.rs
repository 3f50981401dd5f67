//! Reading the admin server's `/metrics` (Prometheus text format).

use std::net::SocketAddr;

/// The whole `/metrics` text.
pub fn scrape(admin: SocketAddr) -> String {
    super::http::get(admin, "/metrics").text()
}

/// The value of the sample printed exactly as `sample`: a bare name
/// (`reloader_reloads_total`) or a name with all its labels
/// (`config_watch_reload_reloads_total{result="success"}`).
pub fn sample(text: &str, sample: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(sample)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// The sum of every sample of `name` whose labels include each of `labels`
/// (`route="db"`); 0 when there is none.
pub fn sum(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| labels.iter().all(|lab| l.contains(lab)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// [`scrape`], then [`sample`].
pub fn metric(admin: SocketAddr, name_and_labels: &str) -> Option<f64> {
    sample(&scrape(admin), name_and_labels)
}

/// Waits (bounded) until `cond` holds for a fresh scrape.
pub fn wait_for(admin: SocketAddr, what: &str, mut cond: impl FnMut(&str) -> bool) {
    super::wait_until(what, || cond(&scrape(admin)));
}
