//! Live event streams per task for `GET /api/tasks/{id}/events` (SSE): every callback event is
//! also published here, with a per-task id, and the events of the task's current subtask are
//! kept for replay to late subscribers. Subscribers get a broadcast channel: a slow subscriber
//! misses events instead of slowing the agent.

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
    pub fn subscribe(&self, task_id: i64, after: u64) -> (Vec<Event>, broadcast::Receiver<Event>) {
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
        (past, rx)
    }

    /// Forgets a task whose session ended (its subscribers see the stream close).
    pub fn remove(&self, task_id: i64) {
        self.0.remove(&task_id);
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
}
