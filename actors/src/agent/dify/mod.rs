//! The Dify agent (contract §5.5, the original's `external_api`): a task whose bot has
//! `shell_type: "Dify"` is answered by a Dify application over HTTP. No process, no clone: one
//! streaming request per subtask, made in a task of its own ([`run::run_dify`]), whose
//! callbacks go out as it streams; the conversation id of a chat app is kept per task on disk
//! ([`conversation`]), so a follow-up continues the conversation across executor restarts.

pub mod client;
pub mod config;
pub mod conversation;
pub mod run;
pub mod sse;

pub use config::DifyConfig;
pub use run::{run_dify, DifyRun};

/// A Dify task needs only its task directory (for the conversation id): no clone (the
/// original's `pre_execute` skips it), no instruction files, skills or attachments.
pub const WORKSPACE_NEEDS: crate::workspace::WorkspaceNeeds = crate::workspace::WorkspaceNeeds {
    reserved: &[conversation::FILE_NAME],
    ..crate::workspace::WorkspaceNeeds::NOTHING
};
