//! HTTP/2 frames written by hand (RFC 9113), for tests that must control
//! exactly what goes over the wire: floods no real client would send.

use std::io::Read;

pub const HEADERS: u8 = 1;
pub const RST_STREAM: u8 = 3;
pub const CONTINUATION: u8 = 9;
pub const SETTINGS: u8 = 4;
pub const GOAWAY: u8 = 7;
pub const END_STREAM: u8 = 1;
pub const END_HEADERS: u8 = 4;
pub const ACK: u8 = 1;
/// RST_STREAM's CANCEL.
pub const CANCEL: u32 = 8;
/// GOAWAY's code for a peer that generates excessive load (§7).
pub const ENHANCE_YOUR_CALM: u32 = 0xb;

/// The client preface and an empty SETTINGS frame.
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0";

/// One frame's bytes.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = (payload.len() as u32).to_be_bytes();
    let mut f = vec![len[1], len[2], len[3], kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// Rapid reset (CVE-2023-44487): `n` requests `GET http://<authority>/`, each
/// cancelled by RST_STREAM right after its HEADERS, on streams 1, 3, 5, …
pub fn rapid_reset_flood(n: u32, authority: &str) -> Vec<u8> {
    // HPACK: :method GET, :scheme http, :path / (static table), and
    // :authority as a literal without indexing (name index 1).
    let mut block = vec![0x82, 0x86, 0x84, 0x01, authority.len() as u8];
    block.extend_from_slice(authority.as_bytes());
    let mut flood = Vec::new();
    for i in 0..n {
        let stream = 2 * i + 1;
        flood.extend(frame(HEADERS, END_HEADERS | END_STREAM, stream, &block));
        flood.extend(frame(RST_STREAM, 0, stream, &CANCEL.to_be_bytes()));
    }
    flood
}

/// A CONTINUATION flood (RUSTSEC-2024-0332, CVE-2024-27316's class): a
/// request's HEADERS without END_HEADERS on stream 1, then `n` CONTINUATION
/// frames of 1 KiB of headers each, never ending the block. A server that
/// buffers the block until it ends runs out of memory.
pub fn continuation_flood(n: u32) -> Vec<u8> {
    let mut flood = frame(HEADERS, END_STREAM, 1, &[0x82, 0x86, 0x84]);
    // HPACK: a literal header without indexing, a new name ("x-pad") and a
    // 1,000-byte value.
    let mut block = vec![0x00, 0x05];
    block.extend_from_slice(b"x-pad");
    // 1,000 as an HPACK integer with a 7-bit prefix: 127, then 873 = 105 + 6·128.
    block.extend_from_slice(&[0x7f, 0x80 | 105, 6]);
    block.extend(std::iter::repeat_n(b'a', 1000));
    for _ in 0..n {
        flood.extend(frame(CONTINUATION, 0, 1, &block));
    }
    flood
}

/// What the server sent until its GOAWAY (or until it closed, or the read
/// timeout set on `s` ended the wait): the GOAWAY's error code, if any, and
/// how many HEADERS frames answered streams.
pub fn read_to_goaway(s: &mut impl Read) -> (Option<u32>, usize) {
    let mut answered = 0;
    loop {
        let mut head = [0u8; 9];
        if s.read_exact(&mut head).is_err() {
            return (None, answered);
        }
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let mut payload = vec![0; len];
        if s.read_exact(&mut payload).is_err() {
            return (None, answered);
        }
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        match head[3] {
            HEADERS if stream != 0 => answered += 1,
            GOAWAY if len >= 8 => {
                let code = u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]);
                return (Some(code), answered);
            }
            _ => {}
        }
    }
}
