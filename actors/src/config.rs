//! Settings the runtime needs, already resolved by the binary (flags > env > file > defaults).

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// The Claude Code CLI version this executor is built and tested against.
pub const PINNED_CLAUDE_CODE_VERSION: &str = "2.1.331";

/// A value that must never be printed: `Debug` and `Display` show `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret; empty strings count as "no secret" for callers using [`Secret::non_empty`].
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// `Some` only for a non-blank value, so an empty env var behaves like an unset one.
    pub fn non_empty(value: Option<String>) -> Option<Self> {
        value.filter(|v| !v.trim().is_empty()).map(Self)
    }

    /// The secret itself, for the one place that must hand it on (a child's environment).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// How callbacks are delivered to `CALLBACK_URL`.
#[derive(Debug, Clone)]
pub struct CallbackConfig {
    /// Where to POST status events; `None` disables callbacks (logged once at start-up).
    pub url: Option<String>,
    /// Limit for one POST attempt.
    pub timeout: Duration,
    /// Retries after the first attempt on connection errors and non-4xx failures.
    pub max_retries: u32,
    /// Delay before the first retry; doubled each time, with jitter.
    pub initial_backoff: Duration,
    /// Upper bound of one retry delay.
    pub max_backoff: Duration,
    /// Where undelivered events are kept (survives restarts).
    pub spool_dir: PathBuf,
    /// `TASK_INFO_TERMINAL_REPEAT_SECS`: how long after the `TASK_INFO` subtask's terminal
    /// callback it is sent once more, after executor_manager's late `RUNNING` report (its 2 s
    /// container health check); zero disables the repeat.
    pub terminal_repeat_delay: Duration,
}

/// How the Claude Code CLI is run and stopped.
#[derive(Debug, Clone)]
pub struct ClaudeConfig {
    /// The `claude` program (a path or a name looked up in PATH).
    pub bin: PathBuf,
    /// How long the CLI may take to answer the `initialize` control request.
    pub init_timeout: Duration,
    /// Longest stdout line accepted from the CLI; a longer one fails the turn.
    pub max_line_bytes: usize,
    /// After an interrupt, how long to wait for the turn's `result` before killing the CLI.
    pub interrupt_timeout: Duration,
    /// Watchdog: a turn with no output for this long and no tool running is hung.
    pub silence_timeout: Option<Duration>,
    /// Watchdog: a tool may run without output for this long.
    pub tool_timeout: Option<Duration>,
    /// Longest a turn may take in all.
    pub turn_timeout: Option<Duration>,
}

/// How a session's processes are ended.
#[derive(Debug, Clone, Copy)]
pub struct StopConfig {
    /// After closing stdin, how long the CLI gets to exit by itself (it flushes its transcript).
    pub eof_grace: Duration,
    /// After SIGTERM to the process group, how long before SIGKILL.
    pub term_grace: Duration,
}

impl StopConfig {
    /// The longest a session stop can take, used to bound waits on it.
    pub fn budget(&self) -> Duration {
        self.eof_grace + self.term_grace + Duration::from_secs(5)
    }
}

/// Everything the runtime needs, shared read-only by all actors.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Each task works in `<workspace_root>/<task_id>/`.
    pub workspace_root: PathBuf,
    /// Copied into every callback as `executor_name` (env `EXECUTOR_NAME`).
    pub executor_name: Option<String>,
    /// Copied into every callback as `executor_namespace` (env `EXECUTOR_NAMESPACE`).
    pub executor_namespace: Option<String>,
    /// `EXECUTOR_ENV`: merged into every agent's environment.
    pub executor_env: BTreeMap<String, String>,
    /// Fallback Anthropic key from the executor's own environment (`ANTHROPIC_API_KEY`).
    pub anthropic_api_key: Option<Secret>,
    /// Fallback Anthropic bearer token from the executor's environment (`ANTHROPIC_AUTH_TOKEN`).
    pub anthropic_auth_token: Option<Secret>,
    /// Callback delivery settings.
    pub callback: CallbackConfig,
    /// Claude Code CLI settings.
    pub claude: ClaudeConfig,
    /// Process stop settings.
    pub stop: StopConfig,
    /// Most agent processes alive at once; over it, the least recently used idle ones are
    /// suspended. `None` = no cap.
    pub max_live_processes: Option<usize>,
    /// Most sessions at once; a task that needs a new session over it is refused (429).
    pub max_sessions: Option<usize>,
    /// Heartbeats to executor_manager, when enabled.
    pub heartbeat: Option<crate::heartbeat::HeartbeatConfig>,
    /// Workspace preparation: git, instruction files, attachments, skills.
    pub workspace: WorkspaceConfig,
    /// The Agno agent's client processes.
    pub agno: AgnoConfig,
    /// What a task may reach: the agent's environment, the executor's credentials, the agent's
    /// user, local clone sources.
    pub security: SecurityConfig,
    /// A session idle (no subtask running) longer than this is closed and forgotten; its
    /// conversation stays resumable from the workspace (`SESSION_IDLE_EXPIRY_SECS`). `None`
    /// keeps sessions until they are deleted.
    pub session_expiry: Option<Duration>,
    /// `AGENT_NICE` and `AGENT_SCHED_POLICY`: how much lower agent processes and everything
    /// they start run, so they never slow the executor's HTTP answers and callbacks.
    pub agent_priority: crate::agent::priority::AgentPriority,
    /// An idle agent process (a Claude Code CLI of 250–400 MB, an agno client) is ended after
    /// this long; the next subtask resumes the conversation. `None` keeps it alive
    /// (`AGENT_IDLE_TIMEOUT_SECS`, or its older name `CLAUDE_IDLE_TIMEOUT_SECS`).
    pub agent_idle_timeout: Option<Duration>,
    /// How long one Dify call (the whole streamed answer) may take (`DIFY_TIMEOUT_SECS`,
    /// 300 s as the original).
    pub dify_timeout: Duration,
}

/// How the agent's environment is built from the executor's (`AGENT_ENV_MODE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EnvMode {
    /// The executor's environment minus the deny list (the original's behaviour).
    #[default]
    Inherit,
    /// Only an allowlist of the executor's variables (plus `AGENT_ENV_ALLOW`), minus the deny
    /// list.
    Strict,
}

/// The user agent processes run as (`AGENT_UID`/`AGENT_GID` or `AGENT_USER`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentUser {
    /// Numeric user id.
    pub uid: u32,
    /// Numeric group id (the user's primary group when only a user is named).
    pub gid: u32,
}

/// What a task may reach of the executor (README "Security").
#[derive(Debug, Clone, Default)]
pub struct SecurityConfig {
    /// Inherit (minus the deny list) or strict allowlist.
    pub env_mode: EnvMode,
    /// `AGENT_ENV_DENY`: names (or `PREFIX*`) kept from agents on top of the built-in deny list.
    pub env_deny: Vec<String>,
    /// `AGENT_ENV_ALLOW`: names (or `PREFIX*`) added to the strict mode's allowlist.
    pub env_allow: Vec<String>,
    /// `TASK_ENV_PLACEHOLDERS`: executor variables a task's `"${VAR}"` may read (besides the
    /// keys of `EXECUTOR_ENV`); never one of the deny list.
    pub placeholder_vars: Vec<String>,
    /// `EXECUTOR_KEY_ENDPOINTS`: base URLs a task may name and still get the executor's own
    /// API key (the executor's own `ANTHROPIC_BASE_URL` always counts).
    pub key_endpoints: Vec<String>,
    /// Agents run as this user when set; the task directory is owned by it.
    pub agent_user: Option<AgentUser>,
    /// `ALLOW_LOCAL_CLONE_DIRS`: directories a `git_url` may name as a local path or
    /// `file://` URL; empty refuses every local clone source.
    pub local_clone_dirs: Vec<PathBuf>,
}

/// How Agno tasks run: a Python client process (agno 2.1.5) per session, JSON lines over its
/// pipes, with a pool of pre-started clients so a new session does not wait for Python to
/// import agno (~3 s).
#[derive(Debug, Clone)]
pub struct AgnoConfig {
    /// The Python interpreter of the agno venv (`AGNO_PYTHON`).
    pub python: PathBuf,
    /// Where the client script (embedded in the binary) is written at start-up.
    pub client_script: PathBuf,
    /// The SQLite file holding every session's history (`AGNO_DB_FILE`).
    pub db_file: PathBuf,
    /// Pre-started clients kept ready (`AGNO_POOL_SIZE`; 0 disables the pool).
    pub pool_size: usize,
    /// How long a client may take to import agno and say it is ready.
    pub ready_timeout: Duration,
    /// After a cancel, how long the run has to end before the client is killed.
    pub cancel_timeout: Duration,
}

impl AgnoConfig {
    /// Defaults under a workspace root (python from PATH, no pool).
    pub fn under(workspace_root: &std::path::Path) -> Self {
        Self {
            python: PathBuf::from("python3"),
            client_script: workspace_root.join(".agno").join("agno_client.py"),
            db_file: workspace_root.join(".agno").join("agno_data.db"),
            pool_size: 0,
            ready_timeout: Duration::from_secs(30),
            cancel_timeout: Duration::from_secs(5),
        }
    }
}

/// How a task's workspace is prepared (contract §6).
#[derive(Debug, Clone)]
pub struct WorkspaceConfig {
    /// Backend base URL for attachment and skill downloads (`TASK_API_DOMAIN`), no trailing `/`.
    pub api_base: String,
    /// Files copied from the repository into `.claudecode/` (`CUSTOM_INSTRUCTION_FILES`).
    pub custom_instruction_files: Vec<String>,
    /// Wipe the task's skills folder before deploying skills (`SKILL_CLEAR_CACHE`).
    pub skill_clear_cache: bool,
    /// Longest a `git clone` may take before it is killed.
    pub git_timeout: Duration,
    /// Longest one attachment or skill download may take.
    pub download_timeout: Duration,
    /// Largest attachment accepted; a bigger one is reported unavailable in the prompt.
    pub max_attachment_bytes: u64,
    /// Largest skill archive accepted (and ten times this, unpacked).
    pub max_skill_bytes: u64,
    /// How often the workbench (changed files, commits) is refreshed while the agent works.
    pub workbench_interval: Duration,
    /// Decrypts tokens the backend sends encrypted (`GIT_TOKEN_AES_KEY`/`GIT_TOKEN_AES_IV`).
    pub cipher: crate::crypto::TokenCipher,
}

impl Default for WorkspaceConfig {
    fn default() -> Self {
        Self {
            api_base: "http://wegent-backend:8000".into(),
            custom_instruction_files: vec![".cursorrules".into(), ".windsurfrules".into()],
            skill_clear_cache: true,
            git_timeout: Duration::from_secs(600),
            download_timeout: Duration::from_secs(300),
            max_attachment_bytes: 100 * 1024 * 1024,
            max_skill_bytes: 50 * 1024 * 1024,
            workbench_interval: Duration::from_secs(2),
            cipher: crate::crypto::TokenCipher::default(),
        }
    }
}

impl RuntimeConfig {
    /// A configuration for unit tests and examples: no callbacks, `claude` from PATH.
    pub fn for_tests(workspace_root: PathBuf) -> Self {
        Self {
            agno: AgnoConfig::under(&workspace_root),
            workspace_root,
            executor_name: None,
            executor_namespace: None,
            executor_env: BTreeMap::new(),
            anthropic_api_key: None,
            anthropic_auth_token: None,
            callback: CallbackConfig {
                url: None,
                timeout: Duration::from_secs(10),
                max_retries: 10,
                initial_backoff: Duration::from_millis(500),
                max_backoff: Duration::from_secs(30),
                spool_dir: std::env::temp_dir().join("executor-spool"),
                terminal_repeat_delay: Duration::from_secs(5),
            },
            claude: ClaudeConfig {
                bin: PathBuf::from("claude"),
                init_timeout: Duration::from_secs(60),
                max_line_bytes: 16 * 1024 * 1024,
                interrupt_timeout: Duration::from_secs(10),
                silence_timeout: None,
                tool_timeout: None,
                turn_timeout: None,
            },
            stop: StopConfig {
                eof_grace: Duration::from_millis(500),
                term_grace: Duration::from_secs(2),
            },
            max_live_processes: None,
            max_sessions: None,
            heartbeat: None,
            workspace: WorkspaceConfig::default(),
            agent_priority: crate::agent::priority::AgentPriority::default(),
            agent_idle_timeout: None,
            dify_timeout: crate::agent::dify::client::STREAM_TIMEOUT,
            security: SecurityConfig::default(),
            session_expiry: None,
        }
    }
}
