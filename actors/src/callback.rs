//! The callback relay: the single actor that posts every status event to `CALLBACK_URL`.
//!
//! Events of one task are delivered strictly in order (one POST in flight per task); tasks never
//! wait for each other. Every event is first appended to the task's spool file (see
//! [`crate::spool`]), so it survives a crash or restart and memory stays flat while the
//! receiver is down; the actor itself only keeps offsets. Spool writes and POSTs run in tasks
//! that report back with messages, so the actor never waits on disk or network and an HTTP route
//! never waits on a slow receiver. The relay also enforces the contract's terminal rule in one
//! place: after a subtask's terminal event nothing more is sent for it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use std::sync::atomic::Ordering;

use crate::config::CallbackConfig;
use crate::delivery::deliver;
use crate::events::EventBus;
use crate::metrics::METRICS;
use crate::payload::{CallbackPayload, TraceContext};
use crate::spool::{read_record, Spool};

/// How many finished subtasks the relay remembers to drop late events for them.
const TERMINAL_MEMORY: usize = 10_000;

/// Messages of the [`CallbackRelay`].
pub enum CallbackMsg {
    /// Queue one event for delivery.
    Send(Box<CallbackPayload>),
    /// The spool appended an event of `task_id`; its file now ends at `end`.
    Appended {
        /// Whose file grew.
        task_id: i64,
        /// New end of the file, or the write error.
        end: Result<u64, String>,
    },
    /// A delivery task finished with the record before offset `next` (delivered or given up).
    Done {
        /// Whose queue advances.
        task_id: i64,
        /// Offset of the next record.
        next: u64,
    },
    /// Answer once every queued event has been delivered or given up (used at shutdown).
    Flush(RpcReplyPort<()>),
}

/// The relay actor; see the module docs.
pub struct CallbackRelay;

/// A task's events waiting in its spool file.
#[derive(Debug, Default)]
struct TaskQueue {
    read: u64,
    write: u64,
    appending: usize,
    in_flight: bool,
    since_ack: u32,
    /// Bodies sent to the spool whose append is not confirmed yet, in order.
    unconfirmed: VecDeque<Outgoing>,
    /// Spooled records still in memory, so delivery need not read them back from disk.
    cache: VecDeque<Cached>,
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
struct Outgoing {
    body: Arc<Vec<u8>>,
    seq: u64,
    trace: TraceContext,
    queued: std::time::Instant,
}

/// Most bytes of spooled bodies kept in memory; beyond it delivery reads them from disk, so a
/// long receiver outage costs disk, not memory.
const CACHE_BYTES: usize = 32 * 1024 * 1024;

/// Deliveries between two writes of a task's acknowledgement (a crash may resend at most
/// this many; `X-Callback-Sequence` lets the receiver drop them).
const ACK_EVERY: u32 = 16;

/// State of the [`CallbackRelay`].
pub struct RelayState {
    events: EventBus,
    cfg: Arc<CallbackConfig>,
    client: reqwest::Client,
    spool: Option<Spool>,
    queues: HashMap<i64, TaskQueue>,
    next_seq: HashMap<(i64, i64), u64>,
    finished: HashSet<(i64, i64)>,
    finished_order: VecDeque<(i64, i64)>,
    flush_waiters: Vec<RpcReplyPort<()>>,
    cached_bytes: usize,
}

impl Actor for CallbackRelay {
    type Msg = CallbackMsg;
    type State = RelayState;
    type Arguments = (CallbackConfig, EventBus);

    async fn pre_start(
        &self,
        me: ActorRef<CallbackMsg>,
        (cfg, events): (CallbackConfig, EventBus),
    ) -> Result<RelayState, ActorProcessingErr> {
        let client = reqwest::Client::builder().timeout(cfg.timeout).build()?;
        let mut st = RelayState {
            events,
            cfg: Arc::new(cfg),
            client,
            spool: None,
            queues: HashMap::new(),
            next_seq: HashMap::new(),
            finished: HashSet::new(),
            finished_order: VecDeque::new(),
            flush_waiters: Vec::new(),
            cached_bytes: 0,
        };
        if st.cfg.url.is_some() {
            let relay = me.clone();
            let notify = move |task_id, end: std::io::Result<u64>| {
                let end = end.map_err(|e| e.to_string());
                let _ = relay.cast(CallbackMsg::Appended { task_id, end });
            };
            let (spool, recovered) = Spool::open(st.cfg.spool_dir.clone(), notify).await?;
            for r in recovered {
                tracing::info!(
                    "task {}: replaying undelivered callbacks from the spool",
                    r.task_id
                );
                for (subtask, seq) in r.last_seq {
                    st.next_seq.insert((r.task_id, subtask), seq);
                }
                st.queues.insert(
                    r.task_id,
                    TaskQueue {
                        read: r.read,
                        write: r.write,
                        ..TaskQueue::default()
                    },
                );
            }
            st.spool = Some(spool);
            let ids: Vec<i64> = st.queues.keys().copied().collect();
            for id in ids {
                st.start_delivery(&me, id);
            }
        }
        Ok(st)
    }

    async fn handle(
        &self,
        me: ActorRef<CallbackMsg>,
        msg: CallbackMsg,
        st: &mut RelayState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            CallbackMsg::Send(payload) => st.enqueue(&payload),
            CallbackMsg::Appended { task_id, end } => st.on_appended(&me, task_id, end),
            CallbackMsg::Done { task_id, next } => st.on_done(&me, task_id, next),
            CallbackMsg::Flush(reply) => {
                if st.queues.is_empty() {
                    let _ = reply.send(());
                } else {
                    st.flush_waiters.push(reply);
                }
            }
        }
        Ok(())
    }
}

impl RelayState {
    fn enqueue(&mut self, p: &CallbackPayload) {
        let p = &crate::mask::mask_payload(p); // one masking pass for callbacks, spool and SSE
        let key = (p.task_id, p.subtask_id);
        if self.finished.contains(&key) {
            tracing::debug!(
                "dropping {} callback for finished subtask {}.{}",
                p.status.as_str(),
                p.task_id,
                p.subtask_id
            );
            return;
        }
        if p.status.is_terminal() {
            METRICS.subtask_ended(p.status);
            self.remember_finished(key);
        }
        let body = match serde_json::to_vec(p) {
            Ok(b) => Arc::new(b),
            Err(e) => {
                tracing::error!("cannot serialise callback for task {}: {e}", p.task_id);
                return;
            }
        };
        let json = String::from_utf8_lossy(&body).into_owned();
        self.events
            .publish(p.task_id, p.subtask_id, json, p.status.is_terminal());
        if self.spool.is_none() {
            return;
        }
        let seq = {
            let s = self.next_seq.entry(key).or_insert(0);
            *s += 1;
            *s
        };
        if p.status.is_terminal() {
            self.next_seq.remove(&key);
        }
        // The record line embeds the serialised body as is (serialised once).
        let head = serde_json::json!({"seq": seq, "subtask_id": p.subtask_id,
            "request_id": p.trace.request_id, "traceparent": p.trace.traceparent});
        let mut line = head.to_string().into_bytes();
        line.pop(); // reopen the object to append the body
        line.extend_from_slice(br#","body":"#);
        line.extend_from_slice(&body);
        line.push(b'}');
        let q = self.queues.entry(p.task_id).or_default();
        q.appending += 1;
        q.unconfirmed.push_back(Outgoing {
            body,
            seq,
            trace: p.trace.clone(),
            queued: std::time::Instant::now(),
        });
        METRICS
            .callback_queued_tasks
            .store(self.queues.len() as u64, Ordering::Relaxed);
        if let Some(spool) = &self.spool {
            spool.append(p.task_id, line);
        }
    }

    fn on_appended(&mut self, me: &ActorRef<CallbackMsg>, task_id: i64, end: Result<u64, String>) {
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
            }
            Err(e) => {
                tracing::error!("[CALLBACK_FAIL] task_id={task_id}: cannot spool a callback: {e}")
            }
        }
        if !q.in_flight {
            self.start_delivery(me, task_id);
        }
    }

    fn on_done(&mut self, me: &ActorRef<CallbackMsg>, task_id: i64, next: u64) {
        if let Some(q) = self.queues.get_mut(&task_id) {
            q.in_flight = false;
            q.read = next.max(q.read);
            while q.cache.front().is_some_and(|c| c.end <= q.read) {
                if let Some(c) = q.cache.pop_front() {
                    self.cached_bytes = self.cached_bytes.saturating_sub(c.out.body.len());
                }
            }
            q.since_ack += 1;
            if q.since_ack >= ACK_EVERY && q.read < q.write {
                q.since_ack = 0;
                if let Some(spool) = &self.spool {
                    spool.ack(task_id, q.read);
                }
            }
        }
        self.start_delivery(me, task_id);
    }

    /// Starts delivering the task's next record, or retires a drained queue.
    fn start_delivery(&mut self, me: &ActorRef<CallbackMsg>, task_id: i64) {
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
        if q.read >= q.write {
            if q.appending == 0 {
                self.queues.remove(&task_id);
                METRICS
                    .callback_queued_tasks
                    .store(self.queues.len() as u64, Ordering::Relaxed);
                spool.remove(task_id);
                if self.queues.is_empty() {
                    for w in self.flush_waiters.drain(..) {
                        let _ = w.send(());
                    }
                }
            }
            return;
        }
        q.in_flight = true;
        let (offset, write) = (q.read, q.write);
        if let Some(c) = q.cache.front().filter(|c| c.start == offset) {
            let (out, next) = (c.out.clone(), c.end);
            let (client, cfg, me) = (self.client.clone(), self.cfg.clone(), me.clone());
            tokio::spawn(async move {
                deliver(&client, &url, &out.body, out.seq, &out.trace, &cfg, task_id).await;
                METRICS.relay.observe(out.queued.elapsed().as_secs_f64());
                let _ = me.cast(CallbackMsg::Done { task_id, next });
            });
            return;
        }
        let (client, cfg, dir, me) = (
            self.client.clone(),
            self.cfg.clone(),
            spool.dir().to_path_buf(),
            me.clone(),
        );
        tokio::spawn(async move {
            let next = match read_record(&dir, task_id, offset).await {
                Ok((Some(rec), next)) => {
                    let body = serde_json::to_vec(&rec.body).unwrap_or_default();
                    let trace = TraceContext {
                        request_id: rec.request_id,
                        traceparent: rec.traceparent,
                    };
                    deliver(&client, &url, &body, rec.seq, &trace, &cfg, task_id).await;
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
            let _ = me.cast(CallbackMsg::Done { task_id, next });
        });
    }

    fn remember_finished(&mut self, key: (i64, i64)) {
        if self.finished.insert(key) {
            self.finished_order.push_back(key);
            if self.finished_order.len() > TERMINAL_MEMORY {
                if let Some(old) = self.finished_order.pop_front() {
                    self.finished.remove(&old);
                }
            }
        }
    }
}
