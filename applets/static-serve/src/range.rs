//! `Range: bytes=…` (RFC 9110 §14): single and multiple ranges.
//!
//! Overlapping and adjacent ranges are merged first, so `bytes=0-0,1-1,…` turns
//! into one range; what is left is capped (`MAX_RANGES`), the defence against
//! the many-ranges DoS class (CVE-2011-3192). All arithmetic is checked, so
//! `bytes=-9223372036854775807` cannot overflow (CVE-2017-7529).

use std::ops::Range;

/// More distinct ranges than this after merging: 416.
pub const MAX_RANGES: usize = 32;

#[derive(Debug, PartialEq, Eq)]
pub enum Ranges {
    /// No usable `Range` header: serve the whole representation.
    Full,
    /// Byte ranges to serve (206), sorted, merged, within the length.
    Partial(Vec<Range<u64>>),
    /// 416 with `Content-Range: bytes */len`.
    Unsatisfiable,
}

/// Parses a `Range` header against a representation of `len` bytes.
pub fn parse(header: &str, len: u64) -> Ranges {
    // Range units are case-insensitive (RFC 9110 §14.1): `BYTES=0-1` too.
    let header = header.trim();
    let spec = match header.split_at_checked(6) {
        Some((unit, spec)) if unit.eq_ignore_ascii_case("bytes=") => spec,
        // Another unit: ignore the header (RFC 9110 §14.2).
        _ => return Ranges::Full,
    };
    let mut ranges = Vec::new();
    for part in spec.split(',') {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let Some((first, last)) = part.split_once('-') else {
            return Ranges::Unsatisfiable;
        };
        let (first, last) = (first.trim(), last.trim());
        let r = if first.is_empty() {
            // Suffix: the last N bytes (all of them if N > len).
            let Some(n) = number(last) else {
                return Ranges::Unsatisfiable;
            };
            if n == 0 {
                continue;
            }
            len.saturating_sub(n)..len
        } else {
            let Some(start) = number(first) else {
                return Ranges::Unsatisfiable;
            };
            let end = if last.is_empty() {
                len
            } else {
                let Some(end) = number(last) else {
                    return Ranges::Unsatisfiable;
                };
                if end < start {
                    return Ranges::Unsatisfiable;
                }
                end.saturating_add(1).min(len)
            };
            if start >= len {
                continue;
            }
            start..end
        };
        if !r.is_empty() {
            ranges.push(r);
        }
    }
    if ranges.is_empty() {
        return Ranges::Unsatisfiable;
    }
    ranges.sort_by_key(|r| r.start);
    let mut merged: Vec<Range<u64>> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match merged.last_mut() {
            Some(prev) if r.start <= prev.end => prev.end = prev.end.max(r.end),
            _ => merged.push(r),
        }
    }
    if merged.len() > MAX_RANGES {
        return Ranges::Unsatisfiable;
    }
    Ranges::Partial(merged)
}

fn number(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Too many digits for u64 means "beyond any file": saturate.
    Some(s.parse().unwrap_or(u64::MAX))
}

#[cfg(test)]
#[allow(clippy::single_range_in_vec_init)]
mod tests {
    use super::*;

    fn p(h: &str) -> Ranges {
        parse(h, 1000)
    }

    #[test]
    fn single_ranges() {
        assert_eq!(p("bytes=0-99"), Ranges::Partial(vec![0..100]));
        assert_eq!(p("BYTES=0-99"), Ranges::Partial(vec![0..100]));
        assert_eq!(p("items=0-99"), Ranges::Full);
        assert_eq!(p("bytes=900-"), Ranges::Partial(vec![900..1000]));
        assert_eq!(p("bytes=-100"), Ranges::Partial(vec![900..1000]));
        assert_eq!(p("bytes=-5000"), Ranges::Partial(vec![0..1000]));
        assert_eq!(p("bytes=100-5000"), Ranges::Partial(vec![100..1000]));
        assert_eq!(p("items=0-1"), Ranges::Full);
    }

    #[test]
    fn bad_and_unsatisfiable() {
        for h in [
            "bytes=100-10",
            "bytes=",
            "bytes=xyx-abc",
            "bytes=1000-",
            "bytes=5000-6000",
            "bytes=-0",
            "bytes=1",
        ] {
            assert_eq!(p(h), Ranges::Unsatisfiable, "{h}");
        }
        assert_eq!(parse("bytes=0-0", 0), Ranges::Unsatisfiable);
    }

    #[test]
    fn huge_numbers_do_not_overflow() {
        assert_eq!(
            p("bytes=-1,-9223372036854775807"),
            Ranges::Partial(vec![0..1000])
        );
        assert_eq!(
            p("bytes=0-99999999999999999999999"),
            Ranges::Partial(vec![0..1000])
        );
    }

    #[test]
    fn many_ranges_merge_then_cap() {
        let adjacent: Vec<String> = (0..1000).map(|i| format!("{i}-{i}")).collect();
        assert_eq!(
            p(&format!("bytes={}", adjacent.join(","))),
            Ranges::Partial(vec![0..1000])
        );
        let sparse: Vec<String> = (0..100).map(|i| format!("{}-{}", i * 10, i * 10)).collect();
        assert_eq!(
            p(&format!("bytes={}", sparse.join(","))),
            Ranges::Unsatisfiable
        );
        assert_eq!(p("bytes=0-1,5-6"), Ranges::Partial(vec![0..2, 5..7]));
        assert_eq!(p("bytes=5-6,0-1,1-3"), Ranges::Partial(vec![0..4, 5..7]));
    }
}
