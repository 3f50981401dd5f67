//! tracing to stderr, text or JSON. stdout stays free for applet output.

use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;

/// Level names a directive without `=` may be. tracing would take any other
/// word for a target name (`inf` enables only a target called `inf`), and a
/// typo would silence every log line.
const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

pub fn init(format: LogFormat, filter: &str) -> Result<(), crate::UsageError> {
    if let Some(word) = filter.split(',').map(str::trim).find(|d| {
        !d.is_empty() && !d.contains('=') && !LEVELS.iter().any(|l| d.eq_ignore_ascii_case(l))
    }) {
        return Err(crate::UsageError(format!(
            "--log-level: {word:?} is not a level (trace, debug, info, warn, error, off) nor a TARGET=LEVEL directive"
        )));
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_word_that_is_no_level_is_refused_naming_the_flag() {
        let e = init(LogFormat::Text, "inf").unwrap_err();
        assert!(
            e.0.contains("--log-level") && e.0.contains("\"inf\""),
            "{}",
            e.0
        );
        assert!(init(LogFormat::Text, "info,sidecar_git_sync=debug").is_ok());
    }
}
