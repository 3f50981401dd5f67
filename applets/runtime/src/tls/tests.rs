//! Certificates are made here with rcgen; handshakes run over an in-memory
//! pipe with tokio-rustls, the same stack the applets use.

use super::*;
use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair, SanType};
use std::path::Path;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

fn ca() -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    Ca {
        cert: p.self_signed(&key).unwrap(),
        key,
    }
}

/// A leaf for `dns` and `uri` SANs, good for client and server auth.
fn leaf(ca: &Ca, dns: &str, uri: &str) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(vec![dns.to_string()]).unwrap();
    p.subject_alt_names
        .push(SanType::URI(uri.try_into().unwrap()));
    p.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let cert = p.signed_by(&key, &ca.cert, &ca.key).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn write(dir: &Path, name: &str, ca: &Ca, leaf: &(String, String)) -> TlsFiles {
    let cert = dir.join(format!("{name}.crt"));
    let key = dir.join(format!("{name}.key"));
    let ca_path = dir.join(format!("{name}-ca.crt"));
    std::fs::write(&cert, &leaf.0).unwrap();
    std::fs::write(&key, &leaf.1).unwrap();
    std::fs::write(&ca_path, ca.cert.pem()).unwrap();
    TlsFiles {
        cert: PemFile::new(cert, "--tls-cert"),
        key: PemFile::new(key, "--tls-key"),
        ca: Some(PemFile::new(ca_path, "--tls-ca")),
    }
}

fn ids(v: &[&str]) -> Identities {
    Identities::parse(
        &v.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        "--test",
    )
    .unwrap()
}

/// One mTLS handshake plus a byte each way. Ok: the server's view of the
/// client's identities, the client's of the server's, and the ALPN chosen.
async fn handshake(
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    name: &str,
) -> Result<(Vec<String>, Vec<String>, Option<Vec<u8>>), (std::io::Error, std::io::Error)> {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let acceptor = tokio_rustls::TlsAcceptor::from(server);
    let connector = tokio_rustls::TlsConnector::from(client);
    let name = ServerName::try_from(name.to_string()).unwrap();
    let (s, c) = tokio::join!(
        async move {
            let mut s = acceptor.accept(a).await?;
            s.write_all(b"s").await?;
            s.flush().await?;
            let ids = peer_certificate_identities(s.get_ref().1.peer_certificates());
            Ok::<_, std::io::Error>((s, ids))
        },
        async move {
            let mut c = connector.connect(name, b).await?;
            let mut byte = [0u8; 1];
            c.read_exact(&mut byte).await?;
            let ids = peer_certificate_identities(c.get_ref().1.peer_certificates());
            let alpn = c.get_ref().1.alpn_protocol().map(|p| p.to_vec());
            Ok::<_, std::io::Error>((c, ids, alpn))
        }
    );
    match (s, c) {
        (Ok((_s, sids)), Ok((_c, cids, alpn))) => Ok((sids, cids, alpn)),
        (s, c) => Err((
            s.err()
                .unwrap_or_else(|| std::io::Error::other("server side ok")),
            c.err()
                .unwrap_or_else(|| std::io::Error::other("client side ok")),
        )),
    }
}

use rustls_pki_types::ServerName;

const SHOP_WEB: &str = "spiffe://cluster.local/ns/shop/sa/web";
const SHOP_API: &str = "spiffe://cluster.local/ns/shop/sa/api";
const BANK: &str = "spiffe://cluster.local/ns/bank/sa/teller";

#[tokio::test]
async fn loads_and_completes_mutual_tls_with_identities_and_alpn() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca();
    let srv = Material::load(
        write(dir.path(), "srv", &ca, &leaf(&ca, "api.shop", SHOP_API)),
        TlsMetrics::default(),
    )
    .unwrap();
    let cli = Material::load(
        write(dir.path(), "cli", &ca, &leaf(&ca, "web.shop", SHOP_WEB)),
        TlsMetrics::default(),
    )
    .unwrap();
    let server = srv
        .server_config(
            ClientAuth::Required,
            ids(&["spiffe://cluster.local/ns/shop/sa/*"]),
            ALPN_H2_HTTP1,
        )
        .unwrap();

    // By upstream identity.
    let client = cli.client_config(ids(&[SHOP_API]), ALPN_H2_HTTP1).unwrap();
    let (seen_by_server, seen_by_client, alpn) =
        handshake(server.clone(), client, "10.0.0.1").await.unwrap();
    assert_eq!(
        seen_by_server,
        vec![SHOP_WEB.to_string(), "web.shop".into()]
    );
    assert_eq!(
        seen_by_client,
        vec![SHOP_API.to_string(), "api.shop".into()]
    );
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));

    // By DNS SAN of the name we dialled.
    let by_name = cli
        .client_config(Identities::default(), ALPN_H2_HTTP1)
        .unwrap();
    handshake(server.clone(), by_name.clone(), "api.shop")
        .await
        .unwrap();
    let (_, c) = handshake(server, by_name, "other.shop").await.unwrap_err();
    assert_eq!(failure_reason(&c), "identity", "{c}");
}

#[tokio::test]
async fn refuses_wrong_identity_missing_certificate_and_foreign_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca1 = ca();
    let srv = Material::load(
        write(dir.path(), "srv", &ca1, &leaf(&ca1, "api.shop", SHOP_API)),
        TlsMetrics::default(),
    )
    .unwrap();
    let server = srv
        .server_config(
            ClientAuth::Required,
            ids(&["spiffe://cluster.local/ns/shop/sa/*"]),
            ALPN_H2_HTTP1,
        )
        .unwrap();

    // A client of the same CA whose identity is not allowed.
    let bank = Material::load(
        write(dir.path(), "bank", &ca1, &leaf(&ca1, "teller.bank", BANK)),
        TlsMetrics::default(),
    )
    .unwrap();
    let client = bank.client_config(ids(&[SHOP_API]), ALPN_H2_HTTP1).unwrap();
    let (s, _) = handshake(server.clone(), client, "x").await.unwrap_err();
    assert_eq!(failure_reason(&s), "identity", "{s}");

    // A client with an allowed name but from another CA.
    let ca2 = ca();
    let mut forged = write(
        dir.path(),
        "forged",
        &ca2,
        &leaf(&ca2, "web.shop", SHOP_WEB),
    );
    forged.ca = srv.files().ca.clone();
    let forged = Material::load(forged, TlsMetrics::default()).unwrap();
    let client = forged
        .client_config(ids(&[SHOP_API]), ALPN_H2_HTTP1)
        .unwrap();
    let (s, _) = handshake(server.clone(), client, "x").await.unwrap_err();
    assert_eq!(failure_reason(&s), "untrusted_cert", "{s}");

    // A client with no certificate at all.
    let anonymous = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(srv.loaded().roots.clone().unwrap())
        .with_no_client_auth();
    let (s, _) = handshake(server, Arc::new(anonymous), "api.shop")
        .await
        .unwrap_err();
    assert_eq!(failure_reason(&s), "no_client_cert", "{s}");
}

#[test]
fn start_errors_name_the_flag_and_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca();
    let files = write(dir.path(), "a", &ca, &leaf(&ca, "a", SHOP_WEB));

    let mut missing = files.clone();
    missing.cert.path = dir.path().join("nope.crt");
    let e = Material::load(missing, TlsMetrics::default()).unwrap_err();
    assert!(e.downcast_ref::<crate::UsageError>().is_some());
    assert!(e.to_string().starts_with("--tls-cert "), "{e}");
    assert!(e.to_string().contains("cannot read"), "{e}");

    // The key of another certificate.
    let other = write(dir.path(), "b", &ca, &leaf(&ca, "b", SHOP_API));
    let mut mismatched = files.clone();
    mismatched.key = other.key.clone();
    let e = Material::load(mismatched, TlsMetrics::default()).unwrap_err();
    assert!(e.downcast_ref::<crate::UsageError>().is_some());
    assert!(
        e.to_string().starts_with("--tls-key ") && e.to_string().contains("does not match"),
        "{e}"
    );

    let mut not_pem = files.clone();
    std::fs::write(dir.path().join("junk.pem"), "hello\n").unwrap();
    not_pem.ca = Some(PemFile::new(dir.path().join("junk.pem"), "--tls-ca"));
    let e = Material::load(not_pem, TlsMetrics::default()).unwrap_err();
    assert!(e.to_string().starts_with("--tls-ca "), "{e}");
}

/// An expired certificate loads (its renewal may be on its way) but fails
/// `check_validity`, which `--check` runs, naming the flag and the date.
#[test]
fn an_expired_certificate_loads_but_fails_the_check() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca();
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(vec!["old".to_string()]).unwrap();
    p.not_before = rcgen::date_time_ymd(2020, 1, 1);
    p.not_after = rcgen::date_time_ymd(2020, 1, 2);
    let expired = p.signed_by(&key, &ca.cert, &ca.key).unwrap();
    let files = write(
        dir.path(),
        "old",
        &ca,
        &(expired.pem(), key.serialize_pem()),
    );
    Material::check(&files).unwrap();
    Material::load(files.clone(), TlsMetrics::default()).unwrap();
    let e = Material::check_validity(&files).unwrap_err();
    assert!(e.downcast_ref::<crate::UsageError>().is_some());
    assert!(e.to_string().starts_with("--tls-cert "), "{e}");
    assert!(
        e.to_string().contains("expired at Jan  2 00:00:00 2020"),
        "{e}"
    );

    let current = write(dir.path(), "new", &ca, &leaf(&ca, "new", SHOP_WEB));
    Material::check_validity(&current).unwrap();
}

#[tokio::test]
async fn reload_swaps_the_certificate_and_a_bad_file_keeps_the_old_one() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca();
    let metrics = TlsMetrics::default();
    let files = write(dir.path(), "srv", &ca, &leaf(&ca, "api.shop", SHOP_API));
    let srv = Material::load(files.clone(), metrics.clone()).unwrap();
    let cli = Material::load(
        write(dir.path(), "cli", &ca, &leaf(&ca, "web.shop", SHOP_WEB)),
        TlsMetrics::default(),
    )
    .unwrap();
    // Configs are built once, before the rotation, as a proxy does.
    let server = srv
        .server_config(ClientAuth::Required, Identities::default(), ALPN_H2_HTTP1)
        .unwrap();
    let client = cli
        .client_config(Identities::default(), ALPN_H2_HTTP1)
        .unwrap();
    let (_, before, _) = handshake(server.clone(), client.clone(), "api.shop")
        .await
        .unwrap();
    assert_eq!(before, vec![SHOP_API.to_string(), "api.shop".into()]);

    // Rotation to a certificate with a new identity.
    let rotated = leaf(
        &ca,
        "api-v2.shop",
        "spiffe://cluster.local/ns/shop/sa/api-v2",
    );
    std::fs::write(&files.cert.path, &rotated.0).unwrap();
    std::fs::write(&files.key.path, &rotated.1).unwrap();
    assert!(srv.reload());
    assert_eq!(metrics.reloads("ok"), 1);
    let (_, after, _) = handshake(server.clone(), client.clone(), "api-v2.shop")
        .await
        .unwrap();
    assert_eq!(
        after,
        vec![
            "spiffe://cluster.local/ns/shop/sa/api-v2".to_string(),
            "api-v2.shop".into()
        ]
    );

    // A half-written rotation (new cert, old key) and a truncated file both
    // keep the last good material.
    let next = leaf(&ca, "api-v3.shop", SHOP_API);
    std::fs::write(&files.cert.path, &next.0).unwrap();
    assert!(!srv.reload());
    std::fs::write(&files.cert.path, &next.0[..40]).unwrap();
    assert!(!srv.reload());
    assert_eq!(metrics.reloads("failed"), 2);
    let (_, still, _) = handshake(server, client, "api-v2.shop").await.unwrap();
    assert_eq!(still, after);
}

/// A resumed session skips the client certificate check: none made before
/// a reload may be resumed after it (a CA rotated out, say).
#[test]
fn a_reload_forgets_the_sessions_servers_could_resume() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca();
    let files = write(dir.path(), "srv", &ca, &leaf(&ca, "api.shop", SHOP_API));
    let srv = Material::load(files.clone(), TlsMetrics::default()).unwrap();
    let server = srv
        .server_config(ClientAuth::Required, Identities::default(), ALPN_H2_HTTP1)
        .unwrap();
    assert!(server
        .session_storage
        .put(b"id".to_vec(), b"session".to_vec()));
    assert_eq!(server.session_storage.get(b"id"), Some(b"session".to_vec()));
    let rotated = leaf(&ca, "api.shop", SHOP_API);
    std::fs::write(&files.cert.path, &rotated.0).unwrap();
    std::fs::write(&files.key.path, &rotated.1).unwrap();
    assert!(srv.reload());
    assert_eq!(server.session_storage.get(b"id"), None);
}

/// Likewise for our clients: resuming skips the server's chain check, so
/// a reload (a CA rotated out, say) forgets what they could resume.
#[test]
fn a_reload_forgets_the_sessions_clients_could_resume() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca();
    let files = write(dir.path(), "cli", &ca, &leaf(&ca, "web.shop", SHOP_WEB));
    let cli = Material::load(files.clone(), TlsMetrics::default()).unwrap();
    let client = cli.client_config(Identities::default(), &[]).unwrap();
    let store = match &client.resumption {
        r if format!("{r:?}").contains("Material") => cli.clone(),
        r => panic!("the client resumes from another store: {r:?}"),
    };
    let name = ServerName::try_from("api.shop").unwrap();
    store.set_kx_hint(name.clone(), rustls::NamedGroup::X25519);
    assert_eq!(store.kx_hint(&name), Some(rustls::NamedGroup::X25519));
    let rotated = leaf(&ca, "web.shop", SHOP_WEB);
    std::fs::write(&files.cert.path, &rotated.0).unwrap();
    std::fs::write(&files.key.path, &rotated.1).unwrap();
    assert!(cli.reload());
    assert_eq!(store.kx_hint(&name), None);
}

#[tokio::test]
async fn a_rotated_ca_bundle_applies_to_the_next_handshake() {
    let dir = tempfile::tempdir().unwrap();
    let (old_ca, new_ca) = (ca(), ca());
    let files = write(
        dir.path(),
        "srv",
        &old_ca,
        &leaf(&old_ca, "api.shop", SHOP_API),
    );
    let srv = Material::load(files.clone(), TlsMetrics::default()).unwrap();
    let server = srv
        .server_config(ClientAuth::Required, Identities::default(), ALPN_H2_HTTP1)
        .unwrap();
    let cf = write(
        dir.path(),
        "cli",
        &new_ca,
        &leaf(&new_ca, "web.shop", SHOP_WEB),
    );
    // The client trusts both CAs, so only the server's view decides.
    let both = format!("{}{}", old_ca.cert.pem(), new_ca.cert.pem());
    std::fs::write(&cf.ca.as_ref().unwrap().path, both).unwrap();
    let cli = Material::load(cf, TlsMetrics::default()).unwrap();
    let client = cli
        .client_config(Identities::default(), ALPN_H2_HTTP1)
        .unwrap();

    let (s, _) = handshake(server.clone(), client.clone(), "api.shop")
        .await
        .unwrap_err();
    assert_eq!(failure_reason(&s), "untrusted_cert");
    std::fs::write(
        &files.ca.as_ref().unwrap().path,
        format!("{}{}", old_ca.cert.pem(), new_ca.cert.pem()),
    )
    .unwrap();
    assert!(srv.reload());
    handshake(server, client, "api.shop").await.unwrap();
}

#[tokio::test]
async fn a_watched_material_reloads_when_its_files_change() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca();
    let metrics = TlsMetrics::default();
    let files = write(dir.path(), "srv", &ca, &leaf(&ca, "api.shop", SHOP_API));
    let srv = Material::load_watched(files.clone(), metrics.clone()).unwrap();
    let before = srv.certified_key().cert[0].clone();

    // As cert-manager does: the key first, then the certificate. The first
    // write alone may be seen as a mismatch, which keeps the old pair.
    let rotated = leaf(&ca, "api-v2.shop", SHOP_API);
    replace_file(&files.key.path, &rotated.1);
    replace_file(&files.cert.path, &rotated.0);
    let mut swapped = false;
    for _ in 0..200 {
        if srv.certified_key().cert[0] != before {
            swapped = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert!(swapped, "the new certificate was not picked up");
    assert_eq!(
        peer_identities(&srv.certified_key().cert[0]),
        vec![SHOP_API.to_string(), "api-v2.shop".into()]
    );
    assert!(metrics.reloads("ok") >= 1);
}

fn replace_file(path: &Path, content: &str) {
    crate::fsutil::write_atomic(path, content.as_bytes(), 0o600).unwrap();
}

/// An HTTPS server on loopback answering one request per connection with 200.
async fn https_server(server: Arc<ServerConfig>) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let acceptor = tokio_rustls::TlsAcceptor::from(server);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut head = [0u8; 1024];
                let _ = tls.read(&mut head).await;
                let _ = tls
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                    )
                    .await;
                let _ = tls.shutdown().await;
            });
        }
    });
    port
}

#[tokio::test]
async fn http_clients_verify_servers_against_the_roots_loaded_at_the_first_handshake() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca();
    let srv = Material::load(
        write(dir.path(), "srv", &ca, &leaf(&ca, "localhost", SHOP_API)),
        TlsMetrics::default(),
    )
    .unwrap();
    let port = https_server(srv.server_config(ClientAuth::Off, ids(&[]), &[]).unwrap()).await;
    let url = format!("https://localhost:{port}/");

    // The applet's own CA (log-tail-ship's --ca-file) is trusted.
    let mut extra = RootCertStore::empty();
    extra.add(ca.cert.der().clone()).unwrap();
    let trusting = http_client_builder(extra).build().unwrap();
    let resp = trusting.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "ok");

    // Without it, the system's roots do not know our CA.
    let system_only = http_client_builder(RootCertStore::empty()).build().unwrap();
    let err = system_only.get(&url).send().await.unwrap_err();
    let chain = format!("{:?}", err);
    assert!(chain.contains("UnknownIssuer"), "{chain}");
}
