//! The flags every applet takes, and value parsers applets share.

use std::time::Duration;

use clap::{Args, ValueEnum};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

// Flattened into every applet's own flags. (A plain comment: a doc comment
// would replace the applet's about line in --help.)
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Common options")]
pub struct CommonArgs {
    /// Address of the admin server (/healthz, /readyz, /metrics), or `off`.
    #[arg(long, env = "SIDECAR_ADMIN_ADDR", value_name = "ADDR|off")]
    pub admin_addr: Option<String>,

    /// Log format on stderr.
    #[arg(long, env = "SIDECAR_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Log filter, e.g. `info` or `debug,hyper=info`.
    #[arg(
        long,
        env = "SIDECAR_LOG_LEVEL",
        default_value = "info",
        value_name = "FILTER"
    )]
    pub log_level: String,

    /// Time the applet has to drain after SIGTERM before the process exits.
    #[arg(long, env = "SIDECAR_SHUTDOWN_GRACE", default_value = "25s", value_parser = parse_duration, value_name = "DURATION")]
    pub shutdown_grace: Duration,

    /// Validate flags, files, URLs and certificates, then exit: 0 when
    /// good, 2 naming what is wrong. Binds no port and starts nothing.
    #[arg(long, env = "SIDECAR_CHECK")]
    pub check: bool,
}

/// Parses `250ms`, `3m`, `1h30m` (humantime), and a bare `0` as zero.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(s)
        .map_err(|e| format!("invalid duration {s:?}: {e} (examples: 250ms, 10s, 3m)"))
}

/// Parses `Name: value` into a header pair.
pub fn parse_header(s: &str) -> Result<(String, String), String> {
    let (name, value) = s
        .split_once(':')
        .ok_or_else(|| format!("invalid header {s:?}: expected 'Name: value'"))?;
    let name = name.trim();
    if name.is_empty() || http::HeaderName::from_bytes(name.as_bytes()).is_err() {
        return Err(format!("invalid header name in {s:?}"));
    }
    let value = value.trim();
    if http::HeaderValue::from_str(value).is_err() {
        return Err(format!("invalid header value in {s:?}"));
    }
    Ok((name.to_string(), value.to_string()))
}

/// Parses `KEY=VALUE`.
pub fn parse_key_value(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("invalid {s:?}: expected KEY=VALUE"))?;
    if k.is_empty() {
        return Err(format!("invalid {s:?}: empty key"));
    }
    Ok((k.to_string(), v.to_string()))
}

/// Parses a byte size: `1048576`, `64KiB`, `5MiB`, `1GiB` (powers of 1024),
/// `10MB`, `4k` (powers of 1000).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid size {s:?} (examples: 65536, 64KiB, 5MiB)"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        _ => {
            return Err(format!(
                "invalid size unit in {s:?} (use B, KiB, MiB, GiB, KB, MB, GB)"
            ))
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("size {s:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert!(parse_duration("ten").unwrap_err().contains("ten"));
    }

    #[test]
    fn byte_sizes() {
        assert_eq!(parse_bytes("64KiB").unwrap(), 65536);
        assert_eq!(parse_bytes("5MiB").unwrap(), 5 << 20);
        assert_eq!(parse_bytes("4k").unwrap(), 4000);
        assert_eq!(parse_bytes("100").unwrap(), 100);
        assert!(parse_bytes("5 lots").is_err());
        assert!(parse_bytes("99999999999999GiB").is_err());
    }

    #[test]
    fn headers() {
        assert_eq!(
            parse_header("X-A:  b c").unwrap(),
            ("X-A".to_string(), "b c".to_string())
        );
        assert!(parse_header("nocolon").is_err());
        assert!(parse_header("bad name: x").is_err());
    }
}
