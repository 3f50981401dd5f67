use std::net::SocketAddr;
use std::sync::{Arc, MutexGuard};
use std::time::Duration;

use prometheus_client::registry::Registry;

use crate::admin::{AdminState, Handler};
use crate::Shutdown;

/// What the runtime hands an applet: shutdown, readiness, metrics, admin routes.
#[derive(Clone)]
pub struct Context {
    pub(crate) admin: Arc<AdminState>,
    pub(crate) shutdown: Shutdown,
    pub(crate) shutdown_grace: Duration,
    pub(crate) admin_addr: Option<SocketAddr>,
}

impl Context {
    /// A context that is not attached to a process (unit tests of applets).
    pub fn detached() -> Self {
        Context {
            admin: Arc::new(AdminState::default()),
            shutdown: Shutdown::new(),
            shutdown_grace: Duration::from_secs(5),
            admin_addr: None,
        }
    }

    /// Resolves on SIGTERM/SIGINT. `/readyz` already answers 503 by then.
    pub async fn shutdown(&self) {
        self.shutdown.requested().await
    }

    /// A clonable handle on the shutdown signal, for spawned tasks.
    pub fn shutdown_handle(&self) -> Shutdown {
        self.shutdown.clone()
    }

    /// How long the applet may drain after shutdown starts.
    pub fn shutdown_grace(&self) -> Duration {
        self.shutdown_grace
    }

    /// `/readyz` answers 200 only while this is true and shutdown has not started.
    pub fn set_ready(&self, ready: bool) {
        self.admin.set_ready(ready)
    }

    /// The Prometheus registry that `/metrics` encodes. Register at startup.
    pub fn registry(&self) -> MutexGuard<'_, Registry> {
        self.admin.registry()
    }

    /// Adds a route to the admin server (`POST /sync` for git-sync).
    pub fn admin_route(&self, method: http::Method, path: &str, handler: Handler) {
        self.admin.add_route(method, path, handler)
    }

    /// The admin server's bound address, if it runs.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// The shared admin state, to serve `/healthz`-style routes on another listener.
    pub fn admin_state(&self) -> Arc<AdminState> {
        self.admin.clone()
    }
}
