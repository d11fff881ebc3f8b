//! The callback relay: the single actor that posts every status event to `CALLBACK_URL`.
//!
//! Events of one task are delivered strictly in order (one POST in flight per task); tasks never
//! wait for each other. Every event is first appended to the task's spool file (see
//! [`crate::spool`]), so it survives a crash or restart and memory stays flat while the
//! receiver is down; the actor itself only keeps offsets. Spool writes and POSTs run in tasks
//! that report back with messages, so the actor never waits on disk or network and an HTTP route
//! never waits on a slow receiver. The relay also enforces the contract's terminal rule in one
//! place: after a subtask's terminal event nothing more is sent for it (one exception, the
//! `TASK_INFO` subtask's single repeat, see [`CallbackMsg::RepeatTerminal`]).
//!
//! When the spool cannot be written (disk full, no fds, directory gone) the relay is degraded:
//! events wait in memory instead (bounded by [`DEGRADED_MEMORY_BYTES`]), keep their order, make
//! `/ready` false, and the relay recovers by itself on the first append that works again.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

pub use crate::callback_flow::DEGRADED_MEMORY_BYTES;
use crate::callback_flow::{Outgoing, TaskQueue};
use crate::config::CallbackConfig;
use crate::events::EventBus;
use crate::metrics::METRICS;
use crate::payload::{CallbackPayload, TaskStatus};
use crate::protocol::responses_events::ResponsesEncoder;
use crate::protocol::{CreatedAck, Protocol};
use crate::spool::{Append, Recovery, Spool};
use crate::unfinished::{Unfinished, RESTARTED_MESSAGE};

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
    /// A delivery task finished with a record (delivered or given up).
    Done {
        /// Whose queue advances.
        task_id: i64,
        /// Offset of the next spooled record, or `None` for a record delivered from memory.
        next: Option<u64>,
    },
    /// Answer once every queued event has been delivered or given up (used at shutdown).
    Flush(RpcReplyPort<()>),
    /// The subtask is the `TASK_INFO` one (executor_manager started the container for it and
    /// reports a late `RUNNING` of its own): its terminal is sent once more after
    /// `CallbackConfig::terminal_repeat_delay`, so the backend ends at the terminal state.
    RepeatTerminal {
        /// Its task.
        task_id: i64,
        /// The subtask.
        subtask_id: i64,
    },
    /// The delayed repeat of a terminal, with the sequence number it goes out with.
    Repeat(Box<CallbackPayload>, u64),
}

/// The relay actor; see the module docs.
pub struct CallbackRelay;

/// State of the [`CallbackRelay`].
pub struct RelayState {
    pub(crate) events: EventBus,
    pub(crate) cfg: Arc<CallbackConfig>,
    pub(crate) client: reqwest::Client,
    pub(crate) spool: Option<Spool>,
    pub(crate) queues: HashMap<i64, TaskQueue>,
    pub(crate) next_seq: HashMap<(i64, i64), u64>,
    finished: HashSet<(i64, i64)>,
    finished_order: VecDeque<(i64, i64)>,
    pub(crate) flush_waiters: Vec<RpcReplyPort<()>>,
    /// Queues drained but kept for a running subtask (see `callback_flow::HOLD_DRAINED_BYTES`).
    pub(crate) held_queues: usize,
    pub(crate) cached_bytes: usize,
    /// Bytes of events waiting in memory because the spool failed.
    pub(crate) memory_bytes: usize,
    /// Why the spool fails, while it does (logged once per cause).
    pub(crate) degraded: Option<String>,
    repeat: HashSet<(i64, i64)>,
    /// Encoder state of each running Responses-protocol subtask.
    encoders: HashMap<(i64, i64), ResponsesEncoder>,
}

/// One payload as it goes on the wire in its protocol.
struct Encoded {
    body: Vec<u8>,
    terminal: bool,
    ack: CreatedAck,
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
            held_queues: 0,
            cached_bytes: 0,
            memory_bytes: 0,
            degraded: None,
            repeat: HashSet::new(),
            encoders: HashMap::new(),
        };
        if st.cfg.url.is_some() {
            let relay = me.clone();
            let notify = move |task_id, end: std::io::Result<u64>| {
                let end = end.map_err(|e| e.to_string());
                let _ = relay.cast(CallbackMsg::Appended { task_id, end });
            };
            let (spool, recovery) = Spool::open(st.cfg.spool_dir.clone(), notify).await?;
            st.spool = Some(spool);
            st.recover(recovery);
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
            CallbackMsg::Send(payload) => st.enqueue(&me, &payload),
            CallbackMsg::Appended { task_id, end } => st.on_appended(&me, task_id, end),
            CallbackMsg::Done { task_id, next } => st.on_done(&me, task_id, next),
            CallbackMsg::Flush(reply) => {
                if st.all_delivered() {
                    let _ = reply.send(());
                } else {
                    st.flush_waiters.push(reply);
                }
            }
            CallbackMsg::RepeatTerminal {
                task_id,
                subtask_id,
            } => {
                st.repeat.insert((task_id, subtask_id));
            }
            CallbackMsg::Repeat(p, seq) => {
                tracing::info!(
                    "task {}.{}: repeating the terminal {} callback (after executor_manager's late report)",
                    p.task_id,
                    p.subtask_id,
                    p.status.as_str()
                );
                st.push(&p, seq, None, None);
            }
        }
        Ok(())
    }
}

impl RelayState {
    /// Takes over what an earlier run left: undelivered events are replayed, and every
    /// accepted subtask without a terminal gets one `FAILED` (before any new work).
    fn recover(&mut self, recovery: Recovery) {
        for r in recovery.tasks {
            tracing::info!(
                "task {}: replaying undelivered callbacks from the spool",
                r.task_id
            );
            for (subtask, seq) in r.last_seq {
                self.next_seq.insert((r.task_id, subtask), seq);
            }
            self.queues
                .insert(r.task_id, TaskQueue::recovered(r.read, r.write));
        }
        for (u, seq) in recovery.unfinished {
            tracing::warn!(
                "task {}.{}: the executor stopped while this subtask ran; reporting it FAILED",
                u.task_id,
                u.subtask_id
            );
            self.next_seq.insert((u.task_id, u.subtask_id), seq - 1);
            if u.responses.is_some() {
                // Its `response.created` went out in the earlier run: only the terminal is due.
                self.encoders
                    .insert((u.task_id, u.subtask_id), ResponsesEncoder::resumed());
            }
            let p = u
                .context()
                .payload(100, TaskStatus::Failed, RESTARTED_MESSAGE, None);
            self.accept(None, &p);
        }
    }

    fn enqueue(&mut self, me: &ActorRef<CallbackMsg>, p: &CallbackPayload) {
        self.accept(Some(me), p);
    }

    /// The relay's rules for one new event: the terminal rule, metrics, the protocol's
    /// encoding, the live event stream, sequence numbers and the record of unfinished subtasks.
    /// Encoding happens here, before the spool: spooled bodies are final, so a restart replays
    /// exactly the events that were not delivered, never re-derives (and duplicates) deltas.
    fn accept(&mut self, me: Option<&ActorRef<CallbackMsg>>, p: &CallbackPayload) {
        let p = &crate::mask::mask_payload(p); // one masking pass for callbacks, spool and SSE
        let key = (p.task_id, p.subtask_id);
        let terminal = p.status.is_terminal();
        if self.finished.contains(&key) {
            tracing::debug!(
                "dropping {} callback for finished subtask {}.{}",
                p.status.as_str(),
                p.task_id,
                p.subtask_id
            );
            return;
        }
        if terminal {
            METRICS.subtask_ended(p.status);
            p.trace.span.end(p.status.as_str());
            self.remember_finished(key);
        }
        let encoded = match self.encode(p) {
            Ok(e) => e,
            Err(e) => {
                tracing::error!("cannot serialise callback for task {}: {e}", p.task_id);
                return;
            }
        };
        for e in &encoded {
            let json = String::from_utf8_lossy(&e.body).into_owned();
            self.events
                .publish(p.task_id, p.subtask_id, json, e.terminal);
        }
        if self.spool.is_none() {
            for e in &encoded {
                drop(e.ack.take()); // nothing will be delivered: do not keep a waiter waiting
            }
            return;
        }
        for e in encoded {
            let first = !self.next_seq.contains_key(&key);
            let seq = {
                let s = self.next_seq.entry(key).or_insert(0);
                *s += 1;
                *s
            };
            if e.terminal {
                self.next_seq.remove(&key);
                if let (true, Some(me)) = (self.repeat.remove(&key), me) {
                    self.schedule_repeat(me, p, seq + 1);
                }
            }
            let opens = (first && !e.terminal).then(|| Unfinished::of(p));
            let out = Outgoing {
                body: Arc::new(e.body),
                seq,
                trace: p.trace.clone(),
                queued: std::time::Instant::now(),
                closes: e.terminal.then_some(p.subtask_id),
                terminal: e.terminal,
                ack: e.ack,
            };
            self.push_out(p.task_id, p.subtask_id, out, opens);
        }
    }

    /// The payload in its subtask's protocol: itself for the old one, zero or more
    /// Responses-API events (see [`crate::protocol::responses_events`]) for the new one.
    fn encode(&mut self, p: &CallbackPayload) -> Result<Vec<Encoded>, serde_json::Error> {
        use crate::protocol::responses_events::{envelope, EnvelopeIds, TERMINAL_EVENTS};
        let Protocol::Responses(id) = &p.protocol else {
            return Ok(vec![Encoded {
                body: serde_json::to_vec(p)?,
                terminal: p.status.is_terminal(),
                ack: Default::default(),
            }]);
        };
        let key = (p.task_id, p.subtask_id);
        let events = self.encoders.entry(key).or_default().encode(p, id);
        if p.status.is_terminal() {
            self.encoders.remove(&key);
        }
        let ids = EnvelopeIds {
            identity: id,
            executor_name: p.executor_name.as_deref(),
            executor_namespace: p.executor_namespace.as_deref(),
        };
        events
            .iter()
            .map(|ev| {
                Ok(Encoded {
                    body: serde_json::to_vec(&envelope(p.task_id, p.subtask_id, ev, &ids))?,
                    terminal: TERMINAL_EVENTS.contains(&ev.0),
                    ack: if ev.0 == "response.created" {
                        id.created_ack.clone()
                    } else {
                        Default::default()
                    },
                })
            })
            .collect()
    }

    /// Queues one old-protocol record for the spool (the `TASK_INFO` terminal's repeat).
    fn push(
        &mut self,
        p: &CallbackPayload,
        seq: u64,
        opens: Option<Unfinished>,
        closes: Option<i64>,
    ) {
        let body = match serde_json::to_vec(p) {
            Ok(b) => Arc::new(b),
            Err(e) => {
                tracing::error!("cannot serialise callback for task {}: {e}", p.task_id);
                return;
            }
        };
        let out = Outgoing {
            body,
            seq,
            trace: p.trace.clone(),
            queued: std::time::Instant::now(),
            closes,
            terminal: p.status.is_terminal(),
            ack: Default::default(),
        };
        self.push_out(p.task_id, p.subtask_id, out, opens);
    }

    /// Queues one encoded record for the spool (and delivery once it is appended).
    fn push_out(
        &mut self,
        task_id: i64,
        subtask_id: i64,
        out: Outgoing,
        opens: Option<Unfinished>,
    ) {
        // The record line embeds the serialised body as is.
        let head = serde_json::json!({"seq": out.seq, "subtask_id": subtask_id,
            "request_id": out.trace.request_id, "traceparent": out.trace.traceparent});
        let mut line = head.to_string().into_bytes();
        line.pop(); // reopen the object to append the body
        line.extend_from_slice(br#","body":"#);
        line.extend_from_slice(&out.body);
        line.push(b'}');
        let closes = out.closes;
        let q = self.queues.entry(task_id).or_default();
        q.appending += 1;
        q.more_coming = !out.terminal;
        if q.held {
            q.held = false;
            self.held_queues = self.held_queues.saturating_sub(1);
        }
        q.unconfirmed.push_back(out);
        self.count_queued();
        if let Some(spool) = &self.spool {
            spool.append(Append {
                task_id,
                line,
                opens,
                closes,
            });
        }
    }

    /// Sends the terminal once more after the configured delay (the `TASK_INFO` subtask).
    fn schedule_repeat(&self, me: &ActorRef<CallbackMsg>, p: &CallbackPayload, seq: u64) {
        let (me, p, delay) = (
            me.clone(),
            Box::new(p.clone()),
            self.cfg.terminal_repeat_delay,
        );
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = me.cast(CallbackMsg::Repeat(p, seq));
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
