//! OpenSSL's subject hash (`X509_NAME_hash`, `openssl x509 -subject_hash`):
//! the name a hashed certificate directory (`openssl rehash`,
//! update-ca-certificates) files each certificate under, so that a lookup
//! reads only the certificates of one issuer.
//!
//! The hash is over OpenSSL's canonical form of the name (`x509_name_canon`
//! in `crypto/x509/x_name.c`): each text value as a UTF8String, trimmed,
//! runs of white space collapsed to one space, ASCII lowercased; the
//! relative names' SETs concatenated without the outer SEQUENCE. It is the
//! first four bytes of that form's SHA-1, little-endian.

use x509_parser::der_parser::asn1_rs::{Any, Tag};
use x509_parser::x509::X509Name;

/// Tags OpenSSL canonicalises (`ASN1_MASK_CANON`); values of other types
/// are hashed as they are.
const TEXT: [Tag; 7] = [
    Tag::Utf8String,
    Tag::BmpString,
    Tag::UniversalString,
    Tag::PrintableString,
    Tag::T61String,
    Tag::Ia5String,
    Tag::VisibleString,
];

/// The subject hash of `name`, or None when a value cannot be decoded as
/// its type says (OpenSSL fails then too).
pub fn subject_hash(name: &X509Name) -> Option<u32> {
    let mut canon = Vec::new();
    for rdn in name.iter() {
        let mut set: Vec<Vec<u8>> = Vec::new();
        for atv in rdn.iter() {
            let mut oid = Vec::new();
            tlv(&mut oid, 0x06, atv.attr_type().as_bytes());
            let value = atv.attr_value();
            if TEXT.contains(&value.tag()) {
                tlv(&mut oid, 0x0c, &canonical_text(value)?);
            } else {
                tlv(&mut oid, tag_byte(value)?, value.data);
            }
            let mut seq = Vec::new();
            tlv(&mut seq, 0x30, &oid);
            set.push(seq);
        }
        // DER orders a SET OF by its members' encodings.
        set.sort();
        tlv(&mut canon, 0x31, &set.concat());
    }
    let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &canon);
    let d = digest.as_ref();
    Some(u32::from_le_bytes([d[0], d[1], d[2], d[3]]))
}

/// A value's identifier octet, for universal types with low tag numbers
/// (every type a name holds).
fn tag_byte(value: &Any) -> Option<u8> {
    let n = u8::try_from(value.tag().0).ok().filter(|n| *n < 31)?;
    Some(
        n | if value.header.is_constructed() {
            0x20
        } else {
            0
        },
    )
}

/// `asn1_string_canon`: UTF-8, trimmed, white space collapsed, ASCII
/// lowercased; other bytes of multi-byte characters are kept.
fn canonical_text(value: &Any) -> Option<Vec<u8>> {
    let text = utf8(value)?;
    let mut out = Vec::with_capacity(text.len());
    let mut space = false;
    for &b in text.trim_matches(is_space).as_bytes() {
        if is_space(b as char) {
            space = true;
            continue;
        }
        if space {
            out.push(b' ');
            space = false;
        }
        out.push(b.to_ascii_lowercase());
    }
    Some(out)
}

/// `ossl_isspace`: space, \t, \n, \v, \f, \r.
fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r')
}

/// `ASN1_STRING_to_UTF8`: single-byte types are Latin-1, BMPString is
/// UCS-2 and UniversalString UCS-4, both big-endian.
fn utf8(value: &Any) -> Option<String> {
    let data = value.data;
    match value.tag() {
        Tag::Utf8String => std::str::from_utf8(data).ok().map(str::to_string),
        Tag::BmpString => ucs(data, 2),
        Tag::UniversalString => ucs(data, 4),
        _ => Some(data.iter().map(|&b| char::from(b)).collect()),
    }
}

/// Big-endian code points of `width` bytes each.
fn ucs(data: &[u8], width: usize) -> Option<String> {
    let chars = data.chunks_exact(width);
    if !chars.remainder().is_empty() {
        return None;
    }
    chars
        .map(|c| char::from_u32(c.iter().fold(0, |n, b| n << 8 | u32::from(*b))))
        .collect()
}

/// Appends a DER element: identifier, definite length, contents.
fn tlv(out: &mut Vec<u8>, tag: u8, contents: &[u8]) {
    out.push(tag);
    let len = contents.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(contents);
}

#[cfg(test)]
mod tests {
    use super::*;
    use sidecar_runtime::tls::rustls::pki_types::pem::PemObject;
    use sidecar_runtime::tls::rustls::pki_types::CertificateDer;

    fn subject_hash_of(der: &[u8]) -> u32 {
        let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
        subject_hash(cert.subject()).unwrap()
    }

    /// Names whose canonical form differs from their encoding, hashed by
    /// `openssl x509 -subject_hash` (OpenSSL 3.0): case, spaces, a
    /// PrintableString, Latin-1 in a UTF8String, and two values in one
    /// relative name.
    #[test]
    fn hashes_as_openssl_does() {
        let cert = include_str!("testdata/odd-subject.pem");
        let der = CertificateDer::from_pem_slice(cert.as_bytes()).unwrap();
        assert_eq!(format!("{:08x}", subject_hash_of(&der)), "b28fe558");
    }

    /// Every certificate in the system's hashed directory is under its own
    /// hash (update-ca-certificates names them with OpenSSL).
    #[test]
    fn system_directory_names_match() {
        let Ok(entries) = std::fs::read_dir("/etc/ssl/certs") else {
            return;
        };
        let mut checked = 0;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if !super::super::store::is_hashed_name(entry.file_name().as_os_str()) {
                continue;
            }
            let pem = std::fs::read(entry.path()).unwrap();
            for der in CertificateDer::pem_slice_iter(&pem) {
                let hash = format!("{:08x}", subject_hash_of(&der.unwrap()));
                assert_eq!(hash, name[..8].to_ascii_lowercase(), "{name}");
                checked += 1;
            }
        }
        assert!(
            checked > 0 || std::env::var("CI").is_err(),
            "no hashed CA certificates"
        );
    }
}
