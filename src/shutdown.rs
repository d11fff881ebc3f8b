//! The signal that starts a graceful shutdown.

use tokio::signal::unix::{signal, Signal, SignalKind};

/// SIGTERM and SIGINT handlers, installed before the executor says it listens: a `docker stop`
/// (or a test) that signals right after the listening line must get a graceful shutdown, not
/// the default action of the signal (found as a test killed by SIGTERM when the handlers were
/// installed only once the server ran).
pub struct Signals {
    term: Option<Signal>,
    int: Option<Signal>,
}

impl Signals {
    /// Installs the handlers now.
    pub fn install() -> Self {
        let term = signal(SignalKind::terminate()).ok();
        let int = signal(SignalKind::interrupt()).ok();
        if term.is_none() || int.is_none() {
            tracing::warn!("cannot install signal handlers; falling back to Ctrl-C only");
        }
        Self { term, int }
    }

    /// Resolves on the first SIGTERM or SIGINT.
    pub async fn wait(self) {
        match (self.term, self.int) {
            (Some(mut term), Some(mut int)) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM received"),
                    _ = int.recv() => tracing::info!("SIGINT received"),
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}
