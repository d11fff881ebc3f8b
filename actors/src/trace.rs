//! The `tracing` spans a subtask's work runs in, so a trace shows where its time went: the
//! subtask (from acceptance to its terminal event), workspace preparation, each agent turn, each
//! tool use and each callback delivery (attempts and retries are events of that span). Every
//! span carries `task_id`/`subtask_id` and nothing secret (ids, names, statuses only).
//!
//! The subtask span travels with the subtask's [`TraceContext`](crate::payload::TraceContext)
//! as a [`SpanHandle`]. Its children are linked to it by OpenTelemetry context, not by `tracing`
//! parentage, so no copy of a task (an agent keeps its last one) holds the span open: it ends
//! when the subtask's terminal event is produced ([`SpanHandle::end`]). The binary decides the
//! subtask span's own parent (the HTTP request's span, or `OTEL_TRACEPARENT` for `TASK_INFO`)
//! and whether spans are exported at all.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The subtask's span, shared by every copy of the subtask; compares equal to any other (it
/// is not part of what a subtask *is*). The default has no span (children become roots).
#[derive(Clone, Default)]
pub struct SpanHandle(Option<Arc<Shared>>);

struct Shared {
    span: Mutex<Option<Span>>,
    cx: opentelemetry::Context,
}

impl SpanHandle {
    /// Takes over `span` (whose parent must be set already: its context is captured now).
    pub fn new(span: Span) -> Self {
        let cx = span.context();
        Self(Some(Arc::new(Shared {
            span: Mutex::new(Some(span)),
            cx,
        })))
    }

    /// A new span `span` made a child of the subtask's.
    fn adopt(&self, span: Span) -> Span {
        if let Some(shared) = &self.0 {
            let _ = span.set_parent(shared.cx.clone());
        }
        span
    }

    /// Ends the subtask's span with its terminal `status` (later calls do nothing).
    pub fn end(&self, status: &str) {
        let taken = self
            .0
            .as_ref()
            .and_then(|s| s.span.lock().ok().and_then(|mut g| g.take()));
        if let Some(span) = taken {
            span.record("status", status);
        }
    }
}

impl PartialEq for SpanHandle {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for SpanHandle {}

impl std::fmt::Debug for SpanHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SpanHandle")
    }
}

/// The span of one subtask, a root in `tracing` terms: the caller sets its OpenTelemetry
/// parent, then wraps it in a [`SpanHandle`].
pub fn subtask_span(task_id: i64, subtask_id: i64, agent: &str) -> Span {
    tracing::info_span!(parent: None, "subtask", task_id, subtask_id, agent,
        status = tracing::field::Empty)
}

/// The span of a subtask's workspace preparation (clone, attachments, skills).
pub fn workspace_span(subtask: &SpanHandle, task_id: i64, subtask_id: i64) -> Span {
    subtask.adopt(tracing::info_span!(parent: None, "workspace preparation", task_id, subtask_id))
}

/// The span of one callback delivery (all its attempts), child of the subtask's span.
pub fn callback_span(subtask: &SpanHandle, task_id: i64, seq: u64) -> Span {
    subtask.adopt(tracing::info_span!(parent: None, "callback delivery", task_id, seq))
}

/// The spans of one agent turn: the turn itself and each tool use still running.
#[derive(Debug)]
pub struct TurnSpans {
    turn: Span,
    ids: (i64, i64),
    tools: HashMap<String, Span>,
}

impl TurnSpans {
    /// A turn of `agent` for the subtask whose span is `subtask`.
    pub fn new(subtask: &SpanHandle, agent: &str, task_id: i64, subtask_id: i64) -> Self {
        let turn = subtask
            .adopt(tracing::info_span!(parent: None, "agent turn", task_id, subtask_id, agent));
        Self {
            turn,
            ids: (task_id, subtask_id),
            tools: HashMap::new(),
        }
    }

    /// A tool use `id` (tool `name`) started.
    pub fn tool_started(&mut self, id: &str, name: &str) {
        let (task_id, subtask_id) = self.ids;
        let span =
            tracing::info_span!(parent: &self.turn, "tool use", task_id, subtask_id, tool = name);
        self.tools.insert(id.to_string(), span);
    }

    /// A tool use ended (its span closes).
    pub fn tool_finished(&mut self, id: &str) {
        self.tools.remove(id);
    }

    /// Whether a tool use is still running.
    pub fn tools_open(&self) -> bool {
        !self.tools.is_empty()
    }
}
