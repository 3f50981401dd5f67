//! What was built: version, git commit, build date and the applets compiled
//! in. The binary knows these (its build script and cargo features) and hands
//! them over once at startup; `--version` and the `sidecar_build_info` gauge
//! both read them from here, so the two always agree.

use std::sync::OnceLock;

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone)]
pub struct BuildInfo {
    pub version: &'static str,
    pub commit: &'static str,
    /// RFC 3339, UTC.
    pub date: &'static str,
    pub applets: Vec<&'static str>,
}

static INFO: OnceLock<BuildInfo> = OnceLock::new();

/// Records the binary's build information. Later calls are ignored.
pub fn set(info: BuildInfo) {
    let _ = INFO.set(info);
}

/// The recorded build information; outside the binary (unit tests) only the
/// runtime's own version is known.
pub fn get() -> &'static BuildInfo {
    INFO.get_or_init(|| BuildInfo {
        version: env!("CARGO_PKG_VERSION"),
        commit: "unknown",
        date: "unknown",
        applets: Vec::new(),
    })
}

impl BuildInfo {
    /// One line: `0.2.0 (commit 1a2b3c4d5e6f, built 2026-01-02T03:04:05Z)`.
    pub fn version_line(&self) -> String {
        format!(
            "{} (commit {}, built {})",
            self.version, self.commit, self.date
        )
    }

    /// The `--version` text after the program name.
    pub fn long_version(&self) -> String {
        format!(
            "{}\ncommit: {}\nbuilt: {}\napplets: {}",
            self.version,
            self.commit,
            self.date,
            self.applets.join(" ")
        )
    }

    /// `sidecar_build_info{version,commit,build_date,applets} 1`, as
    /// Prometheus' own `*_build_info` gauges do.
    pub fn register(&self, registry: &mut Registry) {
        let family = Family::<Vec<(&'static str, String)>, Gauge>::default();
        family
            .get_or_create(&vec![
                ("version", self.version.to_string()),
                ("commit", self.commit.to_string()),
                ("build_date", self.date.to_string()),
                ("applets", self.applets.join(",")),
            ])
            .set(1);
        registry.register(
            "sidecar_build_info",
            "Version, git commit, build date and applets of this binary",
            family,
        );
    }
}
