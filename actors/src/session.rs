//! A session: the actor that owns one task. It runs the task's subtasks one at a time, in the
//! order they arrive (a subtask for a busy task waits, it is never dropped), owns the agent child
//! that talks to the agent runtime, and survives that child's failures.

use std::collections::VecDeque;
use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};

pub use crate::agent::seam::ProcessState;
use crate::agent::seam::{AgentArgs, AgentEvent, AgentHandle, AgentSink, TurnRequest};
use crate::agent::StartAgent;
use crate::callback::CallbackMsg;
use crate::config::RuntimeConfig;
use crate::index::SessionStatus;
use crate::payload::{SubtaskContext, TaskStatus};
use crate::supervisor::{SessionUpdate, SupervisorMsg};
use crate::task::AgentKind;
use crate::task::TaskSpec;
use crate::workspace::{self, PrepareError, Prepared};
use tokio_util::sync::CancellationToken;

/// Reason reported for subtasks still running when a session stops without a given reason.
const DEFAULT_STOP_REASON: &str = "session closed";

/// Start of the RUNNING message of a subtask that waits for a live-process slot.
pub const QUEUED_MESSAGE: &str = "Queued: waiting for a free agent process slot";

/// Messages of a [`Session`].
pub enum SessionMsg {
    /// Queue a subtask.
    Run(Box<TaskSpec>),
    /// Cancel the running subtask and drop the queued ones. Replies whether anything was
    /// running or queued.
    Cancel(RpcReplyPort<bool>),
    /// The agent reports: a turn ended, or its process changed.
    Agent(AgentEvent),
    /// Stop the session: end the agent and its processes, fail what was still running with
    /// this reason.
    Close(String),
    /// End the agent's process if it is idle (the supervisor's live-process cap).
    Suspend,
    /// The supervisor granted the live-process slot this session waits for.
    SlotGranted,
    /// Every live-process slot is taken: the subtask waits (the supervisor grants a slot as
    /// soon as one frees).
    SlotQueued,
    /// Workspace preparation number `seq` has news for a RUNNING callback (sent only while
    /// that preparation is still the current one).
    PrepProgress {
        /// Which preparation this is about.
        seq: u64,
        /// The message.
        message: String,
    },
    /// Workspace preparation of the current subtask (number `seq`) finished.
    Prepared {
        /// Which preparation this is about.
        seq: u64,
        /// The subtask.
        spec: Box<TaskSpec>,
        /// The workspace, or why it could not be prepared.
        result: Box<Result<Prepared, PrepareError>>,
    },
}

/// What a session is started with.
pub struct SessionArgs {
    /// The task it serves.
    pub task_id: i64,
    /// Shared settings.
    pub cfg: Arc<RuntimeConfig>,
    /// Where status events go.
    pub callbacks: ActorRef<CallbackMsg>,
    /// Told about every state change (it maintains the session index).
    pub supervisor: ActorRef<SupervisorMsg>,
    /// Starts the agent a subtask's kind needs ([`crate::agent::Registry`] in the executor).
    pub agents: Arc<dyn StartAgent>,
    /// The live-process count its agent's processes hold slots in.
    pub live: crate::agent::live_processes::LiveProcesses,
}

/// The actor; see the module docs.
pub struct Session;

/// State of a [`Session`].
pub struct SessionState {
    args: SessionArgs,
    agent: Option<AgentHandle>,
    current: Option<SubtaskContext>,
    queue: VecDeque<Box<TaskSpec>>,
    close_reason: Option<String>,
    completed: u64,
    process: ProcessState,
    /// The current subtask's workspace preparation, while it runs.
    preparing: Option<CancellationToken>,
    /// Numbers preparations, so a late result of an abandoned one is ignored.
    prep_seq: u64,
    /// A cancel arrived while the current subtask was being prepared.
    prep_cancelled: bool,
    /// The current subtask, prepared, waiting for a live-process slot.
    slot_wait: Option<(AgentHandle, Box<TurnRequest>)>,
    /// The supervisor said the wait is real (every slot taken).
    slot_queued: bool,
}

impl From<AgentEvent> for SessionMsg {
    fn from(e: AgentEvent) -> Self {
        SessionMsg::Agent(e)
    }
}

impl TryFrom<SessionMsg> for AgentEvent {
    type Error = SessionMsg;
    fn try_from(msg: SessionMsg) -> Result<Self, SessionMsg> {
        match msg {
            SessionMsg::Agent(e) => Ok(e),
            other => Err(other),
        }
    }
}

impl Actor for Session {
    type Msg = SessionMsg;
    type State = SessionState;
    type Arguments = SessionArgs;

    async fn pre_start(
        &self,
        _me: ActorRef<SessionMsg>,
        args: SessionArgs,
    ) -> Result<SessionState, ActorProcessingErr> {
        let st = SessionState {
            args,
            agent: None,
            current: None,
            queue: VecDeque::new(),
            close_reason: None,
            completed: 0,
            process: ProcessState::Ended,
            preparing: None,
            prep_seq: 0,
            prep_cancelled: false,
            slot_wait: None,
            slot_queued: false,
        };
        Ok(st)
    }

    async fn handle(
        &self,
        me: ActorRef<SessionMsg>,
        msg: SessionMsg,
        st: &mut SessionState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SessionMsg::Run(spec) => {
                st.queue.push_back(spec);
                if st.current.is_none() {
                    st.start_next(&me).await;
                } else {
                    st.report();
                }
            }
            SessionMsg::Cancel(reply) => {
                let busy = st.cancel();
                let _ = reply.send(busy);
                if st.current.is_none() {
                    st.start_next(&me).await;
                }
            }
            SessionMsg::SlotQueued => {
                if st.slot_wait.is_some() && !st.slot_queued {
                    st.slot_queued = true;
                    st.queued_notice();
                    st.report();
                }
            }
            SessionMsg::SlotGranted => match st.slot_wait.take() {
                Some((agent, req)) => st.hand_over(&me, agent, *req).await,
                // Cancelled meanwhile: the report frees the slot again.
                None => st.report(),
            },
            SessionMsg::Agent(AgentEvent::TurnDone { subtask_id, status }) => {
                if st
                    .current
                    .as_ref()
                    .is_some_and(|c| c.subtask_id == subtask_id)
                {
                    tracing::info!(
                        "task {}: subtask {subtask_id} ended {}",
                        st.args.task_id,
                        status.as_str()
                    );
                    st.current = None;
                    st.completed += 1;
                    st.start_next(&me).await;
                }
            }
            SessionMsg::Agent(AgentEvent::Process(p)) => {
                st.process = p;
                st.report();
            }
            SessionMsg::Suspend => {
                if let (None, Some(agent)) = (&st.current, &st.agent) {
                    agent.suspend();
                }
            }
            SessionMsg::Close(reason) => {
                st.close_reason = Some(reason);
                me.stop(None);
            }
            SessionMsg::PrepProgress { seq, message } => {
                if seq == st.prep_seq && st.preparing.is_some() {
                    if let Some(ctx) = &st.current {
                        st.emit(ctx.payload(50, TaskStatus::Running, message, None));
                    }
                }
            }
            SessionMsg::Prepared { seq, spec, result } => {
                if seq == st.prep_seq && st.preparing.is_some() {
                    st.preparing = None;
                    st.on_prepared(&me, spec, *result).await;
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        me: ActorRef<SessionMsg>,
        evt: SupervisionEvent,
        st: &mut SessionState,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, why) = match evt {
            SupervisionEvent::ActorFailed(cell, err) => (cell, format!("the agent failed: {err}")),
            SupervisionEvent::ActorTerminated(cell, _, reason) => (
                cell,
                format!(
                    "the agent stopped: {}",
                    reason.unwrap_or_else(|| "no reason".into())
                ),
            ),
            _ => return Ok(()),
        };
        if st.agent.as_ref().map(AgentHandle::id) != Some(cell.get_id())
            || st.close_reason.is_some()
        {
            return Ok(());
        }
        tracing::error!("task {}: {why}", st.args.task_id);
        st.agent = None;
        if st.preparing.is_some() {
            // The current subtask is still being prepared: it never reached that agent and
            // gets a new one when it is ready.
            return Ok(());
        }
        if let Some(ctx) = st.current.take() {
            st.emit(ctx.payload(100, TaskStatus::Failed, why, None));
        }
        st.start_next(&me).await;
        Ok(())
    }

    async fn post_stop(
        &self,
        me: ActorRef<SessionMsg>,
        st: &mut SessionState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(token) = st.preparing.take() {
            token.cancel();
        }
        me.stop_children_and_wait(None, Some(st.args.cfg.stop.budget()))
            .await;
        let reason = st
            .close_reason
            .clone()
            .unwrap_or_else(|| DEFAULT_STOP_REASON.into());
        if let Some(ctx) = st.current.take() {
            st.emit(ctx.payload(100, TaskStatus::Failed, reason.clone(), None));
        }
        for spec in st.queue.drain(..) {
            let ctx = SubtaskContext::new(&spec, &st.args.cfg);
            let _ = st
                .args
                .callbacks
                .cast(CallbackMsg::Send(Box::new(ctx.payload(
                    100,
                    TaskStatus::Failed,
                    reason.clone(),
                    None,
                ))));
        }
        Ok(())
    }
}

impl SessionState {
    async fn spawn_agent(
        &self,
        me: &ActorRef<SessionMsg>,
        kind: &AgentKind,
    ) -> Result<AgentHandle, crate::agent::registry::StartError> {
        let args = AgentArgs {
            task_id: self.args.task_id,
            cfg: self.args.cfg.clone(),
            callbacks: self.args.callbacks.clone(),
            session: AgentSink::new(me),
            live: self.args.live.clone(),
        };
        self.args.agents.start(kind, args, me.get_cell()).await
    }

    fn emit(&self, p: crate::payload::CallbackPayload) {
        let _ = self.args.callbacks.cast(CallbackMsg::Send(Box::new(p)));
    }

    /// Starts the next queued subtask: its workspace is prepared in a task of its own, which
    /// reports back with [`SessionMsg::Prepared`].
    async fn start_next(&mut self, me: &ActorRef<SessionMsg>) {
        if self.current.is_none() {
            if let Some(spec) = self.queue.pop_front() {
                let ctx = SubtaskContext::new(&spec, &self.args.cfg);
                let token = CancellationToken::new();
                self.prep_seq += 1;
                self.prep_cancelled = false;
                let (seq, cfg, me) = (self.prep_seq, self.args.cfg.clone(), me.clone());
                let (stop, news) = (token.clone(), me.clone());
                let span =
                    crate::trace::workspace_span(&spec.trace.span, ctx.task_id, ctx.subtask_id);
                let prepare = async move {
                    let progress = move |message: String| {
                        let _ = news.cast(SessionMsg::PrepProgress { seq, message });
                    };
                    let needs = spec.agent.workspace_needs();
                    let result = workspace::prepare(&cfg, &spec, &needs, &progress, &stop).await;
                    let _ = me.cast(SessionMsg::Prepared {
                        seq,
                        spec,
                        result: Box::new(result),
                    });
                };
                tokio::spawn(tracing::Instrument::instrument(prepare, span));
                self.current = Some(ctx);
                if let Some(old) = self.preparing.replace(token) {
                    old.cancel();
                }
            }
        }
        self.report();
    }

    /// Hands a prepared subtask to the agent, or ends it when preparation failed or it was
    /// cancelled meanwhile.
    async fn on_prepared(
        &mut self,
        me: &ActorRef<SessionMsg>,
        spec: Box<TaskSpec>,
        result: Result<Prepared, PrepareError>,
    ) {
        let Some(ctx) = self.current.clone() else {
            return;
        };
        let outcome = match result {
            _ if self.prep_cancelled => Err((
                TaskStatus::Cancelled,
                crate::agent::seam::CANCEL_MESSAGE.to_string(),
                None,
            )),
            Err(PrepareError::Cancelled) => Err((
                TaskStatus::Cancelled,
                crate::agent::seam::CANCEL_MESSAGE.to_string(),
                None,
            )),
            Err(e) => {
                let message = format!(
                    "Agent[{}][{}] pre_execute failed: {e}",
                    spec.agent.name(),
                    spec.task_id
                );
                tracing::warn!("task {}: {message}", spec.task_id);
                let thinking = serde_json::json!({"thinking": [{"title": "Pre-execution Failed",
                    "next_action": "continue", "details": {"error": message}}]});
                Err((TaskStatus::Failed, message, Some(thinking)))
            }
            Ok(prepared) => Ok(prepared),
        };
        let prepared = match outcome {
            Ok(p) => p,
            Err((status, message, result)) => {
                self.emit(ctx.payload(100, status, message, result));
                self.current = None;
                self.completed += 1;
                return self.start_next(me).await;
            }
        };
        if let Some(old) = self.agent.as_ref().filter(|a| *a.kind() != spec.agent) {
            // The task switched agent types: the old agent (and its process) goes.
            old.close();
            self.agent = None;
        }
        let agent = match &self.agent {
            Some(a) => a.clone(),
            None => match self.spawn_agent(me, &spec.agent).await {
                Ok(a) => {
                    self.agent = Some(a.clone());
                    a
                }
                Err(e) => {
                    self.emit(ctx.payload(
                        100,
                        TaskStatus::Failed,
                        format!("{} Unable to get or create agent: {e}", spec.label()),
                        None,
                    ));
                    self.current = None;
                    return self.start_next(me).await;
                }
            },
        };
        let req = TurnRequest {
            ctx: ctx.clone(),
            spec: *spec,
            prepared,
        };
        if self.args.cfg.max_live_processes.is_some()
            && agent.kind().has_process()
            && self.process != ProcessState::Started
        {
            // A new agent process is needed: it takes a slot under the live-process cap.
            self.slot_wait = Some((agent, Box::new(req)));
            self.slot_queued = false;
            let _ = self
                .args
                .supervisor
                .cast(SupervisorMsg::WantSlot(self.args.task_id));
            return;
        }
        self.hand_over(me, agent, req).await;
    }

    /// Gives the turn to the agent (or fails the subtask when the agent is gone).
    async fn hand_over(&mut self, me: &ActorRef<SessionMsg>, agent: AgentHandle, req: TurnRequest) {
        let ctx = req.ctx.clone();
        if agent.turn(req).is_err() {
            self.emit(ctx.payload(100, TaskStatus::Failed, "the agent is not running", None));
            self.current = None;
            return self.start_next(me).await;
        }
        self.report();
    }

    /// Tells the receiver the subtask is waiting for a slot (only when it really waits: a slot
    /// that is free is granted at once, without a notice).
    fn queued_notice(&self) {
        let cap = self.args.cfg.max_live_processes.unwrap_or(0);
        if let Some(ctx) = &self.current {
            self.emit(ctx.payload(
                50,
                TaskStatus::Running,
                format!(
                    "{QUEUED_MESSAGE} ({cap} agent processes may run at once, MAX_LIVE_PROCESSES)"
                ),
                None,
            ));
        }
    }

    fn cancel(&mut self) -> bool {
        let mut busy = false;
        for spec in self.queue.drain(..) {
            let ctx = SubtaskContext::new(&spec, &self.args.cfg);
            let p = ctx.payload(
                100,
                TaskStatus::Cancelled,
                crate::agent::seam::CANCEL_MESSAGE,
                None,
            );
            let _ = self.args.callbacks.cast(CallbackMsg::Send(Box::new(p)));
            busy = true;
        }
        if let (Some(ctx), Some(_)) = (self.current.clone(), self.slot_wait.take()) {
            // Never reached the agent: it ends here.
            self.emit(ctx.payload(
                100,
                TaskStatus::Cancelled,
                crate::agent::seam::CANCEL_MESSAGE,
                None,
            ));
            self.current = None;
            self.completed += 1;
            busy = true;
        }
        if self.current.is_some() {
            if let Some(token) = &self.preparing {
                token.cancel();
                self.prep_cancelled = true;
            } else if let Some(agent) = &self.agent {
                agent.interrupt();
            }
            busy = true;
        }
        self.report();
        busy
    }

    fn report(&self) {
        let update = SessionUpdate {
            task_id: self.args.task_id,
            status: if self.slot_wait.is_some() && self.slot_queued {
                SessionStatus::Queued
            } else if self.current.is_some() {
                SessionStatus::Running
            } else if self.process == ProcessState::Suspended {
                SessionStatus::Suspended
            } else {
                SessionStatus::Idle
            },
            current: self.current.clone(),
            queued: self.queue.len(),
            completed: self.completed,
            live: self.process == ProcessState::Started,
        };
        let _ = self
            .args
            .supervisor
            .cast(SupervisorMsg::SessionChanged(update));
    }
}
