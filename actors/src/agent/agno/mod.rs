//! The Agno agent actor: one agno client process per session (the Python program in `agno/`,
//! running the agno 2.1.5 library the original pins), driven over JSON lines exactly like the
//! Claude Code agent drives `claude`: same process machinery, same callbacks rules, same
//! cancel/close guarantees. A new session claims a pre-started client from the [`pool`] when
//! there is one. History lives in agno's SQLite database, so it survives a client crash and an
//! executor restart.

pub mod client;
pub mod credentials;
pub mod pool;
pub mod turn;

use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde_json::{json, Value};

use super::process::{AgentProcess, ExitInfo, ProcessEvent};
use super::seam::{AgentCmd, ProcessState};
use super::throttle::{Admit, ProgressThrottle};
use super::timers::{TimerKind, Timers};
use super::{AgentArgs, TurnRequest};
use crate::callback::CallbackMsg;
use crate::error::AgentError;
use crate::payload::{CallbackPayload, TaskStatus};
use client::Client;
use pool::PoolMsg;
use turn::{AgnoOutcome, AgnoTurn};

/// After the client exits, how long its stdout may still deliver lines.
const PIPE_DRAIN_TIMEOUT: Duration = Duration::from_millis(500);

/// Messages of the [`AgnoAgent`].
pub enum AgnoMsg {
    /// A command of the seam (turn, interrupt, suspend).
    Cmd(AgentCmd),
    /// A client for generation `gen` was claimed or started (or could not be).
    Started {
        /// Generation it is for.
        gen: u64,
        /// The client, or why there is none.
        result: Result<Client, AgentError>,
    },
    /// Something happened on client `gen`'s pipes.
    Process {
        /// Generation of the client.
        gen: u64,
        /// What happened.
        event: ProcessEvent,
    },
    /// Client `gen` did not say `ready` in time.
    ReadyTimeout {
        /// Generation of the client.
        gen: u64,
    },
    /// Run `run_seq` of client `gen` did not end in time after a cancel.
    CancelTimeout {
        /// Generation of the client.
        gen: u64,
        /// Which run.
        run_seq: u64,
    },
    /// After client `gen` exited, the time its stdout had to drain passed.
    DrainDeadline {
        /// Generation of the client.
        gen: u64,
    },
    /// A throttled progress event may go out now.
    Flush,
    /// The idle time after run `run_seq` of client `gen` passed.
    IdleDeadline {
        /// Generation of the client.
        gen: u64,
        /// The last run when the timer was set.
        run_seq: u64,
    },
}

crate::seam_message!(AgnoMsg);

/// What the [`AgnoAgent`] is started with.
pub struct AgnoArgs {
    /// What every agent gets.
    pub common: AgentArgs,
    /// Pre-started agno clients, when the pool is on.
    pub pool: Option<ActorRef<PoolMsg>>,
}

/// The actor; see the module docs.
pub struct AgnoAgent;

/// State of the [`AgnoAgent`].
pub struct AgnoState {
    args: AgentArgs,
    pool: Option<ActorRef<PoolMsg>>,
    proc: Option<AgentProcess>,
    gen: u64,
    starting: bool,
    ready: bool,
    stdout_done: bool,
    exited: Option<ExitInfo>,
    turn: Option<AgnoTurn>,
    pending_run: Option<Value>,
    run_seq: u64,
    throttle: ProgressThrottle,
    timers: Timers<AgnoMsg>,
}

impl Actor for AgnoAgent {
    type Msg = AgnoMsg;
    type State = AgnoState;
    type Arguments = AgnoArgs;

    async fn pre_start(
        &self,
        _me: ActorRef<AgnoMsg>,
        args: AgnoArgs,
    ) -> Result<AgnoState, ActorProcessingErr> {
        Ok(AgnoState {
            args: args.common,
            pool: args.pool,
            proc: None,
            gen: 0,
            starting: false,
            ready: false,
            stdout_done: false,
            exited: None,
            turn: None,
            pending_run: None,
            run_seq: 0,
            throttle: ProgressThrottle::default(),
            timers: Timers::default(),
        })
    }

    async fn handle(
        &self,
        me: ActorRef<AgnoMsg>,
        msg: AgnoMsg,
        st: &mut AgnoState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            AgnoMsg::Cmd(AgentCmd::Turn(req)) => st.on_turn(&me, *req),
            AgnoMsg::Cmd(AgentCmd::Interrupt) => st.on_interrupt(&me),
            AgnoMsg::Cmd(AgentCmd::Suspend) => st.suspend("over the live-process cap"),
            AgnoMsg::IdleDeadline { gen, run_seq }
                if gen == st.gen && run_seq == st.run_seq && st.turn.is_none() =>
            {
                st.suspend("idle")
            }
            AgnoMsg::Started { gen, result } if gen == st.gen => st.on_started(&me, result),
            AgnoMsg::Process { gen, event } if gen == st.gen => st.on_event(&me, event),
            AgnoMsg::ReadyTimeout { gen } if gen == st.gen && !st.ready && st.proc.is_some() => {
                let secs = st.args.cfg.agno.ready_timeout.as_secs();
                st.fail_turn(&format!(
                    "the agno client did not start within {secs} s; {}",
                    client::INSTALL_HINT
                ));
                st.discard_process();
            }
            AgnoMsg::CancelTimeout { gen, run_seq }
                if gen == st.gen
                    && st
                        .turn
                        .as_ref()
                        .is_some_and(|t| t.cancelled && t.run_seq == run_seq) =>
            {
                tracing::warn!(
                    "task {}: cancelled Agno run did not end in time; killing the client",
                    st.args.task_id
                );
                st.discard_process();
                st.end_turn(TaskStatus::Cancelled);
            }
            AgnoMsg::DrainDeadline { gen } if gen == st.gen => st.on_gone(),
            AgnoMsg::Flush if st.throttle.flush(Instant::now()) => {
                if let Some(t) = st.turn.as_ref().filter(|t| !t.cancelled) {
                    st.emit(t.progress_event());
                }
            }
            _ => {} // events of a retired client, or deadlines that no longer apply
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _me: ActorRef<AgnoMsg>,
        st: &mut AgnoState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(mut p) = st.proc.take() {
            // stdin EOF first: the client closes its MCP connections and exits by itself.
            let how = p.terminate(st.args.cfg.stop).await;
            tracing::info!(
                "task {}: agno client {} stopped ({how:?})",
                st.args.task_id,
                p.pid()
            );
        }
        Ok(())
    }
}

impl AgnoState {
    fn emit(&self, p: Box<CallbackPayload>) {
        let _ = self.args.callbacks.cast(CallbackMsg::Send(p));
    }

    fn on_turn(&mut self, me: &ActorRef<AgnoMsg>, req: TurnRequest) {
        self.run_seq += 1;
        let team = req.spec.bots.len() > 1;
        let mut turn = AgnoTurn::new(req.ctx, self.run_seq, team);
        if self.turn.is_some() {
            tracing::error!(
                "task {}: a turn arrived while another runs; refusing it",
                self.args.task_id
            );
            self.emit(turn.failed("internal error: the agent is busy with another subtask"));
            return;
        }
        self.emit(turn.running(55, "Starting Agno Agent"));
        let spec = &req.spec;
        if spec.new_session && self.proc.is_some() {
            // A fresh client builds a fresh agent for the new session id.
            self.retire_process();
        }
        let session_id = if spec.new_session {
            spec.subtask_id.to_string()
        } else {
            spec.task_id.to_string()
        };
        let mut prompt = req.prepared.prompt.clone();
        if let Some(url) = &spec.git_url {
            prompt.push_str(&format!(
                "\nProject URL: {}",
                crate::workspace::git::strip_userinfo(url)
            ));
        }
        // Keys the backend sends encrypted are decrypted here, as for Claude Code.
        let mut bots = spec.bots.clone();
        let cipher = &self.args.cfg.workspace.cipher;
        for b in &mut bots {
            if let Some(key) = b.pointer_mut("/agent_config/env/api_key") {
                if let Some(k) = key.as_str().map(|k| cipher.decrypt(k)) {
                    *key = Value::String(k);
                }
            }
        }
        credentials::fill_executor_keys(&mut bots, &self.args.cfg, &std::env::vars().collect());
        self.pending_run = Some(json!({
            "op": "run", "run_seq": self.run_seq, "session_id": session_id,
            "user_id": session_id, "mode": spec.workspace.mode.clone().unwrap_or_default(),
            "prompt": prompt, "bots": bots, "default_headers": null,
            "cwd": req.prepared.workdir,
        }));
        self.emit(turn.running(60, "${{thinking.starting_agent_async}}"));
        self.turn = Some(turn);
        if self.ready {
            self.send_run();
        } else if self.proc.is_none() && !self.starting {
            self.start_client(me);
        }
    }

    fn start_client(&mut self, me: &ActorRef<AgnoMsg>) {
        self.gen += 1;
        self.starting = true;
        let (gen, me, cfg, pool, task_id) = (
            self.gen,
            me.clone(),
            self.args.cfg.clone(),
            self.pool.clone(),
            self.args.task_id,
        );
        tokio::spawn(async move {
            let claimed = match pool {
                Some(p) => ractor::call!(p, PoolMsg::Claim).ok().flatten(),
                None => None,
            };
            let result = match claimed {
                Some(c) => Ok(c),
                None => client::start(&cfg, task_id).await,
            };
            if let Err(ractor::MessagingErr::SendErr(AgnoMsg::Started { result: Ok(c), .. })) =
                me.cast(AgnoMsg::Started { gen, result })
            {
                drop(c); // the agent is gone: Drop kills the process group
            }
        });
    }

    fn on_started(&mut self, me: &ActorRef<AgnoMsg>, result: Result<Client, AgentError>) {
        self.starting = false;
        let Client {
            process,
            mut events,
            ready,
        } = match result {
            Ok(c) => c,
            Err(e) => return self.fail_turn(&e.to_string()),
        };
        tracing::info!(
            "task {}: agno client {} {}",
            self.args.task_id,
            process.pid(),
            if ready {
                "claimed from the pool"
            } else {
                "started"
            }
        );
        let (fwd, gen) = (me.clone(), self.gen);
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                if fwd.cast(AgnoMsg::Process { gen, event }).is_err() {
                    break;
                }
            }
        });
        self.proc = Some(process);
        self.ready = ready;
        self.stdout_done = false;
        self.exited = None;
        self.args.session.process(ProcessState::Started);
        if ready {
            self.send_run();
        } else {
            let t = me.send_after(self.args.cfg.agno.ready_timeout, move || {
                AgnoMsg::ReadyTimeout { gen }
            });
            self.timers.arm(TimerKind::Init, t);
        }
    }

    fn send_run(&mut self) {
        let (Some(turn), Some(proc)) = (self.turn.as_mut(), self.proc.as_ref()) else {
            return;
        };
        if turn.sent || turn.cancelled {
            return;
        }
        let Some(run) = self.pending_run.take() else {
            return;
        };
        turn.sent = proc.send_line(run.to_string());
        let msg = if turn.team {
            "${{thinking.starting_team_streaming}}"
        } else {
            "${{thinking.starting_agent_streaming}}"
        };
        let p = turn.running(70, msg);
        self.emit(p);
    }

    fn on_event(&mut self, me: &ActorRef<AgnoMsg>, event: ProcessEvent) {
        match event {
            ProcessEvent::Line(line) => self.on_line(me, &line),
            ProcessEvent::StdoutFailed(reason) => {
                self.fail_turn(&reason);
                self.discard_process();
            }
            ProcessEvent::StdoutClosed => {
                self.stdout_done = true;
                if self.exited.is_some() {
                    self.on_gone();
                }
            }
            ProcessEvent::StderrClosed => {}
            ProcessEvent::Exited(info) => {
                self.exited = Some(info);
                if self.stdout_done {
                    self.on_gone();
                } else {
                    let gen = self.gen;
                    let t =
                        me.send_after(PIPE_DRAIN_TIMEOUT, move || AgnoMsg::DrainDeadline { gen });
                    self.timers.arm(TimerKind::Drain, t);
                }
            }
        }
    }

    fn on_line(&mut self, me: &ActorRef<AgnoMsg>, line: &str) {
        let Some(ev) = client::parse(line) else {
            tracing::debug!(
                "task {}: skipping a non-JSON client line",
                self.args.task_id
            );
            return;
        };
        match ev.get("type").and_then(Value::as_str) {
            Some("ready") => {
                self.ready = true;
                return self.send_run();
            }
            Some("cancel_ack") => return,
            Some("error") if ev.get("run_seq").is_none_or(Value::is_null) => {
                let msg = ev["message"]
                    .as_str()
                    .unwrap_or("agno client error")
                    .to_string();
                tracing::warn!("task {}: agno client: {msg}", self.args.task_id);
                if ev["where"] == "import" || !self.ready {
                    self.fail_turn(&msg);
                }
                return;
            }
            _ => {}
        }
        let Some(turn) = self.turn.as_mut() else {
            return;
        };
        if ev.get("run_seq").and_then(Value::as_u64) != Some(turn.run_seq) {
            return; // a line of an earlier (cancelled) run
        }
        match turn.on_event(&ev) {
            AgnoOutcome::Ignore => {}
            AgnoOutcome::Progress => match self.throttle.admit(Instant::now()) {
                Admit::Now => {
                    let p = turn.progress_event();
                    self.emit(p);
                }
                Admit::Defer(Some(after)) => {
                    let t = me.send_after(after, || AgnoMsg::Flush);
                    self.timers.arm(TimerKind::Flush, t);
                }
                Admit::Defer(None) => {}
            },
            AgnoOutcome::Finished(status, p) => {
                if let Some(p) = p {
                    self.emit(p);
                }
                self.end_turn(status);
                if let Some(idle) = self.args.cfg.agent_idle_timeout {
                    let (gen, run_seq) = (self.gen, self.run_seq);
                    let t = me.send_after(idle, move || AgnoMsg::IdleDeadline { gen, run_seq });
                    self.timers.arm(TimerKind::Idle, t);
                }
            }
        }
    }

    fn on_interrupt(&mut self, me: &ActorRef<AgnoMsg>) {
        let Some(turn) = self.turn.as_mut() else {
            return;
        };
        if turn.cancelled {
            return;
        }
        turn.cancelled = true;
        let p = Box::new(turn.ctx.payload(
            100,
            TaskStatus::Cancelled,
            crate::agent::seam::CANCEL_MESSAGE,
            None,
        ));
        let (sent, run_seq) = (turn.sent, turn.run_seq);
        self.throttle.reset();
        self.emit(p);
        if !sent {
            self.pending_run = None;
            return self.end_turn(TaskStatus::Cancelled);
        }
        if let Some(proc) = &self.proc {
            proc.send_line(json!({"op": "cancel"}).to_string());
        }
        let gen = self.gen;
        let t = me.send_after(self.args.cfg.agno.cancel_timeout, move || {
            AgnoMsg::CancelTimeout { gen, run_seq }
        });
        self.timers.arm(TimerKind::Interrupt, t);
    }

    /// The client is gone (exited and its output drained).
    fn on_gone(&mut self) {
        let Some(p) = self.proc.take() else {
            return;
        };
        let exit = self
            .exited
            .map_or_else(|| "unknown exit status".to_string(), |e| e.to_string());
        let tail = p.stderr_tail();
        drop(p);
        self.ready = false;
        self.args.session.process(ProcessState::Ended);
        if self.turn.as_ref().is_some_and(|t| t.cancelled) {
            return self.end_turn(TaskStatus::Cancelled);
        }
        let mut msg = format!("the agno client exited unexpectedly ({exit})");
        if let Some(last) = tail.iter().rev().find(|l| !l.trim().is_empty()) {
            msg.push_str(": ");
            msg.push_str(last);
        }
        self.fail_turn(&msg);
    }

    fn fail_turn(&mut self, message: &str) {
        let Some(turn) = self.turn.as_mut() else {
            return;
        };
        tracing::warn!(
            "task {}: subtask {} failed: {message}",
            self.args.task_id,
            turn.ctx.subtask_id
        );
        let p = turn.failed(message);
        self.emit(p);
        self.end_turn(TaskStatus::Failed);
    }

    fn end_turn(&mut self, status: TaskStatus) {
        self.throttle.reset();
        self.pending_run = None;
        if let Some(turn) = self.turn.take() {
            self.args.session.turn_done(turn.ctx.subtask_id, status);
        }
    }

    /// Kills the client at once (it misbehaved); the next subtask gets a new one.
    fn discard_process(&mut self) {
        self.gen += 1;
        self.ready = false;
        self.starting = false;
        if self.proc.take().is_some() {
            self.args.session.process(ProcessState::Ended);
        }
    }

    /// Ends the client gracefully in the background (stdin EOF, then signals).
    fn retire_process(&mut self) {
        self.gen += 1;
        self.ready = false;
        self.starting = false;
        if let Some(mut p) = self.proc.take() {
            let stop = self.args.cfg.stop;
            tokio::spawn(async move {
                p.terminate(stop).await;
            });
        }
    }

    fn suspend(&mut self, why: &str) {
        if self.turn.is_some() || self.proc.is_none() {
            return;
        }
        tracing::info!(
            "task {}: suspending the agno client ({why}); history stays in its database",
            self.args.task_id
        );
        self.retire_process();
        self.args.session.process(ProcessState::Suspended);
    }
}
