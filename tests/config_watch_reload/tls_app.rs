//! An app whose reload endpoint is served over TLS with a self-signed
//! certificate, as a Prometheus with its own `web.tlsConfig` is: lighttpd
//! serving `GET /-/reload` from a file.

use std::path::Path;

use crate::support::Peer;

/// The server, stopped on drop.
pub struct TlsApp {
    _server: Peer,
    pub port: u16,
}

impl TlsApp {
    /// `None` (after saying so) when lighttpd's TLS module or openssl is
    /// missing; .ci/packages.d/config-watch-reload lists them.
    pub fn start(dir: &Path) -> Option<TlsApp> {
        let (tls, _cert) =
            crate::support::lighttpd::self_signed_tls(dir, "prometheus.example", None)?;
        let root = dir.join("www");
        std::fs::create_dir_all(root.join("-")).unwrap();
        std::fs::write(root.join("-/reload"), "reloaded\n").unwrap();
        let port = crate::support::free_port();
        let conf = dir.join("lighttpd.conf");
        std::fs::write(
            &conf,
            format!(
                "server.document-root = \"{root}\"\nserver.bind = \"127.0.0.1\"\nserver.port = {port}\n\
                 server.errorlog = \"{dir}/lighttpd.log\"\n{tls}",
                root = root.display(),
                dir = dir.display(),
            ),
        )
        .unwrap();
        let server = crate::support::lighttpd::spawn(&conf, port);
        Some(TlsApp {
            _server: server,
            port,
        })
    }
}
