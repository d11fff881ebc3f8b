//! The relay's per-task queues: which record goes out next (from the spool, its memory cache,
//! or — while the spool fails — from memory), acknowledgements, and the degraded mode.
//!
//! Order per task is kept across the degraded mode: a record that could not be spooled waits
//! in memory at the position the file had then, and goes out as soon as every spooled record
//! before it was delivered, before any record spooled after it.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use ractor::ActorRef;

use crate::callback::{CallbackMsg, RelayState};
use crate::delivery::deliver;
use crate::metrics::METRICS;
use crate::payload::TraceContext;
use crate::spool::read_record;

/// Most bytes of spooled bodies kept in memory; beyond it delivery reads them from disk, so a
/// long receiver outage costs disk, not memory.
const CACHE_BYTES: usize = 32 * 1024 * 1024;

/// Most bytes of events held in memory while the spool cannot be written. Over it, progress
/// (`RUNNING`) events are dropped and counted (`executor_callback_dropped_total`); terminal
/// events are always kept.
pub const DEGRADED_MEMORY_BYTES: usize = 64 * 1024 * 1024;

/// A drained log is kept for its task, not emptied and renamed for reuse, while the task's
/// last event was not a terminal (more are coming) and it holds fewer bytes than this. Each
/// retirement costs the spool writer a truncate, a rename and two journal lines, and the next
/// event a rename back: a log retired at every drain was retired about 3.5 times per task,
/// between its progress events. The cap keeps compaction for long subtasks.
pub const HOLD_DRAINED_BYTES: u64 = 256 * 1024;

/// A task's events waiting for delivery.
#[derive(Debug, Default)]
pub struct TaskQueue {
    read: u64,
    write: u64,
    /// The last event queued was not a terminal: the subtask runs on and more will follow.
    pub(crate) more_coming: bool,
    /// Drained and kept for its running subtask (counted in `RelayState::held_queues`).
    pub(crate) held: bool,
    pub(crate) appending: usize,
    in_flight: bool,
    /// Bodies sent to the spool whose append is not confirmed yet, in order.
    pub(crate) unconfirmed: VecDeque<Outgoing>,
    /// Spooled records still in memory, so delivery need not read them back from disk.
    cache: VecDeque<Cached>,
    /// Records the spool could not take, each with the file offset it sits at in the order.
    memory: VecDeque<(u64, Outgoing)>,
}

impl TaskQueue {
    /// The queue of a task whose records `read..write` are waiting in its spool file.
    pub fn recovered(read: u64, write: u64) -> Self {
        Self {
            read,
            write,
            ..Self::default()
        }
    }
}

/// A spooled record kept in memory: bytes `start..end` of the task's file.
#[derive(Debug)]
struct Cached {
    start: u64,
    end: u64,
    out: Outgoing,
}

/// An event on its way: the serialised payload and what is sent with it.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The JSON body.
    pub body: Arc<Vec<u8>>,
    /// `X-Callback-Sequence`.
    pub seq: u64,
    /// Request id and trace context headers.
    pub trace: TraceContext,
    /// When it was produced (for the relay latency histogram).
    pub queued: std::time::Instant,
    /// The subtask whose terminal this is (its unfinished record goes once it is safe).
    pub closes: Option<i64>,
    /// Whether it is a terminal event (never dropped).
    pub terminal: bool,
    /// Told when it was delivered (a `response.created`, whose HTTP request waits for it).
    pub ack: crate::protocol::CreatedAck,
}

impl RelayState {
    /// The spool wrote (or failed to write) the task's oldest unconfirmed record.
    pub(crate) fn on_appended(
        &mut self,
        me: &ActorRef<CallbackMsg>,
        task_id: i64,
        end: Result<u64, String>,
    ) {
        let Some(q) = self.queues.get_mut(&task_id) else {
            return;
        };
        q.appending = q.appending.saturating_sub(1);
        let sent = q.unconfirmed.pop_front();
        match end {
            Ok(end) => {
                let start = q.write;
                q.write = end;
                if let Some(out) = sent {
                    if self.cached_bytes + out.body.len() <= CACHE_BYTES {
                        self.cached_bytes += out.body.len();
                        q.cache.push_back(Cached { start, end, out });
                    }
                }
                if self.degraded.take().is_some() {
                    METRICS.callback_spool_degraded.store(0, Ordering::Relaxed);
                    tracing::info!("callback spool works again; events are spooled again");
                }
            }
            Err(cause) => {
                METRICS
                    .callback_spool_failures
                    .fetch_add(1, Ordering::Relaxed);
                METRICS.callback_spool_degraded.store(1, Ordering::Relaxed);
                if self.degraded.as_deref() != Some(cause.as_str()) {
                    tracing::error!(
                        "[CALLBACK_FAIL] callback spool {} cannot be written ({cause}); delivering from memory until it works again",
                        self.cfg.spool_dir.display()
                    );
                    self.degraded = Some(cause);
                }
                if let Some(out) = sent {
                    let len = out.body.len();
                    if !out.terminal && self.memory_bytes + len > DEGRADED_MEMORY_BYTES {
                        METRICS.callback_dropped.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!("task {task_id}: progress callback dropped (spool failing, memory cap {DEGRADED_MEMORY_BYTES} bytes reached)");
                    } else {
                        self.memory_bytes += len;
                        q.memory.push_back((q.write, out));
                    }
                }
            }
        }
        if !q.in_flight {
            self.start_delivery(me, task_id);
        }
    }

    /// A delivery task is done with a record: advance, acknowledge, and go on.
    pub(crate) fn on_done(&mut self, me: &ActorRef<CallbackMsg>, task_id: i64, next: Option<u64>) {
        if let Some(q) = self.queues.get_mut(&task_id) {
            q.in_flight = false;
            match next {
                None => {
                    if let Some((_, out)) = q.memory.pop_front() {
                        self.memory_bytes = self.memory_bytes.saturating_sub(out.body.len());
                        if let (Some(sub), Some(spool)) = (out.closes, &self.spool) {
                            spool.close(task_id, sub);
                        }
                    }
                }
                Some(next) => {
                    q.read = next.max(q.read);
                    while q.cache.front().is_some_and(|c| c.end <= q.read) {
                        if let Some(c) = q.cache.pop_front() {
                            self.cached_bytes = self.cached_bytes.saturating_sub(c.out.body.len());
                        }
                    }
                    // Acknowledged after every delivery (one in-place write in the spool
                    // thread): a crash resends at most the event in flight.
                    if let Some(spool) = &self.spool {
                        spool.ack(task_id, q.read);
                    }
                }
            }
        }
        self.start_delivery(me, task_id);
    }

    /// Forgets a drained queue and deletes its files; the task's unfinished subtasks keep their
    /// last sequence number in their records.
    fn retire(&mut self, task_id: i64) {
        if self.queues.remove(&task_id).is_some_and(|q| q.held) {
            self.held_queues = self.held_queues.saturating_sub(1);
        }
        self.count_queued();
        let open = self
            .next_seq
            .iter()
            .filter(|((t, _), _)| *t == task_id)
            .map(|((_, s), seq)| (*s, *seq))
            .collect();
        if let Some(spool) = &self.spool {
            spool.remove(task_id, open);
        }
        self.notify_flushed();
    }

    /// Whether every queued event was delivered (or given up on): drained queues kept for a
    /// running subtask (see [`HOLD_DRAINED_BYTES`]) count as delivered.
    pub(crate) fn all_delivered(&self) -> bool {
        self.queues
            .values()
            .all(|q| q.read >= q.write && q.appending == 0 && q.memory.is_empty() && !q.in_flight)
    }

    /// Sets the gauge of tasks with events waiting (held drained queues have none).
    pub(crate) fn count_queued(&self) {
        let waiting = self.queues.len().saturating_sub(self.held_queues);
        METRICS
            .callback_queued_tasks
            .store(waiting as u64, Ordering::Relaxed);
    }

    /// Answers the flush waiters once everything was delivered.
    fn notify_flushed(&mut self) {
        if !self.flush_waiters.is_empty() && self.all_delivered() {
            for w in self.flush_waiters.drain(..) {
                let _ = w.send(());
            }
        }
    }

    /// Starts delivering the task's next record, or retires a drained queue.
    pub(crate) fn start_delivery(&mut self, me: &ActorRef<CallbackMsg>, task_id: i64) {
        let (Some(q), Some(spool), Some(url)) = (
            self.queues.get_mut(&task_id),
            &self.spool,
            self.cfg.url.clone(),
        ) else {
            return;
        };
        if q.in_flight {
            return;
        }
        let (client, cfg, me) = (self.client.clone(), self.cfg.clone(), me.clone());
        if let Some((_, out)) = q.memory.front().filter(|(at, _)| *at <= q.read) {
            q.in_flight = true;
            let out = out.clone();
            tokio::spawn(async move {
                let ok =
                    deliver(&client, &url, &out.body, out.seq, &out.trace, &cfg, task_id).await;
                METRICS.relay.observe(out.queued.elapsed().as_secs_f64());
                if let Some(tx) = out.ack.take() {
                    let _ = tx.send(ok);
                }
                let _ = me.cast(CallbackMsg::Done {
                    task_id,
                    next: None,
                });
            });
            return;
        }
        if q.read >= q.write {
            if q.appending == 0 && q.memory.is_empty() {
                if q.more_coming && q.write < HOLD_DRAINED_BYTES {
                    if !q.held {
                        q.held = true;
                        self.held_queues += 1;
                        self.count_queued();
                    }
                    self.notify_flushed();
                } else {
                    self.retire(task_id);
                }
            }
            return;
        }
        q.in_flight = true;
        let (offset, write) = (q.read, q.write);
        if let Some(c) = q.cache.front().filter(|c| c.start == offset) {
            let (out, next) = (c.out.clone(), c.end);
            tokio::spawn(async move {
                let ok =
                    deliver(&client, &url, &out.body, out.seq, &out.trace, &cfg, task_id).await;
                METRICS.relay.observe(out.queued.elapsed().as_secs_f64());
                if let Some(tx) = out.ack.take() {
                    let _ = tx.send(ok);
                }
                let _ = me.cast(CallbackMsg::Done {
                    task_id,
                    next: Some(next),
                });
            });
            return;
        }
        let dir = spool.dir().to_path_buf();
        tokio::spawn(async move {
            let next = match read_record(&dir, task_id, offset).await {
                Ok((Some(rec), next)) => {
                    let body = serde_json::to_vec(&rec.body).unwrap_or_default();
                    let trace = TraceContext {
                        request_id: rec.request_id,
                        traceparent: rec.traceparent,
                        ..Default::default()
                    };
                    let _ = deliver(&client, &url, &body, rec.seq, &trace, &cfg, task_id).await;
                    next
                }
                Ok((None, next)) => {
                    tracing::error!("callback spool of task {task_id}: skipping a corrupt record");
                    next
                }
                Err(e) => {
                    tracing::error!(
                        "callback spool of task {task_id} unreadable ({e}); dropping its events"
                    );
                    write
                }
            };
            let _ = me.cast(CallbackMsg::Done {
                task_id,
                next: Some(next),
            });
        });
    }
}
