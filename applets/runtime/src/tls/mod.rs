//! The one way to load TLS material: rustls (ring) server and client configs
//! built from PEM files, whose certificate, key and CA bundle are swapped in
//! place when `runtime::watch` sees the files change ([`Material::load_watched`]), so rotation (cert-manager, SPIFFE CSI, a
//! Secret update) needs no restart and drops no connection. A bad new file
//! keeps the old material, logged and counted. Identity checks (SPIFFE URI
//! SAN, DNS SAN globs) live in [`identity`].
//!
//! At start a missing or unreadable file, or a key that does not match its
//! certificate, is a [`UsageError`](crate::UsageError) naming the flag.

mod identity;
mod system_roots;
mod verify;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock, RwLock};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use rustls::client::{
    ClientSessionMemoryCache, ClientSessionStore, ResolvesClientCert, Resumption,
    Tls12ClientSessionValue, Tls13ClientSessionValue,
};
use rustls::crypto::CryptoProvider;
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{
    ClientHello, ResolvesServerCert, ServerSessionMemoryCache, StoresServerSessions,
    WebPkiClientVerifier,
};
use rustls::sign::CertifiedKey;
use rustls::NamedGroup;
use rustls::{ClientConfig, RootCertStore, ServerConfig, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::watch::{Fingerprint, Watch};

pub use identity::{peer_identities, Identities};
pub use rustls;
pub use system_roots::{http_client_builder, http_client_with_verifier};
pub use verify::{schemes, tls12, tls13};

/// ALPN ids offered and accepted: HTTP/2 first, then HTTP/1.1.
pub const ALPN_H2_HTTP1: &[&[u8]] = &[b"h2", b"http/1.1"];

/// The ring provider every config uses: one process, one crypto stack.
/// rustls deprecates it for lacking post-quantum key exchange (that lives in
/// aws-lc-rs, which needs a C/CMake toolchain for our static build); the
/// project's choice is ring.
#[allow(deprecated)]
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// A PEM file and the flag that named it (error messages say which).
#[derive(Clone, Debug)]
pub struct PemFile {
    pub path: PathBuf,
    pub flag: &'static str,
}

impl PemFile {
    pub fn new(path: impl Into<PathBuf>, flag: &'static str) -> Self {
        PemFile {
            path: path.into(),
            flag,
        }
    }

    fn read(&self) -> Result<Vec<u8>, String> {
        std::fs::read(&self.path).map_err(|e| format!("{self}: cannot read: {e}"))
    }

    fn certificates(&self) -> Result<Vec<CertificateDer<'static>>, String> {
        let pem = self.read()?;
        let certs = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{self}: bad PEM: {e}"))?;
        if certs.is_empty() {
            return Err(format!("{self}: no CERTIFICATE block"));
        }
        Ok(certs)
    }
}

impl fmt::Display for PemFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.flag, self.path.display())
    }
}

/// Our certificate chain and key, and optionally the CA bundle that peers'
/// chains must lead to.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: PemFile,
    pub key: PemFile,
    pub ca: Option<PemFile>,
}

impl TlsFiles {
    /// Every file, to watch for changes.
    pub fn paths(&self) -> Vec<&Path> {
        let mut p = vec![self.cert.path.as_path(), self.key.path.as_path()];
        p.extend(self.ca.as_ref().map(|c| c.path.as_path()));
        p
    }
}

/// Reload outcomes and the certificate's expiry, under the applet's prefix.
#[derive(Clone, Default)]
pub struct TlsMetrics {
    reloads: Family<Vec<(&'static str, &'static str)>, Counter>,
    not_after: Gauge,
}

impl TlsMetrics {
    /// Registers `tls_reloads_total{result="ok|failed"}` and
    /// `tls_certificate_not_after_seconds` in `registry` (give it the
    /// applet's prefixed sub-registry).
    pub fn register(registry: &mut Registry) -> Self {
        let m = TlsMetrics::default();
        registry.register(
            "tls_reloads",
            "Reloads of the TLS certificate, key and CA files, by result (a failed one keeps the old material)",
            m.reloads.clone(),
        );
        registry.register(
            "tls_certificate_not_after_seconds",
            "Expiry of the certificate in use, as a Unix time",
            m.not_after.clone(),
        );
        m
    }

    fn reload(&self, result: &'static str) {
        self.reloads.get_or_create(&vec![("result", result)]).inc();
    }

    /// Count of reloads with `result` ("ok" or "failed"), for tests.
    pub fn reloads(&self, result: &'static str) -> u64 {
        self.reloads.get_or_create(&vec![("result", result)]).get()
    }
}

/// What one successful read of the files produced.
struct Loaded {
    key: Arc<CertifiedKey>,
    identities: Vec<String>,
    roots: Option<Arc<RootCertStore>>,
    /// Chain checks for client certificates, built once per CA bundle.
    clients_required: Option<Arc<dyn ClientCertVerifier>>,
    clients_optional: Option<Arc<dyn ClientCertVerifier>>,
    /// Sessions our servers may resume, made under this material: a resumed
    /// session skips the client certificate check, so a reload (a new CA,
    /// say) starts a new cache and no session outlives the trust it was
    /// verified under.
    sessions: Arc<ServerSessionMemoryCache>,
    /// Sessions our clients may resume, likewise: resuming skips the
    /// server's chain and identity check.
    client_sessions: Arc<ClientSessionMemoryCache>,
}

/// The live TLS material: resolves our certificate for both server and
/// client handshakes, and holds the CA that verifiers read at each handshake,
/// so a reload reaches every config built from it.
pub struct Material {
    files: TlsFiles,
    current: RwLock<Arc<Loaded>>,
    metrics: TlsMetrics,
}

impl fmt::Debug for Material {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Material")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl Material {
    /// Reads the files; any problem is a usage error naming the flag.
    pub fn load(files: TlsFiles, metrics: TlsMetrics) -> anyhow::Result<Arc<Self>> {
        let loaded = read(&files).map_err(|e| crate::usage!("{e}"))?;
        tracing::info!(cert = %files.cert.path.display(), identities = ?loaded.identities, "TLS certificate loaded");
        warn_if_invalid(&files, &loaded.key);
        metrics.not_after.set(not_after(&loaded.key));
        Ok(Arc::new(Material {
            files,
            current: RwLock::new(Arc::new(loaded)),
            metrics,
        }))
    }

    /// Reads and checks the files as [`Material::load`] does, without
    /// keeping or logging them: for `Applet::check`, which a normal start runs
    /// before the applet loads them (once logged, not twice).
    pub fn check(files: &TlsFiles) -> anyhow::Result<()> {
        read(files).map(drop).map_err(|e| crate::usage!("{e}"))
    }

    /// `--check` only: our certificate is valid now. A start takes an
    /// expired one with a warning (its renewal may be on its way, and the
    /// file is read again when it changes); a check that says "this will
    /// work" must not pass a certificate every peer refuses.
    pub fn check_validity(files: &TlsFiles) -> anyhow::Result<()> {
        let chain = files
            .cert
            .certificates()
            .map_err(|e| crate::usage!("{e}"))?;
        match invalid_now(&chain[0]) {
            Some(why) => Err(crate::usage!("{}: {why}", files.cert)),
            None => Ok(()),
        }
    }

    /// [`Material::load`], then reloads whenever `runtime::watch` sees one of
    /// the files change, for as long as the material is in use. Needs a tokio
    /// runtime.
    pub fn load_watched(files: TlsFiles, metrics: TlsMetrics) -> anyhow::Result<Arc<Self>> {
        let paths: Vec<PathBuf> = files.paths().into_iter().map(Path::to_path_buf).collect();
        // Watch and fingerprint before the first read: a change that lands
        // during the read is then seen as a difference and reloaded.
        let mut watch = Watch::files(paths.iter());
        let mut seen = Fingerprint::of_files(&paths);
        let material = Self::load(files, metrics)?;
        let weak = Arc::downgrade(&material);
        tokio::spawn(async move {
            loop {
                watch.changed().await;
                let Some(material) = weak.upgrade() else {
                    return;
                };
                let now = Fingerprint::of_files(&paths);
                if now != seen {
                    seen = now;
                    material.reload();
                }
            }
        });
        Ok(material)
    }

    /// Reads the files again and swaps them in. On any problem the old
    /// material stays in use; the failure is logged and counted. A rotation
    /// caught between writing the certificate and its key fails here as a
    /// mismatch, and the write of the second file triggers the next reload.
    pub fn reload(&self) -> bool {
        match read(&self.files) {
            Ok(loaded) => {
                tracing::info!(cert = %self.files.cert.path.display(), identities = ?loaded.identities, "TLS certificate reloaded");
                warn_if_invalid(&self.files, &loaded.key);
                self.metrics.not_after.set(not_after(&loaded.key));
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(loaded);
                self.metrics.reload("ok");
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "TLS files not reloaded; keeping the previous certificate");
                self.metrics.reload("failed");
                false
            }
        }
    }

    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// The certificate in use now (its first element is ours).
    pub fn certified_key(&self) -> Arc<CertifiedKey> {
        self.loaded().key.clone()
    }

    fn loaded(&self) -> Arc<Loaded> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// A server config presenting our certificate. With `auth` other than
    /// [`ClientAuth::Off`], client certificates are verified against the CA
    /// file and their identity against `allow`.
    pub fn server_config(
        self: &Arc<Self>,
        auth: ClientAuth,
        allow: Identities,
        alpn: &[&[u8]],
    ) -> anyhow::Result<Arc<ServerConfig>> {
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?;
        let builder = match auth {
            ClientAuth::Off => builder.with_no_client_auth(),
            _ if self.files.ca.is_none() => {
                anyhow::bail!("verifying client certificates needs a CA file")
            }
            _ => builder.with_client_cert_verifier(Arc::new(verify::ClientVerifier {
                material: self.clone(),
                optional: auth == ClientAuth::Optional,
                allow,
            })),
        };
        let mut config = builder.with_cert_resolver(self.clone());
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        config.session_storage = self.clone();
        Ok(Arc::new(config))
    }

    /// A client config presenting our certificate, verifying the server's
    /// chain against the CA file, and its identity against `expect` (or,
    /// when `expect` has no pattern, the server name against its DNS SANs).
    pub fn client_config(
        self: &Arc<Self>,
        expect: Identities,
        alpn: &[&[u8]],
    ) -> anyhow::Result<Arc<ClientConfig>> {
        if self.files.ca.is_none() {
            anyhow::bail!("verifying server certificates needs a CA file");
        }
        let mut config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verify::ServerVerifier {
                material: self.clone(),
                expect,
            }))
            .with_client_cert_resolver(self.clone());
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        config.resumption = Resumption::store(self.clone());
        Ok(Arc::new(config))
    }
}

/// Whether a server asks for client certificates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    Off,
    /// Asked for; a client without one is let in (its chain is still checked
    /// when it sends one).
    Optional,
    Required,
}

/// The current material's session cache (see `Loaded::sessions`).
impl StoresServerSessions for Material {
    fn put(&self, key: Vec<u8>, value: Vec<u8>) -> bool {
        self.loaded().sessions.put(key, value)
    }

    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.loaded().sessions.get(key)
    }

    fn take(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.loaded().sessions.take(key)
    }

    fn can_cache(&self) -> bool {
        true
    }
}

/// The current material's client session cache (see `Loaded::client_sessions`).
impl ClientSessionStore for Material {
    fn set_kx_hint(&self, server_name: ServerName<'static>, group: NamedGroup) {
        self.loaded()
            .client_sessions
            .set_kx_hint(server_name, group)
    }

    fn kx_hint(&self, server_name: &ServerName<'_>) -> Option<NamedGroup> {
        self.loaded().client_sessions.kx_hint(server_name)
    }

    fn set_tls12_session(&self, server_name: ServerName<'static>, value: Tls12ClientSessionValue) {
        self.loaded()
            .client_sessions
            .set_tls12_session(server_name, value)
    }

    fn tls12_session(&self, server_name: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
        self.loaded().client_sessions.tls12_session(server_name)
    }

    fn remove_tls12_session(&self, server_name: &ServerName<'static>) {
        self.loaded()
            .client_sessions
            .remove_tls12_session(server_name)
    }

    fn insert_tls13_ticket(
        &self,
        server_name: ServerName<'static>,
        value: Tls13ClientSessionValue,
    ) {
        self.loaded()
            .client_sessions
            .insert_tls13_ticket(server_name, value)
    }

    fn take_tls13_ticket(
        &self,
        server_name: &ServerName<'static>,
    ) -> Option<Tls13ClientSessionValue> {
        self.loaded().client_sessions.take_tls13_ticket(server_name)
    }
}

impl ResolvesServerCert for Material {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.certified_key())
    }
}

impl ResolvesClientCert for Material {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.certified_key())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

fn read(files: &TlsFiles) -> Result<Loaded, String> {
    let chain = files.cert.certificates()?;
    let key_pem = files.key.read()?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| format!("{}: no usable private key: {e}", files.key))?;
    let identities = peer_identities(&chain[0]);
    let key = CertifiedKey::from_der(chain, key, &provider()).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => format!(
            "{}: the key does not match the certificate in {}",
            files.key, files.cert
        ),
        e => format!("{}: {e}", files.key),
    })?;
    let (mut roots, mut clients_required, mut clients_optional) = (None, None, None);
    if let Some(ca) = &files.ca {
        let mut store = RootCertStore::empty();
        for cert in ca.certificates()? {
            store
                .add(cert)
                .map_err(|e| format!("{ca}: not a usable CA certificate: {e}"))?;
        }
        let store = Arc::new(store);
        let build = |optional: bool| {
            let b = WebPkiClientVerifier::builder_with_provider(store.clone(), provider());
            let b = if optional {
                b.allow_unauthenticated()
            } else {
                b
            };
            b.build().map_err(|e| format!("{ca}: {e}"))
        };
        clients_required = Some(build(false)?);
        clients_optional = Some(build(true)?);
        roots = Some(store);
    }
    Ok(Loaded {
        key: Arc::new(key),
        identities,
        roots,
        clients_required,
        clients_optional,
        // rustls's default size.
        sessions: ServerSessionMemoryCache::new(256),
        client_sessions: Arc::new(ClientSessionMemoryCache::new(256)),
    })
}

/// Why a certificate is not valid at this moment (expired, or not yet),
/// None when it is (or does not parse: rustls has said what it thinks).
fn invalid_now(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, c) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let v = c.validity();
    let now = x509_parser::time::ASN1Time::now();
    if now > v.not_after {
        Some(format!(
            "the certificate expired at {} (notAfter)",
            v.not_after
        ))
    } else if now < v.not_before {
        Some(format!(
            "the certificate is not valid before {} (notBefore)",
            v.not_before
        ))
    } else {
        None
    }
}

/// Loading an expired certificate is allowed (see `check_validity`), but
/// said: peers will refuse it until it is renewed.
fn warn_if_invalid(files: &TlsFiles, key: &CertifiedKey) {
    if let Some(why) = key.cert.first().and_then(invalid_now) {
        tracing::warn!(cert = %files.cert, "{why}: peers will refuse it until it is renewed");
    }
}

/// The end-entity certificate's notAfter as a Unix time (0 if unparsable).
fn not_after(key: &CertifiedKey) -> i64 {
    key.cert
        .first()
        .and_then(|c| x509_parser::parse_x509_certificate(c.as_ref()).ok())
        .map(|(_, c)| c.validity().not_after.timestamp())
        .unwrap_or(0)
}

/// Why a handshake failed, as a short metric label: `no_client_cert`,
/// `identity`, `untrusted_cert`, `expired_cert`, `bad_cert`, `no_common_alpn`,
/// `protocol` (not TLS, or a version or cipher we do not speak) or `io`.
pub fn failure_reason(e: &std::io::Error) -> &'static str {
    use rustls::{CertificateError as C, Error as E};
    let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) else {
        return "io";
    };
    match tls {
        E::NoCertificatesPresented => "no_client_cert",
        E::InvalidCertificate(C::ApplicationVerificationFailure) => "identity",
        E::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. }) => "identity",
        E::InvalidCertificate(
            C::UnknownIssuer | C::BadSignature | C::UnhandledCriticalExtension,
        ) => "untrusted_cert",
        E::InvalidCertificate(
            C::Expired | C::ExpiredContext { .. } | C::NotValidYet | C::NotValidYetContext { .. },
        ) => "expired_cert",
        E::InvalidCertificate(_) => "bad_cert",
        E::NoApplicationProtocol => "no_common_alpn",
        // The peer refused *our* certificate.
        E::AlertReceived(_) => "peer_alert",
        _ => "protocol",
    }
}

/// The identities (URI and DNS SANs) of the certificate a peer presented.
pub fn peer_certificate_identities(certs: Option<&[CertificateDer<'_>]>) -> Vec<String> {
    certs
        .and_then(|c| c.first())
        .map(peer_identities)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
