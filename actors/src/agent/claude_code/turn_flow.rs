//! Running a turn: spawning the CLI, sending the prompt, reading its stream-json output,
//! control requests, resume fallback and cancel.

use std::time::Instant;

use ractor::ActorRef;
use serde_json::{json, Value};

use super::*;
use crate::agent::launcher::Lane;

impl ClaudeState {
    pub(super) fn emit(&self, p: Box<CallbackPayload>) {
        self.core.emit(p);
    }

    pub(super) fn on_turn(&mut self, me: &ActorRef<AgentMsg>, req: TurnRequest) {
        let mut turn = Turn::new(req.ctx, String::new());
        turn.workbench = Some(new_workbench(&req.spec, &req.prepared));
        for notice in &req.prepared.notices {
            turn.step("thinking.workspace_notice", json!({"message": notice}));
        }
        if self.core.refuse_if_busy(&mut turn) {
            return;
        }
        self.emit(turn.running(55, INIT_MESSAGE));
        self.core.turn = Some(turn);
        if req.spec.new_session {
            tracing::info!(
                "task {}: new_session requested; starting a fresh conversation",
                self.core.args.task_id
            );
            self.retire_process();
            self.claude_session = None;
            self.next_resume = Resume::Fresh;
        }
        self.spec = Some(req.spec);
        let wanted = launch_digest(&req.prepared);
        if self.core.proc.is_some() && self.started_with.is_some_and(|d| d != wanted) {
            tracing::info!(
                "task {}: the workspace or credentials changed; restarting the CLI (the conversation resumes)",
                self.core.args.task_id
            );
            self.retire_process();
        }
        if self.core.phase == Phase::Down {
            self.cwd = req.prepared.workdir.clone();
        }
        self.prepared = Some(req.prepared);
        self.turn_seq += 1;
        match self.core.phase {
            Phase::Ready => self.send_turn(me),
            Phase::Down => self.start_spawn(me),
            Phase::Starting | Phase::Warming => {} // sent once the process is ready
        }
    }

    pub(super) fn start_spawn(&mut self, me: &ActorRef<AgentMsg>) {
        let Some(spec) = self.spec.clone() else {
            return;
        };
        let cfg = self.core.args.cfg.clone();
        let config_dir = self.task_dir.join(CONFIG_DIR);
        let bot = spec.config.claude().cloned().unwrap_or_default();
        let mut env = match claude_env(&cfg, &bot, &config_dir, std::env::vars()) {
            Ok(env) => env,
            Err(e) => return self.fail_turn(&e.to_string()),
        };
        self.started_with = self.prepared.as_ref().map(launch_digest);
        if let Some(p) = &self.prepared {
            env.extend(
                p.agent_env
                    .iter()
                    .map(|(k, v)| (k.clone(), v.expose().to_string())),
            );
        }
        self.core.begin_start();
        let resume = match std::mem::replace(&mut self.next_resume, Resume::FromFile) {
            Resume::FromFile => self
                .claude_session
                .clone()
                .map_or(Resume::FromFile, Resume::Id),
            other => other,
        };
        let job = Launch {
            spec: SpawnSpec {
                program: cfg.claude.bin.clone(),
                args: Vec::new(),
                env,
                cwd: self.cwd.clone(),
                max_line_bytes: cfg.claude.max_line_bytes,
                marker: crate::agent::family::new_marker(self.core.args.task_id),
                priority: cfg.agent_priority,
                uid: cfg.security.agent_user.map(|u| u.uid),
                gid: cfg.security.agent_user.map(|u| u.gid),
            },
            config_dir,
            task_dir: self.task_dir.clone(),
            mcp_servers: bot.mcp_servers.clone(),
            resume,
            bot,
        };
        let (gen, me) = (self.core.gen, me.clone());
        tokio::spawn(async move {
            let sink_me = me.clone();
            let result = launch(job, move |event| {
                sink_me.cast(AgentMsg::Process { gen, event }).is_ok()
            })
            .await;
            if let Err(ractor::MessagingErr::SendErr(AgentMsg::Spawned { result: Ok(s), .. })) =
                me.cast(AgentMsg::Spawned { gen, result })
            {
                drop(s); // the actor is gone: Drop kills the process group
            }
        });
    }

    pub(super) fn on_spawned(
        &mut self,
        me: &ActorRef<AgentMsg>,
        result: Result<Started, AgentError>,
    ) {
        match result {
            Err(e) => {
                self.core.phase = Phase::Down;
                self.fail_turn(&e.to_string())
            }
            Ok(Started { process, resumed }) => {
                tracing::info!(
                    "task {}: started Claude Code process {}{}",
                    self.core.args.task_id,
                    process.pid(),
                    resumed
                        .as_deref()
                        .map(|id| format!(" resuming {id}"))
                        .unwrap_or_default()
                );
                process.send_line(protocol::initialize(self.core.gen));
                self.core.adopt(process, false);
                self.resumed_with = resumed;
                self.turns_in_process = 0;
                let gen = self.core.gen;
                let t = me.send_after(self.core.args.cfg.claude.init_timeout, move || {
                    AgentMsg::InitTimeout { gen }
                });
                self.core.timers.arm(TimerKind::Init, t);
            }
        }
    }

    pub(super) fn send_turn(&mut self, me: &ActorRef<AgentMsg>) {
        let first = self.turns_in_process == 0;
        let (Some(turn), Some(proc), Some(spec)) = (
            self.core.turn.as_mut(),
            self.core.proc.as_ref(),
            self.spec.as_ref(),
        ) else {
            return;
        };
        if turn.sent || turn.cancelled {
            return;
        }
        let text = self
            .prepared
            .as_ref()
            .map_or(spec.prompt.as_str(), |p| p.prompt.as_str());
        turn.prompt = prompt::shape(spec, text, &self.cwd, first);
        turn.sent = proc.send_line(turn.user_line());
        let p = turn.running(60, INIT_MESSAGE);
        self.turns_in_process += 1;
        self.emit(p);
        self.last_output = Instant::now();
        self.turn_started = self.last_output;
        self.arm_watchdog(me);
        self.start_monitor(me);
    }

    /// Refreshes the workbench's git part while the turn runs, off the actor.
    fn start_monitor(&mut self, me: &ActorRef<AgentMsg>) {
        self.stop_monitor();
        let Some(repo) = self.prepared.as_ref().and_then(|p| p.repo.clone()) else {
            return;
        };
        let stop = tokio_util::sync::CancellationToken::new();
        self.monitor = Some(stop.clone());
        let (me, turn, every) = (
            me.clone(),
            self.turn_seq,
            self.core.args.cfg.workspace.workbench_interval,
        );
        tokio::spawn(crate::workspace::workbench::monitor(
            repo,
            every,
            stop,
            move |snapshot| me.cast(AgentMsg::Workbench { turn, snapshot }).is_ok(),
        ));
    }

    pub(super) fn on_event(&mut self, me: &ActorRef<AgentMsg>, event: ProcessEvent) {
        let drain = me.clone();
        let step = self.core.on_pipe(event, true, move |gen| {
            drain.send_after(PIPE_DRAIN_TIMEOUT, move || AgentMsg::DrainDeadline { gen })
        });
        match step {
            PipeStep::Line(line) => self.on_line(me, &line),
            PipeStep::Gone(p, exit) => self.after_exit(me, p, exit),
            PipeStep::Nothing => {}
        }
    }

    pub(super) fn on_line(&mut self, me: &ActorRef<AgentMsg>, line: &str) {
        self.last_output = Instant::now();
        if !line.trim_start().starts_with('{') {
            return;
        }
        let Ok(msg) = serde_json::from_str::<Value>(line) else {
            tracing::debug!(
                "task {}: skipping a non-JSON stdout line",
                self.core.args.task_id
            );
            return;
        };
        match protocol::classify(&msg) {
            Inbound::ControlResponse(r) => return self.on_control_response(me, &r),
            Inbound::ControlRequest(r) => return self.answer_control_request(&r),
            Inbound::Message(m)
                if matches!(protocol::message(m), protocol::CliMessage::Result(_))
                    && self.resume_failed(m) =>
            {
                return self.fall_back_to_fresh(me)
            }
            Inbound::Message(_) => {}
        }
        if let Some(id) = msg.get("session_id").and_then(Value::as_str) {
            self.remember_session(id);
        }
        let Some(turn) = self.core.turn.as_mut() else {
            return;
        };
        match turn.on_message(&msg) {
            TurnOutcome::Ignore => {}
            TurnOutcome::Progress => {
                let (me, gen) = (me.clone(), self.core.gen);
                self.core.progress(move |after| {
                    me.send_after(after, move || AgentMsg::FlushProgress { gen })
                });
            }
            TurnOutcome::Finished(status, p) => {
                if let Some(p) = p {
                    self.emit(p);
                }
                self.end_turn(status);
                self.arm_idle_timer(me);
            }
        }
    }

    pub(super) fn on_control_response(&mut self, me: &ActorRef<AgentMsg>, r: &CliResponse) {
        if r.answers_init(self.core.gen) && self.core.phase == Phase::Warming {
            self.core.phase = Phase::Ready;
            self.core.timers.cancel(TimerKind::Init);
            self.send_turn(me);
        }
    }

    /// Every request from the CLI gets an answer, so a turn never waits on us: tool use is
    /// allowed (the executor runs in bypass mode), anything else is refused.
    pub(super) fn answer_control_request(&self, r: &CliRequest) {
        if let Some(p) = &self.core.proc {
            p.send_line(protocol::answer(r));
        }
    }

    pub(super) fn resume_failed(&self, msg: &Value) -> bool {
        self.resumed_with.is_some()
            && self.turns_in_process <= 1
            && msg.to_string().contains(NO_CONVERSATION)
    }

    /// `--resume` named a conversation the CLI does not have: say so in the thinking steps and
    /// run the turn in a fresh conversation instead of failing it.
    pub(super) fn fall_back_to_fresh(&mut self, me: &ActorRef<AgentMsg>) {
        let id = self.resumed_with.take().unwrap_or_default();
        tracing::warn!(
            "task {}: conversation {id} could not be resumed; starting a fresh one",
            self.core.args.task_id
        );
        self.discard_process();
        self.claude_session = None;
        self.next_resume = Resume::Fresh;
        if let Some(turn) = self.core.turn.as_mut() {
            turn.step(
                "thinking.resume_failed_new_session",
                json!({"session_id": id, "reason": NO_CONVERSATION}),
            );
            turn.sent = false;
            self.start_spawn(me);
        }
    }

    pub(super) fn remember_session(&mut self, id: &str) {
        if id.is_empty() || self.claude_session.as_deref() == Some(id) {
            return;
        }
        self.claude_session = Some(id.to_string());
        let (path, id) = (self.task_dir.join(SESSION_ID_FILE), id.to_string());
        // Written on a launcher thread, at the agent's priority: nothing waits for it.
        let save = move || {
            if let Err(e) = std::fs::write(&path, id) {
                tracing::warn!("cannot save Claude session id to {}: {e}", path.display());
            }
        };
        let priority = self.core.args.cfg.agent_priority;
        if let Err(e) = crate::agent::launcher::detach(priority, Lane::Launch, save) {
            tracing::warn!("cannot save Claude session id: {e}");
        }
    }

    pub(super) fn on_interrupt(&mut self, me: &ActorRef<AgentMsg>) {
        match self.core.cancel_turn() {
            Some(true) => {}
            Some(false) => return self.stop_monitor(),
            None => return,
        }
        if let Some(p) = &self.core.proc {
            p.send_line(protocol::interrupt(self.core.gen));
        }
        let gen = self.core.gen;
        let t = me.send_after(self.core.args.cfg.claude.interrupt_timeout, move || {
            AgentMsg::InterruptTimeout { gen }
        });
        self.core.timers.arm(TimerKind::Interrupt, t);
    }
}

/// The workbench of a subtask, from the task dict and its prepared repository.
fn new_workbench(
    spec: &TaskSpec,
    prepared: &crate::workspace::Prepared,
) -> crate::workspace::workbench::Workbench {
    use crate::workspace::workbench::{Workbench, WorkbenchInfo};
    let ws = &spec.workspace;
    let repository = ws
        .git_repo
        .clone()
        .or_else(|| spec.git_url.clone())
        .unwrap_or_default();
    Workbench::new(
        WorkbenchInfo {
            task_title: &spec.task_title,
            task_id: spec.task_id,
            subtask_title: &spec.subtask_title,
            prompt: &spec.prompt,
            repository: &crate::workspace::git::strip_userinfo(&repository),
            branch: spec.branch.as_deref().unwrap_or_default(),
            git_domain: ws.git_domain.as_deref().unwrap_or_default(),
        },
        prepared.repo.clone(),
    )
}

/// A digest of what a process is started with from the prepared workspace: its working
/// directory and extra environment (secrets are hashed, never kept twice).
fn launch_digest(p: &crate::workspace::Prepared) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    p.workdir.hash(&mut h);
    for (k, v) in &p.agent_env {
        k.hash(&mut h);
        v.expose().hash(&mut h);
    }
    h.finish()
}
