//! Starting one `claude` process, off the actor: the task's workspace and private Claude config
//! directory (onboarding flags, MCP servers), the saved conversation id to resume, then the
//! spawn itself, on a launcher thread at the agent's priority.

use std::path::PathBuf;

use serde_json::{json, Map, Value};

use super::bot::BotSpec;
use super::env::claude_args;
use crate::agent::process::{AgentProcess, ProcessEvent, SpawnSpec};
use crate::config::PINNED_CLAUDE_CODE_VERSION;
use crate::error::AgentError;

/// Name of the file holding the Claude conversation id, in the task's workspace (contract §6.1).
pub const SESSION_ID_FILE: &str = ".claude_session_id";

/// Folder of the task's own Claude config (`CLAUDE_CONFIG_DIR`), inside its workspace.
pub const CONFIG_DIR: &str = ".claude";

/// File with the task's MCP servers, inside its config directory (0600: it may hold tokens).
pub const MCP_FILE: &str = "mcp.json";

/// How to resume a conversation in the new process.
#[derive(Debug, Clone)]
pub enum Resume {
    /// Start a fresh conversation.
    Fresh,
    /// Resume this conversation id.
    Id(String),
    /// Resume the id saved in the workspace, if there is one.
    FromFile,
}

/// Everything the spawn task needs.
pub struct Launch {
    /// The process to start (its arguments are completed here).
    pub spec: SpawnSpec,
    /// The task's Claude config directory.
    pub config_dir: PathBuf,
    /// The task's directory (where the conversation id is saved).
    pub task_dir: PathBuf,
    /// MCP servers to write for the CLI.
    pub mcp_servers: Option<Map<String, Value>>,
    /// Which conversation to continue.
    pub resume: Resume,
    /// The bot whose options become the CLI's flags.
    pub bot: BotSpec,
}

/// A started process and the conversation id it was asked to resume.
pub struct Started {
    /// The process.
    pub process: AgentProcess,
    /// `--resume` value it got, if any.
    pub resumed: Option<String>,
}

/// Prepares the files and starts the process; `sink` receives its events.
pub async fn launch(
    launch: Launch,
    sink: impl Fn(ProcessEvent) -> bool + Send + Sync + 'static,
) -> Result<Started, AgentError> {
    let Launch {
        mut spec,
        config_dir,
        task_dir,
        mcp_servers,
        resume,
        bot,
    } = launch;
    // Files, ownership and the spawn in one job on a launcher thread, at the agent's priority:
    // each blocks its thread a while, and all of it is the agent's work, not the executor's.
    let priority = spec.priority;
    crate::agent::launcher::run(priority, crate::agent::launcher::Lane::Launch, move || {
        let ws_err = |path: &PathBuf| {
            let path = path.display().to_string();
            move |source| AgentError::Workspace { path, source }
        };
        crate::task_dir::create_private_dir_blocking(&spec.cwd).map_err(ws_err(&spec.cwd))?;
        crate::task_dir::create_private_dir_blocking(&config_dir).map_err(ws_err(&config_dir))?;
        let onboarding = config_dir.join(".claude.json");
        if !onboarding.exists() {
            let flags = json!({"hasCompletedOnboarding": true, "bypassPermissionsModeAccepted": true,
                               "autoUpdates": false, "numStartups": 1});
            write_private(&onboarding, flags.to_string().as_bytes())
                .map_err(ws_err(&onboarding))?;
        }
        let mcp_path = match mcp_servers {
            Some(servers) => {
                let path = config_dir.join(MCP_FILE);
                let body = json!({"mcpServers": servers}).to_string();
                write_private(&path, body.as_bytes()).map_err(ws_err(&path))?;
                Some(path)
            }
            None => None,
        };
        let resumed = match resume {
            Resume::Fresh => None,
            Resume::Id(id) => Some(id),
            Resume::FromFile => std::fs::read_to_string(task_dir.join(SESSION_ID_FILE))
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| is_session_id(s)),
        };
        spec.args = claude_args(&bot, resumed.as_deref(), mcp_path.as_deref());
        if let (Some(uid), Some(gid)) = (spec.uid, spec.gid) {
            let user = crate::config::AgentUser { uid, gid };
            crate::task_dir::hand_over(&task_dir, user).map_err(ws_err(&task_dir))?;
        }
        let process = AgentProcess::spawn(&spec, sink).map_err(|source| AgentError::Spawn {
            bin: spec.program.display().to_string(),
            version: PINNED_CLAUDE_CODE_VERSION,
            source,
        })?;
        Ok(Started { process, resumed })
    })
    .await
    .unwrap_or_else(|e| {
        Err(AgentError::Spawn {
            bin: String::new(),
            version: PINNED_CLAUDE_CODE_VERSION,
            source: std::io::Error::other(e.to_string()),
        })
    })
}

/// A saved id goes on a command line: accept only the CLI's own shape (a UUID-like token).
pub fn is_session_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn write_private(path: &std::path::Path, body: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(body)
}
