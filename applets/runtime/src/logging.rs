//! tracing to stderr, text or JSON. stdout stays free for applet output.

use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;

pub fn init(format: LogFormat, filter: &str) -> Result<(), crate::UsageError> {
    let filter = EnvFilter::builder()
        .parse(filter)
        .map_err(|e| crate::UsageError(format!("--log-level: invalid filter {filter:?}: {e}")))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // A closed stderr (`sidecar … 2>&1 | head`) must not stop the applet:
        // tracing would report the failed write with eprintln!, which panics.
        .log_internal_errors(false)
        .with_target(false);
    // A second init (tests that launch twice in one process) keeps the first.
    let _ = match format {
        LogFormat::Text => builder.with_ansi(false).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    Ok(())
}
