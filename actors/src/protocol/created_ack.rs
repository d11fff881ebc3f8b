//! A one-shot signal from the callback relay to the `/v1/responses` handler: "your subtask's
//! `response.created` was delivered (or given up)". Upstream answers the request only after
//! that event was posted; so do we, with a bound (the subtask runs and ends either way).

use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

/// The sending half, shared by every clone of the subtask's identity; the relay takes it once.
#[derive(Clone, Default)]
pub struct CreatedAck(Option<Arc<Mutex<Option<oneshot::Sender<bool>>>>>);

impl CreatedAck {
    /// A new signal and the receiver the HTTP handler waits on.
    pub fn channel() -> (Self, oneshot::Receiver<bool>) {
        let (tx, rx) = oneshot::channel();
        (Self(Some(Arc::new(Mutex::new(Some(tx))))), rx)
    }

    /// Takes the sender (once; later calls get `None`). Dropping it unanswered tells the
    /// waiter that no delivery will be reported (no `CALLBACK_URL`).
    pub fn take(&self) -> Option<oneshot::Sender<bool>> {
        let cell = self.0.as_ref()?;
        cell.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

impl std::fmt::Debug for CreatedAck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CreatedAck")
    }
}

/// Every ack is equal: it is a channel, not part of the subtask's identity.
impl PartialEq for CreatedAck {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for CreatedAck {}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn taken_once_and_dropping_wakes_the_waiter() {
        let (ack, rx) = CreatedAck::channel();
        let copy = ack.clone();
        assert!(ack.take().is_some());
        assert!(copy.take().is_none(), "a clone shares the one sender");
        assert!(rx.await.is_err(), "the dropped sender ends the wait");
    }
}
