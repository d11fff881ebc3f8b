//! The supervisor: the one actor that owns every session (one per `task_id`), keeps the session
//! index, and turns a session's death into a `FAILED` callback instead of a crash.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};

use crate::agent::live_processes::LiveProcesses;
use crate::callback::CallbackMsg;
use crate::config::RuntimeConfig;
use crate::index::{SessionIndex, SessionInfo, SessionStatus};
use crate::payload::{SubtaskContext, TaskStatus};
use crate::session::{Session, SessionArgs, SessionMsg};
use crate::task::{AgentKind, TaskSpec};

/// Message of the first callback of every subtask (contract §2.3.1).
pub const STARTED_MESSAGE: &str = "Task execution started";

/// How long a cancel waits for the session to acknowledge.
const CANCEL_ACK_MS: u64 = 5_000;

/// Longest time between two looks for expired sessions (a quarter of the expiry when shorter).
const MAX_EXPIRY_CHECK: Duration = Duration::from_secs(60);

/// Shortest time between two looks for expired sessions.
const MIN_EXPIRY_CHECK: Duration = Duration::from_millis(100);

/// Reason given to a session closed for idling longer than `SESSION_IDLE_EXPIRY_SECS`.
pub const EXPIRED_REASON: &str = "session idle longer than SESSION_IDLE_EXPIRY_SECS";

/// What an execute request came to (the HTTP response is built from it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecuteOutcome {
    /// Accepted; the agent works in the background.
    Running,
    /// Refused; a `FAILED` callback with this message was sent.
    Failed(String),
    /// Not accepted: the session cap is reached; nothing was sent, the client should retry.
    AtCapacity(usize),
}

/// What a cancel request came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// No session for that task.
    NoSession,
    /// The session got the cancel; `busy` says whether something was running or queued.
    Cancelled {
        /// False when the session was idle (nothing to interrupt, no callback sent).
        busy: bool,
    },
}

/// Which sessions a close request ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseScope {
    /// One task's session.
    Task(i64),
    /// Every session of one agent type.
    Kind(AgentKind),
    /// Every session.
    All,
}

/// A session's new state, for the index.
#[derive(Debug, Clone)]
pub struct SessionUpdate {
    /// Whose state.
    pub task_id: i64,
    /// Idle or running.
    pub status: SessionStatus,
    /// The running subtask.
    pub current: Option<SubtaskContext>,
    /// Subtasks waiting.
    pub queued: usize,
    /// Subtasks finished so far.
    pub completed: u64,
    /// Whether its agent process is running.
    pub live: bool,
}

/// Messages of the [`Supervisor`].
pub enum SupervisorMsg {
    /// Run a subtask (creating the task's session if needed).
    Execute(Box<TaskSpec>, RpcReplyPort<ExecuteOutcome>),
    /// Cancel what a task is running.
    Cancel(i64, RpcReplyPort<CancelOutcome>),
    /// End sessions; replies with how many were ended, once their processes are gone.
    Close(CloseScope, String, RpcReplyPort<usize>),
    /// A session reports its state.
    SessionChanged(SessionUpdate),
    /// A session needs a new agent process for its subtask: a slot under the live-process
    /// cap. Answered with [`SessionMsg::SlotGranted`], or [`SessionMsg::SlotQueued`] first
    /// when every slot is taken.
    WantSlot(i64),
    /// Close the sessions idle longer than the configured expiry (sent by a timer).
    ExpireIdle,
    /// An agent process was reaped: its live-process slot is free.
    ProcessGone,
}

/// What the supervisor is started with.
pub struct SupervisorArgs {
    /// Shared settings.
    pub cfg: Arc<RuntimeConfig>,
    /// Where status events go.
    pub callbacks: ActorRef<CallbackMsg>,
    /// The index it alone writes.
    pub index: SessionIndex,
    /// Starts the agent of each session ([`crate::agent::Registry`] in the executor; a
    /// scripted agent in tests).
    pub agents: Arc<dyn crate::agent::StartAgent>,
}

/// The actor; see the module docs.
pub struct Supervisor;

struct Entry {
    actor: ActorRef<SessionMsg>,
    kind: AgentKind,
    live: bool,
    idle: bool,
    /// Granted a slot whose process has not started yet.
    reserved: bool,
    queued: usize,
    /// When it last ran or finished something (the idle clock starts here).
    last_active: Instant,
}

impl Entry {
    /// Whether it takes a live-process slot (a live process, or one about to start).
    fn holds_slot(&self) -> bool {
        self.live || self.reserved
    }
}

/// State of the [`Supervisor`].
pub struct SupervisorState {
    args: SupervisorArgs,
    sessions: HashMap<i64, Entry>,
    by_actor: HashMap<ActorId, i64>,
    /// Sessions waiting for a live-process slot, first come first served.
    slot_waiters: std::collections::VecDeque<i64>,
    /// Agent processes alive now, including those ending in the background.
    live: LiveProcesses,
}

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        me: ActorRef<SupervisorMsg>,
        args: SupervisorArgs,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        if let Some(expiry) = args.cfg.session_expiry {
            let period = (expiry / 4).clamp(MIN_EXPIRY_CHECK, MAX_EXPIRY_CHECK);
            me.send_interval(period, || SupervisorMsg::ExpireIdle);
        }
        let live = LiveProcesses::default();
        let watched = live.clone();
        let me2 = me.clone();
        tokio::spawn(async move {
            // Every released slot may let a waiting subtask start; ends with the supervisor.
            loop {
                watched.released().await;
                if me2.cast(SupervisorMsg::ProcessGone).is_err() {
                    break;
                }
            }
        });
        Ok(SupervisorState {
            args,
            sessions: HashMap::new(),
            by_actor: HashMap::new(),
            slot_waiters: std::collections::VecDeque::new(),
            live,
        })
    }

    async fn handle(
        &self,
        me: ActorRef<SupervisorMsg>,
        msg: SupervisorMsg,
        st: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::Execute(spec, reply) => {
                let outcome = st.execute(&me, *spec).await;
                let _ = reply.send(outcome);
            }
            SupervisorMsg::Cancel(task_id, reply) => st.cancel(task_id, reply),
            SupervisorMsg::Close(scope, reason, reply) => st.close(&scope, reason, reply),
            SupervisorMsg::WantSlot(task_id) => st.want_slot(task_id),
            SupervisorMsg::SessionChanged(u) => {
                if let Some(e) = st.sessions.get_mut(&u.task_id) {
                    e.live = u.live;
                    // A reservation lasts until the process runs or the subtask is over.
                    e.reserved = e.reserved && !u.live && u.current.is_some();
                    e.idle = !matches!(u.status, SessionStatus::Running | SessionStatus::Queued);
                    e.queued = u.queued;
                    e.last_active = Instant::now();
                    st.args.index.update(u.task_id, |info| {
                        info.status = u.status;
                        info.current_subtask_id = u.current.as_ref().map(|c| c.subtask_id);
                        info.current = u.current;
                        info.queued = u.queued;
                        info.completed_subtasks = u.completed;
                    });
                    st.enforce_live_cap();
                    st.grant_slots();
                }
            }
            SupervisorMsg::ExpireIdle => st.expire_idle(),
            SupervisorMsg::ProcessGone => st.grant_slots(),
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _me: ActorRef<SupervisorMsg>,
        evt: SupervisionEvent,
        st: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        let (id, failure) = match evt {
            SupervisionEvent::ActorFailed(cell, err) => (cell.get_id(), Some(err.to_string())),
            SupervisionEvent::ActorTerminated(cell, _, _) => (cell.get_id(), None),
            _ => return Ok(()),
        };
        let Some(task_id) = st.by_actor.remove(&id) else {
            return Ok(());
        };
        st.sessions.remove(&task_id);
        st.slot_waiters.retain(|t| *t != task_id);
        st.grant_slots();
        crate::mask::secrets().forget_later(task_id);
        let info = st.args.index.remove(task_id);
        if let Some(err) = failure {
            tracing::error!("task {task_id}: session crashed: {err}");
            if let Some(ctx) = info.and_then(|i| i.current) {
                let p = ctx.payload(
                    100,
                    TaskStatus::Failed,
                    format!("the session crashed: {err}"),
                    None,
                );
                let _ = st.args.callbacks.cast(CallbackMsg::Send(Box::new(p)));
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        me: ActorRef<SupervisorMsg>,
        st: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        for entry in st.sessions.values() {
            let _ = entry
                .actor
                .cast(SessionMsg::Close("executor shutting down".into()));
        }
        me.stop_children_and_wait(None, Some(st.args.cfg.stop.budget()))
            .await;
        for task_id in st.sessions.keys() {
            st.args.index.remove(*task_id);
        }
        Ok(())
    }
}

impl SupervisorState {
    async fn execute(&mut self, me: &ActorRef<SupervisorMsg>, spec: TaskSpec) -> ExecuteOutcome {
        if let Some(cap) = self.args.cfg.max_sessions {
            if !self.sessions.contains_key(&spec.task_id) && self.sessions.len() >= cap {
                return ExecuteOutcome::AtCapacity(cap);
            }
        }
        crate::mask::secrets().register(
            spec.task_id,
            spec.secret_values(&self.args.cfg.workspace.cipher),
        );
        let ctx = SubtaskContext::new(&spec, &self.args.cfg);
        // executor_manager drops a validation callback without `result.validation_id`.
        let started = spec
            .validation
            .as_ref()
            .map(crate::agent::validation::started_result);
        self.emit(ctx.payload(50, TaskStatus::Running, STARTED_MESSAGE, started));
        if let AgentKind::Unsupported(name) = &spec.agent {
            let what = if name.is_empty() {
                "no agent type given (set bot[0].shell_type or agent_type)".to_string()
            } else {
                format!("unsupported agent type '{name}'")
            };
            let msg = format!(
                "{} Unable to get or create agent: {what}; supported types: {}",
                spec.label(),
                AgentKind::SUPPORTED.join(", ")
            );
            self.emit(ctx.payload(100, TaskStatus::Failed, msg.clone(), None));
            return ExecuteOutcome::Failed(msg);
        }
        let task_id = spec.task_id;
        let mut spec = Box::new(spec);
        for _ in 0..2 {
            let session = match self.session_for(me, task_id, &spec.agent).await {
                Ok(s) => s,
                Err(e) => {
                    let msg = format!("{} Unable to get or create agent: {e}", spec.label());
                    self.emit(ctx.payload(100, TaskStatus::Failed, msg.clone(), None));
                    return ExecuteOutcome::Failed(msg);
                }
            };
            match session.cast(SessionMsg::Run(spec)) {
                Ok(()) => return ExecuteOutcome::Running,
                Err(ractor::MessagingErr::SendErr(SessionMsg::Run(back))) => {
                    // The session is stopping: forget it and start a fresh one.
                    self.forget(task_id);
                    self.grant_slots();
                    spec = back;
                }
                Err(_) => break,
            }
        }
        let msg = format!(
            "[task_id: {}.{}] the task's session is not available",
            ctx.task_id, ctx.subtask_id
        );
        self.emit(ctx.payload(100, TaskStatus::Failed, msg.clone(), None));
        ExecuteOutcome::Failed(msg)
    }

    async fn session_for(
        &mut self,
        me: &ActorRef<SupervisorMsg>,
        task_id: i64,
        kind: &AgentKind,
    ) -> Result<ActorRef<SessionMsg>, ActorProcessingErr> {
        if let Some(e) = self.sessions.get(&task_id) {
            return Ok(e.actor.clone());
        }
        let args = SessionArgs {
            task_id,
            cfg: self.args.cfg.clone(),
            callbacks: self.args.callbacks.clone(),
            supervisor: me.clone(),
            agents: self.args.agents.clone(),
            live: self.live.clone(),
        };
        let (actor, _) = Actor::spawn_linked(None, Session, args, me.get_cell()).await?;
        self.by_actor.insert(actor.get_id(), task_id);
        self.sessions.insert(
            task_id,
            Entry {
                actor: actor.clone(),
                kind: kind.clone(),
                live: false,
                idle: true,
                reserved: false,
                queued: 0,
                last_active: Instant::now(),
            },
        );
        self.args.index.insert(SessionInfo {
            task_id,
            agent_type: kind.name().to_string(),
            status: SessionStatus::Idle,
            created_at: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0),
            current_subtask_id: None,
            queued: 0,
            completed_subtasks: 0,
            current: None,
        });
        Ok(actor)
    }

    /// A session needs a slot: granted at once when one is free; otherwise it waits (told
    /// so), idle live sessions are asked to suspend, and it is granted the first slot freed.
    fn want_slot(&mut self, task_id: i64) {
        let Some(cap) = self.args.cfg.max_live_processes else {
            return self.grant(task_id);
        };
        if self.slot_waiters.is_empty() && self.slots_in_use() < cap {
            return self.grant(task_id);
        }
        if !self.slot_waiters.contains(&task_id) {
            self.slot_waiters.push_back(task_id);
        }
        if let Some(e) = self.sessions.get(&task_id) {
            let _ = e.actor.cast(SessionMsg::SlotQueued);
        }
        // Processes already ending free their slots soon: suspend only for the rest.
        let live_sessions = self.sessions.values().filter(|e| e.live).count();
        let ending = self.live.count().saturating_sub(live_sessions);
        self.suspend_idle(self.slot_waiters.len().saturating_sub(ending));
    }

    /// Slots taken: granted ones whose process has not started, plus the live processes —
    /// counted by the processes themselves (a suspended or replaced process holds its slot
    /// until it is reaped), or by the sessions' reports where more sessions say live (an agent
    /// whose process is not an [`AgentProcess`](crate::agent::process::AgentProcess)).
    fn slots_in_use(&self) -> usize {
        let (mut live, mut reserved) = (0, 0);
        for e in self.sessions.values() {
            if e.live {
                live += 1;
            } else if e.reserved {
                reserved += 1;
            }
        }
        reserved + live.max(self.live.count())
    }

    /// Sessions that hold or claim a slot (what suspending idle sessions can free).
    fn sessions_holding_slots(&self) -> usize {
        self.sessions.values().filter(|e| e.holds_slot()).count()
    }

    fn grant(&mut self, task_id: i64) {
        if let Some(e) = self.sessions.get_mut(&task_id) {
            e.reserved = true;
            let _ = e.actor.cast(SessionMsg::SlotGranted);
        }
    }

    /// Hands freed slots to waiting sessions, in order.
    fn grant_slots(&mut self) {
        let Some(cap) = self.args.cfg.max_live_processes else {
            return;
        };
        while !self.slot_waiters.is_empty() && self.slots_in_use() < cap {
            if let Some(task_id) = self.slot_waiters.pop_front() {
                self.grant(task_id);
            }
        }
    }

    /// Asks up to `n` of the least recently active idle live sessions to suspend.
    fn suspend_idle(&self, n: usize) {
        let mut idle: Vec<&Entry> = self
            .sessions
            .values()
            .filter(|e| e.live && e.idle)
            .collect();
        idle.sort_by_key(|e| e.last_active);
        for e in idle.into_iter().take(n) {
            let _ = e.actor.cast(SessionMsg::Suspend);
        }
    }

    /// Over the live-process cap, asks the least recently active idle sessions to suspend
    /// their agent process (each can hold hundreds of MB); they resume on their next subtask.
    fn enforce_live_cap(&self) {
        let Some(cap) = self.args.cfg.max_live_processes else {
            return;
        };
        // Processes already ending are not counted: suspending more would not free them sooner.
        let used = self.sessions_holding_slots() + self.slot_waiters.len();
        if used > cap {
            self.suspend_idle(used - cap);
        }
    }

    /// Closes the sessions idle (nothing running or queued) for longer than the expiry, so a
    /// long-running executor does not fill `MAX_SESSIONS` with forgotten tasks. Their
    /// conversation id stays in the workspace: the task's next subtask resumes it.
    fn expire_idle(&mut self) {
        let Some(expiry) = self.args.cfg.session_expiry else {
            return;
        };
        let ids: Vec<i64> = self
            .sessions
            .iter()
            .filter(|(_, e)| e.idle && e.queued == 0 && e.last_active.elapsed() >= expiry)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            if let Some(actor) = self.forget(id) {
                tracing::info!("task {id}: {EXPIRED_REASON}; closing it");
                let _ = actor.cast(SessionMsg::Close(EXPIRED_REASON.into()));
            }
        }
        self.grant_slots();
    }

    fn forget(&mut self, task_id: i64) -> Option<ActorRef<SessionMsg>> {
        let entry = self.sessions.remove(&task_id)?;
        // The caller grants the freed slots once it has forgotten every session it ends, so a
        // close-all never hands a slot to a session it is about to close.
        self.slot_waiters.retain(|t| *t != task_id);
        crate::mask::secrets().forget_later(task_id);
        self.by_actor.remove(&entry.actor.get_id());
        self.args.index.remove(task_id);
        Some(entry.actor)
    }

    fn cancel(&self, task_id: i64, reply: RpcReplyPort<CancelOutcome>) {
        let Some(entry) = self.sessions.get(&task_id) else {
            let _ = reply.send(CancelOutcome::NoSession);
            return;
        };
        let session = entry.actor.clone();
        tokio::spawn(async move {
            let outcome = match ractor::call_t!(session, SessionMsg::Cancel, CANCEL_ACK_MS) {
                Ok(busy) => CancelOutcome::Cancelled { busy },
                Err(_) => CancelOutcome::NoSession,
            };
            let _ = reply.send(outcome);
        });
    }

    fn close(&mut self, scope: &CloseScope, reason: String, reply: RpcReplyPort<usize>) {
        let ids: Vec<i64> = self
            .sessions
            .iter()
            .filter(|(id, e)| match scope {
                CloseScope::Task(t) => *id == t,
                CloseScope::Kind(k) => &e.kind == k,
                CloseScope::All => true,
            })
            .map(|(id, _)| *id)
            .collect();
        let actors: Vec<ActorRef<SessionMsg>> =
            ids.iter().filter_map(|id| self.forget(*id)).collect();
        self.grant_slots();
        let budget = self.args.cfg.stop.budget();
        // Adopted processes (tools that shed the marker and left the agent's tree) have no
        // owner once their sessions are gone: those working in a closed task's directory, or
        // all of them at close-all, are ended too.
        let dirs: Option<Vec<std::path::PathBuf>> = match scope {
            CloseScope::All => None,
            _ => Some(
                ids.iter()
                    .map(|id| self.args.cfg.workspace_root.join(id.to_string()))
                    .collect(),
            ),
        };
        tokio::spawn(async move {
            let n = actors.len();
            futures::future::join_all(actors.into_iter().map(|a| {
                let reason = reason.clone();
                async move {
                    let _ = a.cast(SessionMsg::Close(reason));
                    let _ = a.wait(Some(budget)).await;
                }
            }))
            .await;
            let swept =
                tokio::task::spawn_blocking(move || crate::orphans::end_adopted(dirs.as_deref()))
                    .await
                    .unwrap_or(0);
            if swept > 0 {
                tracing::info!("ended {swept} adopted process(es) left by closed sessions");
            }
            let _ = reply.send(n);
        });
    }

    fn emit(&self, p: crate::payload::CallbackPayload) {
        let _ = self.args.callbacks.cast(CallbackMsg::Send(Box::new(p)));
    }
}
