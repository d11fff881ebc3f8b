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

use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde_json::{json, Value};

use super::process::{AgentProcess, ExitInfo, ProcessEvent};
use super::process_core::{Phase, PipeStep, ProcessCore, PIPE_DRAIN_TIMEOUT};
use super::seam::AgentCmd;
use super::timers::TimerKind;
use super::{AgentArgs, TurnRequest};
use crate::error::AgentError;
use crate::payload::{CallbackPayload, TaskStatus};
use client::Client;
use pool::PoolMsg;
use turn::{AgnoOutcome, AgnoTurn};

/// What Agno needs from workspace preparation: the clone only (instruction files, skills and
/// attachments are Claude Code's, as in the original).
pub const WORKSPACE_NEEDS: crate::workspace::WorkspaceNeeds = crate::workspace::WorkspaceNeeds {
    clone: true,
    instruction_files: false,
    sub_agents: false,
    skills_under: None,
    attachments: false,
    reserved: &[],
};

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
    /// The client process, its turn, throttle and timers (shared with every process agent).
    core: ProcessCore<AgnoTurn, AgnoMsg>,
    pool: Option<ActorRef<PoolMsg>>,
    pending_run: Option<Value>,
    run_seq: u64,
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
            core: ProcessCore::new(args.common, "agno client"),
            pool: args.pool,
            pending_run: None,
            run_seq: 0,
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
                if gen == st.core.gen && run_seq == st.run_seq && st.core.turn.is_none() =>
            {
                st.suspend("idle")
            }
            AgnoMsg::Started { gen, result } if gen == st.core.gen => st.on_started(&me, result),
            AgnoMsg::Process { gen, event } if gen == st.core.gen => st.on_event(&me, event),
            AgnoMsg::ReadyTimeout { gen }
                if gen == st.core.gen && st.core.phase == Phase::Warming =>
            {
                let secs = st.core.args.cfg.agno.ready_timeout.as_secs();
                st.fail_turn(&format!(
                    "the agno client did not start within {secs} s; {}",
                    client::INSTALL_HINT
                ));
                st.discard_process();
            }
            AgnoMsg::CancelTimeout { gen, run_seq }
                if gen == st.core.gen
                    && st
                        .core
                        .turn
                        .as_ref()
                        .is_some_and(|t| t.cancelled && t.run_seq == run_seq) =>
            {
                tracing::warn!(
                    "task {}: cancelled Agno run did not end in time; killing the client",
                    st.core.args.task_id
                );
                st.discard_process();
                st.end_turn(TaskStatus::Cancelled);
            }
            AgnoMsg::DrainDeadline { gen } if gen == st.core.gen => {
                if let PipeStep::Gone(p, exit) = st.core.gone() {
                    st.after_exit(p, exit);
                }
            }
            AgnoMsg::Flush => st.core.flush(),
            _ => {} // events of a retired client, or deadlines that no longer apply
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _me: ActorRef<AgnoMsg>,
        st: &mut AgnoState,
    ) -> Result<(), ActorProcessingErr> {
        // stdin EOF first: the client closes its MCP connections and exits by itself.
        st.core.stop().await;
        Ok(())
    }
}

impl AgnoState {
    fn emit(&self, p: Box<CallbackPayload>) {
        self.core.emit(p);
    }

    fn on_turn(&mut self, me: &ActorRef<AgnoMsg>, req: TurnRequest) {
        self.run_seq += 1;
        let team = req.spec.bots.len() > 1;
        let mut turn = AgnoTurn::new(req.ctx, self.run_seq, team);
        if self.core.refuse_if_busy(&mut turn) {
            return;
        }
        self.emit(turn.running(55, "Starting Agno Agent"));
        let spec = &req.spec;
        if spec.new_session && self.core.proc.is_some() {
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
        let cipher = &self.core.args.cfg.workspace.cipher;
        for b in &mut bots {
            if let Some(key) = b.pointer_mut("/agent_config/env/api_key") {
                if let Some(k) = key.as_str().map(|k| cipher.decrypt(k)) {
                    *key = Value::String(k);
                }
            }
        }
        credentials::fill_executor_keys(
            &mut bots,
            &self.core.args.cfg,
            &std::env::vars().collect(),
        );
        self.pending_run = Some(json!({
            "op": "run", "run_seq": self.run_seq, "session_id": session_id,
            "user_id": session_id, "mode": spec.workspace.mode.clone().unwrap_or_default(),
            "prompt": prompt, "bots": bots, "default_headers": null,
            "cwd": req.prepared.workdir,
        }));
        self.emit(turn.running(60, "${{thinking.starting_agent_async}}"));
        self.core.turn = Some(turn);
        match self.core.phase {
            Phase::Ready => self.send_run(),
            Phase::Down => self.start_client(me),
            Phase::Starting | Phase::Warming => {} // sent once the client is ready
        }
    }

    fn start_client(&mut self, me: &ActorRef<AgnoMsg>) {
        let gen = self.core.begin_start();
        let (gen, me, cfg, pool, task_id) = (
            gen,
            me.clone(),
            self.core.args.cfg.clone(),
            self.pool.clone(),
            self.core.args.task_id,
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
        let Client {
            process,
            mut events,
            ready,
        } = match result {
            Ok(c) => c,
            Err(e) => {
                self.core.phase = Phase::Down;
                return self.fail_turn(&e.to_string());
            }
        };
        tracing::info!(
            "task {}: agno client {} {}",
            self.core.args.task_id,
            process.pid(),
            if ready {
                "claimed from the pool"
            } else {
                "started"
            }
        );
        let (fwd, gen) = (me.clone(), self.core.gen);
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                if fwd.cast(AgnoMsg::Process { gen, event }).is_err() {
                    break;
                }
            }
        });
        self.core.adopt(process, ready);
        if ready {
            self.send_run();
        } else {
            let t = me.send_after(self.core.args.cfg.agno.ready_timeout, move || {
                AgnoMsg::ReadyTimeout { gen }
            });
            self.core.timers.arm(TimerKind::Init, t);
        }
    }

    fn send_run(&mut self) {
        let (Some(turn), Some(proc)) = (self.core.turn.as_mut(), self.core.proc.as_ref()) else {
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
        let drain = me.clone();
        let step = self.core.on_pipe(event, false, move |gen| {
            drain.send_after(PIPE_DRAIN_TIMEOUT, move || AgnoMsg::DrainDeadline { gen })
        });
        match step {
            PipeStep::Line(line) => self.on_line(me, &line),
            PipeStep::Gone(p, exit) => self.after_exit(p, exit),
            PipeStep::Nothing => {}
        }
    }

    fn on_line(&mut self, me: &ActorRef<AgnoMsg>, line: &str) {
        let Some(ev) = client::parse(line) else {
            tracing::debug!(
                "task {}: skipping a non-JSON client line",
                self.core.args.task_id
            );
            return;
        };
        match ev.get("type").and_then(Value::as_str) {
            Some("ready") => {
                self.core.phase = Phase::Ready;
                return self.send_run();
            }
            Some("cancel_ack") => return,
            Some("error") if ev.get("run_seq").is_none_or(Value::is_null) => {
                let msg = ev["message"]
                    .as_str()
                    .unwrap_or("agno client error")
                    .to_string();
                tracing::warn!("task {}: agno client: {msg}", self.core.args.task_id);
                if ev["where"] == "import" || self.core.phase != Phase::Ready {
                    self.fail_turn(&msg);
                }
                return;
            }
            _ => {}
        }
        let Some(turn) = self.core.turn.as_mut() else {
            return;
        };
        if ev.get("run_seq").and_then(Value::as_u64) != Some(turn.run_seq) {
            return; // a line of an earlier (cancelled) run
        }
        match turn.on_event(&ev) {
            AgnoOutcome::Ignore => {}
            AgnoOutcome::Progress => self
                .core
                .progress(|after| me.send_after(after, || AgnoMsg::Flush)),
            AgnoOutcome::Finished(status, p) => {
                if let Some(p) = p {
                    self.emit(p);
                }
                self.end_turn(status);
                if let Some(idle) = self.core.args.cfg.agent_idle_timeout {
                    let (gen, run_seq) = (self.core.gen, self.run_seq);
                    let t = me.send_after(idle, move || AgnoMsg::IdleDeadline { gen, run_seq });
                    self.core.timers.arm(TimerKind::Idle, t);
                }
            }
        }
    }

    fn on_interrupt(&mut self, me: &ActorRef<AgnoMsg>) {
        let Some(run_seq) = self.core.turn.as_ref().map(|t| t.run_seq) else {
            return;
        };
        match self.core.cancel_turn() {
            Some(true) => {}
            Some(false) => {
                self.pending_run = None;
                return;
            }
            None => return,
        }
        if let Some(proc) = &self.core.proc {
            proc.send_line(json!({"op": "cancel"}).to_string());
        }
        let gen = self.core.gen;
        let t = me.send_after(self.core.args.cfg.agno.cancel_timeout, move || {
            AgnoMsg::CancelTimeout { gen, run_seq }
        });
        self.core.timers.arm(TimerKind::Interrupt, t);
    }

    /// The client is gone (exited and its output drained): what that means for the turn.
    fn after_exit(&mut self, p: AgentProcess, exit: ExitInfo) {
        let tail = p.stderr_tail();
        drop(p);
        if self.core.turn_cancelled() {
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
        self.pending_run = None;
        self.core.fail_turn(message);
    }

    fn end_turn(&mut self, status: TaskStatus) {
        self.pending_run = None;
        self.core.end_turn(status);
    }

    /// Kills the client at once (it misbehaved); the next subtask gets a new one.
    fn discard_process(&mut self) {
        self.core.discard_process();
    }

    /// Ends the client gracefully in the background (stdin EOF, then signals).
    fn retire_process(&mut self) {
        self.core.retire_process();
    }

    /// Ends an idle client; history stays in its database for the next subtask.
    fn suspend(&mut self, why: &str) {
        self.core.suspend(why);
    }
}
