//! Settings of the service: command-line flags > environment variables > config file > defaults.
//! Environment names are the original executor's (`PORT`, `WORKSPACE_ROOT`, `CALLBACK_URL`, ...).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The security settings (agent environment, executor keys, agent user, local clones, expiry).
#[path = "config_security.rs"]
pub mod security;

use actors::config::{
    AgnoConfig, CallbackConfig, ClaudeConfig, RuntimeConfig, Secret, StopConfig, WorkspaceConfig,
};
use anyhow::{bail, Context};
use clap::Parser;
use serde::Deserialize;

/// `PORT`: the HTTP port (the original's default).
pub const DEFAULT_PORT: u16 = 10001;
/// `BIND_ADDRESS`: all interfaces, as the original.
pub const DEFAULT_BIND: &str = "0.0.0.0";
/// `WORKSPACE_ROOT`: where task directories live.
pub const DEFAULT_WORKSPACE_ROOT: &str = "/workspace/";
/// `MAX_BODY_BYTES`: largest request body accepted (10 MiB).
pub const DEFAULT_MAX_BODY_BYTES: u64 = 10 * 1024 * 1024;
/// `CALLBACK_TIMEOUT_SECS`: one callback POST attempt (the original's 10 s).
pub const DEFAULT_CALLBACK_TIMEOUT_SECS: u64 = 10;
/// `CALLBACK_MAX_RETRIES`: retries after the first attempt (the original's 10).
pub const DEFAULT_CALLBACK_MAX_RETRIES: u32 = 10;
/// `CALLBACK_INITIAL_BACKOFF_MS`: first retry delay (the original's 1 s), doubled each retry.
pub const DEFAULT_CALLBACK_INITIAL_BACKOFF_MS: u64 = 1_000;
/// `CALLBACK_MAX_BACKOFF_MS`: cap of one retry delay (60 s).
pub const DEFAULT_CALLBACK_MAX_BACKOFF_MS: u64 = 60_000;
/// `TASK_INFO_TERMINAL_REPEAT_SECS`: the `TASK_INFO` subtask's terminal callback is sent once
/// more this long after the first, to land after executor_manager's late `RUNNING` report
/// (sent after its 2 s container health check); 0 disables the repeat.
pub const DEFAULT_TASK_INFO_TERMINAL_REPEAT_SECS: u64 = 5;
/// `SESSION_EOF_GRACE_MS`: after closing the CLI's stdin, time to exit by itself.
pub const DEFAULT_SESSION_EOF_GRACE_MS: u64 = 1_000;
/// `SESSION_TERM_GRACE_MS`: after SIGTERM to the process group, time before SIGKILL.
pub const DEFAULT_SESSION_TERM_GRACE_MS: u64 = 3_000;
/// `CLAUDE_INIT_TIMEOUT_SECS`: time the CLI has to answer `initialize` (the SDK's 60 s).
pub const DEFAULT_CLAUDE_INIT_TIMEOUT_SECS: u64 = 60;
/// `CLAUDE_INTERRUPT_TIMEOUT_SECS`: after a cancel, time for the turn to end before a kill.
pub const DEFAULT_CLAUDE_INTERRUPT_TIMEOUT_SECS: u64 = 10;
/// `AGENT_IDLE_TIMEOUT_SECS` (older name `CLAUDE_IDLE_TIMEOUT_SECS`, still read): an idle agent
/// process (a CLI of 250–400 MB, an agno client) is ended after this; the next subtask resumes
/// the conversation. 0 keeps processes alive.
pub const DEFAULT_CLAUDE_IDLE_TIMEOUT_SECS: u64 = 1800;
/// `AGENT_NICE`: how much lower agent processes (and their tools) run than the executor: a
/// nice increment, with `AGENT_SCHED_POLICY` (0 = same priority).
pub const DEFAULT_AGENT_NICE: i32 = 10;
/// `WATCHDOG_SILENCE_SECS`: a turn with no CLI output this long and no tool running is hung.
pub const DEFAULT_WATCHDOG_SILENCE_SECS: u64 = 600;
/// `WATCHDOG_TOOL_SECS`: a tool call may run this long without output.
pub const DEFAULT_WATCHDOG_TOOL_SECS: u64 = 3600;
/// `TURN_TIMEOUT_SECS`: longest one subtask may run (0 = no limit).
pub const DEFAULT_TURN_TIMEOUT_SECS: u64 = 0;
/// `MAX_SESSIONS`: most sessions at once; a new task over it gets 429 (0 = no cap).
pub const DEFAULT_MAX_SESSIONS: usize = 1000;
/// `HTTP_HEADER_TIMEOUT_SECS`: time a connection has to deliver a complete request head
/// (silent and dribbling clients are cut off).
pub const DEFAULT_HTTP_HEADER_TIMEOUT_SECS: u64 = 10;
/// `HTTP_KEEPALIVE_TIMEOUT_SECS`: idle time after which a kept-alive connection is closed
/// (uvicorn's `--timeout-keep-alive` default, as the original).
pub const DEFAULT_HTTP_KEEPALIVE_TIMEOUT_SECS: u64 = 5;
/// `HTTP_MAX_CONNECTIONS`: connection cap; 0 = the open-file limit less `HTTP_FD_RESERVE`.
pub const DEFAULT_HTTP_MAX_CONNECTIONS: usize = 0;
/// `HTTP_FD_RESERVE`: descriptors the automatic cap leaves for agents, spool and callbacks.
pub const DEFAULT_HTTP_FD_RESERVE: usize = 256;
/// `BODY_TIMEOUT_SECS`: time a client has to send a request body (408 after it).
pub const DEFAULT_BODY_TIMEOUT_SECS: u64 = 30;
/// Default spool folder for undelivered callbacks, inside `WORKSPACE_ROOT`.
pub const DEFAULT_SPOOL_DIR_NAME: &str = ".callback-spool";
/// `HEARTBEAT_INTERVAL`: seconds between heartbeats (the original's 10).
pub const DEFAULT_HEARTBEAT_INTERVAL_SECS: u64 = 10;
/// `MAX_LINE_BYTES`: longest stdout line accepted from the CLI (16 MiB).
pub const DEFAULT_MAX_LINE_BYTES: usize = 16 * 1024 * 1024;
/// `SHUTDOWN_GRACE_SECS`: the whole time from SIGTERM to exit (sessions closed, callbacks
/// flushed; the rest stays in the spool). Well inside `docker stop`'s 10 s, after which Docker
/// SIGKILLs; Kubernetes' manifest sets a longer one under its 30 s grace period.
pub const DEFAULT_SHUTDOWN_GRACE_SECS: u64 = 5;
/// Where `--install-claude` puts the pinned CLI, relative to the working directory.
pub const LOCAL_CLAUDE_DIR: &str = ".tools/claude-code";

/// The executor's version, as `--version`, the start-up line and `/metrics` show it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Command-line flags; each can also come from the environment variable it names.
#[derive(Debug, Parser)]
#[command(
    name = "executor",
    version = VERSION,
    disable_version_flag = true,
    about = "Runs Claude Code tasks over HTTP (Wegent executor contract)"
)]
pub struct Cli {
    /// Print the version alone and exit (as the original's `--version`/`-v`).
    #[arg(short = 'v', long = "version")]
    pub version: bool,
    /// TOML config file (see config/default.toml).
    #[arg(long, env = "EXECUTOR_CONFIG")]
    pub config: Option<PathBuf>,
    /// HTTP port [default: 10001]; 0 picks a free port.
    #[arg(long, env = "PORT")]
    pub port: Option<u16>,
    /// Address to listen on [default: 0.0.0.0].
    #[arg(long = "bind", env = "BIND_ADDRESS")]
    pub bind_address: Option<IpAddr>,
    /// Root of the task workspaces [default: /workspace/].
    #[arg(long, env = "WORKSPACE_ROOT")]
    pub workspace_root: Option<PathBuf>,
    /// Where status callbacks are POSTed; unset disables callbacks.
    #[arg(long, env = "CALLBACK_URL")]
    pub callback_url: Option<String>,
    /// Copied into callbacks as executor_name.
    #[arg(long, env = "EXECUTOR_NAME")]
    pub executor_name: Option<String>,
    /// Copied into callbacks as executor_namespace.
    #[arg(long, env = "EXECUTOR_NAMESPACE")]
    pub executor_namespace: Option<String>,
    /// The Claude Code CLI to run [default: claude from PATH, else ./.tools/claude-code].
    #[arg(long, env = "CLAUDE_BIN")]
    pub claude_bin: Option<PathBuf>,
    /// Install the pinned Claude Code CLI into ./.tools/claude-code (npm) if it is missing.
    #[arg(long)]
    pub install_claude: bool,
    /// Validate the configuration, print the effective values (secrets masked) and exit.
    #[arg(long)]
    pub check_config: bool,
    /// Where undelivered callbacks are kept across restarts [default: WORKSPACE_ROOT/.callback-spool].
    #[arg(long, env = "CALLBACK_SPOOL_DIR")]
    pub callback_spool_dir: Option<PathBuf>,
    /// Seconds a client has to send a request body [default: 30].
    #[arg(long, env = "BODY_TIMEOUT_SECS")]
    pub body_timeout_secs: Option<u64>,
    /// Largest request body in bytes [default: 10485760].
    #[arg(long, env = "MAX_BODY_BYTES")]
    pub max_body_bytes: Option<u64>,
    /// Seconds a connection has to send a complete request head [default: 10].
    #[arg(long, env = "HTTP_HEADER_TIMEOUT_SECS")]
    pub http_header_timeout_secs: Option<u64>,
    /// Seconds an idle kept-alive connection stays open [default: 5].
    #[arg(long, env = "HTTP_KEEPALIVE_TIMEOUT_SECS")]
    pub http_keepalive_timeout_secs: Option<u64>,
    /// Connection cap; 0 = open-file limit less HTTP_FD_RESERVE [default: 0].
    #[arg(long, env = "HTTP_MAX_CONNECTIONS")]
    pub http_max_connections: Option<usize>,
    /// File descriptors the automatic connection cap leaves free [default: 256].
    #[arg(long, env = "HTTP_FD_RESERVE")]
    pub http_fd_reserve: Option<usize>,
    /// Log level: error, warn, info, debug [default: info].
    #[arg(long, env = "LOG_LEVEL")]
    pub log_level: Option<String>,
    /// Seconds one callback attempt may take [default: 10].
    #[arg(long, env = "CALLBACK_TIMEOUT_SECS")]
    pub callback_timeout_secs: Option<u64>,
    /// Callback retries after the first attempt [default: 10].
    #[arg(long, env = "CALLBACK_MAX_RETRIES")]
    pub callback_max_retries: Option<u32>,
    /// First callback retry delay in ms [default: 1000].
    #[arg(long, env = "CALLBACK_INITIAL_BACKOFF_MS")]
    pub callback_initial_backoff_ms: Option<u64>,
    /// Largest callback retry delay in ms [default: 60000].
    #[arg(long, env = "CALLBACK_MAX_BACKOFF_MS")]
    pub callback_max_backoff_ms: Option<u64>,
    /// Seconds after the TASK_INFO subtask's terminal callback to send it once more [default: 5; 0 = never].
    #[arg(long, env = "TASK_INFO_TERMINAL_REPEAT_SECS")]
    pub task_info_terminal_repeat_secs: Option<u64>,
    /// ms the CLI gets to exit after stdin closes [default: 1000].
    #[arg(long, env = "SESSION_EOF_GRACE_MS")]
    pub session_eof_grace_ms: Option<u64>,
    /// ms between SIGTERM and SIGKILL of a session's processes [default: 3000].
    #[arg(long, env = "SESSION_TERM_GRACE_MS")]
    pub session_term_grace_ms: Option<u64>,
    /// Seconds the CLI has to answer initialize [default: 60].
    #[arg(long, env = "CLAUDE_INIT_TIMEOUT_SECS")]
    pub claude_init_timeout_secs: Option<u64>,
    /// Seconds a cancelled turn has to end before the CLI is killed [default: 10].
    #[arg(long, env = "CLAUDE_INTERRUPT_TIMEOUT_SECS")]
    pub claude_interrupt_timeout_secs: Option<u64>,
    /// Seconds without CLI output (no tool running) before a turn counts as hung; 0 = off [default: 600].
    #[arg(long, env = "WATCHDOG_SILENCE_SECS")]
    pub watchdog_silence_secs: Option<u64>,
    /// Seconds a tool may run without output; 0 = off [default: 3600].
    #[arg(long, env = "WATCHDOG_TOOL_SECS")]
    pub watchdog_tool_secs: Option<u64>,
    /// Longest a subtask may run in seconds; 0 = no limit [default: 0].
    #[arg(long, env = "TURN_TIMEOUT_SECS")]
    pub turn_timeout_secs: Option<u64>,
    /// Most sessions at once (new tasks over it get 429); 0 = no cap [default: 1000].
    #[arg(long, env = "MAX_SESSIONS")]
    pub max_sessions: Option<usize>,
    /// Most agent processes alive at once; 0 = no cap [default: the memory the executor may
    /// use / 256 MiB].
    #[arg(long, env = "MAX_LIVE_PROCESSES")]
    pub max_live_processes: Option<usize>,
    /// Nice increment (with SCHED_BATCH) for agent processes and their tools; 0 = off
    /// [default: 10].
    #[arg(long, env = "AGENT_NICE")]
    pub agent_nice: Option<i32>,
    /// Scheduling policy of agent processes when AGENT_NICE > 0: idle (SCHED_IDLE: any
    /// executor thread preempts them at once), batch (SCHED_BATCH) or normal [default: idle].
    #[arg(long, env = "AGENT_SCHED_POLICY")]
    pub agent_sched_policy: Option<String>,
    /// Seconds an idle agent process (Claude Code CLI, agno client) lives before it is ended
    /// (0 = never) [default: 1800]; wins over CLAUDE_IDLE_TIMEOUT_SECS.
    #[arg(long, env = "AGENT_IDLE_TIMEOUT_SECS")]
    pub agent_idle_timeout_secs: Option<u64>,
    /// The older name of AGENT_IDLE_TIMEOUT_SECS, still read.
    #[arg(long, env = "CLAUDE_IDLE_TIMEOUT_SECS")]
    pub claude_idle_timeout_secs: Option<u64>,
    /// Seconds one Dify call (the whole streamed answer) may take before the subtask fails
    /// [default: 300].
    #[arg(long, env = "DIFY_TIMEOUT_SECS")]
    pub dify_timeout_secs: Option<u64>,
    /// Longest stdout line accepted from the CLI in bytes [default: 16777216].
    #[arg(long, env = "MAX_LINE_BYTES")]
    pub max_line_bytes: Option<usize>,
    /// Seconds from SIGTERM to exit (sessions closed, callbacks flushed) [default: 5].
    #[arg(long, env = "SHUTDOWN_GRACE_SECS")]
    pub shutdown_grace_secs: Option<u64>,
    /// Workspace preparation.
    #[command(flatten)]
    pub workspace: WorkspaceFlags,
    /// Python of the agno venv [default: .tools/agno-venv/bin/python if present, else python3].
    #[arg(long, env = "AGNO_PYTHON")]
    pub agno_python: Option<PathBuf>,
    /// SQLite file with Agno conversation history [default: WORKSPACE_ROOT/.agno/agno_data.db].
    #[arg(long, env = "AGNO_DB_FILE")]
    pub agno_db_file: Option<PathBuf>,
    /// Pre-started agno clients kept ready; 0 disables [default: 1].
    #[arg(long, env = "AGNO_POOL_SIZE")]
    pub agno_pool_size: Option<usize>,
    /// What a task may reach (README "Security").
    #[command(flatten)]
    pub security: security::SecurityFlags,
}

/// Flags of workspace preparation (git, attachments, skills).
#[derive(Debug, clap::Args)]
pub struct WorkspaceFlags {
    /// Backend base URL for attachment and skill downloads [default: http://wegent-backend:8000].
    #[arg(long, env = "TASK_API_DOMAIN")]
    pub task_api_domain: Option<String>,
    /// Comma-separated repository files copied into `.claudecode/` [default: .cursorrules,.windsurfrules].
    #[arg(long, env = "CUSTOM_INSTRUCTION_FILES")]
    pub custom_instruction_files: Option<String>,
    /// Wipe the task's skills folder before deploying skills (true/1/yes) [default: true].
    #[arg(long, env = "SKILL_CLEAR_CACHE")]
    pub skill_clear_cache: Option<String>,
    /// Seconds a `git clone` may take before it is killed [default: 600].
    #[arg(long, env = "GIT_CLONE_TIMEOUT_SECS")]
    pub git_clone_timeout_secs: Option<u64>,
    /// Largest attachment downloaded, in bytes [default: 104857600].
    #[arg(long, env = "MAX_ATTACHMENT_BYTES")]
    pub max_attachment_bytes: Option<u64>,
    /// Largest skill archive downloaded, in bytes [default: 52428800].
    #[arg(long, env = "MAX_SKILL_BYTES")]
    pub max_skill_bytes: Option<u64>,
}

/// The config file: the same settings as the flags, snake_case, all optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    port: Option<u16>,
    bind_address: Option<IpAddr>,
    workspace_root: Option<PathBuf>,
    callback_url: Option<String>,
    executor_name: Option<String>,
    executor_namespace: Option<String>,
    claude_bin: Option<PathBuf>,
    max_body_bytes: Option<u64>,
    http_header_timeout_secs: Option<u64>,
    http_keepalive_timeout_secs: Option<u64>,
    http_max_connections: Option<usize>,
    http_fd_reserve: Option<usize>,
    log_level: Option<String>,
    callback_timeout_secs: Option<u64>,
    callback_max_retries: Option<u32>,
    callback_initial_backoff_ms: Option<u64>,
    callback_max_backoff_ms: Option<u64>,
    session_eof_grace_ms: Option<u64>,
    session_term_grace_ms: Option<u64>,
    claude_init_timeout_secs: Option<u64>,
    claude_interrupt_timeout_secs: Option<u64>,
    claude_idle_timeout_secs: Option<u64>,
    agent_idle_timeout_secs: Option<u64>,
    dify_timeout_secs: Option<u64>,
    max_live_processes: Option<usize>,
    agent_nice: Option<i32>,
    agent_sched_policy: Option<String>,
    watchdog_silence_secs: Option<u64>,
    watchdog_tool_secs: Option<u64>,
    turn_timeout_secs: Option<u64>,
    max_sessions: Option<usize>,
    body_timeout_secs: Option<u64>,
    callback_spool_dir: Option<PathBuf>,
    task_info_terminal_repeat_secs: Option<u64>,
    max_line_bytes: Option<usize>,
    shutdown_grace_secs: Option<u64>,
    task_api_domain: Option<String>,
    agno_python: Option<PathBuf>,
    agno_db_file: Option<PathBuf>,
    agno_pool_size: Option<usize>,
    custom_instruction_files: Option<Vec<String>>,
    skill_clear_cache: Option<bool>,
    git_clone_timeout_secs: Option<u64>,
    max_attachment_bytes: Option<u64>,
    max_skill_bytes: Option<u64>,
    agent_env_mode: Option<String>,
    agent_env_allow: Option<Vec<String>>,
    agent_env_deny: Option<Vec<String>>,
    task_env_placeholders: Option<Vec<String>>,
    executor_key_endpoints: Option<Vec<String>>,
    agent_user: Option<String>,
    agent_uid: Option<u32>,
    agent_gid: Option<u32>,
    allow_local_clone_dirs: Option<Vec<PathBuf>>,
    session_idle_expiry_secs: Option<u64>,
}

impl FileConfig {
    /// The file's security keys.
    fn security(&self) -> security::SecurityFile {
        security::SecurityFile {
            agent_env_mode: self.agent_env_mode.clone(),
            agent_env_allow: self.agent_env_allow.clone(),
            agent_env_deny: self.agent_env_deny.clone(),
            task_env_placeholders: self.task_env_placeholders.clone(),
            executor_key_endpoints: self.executor_key_endpoints.clone(),
            agent_user: self.agent_user.clone(),
            agent_uid: self.agent_uid,
            agent_gid: self.agent_gid,
            allow_local_clone_dirs: self.allow_local_clone_dirs.clone(),
            session_idle_expiry_secs: self.session_idle_expiry_secs,
        }
    }
}

/// Everything the binary runs with.
#[derive(Debug)]
pub struct Settings {
    /// Listen address.
    pub bind: IpAddr,
    /// Listen port (0 = any).
    pub port: u16,
    /// Largest request body.
    pub max_body_bytes: u64,
    /// Time to receive a request body.
    pub body_timeout: Duration,
    /// Connection limits of the HTTP server.
    pub connections: crate::http::server::ConnLimits,
    /// `EXECUTOR_AUTH_TOKEN`: bearer token every non-probe route requires (env only: a secret).
    pub auth_token: Option<Secret>,
    /// Log level filter.
    pub log_level: String,
    /// `LOG_FORMAT=json`: structured log lines instead of the original's text format.
    pub log_json: bool,
    /// Time to flush callbacks at shutdown.
    pub shutdown_grace: Duration,
    /// `TASK_INFO`: a task to run once at start-up.
    pub task_info: Option<String>,
    /// Whether `--install-claude` was given.
    pub install_claude: bool,
    /// Whether `--check-config` was given.
    pub check_config: bool,
    /// Settings of the actor runtime.
    pub runtime: RuntimeConfig,
    /// OpenTelemetry (`OTEL_*`, environment only, as the original's).
    pub telemetry: crate::telemetry::OtelSettings,
}

/// Picks flag/env, then file, then default; treats an empty string as unset.
fn pick<T>(cli: Option<T>, file: Option<T>, default: T) -> T {
    cli.or(file).unwrap_or(default)
}

fn non_empty(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.trim().is_empty())
}

impl Settings {
    /// The effective settings as `NAME=value` lines for `--check-config`; secrets show only
    /// whether they are set.
    pub fn describe(&self) -> Vec<String> {
        let r = &self.runtime;
        let secret =
            |s: &Option<Secret>| if s.is_some() { "*** (set)" } else { "(unset)" }.to_string();
        let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "(unset)".into());
        let secs = |d: Option<Duration>| d.map_or("0 (off)".into(), |d| d.as_secs().to_string());
        vec![
            format!("PORT={}", self.port),
            format!("BIND_ADDRESS={}", self.bind),
            format!("WORKSPACE_ROOT={}", r.workspace_root.display()),
            format!(
                "CALLBACK_URL={}",
                r.callback
                    .url
                    .as_deref()
                    .map_or("(unset)".into(), crate::redact_url)
            ),
            format!("CALLBACK_SPOOL_DIR={}", r.callback.spool_dir.display()),
            format!("EXECUTOR_NAME={}", opt(&r.executor_name)),
            format!("EXECUTOR_NAMESPACE={}", opt(&r.executor_namespace)),
            format!(
                "EXECUTOR_ENV={} key(s), values hidden",
                r.executor_env.len()
            ),
            format!("ANTHROPIC_API_KEY={}", secret(&r.anthropic_api_key)),
            format!("ANTHROPIC_AUTH_TOKEN={}", secret(&r.anthropic_auth_token)),
            format!("EXECUTOR_AUTH_TOKEN={}", secret(&self.auth_token)),
            format!("CLAUDE_BIN={}", r.claude.bin.display()),
            format!("MAX_BODY_BYTES={}", self.max_body_bytes),
            format!("BODY_TIMEOUT_SECS={}", self.body_timeout.as_secs()),
            format!(
                "HTTP_HEADER_TIMEOUT_SECS={}",
                self.connections.header_timeout.as_secs()
            ),
            format!(
                "HTTP_KEEPALIVE_TIMEOUT_SECS={}",
                self.connections.keepalive_timeout.as_secs()
            ),
            format!(
                "HTTP_MAX_CONNECTIONS={}",
                match self.connections.max_connections {
                    0 => "0 (open-file limit less HTTP_FD_RESERVE)".to_string(),
                    n => n.to_string(),
                }
            ),
            format!("HTTP_FD_RESERVE={}", self.connections.fd_reserve),
            format!(
                "MAX_SESSIONS={}",
                r.max_sessions
                    .map_or("0 (no cap)".into(), |v| v.to_string())
            ),
            format!(
                "MAX_LIVE_PROCESSES={}",
                r.max_live_processes
                    .map_or("0 (no cap)".into(), |v| v.to_string())
            ),
            format!("AGENT_NICE={}", r.agent_priority.nice),
            format!("AGENT_SCHED_POLICY={}", r.agent_priority.policy),
            format!("AGENT_IDLE_TIMEOUT_SECS={}", secs(r.agent_idle_timeout)),
            format!("DIFY_TIMEOUT_SECS={}", r.dify_timeout.as_secs()),
            format!("WATCHDOG_SILENCE_SECS={}", secs(r.claude.silence_timeout)),
            format!("WATCHDOG_TOOL_SECS={}", secs(r.claude.tool_timeout)),
            format!("TURN_TIMEOUT_SECS={}", secs(r.claude.turn_timeout)),
            format!(
                "TASK_API_DOMAIN={}",
                crate::redact_url(&r.workspace.api_base)
            ),
            format!(
                "CUSTOM_INSTRUCTION_FILES={}",
                r.workspace.custom_instruction_files.join(",")
            ),
            format!("SKILL_CLEAR_CACHE={}", r.workspace.skill_clear_cache),
            format!(
                "GIT_CLONE_TIMEOUT_SECS={}",
                r.workspace.git_timeout.as_secs()
            ),
            format!("MAX_ATTACHMENT_BYTES={}", r.workspace.max_attachment_bytes),
            format!("MAX_SKILL_BYTES={}", r.workspace.max_skill_bytes),
            format!(
                "GIT_TOKEN_AES_KEY/IV={}",
                if std::env::var("GIT_TOKEN_AES_KEY").is_ok_and(|v| !v.trim().is_empty()) {
                    "*** (set)"
                } else {
                    "(the original's public test defaults)"
                }
            ),
            format!("AGNO_PYTHON={}", r.agno.python.display()),
            format!("AGNO_DB_FILE={}", r.agno.db_file.display()),
            format!("AGNO_POOL_SIZE={}", r.agno.pool_size),
            format!("LOG_LEVEL={}", self.log_level),
        ]
        .into_iter()
        .chain(security::describe(&r.security, r.session_expiry))
        .chain([
            format!("LOG_FORMAT={}", if self.log_json { "json" } else { "text" }),
            format!(
                "HEARTBEAT={}",
                r.heartbeat.as_ref().map_or("off".into(), |h| h.url())
            ),
            format!(
                "TASK_INFO={}",
                if self.task_info.is_some() {
                    "(set)"
                } else {
                    "(unset)"
                }
            ),
        ])
        .chain(self.telemetry.describe())
        .collect()
    }

    /// Resolves the settings from the parsed flags (which include the environment).
    pub fn load(cli: Cli) -> anyhow::Result<Self> {
        let file = match &cli.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let executor_env = parse_executor_env(std::env::var("EXECUTOR_ENV").ok())?;
        let (security, session_expiry) = security::load(&cli.security, &file.security())?;
        let workspace = workspace_config(&cli.workspace, &file)?;
        let agno = agno_config(&cli, &file, &workspace_root_of(&cli, &file));
        let workspace_root = pick(
            cli.workspace_root,
            file.workspace_root,
            PathBuf::from(DEFAULT_WORKSPACE_ROOT),
        );
        // Agents run inside it, so a relative root would be re-read relative to themselves.
        let workspace_root = std::path::absolute(&workspace_root).unwrap_or(workspace_root);
        let log_level =
            if std::env::var("DEBUG_RUN").is_ok_and(|v| !v.is_empty()) && cli.log_level.is_none() {
                "debug".to_string()
            } else {
                pick(non_empty(cli.log_level), file.log_level, "info".into())
            };
        let ms = Duration::from_millis;
        let max_live = cli
            .max_live_processes
            .or(file.max_live_processes)
            .unwrap_or_else(actors::capacity::default_live_processes);
        let agent_priority = actors::agent::priority::AgentPriority {
            nice: pick(cli.agent_nice, file.agent_nice, DEFAULT_AGENT_NICE).clamp(0, 19),
            policy: match non_empty(cli.agent_sched_policy.clone())
                .or(non_empty(file.agent_sched_policy.clone()))
            {
                Some(name) => name.parse()?,
                None => actors::agent::priority::SchedPolicy::default(),
            },
        };
        let secs = |v: u64| (v > 0).then(|| Duration::from_secs(v));
        let max_sessions = pick(cli.max_sessions, file.max_sessions, DEFAULT_MAX_SESSIONS);
        let runtime = RuntimeConfig {
            max_sessions: (max_sessions > 0).then_some(max_sessions),
            heartbeat: heartbeat_config(
                non_empty(cli.callback_url.clone()).or(non_empty(file.callback_url.clone())),
            ),
            max_live_processes: (max_live > 0).then_some(max_live),
            agent_priority,
            agent_idle_timeout: secs(pick(
                cli.agent_idle_timeout_secs.or(cli.claude_idle_timeout_secs),
                file.agent_idle_timeout_secs
                    .or(file.claude_idle_timeout_secs),
                DEFAULT_CLAUDE_IDLE_TIMEOUT_SECS,
            )),
            dify_timeout: std::time::Duration::from_secs(
                pick(
                    cli.dify_timeout_secs,
                    file.dify_timeout_secs,
                    actors::agent::dify::client::STREAM_TIMEOUT.as_secs(),
                )
                .max(1),
            ),
            workspace_root: workspace_root.clone(),
            executor_name: non_empty(cli.executor_name).or(file.executor_name),
            executor_namespace: non_empty(cli.executor_namespace).or(file.executor_namespace),
            executor_env,
            anthropic_api_key: Secret::non_empty(std::env::var("ANTHROPIC_API_KEY").ok()),
            anthropic_auth_token: Secret::non_empty(std::env::var("ANTHROPIC_AUTH_TOKEN").ok()),
            callback: CallbackConfig {
                spool_dir: cli
                    .callback_spool_dir
                    .or(file.callback_spool_dir)
                    .map(|d| std::path::absolute(&d).unwrap_or(d))
                    .unwrap_or_else(|| workspace_root.join(DEFAULT_SPOOL_DIR_NAME)),
                url: non_empty(cli.callback_url).or(non_empty(file.callback_url)),
                timeout: Duration::from_secs(pick(
                    cli.callback_timeout_secs,
                    file.callback_timeout_secs,
                    DEFAULT_CALLBACK_TIMEOUT_SECS,
                )),
                max_retries: pick(
                    cli.callback_max_retries,
                    file.callback_max_retries,
                    DEFAULT_CALLBACK_MAX_RETRIES,
                ),
                initial_backoff: ms(pick(
                    cli.callback_initial_backoff_ms,
                    file.callback_initial_backoff_ms,
                    DEFAULT_CALLBACK_INITIAL_BACKOFF_MS,
                )),
                max_backoff: ms(pick(
                    cli.callback_max_backoff_ms,
                    file.callback_max_backoff_ms,
                    DEFAULT_CALLBACK_MAX_BACKOFF_MS,
                )),
                terminal_repeat_delay: Duration::from_secs(pick(
                    cli.task_info_terminal_repeat_secs,
                    file.task_info_terminal_repeat_secs,
                    DEFAULT_TASK_INFO_TERMINAL_REPEAT_SECS,
                )),
            },
            claude: ClaudeConfig {
                silence_timeout: secs(pick(
                    cli.watchdog_silence_secs,
                    file.watchdog_silence_secs,
                    DEFAULT_WATCHDOG_SILENCE_SECS,
                )),
                tool_timeout: secs(pick(
                    cli.watchdog_tool_secs,
                    file.watchdog_tool_secs,
                    DEFAULT_WATCHDOG_TOOL_SECS,
                )),
                turn_timeout: secs(pick(
                    cli.turn_timeout_secs,
                    file.turn_timeout_secs,
                    DEFAULT_TURN_TIMEOUT_SECS,
                )),
                bin: resolve_claude_bin(cli.claude_bin.or(file.claude_bin)),
                init_timeout: Duration::from_secs(pick(
                    cli.claude_init_timeout_secs,
                    file.claude_init_timeout_secs,
                    DEFAULT_CLAUDE_INIT_TIMEOUT_SECS,
                )),
                max_line_bytes: pick(
                    cli.max_line_bytes,
                    file.max_line_bytes,
                    DEFAULT_MAX_LINE_BYTES,
                ),
                interrupt_timeout: Duration::from_secs(pick(
                    cli.claude_interrupt_timeout_secs,
                    file.claude_interrupt_timeout_secs,
                    DEFAULT_CLAUDE_INTERRUPT_TIMEOUT_SECS,
                )),
            },
            workspace,
            agno,
            security,
            session_expiry,
            stop: StopConfig {
                eof_grace: ms(pick(
                    cli.session_eof_grace_ms,
                    file.session_eof_grace_ms,
                    DEFAULT_SESSION_EOF_GRACE_MS,
                )),
                term_grace: ms(pick(
                    cli.session_term_grace_ms,
                    file.session_term_grace_ms,
                    DEFAULT_SESSION_TERM_GRACE_MS,
                )),
            },
        };
        Ok(Self {
            telemetry: crate::telemetry::OtelSettings::from_env()?,
            bind: pick(
                cli.bind_address,
                file.bind_address,
                DEFAULT_BIND.parse().context("default bind address")?,
            ),
            port: pick(cli.port, file.port, DEFAULT_PORT),
            log_json: std::env::var("LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json")),
            auth_token: Secret::non_empty(std::env::var("EXECUTOR_AUTH_TOKEN").ok()),
            body_timeout: Duration::from_secs(pick(
                cli.body_timeout_secs,
                file.body_timeout_secs,
                DEFAULT_BODY_TIMEOUT_SECS,
            )),
            max_body_bytes: pick(
                cli.max_body_bytes,
                file.max_body_bytes,
                DEFAULT_MAX_BODY_BYTES,
            ),
            connections: crate::http::server::ConnLimits {
                header_timeout: Duration::from_secs(
                    pick(
                        cli.http_header_timeout_secs,
                        file.http_header_timeout_secs,
                        DEFAULT_HTTP_HEADER_TIMEOUT_SECS,
                    )
                    .max(1),
                ),
                keepalive_timeout: Duration::from_secs(
                    pick(
                        cli.http_keepalive_timeout_secs,
                        file.http_keepalive_timeout_secs,
                        DEFAULT_HTTP_KEEPALIVE_TIMEOUT_SECS,
                    )
                    .max(1),
                ),
                max_connections: pick(
                    cli.http_max_connections,
                    file.http_max_connections,
                    DEFAULT_HTTP_MAX_CONNECTIONS,
                ),
                fd_reserve: pick(
                    cli.http_fd_reserve,
                    file.http_fd_reserve,
                    DEFAULT_HTTP_FD_RESERVE,
                ),
            },
            log_level,
            shutdown_grace: Duration::from_secs(pick(
                cli.shutdown_grace_secs,
                file.shutdown_grace_secs,
                DEFAULT_SHUTDOWN_GRACE_SECS,
            )),
            task_info: non_empty(std::env::var("TASK_INFO").ok()),
            check_config: cli.check_config,
            install_claude: cli.install_claude,
            runtime,
        })
    }
}

fn workspace_root_of(cli: &Cli, file: &FileConfig) -> PathBuf {
    let root = cli
        .workspace_root
        .clone()
        .or_else(|| file.workspace_root.clone())
        .unwrap_or_else(|| PathBuf::from(DEFAULT_WORKSPACE_ROOT));
    std::path::absolute(&root).unwrap_or(root)
}

/// Where `bash agno/install.sh` puts the agno venv's interpreter.
pub const LOCAL_AGNO_PYTHON: &str = ".tools/agno-venv/bin/python";

/// The Agno agent's settings.
fn agno_config(cli: &Cli, file: &FileConfig, workspace_root: &Path) -> AgnoConfig {
    let mut cfg = AgnoConfig::under(workspace_root);
    let python = cli
        .agno_python
        .clone()
        .or_else(|| file.agno_python.clone())
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| {
            let local = PathBuf::from(LOCAL_AGNO_PYTHON);
            if local.is_file() {
                local
            } else {
                PathBuf::from("python3")
            }
        });
    cfg.python = if python.components().count() > 1 {
        std::path::absolute(&python).unwrap_or(python)
    } else {
        python
    };
    if let Some(db) = cli
        .agno_db_file
        .clone()
        .or_else(|| file.agno_db_file.clone())
    {
        cfg.db_file = std::path::absolute(&db).unwrap_or(db);
    }
    cfg.pool_size = cli.agno_pool_size.or(file.agno_pool_size).unwrap_or(1);
    cfg
}

/// Workspace preparation settings (contract §6, §8.3 names).
fn workspace_config(cli: &WorkspaceFlags, file: &FileConfig) -> anyhow::Result<WorkspaceConfig> {
    let d = WorkspaceConfig::default();
    let api_base = non_empty(cli.task_api_domain.clone())
        .or_else(|| non_empty(file.task_api_domain.clone()))
        .map(|u| u.trim().trim_end_matches('/').to_string())
        .unwrap_or(d.api_base);
    let files = match (
        &cli.custom_instruction_files,
        &file.custom_instruction_files,
    ) {
        (Some(list), _) => list
            .split(',')
            .map(str::trim)
            .filter(|f| !f.is_empty())
            .map(String::from)
            .collect(),
        (None, Some(list)) => list.clone(),
        (None, None) => d.custom_instruction_files,
    };
    let clear = match cli.skill_clear_cache.as_deref().map(str::trim) {
        Some(v) if !v.is_empty() => {
            matches!(v.to_ascii_lowercase().as_str(), "true" | "1" | "yes")
        }
        _ => file.skill_clear_cache.unwrap_or(d.skill_clear_cache),
    };
    let git_secs = cli
        .git_clone_timeout_secs
        .or(file.git_clone_timeout_secs)
        .unwrap_or(d.git_timeout.as_secs());
    if git_secs == 0 {
        bail!("GIT_CLONE_TIMEOUT_SECS must be at least 1");
    }
    // Secrets: environment only, never flags or the config file. A wrong size would silently
    // leave every encrypted token undecrypted, so it stops start-up instead.
    let key = non_empty(std::env::var("GIT_TOKEN_AES_KEY").ok())
        .unwrap_or_else(|| actors::crypto::DEFAULT_KEY.into());
    let iv = non_empty(std::env::var("GIT_TOKEN_AES_IV").ok())
        .unwrap_or_else(|| actors::crypto::DEFAULT_IV.into());
    if key.len() != 32 || iv.len() != 16 {
        bail!("GIT_TOKEN_AES_KEY must be 32 bytes and GIT_TOKEN_AES_IV 16 bytes (AES-256-CBC)");
    }
    let cipher = actors::crypto::TokenCipher::new(&key, &iv);
    Ok(WorkspaceConfig {
        api_base,
        custom_instruction_files: files,
        skill_clear_cache: clear,
        git_timeout: Duration::from_secs(git_secs),
        max_attachment_bytes: cli
            .max_attachment_bytes
            .or(file.max_attachment_bytes)
            .unwrap_or(d.max_attachment_bytes),
        max_skill_bytes: cli
            .max_skill_bytes
            .or(file.max_skill_bytes)
            .unwrap_or(d.max_skill_bytes),
        cipher,
        ..d
    })
}

fn read_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
}

/// Heartbeats as the original (§4.6), from the environment only: on when `HEARTBEAT_ENABLED`
/// is `true` and an id (`HEARTBEAT_ID` or `SANDBOX_ID`) and a base URL are known.
fn heartbeat_config(callback_url: Option<String>) -> Option<actors::heartbeat::HeartbeatConfig> {
    let env = |k: &str| non_empty(std::env::var(k).ok());
    if !env("HEARTBEAT_ENABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return None;
    }
    let id = env("HEARTBEAT_ID").or_else(|| env("SANDBOX_ID"))?;
    let base_url = env("EXECUTOR_MANAGER_HEARTBEAT_BASE_URL").or_else(|| {
        callback_url.map(|u| {
            let u = u.trim_end_matches('/');
            u.strip_suffix("/callback").unwrap_or(u).to_string()
        })
    })?;
    let secs = env("HEARTBEAT_INTERVAL")
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(DEFAULT_HEARTBEAT_INTERVAL_SECS);
    Some(actors::heartbeat::HeartbeatConfig {
        base_url,
        id,
        kind: env("HEARTBEAT_TYPE").unwrap_or_else(|| "sandbox".into()),
        interval: Duration::from_secs(secs.max(1)),
    })
}

/// `EXECUTOR_ENV` is a JSON object; non-string values are passed as their JSON text.
fn parse_executor_env(raw: Option<String>) -> anyhow::Result<BTreeMap<String, String>> {
    let Some(raw) = non_empty(raw) else {
        return Ok(BTreeMap::new());
    };
    let value: serde_json::Value =
        serde_json::from_str(&raw).context("EXECUTOR_ENV is not valid JSON")?;
    let Some(obj) = value.as_object() else {
        bail!("EXECUTOR_ENV must be a JSON object")
    };
    Ok(obj
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| v.to_string()),
            )
        })
        .collect())
}

/// The configured CLI, else `claude` on PATH, else the local install of `--install-claude`.
/// A path with a directory part is made absolute: the CLI runs in the task's directory, so a
/// relative path would otherwise be looked up from there.
fn resolve_claude_bin(configured: Option<PathBuf>) -> PathBuf {
    let chosen = match configured.filter(|p| !p.as_os_str().is_empty()) {
        Some(p) => p,
        None => find_in_path("claude").unwrap_or_else(local_claude_bin),
    };
    if chosen.components().count() > 1 {
        std::path::absolute(&chosen).unwrap_or(chosen)
    } else {
        chosen
    }
}

/// Where `--install-claude` puts the CLI binary.
pub fn local_claude_bin() -> PathBuf {
    Path::new(LOCAL_CLAUDE_DIR).join("node_modules/.bin/claude")
}

/// Looks a program up like a shell would; absolute or relative paths are checked as they are.
pub fn find_in_path(program: &str) -> Option<PathBuf> {
    let p = Path::new(program);
    if p.components().count() > 1 {
        return p.is_file().then(|| p.to_path_buf());
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(program))
            .find(|c| c.is_file())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_beat_file_beat_defaults() {
        assert_eq!(pick(Some(1), Some(2), 3), 1);
        assert_eq!(pick(None, Some(2), 3), 2);
        assert_eq!(pick(None, None, 3), 3);
    }

    #[test]
    fn executor_env_must_be_an_object() {
        assert!(parse_executor_env(Some("[1]".into())).is_err());
        assert!(parse_executor_env(Some("{".into())).is_err());
        let env = parse_executor_env(Some(r#"{"A":"x","B":2}"#.into())).unwrap();
        assert_eq!(env["A"], "x");
        assert_eq!(env["B"], "2");
        assert!(parse_executor_env(Some(" ".into())).unwrap().is_empty());
    }

    #[test]
    fn file_config_rejects_unknown_keys() {
        assert!(toml::from_str::<FileConfig>("prot = 1").is_err());
        let f: FileConfig = toml::from_str("port = 10002\nworkspace_root = \"/w\"").unwrap();
        assert_eq!(f.port, Some(10002));
    }
}
