//! The end of turns and processes: failures, suspension, the liveness watchdog and timers.

use ractor::ActorRef;

use super::*;
use crate::agent::process::{AgentProcess, ExitInfo};

impl ClaudeState {
    pub(super) fn on_process_gone(&mut self, me: &ActorRef<AgentMsg>) {
        if let PipeStep::Gone(p, exit) = self.core.gone() {
            self.after_exit(me, p, exit);
        }
    }

    /// The process is gone: what that means for the running turn.
    pub(super) fn after_exit(&mut self, me: &ActorRef<AgentMsg>, p: AgentProcess, exit: ExitInfo) {
        if self.core.turn_cancelled() {
            return self.end_turn(TaskStatus::Cancelled);
        }
        if let Some(turn) = self
            .core
            .turn
            .as_mut()
            .filter(|t| t.sent && !t.saw_output && !t.retried)
        {
            // The process died before it even started this turn (e.g. it exited right after
            // the previous result): run the turn once more on a fresh process.
            tracing::warn!(
                "task {}: the CLI exited before answering; retrying on a new process",
                self.core.args.task_id
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
    pub(super) fn fail_turn(&mut self, message: &str) {
        self.stop_monitor();
        self.core.fail_turn(message);
    }

    pub(super) fn end_turn(&mut self, status: TaskStatus) {
        self.stop_monitor();
        self.core.end_turn(status);
    }

    pub(super) fn stop_monitor(&mut self) {
        if let Some(stop) = self.monitor.take() {
            stop.cancel();
        }
    }

    /// Ends an idle process to free memory; the next subtask resumes the conversation.
    pub(super) fn suspend(&mut self, why: &str) {
        self.core.suspend(why);
    }

    pub(super) fn arm_watchdog(&mut self, me: &ActorRef<AgentMsg>) {
        let c = &self.core.args.cfg.claude;
        let Some(shortest) = [c.silence_timeout, c.tool_timeout, c.turn_timeout]
            .into_iter()
            .flatten()
            .min()
        else {
            return;
        };
        let tick = (shortest / 4).clamp(WATCHDOG_MIN_TICK, WATCHDOG_MAX_TICK);
        let (gen, turn) = (self.core.gen, self.turns_in_process);
        let t = me.send_after(tick, move || AgentMsg::Watchdog { gen, turn });
        self.core.timers.arm(TimerKind::Watchdog, t);
    }

    /// Tells a running tool (silence is normal) from a hung CLI, and enforces the turn limit;
    /// either failure ends the turn with its own reason and ends the process.
    pub(super) fn watchdog(&mut self, me: &ActorRef<AgentMsg>) {
        let Some(turn) = self.core.turn.as_ref().filter(|t| t.sent && !t.cancelled) else {
            return;
        };
        let c = &self.core.args.cfg.claude;
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

    pub(super) fn arm_idle_timer(&mut self, me: &ActorRef<AgentMsg>) {
        if let Some(idle) = self.core.args.cfg.agent_idle_timeout {
            let (gen, turns) = (self.core.gen, self.turns_in_process);
            let t = me.send_after(idle, move || AgentMsg::IdleDeadline { gen, turns });
            self.core.timers.arm(TimerKind::Idle, t);
        }
    }

    /// Drops the current process at once (SIGKILL to its group); its events are ignored.
    pub(super) fn discard_process(&mut self) {
        self.core.discard_process();
    }

    /// Lets the current process end gracefully in the background (its events are ignored).
    pub(super) fn retire_process(&mut self) {
        self.core.retire_process();
    }
}
