//! How many agent processes are alive, for the live-process cap (`MAX_LIVE_PROCESSES`).
//!
//! A session's "process started / suspended / ended" state says what the session wants, not
//! what the machine holds: a suspended or replaced process ends in the background (stdin EOF,
//! then SIGTERM, then SIGKILL: seconds for a CLI whose MCP server hangs) and keeps its memory
//! until then. So every process a session adopts holds a [`LiveSlot`] until its leader is
//! reaped, and the supervisor hands a freed slot to a waiting subtask only when the count says
//! one is really free.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

/// The count of live agent processes, shared by the supervisor and every agent.
#[derive(Clone, Default)]
pub struct LiveProcesses(Arc<Shared>);

#[derive(Default)]
struct Shared {
    alive: AtomicUsize,
    gone: Notify,
}

impl LiveProcesses {
    /// Counts one more live process until the returned slot is dropped.
    pub fn acquire(&self) -> LiveSlot {
        self.0.alive.fetch_add(1, Ordering::SeqCst);
        LiveSlot(self.0.clone())
    }

    /// Live processes now.
    pub fn count(&self) -> usize {
        self.0.alive.load(Ordering::SeqCst)
    }

    /// Resolves after a slot was released since the previous call (releases coalesce: one
    /// wake-up may stand for several).
    pub async fn released(&self) {
        self.0.gone.notified().await;
    }
}

/// One live process in [`LiveProcesses`]; dropping it (when the process is reaped) frees it.
pub struct LiveSlot(Arc<Shared>);

impl Drop for LiveSlot {
    fn drop(&mut self) {
        self.0.alive.fetch_sub(1, Ordering::SeqCst);
        self.0.gone.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_dropped_slot_is_counted_out_and_wakes_the_waiter() {
        let live = LiveProcesses::default();
        let (a, b) = (live.acquire(), live.acquire());
        assert_eq!(live.count(), 2);
        drop(a);
        // The release happened before anyone waited: its wake-up is kept, not lost.
        tokio::time::timeout(std::time::Duration::from_secs(5), live.released())
            .await
            .expect("wake-up kept");
        assert_eq!(live.count(), 1);
        drop(b);
        assert_eq!(live.count(), 0);
    }
}
