//! Rate limit for a turn's RUNNING callbacks. A CLI can print thousands of messages a second
//! (and each callback repeats the turn's thinking list), so after a burst, progress events are
//! coalesced: at most one per interval goes out, built from the latest state when it does, and
//! a turn's end drops whatever was pending. Order is kept: nothing is sent after the end.

use std::time::{Duration, Instant};

/// Progress events of a turn sent without delay.
pub const BURST: u32 = 20;
/// After the burst, the shortest time between two progress events.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// What to do with a due progress event.
#[derive(Debug, PartialEq, Eq)]
pub enum Admit {
    /// Send it now.
    Now,
    /// It is pending; arm a flush after this long (`None`: one is already armed).
    Defer(Option<Duration>),
}

/// Per-agent throttle state; see the module docs.
#[derive(Debug, Default)]
pub struct ProgressThrottle {
    sent: u32,
    last: Option<Instant>,
    pending: bool,
    armed: bool,
}

impl ProgressThrottle {
    /// A new turn starts, or the current one ended: forget what was pending.
    pub fn reset(&mut self) {
        self.sent = 0;
        self.pending = false;
    }

    /// A progress event is due.
    pub fn admit(&mut self, now: Instant) -> Admit {
        let since = self.last.map(|l| now.duration_since(l));
        if self.sent < BURST || (since.is_none_or(|s| s >= MIN_INTERVAL) && !self.pending) {
            self.sent += 1;
            self.last = Some(now);
            return Admit::Now;
        }
        self.pending = true;
        if self.armed {
            return Admit::Defer(None);
        }
        self.armed = true;
        Admit::Defer(Some(MIN_INTERVAL.saturating_sub(since.unwrap_or_default())))
    }

    /// The armed flush fired: true when a pending event should go out now.
    pub fn flush(&mut self, now: Instant) -> bool {
        self.armed = false;
        if !std::mem::take(&mut self.pending) {
            return false;
        }
        self.sent += 1;
        self.last = Some(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_is_coalesced() {
        let mut t = ProgressThrottle::default();
        let now = Instant::now();
        for _ in 0..BURST {
            assert_eq!(t.admit(now), Admit::Now);
        }
        assert!(matches!(t.admit(now), Admit::Defer(Some(_))));
        assert_eq!(t.admit(now), Admit::Defer(None));
        assert!(t.flush(now + MIN_INTERVAL), "one event for the whole batch");
        assert!(!t.flush(now + MIN_INTERVAL));
    }

    #[test]
    fn reset_drops_the_pending_event() {
        let mut t = ProgressThrottle::default();
        let now = Instant::now();
        for _ in 0..=BURST {
            let _ = t.admit(now);
        }
        t.reset();
        assert!(!t.flush(now));
        assert_eq!(t.admit(now), Admit::Now);
    }
}
