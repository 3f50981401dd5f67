//! How an https remote's certificate is checked: rustls against the
//! system's CAs (`SSL_CERT_FILE`, `SSL_CERT_DIR`), looked up at each
//! handshake by the issuers the server's chain names ([`store`]), so an
//! idle git-sync holds no CA store.

mod namehash;
mod store;

use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{verify_server_name, WebPkiServerVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{CertificateError, DigitallySignedStruct, Error, RootCertStore, SignatureScheme};
use sidecar_runtime::tls::{self, rustls};

use store::Store;

/// The verifier every https remote's client uses; the environment is read
/// at the first https remote.
pub fn verifier() -> Arc<Verifier> {
    static VERIFIER: OnceLock<Arc<Verifier>> = OnceLock::new();
    VERIFIER
        .get_or_init(|| {
            Arc::new(Verifier {
                store: Store::from_env(),
            })
        })
        .clone()
}

#[derive(Debug)]
pub struct Verifier {
    store: Store,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let mut issuers = Vec::new();
        for der in std::iter::once(end_entity).chain(intermediates) {
            let (_, cert) = x509_parser::parse_x509_certificate(der)
                .map_err(|_| Error::InvalidCertificate(CertificateError::BadEncoding))?;
            issuers.push(cert.issuer().as_raw().to_vec());
        }
        let issuers: Vec<&[u8]> = issuers.iter().map(Vec::as_slice).collect();
        let trusted = self.store.issuers_of(&issuers).map_err(Error::General)?;
        if trusted.iter().any(|t| t.der == *end_entity) {
            return trusted_as_is(end_entity, server_name, now);
        }
        let roots = RootCertStore {
            roots: trusted.into_iter().map(|t| t.anchor).collect(),
        };
        if roots.is_empty() {
            return Err(Error::InvalidCertificate(CertificateError::UnknownIssuer));
        }
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), tls::provider())
            .build()
            .map_err(|e| Error::General(format!("CA certificates: {e}")))?
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        tls::tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        tls::tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        tls::schemes()
    }
}

/// A server certificate that is itself among the trusted ones (a
/// self-signed certificate given as `SSL_CERT_FILE`): OpenSSL, and so
/// git and libgit2, accept it even when it says it is a CA, which WebPKI
/// refuses for a server. Its name and dates are still checked.
fn trusted_as_is(
    cert: &CertificateDer<'_>,
    server_name: &ServerName<'_>,
    now: UnixTime,
) -> Result<ServerCertVerified, Error> {
    verify_server_name(&ParsedCertificate::try_from(cert)?, server_name)?;
    let (_, parsed) = x509_parser::parse_x509_certificate(cert)
        .map_err(|_| Error::InvalidCertificate(CertificateError::BadEncoding))?;
    let validity = parsed.validity();
    let now = now.as_secs() as i64;
    if now < validity.not_before.timestamp() {
        return Err(Error::InvalidCertificate(CertificateError::NotValidYet));
    }
    if now > validity.not_after.timestamp() {
        return Err(Error::InvalidCertificate(CertificateError::Expired));
    }
    Ok(ServerCertVerified::assertion())
}
