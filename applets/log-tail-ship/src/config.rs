//! Flags (each with a `LOG_TAIL_SHIP_*` env var) and their validation.

use std::path::PathBuf;
use std::time::Duration;

use clap::ValueEnum;
use sidecar_runtime::cli::{parse_bytes, parse_duration, parse_header, parse_key_value};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReadFrom {
    Beginning,
    End,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Parse {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SinkKind {
    Stdout,
    Elasticsearch,
    Loki,
    Http,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EsAction {
    Create,
    Index,
}

impl EsAction {
    pub fn as_str(self) -> &'static str {
        match self {
            EsAction::Create => "create",
            EsAction::Index => "index",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EsDocumentId {
    /// A hash of the file (path, inode, first bytes) and the line's offset.
    Offset,
    /// Elasticsearch assigns ids (faster indexing; resends are copies).
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Compress {
    Gzip,
    None,
}

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// File glob to tail (repeatable; `**` matches any depth).
    #[arg(
        long = "path",
        env = "LOG_TAIL_SHIP_PATH",
        value_name = "GLOB",
        value_delimiter = ',',
        required = true
    )]
    pub paths: Vec<String>,

    /// Glob of paths to skip, matched against the full path (repeatable).
    #[arg(
        long = "exclude",
        env = "LOG_TAIL_SHIP_EXCLUDE",
        value_name = "GLOB",
        value_delimiter = ','
    )]
    pub excludes: Vec<String>,

    /// Tail files reached through symlinks. Off by default: the app
    /// container controls the shared volume, and a link to a file of ours
    /// (a service account token) would ship it.
    #[arg(long, env = "LOG_TAIL_SHIP_FOLLOW_SYMLINKS")]
    pub follow_symlinks: bool,

    /// Directory for checkpoints; put it on a volume that survives restarts.
    /// Without it, offsets live in memory only.
    #[arg(long, env = "LOG_TAIL_SHIP_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Where to start in files found at the first start that have no checkpoint.
    /// Files that appear later are always read from their beginning.
    #[arg(
        long,
        env = "LOG_TAIL_SHIP_READ_FROM",
        value_enum,
        default_value = "beginning"
    )]
    pub read_from: ReadFrom,

    /// Longer lines are truncated to this many bytes, flagged and counted.
    #[arg(long, env = "LOG_TAIL_SHIP_MAX_LINE_BYTES", default_value = "1MiB", value_parser = parse_bytes, value_name = "BYTES")]
    pub max_line_bytes: u64,

    /// A line matching this regex starts a new event; other lines are appended
    /// to the current one (stack traces).
    #[arg(long, env = "LOG_TAIL_SHIP_MULTILINE_START", value_name = "REGEX")]
    pub multiline_start: Option<String>,

    /// Most lines in one multiline event; more start a new event.
    #[arg(
        long,
        env = "LOG_TAIL_SHIP_MULTILINE_MAX_LINES",
        default_value_t = 500,
        value_name = "N"
    )]
    pub multiline_max_lines: usize,

    /// A multiline event with no new line for this long is sent.
    #[arg(long, env = "LOG_TAIL_SHIP_MULTILINE_TIMEOUT", default_value = "5s", value_parser = parse_duration, value_name = "DURATION")]
    pub multiline_timeout: Duration,

    /// What the files hold: plain lines, or a container runtime's log
    /// format (Kubernetes CRI, Docker json-file), whose split lines are
    /// joined up to --max-line-bytes.
    #[arg(long, env = "LOG_TAIL_SHIP_FORMAT", value_enum, default_value = "raw")]
    pub format: crate::container::Format,

    /// Add `kubernetes.*` fields: POD_NAME, POD_NAMESPACE, POD_UID,
    /// NODE_NAME and CONTAINER_NAME from the environment.
    #[arg(long, env = "LOG_TAIL_SHIP_K8S_METADATA")]
    pub k8s_metadata: bool,

    /// A downwardAPI volume with `labels` and `annotations` files: they
    /// become `kubernetes.labels.*` and `kubernetes.annotations.*`, re-read
    /// when they change.
    #[arg(
        long,
        env = "LOG_TAIL_SHIP_K8S_PODINFO_DIR",
        value_name = "DIR",
        requires = "k8s_metadata"
    )]
    pub k8s_podinfo_dir: Option<PathBuf>,

    /// How lines are turned into events: `json` merges each line's fields.
    #[arg(long, env = "LOG_TAIL_SHIP_PARSE", value_enum, default_value = "text")]
    pub parse: Parse,

    /// Extra field on every event, `KEY=VALUE` (repeatable; dotted keys nest;
    /// `$(VAR)` and `${VAR}` expand from the environment).
    #[arg(long = "field", env = "LOG_TAIL_SHIP_FIELD", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub fields: Vec<(String, String)>,

    /// Where events go.
    #[arg(long, env = "LOG_TAIL_SHIP_SINK", value_enum, default_value = "stdout")]
    pub sink: SinkKind,

    /// Elasticsearch base URL (repeatable: the next one is tried when one fails).
    #[arg(
        long = "es-url",
        env = "LOG_TAIL_SHIP_ES_URL",
        value_name = "URL",
        value_delimiter = ','
    )]
    pub es_urls: Vec<String>,

    /// Index: a strftime pattern on the event time (`logs-%Y.%m.%d`) or a data stream name.
    #[arg(
        long,
        env = "LOG_TAIL_SHIP_ES_INDEX",
        default_value = "logs-sidecar-default",
        value_name = "INDEX"
    )]
    pub es_index: String,

    /// Bulk action. Data streams accept only `create`.
    #[arg(
        long,
        env = "LOG_TAIL_SHIP_ES_ACTION",
        value_enum,
        default_value = "create"
    )]
    pub es_action: EsAction,

    /// `_id` of each document: `offset` derives it from the line's file and
    /// offset, so a line sent again after a crash is a 409 (done), not a copy.
    #[arg(
        long,
        env = "LOG_TAIL_SHIP_ES_DOCUMENT_ID",
        value_enum,
        default_value = "offset"
    )]
    pub es_document_id: EsDocumentId,

    /// Ingest pipeline for every document.
    #[arg(long, env = "LOG_TAIL_SHIP_ES_PIPELINE", value_name = "NAME")]
    pub es_pipeline: Option<String>,

    /// Basic-auth user for Elasticsearch.
    #[arg(
        long,
        env = "LOG_TAIL_SHIP_ES_USER",
        value_name = "USER",
        requires = "es_password_file"
    )]
    pub es_user: Option<String>,

    /// File holding the basic-auth password.
    #[arg(
        long,
        env = "LOG_TAIL_SHIP_ES_PASSWORD_FILE",
        value_name = "FILE",
        requires = "es_user"
    )]
    pub es_password_file: Option<PathBuf>,

    /// File holding an Elasticsearch API key (sent as `Authorization: ApiKey …`).
    #[arg(
        long,
        env = "LOG_TAIL_SHIP_ES_API_KEY_FILE",
        value_name = "FILE",
        conflicts_with = "es_user"
    )]
    pub es_api_key_file: Option<PathBuf>,

    /// PEM file of CA certificates trusted for HTTPS sinks.
    #[arg(long, env = "LOG_TAIL_SHIP_CA_FILE", value_name = "FILE")]
    pub ca_file: Option<PathBuf>,

    /// Loki base URL (`/loki/api/v1/push` is appended unless the URL has a path).
    #[arg(long, env = "LOG_TAIL_SHIP_LOKI_URL", value_name = "URL")]
    pub loki_url: Option<String>,

    /// Stream label, `KEY=VALUE` (repeatable; `$(VAR)` expands). Default `job=log-tail-ship`.
    #[arg(long = "loki-label", env = "LOG_TAIL_SHIP_LOKI_LABEL", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub loki_labels: Vec<(String, String)>,

    /// Tenant sent as `X-Scope-OrgID`.
    #[arg(long, env = "LOG_TAIL_SHIP_LOKI_TENANT", value_name = "ID")]
    pub loki_tenant: Option<String>,

    /// URL that receives NDJSON POSTs.
    #[arg(long, env = "LOG_TAIL_SHIP_HTTP_URL", value_name = "URL")]
    pub http_url: Option<String>,

    /// Extra request header for the http sink, `Name: value` (repeatable).
    #[arg(long = "http-header", env = "LOG_TAIL_SHIP_HTTP_HEADER", value_name = "HEADER", value_parser = parse_header)]
    pub http_headers: Vec<(String, String)>,

    /// Most events in one request.
    #[arg(
        long,
        env = "LOG_TAIL_SHIP_BATCH_MAX_EVENTS",
        default_value_t = 5000,
        value_name = "N"
    )]
    pub batch_max_events: usize,

    /// Most bytes (uncompressed) in one request.
    #[arg(long, env = "LOG_TAIL_SHIP_BATCH_MAX_BYTES", default_value = "5MiB", value_parser = parse_bytes, value_name = "BYTES")]
    pub batch_max_bytes: u64,

    /// A batch is sent at the latest this long after its first event.
    #[arg(long, env = "LOG_TAIL_SHIP_BATCH_TIMEOUT", default_value = "1s", value_parser = parse_duration, value_name = "DURATION")]
    pub batch_timeout: Duration,

    /// Request body compression.
    #[arg(
        long,
        env = "LOG_TAIL_SHIP_COMPRESS",
        value_enum,
        default_value = "none"
    )]
    pub compress: Compress,

    /// Longest wait between retries (backoff doubles from 100ms).
    #[arg(long, env = "LOG_TAIL_SHIP_RETRY_MAX_BACKOFF", default_value = "30s", value_parser = parse_duration, value_name = "DURATION")]
    pub retry_max_backoff: Duration,

    /// Memory cap for events read but not yet acknowledged: reading pauses when full.
    #[arg(long, env = "LOG_TAIL_SHIP_BUFFER_MAX_BYTES", default_value = "64MiB", value_parser = parse_bytes, value_name = "BYTES")]
    pub buffer_max_bytes: u64,

    /// Keep events read but not yet acknowledged in a queue of checksummed
    /// segment files here, so that rotated and deleted files are closed
    /// while the sink is down and a restart resumes from the queue.
    #[arg(
        long,
        env = "LOG_TAIL_SHIP_BUFFER_DIR",
        value_name = "DIR",
        requires = "data_dir"
    )]
    pub buffer_dir: Option<PathBuf>,

    /// Disk cap of --buffer-dir: reading pauses when it is full.
    #[arg(long, env = "LOG_TAIL_SHIP_BUFFER_MAX_BYTES_DISK", default_value = "256MiB", value_parser = parse_bytes, value_name = "BYTES")]
    pub buffer_max_bytes_disk: u64,

    /// NDJSON file for events the sink rejected for good, with the reason.
    #[arg(long, env = "LOG_TAIL_SHIP_DEAD_LETTER", value_name = "FILE")]
    pub dead_letter: Option<PathBuf>,

    /// Glob rescan interval (a safety net beside inotify).
    #[arg(long, env = "LOG_TAIL_SHIP_SCAN_INTERVAL", default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    pub scan_interval: Duration,

    /// A renamed file that no path matches is closed after it stayed at its end this long.
    #[arg(long, env = "LOG_TAIL_SHIP_ROTATE_WAIT", default_value = "5s", value_parser = parse_duration, value_name = "DURATION")]
    pub rotate_wait: Duration,

    /// A file at its path with nothing new for this long is closed (its
    /// descriptor freed) and opened again when it grows (Filebeat's close_inactive).
    #[arg(long, env = "LOG_TAIL_SHIP_CLOSE_INACTIVE", default_value = "5m", value_parser = parse_duration, value_name = "DURATION")]
    pub close_inactive: Duration,

    /// `host.name` of every event (default: the host name).
    #[arg(long, env = "LOG_TAIL_SHIP_HOST_NAME", value_name = "NAME")]
    pub host_name: Option<String>,
}

/// Expands `$(VAR)` (Kubernetes style), `${VAR}` and `${VAR:-default}` from
/// the environment, in `sidecar_runtime::expand`'s lenient mode: an unset
/// variable is left as written, as Kubernetes does, so a typo shows; `$$` is
/// a literal `$`. A text the expansion cannot read (`${A:-` unclosed) is
/// kept as written too.
pub fn expand_env(s: &str) -> String {
    use sidecar_runtime::expand::{self, Mode, Syntax};
    match expand::expand(s, Syntax::BRACED, Mode::Lenient, &expand::env) {
        Ok(e) => e.text,
        Err(_) => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_expansion() {
        std::env::set_var("LTS_TEST_POD", "web-1");
        assert_eq!(expand_env("$(LTS_TEST_POD)/${LTS_TEST_POD}"), "web-1/web-1");
        assert_eq!(expand_env("$(LTS_UNSET_X) $5 $"), "$(LTS_UNSET_X) $5 $");
        assert_eq!(expand_env("${LTS_UNSET_X:-dflt} $$ ${A:-"), "dflt $ ${A:-");
    }
}
