//! PROXY protocol v1 (text) and v2 (binary), as specified by HAProxy's
//! proxy-protocol.txt: writing the header towards upstreams and parsing it on
//! accepted connections. The parser works on whatever bytes have arrived so
//! far, so a header split across reads still parses.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use clap::ValueEnum;

use crate::transparent::unmap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Version {
    V1,
    V2,
}

const V2_SIG: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
const V1_PREFIX: &[u8] = b"PROXY ";
/// The v1 spec's bound, CRLF included.
const V1_MAX: usize = 107;

/// The connection's endpoints as the sender saw them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addresses {
    pub src: SocketAddr,
    pub dst: SocketAddr,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    NotProxyProtocol,
    Malformed(&'static str),
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ParseError::NotProxyProtocol => f.write_str("no PROXY protocol header"),
            ParseError::Malformed(why) => write!(f, "malformed PROXY protocol header: {why}"),
        }
    }
}

/// A complete header: the addresses it carries (None for LOCAL, UNKNOWN or
/// families other than TCP/UDP over IP) and its length in bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub addresses: Option<Addresses>,
    pub len: usize,
}

/// Parses the start of `buf`. `Ok(None)` means more bytes are needed.
pub fn parse(buf: &[u8]) -> Result<Option<Parsed>, ParseError> {
    let n = buf.len().min(V2_SIG.len());
    if buf[..n] == V2_SIG[..n] {
        return if buf.len() <= V2_SIG.len() {
            Ok(None)
        } else {
            parse_v2(buf)
        };
    }
    let n = buf.len().min(V1_PREFIX.len());
    if buf[..n] == V1_PREFIX[..n] {
        return parse_v1(buf);
    }
    Err(ParseError::NotProxyProtocol)
}

fn parse_v1(buf: &[u8]) -> Result<Option<Parsed>, ParseError> {
    let limit = buf.len().min(V1_MAX);
    let Some(end) = buf[..limit].windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() >= V1_MAX {
            Err(ParseError::Malformed("v1 line longer than 107 bytes"))
        } else if buf[..limit].contains(&b'\n') {
            Err(ParseError::Malformed("v1 line not ended by CRLF"))
        } else {
            Ok(None)
        };
    };
    let line = std::str::from_utf8(&buf[V1_PREFIX.len()..end])
        .map_err(|_| ParseError::Malformed("v1 not ASCII"))?;
    let len = end + 2;
    let fields: Vec<&str> = line.split(' ').collect();
    let addresses = match fields[0] {
        "UNKNOWN" => None,
        proto @ ("TCP4" | "TCP6") => {
            let [_, src, dst, sport, dport] = fields[..] else {
                return Err(ParseError::Malformed(
                    "v1 needs 4 fields after the protocol",
                ));
            };
            let ip = |s: &str| -> Result<IpAddr, ParseError> {
                let ip: IpAddr = s
                    .parse()
                    .map_err(|_| ParseError::Malformed("v1 bad address"))?;
                match (proto, ip) {
                    ("TCP4", IpAddr::V4(_)) | ("TCP6", IpAddr::V6(_)) => Ok(ip),
                    _ => Err(ParseError::Malformed(
                        "v1 address family does not match protocol",
                    )),
                }
            };
            let port = |s: &str| -> Result<u16, ParseError> {
                if s.is_empty()
                    || s.len() > 5
                    || !s.bytes().all(|b| b.is_ascii_digit())
                    || (s.len() > 1 && s.starts_with('0'))
                {
                    return Err(ParseError::Malformed("v1 bad port"));
                }
                s.parse().map_err(|_| ParseError::Malformed("v1 bad port"))
            };
            Some(Addresses {
                src: SocketAddr::new(ip(src)?, port(sport)?),
                dst: SocketAddr::new(ip(dst)?, port(dport)?),
            })
        }
        _ => {
            return Err(ParseError::Malformed(
                "v1 protocol must be TCP4, TCP6 or UNKNOWN",
            ))
        }
    };
    Ok(Some(Parsed { addresses, len }))
}

fn parse_v2(buf: &[u8]) -> Result<Option<Parsed>, ParseError> {
    let ver_cmd = buf[12];
    if ver_cmd >> 4 != 2 {
        return Err(ParseError::Malformed("v2 version must be 2"));
    }
    let local = match ver_cmd & 0x0f {
        0 => true,
        1 => false,
        _ => return Err(ParseError::Malformed("v2 command must be LOCAL or PROXY")),
    };
    // Version and command are judged on the 13th byte alone, so a client
    // that sends a bad one and waits is turned away now, not at the timeout.
    if buf.len() < 16 {
        return Ok(None);
    }
    let fam = buf[13];
    let body_len = u16::from_be_bytes([buf[14], buf[15]]) as usize;
    // Any length the 16-bit field can say is accepted (Envoy does; a TLV of
    // 65,520 bytes is in its tests): at most 64 KiB buffered per client, for
    // no longer than --proxy-protocol-timeout, like one relay buffer.
    let len = 16 + body_len;
    if buf.len() < len {
        return Ok(None);
    }
    if local || fam == 0x00 {
        // The spec: for LOCAL a receiver uses the connection's own endpoints
        // and discards the whole block, family included (health checks send
        // LOCAL with whatever family and length they like); for UNSPEC it
        // ignores the address information, which then has no layout to check.
        return Ok(Some(Parsed {
            addresses: None,
            len,
        }));
    }
    let body = &buf[16..len];
    let addr_len = match fam >> 4 {
        0 => 0,
        1 => 12,
        2 => 36,
        3 => 216,
        _ => return Err(ParseError::Malformed("v2 unknown address family")),
    };
    if !matches!(fam & 0x0f, 0..=2) {
        return Err(ParseError::Malformed("v2 unknown transport protocol"));
    }
    if body.len() < addr_len {
        return Err(ParseError::Malformed(
            "v2 address block shorter than its family needs",
        ));
    }
    check_tlvs(&body[addr_len..])?;
    let port = |b: &[u8]| u16::from_be_bytes([b[0], b[1]]);
    let addresses = match fam {
        0x11 | 0x12 => {
            let ip = |b: &[u8]| IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]));
            Some(Addresses {
                src: SocketAddr::new(ip(&body[0..4]), port(&body[8..10])),
                dst: SocketAddr::new(ip(&body[4..8]), port(&body[10..12])),
            })
        }
        0x21 | 0x22 => {
            let ip =
                |b: &[u8]| IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(b).expect("16 bytes")));
            Some(Addresses {
                src: SocketAddr::new(ip(&body[0..16]), port(&body[32..34])),
                dst: SocketAddr::new(ip(&body[16..32]), port(&body[34..36])),
            })
        }
        _ => None,
    };
    Ok(Some(Parsed { addresses, len }))
}

/// TLVs must tile the rest of the header exactly (HAProxy rejects the rest).
fn check_tlvs(mut tlvs: &[u8]) -> Result<(), ParseError> {
    while !tlvs.is_empty() {
        if tlvs.len() < 3 {
            return Err(ParseError::Malformed("v2 truncated TLV"));
        }
        let len = u16::from_be_bytes([tlvs[1], tlvs[2]]) as usize;
        if tlvs.len() < 3 + len {
            return Err(ParseError::Malformed("v2 TLV longer than the header"));
        }
        tlvs = &tlvs[3 + len..];
    }
    Ok(())
}

fn to_v6(a: SocketAddr) -> (Ipv6Addr, u16) {
    match a.ip() {
        IpAddr::V4(v4) => (v4.to_ipv6_mapped(), a.port()),
        IpAddr::V6(v6) => (v6, a.port()),
    }
}

/// The header announcing a connection from `src` to `dst`.
pub fn encode(version: Version, src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let (src, dst) = (unmap(src), unmap(dst));
    match version {
        Version::V1 => match (src.ip(), dst.ip()) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                format!("PROXY TCP4 {s} {d} {} {}\r\n", src.port(), dst.port()).into_bytes()
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                format!("PROXY TCP6 {s} {d} {} {}\r\n", src.port(), dst.port()).into_bytes()
            }
            // v1 cannot mix families; the spec says to send UNKNOWN.
            _ => b"PROXY UNKNOWN\r\n".to_vec(),
        },
        Version::V2 => {
            let mut out = V2_SIG.to_vec();
            out.push(0x21); // version 2, PROXY
            match (src.ip(), dst.ip()) {
                (IpAddr::V4(s), IpAddr::V4(d)) => {
                    out.push(0x11);
                    out.extend_from_slice(&12u16.to_be_bytes());
                    out.extend_from_slice(&s.octets());
                    out.extend_from_slice(&d.octets());
                }
                _ => {
                    let (s, _) = to_v6(src);
                    let (d, _) = to_v6(dst);
                    out.push(0x21);
                    out.extend_from_slice(&36u16.to_be_bytes());
                    out.extend_from_slice(&s.octets());
                    out.extend_from_slice(&d.octets());
                }
            }
            out.extend_from_slice(&src.port().to_be_bytes());
            out.extend_from_slice(&dst.port().to_be_bytes());
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn addrs(s: &str, d: &str) -> (SocketAddr, SocketAddr) {
        (s.parse().unwrap(), d.parse().unwrap())
    }

    #[test]
    fn v1_examples() {
        let p = parse(b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\nGET")
            .unwrap()
            .unwrap();
        assert_eq!(p.len, 45);
        assert_eq!(p.addresses.unwrap().src, "192.0.2.1:56324".parse().unwrap());
        assert_eq!(
            parse(b"PROXY UNKNOWN ffff::1 x\r\n")
                .unwrap()
                .unwrap()
                .addresses,
            None
        );
        assert_eq!(parse(b"PROXY TCP4 1.2.3.4").unwrap(), None);
        assert_eq!(parse(b"PRO").unwrap(), None);
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\n"),
            Err(ParseError::NotProxyProtocol)
        );
        assert!(parse(b"PROXY TCP4 ::1 1.2.3.4 1 2\r\n").is_err());
        assert!(parse(b"PROXY TCP4 1.2.3.4 1.2.3.4 1 65536\r\n").is_err());
        assert!(parse(b"PROXY TCP4 1.2.3.4 1.2.3.4 1 2\n").is_err());
        assert!(parse(&[b'P', b'R', b'O', b'X', b'Y', b' '].repeat(20)).is_err());
    }

    /// The spec's worst-case lines (107 bytes for UNKNOWN) fit the bound.
    #[test]
    fn v1_longest_lines() {
        let f = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
        let tcp6 = format!("PROXY TCP6 {f} {f} 65535 65535\r\n");
        assert_eq!(tcp6.len(), 104);
        assert!(parse(tcp6.as_bytes()).unwrap().unwrap().addresses.is_some());
        let unknown = format!("PROXY UNKNOWN {f} {f} 65535 65535\r\nmore");
        let p = parse(unknown.as_bytes()).unwrap().unwrap();
        assert_eq!((p.len, p.addresses), (107, None));
        let max4 = b"PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n";
        assert_eq!(parse(max4).unwrap().unwrap().len, 56);
    }

    #[test]
    fn v2_examples() {
        let (s, d) = addrs("10.0.0.1:1000", "10.0.0.2:80");
        let mut h = encode(Version::V2, s, d);
        assert_eq!(h.len(), 28);
        let p = parse(&h).unwrap().unwrap();
        assert_eq!(p.addresses, Some(Addresses { src: s, dst: d }));
        // a TLV that overruns the declared length is rejected
        h[15] += 3;
        h.extend_from_slice(&[0x04, 0x00, 0x09]);
        assert!(matches!(parse(&h), Err(ParseError::Malformed(_))));
        // LOCAL carries no addresses
        let mut local = V2_SIG.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0x00, 0x00]);
        assert_eq!(
            parse(&local).unwrap().unwrap(),
            Parsed {
                addresses: None,
                len: 16
            }
        );
        // LOCAL ignores the family and its address block, whatever they say
        let mut local = V2_SIG.to_vec();
        local.extend_from_slice(&[0x20, 0x11, 0x00, 0x03, 0x01, 0x02, 0x03]);
        assert_eq!(parse(&local).unwrap().unwrap().len, 19);
        let mut local = V2_SIG.to_vec();
        local.extend_from_slice(&[0x20, 0xff, 0x00, 0x00]);
        assert_eq!(parse(&local).unwrap().unwrap().addresses, None);
        // PROXY over UNSPEC ignores the block too (no TLV layout is imposed)
        let mut unspec = V2_SIG.to_vec();
        unspec.extend_from_slice(&[0x21, 0x00, 0x00, 0x04, 0x01, 0x02, 0x03, 0x04]);
        assert_eq!(
            parse(&unspec).unwrap().unwrap(),
            Parsed {
                addresses: None,
                len: 20
            }
        );
        // the largest header the length field allows: one 65,520-byte TLV
        let mut big = encode(Version::V2, s, d);
        big[14..16].copy_from_slice(&0xffffu16.to_be_bytes());
        big.extend_from_slice(&[0x02, 0xff, 0xf0]);
        big.extend(std::iter::repeat_n(b'a', 65520));
        assert_eq!(parse(&big).unwrap().unwrap().len, 16 + 0xffff);
        assert_eq!(parse(&big[..40000]).unwrap(), None);
        // a bad version or command is rejected as soon as its byte arrives
        let mut bad = V2_SIG.to_vec();
        bad.push(0x11);
        assert!(matches!(parse(&bad), Err(ParseError::Malformed(_))));
        bad[12] = 0x23;
        assert!(matches!(parse(&bad), Err(ParseError::Malformed(_))));
        // a split header waits for more
        assert_eq!(parse(&encode(Version::V2, s, d)[..20]).unwrap(), None);
    }

    #[test]
    fn mixed_families() {
        let (s, d) = addrs("[::ffff:10.0.0.1]:1", "10.0.0.2:2");
        assert_eq!(
            encode(Version::V1, s, d),
            b"PROXY TCP4 10.0.0.1 10.0.0.2 1 2\r\n"
        );
        let (s, d) = addrs("[fd00::1]:1", "10.0.0.2:2");
        assert_eq!(encode(Version::V1, s, d), b"PROXY UNKNOWN\r\n");
        let p = parse(&encode(Version::V2, s, d)).unwrap().unwrap();
        assert_eq!(
            p.addresses.unwrap().dst,
            "[::ffff:10.0.0.2]:2".parse().unwrap()
        );
    }

    fn any_addr() -> impl Strategy<Value = SocketAddr> {
        prop_oneof![
            (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, p)| SocketAddr::from((ip, p))),
            (any::<[u8; 16]>(), any::<u16>())
                .prop_map(|(ip, p)| SocketAddr::from((Ipv6Addr::from(ip), p))),
        ]
    }

    proptest! {
        /// Whatever the bytes, the parser answers without panicking, and a
        /// header it accepts fits in the input.
        #[test]
        fn never_panics(buf in proptest::collection::vec(any::<u8>(), 0..600)) {
            if let Ok(Some(p)) = parse(&buf) {
                prop_assert!(p.len <= buf.len());
            }
        }

        /// Garbage behind a valid signature is rejected or parsed, never a panic.
        #[test]
        fn v2_signature_then_noise(rest in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut buf = V2_SIG.to_vec();
            buf.extend_from_slice(&rest);
            if let Ok(Some(p)) = parse(&buf) {
                prop_assert!(p.len <= buf.len());
            }
        }

        /// Encoding then parsing gives the addresses back, from every split point.
        #[test]
        fn round_trip(src in any_addr(), dst in any_addr(), v2 in any::<bool>(), tail in proptest::collection::vec(any::<u8>(), 0..40)) {
            let version = if v2 { Version::V2 } else { Version::V1 };
            let header = encode(version, src, dst);
            let mut buf = header.clone();
            buf.extend_from_slice(&tail);
            let p = parse(&buf).unwrap().unwrap();
            prop_assert_eq!(p.len, header.len());
            for cut in 0..header.len() {
                prop_assert_eq!(parse(&header[..cut]), Ok(None));
            }
            let same_family = unmap(src).is_ipv4() == unmap(dst).is_ipv4();
            match (version, p.addresses) {
                (Version::V1, None) => prop_assert!(!same_family),
                (_, Some(a)) => {
                    prop_assert_eq!(unmap(a.src), unmap(src));
                    prop_assert_eq!(unmap(a.dst), unmap(dst));
                }
                (Version::V2, None) => prop_assert!(false, "v2 lost the addresses"),
            }
        }
    }
}
