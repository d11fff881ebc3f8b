//! The Claude Code agent actor: one long-lived `claude` process per session, driven over
//! stream-json (research/claude-code-cli.md §0–1). The same process serves every subtask of the
//! task, so the conversation continues. A process that dies, wedges or idles too long is
//! replaced by a new one started with `--resume=<saved id>`, so the conversation survives that
//! too (and an executor restart, since transcripts live in the task's own config directory).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde_json::{json, Value};

use super::claude_env::claude_env;
use super::claude_spawn::{launch, Launch, Resume, Started, CONFIG_DIR, SESSION_ID_FILE};
use super::claude_turn::{LineOutcome, Turn, INIT_MESSAGE};
use super::process::{AgentProcess, ExitInfo, ProcessEvent, SpawnSpec};
use super::throttle::{Admit, ProgressThrottle};
use super::timers::{TimerKind, Timers};
use super::{prompt, AgentArgs, TurnRequest};
use crate::callback::CallbackMsg;
use crate::error::AgentError;
use crate::payload::{CallbackPayload, TaskStatus};
use crate::session::{ProcessState, SessionMsg};
use crate::task::TaskSpec;

/// After the CLI exits, how long its pipes may stay open (held by a grandchild) before the
/// process counts as gone anyway.
const PIPE_DRAIN_TIMEOUT: Duration = Duration::from_millis(500);

/// Bounds of the watchdog's check interval (a quarter of the shortest limit).
const WATCHDOG_MIN_TICK: Duration = Duration::from_millis(100);
const WATCHDOG_MAX_TICK: Duration = Duration::from_secs(5);

/// What the CLI says when `--resume` names a conversation it does not have.
const NO_CONVERSATION: &str = "No conversation found";

/// Messages of the [`ClaudeCodeAgent`].
pub enum AgentMsg {
    /// Run one subtask; the session sends the next only after `TurnDone`.
    Turn(Box<TurnRequest>),
    /// Cancel the running subtask.
    Interrupt,
    /// The spawn task finished (generation `gen`).
    Spawned {
        /// Generation of the process this is about.
        gen: u64,
        /// The process, or why it could not start.
        result: Result<Started, AgentError>,
    },
    /// Something happened on process `gen`'s pipes.
    Process {
        /// Generation of the process this is about.
        gen: u64,
        /// What happened.
        event: ProcessEvent,
    },
    /// The initialize deadline of process `gen` passed.
    InitTimeout {
        /// Generation of the process this is about.
        gen: u64,
    },
    /// After process `gen` exited, the time its pipes had to drain passed.
    DrainDeadline {
        /// Generation of the process this is about.
        gen: u64,
    },
    /// The deadline for the interrupted turn's `result` passed.
    InterruptTimeout {
        /// Generation of the process this is about.
        gen: u64,
    },
    /// End the process now if no turn runs (asked by the session for the live-process cap).
    Suspend,
    /// The throttled progress event of process `gen` may go out now.
    FlushProgress {
        /// Generation of the process this is about.
        gen: u64,
    },
    /// Time to check the running turn (`turn` = the process's turn count when armed).
    Watchdog {
        /// Generation of the process this is about.
        gen: u64,
        /// Which turn of that process.
        turn: u32,
    },
    /// The idle time after turn number `turns` of process `gen` passed.
    IdleDeadline {
        /// Generation of the process this is about.
        gen: u64,
        /// Turns the process had served when the timer was set.
        turns: u32,
    },
}

/// The actor; see the module docs.
pub struct ClaudeCodeAgent;

/// State of the [`ClaudeCodeAgent`].
pub struct ClaudeState {
    args: AgentArgs,
    cwd: PathBuf,
    proc: Option<AgentProcess>,
    gen: u64,
    spawning: bool,
    ready: bool,
    stdout_done: bool,
    stderr_done: bool,
    exited: Option<ExitInfo>,
    turns_in_process: u32,
    turn: Option<Turn>,
    spec: Option<TaskSpec>,
    claude_session: Option<String>,
    resumed_with: Option<String>,
    next_resume: Resume,
    last_output: Instant,
    turn_started: Instant,
    throttle: ProgressThrottle,
    timers: Timers<AgentMsg>,
}

impl Actor for ClaudeCodeAgent {
    type Msg = AgentMsg;
    type State = ClaudeState;
    type Arguments = AgentArgs;

    async fn pre_start(
        &self,
        _me: ActorRef<AgentMsg>,
        args: AgentArgs,
    ) -> Result<ClaudeState, ActorProcessingErr> {
        let cwd = args.cfg.workspace_root.join(args.task_id.to_string());
        Ok(ClaudeState {
            args,
            cwd,
            proc: None,
            gen: 0,
            spawning: false,
            ready: false,
            stdout_done: false,
            stderr_done: false,
            exited: None,
            turns_in_process: 0,
            turn: None,
            spec: None,
            claude_session: None,
            resumed_with: None,
            next_resume: Resume::FromFile,
            last_output: Instant::now(),
            turn_started: Instant::now(),
            throttle: ProgressThrottle::default(),
            timers: Timers::default(),
        })
    }

    async fn handle(
        &self,
        me: ActorRef<AgentMsg>,
        msg: AgentMsg,
        st: &mut ClaudeState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            AgentMsg::Turn(req) => st.on_turn(&me, *req),
            AgentMsg::Interrupt => st.on_interrupt(&me),
            AgentMsg::Spawned { gen, result } if gen == st.gen => st.on_spawned(&me, result),
            AgentMsg::Process { gen, event } if gen == st.gen => st.on_event(&me, event),
            AgentMsg::DrainDeadline { gen } if gen == st.gen => st.on_process_gone(&me),
            AgentMsg::InitTimeout { gen } if gen == st.gen && !st.ready && st.proc.is_some() => {
                let secs = st.args.cfg.claude.init_timeout.as_secs();
                st.fail_turn(&format!(
                    "Claude Code CLI did not answer the initialize request within {secs} s"
                ));
                st.discard_process();
            }
            AgentMsg::InterruptTimeout { gen }
                if gen == st.gen && st.turn.as_ref().is_some_and(|t| t.cancelled) =>
            {
                tracing::warn!(
                    "task {}: interrupted turn did not end in time; killing the CLI",
                    st.args.task_id
                );
                st.discard_process();
                st.end_turn(TaskStatus::Cancelled);
            }
            AgentMsg::IdleDeadline { gen, turns }
                if gen == st.gen && turns == st.turns_in_process =>
            {
                st.suspend("idle")
            }
            AgentMsg::Suspend => st.suspend("over the live-process cap"),
            AgentMsg::FlushProgress { .. } if st.throttle.flush(Instant::now()) => {
                if let Some(turn) = st.turn.as_ref().filter(|t| !t.cancelled) {
                    st.emit(turn.progress_event());
                }
            }
            AgentMsg::Watchdog { gen, turn } if gen == st.gen && turn == st.turns_in_process => {
                st.watchdog(&me)
            }
            _ => {} // events of a retired process, or deadlines that no longer apply
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _me: ActorRef<AgentMsg>,
        st: &mut ClaudeState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(mut p) = st.proc.take() {
            let how = p.terminate(st.args.cfg.stop).await;
            tracing::info!(
                "task {}: Claude Code process {} stopped ({how:?})",
                st.args.task_id,
                p.pid()
            );
        }
        Ok(())
    }
}

impl ClaudeState {
    fn emit(&self, p: Box<CallbackPayload>) {
        let _ = self.args.callbacks.cast(CallbackMsg::Send(p));
    }

    fn on_turn(&mut self, me: &ActorRef<AgentMsg>, req: TurnRequest) {
        let turn = Turn::new(req.ctx, String::new());
        if self.turn.is_some() {
            tracing::error!(
                "task {}: a turn arrived while another runs; refusing it",
                self.args.task_id
            );
            let mut t = turn;
            self.emit(t.failed("internal error: the agent is busy with another subtask"));
            return;
        }
        self.emit(turn.running(55, INIT_MESSAGE));
        self.turn = Some(turn);
        if req.spec.new_session {
            tracing::info!(
                "task {}: new_session requested; starting a fresh conversation",
                self.args.task_id
            );
            self.retire_process();
            self.claude_session = None;
            self.next_resume = Resume::Fresh;
        }
        self.spec = Some(req.spec);
        if self.ready {
            self.send_turn(me);
        } else if !self.spawning && self.proc.is_none() {
            self.start_spawn(me);
        }
    }

    fn start_spawn(&mut self, me: &ActorRef<AgentMsg>) {
        let Some(spec) = self.spec.clone() else {
            return;
        };
        let cfg = self.args.cfg.clone();
        let config_dir = self.cwd.join(CONFIG_DIR);
        let env = match claude_env(&cfg, &spec.bot, &config_dir, std::env::vars()) {
            Ok(env) => env,
            Err(e) => return self.fail_turn(&e.to_string()),
        };
        self.gen += 1;
        self.spawning = true;
        let resume = match std::mem::replace(&mut self.next_resume, Resume::FromFile) {
            Resume::FromFile => self
                .claude_session
                .clone()
                .map_or(Resume::FromFile, Resume::Id),
            other => other,
        };
        let bot = spec.bot.clone();
        let job = Launch {
            spec: SpawnSpec {
                program: cfg.claude.bin.clone(),
                args: Vec::new(),
                env,
                cwd: self.cwd.clone(),
                max_line_bytes: cfg.claude.max_line_bytes,
                marker: super::family::new_marker(self.args.task_id),
            },
            config_dir,
            mcp_servers: spec.bot.mcp_servers.clone(),
            resume,
            bot,
        };
        let (gen, me) = (self.gen, me.clone());
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

    fn on_spawned(&mut self, me: &ActorRef<AgentMsg>, result: Result<Started, AgentError>) {
        self.spawning = false;
        match result {
            Err(e) => self.fail_turn(&e.to_string()),
            Ok(Started { process, resumed }) => {
                tracing::info!(
                    "task {}: started Claude Code process {}{}",
                    self.args.task_id,
                    process.pid(),
                    resumed
                        .as_deref()
                        .map(|id| format!(" resuming {id}"))
                        .unwrap_or_default()
                );
                let init = json!({"type": "control_request", "request_id": format!("req_init_{}", self.gen),
                                  "request": {"subtype": "initialize", "hooks": null}});
                process.send_line(init.to_string());
                self.proc = Some(process);
                self.resumed_with = resumed;
                self.ready = false;
                self.stdout_done = false;
                self.stderr_done = false;
                self.exited = None;
                self.turns_in_process = 0;
                let gen = self.gen;
                let t = me.send_after(self.args.cfg.claude.init_timeout, move || {
                    AgentMsg::InitTimeout { gen }
                });
                self.timers.arm(TimerKind::Init, t);
                self.tell_session(ProcessState::Started);
            }
        }
    }

    fn send_turn(&mut self, me: &ActorRef<AgentMsg>) {
        let first = self.turns_in_process == 0;
        let (Some(turn), Some(proc), Some(spec)) =
            (self.turn.as_mut(), self.proc.as_ref(), self.spec.as_ref())
        else {
            return;
        };
        if turn.sent || turn.cancelled {
            return;
        }
        turn.prompt = prompt::shape(spec, &self.cwd, first);
        turn.sent = proc.send_line(turn.user_line());
        let p = turn.running(60, INIT_MESSAGE);
        self.turns_in_process += 1;
        self.emit(p);
        self.last_output = Instant::now();
        self.turn_started = self.last_output;
        self.arm_watchdog(me);
    }

    fn on_event(&mut self, me: &ActorRef<AgentMsg>, event: ProcessEvent) {
        match event {
            ProcessEvent::Line(line) => self.on_line(me, &line),
            ProcessEvent::StdoutFailed(reason) => {
                self.fail_turn(&reason);
                self.discard_process();
                return;
            }
            ProcessEvent::StdoutClosed => self.stdout_done = true,
            ProcessEvent::StderrClosed => self.stderr_done = true,
            ProcessEvent::Exited(info) => {
                self.exited = Some(info);
                let gen = self.gen;
                let t = me.send_after(PIPE_DRAIN_TIMEOUT, move || AgentMsg::DrainDeadline { gen });
                self.timers.arm(TimerKind::Drain, t);
            }
        }
        if self.stdout_done && self.stderr_done && self.exited.is_some() {
            self.on_process_gone(me);
        }
    }

    fn on_line(&mut self, me: &ActorRef<AgentMsg>, line: &str) {
        self.last_output = Instant::now();
        if !line.trim_start().starts_with('{') {
            return;
        }
        let Ok(msg) = serde_json::from_str::<Value>(line) else {
            tracing::debug!(
                "task {}: skipping a non-JSON stdout line",
                self.args.task_id
            );
            return;
        };
        match msg.get("type").and_then(Value::as_str) {
            Some("control_response") => return self.on_control_response(me, &msg),
            Some("control_request") => return self.answer_control_request(&msg),
            Some("result") if self.resume_failed(&msg) => return self.fall_back_to_fresh(me),
            _ => {}
        }
        if let Some(id) = msg.get("session_id").and_then(Value::as_str) {
            self.remember_session(id);
        }
        let Some(turn) = self.turn.as_mut() else {
            return;
        };
        match turn.on_message(&msg) {
            LineOutcome::Ignore => {}
            LineOutcome::Progress => match self.throttle.admit(Instant::now()) {
                Admit::Now => {
                    let p = turn.progress_event();
                    self.emit(p);
                }
                Admit::Defer(Some(after)) => {
                    let gen = self.gen;
                    let t = me.send_after(after, move || AgentMsg::FlushProgress { gen });
                    self.timers.arm(TimerKind::Flush, t);
                }
                Admit::Defer(None) => {}
            },
            LineOutcome::Finished(status, p) => {
                if let Some(p) = p {
                    self.emit(p);
                }
                self.end_turn(status);
                self.arm_idle_timer(me);
            }
        }
    }

    fn on_control_response(&mut self, me: &ActorRef<AgentMsg>, msg: &Value) {
        let id = msg
            .pointer("/response/request_id")
            .and_then(Value::as_str)
            .unwrap_or("");
        if id == format!("req_init_{}", self.gen) && !self.ready {
            self.ready = true;
            self.timers.cancel(TimerKind::Init);
            self.send_turn(me);
        }
    }

    /// Every request from the CLI gets an answer, so a turn never waits on us: tool use is
    /// allowed (the executor runs in bypass mode), anything else is refused.
    fn answer_control_request(&self, msg: &Value) {
        let id = msg.get("request_id").cloned().unwrap_or(Value::Null);
        let request = msg.get("request").cloned().unwrap_or(Value::Null);
        let reply = match request.get("subtype").and_then(Value::as_str) {
            Some("can_use_tool") => {
                json!({"type": "control_response", "response": {"subtype": "success", "request_id": id,
                "response": {"behavior": "allow", "updatedInput": request.get("input").cloned().unwrap_or(json!({}))}}})
            }
            _ => json!({"type": "control_response",
                        "response": {"subtype": "error", "request_id": id, "error": "not supported by this executor"}}),
        };
        if let Some(p) = &self.proc {
            p.send_line(reply.to_string());
        }
    }

    fn resume_failed(&self, msg: &Value) -> bool {
        self.resumed_with.is_some()
            && self.turns_in_process <= 1
            && msg.to_string().contains(NO_CONVERSATION)
    }

    /// `--resume` named a conversation the CLI does not have: say so in the thinking steps and
    /// run the turn in a fresh conversation instead of failing it.
    fn fall_back_to_fresh(&mut self, me: &ActorRef<AgentMsg>) {
        let id = self.resumed_with.take().unwrap_or_default();
        tracing::warn!(
            "task {}: conversation {id} could not be resumed; starting a fresh one",
            self.args.task_id
        );
        self.discard_process();
        self.claude_session = None;
        self.next_resume = Resume::Fresh;
        if let Some(turn) = self.turn.as_mut() {
            turn.step(
                "thinking.resume_failed_new_session",
                json!({"session_id": id, "reason": NO_CONVERSATION}),
            );
            turn.sent = false;
            self.start_spawn(me);
        }
    }

    fn remember_session(&mut self, id: &str) {
        if id.is_empty() || self.claude_session.as_deref() == Some(id) {
            return;
        }
        self.claude_session = Some(id.to_string());
        let (path, id) = (self.cwd.join(SESSION_ID_FILE), id.to_string());
        tokio::spawn(async move {
            if let Err(e) = tokio::fs::write(&path, id).await {
                tracing::warn!("cannot save Claude session id to {}: {e}", path.display());
            }
        });
    }

    fn on_interrupt(&mut self, me: &ActorRef<AgentMsg>) {
        let Some(turn) = self.turn.as_mut() else {
            return;
        };
        if turn.cancelled {
            return;
        }
        turn.cancelled = true;
        let p = turn.cancelled_event();
        self.throttle.reset();
        let sent = turn.sent;
        self.emit(p);
        if !sent {
            return self.end_turn(TaskStatus::Cancelled);
        }
        let req = json!({"type": "control_request", "request_id": format!("req_int_{}", self.gen),
                         "request": {"subtype": "interrupt"}});
        if let Some(p) = &self.proc {
            p.send_line(req.to_string());
        }
        let gen = self.gen;
        let t = me.send_after(self.args.cfg.claude.interrupt_timeout, move || {
            AgentMsg::InterruptTimeout { gen }
        });
        self.timers.arm(TimerKind::Interrupt, t);
    }

    fn on_process_gone(&mut self, me: &ActorRef<AgentMsg>) {
        let Some(p) = self.proc.take() else { return };
        self.tell_session(ProcessState::Ended);
        let exit = self.exited.unwrap_or(ExitInfo {
            code: None,
            signal: None,
        });
        tracing::info!(
            "task {}: Claude Code process {} ended ({exit})",
            self.args.task_id,
            p.pid()
        );
        self.ready = false;
        if self.turn.as_ref().is_some_and(|t| t.cancelled) {
            return self.end_turn(TaskStatus::Cancelled);
        }
        if let Some(turn) = self
            .turn
            .as_mut()
            .filter(|t| t.sent && !t.saw_output && !t.retried)
        {
            // The process died before it even started this turn (e.g. it exited right after
            // the previous result): run the turn once more on a fresh process.
            tracing::warn!(
                "task {}: the CLI exited before answering; retrying on a new process",
                self.args.task_id
            );
            turn.sent = false;
            turn.retried = true;
            return self.start_spawn(me);
        }
        let tail = p.stderr_tail();
        let mut msg = format!("Claude Code process exited unexpectedly ({exit})");
        if !tail.is_empty() {
            msg.push_str(": ");
            msg.push_str(&tail.join("\n"));
        }
        drop(p);
        self.fail_turn(&msg);
    }

    /// Ends the running turn with a `FAILED` callback (no-op without a turn).
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
        if let Some(turn) = self.turn.take() {
            let _ = self.args.session.cast(SessionMsg::TurnDone {
                subtask_id: turn.ctx.subtask_id,
                status,
            });
        }
    }

    fn tell_session(&self, state: ProcessState) {
        let _ = self.args.session.cast(SessionMsg::Process(state));
    }

    /// Ends an idle process to free memory; the next subtask resumes the conversation.
    fn suspend(&mut self, why: &str) {
        if self.turn.is_some() || self.proc.is_none() {
            return;
        }
        tracing::info!(
            "task {}: suspending the Claude Code process ({why}); the next subtask resumes",
            self.args.task_id
        );
        self.retire_process();
        self.tell_session(ProcessState::Suspended);
    }

    fn arm_watchdog(&mut self, me: &ActorRef<AgentMsg>) {
        let c = &self.args.cfg.claude;
        let Some(shortest) = [c.silence_timeout, c.tool_timeout, c.turn_timeout]
            .into_iter()
            .flatten()
            .min()
        else {
            return;
        };
        let tick = (shortest / 4).clamp(WATCHDOG_MIN_TICK, WATCHDOG_MAX_TICK);
        let (gen, turn) = (self.gen, self.turns_in_process);
        let t = me.send_after(tick, move || AgentMsg::Watchdog { gen, turn });
        self.timers.arm(TimerKind::Watchdog, t);
    }

    /// Tells a running tool (silence is normal) from a hung CLI, and enforces the turn limit;
    /// either failure ends the turn with its own reason and ends the process.
    fn watchdog(&mut self, me: &ActorRef<AgentMsg>) {
        let Some(turn) = self.turn.as_ref().filter(|t| t.sent && !t.cancelled) else {
            return;
        };
        let c = &self.args.cfg.claude;
        let (silent, age) = (self.last_output.elapsed(), self.turn_started.elapsed());
        let verdict = if c.turn_timeout.is_some_and(|limit| age > limit) {
            Some(format!(
                "the turn exceeded its time limit of {} s (TURN_TIMEOUT_SECS)",
                age.as_secs()
            ))
        } else if turn.tool_open() {
            c.tool_timeout.filter(|limit| silent > *limit).map(|limit| {
                format!(
                    "a tool ran for {} s without output (limit {} s, WATCHDOG_TOOL_SECS)",
                    silent.as_secs(),
                    limit.as_secs()
                )
            })
        } else {
            c.silence_timeout.filter(|limit| silent > *limit).map(|limit| {
                format!("Claude Code CLI gave no output for {} s with no tool running; it looks hung (limit {} s, WATCHDOG_SILENCE_SECS)", silent.as_secs(), limit.as_secs())
            })
        };
        match verdict {
            Some(reason) => {
                self.fail_turn(&reason);
                self.discard_process();
            }
            None => self.arm_watchdog(me),
        }
    }

    fn arm_idle_timer(&mut self, me: &ActorRef<AgentMsg>) {
        if let Some(idle) = self.args.cfg.claude.idle_timeout {
            let (gen, turns) = (self.gen, self.turns_in_process);
            let t = me.send_after(idle, move || AgentMsg::IdleDeadline { gen, turns });
            self.timers.arm(TimerKind::Idle, t);
        }
    }

    /// Drops the current process at once: its group gets SIGKILL (in `Drop`), its reaper still
    /// reaps it, and its remaining events are ignored.
    fn discard_process(&mut self) {
        self.gen += 1;
        self.ready = false;
        self.spawning = false;
        if self.proc.take().is_some() {
            self.tell_session(ProcessState::Ended);
        }
    }

    /// Lets the current process end gracefully in the background (its events are ignored).
    fn retire_process(&mut self) {
        self.gen += 1;
        self.ready = false;
        self.spawning = false;
        if let Some(mut p) = self.proc.take() {
            let stop = self.args.cfg.stop;
            tokio::spawn(async move {
                p.terminate(stop).await;
            });
        }
    }
}
