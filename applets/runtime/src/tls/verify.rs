//! Certificate verifiers that read the CA bundle of the live [`Material`] at
//! each handshake (so a rotated CA applies to the next handshake) and then
//! check the peer's identity.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{verify_server_cert_signed_by_trust_anchor, verify_server_name};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::ParsedCertificate;
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, Error, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use super::{peer_identities, provider, Identities, Material};

fn refused(ids: &[String], expect: &Identities, side: &str) -> Error {
    tracing::info!(peer_identities = ?ids, allowed = ?expect.patterns(), "refused a {side} certificate: identity not allowed");
    Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure)
}

/// A TLS 1.2 handshake signature checked with the ring provider's algorithms.
pub fn tls12(
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, Error> {
    rustls::crypto::verify_tls12_signature(
        message,
        cert,
        dss,
        &provider().signature_verification_algorithms,
    )
}

/// A TLS 1.3 handshake signature checked with the ring provider's algorithms.
pub fn tls13(
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, Error> {
    rustls::crypto::verify_tls13_signature(
        message,
        cert,
        dss,
        &provider().signature_verification_algorithms,
    )
}

/// The signature schemes the ring provider verifies.
pub fn schemes() -> Vec<SignatureScheme> {
    provider()
        .signature_verification_algorithms
        .supported_schemes()
}

/// Server side: the client's chain must lead to the CA, and one of its
/// identities must match `allow`.
#[derive(Debug)]
pub(super) struct ClientVerifier {
    pub material: Arc<Material>,
    pub optional: bool,
    pub allow: Identities,
}

impl ClientVerifier {
    fn chain(&self) -> Result<Arc<dyn ClientCertVerifier>, Error> {
        let loaded = self.material.loaded();
        let v = if self.optional {
            &loaded.clients_optional
        } else {
            &loaded.clients_required
        };
        v.clone()
            .ok_or_else(|| Error::General("no CA to verify client certificates".into()))
    }
}

impl ClientCertVerifier for ClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        !self.optional
    }

    /// No CA names in the CertificateRequest: the bundle can change under us
    /// and this borrow cannot follow it. Clients then send the certificate
    /// they have, which is what sidecars (and HAProxy, curl, openssl) do.
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        self.chain()?
            .verify_client_cert(end_entity, intermediates, now)?;
        let ids = peer_identities(end_entity);
        if !self.allow.admits(&ids) {
            return Err(refused(&ids, &self.allow, "client"));
        }
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        schemes()
    }
}

/// Client side: the server's chain must lead to the CA; then either one of
/// its identities matches `expect`, or (no pattern) the name we connected to
/// is one of its DNS or IP SANs.
#[derive(Debug)]
pub(super) struct ServerVerifier {
    pub material: Arc<Material>,
    pub expect: Identities,
}

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let roots = self
            .material
            .loaded()
            .roots
            .clone()
            .ok_or_else(|| Error::General("no CA to verify server certificates".into()))?;
        let cert = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &cert,
            &roots,
            intermediates,
            now,
            provider().signature_verification_algorithms.all,
        )?;
        if self.expect.is_any() {
            verify_server_name(&cert, server_name)?;
        } else {
            let ids = peer_identities(end_entity);
            if !self.expect.admits(&ids) {
                return Err(refused(&ids, &self.expect, "server"));
            }
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        schemes()
    }
}
