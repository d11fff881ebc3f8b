//! One Agno subtask as callbacks: the client's event lines mapped to the original's progress
//! points, thinking steps and final result (research/agno.md §1.3, §4.1).

use serde_json::{json, Value};

use crate::agent::seam::MAX_THINKING_STEPS;
use crate::mask::{mask_str, mask_value};
use crate::payload::{CallbackPayload, SubtaskContext, TaskStatus};

/// What one client line means for the turn (the outcome every process agent shares).
pub use crate::agent::process_core::TurnOutcome as AgnoOutcome;

/// State of the running subtask.
#[derive(Debug)]
pub struct AgnoTurn {
    /// Who callbacks are about.
    pub ctx: SubtaskContext,
    /// Tags the run's lines (`run_seq` of the protocol).
    pub run_seq: u64,
    /// The `run` line was written.
    pub sent: bool,
    /// A cancel arrived: the end is silent.
    pub cancelled: bool,
    /// More than one bot: a team.
    pub team: bool,
    content: String,
    reasoning: String,
    thinking: Vec<Value>,
    progress: u8,
    message: String,
    spans: crate::trace::TurnSpans,
}

impl crate::agent::process_core::AgentTurn for AgnoTurn {
    fn ctx(&self) -> &SubtaskContext {
        &self.ctx
    }
    fn sent(&self) -> bool {
        self.sent
    }
    fn is_cancelled(&self) -> bool {
        self.cancelled
    }
    fn mark_cancelled(&mut self) {
        self.cancelled = true;
    }
    fn failed(&mut self, message: &str) -> Box<CallbackPayload> {
        AgnoTurn::failed(self, message)
    }
    fn progress_event(&self) -> Box<CallbackPayload> {
        AgnoTurn::progress_event(self)
    }
}

impl AgnoTurn {
    /// A turn for a subtask run as run number `run_seq` of its client.
    pub fn new(ctx: SubtaskContext, run_seq: u64, team: bool) -> Self {
        let spans =
            crate::trace::TurnSpans::new(&ctx.trace.span, "Agno", ctx.task_id, ctx.subtask_id);
        Self {
            spans,
            ctx,
            run_seq,
            sent: false,
            cancelled: false,
            team,
            content: String::new(),
            reasoning: String::new(),
            thinking: Vec::new(),
            progress: 55,
            message: String::new(),
        }
    }

    /// A RUNNING event at `progress` with `message` and the state so far.
    pub fn running(&mut self, progress: u8, message: &str) -> Box<CallbackPayload> {
        self.progress = progress;
        self.message = message.to_string();
        self.progress_event()
    }

    /// The RUNNING event for the latest state.
    pub fn progress_event(&self) -> Box<CallbackPayload> {
        Box::new(self.ctx.payload(
            self.progress,
            TaskStatus::Running,
            self.message.clone(),
            Some(self.result(!self.content.is_empty())),
        ))
    }

    /// The terminal `FAILED` event for an error found outside the client's stream.
    pub fn failed(&mut self, message: &str) -> Box<CallbackPayload> {
        let message = mask_str(message);
        self.step("thinking.execution_failed", json!({"error": message}));
        Box::new(
            self.ctx
                .payload(100, TaskStatus::Failed, message, Some(self.result(false))),
        )
    }

    /// Interprets one event line of this turn's run.
    pub fn on_event(&mut self, ev: &Value) -> AgnoOutcome {
        let kind = ev.get("type").and_then(Value::as_str).unwrap_or("");
        let scope = ev.get("scope").and_then(Value::as_str).unwrap_or("agent");
        let text = |k: &str| ev.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        if self.cancelled {
            return match kind {
                "cancelled" | "completed" | "error" => {
                    AgnoOutcome::Finished(TaskStatus::Cancelled, None)
                }
                _ => AgnoOutcome::Ignore,
            };
        }
        match kind {
            "run_started" if scope != "member" => {
                self.progress = 75;
                self.message = if scope == "team" {
                    "${{thinking.team_execution_started}}".into()
                } else {
                    "${{thinking.agent_execution_started}}".into()
                };
                AgnoOutcome::Progress
            }
            "tool_started" => {
                let id = text("tool_call_id");
                let name = text("name");
                self.spans.tool_started(&id, &name);
                self.step(
                    "thinking.tool_use",
                    json!({"type": "assistant", "message": {"id": id, "type": "message",
                        "role": "assistant", "content": [{"type": "tool_use", "id": id,
                        "name": name, "input": ev.get("input").cloned().unwrap_or(json!({}))}]},
                        "agent": text("agent")}),
                );
                if scope == "member" {
                    return AgnoOutcome::Ignore;
                }
                self.progress = 80;
                self.message = if scope == "team" {
                    format!("${{{{thinking.team_using_tool}}}} {name}")
                } else {
                    format!("${{{{thinking.using_tool}}}} {name}")
                };
                AgnoOutcome::Progress
            }
            "tool_completed" => {
                self.spans.tool_finished(&text("tool_call_id"));
                self.step(
                    "thinking.tool_result",
                    json!({"type": "tool_result", "tool_use_id": text("tool_call_id"),
                           "content": ev.get("output").cloned().unwrap_or(Value::Null),
                           "is_error": ev.get("error").and_then(Value::as_bool).unwrap_or(false),
                           "agent": text("agent")}),
                );
                AgnoOutcome::Ignore
            }
            "content" => {
                self.content.push_str(&text("delta"));
                self.progress = 85;
                self.message = "${{thinking.generating_content}}".into();
                AgnoOutcome::Progress
            }
            "reasoning" => {
                self.reasoning.push_str(&text("delta"));
                let details = json!({"type": "reasoning", "content": self.reasoning});
                match self.thinking.last_mut() {
                    Some(last) if last["title"] == "thinking.model_reasoning" => {
                        let mut d = details;
                        mask_value(&mut d);
                        last["details"] = d;
                    }
                    _ => self.step("thinking.model_reasoning", details),
                }
                self.progress = 70;
                self.message = "${{thinking.model_reasoning}}".into();
                AgnoOutcome::Progress
            }
            "reasoning_step" => {
                let body = format!(
                    "{}\n\nAction: {}\nReasoning: {}\nConfidence: {}\nNext Action: {}",
                    text("title"),
                    text("action"),
                    text("reasoning"),
                    ev.get("confidence")
                        .map(|c| c.to_string())
                        .unwrap_or_default(),
                    text("next_action")
                );
                self.step(
                    "thinking.assistant_message_received",
                    json!({"type": "assistant", "message": {"role": "assistant",
                           "content": [{"type": "text", "text": body}]}}),
                );
                AgnoOutcome::Ignore
            }
            "mcp_error" => {
                self.step(
                    "thinking.mcp_init_fail",
                    json!({"server": text("server"), "error": text("message")}),
                );
                self.message = "Thinking: thinking.mcp_init_fail".into();
                AgnoOutcome::Progress
            }
            "completed" => {
                let final_text = text("content");
                if !final_text.is_empty() {
                    self.content = final_text;
                }
                let what = if self.team { "team" } else { "agent" };
                self.step(
                    "thinking.execution_completed",
                    json!({"metrics": ev.get("metrics").cloned().unwrap_or(Value::Null)}),
                );
                let mut result = self.result(true);
                if ev.get("silent_exit").and_then(Value::as_bool) == Some(true) {
                    crate::agent::silent_exit::mark(&mut result, &text("silent_exit_reason"));
                }
                let p = self.ctx.payload(
                    100,
                    TaskStatus::Completed,
                    format!("${{{{thinking.execution_completed}}}} {what} streaming execution"),
                    Some(result),
                );
                AgnoOutcome::Finished(TaskStatus::Completed, Some(Box::new(p)))
            }
            "cancelled" => AgnoOutcome::Finished(TaskStatus::Cancelled, None),
            "error" => {
                let message = mask_str(&format!(
                    "${{{{thinking.execution_failed}}}} {}: {}",
                    ev.get("where").and_then(Value::as_str).unwrap_or("agent"),
                    text("message")
                ));
                self.step("thinking.execution_failed", json!({"error": message}));
                let p =
                    self.ctx
                        .payload(100, TaskStatus::Failed, message, Some(self.result(false)));
                AgnoOutcome::Finished(TaskStatus::Failed, Some(Box::new(p)))
            }
            _ => AgnoOutcome::Ignore,
        }
    }

    /// Adds a thinking step (details masked); the list is bounded.
    pub fn step(&mut self, title: &str, mut details: Value) {
        mask_value(&mut details);
        if self.thinking.len() >= MAX_THINKING_STEPS {
            self.thinking.remove(0);
        }
        self.thinking
            .push(json!({"title": title, "next_action": "continue", "details": details}));
    }

    /// The original's `ExecutionResult`: value, thinking, reasoning content, blocks.
    fn result(&self, with_value: bool) -> Value {
        let mut r = json!({"thinking": self.thinking, "blocks": []});
        if with_value {
            r["value"] = json!(self.content);
        }
        if !self.reasoning.is_empty() {
            r["reasoning_content"] = json!(self.reasoning);
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RuntimeConfig;
    use crate::task::TaskSpec;

    fn turn() -> AgnoTurn {
        let spec = TaskSpec::from_value(&json!({"task_id": 1, "subtask_id": 2, "prompt": "x",
                                                "bot": [{"shell_type": "Agno"}]}))
        .unwrap();
        let cfg = RuntimeConfig::for_tests(std::env::temp_dir());
        AgnoTurn::new(SubtaskContext::new(&spec, &cfg), 1, false)
    }

    #[test]
    fn a_run_maps_to_the_original_progress_points() {
        let mut t = turn();
        assert!(matches!(
            t.on_event(&json!({"type": "run_started", "scope": "agent"})),
            AgnoOutcome::Progress
        ));
        assert_eq!(t.progress_event().progress, 75);
        t.on_event(
            &json!({"type": "tool_started", "scope": "agent", "tool_call_id": "call_1",
                           "name": "mul", "input": {"a": 2}}),
        );
        let p = t.progress_event();
        assert_eq!(p.progress, 80);
        assert_eq!(
            p.error_message.as_deref(),
            Some("${{thinking.using_tool}} mul")
        );
        t.on_event(&json!({"type": "tool_completed", "tool_call_id": "call_1", "output": "6"}));
        t.on_event(&json!({"type": "content", "delta": "Hel"}));
        t.on_event(&json!({"type": "content", "delta": "lo"}));
        let p = t.progress_event();
        assert_eq!(p.progress, 85);
        assert_eq!(p.result.as_ref().unwrap()["value"], "Hello");
        let AgnoOutcome::Finished(status, Some(p)) =
            t.on_event(&json!({"type": "completed", "content": "Hello"}))
        else {
            panic!("not finished")
        };
        assert_eq!(status, TaskStatus::Completed);
        let r = p.result.unwrap();
        assert_eq!(r["value"], "Hello");
        assert_eq!(r["blocks"], json!([]));
        let steps = r["thinking"].as_array().unwrap();
        assert_eq!(steps[0]["title"], "thinking.tool_use");
        assert_eq!(steps[0]["details"]["message"]["content"][0]["id"], "call_1");
        assert_eq!(steps[1]["details"]["tool_use_id"], "call_1");
    }

    #[test]
    fn cancelled_runs_end_silently_and_errors_fail() {
        let mut t = turn();
        t.cancelled = true;
        assert!(matches!(
            t.on_event(&json!({"type": "completed"})),
            AgnoOutcome::Finished(TaskStatus::Cancelled, None)
        ));
        let mut t = turn();
        let AgnoOutcome::Finished(TaskStatus::Failed, Some(p)) =
            t.on_event(&json!({"type": "error", "where": "model", "message": "boom"}))
        else {
            panic!()
        };
        assert_eq!(
            p.error_message.as_deref(),
            Some("${{thinking.execution_failed}} model: boom")
        );
    }
}
