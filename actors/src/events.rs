//! Live event streams per task for `GET /api/tasks/{id}/events` (SSE): every callback event is
//! also published here, with a per-task id, and the events of the task's current subtask are
//! kept for replay to late subscribers. Subscribers get a broadcast channel: a slow subscriber
//! misses events instead of slowing the agent.
//!
//! Bounded: a task's entry exists only while it has subscribers or events of a live session. A
//! subscriber may connect before the task's first event (it then sees the task from its
//! start), but when it leaves an entry that never got an event is removed, so subscribing to
//! any number of unknown ids costs nothing once the clients are gone.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use dashmap::DashMap;
use tokio::sync::broadcast;

/// Events buffered per subscriber before a slow one starts missing events.
const CHANNEL_CAPACITY: usize = 256;
/// Most events kept for replay per task (the current subtask's).
const REPLAY_LIMIT: usize = 500;

/// One published event: its id within the task and its JSON text.
pub type Event = (u64, Arc<String>);

struct TaskEvents {
    tx: broadcast::Sender<Event>,
    replay: Mutex<(u64, i64, VecDeque<Event>)>,
}

/// The bus; cheap to clone.
#[derive(Clone, Default)]
pub struct EventBus(Arc<DashMap<i64, TaskEvents>>);

impl EventBus {
    /// Publishes one event of `task_id`'s `subtask_id`. After a terminal event with nobody
    /// listening the task's buffer is dropped, so finished tasks cost no memory.
    pub fn publish(&self, task_id: i64, subtask_id: i64, json: String, terminal: bool) {
        let unwatched = self.publish_inner(task_id, subtask_id, json);
        if terminal && unwatched {
            self.0
                .remove_if(&task_id, |_, t| t.tx.receiver_count() == 0);
        }
    }

    fn publish_inner(&self, task_id: i64, subtask_id: i64, json: String) -> bool {
        let entry = self.0.entry(task_id).or_insert_with(|| TaskEvents {
            tx: broadcast::channel(CHANNEL_CAPACITY).0,
            replay: Mutex::new((0, subtask_id, VecDeque::new())),
        });
        let mut replay = entry.replay.lock().unwrap_or_else(|e| e.into_inner());
        let (next_id, current, events) = &mut *replay;
        *next_id += 1;
        if *current != subtask_id {
            *current = subtask_id;
            events.clear();
        }
        let ev: Event = (*next_id, Arc::new(json));
        if events.len() == REPLAY_LIMIT {
            events.pop_front();
        }
        events.push_back(ev.clone());
        let _ = entry.tx.send(ev);
        entry.tx.receiver_count() == 0
    }

    /// Subscribes to `task_id`: the current subtask's events after `after` (a Last-Event-ID),
    /// then live ones. The replay and the subscription are taken together, so nothing falls
    /// between them.
    pub fn subscribe(&self, task_id: i64, after: u64) -> (Vec<Event>, Subscription) {
        let entry = self.0.entry(task_id).or_insert_with(|| TaskEvents {
            tx: broadcast::channel(CHANNEL_CAPACITY).0,
            replay: Mutex::new((0, i64::MIN, VecDeque::new())),
        });
        let replay = entry.replay.lock().unwrap_or_else(|e| e.into_inner());
        let rx = entry.tx.subscribe();
        let past = replay
            .2
            .iter()
            .filter(|(id, _)| *id > after)
            .cloned()
            .collect();
        let sub = Subscription {
            rx: Some(rx),
            bus: self.clone(),
            task_id,
        };
        (past, sub)
    }

    /// Tasks that have an entry (subscribers or buffered events); for `/metrics` and the
    /// bounded-memory checks.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when no task has an entry.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Live subscribers over all tasks; for `/metrics`.
    pub fn subscribers(&self) -> usize {
        self.0.iter().map(|t| t.tx.receiver_count()).sum()
    }

    /// Drops `task_id`'s entry if nobody listens and no event was ever published to it (a
    /// stream opened for a task that never ran). Under the map's shard lock, so a concurrent
    /// subscribe or publish either comes first (and keeps the entry) or makes a new one.
    fn forget_if_unused(&self, task_id: i64) {
        self.0.remove_if(&task_id, |_, t| {
            let replay = t.replay.lock().unwrap_or_else(|e| e.into_inner());
            t.tx.receiver_count() == 0 && replay.0 == 0
        });
    }

    /// Forgets a task whose session ended (its subscribers see the stream close).
    pub fn remove(&self, task_id: i64) {
        self.0.remove(&task_id);
    }
}

/// One subscriber's live events. Dropping it (the client left) frees the task's entry when
/// the task never had an event, so unknown ids leave nothing behind.
pub struct Subscription {
    rx: Option<broadcast::Receiver<Event>>,
    bus: EventBus,
    task_id: i64,
}

impl Subscription {
    /// The next live event, as [`broadcast::Receiver::recv`].
    pub async fn recv(&mut self) -> Result<Event, broadcast::error::RecvError> {
        match self.rx.as_mut() {
            Some(rx) => rx.recv().await,
            None => Err(broadcast::error::RecvError::Closed),
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        drop(self.rx.take());
        self.bus.forget_if_unused(self.task_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn replays_the_current_subtask_then_streams() {
        let bus = EventBus::default();
        bus.publish(1, 1, "a".into(), false);
        bus.publish(1, 2, "b".into(), false);
        bus.publish(1, 2, "c".into(), false);
        let (past, mut rx) = bus.subscribe(1, 0);
        assert_eq!(
            past.iter().map(|e| e.1.as_str()).collect::<Vec<_>>(),
            ["b", "c"]
        );
        let (past, _) = bus.subscribe(1, 2);
        assert_eq!(
            past.len(),
            1,
            "after Last-Event-ID 2 only event 3 is replayed"
        );
        bus.publish(1, 2, "d".into(), true);
        assert_eq!(rx.recv().await.unwrap().1.as_str(), "d");
        drop(rx);
        bus.publish(1, 3, "e".into(), true);
        assert!(bus.0.is_empty(), "a finished, unwatched task is forgotten");
    }

    #[tokio::test]
    async fn a_stream_of_an_unknown_task_costs_nothing_once_left() {
        let bus = EventBus::default();
        for id in -500..500 {
            let (past, sub) = bus.subscribe(id, 0);
            assert!(past.is_empty());
            drop(sub);
        }
        assert!(bus.is_empty(), "{} entries left", bus.len());
    }

    #[tokio::test]
    async fn an_early_subscriber_sees_the_first_events() {
        let bus = EventBus::default();
        let (_, mut early) = bus.subscribe(9, 0);
        let (_, second) = bus.subscribe(9, 0);
        drop(second);
        assert_eq!(bus.len(), 1, "the entry stays while someone listens");
        bus.publish(9, 1, "first".into(), false);
        assert_eq!(early.recv().await.unwrap().1.as_str(), "first");
        drop(early);
        assert_eq!(bus.len(), 1, "a task with events keeps its replay");
    }
}
