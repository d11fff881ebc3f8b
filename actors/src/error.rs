//! Typed errors of the runtime, one enum per boundary.

use thiserror::Error;

/// Why a task dict could not be turned into a [`crate::task::TaskSpec`]. The HTTP layer maps
/// every variant to 422, so the messages are written for the person who sent the request.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum TaskError {
    /// The body parsed as JSON but is not an object.
    #[error("the task must be a JSON object")]
    NotAnObject,
    /// A required field is absent.
    #[error("field `{0}` is required")]
    Missing(&'static str),
    /// A field holds a value of the wrong type or range.
    #[error("field `{field}` must be {expected}")]
    WrongType {
        /// The field's name as the client spelt it.
        field: &'static str,
        /// What the field must hold, in words.
        expected: &'static str,
    },
}

/// Why an agent could not run a subtask. Each one ends the subtask with a `FAILED` callback
/// whose message is this error's text, so the texts must never contain secrets.
#[derive(Debug, Error)]
pub enum AgentError {
    /// No Anthropic credential anywhere (task, `EXECUTOR_ENV`, executor environment).
    #[error("API key not configured: set ANTHROPIC_API_KEY for the executor or bot[0].agent_config.env.api_key in the task")]
    ApiKeyMissing,
    /// The CLI could not be started at all.
    #[error("Failed to start Claude Code CLI `{bin}`: {source}. Install the pinned CLI with `npm install --prefix .tools/claude-code @anthropic-ai/claude-code@{version}` or set CLAUDE_BIN")]
    Spawn {
        /// The program we tried to run.
        bin: String,
        /// The version the executor is pinned to.
        version: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The agno client could not be started or failed (the text says what to install).
    #[error("{0}")]
    Agno(String),
    /// Preparing the task's workspace failed.
    #[error("Failed to prepare workspace {path}: {source}")]
    Workspace {
        /// The directory we tried to create or write.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Why the supervisor refused or failed a request from the frontend.
#[derive(Debug, Error)]
pub enum SupervisorError {
    /// The supervisor (or the whole runtime) is gone, e.g. during shutdown.
    #[error("the executor runtime is not available: {0}")]
    Unavailable(String),
    /// The callback spool directory cannot be created or written at start-up.
    #[error(transparent)]
    Spool(#[from] crate::spool::SpoolDirError),
    /// A session actor could not be spawned.
    #[error("could not start a session for task {task_id}: {reason}")]
    SessionSpawn {
        /// The task whose session failed to start.
        task_id: i64,
        /// ractor's reason.
        reason: String,
    },
}
