//! The Responses-API encoder: turns the agents' status payloads of one subtask into the events
//! Wegent's current backend reads (research/responses-protocol.md §2): `response.created`
//! first, then `response.output_text.delta` / `response.reasoning_summary_text.delta` (with
//! `offset`) and `response.block.created` / `response.block.updated` as the agent reports new
//! steps, and exactly one terminal — `response.completed`, `error` or `response.incomplete`.
//! Never `response.failed` (the backend ignores it).
//!
//! The agents report cumulative state (every `RUNNING` payload repeats the thinking steps so
//! far, Agno's also the answer so far), so the encoder keeps, per subtask, how much of that it
//! has already turned into events, and emits only what is new.

use std::collections::HashMap;

use serde_json::{json, Map, Value};

use super::ResponsesIdentity;
use crate::agent::seam::MAX_THINKING_STEPS;
use crate::payload::{CallbackPayload, TaskStatus};

/// Longest text delta, in characters (upstream's `WEGENT_EXECUTOR_STREAM_CHUNK_CHARS` default).
pub const TEXT_CHUNK_CHARS: usize = 256;
/// Longest reasoning delta, in characters (upstream's reasoning chunk default).
pub const REASONING_CHUNK_CHARS: usize = 4096;
/// The terminal event types; exactly one of them ends a subtask.
pub const TERMINAL_EVENTS: &[&str] = &["response.completed", "error", "response.incomplete"];
/// `error.code` of every failure the executor reports (upstream's Rust executor uses only this).
pub const ERROR_CODE: &str = "runtime_error";

/// One encoded event: its type and its `data` object.
pub type Event = (&'static str, Value);

/// Per-subtask encoder state.
#[derive(Debug)]
pub struct ResponsesEncoder {
    response_id: String,
    created_at: u64,
    created: bool,
    text_offset: usize,
    reasoning_offset: usize,
    steps_seen: usize,
    last_step: Option<Value>,
    /// Tool blocks announced, and whether each was closed.
    blocks: HashMap<String, bool>,
}

impl Default for ResponsesEncoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ResponsesEncoder {
    /// The state of a subtask whose `response.created` is still to be sent.
    pub fn new() -> Self {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Self {
            // 24 hex digits like upstream's `resp_<24 hex>` (nanoseconds since the epoch).
            response_id: format!("resp_{:024x}", now.as_nanos()),
            created_at: now.as_secs(),
            created: false,
            text_offset: 0,
            reasoning_offset: 0,
            steps_seen: 0,
            last_step: None,
            blocks: HashMap::new(),
        }
    }

    /// The state of a subtask whose `response.created` went out in an earlier run of the
    /// executor (its terminal is all that is left to send).
    pub fn resumed() -> Self {
        Self {
            created: true,
            ..Self::new()
        }
    }

    /// The events one payload of the subtask amounts to (possibly none), in order.
    pub fn encode(&mut self, p: &CallbackPayload, id: &ResponsesIdentity) -> Vec<Event> {
        let mut out = Vec::new();
        if !self.created {
            self.created = true;
            out.push(("response.created", self.created_event(id)));
        }
        let empty = Value::Null;
        let result = p.result.as_ref().unwrap_or(&empty);
        self.new_steps(result, p.subtask_id, id, &mut out);
        if id.shell_type != "claudecode" {
            // Agents that report their answer and reasoning as growing text (Agno).
            if let Some(r) = result.get("reasoning_content").and_then(Value::as_str) {
                self.reasoning_tail(r, p.subtask_id, &mut out);
            }
            if let Some(v) = result.get("value").and_then(Value::as_str) {
                self.text_tail(v, p.subtask_id, &mut out);
            }
        }
        match p.status {
            TaskStatus::Running => {}
            TaskStatus::Completed => {
                let text = result.get("value").and_then(Value::as_str).unwrap_or("");
                if self.text_offset == 0 && !text.is_empty() {
                    self.text(text, p.subtask_id, &mut out);
                }
                out.push(("response.completed", self.completed(text, p.subtask_id, id)));
            }
            TaskStatus::Failed => out.push(("error", error_data(p.error_message.as_deref()))),
            TaskStatus::Cancelled => out.push(("response.incomplete", self.incomplete(id))),
        }
        out
    }

    fn response(&self, id: &ResponsesIdentity, status: &str) -> Map<String, Value> {
        let mut r = Map::new();
        r.insert("id".into(), json!(self.response_id));
        r.insert("object".into(), json!("response"));
        r.insert("created_at".into(), json!(self.created_at));
        r.insert("model".into(), json!(id.model));
        r.insert("status".into(), json!(status));
        r.insert("output".into(), json!([]));
        r
    }

    fn created_event(&self, id: &ResponsesIdentity) -> Value {
        json!({"type": "response.created", "shell_type": id.shell_type,
               "response": self.response(id, "in_progress")})
    }

    fn completed(&self, text: &str, subtask_id: i64, id: &ResponsesIdentity) -> Value {
        let mut r = self.response(id, "completed");
        r.insert("usage".into(), Value::Null);
        r.insert("stop_reason".into(), json!("end_turn"));
        r.insert(
            "output".into(),
            json!([{"type": "message", "id": item_id(subtask_id), "status": "completed",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": text, "annotations": []}]}]),
        );
        json!({"type": "response.completed", "response": r})
    }

    fn incomplete(&self, id: &ResponsesIdentity) -> Value {
        let mut r = self.response(id, "cancelled");
        r.insert(
            "error".into(),
            json!({"code": "cancelled", "message": "Task cancelled"}),
        );
        json!({"type": "response.incomplete", "response": r})
    }

    /// The thinking steps added since the last payload. The list is cumulative but bounded
    /// (oldest dropped at [`MAX_THINKING_STEPS`]); past the bound the last step seen is found
    /// again by value.
    fn new_steps(
        &mut self,
        result: &Value,
        sub: i64,
        id: &ResponsesIdentity,
        out: &mut Vec<Event>,
    ) {
        let Some(steps) = result.get("thinking").and_then(Value::as_array) else {
            return;
        };
        let start = if steps.len() < MAX_THINKING_STEPS && self.steps_seen <= steps.len() {
            self.steps_seen
        } else {
            match &self.last_step {
                Some(last) => steps
                    .iter()
                    .rposition(|s| s == last)
                    .map_or(steps.len(), |i| i + 1),
                None => 0,
            }
        };
        for step in &steps[start.min(steps.len())..] {
            self.step(step, sub, id, out);
        }
        self.steps_seen = steps.len();
        self.last_step = steps.last().cloned();
    }

    fn step(&mut self, step: &Value, sub: i64, id: &ResponsesIdentity, out: &mut Vec<Event>) {
        let title = step.get("title").and_then(Value::as_str).unwrap_or("");
        let details = step.get("details").unwrap_or(&Value::Null);
        let claude = id.shell_type == "claudecode";
        let from_subagent = details
            .get("parent_tool_use_id")
            .is_some_and(|p| !p.is_null());
        match title {
            "thinking.assistant_message_received" | "thinking.tool_use" => {
                let blocks = details
                    .pointer("/message/content")
                    .and_then(Value::as_array);
                for b in blocks.into_iter().flatten() {
                    match b.get("type").and_then(Value::as_str) {
                        Some("text") if claude && !from_subagent => {
                            let t = b.get("text").and_then(Value::as_str).unwrap_or("");
                            self.text(t, sub, out);
                        }
                        Some("thinking") if claude && !from_subagent => {
                            let t = b.get("thinking").and_then(Value::as_str).unwrap_or("");
                            self.reasoning(t, sub, out);
                        }
                        Some("tool_use") => self.tool_started(b, details, out),
                        _ => {}
                    }
                }
            }
            "thinking.user_message_received" => {
                let blocks = details
                    .pointer("/message/content")
                    .and_then(Value::as_array);
                for b in blocks.into_iter().flatten() {
                    if b.get("type").and_then(Value::as_str) == Some("tool_result") {
                        self.tool_finished(b, out);
                    }
                }
            }
            "thinking.tool_result" => self.tool_finished(details, out),
            _ => {}
        }
    }

    fn tool_started(&mut self, b: &Value, details: &Value, out: &mut Vec<Event>) {
        let Some(tool_id) = b.get("id").and_then(Value::as_str) else {
            return;
        };
        if self.blocks.contains_key(tool_id) {
            return;
        }
        self.blocks.insert(tool_id.to_string(), false);
        let name = b.get("name").and_then(Value::as_str).unwrap_or("");
        let mut block = json!({"id": tool_id, "type": "tool", "tool_use_id": tool_id,
            "tool_name": name, "tool_input": b.get("input").cloned().unwrap_or(json!({})),
            "status": "pending", "timestamp": now_ms()});
        if let Some(parent) = details.get("parent_tool_use_id").filter(|p| !p.is_null()) {
            block["parent_tool_use_id"] = parent.clone();
        }
        out.push((
            "response.block.created",
            json!({"type": "response.block.created", "block": block}),
        ));
    }

    fn tool_finished(&mut self, b: &Value, out: &mut Vec<Event>) {
        let Some(tool_id) = b.get("tool_use_id").and_then(Value::as_str) else {
            return;
        };
        match self.blocks.get_mut(tool_id) {
            Some(done) if !*done => *done = true,
            _ => return,
        }
        let failed = b.get("is_error").and_then(Value::as_bool).unwrap_or(false);
        let output = tool_output(b.get("content").unwrap_or(&Value::Null));
        out.push((
            "response.block.updated",
            json!({"type": "response.block.updated", "block_id": tool_id,
                   "updates": {"tool_output": output,
                               "status": if failed { "error" } else { "done" }}}),
        ));
    }

    /// New answer text, chunked, each delta with the characters streamed before it.
    fn text(&mut self, text: &str, sub: i64, out: &mut Vec<Event>) {
        for chunk in chunks(text, TEXT_CHUNK_CHARS) {
            out.push((
                "response.output_text.delta",
                json!({"type": "response.output_text.delta", "item_id": item_id(sub),
                       "output_index": 0, "content_index": 0, "delta": chunk,
                       "offset": self.text_offset}),
            ));
            self.text_offset += chunk.chars().count();
        }
    }

    fn reasoning(&mut self, text: &str, sub: i64, out: &mut Vec<Event>) {
        for chunk in chunks(text, REASONING_CHUNK_CHARS) {
            out.push((
                "response.reasoning_summary_text.delta",
                json!({"type": "response.reasoning_summary_text.delta", "item_id": item_id(sub),
                       "output_index": 0, "content_index": 0, "delta": chunk,
                       "offset": self.reasoning_offset}),
            ));
            self.reasoning_offset += chunk.chars().count();
        }
    }

    /// The part of a growing text not streamed yet.
    fn text_tail(&mut self, full: &str, sub: i64, out: &mut Vec<Event>) {
        let tail: String = full.chars().skip(self.text_offset).collect();
        self.text(&tail, sub, out);
    }

    fn reasoning_tail(&mut self, full: &str, sub: i64, out: &mut Vec<Event>) {
        let tail: String = full.chars().skip(self.reasoning_offset).collect();
        self.reasoning(&tail, sub, out);
    }
}

/// `data` of an `error` terminal.
pub fn error_data(message: Option<&str>) -> Value {
    json!({"type": "error", "code": ERROR_CODE,
           "message": message.filter(|m| !m.is_empty()).unwrap_or("the task failed")})
}

/// The envelope every Responses callback travels in (§2.1): numeric ids, optional keys omitted.
pub fn envelope(task_id: i64, subtask_id: i64, event: &Event, p: &EnvelopeIds<'_>) -> Value {
    let mut m = Map::new();
    m.insert("event_type".into(), json!(event.0));
    m.insert("task_id".into(), json!(task_id));
    m.insert("subtask_id".into(), json!(subtask_id));
    m.insert("data".into(), event.1.clone());
    if let Some(id) = p.identity.message_id {
        m.insert("message_id".into(), json!(id));
    }
    if let Some(n) = p.executor_name {
        m.insert("executor_name".into(), json!(n));
    }
    if let Some(n) = p.executor_namespace {
        m.insert("executor_namespace".into(), json!(n));
    }
    if let Some(v) = &p.identity.validation_id {
        m.insert("validation_id".into(), json!(v));
    }
    Value::Object(m)
}

/// The identity parts of an envelope.
pub struct EnvelopeIds<'a> {
    /// The subtask's Responses identity.
    pub identity: &'a ResponsesIdentity,
    /// `executor_name` (metadata's, else `EXECUTOR_NAME`).
    pub executor_name: Option<&'a str>,
    /// `executor_namespace` (metadata's, else `EXECUTOR_NAMESPACE`).
    pub executor_namespace: Option<&'a str>,
}

/// True when a spooled body is a Responses terminal (for the crash rule at start-up).
pub fn is_terminal_body(body: &Value) -> bool {
    body.get("event_type")
        .and_then(Value::as_str)
        .is_some_and(|t| TERMINAL_EVENTS.contains(&t))
}

fn item_id(subtask_id: i64) -> String {
    format!("msg_{subtask_id}")
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A tool result's text: a string as is, a list of content blocks as their joined texts.
fn tool_output(content: &Value) -> Value {
    match content {
        Value::String(_) | Value::Null => content.clone(),
        Value::Array(items) => {
            let texts: Vec<&str> = items
                .iter()
                .filter_map(|i| i.get("text").and_then(Value::as_str))
                .collect();
            if texts.is_empty() {
                content.clone()
            } else {
                json!(texts.join("\n"))
            }
        }
        other => other.clone(),
    }
}

/// Splits at character boundaries into pieces of at most `max` characters (none for "").
fn chunks(text: &str, max: usize) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let cut = rest.char_indices().nth(max).map_or(rest.len(), |(i, _)| i);
        out.push(&rest[..cut]);
        rest = &rest[cut..];
    }
    out
}

#[cfg(test)]
mod tests;
