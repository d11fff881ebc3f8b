//! Agent child actors: each owns the conversation with one agent runtime for one session.
//!
//! The seam every agent implements is [`seam`] (the commands it takes, the events it reports);
//! [`registry`] is the one place that maps an agent kind to its actor, and its module docs say
//! how to add an agent kind.

pub mod agent_user;
pub mod agno;
pub mod claude_code;
pub mod dify;
pub mod env_rule;
pub mod family;
pub mod job_agent;
pub mod launcher;
pub mod live_processes;
pub mod priority;
pub mod process;
pub mod process_core;
pub mod registry;
pub mod seam;
pub mod silent_exit;
pub mod throttle;
pub mod timers;
pub mod validation;

pub use registry::{AgentKind, Registry, StartAgent};
pub use seam::{
    AgentArgs, AgentCmd, AgentEvent, AgentHandle, AgentSink, ProcessState, TurnRequest,
};
