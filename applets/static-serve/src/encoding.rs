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

/// Which codings the client accepts (q > 0).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Accepted {
    br: bool,
    zstd: bool,
    gzip: bool,
}

impl Accepted {
    pub fn from_headers(headers: &HeaderMap) -> Accepted {
        let mut acc = Accepted::default();
        let mut explicit = Accepted::default();
        let mut star = false;
        for v in headers.get_all(http::header::ACCEPT_ENCODING) {
            let Ok(v) = v.to_str() else { continue };
            for item in v.split(',') {
                let mut params = item.split(';');
                let token = params.next().unwrap_or("").trim().to_ascii_lowercase();
                let ok = params
                    .filter_map(|p| {
                        p.trim()
                            .strip_prefix("q=")
                            .or_else(|| p.trim().strip_prefix("Q="))
                    })
                    .all(|q| q.trim().parse::<f32>().map(|q| q > 0.0).unwrap_or(false));
                let (flag, seen) = match token.as_str() {
                    "br" => (&mut acc.br, &mut explicit.br),
                    "zstd" => (&mut acc.zstd, &mut explicit.zstd),
                    "gzip" | "x-gzip" => (&mut acc.gzip, &mut explicit.gzip),
                    "*" => {
                        star = ok;
                        continue;
                    }
                    _ => continue,
                };
                *flag = ok;
                *seen = true;
            }
        }
        if star {
            acc.br |= !explicit.br;
            acc.zstd |= !explicit.zstd;
            acc.gzip |= !explicit.gzip;
        }
        acc
    }

    pub fn accepts(self, c: Coding) -> bool {
        match c {
            Coding::Br => self.br,
            Coding::Zstd => self.zstd,
            Coding::Gzip => self.gzip,
        }
    }

    pub fn any(self) -> bool {
        self.br || self.zstd || self.gzip
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
