//! The one rule for what of the executor's environment an agent process gets (Claude Code CLI,
//! the Agno client, and through them every MCP server they start).
//!
//! By default the agent inherits the executor's environment — a container's `JAVA_HOME`,
//! `GOPATH`, `PIP_INDEX_URL`, tool variables reach the agent's shell, as with the original —
//! minus [`DENY`]: the executor's own secrets and control settings. `AGENT_ENV_MODE=strict`
//! keeps only [`STRICT_ALLOW`] (plus `AGENT_ENV_ALLOW`), still minus the deny list.

use std::collections::BTreeMap;

use crate::config::{EnvMode, SecurityConfig};

/// Executor variables no agent ever gets, nor a task's `"${VAR}"` placeholder: the executor's
/// credentials (handed on only by the endpoint rule of [`CREDENTIALS`]) and its control
/// settings. A trailing `*` matches a prefix.
pub const DENY: &[&str] = &[
    "EXECUTOR_AUTH_TOKEN",
    "GIT_TOKEN_AES_KEY",
    "GIT_TOKEN_AES_IV",
    "TASK_INFO",
    "EXECUTOR_ENV",
    "EXECUTOR_CONFIG",
    "EXECUTOR_KEY_ENDPOINTS",
    "TASK_ENV_PLACEHOLDERS",
    "AGENT_ENV_*",
    "ALLOW_LOCAL_CLONE_DIRS",
    "CALLBACK_*",
    "HEARTBEAT_*",
    "EXECUTOR_MANAGER_HEARTBEAT_BASE_URL",
    "OTEL_*",
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_AUTH_TOKEN",
    "OPENAI_API_KEY",
    "GOOGLE_API_KEY",
    "GEMINI_API_KEY",
];

/// The executor's own API credentials: denied by default, handed to an agent only when its
/// task brings no key and names no endpoint of its own (or one in `EXECUTOR_KEY_ENDPOINTS`).
pub const CREDENTIALS: &[&str] = &[
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_AUTH_TOKEN",
    "OPENAI_API_KEY",
    "GOOGLE_API_KEY",
    "GEMINI_API_KEY",
];

/// Task-set variables that send the agent's traffic (and so a key) elsewhere: a task that sets
/// any of them has "an endpoint of its own".
pub const ENDPOINT_VARS: &[&str] = &[
    "ANTHROPIC_BASE_URL",
    "OPENAI_BASE_URL",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "NODE_OPTIONS",
    "NODE_TLS_REJECT_UNAUTHORIZED",
    "NODE_EXTRA_CA_CERTS",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
];

/// `AGENT_ENV_MODE=strict`: the executor variables an agent gets (today's allowlist).
pub const STRICT_ALLOW: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LANG",
    "LC_ALL",
    "TERM",
    "TZ",
    "SHELL",
    "TMPDIR",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "NODE_EXTRA_CA_CERTS",
    "ANTHROPIC_*",
    "CLAUDE_*",
    "DISABLE_*",
    "GIT_*",
];

/// `name` against `pattern`: exact, or a prefix when the pattern ends in `*`.
fn matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

/// True when no agent may get the executor's `name` (built-in list or `AGENT_ENV_DENY`).
pub fn is_denied(sec: &SecurityConfig, name: &str) -> bool {
    DENY.iter().any(|p| matches(p, name)) || sec.env_deny.iter().any(|p| matches(p, name))
}

/// True for the names of the executor's own API credentials.
pub fn is_credential(name: &str) -> bool {
    CREDENTIALS.contains(&name)
}

/// The part of the executor's environment every agent process gets.
pub fn inherited(
    sec: &SecurityConfig,
    host: impl Iterator<Item = (String, String)>,
) -> BTreeMap<String, String> {
    host.filter(|(k, _)| !is_denied(sec, k))
        .filter(|(k, _)| match sec.env_mode {
            EnvMode::Inherit => true,
            EnvMode::Strict => STRICT_ALLOW
                .iter()
                .copied()
                .chain(sec.env_allow.iter().map(String::as_str))
                .any(|p| matches(p, k)),
        })
        .collect()
}

/// A base URL compared loosely: no trailing `/`, no `/v1`, lower-case.
pub fn normalize_endpoint(url: &str) -> String {
    let url = url.trim().trim_end_matches('/');
    url.strip_suffix("/v1").unwrap_or(url).to_ascii_lowercase()
}

/// True when `url` (a task-named endpoint) may receive the executor's own key: it is listed in
/// `EXECUTOR_KEY_ENDPOINTS` or is the executor's own `operator_url`.
pub fn endpoint_allowed(sec: &SecurityConfig, operator_url: Option<&str>, url: &str) -> bool {
    let want = normalize_endpoint(url);
    sec.key_endpoints
        .iter()
        .map(String::as_str)
        .chain(operator_url)
        .any(|u| normalize_endpoint(u) == want)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> impl Iterator<Item = (String, String)> {
        [
            ("PATH", "/bin"),
            ("JAVA_HOME", "/jdk"),
            ("GIT_TOKEN_AES_KEY", "k"),
            ("GIT_AUTHOR_NAME", "a"),
            ("EXECUTOR_AUTH_TOKEN", "t"),
            ("CALLBACK_URL", "u"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "o"),
            ("ANTHROPIC_API_KEY", "sk"),
            ("ANTHROPIC_MODEL", "m"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
    }

    #[test]
    fn inherit_mode_passes_all_but_the_deny_list() {
        let env = inherited(&SecurityConfig::default(), host());
        let keys: Vec<&str> = env.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            ["ANTHROPIC_MODEL", "GIT_AUTHOR_NAME", "JAVA_HOME", "PATH"]
        );
    }

    #[test]
    fn strict_mode_is_the_allowlist_minus_the_deny_list() {
        let mut sec = SecurityConfig {
            env_mode: EnvMode::Strict,
            ..Default::default()
        };
        let keys: Vec<String> = inherited(&sec, host()).into_keys().collect();
        assert_eq!(keys, ["ANTHROPIC_MODEL", "GIT_AUTHOR_NAME", "PATH"]);
        sec.env_allow = vec!["JAVA_*".into()];
        sec.env_deny = vec!["GIT_AUTHOR_NAME".into()];
        let keys: Vec<String> = inherited(&sec, host()).into_keys().collect();
        assert_eq!(keys, ["ANTHROPIC_MODEL", "JAVA_HOME", "PATH"]);
    }

    #[test]
    fn endpoints_compare_loosely() {
        let sec = SecurityConfig {
            key_endpoints: vec!["https://GW.example/v1/".into()],
            ..Default::default()
        };
        assert!(endpoint_allowed(&sec, None, "https://gw.example"));
        assert!(endpoint_allowed(&sec, Some("http://op"), "http://op/v1"));
        assert!(!endpoint_allowed(&sec, Some("http://op"), "http://evil"));
    }
}
