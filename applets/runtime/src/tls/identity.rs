//! Peer identities: the URI SANs (SPIFFE IDs) and DNS SANs of a certificate,
//! and the glob patterns (`--tls-allow-id`, `--tls-upstream-id`) they are
//! checked against.

use globset::{GlobBuilder, GlobMatcher};
use rustls_pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;

/// Glob patterns over peer identities. `*` stays within one `/` segment, so
/// `spiffe://cluster.local/ns/shop/sa/*` admits every service account of the
/// `shop` namespace but nothing deeper; `**` crosses segments. No pattern at
/// all admits every peer whose chain verified.
#[derive(Clone, Debug, Default)]
pub struct Identities {
    patterns: Vec<(String, GlobMatcher)>,
}

impl Identities {
    /// Parses patterns given to `flag`; a bad pattern is a usage error naming it.
    pub fn parse(patterns: &[String], flag: &str) -> anyhow::Result<Self> {
        let mut parsed = Vec::with_capacity(patterns.len());
        for p in patterns {
            let glob = GlobBuilder::new(p)
                .literal_separator(true)
                .build()
                .map_err(|e| crate::usage!("{flag} {p:?}: invalid pattern: {e}"))?;
            parsed.push((p.clone(), glob.compile_matcher()));
        }
        Ok(Identities { patterns: parsed })
    }

    /// True when no pattern was given: any verified peer is accepted.
    pub fn is_any(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether one of `ids` matches one of the patterns (or there are none).
    pub fn admits(&self, ids: &[String]) -> bool {
        self.is_any() || ids.iter().any(|id| self.matches(id))
    }

    fn matches(&self, id: &str) -> bool {
        self.patterns.iter().any(|(_, m)| m.is_match(id))
    }

    /// The identity a peer is known by: the first of `ids` a pattern
    /// admits (the first of all when there is no pattern), so a log line
    /// never names an identity that was not what let the peer in.
    pub fn admitted(&self, ids: &[String]) -> Option<String> {
        ids.iter()
            .find(|id| self.is_any() || self.matches(id))
            .cloned()
    }

    /// The patterns as given, for log lines.
    pub fn patterns(&self) -> Vec<&str> {
        self.patterns.iter().map(|(p, _)| p.as_str()).collect()
    }
}

/// A certificate's identities: its URI SAN (a SPIFFE ID), then its DNS
/// SANs. An X.509 SVID carries exactly one URI SAN (SPIFFE X509-SVID §2),
/// so a certificate with several has no URI identity at all: which of them
/// would it be? A DNS SAN that is no DNS name (`spiffe://…` written as a
/// DNS name) is none either, so a URI pattern cannot be met by one. A
/// certificate that does not parse has no identity.
pub fn peer_identities(cert: &CertificateDer<'_>) -> Vec<String> {
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert.as_ref()) else {
        return Vec::new();
    };
    let Ok(Some(san)) = parsed.subject_alternative_name() else {
        return Vec::new();
    };
    let names = &san.value.general_names;
    let mut uris = names.iter().filter_map(|n| match n {
        GeneralName::URI(u) => Some(u.to_string()),
        _ => None,
    });
    let uri = match (uris.next(), uris.next()) {
        (Some(only), None) => Some(only),
        _ => None,
    };
    let dns = names.iter().filter_map(|n| match n {
        GeneralName::DNSName(d) if is_dns_name(d) => Some(d.to_ascii_lowercase()),
        _ => None,
    });
    uri.into_iter().chain(dns).collect()
}

/// Letters, digits, `-`, `_` and `*` in dot-separated labels (a trailing
/// dot, the root, allowed).
fn is_dns_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'*'))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn spiffe_globs_stay_within_a_segment() {
        let allow = Identities::parse(
            &ids(&["spiffe://cluster.local/ns/shop/sa/*"]),
            "--tls-allow-id",
        )
        .unwrap();
        assert!(allow.admits(&ids(&["spiffe://cluster.local/ns/shop/sa/web"])));
        assert!(!allow.admits(&ids(&["spiffe://cluster.local/ns/shop/sa/web/x"])));
        assert!(!allow.admits(&ids(&["spiffe://cluster.local/ns/bank/sa/web"])));
        assert!(!allow.admits(&[]));
    }

    #[test]
    fn dns_globs_and_any_of_several_patterns() {
        let allow = Identities::parse(
            &ids(&[
                "*.shop.svc.cluster.local",
                "spiffe://cluster.local/ns/ops/**",
            ]),
            "--tls-allow-id",
        )
        .unwrap();
        assert!(allow.admits(&ids(&["cart.shop.svc.cluster.local"])));
        assert!(allow.admits(&ids(&["spiffe://cluster.local/ns/ops/sa/a/b"])));
        assert!(!allow.admits(&ids(&["cart.bank.svc.cluster.local"])));
        // One matching identity among several is enough.
        assert!(allow.admits(&ids(&["x.example", "cart.shop.svc.cluster.local"])));
    }

    #[test]
    fn the_admitted_identity_is_the_one_a_pattern_matched() {
        let allow = Identities::parse(&ids(&["*.shop"]), "--tls-allow-id").unwrap();
        let seen = ids(&["evil.bank", "web.shop"]);
        assert_eq!(allow.admitted(&seen).as_deref(), Some("web.shop"));
        assert_eq!(
            Identities::default().admitted(&seen).as_deref(),
            Some("evil.bank")
        );
        assert_eq!(allow.admitted(&ids(&["evil.bank"])), None);
    }

    #[test]
    fn only_dns_names_are_dns_identities() {
        assert!(is_dns_name("web.shop.svc.cluster.local"));
        assert!(is_dns_name("*.shop"));
        assert!(is_dns_name("web.shop."));
        assert!(!is_dns_name("spiffe://cluster.local/ns/shop/sa/web"));
        assert!(!is_dns_name("a..b"));
        assert!(!is_dns_name(""));
    }

    #[test]
    fn no_pattern_admits_everyone_and_bad_patterns_name_the_flag() {
        assert!(Identities::default().admits(&[]));
        let err = Identities::parse(&ids(&["spiffe://a/[b"]), "--tls-allow-id").unwrap_err();
        assert!(err.to_string().contains("--tls-allow-id"), "{err}");
        assert!(err.downcast_ref::<crate::UsageError>().is_some());
    }
}
