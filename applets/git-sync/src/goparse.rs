//! Value syntax of upstream's Go flags and env vars: `strconv.ParseBool`,
//! `strconv.ParseInt(s, 0, 0)` and `time.ParseDuration`, so a Pod spec that
//! worked with kubernetes/git-sync parses the same here.

use std::time::Duration;

/// Go's `strconv.ParseBool`.
pub fn parse_bool(s: &str) -> Result<bool, String> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(format!("invalid boolean {s:?} (use true or false)")),
    }
}

/// Go's `strconv.ParseInt(s, 0, 64)`: `0x`, `0o`, `0b` and leading-`0` octal
/// prefixes, an optional sign, and `_` separators after a prefix.
pub fn parse_int(s: &str) -> Result<i64, String> {
    let err = || format!("invalid integer {s:?}");
    let (neg, body) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let lower = body.to_ascii_lowercase();
    let (radix, digits) = if let Some(d) = lower.strip_prefix("0x") {
        (16, d.to_string())
    } else if let Some(d) = lower.strip_prefix("0o") {
        (8, d.to_string())
    } else if let Some(d) = lower.strip_prefix("0b") {
        (2, d.to_string())
    } else if lower.len() > 1 && lower.starts_with('0') {
        (8, lower[1..].to_string())
    } else {
        (10, lower.clone())
    };
    let digits = if radix != 10 || lower.starts_with('0') {
        digits.replace('_', "")
    } else {
        digits
    };
    if digits.is_empty() {
        return Err(err());
    }
    let v = i64::from_str_radix(&digits, radix).map_err(|_| err())?;
    Ok(if neg { -v } else { v })
}

/// Go's `time.ParseDuration`: `300ms`, `1.5h`, `2h45m`, `0`. Negative values
/// parse (validation rejects them where upstream does) and saturate at zero.
pub fn parse_duration(s: &str) -> Result<SignedDuration, String> {
    let err = || format!("invalid duration {s:?} (examples: 100ms, 10s, 1m30s)");
    let (neg, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Ok(SignedDuration {
            neg: false,
            dur: Duration::ZERO,
        });
    }
    if rest.is_empty() {
        return Err(err());
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(err)?;
        if num_len == 0 {
            return Err(err());
        }
        let value: f64 = rest[..num_len].parse().map_err(|_| err())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let nanos_per = match &rest[..unit_len] {
            "ns" => 1f64,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(err()),
        };
        total += value * nanos_per;
        rest = &rest[unit_len..];
    }
    Ok(SignedDuration {
        neg,
        dur: Duration::from_nanos(total as u64),
    })
}

/// A Go duration keeps its sign, so `--period=-1s` is reported as too short
/// instead of failing to parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignedDuration {
    pub neg: bool,
    pub dur: Duration,
}

impl SignedDuration {
    /// Whether this is at least `min` (negative values never are).
    pub fn at_least(&self, min: Duration) -> bool {
        !self.neg && self.dur >= min
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bools() {
        assert!(parse_bool("True").unwrap());
        assert!(!parse_bool("0").unwrap());
        assert!(parse_bool("yes").is_err());
    }

    #[test]
    fn ints() {
        assert_eq!(parse_int("0x10").unwrap(), 16);
        assert_eq!(parse_int("010").unwrap(), 8);
        assert_eq!(parse_int("-1").unwrap(), -1);
        assert_eq!(parse_int("0b11").unwrap(), 3);
        assert_eq!(parse_int("0").unwrap(), 0);
        assert!(parse_int("ten").is_err());
        assert!(parse_int("").is_err());
    }

    #[test]
    fn durations() {
        let d = |s| parse_duration(s).unwrap().dur;
        assert_eq!(d("100ms"), Duration::from_millis(100));
        assert_eq!(d("1m30s"), Duration::from_secs(90));
        assert_eq!(d("1.5s"), Duration::from_millis(1500));
        assert_eq!(d("0"), Duration::ZERO);
        assert!(parse_duration("-1s").unwrap().neg);
        assert!(!parse_duration("-1s").unwrap().at_least(Duration::ZERO));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("1x").is_err());
    }
}
