//! The executor's actor runtime.
//!
//! One [`supervisor::Supervisor`] owns a [`session::Session`] per `task_id`; each session owns
//! an agent child actor (today [`agent::claude_code::ClaudeCodeAgent`], which drives one
//! long-lived `claude` subprocess); every status event goes through the single
//! [`callback::CallbackRelay`], which posts it to `CALLBACK_URL` in order per task. The HTTP
//! frontend (the `executor` binary) only talks to the supervisor through messages and reads the
//! [`index::SessionIndex`] that the supervisor alone writes.

pub mod agent;
pub mod callback;
pub mod callback_flow;
pub mod capacity;
pub mod child;
pub mod config;
pub mod crypto;
pub mod delivery;
pub mod error;
pub mod events;
pub mod final_status;
pub mod heartbeat;
pub mod index;
pub mod mask;
pub mod mcp;
pub mod metrics;
pub mod orphans;
pub mod payload;
pub mod protocol;
pub mod runtime;
pub mod session;
pub mod spool;
pub mod spool_journal;
pub mod spool_recovery;
pub mod supervisor;
pub mod task;
pub mod task_dir;
mod task_secrets;
pub mod trace;
pub mod unfinished;
pub mod workspace;
