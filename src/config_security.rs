//! Settings of what a task may reach (README "Security"): the agent's environment, the
//! executor's own keys, the agent's user, local clone sources, idle session expiry.

use std::path::PathBuf;
use std::time::Duration;

use actors::config::{EnvMode, SecurityConfig};
use anyhow::bail;

/// `SESSION_IDLE_EXPIRY_SECS`: a session idle this long is closed (its conversation stays
/// resumable from the workspace); 0 keeps sessions until deleted. One day.
pub const DEFAULT_SESSION_IDLE_EXPIRY_SECS: u64 = 24 * 60 * 60;

/// Flags (and environment variables) of the security settings.
#[derive(Debug, clap::Args)]
pub struct SecurityFlags {
    /// `inherit` (the executor's environment minus the deny list) or `strict` (an allowlist) [default: inherit].
    #[arg(long, env = "AGENT_ENV_MODE")]
    pub agent_env_mode: Option<String>,
    /// Comma-separated names (`PREFIX*` allowed) added to the strict mode's allowlist.
    #[arg(long, env = "AGENT_ENV_ALLOW")]
    pub agent_env_allow: Option<String>,
    /// Comma-separated names (`PREFIX*` allowed) kept from agents on top of the built-in deny list.
    #[arg(long, env = "AGENT_ENV_DENY")]
    pub agent_env_deny: Option<String>,
    /// Comma-separated executor variables a task's `"${VAR}"` may read (besides EXECUTOR_ENV's keys).
    #[arg(long, env = "TASK_ENV_PLACEHOLDERS")]
    pub task_env_placeholders: Option<String>,
    /// Comma-separated base URLs a task may name and still get the executor's own API key.
    #[arg(long, env = "EXECUTOR_KEY_ENDPOINTS")]
    pub executor_key_endpoints: Option<String>,
    /// Run agent processes as this user (its primary group unless AGENT_GID is set).
    #[arg(long, env = "AGENT_USER")]
    pub agent_user: Option<String>,
    /// Run agent processes with this user id.
    #[arg(long, env = "AGENT_UID")]
    pub agent_uid: Option<String>,
    /// Run agent processes with this group id [default: the user's group, or AGENT_UID].
    #[arg(long, env = "AGENT_GID")]
    pub agent_gid: Option<String>,
    /// Comma-separated directories a `git_url` may name as a local path or file:// URL [default: none].
    #[arg(long, env = "ALLOW_LOCAL_CLONE_DIRS")]
    pub allow_local_clone_dirs: Option<String>,
    /// Seconds a session may stay idle before it is closed; 0 = never [default: 86400].
    #[arg(long, env = "SESSION_IDLE_EXPIRY_SECS")]
    pub session_idle_expiry_secs: Option<u64>,
}

/// The same settings in the config file (snake_case keys of the file's top level).
#[derive(Debug, Default)]
pub struct SecurityFile {
    /// `agent_env_mode`.
    pub agent_env_mode: Option<String>,
    /// `agent_env_allow`.
    pub agent_env_allow: Option<Vec<String>>,
    /// `agent_env_deny`.
    pub agent_env_deny: Option<Vec<String>>,
    /// `task_env_placeholders`.
    pub task_env_placeholders: Option<Vec<String>>,
    /// `executor_key_endpoints`.
    pub executor_key_endpoints: Option<Vec<String>>,
    /// `agent_user`.
    pub agent_user: Option<String>,
    /// `agent_uid`.
    pub agent_uid: Option<u32>,
    /// `agent_gid`.
    pub agent_gid: Option<u32>,
    /// `allow_local_clone_dirs`.
    pub allow_local_clone_dirs: Option<Vec<PathBuf>>,
    /// `session_idle_expiry_secs`.
    pub session_idle_expiry_secs: Option<u64>,
}

/// A comma-separated flag, else the file's list, else empty.
fn list(flag: &Option<String>, file: &Option<Vec<String>>) -> Vec<String> {
    match flag.as_deref().map(str::trim) {
        Some(v) if !v.is_empty() => v
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect(),
        _ => file.clone().unwrap_or_default(),
    }
}

fn text(flag: &Option<String>, file: Option<String>) -> Option<String> {
    flag.clone()
        .filter(|v| !v.trim().is_empty())
        .or(file)
        .map(|v| v.trim().to_string())
}

/// Resolves the security settings; every problem stops start-up with a clear message.
pub fn load(
    cli: &SecurityFlags,
    file: &SecurityFile,
) -> anyhow::Result<(SecurityConfig, Option<Duration>)> {
    let env_mode = match text(&cli.agent_env_mode, file.agent_env_mode.clone()).as_deref() {
        None | Some("inherit") => EnvMode::Inherit,
        Some("strict") => EnvMode::Strict,
        Some(other) => bail!("AGENT_ENV_MODE must be `inherit` or `strict`, not `{other}`"),
    };
    let uid = text(&cli.agent_uid, file.agent_uid.map(|u| u.to_string()));
    let gid = text(&cli.agent_gid, file.agent_gid.map(|g| g.to_string()));
    let user = text(&cli.agent_user, file.agent_user.clone());
    let agent_user =
        actors::agent::agent_user::resolve(user.as_deref(), uid.as_deref(), gid.as_deref())?;
    let dirs: Vec<PathBuf> = match &cli.allow_local_clone_dirs {
        Some(v) if !v.trim().is_empty() => list(&cli.allow_local_clone_dirs, &None)
            .into_iter()
            .map(PathBuf::from)
            .collect(),
        _ => file.allow_local_clone_dirs.clone().unwrap_or_default(),
    };
    if let Some(d) = dirs.iter().find(|d| !d.is_absolute()) {
        bail!(
            "ALLOW_LOCAL_CLONE_DIRS entries must be absolute paths: {}",
            d.display()
        );
    }
    let expiry = cli
        .session_idle_expiry_secs
        .or(file.session_idle_expiry_secs)
        .unwrap_or(DEFAULT_SESSION_IDLE_EXPIRY_SECS);
    let sec = SecurityConfig {
        env_mode,
        env_allow: list(&cli.agent_env_allow, &file.agent_env_allow),
        env_deny: list(&cli.agent_env_deny, &file.agent_env_deny),
        placeholder_vars: list(&cli.task_env_placeholders, &file.task_env_placeholders),
        key_endpoints: list(&cli.executor_key_endpoints, &file.executor_key_endpoints),
        agent_user,
        local_clone_dirs: dirs,
    };
    Ok((sec, (expiry > 0).then(|| Duration::from_secs(expiry))))
}

/// `--check-config` lines of the security settings.
pub fn describe(sec: &SecurityConfig, expiry: Option<Duration>) -> Vec<String> {
    let join = |v: &[String]| {
        if v.is_empty() {
            "(none)".to_string()
        } else {
            v.join(",")
        }
    };
    vec![
        format!(
            "AGENT_ENV_MODE={}",
            format!("{:?}", sec.env_mode).to_lowercase()
        ),
        format!("AGENT_ENV_ALLOW={}", join(&sec.env_allow)),
        format!("AGENT_ENV_DENY={}", join(&sec.env_deny)),
        format!("TASK_ENV_PLACEHOLDERS={}", join(&sec.placeholder_vars)),
        format!("EXECUTOR_KEY_ENDPOINTS={}", join(&sec.key_endpoints)),
        format!(
            "AGENT_UID/AGENT_GID={}",
            sec.agent_user
                .map_or("(the executor's)".into(), |u| format!(
                    "{}/{}",
                    u.uid, u.gid
                ))
        ),
        format!(
            "ALLOW_LOCAL_CLONE_DIRS={}",
            join(
                &sec.local_clone_dirs
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
            )
        ),
        format!(
            "SESSION_IDLE_EXPIRY_SECS={}",
            expiry.map_or("0 (never)".into(), |d| d.as_secs().to_string())
        ),
    ]
}

/// Start-up hardening, before any thread exists: the process becomes non-dumpable (processes
/// of its own user — agents included — cannot read its environment or memory through /proc or
/// ptrace), and with an agent user the executor's own git commands trust the repositories that
/// user owns (git refuses "dubious ownership" otherwise, also for root).
pub fn harden_process(sec: &SecurityConfig) {
    // SAFETY: prctl with integer arguments only changes this process's own flag.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    if sec.agent_user.is_some() {
        let n: usize = std::env::var("GIT_CONFIG_COUNT")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        // Command-line scope, the only one besides system/global that git reads it from.
        std::env::set_var(format!("GIT_CONFIG_KEY_{n}"), "safe.directory");
        std::env::set_var(format!("GIT_CONFIG_VALUE_{n}"), "*");
        std::env::set_var("GIT_CONFIG_COUNT", (n + 1).to_string());
    }
}
