//! Content negotiation for `Accept-Encoding`: precompressed `.br`/`.zst`/`.gz`
//! variants next to a file, and on-the-fly gzip for text above a threshold.

use std::io::Write;

use http::HeaderMap;

/// Smaller bodies gain too little from gzip to pay for it.
pub const GZIP_MIN_SIZE: u64 = 1024;
/// Larger files are sent as they are rather than compressed in memory.
pub const GZIP_MAX_SIZE: u64 = 8 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Br,
    Zstd,
    Gzip,
}

impl Coding {
    /// Server preference for precompressed variants: best ratio first.
    pub const PREFERENCE: [Coding; 3] = [Coding::Br, Coding::Zstd, Coding::Gzip];

    pub fn token(self) -> &'static str {
        match self {
            Coding::Br => "br",
            Coding::Zstd => "zstd",
            Coding::Gzip => "gzip",
        }
    }

    /// File-name suffix of the precompressed variant.
    pub fn suffix(self) -> &'static str {
        match self {
            Coding::Br => ".br",
            Coding::Zstd => ".zst",
            Coding::Gzip => ".gz",
        }
    }
}

/// How much the client wants each coding: its q-value in thousandths
/// (0: not acceptable).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Accepted {
    br: u16,
    zstd: u16,
    gzip: u16,
}

/// `q=0.5` in thousandths; a missing q is 1, a malformed one 0.
fn q_value<'a>(mut params: impl Iterator<Item = &'a str>) -> u16 {
    let Some(q) = params.find_map(|p| {
        let p = p.trim();
        p.strip_prefix("q=").or_else(|| p.strip_prefix("Q="))
    }) else {
        return 1000;
    };
    match q.trim().parse::<f32>() {
        Ok(q) if (0.0..=1.0).contains(&q) => (q * 1000.0).round() as u16,
        _ => 0,
    }
}

impl Accepted {
    pub fn from_headers(headers: &HeaderMap) -> Accepted {
        let mut acc = Accepted::default();
        let mut explicit = [false; 3];
        let mut star = 0;
        for v in headers.get_all(http::header::ACCEPT_ENCODING) {
            let Ok(v) = v.to_str() else { continue };
            for item in v.split(',') {
                let mut params = item.split(';');
                let token = params.next().unwrap_or("").trim().to_ascii_lowercase();
                let q = q_value(params);
                let (slot, seen) = match token.as_str() {
                    "br" => (&mut acc.br, &mut explicit[0]),
                    "zstd" => (&mut acc.zstd, &mut explicit[1]),
                    "gzip" | "x-gzip" => (&mut acc.gzip, &mut explicit[2]),
                    "*" => {
                        star = q;
                        continue;
                    }
                    _ => continue,
                };
                *slot = q;
                *seen = true;
            }
        }
        for (slot, seen) in [&mut acc.br, &mut acc.zstd, &mut acc.gzip]
            .into_iter()
            .zip(explicit)
        {
            if !seen {
                *slot = star;
            }
        }
        acc
    }

    fn q(self, c: Coding) -> u16 {
        match c {
            Coding::Br => self.br,
            Coding::Zstd => self.zstd,
            Coding::Gzip => self.gzip,
        }
    }

    pub fn accepts(self, c: Coding) -> bool {
        self.q(c) > 0
    }

    pub fn any(self) -> bool {
        self.br > 0 || self.zstd > 0 || self.gzip > 0
    }

    /// The acceptable codings, the client's most wanted first (RFC 9110
    /// §12.5.3), our preference (`Coding::PREFERENCE`) between equals.
    pub fn in_order(self) -> impl Iterator<Item = Coding> {
        let mut codings = Coding::PREFERENCE;
        // Stable: equal q-values keep our order.
        codings.sort_by_key(|c| std::cmp::Reverse(self.q(*c)));
        codings.into_iter().filter(move |c| self.accepts(*c))
    }
}

/// Text-like types worth compressing (images, archives, woff fonts are
/// compressed already). Takes mime_guess's raw `type/subtype`.
pub fn compressible(mime: &str) -> bool {
    let Some((ty, sub)) = mime.split_once('/') else {
        return false;
    };
    match ty {
        "text" => true,
        "image" => sub == "svg+xml",
        "application" => {
            matches!(
                sub,
                "javascript"
                    | "json"
                    | "xml"
                    | "wasm"
                    | "xhtml+xml"
                    | "rss+xml"
                    | "atom+xml"
                    | "manifest+json"
            ) || sub.ends_with("+json")
                || sub.ends_with("+xml")
        }
        _ => false,
    }
}

/// Compresses `data` at a level that favours speed (it runs per cache miss).
pub fn gzip(data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(data.len() / 3 + 64),
        flate2::Compression::new(5),
    );
    enc.write_all(data)?;
    enc.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acc(v: &str) -> Accepted {
        let mut h = HeaderMap::new();
        h.insert(http::header::ACCEPT_ENCODING, v.parse().unwrap());
        Accepted::from_headers(&h)
    }

    #[test]
    fn accept_encoding_q_values() {
        let a = acc("gzip, deflate, br");
        assert!(a.accepts(Coding::Gzip) && a.accepts(Coding::Br) && !a.accepts(Coding::Zstd));
        let a = acc("br;q=0, gzip;q=0.5");
        assert!(!a.accepts(Coding::Br) && a.accepts(Coding::Gzip));
        let a = acc("*;q=1, zstd;q=0");
        assert!(a.accepts(Coding::Br) && !a.accepts(Coding::Zstd) && a.accepts(Coding::Gzip));
        assert!(!acc("identity").any());
        assert!(!acc("br;q=x").accepts(Coding::Br));
    }

    #[test]
    fn the_client_s_most_wanted_coding_comes_first() {
        let order = |v: &str| acc(v).in_order().collect::<Vec<_>>();
        assert_eq!(order("br;q=0.1, gzip;q=1"), [Coding::Gzip, Coding::Br]);
        assert_eq!(
            order("gzip, br, zstd"),
            [Coding::Br, Coding::Zstd, Coding::Gzip]
        );
        assert_eq!(
            order("*;q=0.5, gzip"),
            [Coding::Gzip, Coding::Br, Coding::Zstd]
        );
        assert_eq!(order("gzip;q=0.8, br;q=0.80"), [Coding::Br, Coding::Gzip]);
    }

    #[test]
    fn text_is_compressible_images_are_not() {
        let raw = |p: &str| mime_guess::from_path(p).first_raw().unwrap();
        assert!(compressible(raw("a.html")));
        assert!(compressible(raw("a.js")));
        assert!(compressible(raw("a.svg")));
        assert!(compressible(raw("a.json")));
        assert!(!compressible(raw("a.png")));
    }

    #[test]
    fn gzip_round_trips() {
        let data = b"hello hello hello hello".repeat(100);
        let gz = gzip(&data).unwrap();
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut out).unwrap();
        assert_eq!(out, data);
    }
}
