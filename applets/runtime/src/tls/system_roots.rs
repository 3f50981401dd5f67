//! Outgoing HTTPS (reqwest) checked against the system's CA roots, read at
//! the first handshake instead of when the client is built.
//!
//! Parsing the bundle (SSL_CERT_FILE, SSL_CERT_DIR or /etc/ssl/certs: some
//! 140 certificates) kept about 0.4 MiB of heap and 0.2 MiB of touched code
//! for the life of the process, in every Pod, also when every URL is plain
//! http (a reload endpoint on localhost, a log receiver in the Pod). Loaded
//! on demand, the check is the same as reqwest's own: the roots plus the
//! applet's extra CAs, the same TLS versions, SNI and ALPN.

use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::{ClientConfig, DigitallySignedStruct, Error, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use super::provider;
use super::verify::{schemes, tls12, tls13};

/// A reqwest client builder whose TLS trusts the system's roots and `extra`
/// (an applet's `--ca-file`), loaded at the first HTTPS handshake.
pub fn http_client_builder(extra: RootCertStore) -> reqwest::ClientBuilder {
    http_client_with_verifier(Arc::new(SystemRoots {
        extra,
        loaded: OnceLock::new(),
    }))
}

/// A reqwest client builder whose TLS checks servers with `verifier`, with
/// the protocol versions and ALPN of [`http_client_builder`].
pub fn http_client_with_verifier(verifier: Arc<dyn ServerCertVerifier>) -> reqwest::ClientBuilder {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    // What reqwest offers without its http2 feature.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    reqwest::Client::builder().use_preconfigured_tls(config)
}

#[derive(Debug)]
struct SystemRoots {
    extra: RootCertStore,
    loaded: OnceLock<Result<Arc<WebPkiServerVerifier>, String>>,
}

impl SystemRoots {
    fn verifier(&self) -> Result<&Arc<WebPkiServerVerifier>, Error> {
        self.loaded
            .get_or_init(|| load(&self.extra))
            .as_ref()
            .map_err(|e| Error::General(e.clone()))
    }
}

/// The system roots plus `extra`. Unparsable certificates in the system
/// store are skipped, as reqwest and curl do; none at all is an error at
/// each handshake, saying why.
fn load(extra: &RootCertStore) -> Result<Arc<WebPkiServerVerifier>, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut store = extra.clone();
    let (added, skipped) = store.add_parsable_certificates(found.certs);
    for e in &found.errors {
        tracing::warn!(error = %e, "reading the system CA certificates");
    }
    tracing::debug!(added, skipped, "system CA certificates loaded");
    if store.is_empty() {
        let why: Vec<String> = found.errors.iter().map(|e| e.to_string()).collect();
        return Err(format!(
            "no CA certificates to verify the server (SSL_CERT_FILE, SSL_CERT_DIR or the system store): {}",
            if why.is_empty() { "none found".to_string() } else { why.join("; ") }
        ));
    }
    WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider())
        .build()
        .map_err(|e| format!("CA certificates: {e}"))
}

impl ServerCertVerifier for SystemRoots {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        self.verifier()?.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )
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
