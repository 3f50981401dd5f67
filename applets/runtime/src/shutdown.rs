use tokio_util::sync::CancellationToken;

/// Resolves when the process was asked to stop (SIGTERM or SIGINT).
/// Cheap to clone; every task that must drain holds one.
#[derive(Clone, Debug, Default)]
pub struct Shutdown(CancellationToken);

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    /// Waits until shutdown starts.
    pub async fn requested(&self) {
        self.0.cancelled().await
    }

    pub fn is_requested(&self) -> bool {
        self.0.is_cancelled()
    }

    pub(crate) fn trigger(&self) {
        self.0.cancel()
    }

    /// The underlying token, for `select!` over many tasks.
    pub fn token(&self) -> CancellationToken {
        self.0.clone()
    }
}
