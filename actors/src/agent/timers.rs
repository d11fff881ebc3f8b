//! The agent's pending timers, one per kind. Arming a kind cancels its previous timer, and
//! dropping the set (when the agent stops) cancels them all: a timer task holds a reference to
//! the actor, so a 30-minute idle timer left behind by every finished session would pile up.

use std::collections::HashMap;

use ractor::concurrency::JoinHandle;
use ractor::MessagingErr;

/// Which deadline a timer is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimerKind {
    /// The process must say it is ready (Claude's `initialize` answer, agno's `ready`).
    Init,
    /// The pipes of an exited process must drain.
    Drain,
    /// A throttled progress event goes out.
    Flush,
    /// An interrupted (cancelled) turn must end.
    Interrupt,
    /// The liveness watchdog's next check.
    Watchdog,
    /// An idle process is suspended.
    Idle,
}

/// The set of armed timers; see the module docs.
pub struct Timers<M>(HashMap<TimerKind, JoinHandle<Result<(), MessagingErr<M>>>>);

impl<M> Default for Timers<M> {
    fn default() -> Self {
        Self(HashMap::new())
    }
}

impl<M> Timers<M> {
    /// Keeps `handle` as the timer of `kind`, cancelling the one it replaces.
    pub fn arm(&mut self, kind: TimerKind, handle: JoinHandle<Result<(), MessagingErr<M>>>) {
        if let Some(old) = self.0.insert(kind, handle) {
            old.abort();
        }
    }

    /// Cancels the timer of `kind`, if any.
    pub fn cancel(&mut self, kind: TimerKind) {
        if let Some(old) = self.0.remove(&kind) {
            old.abort();
        }
    }
}

impl<M> Drop for Timers<M> {
    fn drop(&mut self) {
        for (_, h) in self.0.drain() {
            h.abort();
        }
    }
}
