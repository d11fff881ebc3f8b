//! The callback payload of contract §4.3 and the identity of the subtask it reports on.

use serde::Serialize;
use serde_json::Value;

use crate::config::RuntimeConfig;
use crate::protocol::Protocol;
use crate::task::TaskSpec;

/// Most characters of the prompt a progress callback carries (in the workbench's
/// `originalPrompt`, and as the `summary` of an untitled subtask). The full prompt goes out once,
/// in the subtask's terminal callback, so a 10 MB prompt costs 10 MB once per subtask instead of
/// twice per callback.
pub const PROGRESS_PROMPT_CHARS: usize = 4096;

/// The prompt as a callback carries it: whole in a terminal one, else its first
/// [`PROGRESS_PROMPT_CHARS`] characters.
pub fn prompt_for(prompt: &str, terminal: bool) -> &str {
    match prompt.char_indices().nth(PROGRESS_PROMPT_CHARS) {
        Some((cut, _)) if !terminal => &prompt[..cut],
        _ => prompt,
    }
}

/// Status values the executor sends (the backend rejects any other).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TaskStatus {
    /// Work in progress; progress < 100.
    Running,
    /// Finished successfully; `result.value` holds the answer.
    Completed,
    /// Finished with an error; the message says why.
    Failed,
    /// Stopped by a cancel request.
    Cancelled,
}

impl TaskStatus {
    /// Terminal statuses end a subtask; exactly one is sent per subtask.
    pub fn is_terminal(self) -> bool {
        !matches!(self, Self::Running)
    }

    /// The wire spelling, for messages such as `Task execution status  : RUNNING`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "RUNNING",
            Self::Completed => "COMPLETED",
            Self::Failed => "FAILED",
            Self::Cancelled => "CANCELLED",
        }
    }
}

/// Who a callback is about: the fields every payload repeats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubtaskContext {
    /// `task_id` of the task dict.
    pub task_id: i64,
    /// `subtask_id` of the task dict.
    pub subtask_id: i64,
    /// `task_title` ("" kept, as the original).
    pub task_title: String,
    /// `subtask_title`.
    pub subtask_title: String,
    /// `type` → `task_type`, omitted when empty.
    pub task_type: Option<String>,
    /// `EXECUTOR_NAME`.
    pub executor_name: Option<String>,
    /// `EXECUTOR_NAMESPACE`.
    pub executor_namespace: Option<String>,
    /// Request id and W3C trace context of the HTTP request that brought the subtask.
    pub trace: TraceContext,
    /// The protocol the subtask came in on: how the relay encodes its callbacks.
    pub protocol: Protocol,
}

/// What ties a subtask's callbacks to the request that started it: sent as the `X-Request-ID`
/// and `traceparent` headers of every callback (never in the payload, whose keys are fixed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraceContext {
    /// `X-Request-ID` of the execute request (the caller's or a generated one).
    pub request_id: Option<String>,
    /// W3C `traceparent` of the execute request, passed through.
    pub traceparent: Option<String>,
    /// The subtask's span (see [`crate::trace`]); every span of its work is a child of it.
    pub span: crate::trace::SpanHandle,
}

impl SubtaskContext {
    /// The context of one subtask under this executor's identity.
    pub fn new(spec: &TaskSpec, cfg: &RuntimeConfig) -> Self {
        let id = spec.protocol.responses();
        let executor_name = id.and_then(|i| i.executor_name.clone());
        let executor_namespace = id.and_then(|i| i.executor_namespace.clone());
        Self {
            task_id: spec.task_id,
            subtask_id: spec.subtask_id,
            task_title: spec.task_title.clone(),
            subtask_title: spec.subtask_title.clone(),
            task_type: spec.task_type.clone(),
            executor_name: executor_name.or_else(|| cfg.executor_name.clone()),
            executor_namespace: executor_namespace.or_else(|| cfg.executor_namespace.clone()),
            trace: spec.trace.clone(),
            protocol: spec.protocol.clone(),
        }
    }

    /// Builds one callback. `message` travels in `error_message` for every status, as the
    /// original does; an empty message or result is omitted.
    pub fn payload(
        &self,
        progress: u8,
        status: TaskStatus,
        message: impl Into<String>,
        result: Option<Value>,
    ) -> CallbackPayload {
        let message = message.into();
        CallbackPayload {
            task_id: self.task_id,
            subtask_id: self.subtask_id,
            task_title: self.task_title.clone(),
            subtask_title: self.subtask_title.clone(),
            executor_name: self.executor_name.clone(),
            executor_namespace: self.executor_namespace.clone(),
            progress,
            status,
            error_message: (!message.is_empty()).then_some(message),
            trace: self.trace.clone(),
            result: result.filter(|r| !r.is_null() && r.as_object().is_none_or(|o| !o.is_empty())),
            task_type: self.task_type.clone(),
            protocol: self.protocol.clone(),
        }
    }
}

/// One status event, serialised exactly as contract §4.3 (null keys omitted).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CallbackPayload {
    /// Task the event belongs to; callbacks of one task are delivered in order.
    pub task_id: i64,
    /// Subtask the event belongs to.
    pub subtask_id: i64,
    /// Copied from the task.
    pub task_title: String,
    /// Copied from the task.
    pub subtask_title: String,
    /// `EXECUTOR_NAME`, omitted when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub executor_name: Option<String>,
    /// `EXECUTOR_NAMESPACE`, omitted when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub executor_namespace: Option<String>,
    /// 0–100.
    pub progress: u8,
    /// See [`TaskStatus`].
    pub status: TaskStatus,
    /// The human message of the event (for every status, despite the name).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    /// `{"value", "thinking", ...}`, omitted when empty.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// The task's `type`, omitted when empty.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_type: Option<String>,
    /// Headers that go with the callback (not part of the payload).
    #[serde(skip)]
    pub trace: TraceContext,
    /// How the relay encodes it (not part of the payload).
    #[serde(skip)]
    pub protocol: Protocol,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx() -> SubtaskContext {
        SubtaskContext {
            task_id: 21,
            subtask_id: 31,
            task_title: String::new(),
            subtask_title: "S".into(),
            task_type: None,
            executor_name: Some("exec-1".into()),
            executor_namespace: None,
            trace: Default::default(),
            protocol: Default::default(),
        }
    }

    #[test]
    fn omits_null_keys_and_keeps_empty_titles() {
        let p = ctx().payload(50, TaskStatus::Running, "Task execution started", None);
        assert_eq!(
            serde_json::to_value(&p).unwrap(),
            json!({"task_id": 21, "subtask_id": 31, "task_title": "", "subtask_title": "S",
                   "executor_name": "exec-1", "progress": 50, "status": "RUNNING",
                   "error_message": "Task execution started"})
        );
    }

    #[test]
    fn the_prompt_is_whole_only_in_terminal_callbacks() {
        let long = "é".repeat(PROGRESS_PROMPT_CHARS + 10);
        assert_eq!(
            prompt_for(&long, false).chars().count(),
            PROGRESS_PROMPT_CHARS
        );
        assert_eq!(prompt_for(&long, true), long);
        assert_eq!(prompt_for("short", false), "short");
    }

    #[test]
    fn empty_result_is_omitted() {
        let p = ctx().payload(100, TaskStatus::Completed, "", Some(json!({})));
        let v = serde_json::to_value(&p).unwrap();
        assert!(v.get("result").is_none() && v.get("error_message").is_none());
        assert_eq!(v["status"], "COMPLETED");
    }
}
