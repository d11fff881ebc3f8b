//! One subtask's turn with the Claude Code CLI: stream-json lines in, contract callbacks out
//! (contract §4.4: 55/60 start, 75 per message, 100 terminal).

use serde_json::{json, Value};

use super::protocol::{Block, CliMessage, CliResult};
use crate::mask::{mask_str, mask_value};
use crate::payload::{CallbackPayload, SubtaskContext, TaskStatus};

pub use crate::agent::seam::{CANCEL_MESSAGE, MAX_THINKING_STEPS};

/// Message of every running event from the agent's start-up (contract §4.4).
pub const INIT_MESSAGE: &str = "${{thinking.initialize_agent}}";

/// What a stdout line means for the turn (the outcome every process agent shares).
pub use crate::agent::process_core::TurnOutcome as LineOutcome;

/// A subtask being run by the CLI.
#[derive(Debug)]
pub struct Turn {
    /// Who callbacks are about.
    pub ctx: SubtaskContext,
    /// The text written to the CLI.
    pub prompt: String,
    /// True once the user line has been written.
    pub sent: bool,
    /// True after a cancel: progress is no longer reported and the end is silent.
    pub cancelled: bool,
    /// True once the CLI wrote anything for this turn.
    pub saw_output: bool,
    /// True once the turn was re-sent to a new process (done at most once).
    pub retried: bool,
    /// The workbench sent with every event (contract §4.3, Claude only).
    pub workbench: Option<crate::workspace::workbench::Workbench>,
    spans: crate::trace::TurnSpans,
    last_title: String,
    thinking: Vec<Value>,
    /// A tool result carried the silent-exit marker (its reason).
    silent_exit: Option<String>,
}

impl crate::agent::process_core::AgentTurn for Turn {
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
        Turn::failed(self, message)
    }
    fn progress_event(&self) -> Box<CallbackPayload> {
        Turn::progress_event(self)
    }
}

impl Turn {
    /// A turn that has not been sent yet.
    pub fn new(ctx: SubtaskContext, prompt: String) -> Self {
        let spans = crate::trace::TurnSpans::new(
            &ctx.trace.span,
            "ClaudeCode",
            ctx.task_id,
            ctx.subtask_id,
        );
        Self {
            spans,
            ctx,
            prompt,
            sent: false,
            cancelled: false,
            saw_output: false,
            retried: false,
            workbench: None,
            last_title: String::new(),
            thinking: Vec::new(),
            silent_exit: None,
        }
    }

    /// A running event with the thinking so far.
    pub fn running(&self, progress: u8, message: &str) -> Box<CallbackPayload> {
        Box::new(self.ctx.payload(
            progress,
            TaskStatus::Running,
            message,
            Some(self.result(None, "running")),
        ))
    }

    /// The terminal `FAILED` event for an error found outside the stream.
    pub fn failed(&mut self, message: &str) -> Box<CallbackPayload> {
        let message = &mask_str(message);
        self.step("thinking.task_execution_failed", json!({"error": message}));
        Box::new(self.ctx.payload(
            100,
            TaskStatus::Failed,
            message,
            Some(self.result(None, "failed")),
        ))
    }

    /// The terminal `CANCELLED` event.
    pub fn cancelled_event(&self) -> Box<CallbackPayload> {
        Box::new(
            self.ctx
                .payload(100, TaskStatus::Cancelled, CANCEL_MESSAGE, None),
        )
    }

    /// The stream-json user line for this turn.
    pub fn user_line(&self) -> String {
        super::protocol::user(&self.prompt)
    }

    /// Interprets one message from the CLI's stdout.
    pub fn on_message(&mut self, msg: &Value) -> LineOutcome {
        self.saw_output = true;
        match super::protocol::message(msg) {
            CliMessage::System => self.progress("thinking.system_message_received", msg.clone()),
            CliMessage::Assistant(blocks) => {
                self.track_tools(&blocks, false);
                if let Some(wb) = self.workbench.as_mut() {
                    for b in &blocks {
                        if let Block::Text { text } = b {
                            wb.set_text(text);
                        }
                    }
                }
                self.progress("thinking.assistant_message_received", message_details(msg))
            }
            CliMessage::User(blocks) => {
                self.track_tools(&blocks, true);
                self.progress("thinking.user_message_received", message_details(msg))
            }
            CliMessage::Result(r) => self.finish(msg, r),
            CliMessage::Other => LineOutcome::Ignore,
        }
    }

    /// True while a tool the model called has not returned (long silence is normal then).
    pub fn tool_open(&self) -> bool {
        self.spans.tools_open()
    }

    /// Tool calls (in the model's messages) open a tool span, tool results (in user messages)
    /// close it and may carry a silent exit.
    fn track_tools(&mut self, blocks: &[Block], from_user: bool) {
        for b in blocks {
            match b {
                Block::ToolUse { id, name } if !from_user => self.spans.tool_started(id, name),
                Block::ToolResult {
                    tool_use_id,
                    content,
                } if from_user => {
                    self.spans.tool_finished(tool_use_id);
                    if self.silent_exit.is_none() {
                        self.silent_exit = crate::agent::silent_exit::detect_in_content(content);
                    }
                }
                _ => {}
            }
        }
    }

    fn progress(&mut self, title: &str, details: Value) -> LineOutcome {
        if self.cancelled {
            return LineOutcome::Ignore;
        }
        self.step(title, details);
        self.last_title.clear();
        self.last_title.push_str(title);
        LineOutcome::Progress
    }

    /// The RUNNING event for the latest message (progress 75, contract §4.4).
    pub fn progress_event(&self) -> Box<CallbackPayload> {
        self.running(75, &format!("Thinking: {}", self.last_title))
    }

    fn finish(&mut self, msg: &Value, r: CliResult) -> LineOutcome {
        if self.cancelled {
            return LineOutcome::Finished(TaskStatus::Cancelled, None);
        }
        let failed = r.failed();
        let CliResult {
            subtype,
            result: text,
            errors,
            ..
        } = r;
        let details = result_details(msg);
        if failed {
            self.step("thinking.task_execution_failed", details);
            let message = text
                .filter(|t| !t.is_empty())
                .or_else(|| (!errors.is_empty()).then(|| errors.join("; ")))
                .unwrap_or_else(|| format!("Task ended: {subtype}"));
            let message = mask_str(&message);
            let p = self.ctx.payload(
                100,
                TaskStatus::Failed,
                message,
                Some(self.result(None, "failed")),
            );
            return LineOutcome::Finished(TaskStatus::Failed, Some(Box::new(p)));
        }
        self.step("thinking.task_execution_success", details);
        let value = text.unwrap_or_default();
        let message = if value.is_empty() {
            "No result".to_string()
        } else {
            value.clone()
        };
        let mut result = self.result(Some(value), "completed");
        if let Some(reason) = &self.silent_exit {
            crate::agent::silent_exit::mark(&mut result, reason);
        }
        let p = self
            .ctx
            .payload(100, TaskStatus::Completed, message, Some(result));
        LineOutcome::Finished(TaskStatus::Completed, Some(Box::new(p)))
    }

    /// Adds a thinking step (pub for notices such as a resume fallback); details are masked.
    pub fn step(&mut self, title: &str, mut details: Value) {
        mask_value(&mut details);
        truncate_strings(&mut details);
        if self.thinking.len() >= MAX_THINKING_STEPS {
            self.thinking.remove(0);
        }
        self.thinking
            .push(json!({"title": title, "next_action": "continue", "details": details}));
    }

    fn result(&self, value: Option<String>, status: &str) -> Value {
        let mut r = json!({"thinking": self.thinking});
        if let Some(wb) = &self.workbench {
            r["workbench"] = wb.to_value(status);
        }
        if let Some(v) = value {
            r["value"] = Value::String(v);
        }
        r
    }
}

/// Longest string kept in a thinking step's details; callbacks repeat the whole thinking list,
/// so one huge tool output must not be resent in full with every event.
pub const MAX_DETAIL_CHARS: usize = 64 * 1024;

fn truncate_strings(v: &mut Value) {
    match v {
        Value::String(s) if s.len() > MAX_DETAIL_CHARS => {
            let mut cut = MAX_DETAIL_CHARS;
            while !s.is_char_boundary(cut) {
                cut -= 1;
            }
            let dropped = s.len() - cut;
            s.truncate(cut);
            s.push_str(&format!("… [{dropped} bytes truncated]"));
        }
        Value::Array(items) => items.iter_mut().for_each(truncate_strings),
        Value::Object(map) => map.values_mut().for_each(truncate_strings),
        _ => {}
    }
}

/// Claude message details as the original reports them: type, role, model and content blocks.
fn message_details(msg: &Value) -> Value {
    let m = msg.get("message").cloned().unwrap_or(Value::Null);
    json!({
        "type": msg.get("type"),
        "message": {
            "id": m.get("id").cloned().unwrap_or(Value::String(String::new())),
            "type": "message",
            "role": m.get("role"),
            "model": m.get("model"),
            "content": m.get("content"),
        },
        "parent_tool_use_id": msg.get("parent_tool_use_id"),
    })
}

fn result_details(msg: &Value) -> Value {
    let keys = [
        "type",
        "subtype",
        "stop_reason",
        "is_error",
        "session_id",
        "num_turns",
        "duration_ms",
        "duration_api_ms",
        "total_cost_usd",
        "usage",
        "result",
    ];
    Value::Object(
        keys.iter()
            .filter_map(|k| msg.get(*k).map(|v| (k.to_string(), v.clone())))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turn() -> Turn {
        let ctx = SubtaskContext {
            task_id: 1,
            subtask_id: 2,
            task_title: "t".into(),
            subtask_title: "s".into(),
            task_type: None,
            executor_name: None,
            executor_namespace: None,
            trace: Default::default(),
            protocol: Default::default(),
        };
        Turn::new(ctx, "hi".into())
    }

    #[test]
    fn success_sequence() {
        let mut t = turn();
        let LineOutcome::Progress =
            t.on_message(&json!({"type": "system", "subtype": "init", "session_id": "abc"}))
        else {
            panic!()
        };
        let p = t.progress_event();
        assert_eq!(
            (p.progress, p.error_message.as_deref()),
            (75, Some("Thinking: thinking.system_message_received"))
        );
        let LineOutcome::Finished(TaskStatus::Completed, Some(p)) = t.on_message(
            &json!({"type": "result", "subtype": "success", "is_error": false, "result": "done"}),
        ) else {
            panic!()
        };
        assert_eq!(p.progress, 100);
        assert_eq!(p.result.as_ref().unwrap()["value"], "done");
        assert_eq!(
            p.result.as_ref().unwrap()["thinking"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn api_error_with_success_subtype_fails() {
        let mut t = turn();
        let out = t.on_message(&json!({"type": "result", "subtype": "success", "is_error": true, "result": "API Error: 500"}));
        let LineOutcome::Finished(TaskStatus::Failed, Some(p)) = out else {
            panic!()
        };
        assert_eq!(p.error_message.as_deref(), Some("API Error: 500"));
    }

    #[test]
    fn error_subtype_without_text_uses_errors() {
        let mut t = turn();
        let out = t.on_message(&json!({"type": "result", "subtype": "error_max_turns", "is_error": true,
                                       "result": null, "errors": ["Reached maximum number of turns (1)"]}));
        let LineOutcome::Finished(TaskStatus::Failed, Some(p)) = out else {
            panic!()
        };
        assert_eq!(
            p.error_message.as_deref(),
            Some("Reached maximum number of turns (1)")
        );
    }

    #[test]
    fn cancelled_turn_is_silent() {
        let mut t = turn();
        t.cancelled = true;
        assert_eq!(
            t.on_message(&json!({"type": "assistant", "message": {}})),
            LineOutcome::Ignore
        );
        assert_eq!(
            t.on_message(
                &json!({"type": "result", "subtype": "error_during_execution", "is_error": true})
            ),
            LineOutcome::Finished(TaskStatus::Cancelled, None)
        );
    }

    #[test]
    fn huge_details_are_truncated() {
        let mut t = turn();
        let big = "x".repeat(MAX_DETAIL_CHARS * 3);
        t.on_message(
            &json!({"type": "assistant", "message": {"content": [{"type": "text", "text": big}]}}),
        );
        let p = t.running(75, "x");
        let text = p.result.unwrap()["thinking"][0]["details"]["message"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(text.len() < MAX_DETAIL_CHARS + 100 && text.ends_with("bytes truncated]"));
    }

    #[test]
    fn open_tools_are_tracked() {
        let mut t = turn();
        t.on_message(&json!({"type": "assistant", "message": {"content": [{"type": "tool_use", "id": "t1", "name": "Bash"}]}}));
        assert!(t.tool_open());
        t.on_message(&json!({"type": "user", "message": {"content": [{"type": "tool_result", "tool_use_id": "t1"}]}}));
        assert!(!t.tool_open());
    }

    #[test]
    fn thinking_is_bounded() {
        let mut t = turn();
        for _ in 0..(MAX_THINKING_STEPS + 10) {
            t.on_message(&json!({"type": "assistant", "message": {}}));
        }
        let p = t.running(75, "x");
        assert_eq!(
            p.result.unwrap()["thinking"].as_array().unwrap().len(),
            MAX_THINKING_STEPS
        );
    }
}
