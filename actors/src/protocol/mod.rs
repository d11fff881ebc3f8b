//! The two wire protocols a subtask can arrive in, and what a Responses-protocol subtask must
//! remember to have its callbacks encoded (see [`responses_events`]).
//!
//! The protocol is an edge concern: the HTTP layer decides it from the route a request came in
//! on, it travels with the subtask (on [`crate::task::TaskSpec`], [`crate::payload::SubtaskContext`]
//! and every [`crate::payload::CallbackPayload`]), and only the callback relay reads it, to pick
//! the encoder. Sessions and agents never look at it.

pub mod created_ack;
pub mod responses_events;

use serde::{Deserialize, Serialize};

pub use created_ack::CreatedAck;

/// Which protocol a subtask came in on, and so how its callbacks are encoded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Protocol {
    /// `POST /api/tasks/execute`: status callbacks (`RUNNING`/`COMPLETED`/...), contract §4.3.
    #[default]
    Legacy,
    /// `POST /v1/responses`: Responses-API events (`response.created`, deltas, one terminal).
    Responses(Box<ResponsesIdentity>),
}

impl Protocol {
    /// The Responses identity, when the subtask speaks that protocol.
    pub fn responses(&self) -> Option<&ResponsesIdentity> {
        match self {
            Self::Responses(id) => Some(id),
            Self::Legacy => None,
        }
    }
}

/// What the Responses envelope and events repeat that the old task dict does not carry; it is
/// also kept in the record of an unfinished subtask, so the `error` sent after a crash is
/// encoded in the subtask's own protocol.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponsesIdentity {
    /// `metadata.message_id`, echoed as the envelope's `message_id` (omitted when absent).
    #[serde(default)]
    pub message_id: Option<i64>,
    /// `metadata.validation_params.validation_id`, echoed as `validation_id`.
    #[serde(default)]
    pub validation_id: Option<String>,
    /// `metadata.executor_name`; overrides `EXECUTOR_NAME` in the envelope.
    #[serde(default)]
    pub executor_name: Option<String>,
    /// `metadata.executor_namespace`; overrides `EXECUTOR_NAMESPACE` in the envelope.
    #[serde(default)]
    pub executor_namespace: Option<String>,
    /// Lower-cased `bot[0].shell_type` (`claudecode`, `agno`), sent in `response.created`.
    #[serde(default)]
    pub shell_type: String,
    /// `model_config.model_id`, the `model` of the response objects.
    #[serde(default)]
    pub model: String,
    /// Told when `response.created` was delivered (the HTTP answer waits for it); not kept.
    #[serde(skip)]
    pub created_ack: CreatedAck,
}
