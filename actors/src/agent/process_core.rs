//! The shared core of agents that drive a child process (Claude Code's CLI, the agno client):
//! the process and its generation, its [`Phase`], the pipes of an exited process draining, the
//! running turn and how it ends (emit, fail, end, the "turn while another runs" guard, cancel),
//! the progress throttle, and the timers. Each agent keeps only what differs: how it starts its
//! process, what it writes, how it reads lines.
//!
//! Generations: every started process gets a new `gen`; events, timers and spawn results carry
//! the `gen` they are about, and the agent ignores those of a retired process.

use std::time::{Duration, Instant};

use ractor::concurrency::JoinHandle;
use ractor::MessagingErr;

use super::process::{AgentProcess, ExitInfo, ProcessEvent};
use super::seam::{AgentArgs, ProcessState};
use super::throttle::{Admit, ProgressThrottle};
use super::timers::{TimerKind, Timers};
use crate::callback::CallbackMsg;
use crate::payload::{CallbackPayload, SubtaskContext, TaskStatus};

/// After a process exits, how long its pipes may stay open (held by a grandchild) before the
/// process counts as gone anyway.
pub const PIPE_DRAIN_TIMEOUT: Duration = Duration::from_millis(500);

/// What one line of the agent's process means for the running turn.
#[derive(Debug, PartialEq)]
pub enum TurnOutcome {
    /// Nothing to report (not JSON, or a kind not relayed).
    Ignore,
    /// A progress event is due; it is built only when it will really be sent (a flood of lines
    /// must not build a payload each), through [`AgentTurn::progress_event`].
    Progress,
    /// The turn ended; the payload is its terminal callback (absent for a cancelled turn).
    Finished(TaskStatus, Option<Box<CallbackPayload>>),
}

/// Where the agent's process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// No process (never started, ended, discarded or retired).
    Down,
    /// A start (spawn, or a claim from a pool) is under way.
    Starting,
    /// Started, not ready for a turn yet (Claude's `initialize`, agno's `ready`).
    Warming,
    /// Ready: a turn can be sent.
    Ready,
}

/// The running subtask of an agent, as the core needs it.
pub trait AgentTurn {
    /// Who callbacks are about.
    fn ctx(&self) -> &SubtaskContext;
    /// Whether it was written to the process.
    fn sent(&self) -> bool;
    /// Whether a cancel arrived (its end is then silent).
    fn is_cancelled(&self) -> bool;
    /// Marks it cancelled.
    fn mark_cancelled(&mut self);
    /// The terminal `FAILED` event for an error found outside the stream.
    fn failed(&mut self, message: &str) -> Box<CallbackPayload>;
    /// The RUNNING event for the latest state.
    fn progress_event(&self) -> Box<CallbackPayload>;
}

/// The shared core; see the module docs. `T` is the agent's turn, `M` its message type.
pub struct ProcessCore<T, M> {
    /// What every agent is started with.
    pub args: AgentArgs,
    /// What the logs call the process ("Claude Code process", "agno client").
    what: &'static str,
    /// The process, while there is one.
    pub proc: Option<AgentProcess>,
    /// Generation of the current (or next) process.
    pub gen: u64,
    /// Where the process is.
    pub phase: Phase,
    /// How the current process is ending.
    exit: Exit,
    /// The running subtask.
    pub turn: Option<T>,
    /// Spaces out progress callbacks.
    pub throttle: ProgressThrottle,
    /// The agent's pending timers.
    pub timers: Timers<M>,
}

/// The end of a process: it counts as gone once it exited and its pipes closed.
#[derive(Debug, Default, Clone, Copy)]
struct Exit {
    stdout_closed: bool,
    stderr_closed: bool,
    status: Option<ExitInfo>,
}

/// What a pipe event came to, for the agent.
pub enum PipeStep {
    /// A line of stdout to read.
    Line(String),
    /// Nothing more to do.
    Nothing,
    /// The process is gone (exited, pipes drained): it was taken out of the core, with how
    /// it exited; the agent decides what that means for its turn.
    Gone(AgentProcess, ExitInfo),
}

impl<T: AgentTurn, M> ProcessCore<T, M> {
    /// A core without a process. `what` names the process in logs.
    pub fn new(args: AgentArgs, what: &'static str) -> Self {
        Self {
            args,
            what,
            proc: None,
            gen: 0,
            phase: Phase::Down,
            exit: Exit::default(),
            turn: None,
            throttle: ProgressThrottle::default(),
            timers: Timers::default(),
        }
    }

    /// The task this agent serves.
    pub fn task_id(&self) -> i64 {
        self.args.task_id
    }

    /// Sends one callback.
    pub fn emit(&self, p: Box<CallbackPayload>) {
        let _ = self.args.callbacks.cast(CallbackMsg::Send(p));
    }

    /// Refuses `new` when a turn already runs (the session sends one at a time, so this is a
    /// bug elsewhere): `new` fails, the running one goes on. True when refused.
    pub fn refuse_if_busy(&self, new: &mut T) -> bool {
        if self.turn.is_none() {
            return false;
        }
        tracing::error!(
            "task {}: a turn arrived while another runs; refusing it",
            self.task_id()
        );
        self.emit(new.failed("internal error: the agent is busy with another subtask"));
        true
    }

    /// Ends the running turn with a `FAILED` callback (no-op without a turn).
    pub fn fail_turn(&mut self, message: &str) {
        let Some(turn) = self.turn.as_mut() else {
            return;
        };
        tracing::warn!(
            "task {}: subtask {} failed: {message}",
            self.args.task_id,
            turn.ctx().subtask_id
        );
        let p = turn.failed(message);
        self.emit(p);
        self.end_turn(TaskStatus::Failed);
    }

    /// Ends the running turn (its terminal callback was sent) and tells the session.
    pub fn end_turn(&mut self, status: TaskStatus) {
        self.throttle.reset();
        if let Some(turn) = self.turn.take() {
            self.args.session.turn_done(turn.ctx().subtask_id, status);
        }
    }

    /// Cancels the running turn: its `CANCELLED` callback goes out now, progress stops.
    /// Returns whether the turn had been written to the process (then the agent asks the
    /// process to stop it and arms [`TimerKind::Interrupt`]); an unsent turn ends here.
    /// `None` when there is nothing to cancel.
    pub fn cancel_turn(&mut self) -> Option<bool> {
        let turn = self.turn.as_mut().filter(|t| !t.is_cancelled())?;
        turn.mark_cancelled();
        let p = Box::new(turn.ctx().payload(
            100,
            TaskStatus::Cancelled,
            super::seam::CANCEL_MESSAGE,
            None,
        ));
        let sent = turn.sent();
        self.throttle.reset();
        self.emit(p);
        if !sent {
            self.end_turn(TaskStatus::Cancelled);
        }
        Some(sent)
    }

    /// Whether the running turn was cancelled.
    pub fn turn_cancelled(&self) -> bool {
        self.turn.as_ref().is_some_and(AgentTurn::is_cancelled)
    }

    /// Tells the session the process's new state.
    pub fn tell_session(&self, state: ProcessState) {
        self.args.session.process(state);
    }

    /// Keeps a newly started process (generation [`Self::gen`]), `ready` or still warming up,
    /// and tells the session.
    pub fn adopt(&mut self, process: AgentProcess, ready: bool) {
        process.hold(self.args.live.acquire());
        self.proc = Some(process);
        self.phase = if ready { Phase::Ready } else { Phase::Warming };
        self.exit = Exit::default();
        self.tell_session(ProcessState::Started);
    }

    /// Starts a new generation for a process start under way.
    pub fn begin_start(&mut self) -> u64 {
        self.gen += 1;
        self.phase = Phase::Starting;
        self.gen
    }

    /// Drops the current process at once: its group gets SIGKILL (in `Drop`), its reaper
    /// still reaps it, and its remaining events are ignored.
    pub fn discard_process(&mut self) {
        self.gen += 1;
        self.phase = Phase::Down;
        if self.proc.take().is_some() {
            self.tell_session(ProcessState::Ended);
        }
    }

    /// Lets the current process end gracefully in the background (stdin EOF, then signals);
    /// its events are ignored.
    pub fn retire_process(&mut self) {
        self.gen += 1;
        self.phase = Phase::Down;
        if let Some(mut p) = self.proc.take() {
            let stop = self.args.cfg.stop;
            tokio::spawn(async move {
                p.terminate(stop).await;
            });
        }
    }

    /// Ends an idle process to free memory; the next subtask resumes the conversation.
    pub fn suspend(&mut self, why: &str) {
        if self.turn.is_some() || self.proc.is_none() {
            return;
        }
        tracing::info!(
            "task {}: suspending the {} ({why}); the next subtask resumes",
            self.task_id(),
            self.what
        );
        self.retire_process();
        self.tell_session(ProcessState::Suspended);
    }

    /// Follows the process's pipes. `wait_stderr` says whether the process counts as gone
    /// only once stderr closed too; `drain` builds the message the drain deadline sends.
    pub fn on_pipe(
        &mut self,
        event: ProcessEvent,
        wait_stderr: bool,
        arm_drain: impl FnOnce(u64) -> JoinHandle<Result<(), MessagingErr<M>>>,
    ) -> PipeStep {
        match event {
            ProcessEvent::Line(line) => return PipeStep::Line(line),
            ProcessEvent::StdoutFailed(reason) => {
                self.fail_turn(&reason);
                self.discard_process();
                return PipeStep::Nothing;
            }
            ProcessEvent::StdoutClosed => self.exit.stdout_closed = true,
            ProcessEvent::StderrClosed => self.exit.stderr_closed = true,
            ProcessEvent::Exited(info) => {
                self.exit.status = Some(info);
                let t = arm_drain(self.gen);
                self.timers.arm(TimerKind::Drain, t);
            }
        }
        let drained = self.exit.stdout_closed && (self.exit.stderr_closed || !wait_stderr);
        if drained && self.exit.status.is_some() {
            return self.gone();
        }
        PipeStep::Nothing
    }

    /// The process counts as gone (exited and drained, or its drain deadline passed).
    pub fn gone(&mut self) -> PipeStep {
        let Some(p) = self.proc.take() else {
            return PipeStep::Nothing;
        };
        self.timers.cancel(TimerKind::Drain);
        self.phase = Phase::Down;
        self.tell_session(ProcessState::Ended);
        let exit = self.exit.status.unwrap_or(ExitInfo {
            code: None,
            signal: None,
        });
        tracing::info!(
            "task {}: {} {} ended ({exit})",
            self.task_id(),
            self.what,
            p.pid()
        );
        PipeStep::Gone(p, exit)
    }

    /// Sends the turn's progress now, or arms [`TimerKind::Flush`] with the message `flush`
    /// builds when the throttle defers it.
    pub fn progress(
        &mut self,
        arm_flush: impl FnOnce(Duration) -> JoinHandle<Result<(), MessagingErr<M>>>,
    ) {
        match self.throttle.admit(Instant::now()) {
            Admit::Now => {
                if let Some(turn) = &self.turn {
                    self.emit(turn.progress_event());
                }
            }
            Admit::Defer(Some(after)) => {
                let t = arm_flush(after);
                self.timers.arm(TimerKind::Flush, t);
            }
            Admit::Defer(None) => {}
        }
    }

    /// The deferred progress event may go out now (the flush timer fired).
    pub fn flush(&mut self) {
        if self.throttle.flush(Instant::now()) {
            if let Some(turn) = self.turn.as_ref().filter(|t| !t.is_cancelled()) {
                self.emit(turn.progress_event());
            }
        }
    }

    /// Ends the turn a line finished: its terminal callback (if any) goes out first.
    pub fn finish(&mut self, status: TaskStatus, p: Option<Box<CallbackPayload>>) {
        if let Some(p) = p {
            self.emit(p);
        }
        self.end_turn(status);
    }

    /// Ends the process when the agent stops (`post_stop`).
    pub async fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            let how = p.terminate(self.args.cfg.stop).await;
            tracing::info!(
                "task {}: {} {} stopped ({how:?})",
                self.task_id(),
                self.what,
                p.pid()
            );
        }
    }
}
