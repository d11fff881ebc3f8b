//! The one place that knows every agent kind: [`AgentKind`] (read from the task dict), its
//! names, and [`Registry::start`], which maps a kind to its actor. The match is exhaustive and
//! has no catch-all arm, so a kind without an actor does not compile, and an unknown kind ends
//! its subtask `FAILED` ([`StartError::Unsupported`]) instead of running some other agent.
//!
//! # Adding an agent kind
//!
//! 1. Write the agent as its own module under `agent/` (e.g. `agent/dify/`). Its actor takes
//!    [`AgentArgs`] (plus anything of its own, built in step 3), its message enum has a
//!    `Cmd(AgentCmd)` variant and `crate::seam_message!(MyMsg);` next to it, and it reports
//!    through `args.session` ([`AgentSink::turn_done`] after every terminal callback it sent,
//!    [`AgentSink::process`] if it drives a process). Agents that drive a child process build
//!    on [`crate::agent::process`] and [`crate::agent::timers`]. It reads its own part of the
//!    task from [`TaskSpec`](crate::task::TaskSpec) (`bots`, `prompt`, ...).
//! 2. `agent/mod.rs`: `pub mod dify;`.
//! 3. This file: a variant of [`AgentKind`], its spellings in [`AgentKind::parse`], its name in
//!    [`AgentKind::name`] and [`AgentKind::SUPPORTED`], its own parsed part of the task (if
//!    it has one) as an [`AgentConfig`] variant read in [`AgentKind::parse_config`], its
//!    `WORKSPACE_NEEDS` in
//!    [`AgentKind::workspace_needs`] (what preparation does for it: clone, instruction files,
//!    skills, attachments) and its arm in [`Registry::start`] (the compiler points at each
//!    place once the variant exists).
//! 4. Settings of its own, if any: a field in [`crate::config::RuntimeConfig`] and its
//!    environment name in the binary's `src/config.rs` (documented in README).
//!
//! Nothing in the session, the supervisor or the workspace changes. Tests of session
//! behaviour run against a scripted agent (`actors/tests/scripted_agent.rs`), started by a
//! [`StartAgent`] of the test's own.

use std::future::Future;
use std::pin::Pin;

use ractor::{Actor, ActorCell, ActorRef};

use super::agno::{pool::PoolMsg, AgnoAgent, AgnoArgs};
use super::claude_code::ClaudeCodeAgent;
use serde_json::{Map, Value};

use super::claude_code::bot::BotSpec;
use super::job_agent::JobAgent;
use super::seam::{AgentArgs, AgentHandle};
use crate::error::TaskError;
use crate::workspace::WorkspaceNeeds;

/// Which agent runs a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentKind {
    /// `shell_type: "ClaudeCode"` / `agent_type: "claude_code"`.
    ClaudeCode,
    /// `shell_type: "Agno"` / `agent_type: "agno"`.
    Agno,
    /// `shell_type: "Dify"`: a Dify application over HTTP (the original's `external_api`).
    Dify,
    /// `type: "validation"`: checks a custom base image's tools (no bot, no prompt).
    ImageValidator,
    /// Any other value, kept verbatim for the error message (`""` when none was given).
    Unsupported(String),
}

impl AgentKind {
    /// Agent types this build can run, as listed in error messages.
    pub const SUPPORTED: &'static [&'static str] = &["ClaudeCode", "Agno", "Dify"];

    /// Reads a `shell_type`/`agent_type` the way the original does: case-insensitive, and the
    /// seed's snake_case spelling (`claude_code`) means the same.
    pub fn parse(raw: &str) -> Self {
        let norm: String = raw
            .trim()
            .chars()
            .filter(|c| *c != '_' && *c != '-')
            .flat_map(char::to_lowercase)
            .collect();
        match norm.as_str() {
            "claudecode" => Self::ClaudeCode,
            "agno" => Self::Agno,
            "dify" => Self::Dify,
            "imagevalidator" => Self::ImageValidator,
            _ => Self::Unsupported(raw.trim().to_string()),
        }
    }

    /// Agents whose execute request is answered with the final status (contract §13.1).
    pub fn is_synchronous(&self) -> bool {
        matches!(self, Self::Dify | Self::ImageValidator)
    }

    /// Whether its agent drives a process (and so takes a slot under the live-process cap).
    pub fn has_process(&self) -> bool {
        matches!(self, Self::ClaudeCode | Self::Agno)
    }

    /// The name the session listing shows (`agent_type`), as the original's `get_name()`.
    pub fn name(&self) -> &str {
        match self {
            Self::ClaudeCode => "ClaudeCode",
            Self::Agno => "Agno",
            Self::Dify => "Dify",
            Self::ImageValidator => "ImageValidator",
            Self::Unsupported(s) => s,
        }
    }

    /// Reads this kind's own part of the task: `bot` is `bot[0]`, `task` the whole dict.
    pub fn parse_config(
        &self,
        bot: Option<&Map<String, Value>>,
        task: &Value,
    ) -> Result<AgentConfig, TaskError> {
        Ok(match self {
            Self::ClaudeCode => AgentConfig::ClaudeCode(Box::new(match bot {
                Some(b) => super::claude_code::bot::parse(b, task)?,
                None => BotSpec::default(),
            })),
            // Dify reads `bots[0].agent_config.env` and `bot_prompt` itself, the validator
            // `validation_params`.
            Self::Agno | Self::Dify | Self::ImageValidator | Self::Unsupported(_) => {
                AgentConfig::Nothing
            }
        })
    }

    /// What this kind's agent needs from workspace preparation (the agent module says).
    pub fn workspace_needs(&self) -> WorkspaceNeeds {
        match self {
            Self::ClaudeCode => super::claude_code::WORKSPACE_NEEDS,
            Self::Agno => super::agno::WORKSPACE_NEEDS,
            Self::Dify => super::dify::WORKSPACE_NEEDS,
            Self::ImageValidator => super::validation::WORKSPACE_NEEDS,
            // Never handed to an agent (the subtask fails): nothing to prepare.
            Self::Unsupported(_) => WorkspaceNeeds::default(),
        }
    }
}

/// An agent's own reading of the task's bots, parsed when the task dict is read.
#[derive(Debug, Clone, Default)]
pub enum AgentConfig {
    /// Claude Code's `bot[0]` settings.
    ClaudeCode(Box<BotSpec>),
    /// The kind reads nothing beyond the generic task (Agno takes the raw `bots`).
    #[default]
    Nothing,
}

impl AgentConfig {
    /// Claude Code's settings, when this is its config.
    pub fn claude(&self) -> Option<&BotSpec> {
        match self {
            Self::ClaudeCode(b) => Some(b),
            Self::Nothing => None,
        }
    }

    /// The parts that may hold secrets, for the masking registry.
    pub fn secret_json(&self) -> Vec<Value> {
        match self {
            Self::ClaudeCode(b) => vec![b.agent_config.clone()],
            Self::Nothing => Vec::new(),
        }
    }
}

/// Why no agent could be started for a subtask.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The task names an agent kind this build does not have.
    #[error("unsupported agent type '{0}'; supported types: {supported}", supported = AgentKind::SUPPORTED.join(", "))]
    Unsupported(String),
    /// The actor did not start.
    #[error("could not start the agent: {0}")]
    Spawn(#[from] ractor::SpawnErr),
}

/// A future that starts an agent.
pub type Starting<'a> = Pin<Box<dyn Future<Output = Result<AgentHandle, StartError>> + Send + 'a>>;

/// Starts the agent actor for a kind, linked to the session (`parent`). The executor uses
/// [`Registry`]; tests pass one that starts a scripted agent.
pub trait StartAgent: Send + Sync + 'static {
    /// Starts an agent of `kind` with `args`, supervised by `parent`.
    fn start<'a>(&'a self, kind: &'a AgentKind, args: AgentArgs, parent: ActorCell)
        -> Starting<'a>;
}

/// The executor's agents: every [`AgentKind`] and its actor.
#[derive(Clone, Default)]
pub struct Registry {
    /// Pre-started agno clients, when the pool is on.
    pub agno_pool: Option<ActorRef<PoolMsg>>,
}

impl StartAgent for Registry {
    fn start<'a>(
        &'a self,
        kind: &'a AgentKind,
        args: AgentArgs,
        parent: ActorCell,
    ) -> Starting<'a> {
        Box::pin(async move {
            let handle = match kind {
                AgentKind::ClaudeCode => {
                    let (a, _) = Actor::spawn_linked(None, ClaudeCodeAgent, args, parent).await?;
                    AgentHandle::new(kind.clone(), &a)
                }
                AgentKind::Agno => {
                    let pool = self.agno_pool.clone();
                    let args = AgnoArgs { common: args, pool };
                    let (a, _) = Actor::spawn_linked(None, AgnoAgent, args, parent).await?;
                    AgentHandle::new(kind.clone(), &a)
                }
                AgentKind::Dify | AgentKind::ImageValidator => {
                    let agent = JobAgent { kind: kind.clone() };
                    let (a, _) = Actor::spawn_linked(None, agent, args, parent).await?;
                    AgentHandle::new(kind.clone(), &a)
                }
                AgentKind::Unsupported(name) => return Err(StartError::Unsupported(name.clone())),
            };
            Ok(handle)
        })
    }
}
