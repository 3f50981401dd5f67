//! JSON string escaping for the hot path: every line's message goes
//! through it. Byte for byte what serde_json writes (`\"`, `\\`, `\b`, `\f`,
//! `\n`, `\r`, `\t`, other control characters as `\u00XX`, everything else
//! as is), but eight bytes at a time where nothing needs escaping, which is
//! most of a log line, and with std's UTF-8 check (ASCII fast path) instead
//! of a lossy conversion for text that is valid.

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// What a byte is escaped to: 0 for itself, `u` for `\u00XX`, else the
/// character after the backslash.
static ESCAPE: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = b'u';
        i += 1;
    }
    t[0x08] = b'b';
    t[0x09] = b't';
    t[0x0a] = b'n';
    t[0x0c] = b'f';
    t[0x0d] = b'r';
    t[b'"' as usize] = b'"';
    t[b'\\' as usize] = b'\\';
    t
};

/// Appends `bytes` as a JSON string (with its quotes). Invalid UTF-8
/// becomes U+FFFD.
pub fn write_str(out: &mut Vec<u8>, bytes: &[u8]) {
    match std::str::from_utf8(bytes) {
        Ok(s) => escape(out, s.as_bytes()),
        Err(_) => escape(out, String::from_utf8_lossy(bytes).as_bytes()),
    }
}

/// Whether any of the eight bytes of `w` is below 0x20, `"` or `\`.
fn needs_escape(w: u64) -> bool {
    let control = w.wrapping_sub(ONES * 0x20) & !w;
    let q = w ^ (ONES * u64::from(b'"'));
    let quote = q.wrapping_sub(ONES) & !q;
    let b = w ^ (ONES * u64::from(b'\\'));
    let backslash = b.wrapping_sub(ONES) & !b;
    (control | quote | backslash) & HIGHS != 0
}

/// `s` is valid UTF-8: only ASCII bytes are ever escaped.
fn escape(out: &mut Vec<u8>, s: &[u8]) {
    out.reserve(s.len() + 2);
    out.push(b'"');
    let mut clean = 0;
    let mut i = 0;
    while i < s.len() {
        if let Some(w) = s.get(i..i + 8) {
            if !needs_escape(u64::from_le_bytes(w.try_into().expect("8 bytes"))) {
                i += 8;
                continue;
            }
        }
        let esc = ESCAPE[s[i] as usize];
        if esc != 0 {
            out.extend_from_slice(&s[clean..i]);
            out.push(b'\\');
            out.push(esc);
            if esc == b'u' {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"00");
                out.push(HEX[(s[i] >> 4) as usize]);
                out.push(HEX[(s[i] & 0xf) as usize]);
            }
            clean = i + 1;
        }
        i += 1;
    }
    out.extend_from_slice(&s[clean..]);
    out.push(b'"');
}

/// Appends `n` as 32 lowercase hex digits (a document id).
pub fn write_hex128(out: &mut Vec<u8>, n: u128) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; 32];
    for (i, d) in digits.iter_mut().enumerate() {
        *d = HEX[((n >> (124 - 4 * i)) & 0xf) as usize];
    }
    out.extend_from_slice(&digits);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ours(b: &[u8]) -> String {
        let mut out = Vec::new();
        write_str(&mut out, b);
        String::from_utf8(out).unwrap()
    }

    fn serde(b: &[u8]) -> String {
        serde_json::to_string(String::from_utf8_lossy(b).as_ref()).unwrap()
    }

    #[test]
    fn every_byte_at_every_position_escapes_as_serde_json_does() {
        for b in 0..=0x7fu8 {
            for pos in 0..17 {
                let mut s = vec![b'a'; 17];
                s[pos] = b;
                assert_eq!(ours(&s), serde(&s), "byte {b:#x} at {pos}");
            }
        }
    }

    #[test]
    fn text_unicode_and_invalid_utf8() {
        for s in [
            &b""[..],
            b"plain ascii text longer than eight bytes",
            b"he said \"hi\"\t\\ and left\r\n",
            "caf\u{e9} \u{1f600} \u{7f} na\u{ef}ve".as_bytes(),
            b"bad \xff\xfe utf-8 \xc3",
            b"\x00\x01\x1f\x7f",
        ] {
            assert_eq!(ours(s), serde(s), "{s:?}");
        }
    }

    #[test]
    fn ids_are_32_hex_digits() {
        for n in [0u128, 1, 0xdead_beef, u128::MAX, 1 << 127] {
            let mut out = Vec::new();
            write_hex128(&mut out, n);
            assert_eq!(String::from_utf8(out).unwrap(), format!("{n:032x}"));
        }
    }
}
