//! Agent child actors: each owns the conversation with one agent runtime for one session.

pub mod agent_user;
pub mod agno;
pub mod claude_code;
pub mod claude_env;
pub mod claude_spawn;
pub mod claude_turn;
pub mod dify;
pub mod env_rule;
pub mod family;
pub mod job_agent;
pub mod process;
pub mod prompt;
pub mod throttle;
pub mod timers;
pub mod validation;

use std::sync::Arc;

use ractor::ActorRef;

use crate::callback::CallbackMsg;
use crate::config::RuntimeConfig;
use crate::payload::SubtaskContext;
use crate::session::SessionMsg;
use crate::task::TaskSpec;

/// What every agent actor is started with.
#[derive(Clone)]
pub struct AgentArgs {
    /// The task this agent serves.
    pub task_id: i64,
    /// Shared settings.
    pub cfg: Arc<RuntimeConfig>,
    /// Where status events go.
    pub callbacks: ActorRef<CallbackMsg>,
    /// The owning session, told when a turn ends.
    pub session: ActorRef<SessionMsg>,
    /// Pre-started agno clients, when the pool is on.
    pub agno_pool: Option<ActorRef<agno::pool::PoolMsg>>,
}

/// One subtask handed to an agent.
#[derive(Debug)]
pub struct TurnRequest {
    /// Who callbacks are about.
    pub ctx: SubtaskContext,
    /// The whole subtask as received.
    pub spec: TaskSpec,
    /// Its prepared workspace (working directory, rewritten prompt, repository, extra env).
    pub prepared: crate::workspace::Prepared,
}
